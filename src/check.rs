//! A config repository checked end to end: its documents loaded, the cross-document rules,
//! every app rendered for each of its environments and evaluated against the policies, and
//! objects that two apps both render found — what `validate`, `plan`, a reconcile and a
//! pull-request plan all start from.
//!
//! [`Checker`] keeps each app's results by its inputs: the app's own files (`apps/<app>/`),
//! compared by content, under the platform's documents (`bowline.yaml`, `pipelines/`,
//! `canary/`, `policies/`), compared by digest. An app's results depend on nothing else, so
//! checking a commit that changes one app of thousands renders and evaluates that app only.
//! The one rule that spans apps — an object belongs to one app — is recomputed on every check
//! from an index of the objects each app renders, so it stays exact.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::config::validate::{self, BrokenTemplates};
use crate::config::{self, Application, ConfigRepo, Document, LoadCache};
use crate::diagnostic::{self, Diagnostic};
use crate::object::ObjectKey;
use crate::policy::{PolicyError, PolicyReport, PolicySet, check_render, load::from_snapshot};
use crate::render::{self, RenderSummary};
use crate::source::{ROOT_FILE, Snapshot};

/// Directories whose files every app's results may depend on.
const PLATFORM_DIRS: [&str; 3] = ["pipelines/", "canary/", "policies/"];

/// Results kept for this many platform versions (the tracked branch's, and those of pull
/// requests that propose platform changes).
const GENERATIONS: usize = 3;

/// A config repository checked end to end.
#[derive(Debug)]
pub struct Checked {
    /// The loaded repository.
    pub repo: ConfigRepo,
    /// Every problem found: loading, validation, render errors and warnings, policy results,
    /// objects claimed by two apps; sorted and de-duplicated.
    pub diagnostics: Vec<Diagnostic>,
    /// A summary of each render of the selection.
    pub rendered: Vec<RenderSummary>,
    /// Policy results and exceptions (the results are also in `diagnostics`).
    pub policy: PolicyReport,
    /// Apps rendered and evaluated by this check (the others' results were kept from before).
    pub computed: usize,
    /// Which app renders which object into which cluster (complete only when every app was
    /// selected).
    pub declarations: Declarations,
}

/// Which app renders which object into which cluster, at the commit a check looked at.
#[derive(Debug, Clone, Default)]
pub struct Declarations {
    apps: HashMap<String, Arc<AppResult>>,
    /// Apps known to have been removed from the repository: they declare nothing. Any other
    /// app missing from `apps` is unknown (another repository's, say).
    removed: BTreeSet<String>,
}

/// The newest declarations a long-running process knows (the daemon's last good commit),
/// shared with its stages and drift checks; `None` until the first check.
pub type SharedDeclarations = Arc<std::sync::RwLock<Option<Arc<Declarations>>>>;

/// The current value of `shared`.
pub fn current(shared: &SharedDeclarations) -> Option<Arc<Declarations>> {
    shared
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// Replaces the value of `shared`.
pub fn publish(shared: &SharedDeclarations, declarations: Declarations) {
    *shared.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(declarations));
}

impl Declarations {
    /// These declarations, knowing that the apps `before` (an earlier commit's, with the
    /// apps removed before it) that this commit does not have were removed.
    pub fn after(mut self, before: impl IntoIterator<Item = String>) -> Self {
        for app in before {
            if !self.apps.contains_key(&app) {
                self.removed.insert(app);
            }
        }
        self
    }

    /// The apps these declarations know: those of the commit and those removed before it.
    pub fn known_apps(&self) -> impl Iterator<Item = String> + '_ {
        self.apps.keys().chain(&self.removed).cloned()
    }

    fn renders(result: &AppResult, context: &str, identity: &ObjectIdentity) -> bool {
        result.claims.iter().any(|env| {
            env.clusters.iter().any(|(c, _)| c == context)
                && env.objects.iter().any(|o| o.identity == *identity)
        })
    }
}

impl crate::cluster::prune::Declarations for Declarations {
    fn declares(&self, app: &str, context: &str, key: &ObjectKey) -> Option<bool> {
        match self.apps.get(app) {
            None if self.removed.contains(app) => Some(false),
            None => None,
            // A failed render may have declared it.
            Some(r) if r.rendered.iter().any(|s| s.result.is_err()) => None,
            Some(r) => Some(Self::renders(r, context, &identity_of(key))),
        }
    }

    fn others_declaring(&self, app: &str, context: &str, key: &ObjectKey) -> Vec<String> {
        let identity = identity_of(key);
        let mut apps: Vec<String> = self
            .apps
            .values()
            .filter(|r| r.name != app && Self::renders(r, context, &identity))
            .map(|r| r.name.clone())
            .collect();
        apps.sort();
        apps
    }
}

fn identity_of(key: &ObjectKey) -> ObjectIdentity {
    ObjectIdentity::new(
        &key.api_version,
        &key.kind,
        key.namespace.as_deref(),
        &key.name,
    )
}

/// Loads `snapshot`, renders the selected apps and environments (all when `None`) and
/// evaluates the policies, keeping nothing for later.
pub fn check_snapshot(
    snapshot: &Snapshot,
    app: Option<&str>,
    env: Option<&str>,
) -> Result<Checked, PolicyError> {
    Checker::default().check(snapshot, app, env)
}

/// Checks config repositories, keeping each app's results for the next check.
#[derive(Debug, Default)]
pub struct Checker {
    files: LoadCache,
    /// Newest first.
    generations: Mutex<Vec<Arc<Generation>>>,
}

/// What depends on one version of the platform's documents.
#[derive(Debug)]
struct Generation {
    key: [u8; 32],
    policies: PolicySet,
    policy_diagnostics: Vec<Diagnostic>,
    apps: Mutex<HashMap<String, Arc<AppResult>>>,
}

/// The files of one app: path and text (`None` for a file that was refused).
type AppInputs = Vec<(String, Option<Arc<str>>)>;

/// One app's results, with the inputs they were computed from.
#[derive(Debug)]
struct AppResult {
    name: String,
    inputs: AppInputs,
    validation: Vec<Diagnostic>,
    rendered: Vec<RenderSummary>,
    policy: PolicyReport,
    claims: Vec<EnvironmentClaims>,
}

/// The objects one render of an app puts into each cluster of its environment.
#[derive(Debug)]
struct EnvironmentClaims {
    environment: String,
    /// kubeconfig contexts of the environment's clusters, with their names.
    clusters: Vec<(String, String)>,
    objects: Vec<Claim>,
}

/// An object as two apps could both claim it: API group (not version, since `apps/v1` and
/// `apps/v1beta1` name the same object), kind, namespace and name.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ObjectIdentity {
    group: String,
    kind: String,
    namespace: Option<String>,
    name: String,
}

impl ObjectIdentity {
    fn new(api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> Self {
        ObjectIdentity {
            group: api_version
                .rsplit_once('/')
                .map_or("", |(g, _)| g)
                .to_string(),
            kind: kind.to_string(),
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
        }
    }
}

#[derive(Debug)]
struct Claim {
    identity: ObjectIdentity,
    hash: u64,
    /// The manifest it came from.
    source: String,
}

fn hash_of(value: &impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Digest of the platform's documents of `snapshot` (every file a single app's results may
/// depend on besides its own).
fn platform_key(snapshot: &Snapshot) -> [u8; 32] {
    let mut hasher = Sha256::new();
    let mut add = |path: &str, text: Option<&str>| {
        hasher.update(path.as_bytes());
        hasher.update([0]);
        match text {
            Some(text) => {
                hasher.update((text.len() as u64).to_le_bytes());
                hasher.update(text.as_bytes());
            }
            None => hasher.update(u64::MAX.to_le_bytes()),
        }
    };
    add(ROOT_FILE, snapshot.get(ROOT_FILE).map(|t| &**t));
    for dir in PLATFORM_DIRS {
        for (path, text) in snapshot.files_under(dir) {
            add(path, Some(text));
        }
    }
    for path in snapshot.refused() {
        if path == ROOT_FILE || PLATFORM_DIRS.iter().any(|d| path.starts_with(d)) {
            add(path, None);
        }
    }
    hasher.finalize().into()
}

/// The files under `prefix` (an app's directory), read then refused, without copying them.
fn inputs_under<'s>(
    snapshot: &'s Snapshot,
    prefix: &'s str,
) -> impl Iterator<Item = (&'s str, Option<&'s Arc<str>>)> + 's {
    snapshot
        .files_under(prefix)
        .map(|(path, text)| (path, Some(text)))
        .chain(snapshot.refused_under(prefix).map(|path| (path, None)))
}

/// The files of the app directory at `prefix`, kept with its results.
fn app_inputs(snapshot: &Snapshot, prefix: &str) -> AppInputs {
    inputs_under(snapshot, prefix)
        .map(|(path, text)| (path.to_string(), text.cloned()))
        .collect()
}

/// Whether the kept inputs are the app's files in `snapshot`; texts that are the same shared
/// allocation compare without reading them.
fn same_inputs(kept: &AppInputs, snapshot: &Snapshot, prefix: &str) -> bool {
    let mut current = inputs_under(snapshot, prefix);
    kept.iter().all(|(path, text)| {
        current.next().is_some_and(|(p, t)| {
            p == path
                && match (text, t) {
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
                    (None, None) => true,
                    _ => false,
                }
        })
    }) && current.next().is_none()
}

impl Checker {
    /// The documents of `snapshot`, parsing only files not parsed before, without any check.
    pub fn documents(&self, snapshot: &Snapshot) -> ConfigRepo {
        config::load_documents(snapshot, &self.files).0
    }

    /// Whether any check kept results yet.
    pub fn has_results(&self) -> bool {
        !lock(&self.generations).is_empty()
    }

    /// Problems of `snapshot`'s documents and of the rules among the platform's documents
    /// (`bowline.yaml`, pipeline templates, canary configs), without any app's rules.
    pub fn platform_problems(&self, snapshot: &Snapshot) -> Vec<Diagnostic> {
        let (repo, mut diagnostics) = config::load_documents(snapshot, &self.files);
        diagnostics.extend(validate::check_platform(&repo).0);
        diagnostics
    }

    /// Checks `snapshot`: loads it, runs every rule, renders the selected apps and
    /// environments (all when `None`) and evaluates the policies on them. Apps not selected
    /// are validated but not rendered. The result is the same as checking with a new
    /// `Checker`; only the work differs.
    #[tracing::instrument(level = "info", skip_all, fields(files = snapshot.len(), app = app_filter, env = env_filter, computed))]
    pub fn check(
        &self,
        snapshot: &Snapshot,
        app_filter: Option<&str>,
        env_filter: Option<&str>,
    ) -> Result<Checked, PolicyError> {
        let (repo, mut diagnostics) = config::load_documents(snapshot, &self.files);
        let (platform_diagnostics, broken) = validate::check_platform(&repo);
        diagnostics.extend(platform_diagnostics);
        let generation = self.generation(snapshot)?;
        diagnostics.extend(generation.policy_diagnostics.iter().cloned());
        diagnostics.extend(crate::policy::settings_problems(
            &repo,
            &generation.policies,
        ));

        let apps: Vec<(&String, &Arc<Document<Application>>)> = repo.apps.iter().collect();
        let selected = |name: &str| app_filter.is_none_or(|f| f == name);
        let cached: Vec<Option<Arc<AppResult>>> = {
            let kept = lock(&generation.apps);
            apps.iter()
                .map(|(name, _)| kept.get(name.as_str()).cloned())
                .collect()
        };
        enum Outcome {
            Kept(Arc<AppResult>),
            Computed(Arc<AppResult>),
            Validated(Vec<Diagnostic>),
        }
        let outcomes: Vec<Outcome> = apps
            .par_iter()
            .zip(cached.into_par_iter())
            .map(|((name, doc), cached)| {
                let prefix = format!("apps/{name}/");
                let kept = cached.filter(|c| same_inputs(&c.inputs, snapshot, &prefix));
                match (kept, selected(name)) {
                    (Some(kept), true) => Outcome::Kept(kept),
                    (Some(kept), false) => Outcome::Validated(kept.validation.clone()),
                    (None, true) => Outcome::Computed(Arc::new(compute_app(
                        &repo,
                        doc,
                        &broken,
                        &generation.policies,
                        app_inputs(snapshot, &prefix),
                    ))),
                    (None, false) => {
                        Outcome::Validated(validate_app(&repo, doc, &broken, &generation.policies))
                    }
                }
            })
            .collect();

        let mut computed = 0;
        {
            let mut kept = lock(&generation.apps);
            for ((name, _), outcome) in apps.iter().zip(&outcomes) {
                if let Outcome::Computed(result) = outcome {
                    computed += 1;
                    kept.insert((*name).clone(), result.clone());
                }
            }
            if kept.len() > 2 * apps.len() + 64 {
                kept.retain(|name, _| repo.apps.contains_key(name));
            }
        }
        tracing::Span::current().record("computed", computed);

        let in_env = |environment: &str| env_filter.is_none_or(|f| f == environment);
        let mut rendered = Vec::new();
        let mut policy = PolicyReport::default();
        let mut results = Vec::new();
        let mut declarations = Declarations::default();
        for outcome in &outcomes {
            match outcome {
                Outcome::Kept(r) | Outcome::Computed(r) => {
                    declarations.apps.insert(r.name.clone(), r.clone());
                    diagnostics.extend(r.validation.iter().cloned());
                    for summary in r.rendered.iter().filter(|s| in_env(&s.environment)) {
                        if let Err(errors) = &summary.result {
                            diagnostics.extend(errors.iter().cloned());
                        }
                        diagnostics.extend(summary.warnings.iter().cloned());
                        rendered.push(summary.clone());
                    }
                    policy.results.extend(
                        r.policy
                            .results
                            .iter()
                            .filter(|x| in_env(&x.environment))
                            .cloned(),
                    );
                    policy.exceptions.extend(
                        r.policy
                            .exceptions
                            .iter()
                            .filter(|x| in_env(&x.environment))
                            .cloned(),
                    );
                    policy.problems.extend(r.policy.problems.iter().cloned());
                    results.push(r.as_ref());
                }
                Outcome::Validated(v) => diagnostics.extend(v.iter().cloned()),
            }
        }
        policy.sort();
        diagnostics.extend(policy.diagnostics());
        diagnostics.extend(shared_objects(&results, &in_env));
        diagnostic::sort_and_dedup(&mut diagnostics);
        Ok(Checked {
            repo,
            diagnostics,
            rendered,
            policy,
            computed,
            declarations,
        })
    }

    /// The results kept for the platform documents of `snapshot`, made when new (policies
    /// compiled once per platform version).
    fn generation(&self, snapshot: &Snapshot) -> Result<Arc<Generation>, PolicyError> {
        let key = platform_key(snapshot);
        {
            let mut generations = lock(&self.generations);
            if let Some(at) = generations.iter().position(|g| g.key == key) {
                // Most recently used first.
                let found = generations.remove(at);
                generations.insert(0, found.clone());
                return Ok(found);
            }
        }
        let (policies, policy_diagnostics) = from_snapshot(snapshot)?;
        let generation = Arc::new(Generation {
            key,
            policies,
            policy_diagnostics,
            apps: Mutex::default(),
        });
        let mut generations = lock(&self.generations);
        generations.retain(|g| g.key != key);
        generations.insert(0, generation.clone());
        generations.truncate(GENERATIONS);
        Ok(generation)
    }
}

/// The rules of one app: its documents against the platform's, and its policy exceptions
/// against the policies.
fn validate_app(
    repo: &ConfigRepo,
    app: &Document<Application>,
    broken: &BrokenTemplates,
    policies: &PolicySet,
) -> Vec<Diagnostic> {
    let mut out = validate::check_app(repo, app, broken);
    out.extend(crate::policy::exception_problems(repo, app, policies));
    out
}

/// Validates, renders and evaluates one app.
fn compute_app(
    repo: &ConfigRepo,
    app: &Document<Application>,
    broken: &BrokenTemplates,
    policies: &PolicySet,
    inputs: AppInputs,
) -> AppResult {
    let validation = validate_app(repo, app, broken, policies);
    let name = &app.doc.metadata.name;
    let mut rendered = Vec::new();
    let mut policy = PolicyReport::default();
    let mut claims = Vec::new();
    for r in render::render_app(repo, app, None) {
        if let Ok(objects) = &r.result {
            policy.extend(check_render(repo, policies, name, &r.environment, objects));
            if let Some(environment) = repo.environment(&r.environment) {
                claims.push(EnvironmentClaims {
                    environment: r.environment.clone(),
                    clusters: environment
                        .clusters
                        .iter()
                        .map(|c| (c.context.clone(), c.name.clone()))
                        .collect(),
                    objects: objects
                        .iter()
                        .map(|o| {
                            let identity = ObjectIdentity::new(
                                &o.api_version,
                                &o.kind,
                                o.namespace.as_deref(),
                                &o.name,
                            );
                            Claim {
                                hash: hash_of(&identity),
                                identity,
                                source: o.source.clone(),
                            }
                        })
                        .collect(),
                });
            }
        }
        rendered.push(RenderSummary::from(r));
    }
    AppResult {
        name: name.clone(),
        inputs,
        validation,
        rendered,
        policy,
        claims,
    }
}

/// One error per app and object that another app also renders into the same cluster: they
/// would overwrite each other's changes, and each would prune the other's object.
fn shared_objects(results: &[&AppResult], in_env: &dyn Fn(&str) -> bool) -> Vec<Diagnostic> {
    // (app, environment claims, object, cluster) by a hash of cluster and object.
    type Entry = (usize, usize, usize, usize);
    let mut index: HashMap<u64, Vec<Entry>> = HashMap::new();
    for (a, result) in results.iter().enumerate() {
        for (e, env) in result.claims.iter().enumerate() {
            if !in_env(&env.environment) {
                continue;
            }
            for (c, (context, _)) in env.clusters.iter().enumerate() {
                let cluster = hash_of(context);
                for (o, claim) in env.objects.iter().enumerate() {
                    index
                        .entry(cluster ^ claim.hash.rotate_left(17))
                        .or_default()
                        .push((a, e, o, c));
                }
            }
        }
    }
    // Per app, environment and object: the clusters where another app renders it too, and
    // those apps.
    type Shared<'r> = (BTreeSet<&'r str>, BTreeSet<&'r str>);
    let mut shared: BTreeMap<(usize, usize, usize), Shared<'_>> = BTreeMap::new();
    for entries in index.values().filter(|v| v.len() > 1) {
        for &(a, e, o, c) in entries {
            let env = &results[a].claims[e];
            let claim = &env.objects[o];
            let (context, cluster) = &env.clusters[c];
            let others: Vec<&str> = entries
                .iter()
                .filter(|&&(b, f, p, d)| {
                    let other = &results[b].claims[f];
                    b != a
                        && other.clusters[d].0 == *context
                        && other.objects[p].identity == claim.identity
                })
                .map(|&(b, _, _, _)| results[b].name.as_str())
                .collect();
            if !others.is_empty() {
                let (clusters, apps) = shared.entry((a, e, o)).or_default();
                clusters.insert(cluster.as_str());
                apps.extend(others);
            }
        }
    }
    let quoted = |names: &BTreeSet<&str>| {
        names
            .iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    shared
        .into_iter()
        .map(|((a, e, o), (clusters, apps))| {
            let env = &results[a].claims[e];
            let claim = &env.objects[o];
            let id = &claim.identity;
            let object = match &id.namespace {
                Some(ns) => format!("{} {ns}/{}", id.kind, id.name),
                None => format!("{} {}", id.kind, id.name),
            };
            let (app_noun, cluster_noun) = (
                if apps.len() == 1 { "app" } else { "apps" },
                if clusters.len() == 1 { "cluster" } else { "clusters" },
            );
            Diagnostic::file_error(
                &claim.source,
                format!(
                    "{object} is also rendered by {app_noun} {} into {cluster_noun} {} (environment \"{}\"): an object belongs to one app, or each overwrites the other's changes and prunes its object",
                    quoted(&apps),
                    quoted(&clusters),
                    env.environment,
                ),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repository(apps: &[(&str, &str)]) -> Snapshot {
        let mut files = vec![
            (
                ROOT_FILE.to_string(),
                r#"apiVersion: bowline/v1
kind: Repository
metadata: {name: shop}
spec:
  environments:
    - name: staging
      namespace: staging
      clusters: [{name: eu, context: kind-eu}]
    - name: production
      namespace: prod
      clusters: [{name: eu, context: kind-eu}, {name: us, context: kind-us}]
"#
                .to_string(),
            ),
            (
                "pipelines/standard.yaml".to_string(),
                r#"apiVersion: bowline/v1
kind: PipelineTemplate
metadata: {name: standard}
spec:
  stages:
    - {name: deploy-staging, type: deploy, environment: staging}
    - {name: deploy-production, type: deploy, environment: production, dependsOn: [deploy-staging]}
"#
                .to_string(),
            ),
        ];
        for (name, object) in apps {
            files.push((
                format!("apps/{name}/app.yaml"),
                format!(
                    r#"apiVersion: bowline/v1
kind: Application
metadata: {{name: {name}}}
spec:
  image: {{repository: ghcr.io/acme/{name}, tag: "1.0.0"}}
  pipeline: {{template: standard}}
  environments: {{staging: null, production: null}}
"#
                ),
            ));
            files.push((
                format!("apps/{name}/manifests/config.yaml"),
                format!(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {object}\ndata:\n  image: \"{{{{ app.image.tag }}}}\"\n"
                ),
            ));
        }
        Snapshot::from_files(files)
    }

    fn summary(checked: &Checked) -> (Vec<String>, usize, usize) {
        (
            checked
                .diagnostics
                .iter()
                .map(ToString::to_string)
                .collect(),
            checked.rendered.len(),
            checked.policy.results.len(),
        )
    }

    #[test]
    fn kept_results_equal_a_fresh_check_and_only_changed_apps_are_computed() {
        let checker = Checker::default();
        let first = repository(&[("a", "a-config"), ("b", "b-config"), ("c", "c-config")]);
        let checked = checker.check(&first, None, None).expect("check");
        assert_eq!(checked.computed, 3);
        assert_eq!(
            summary(&checked),
            summary(&check_snapshot(&first, None, None).expect("check"))
        );

        // One app changes and one is added: only those two are rendered again.
        let second = repository(&[
            ("a", "a-config"),
            ("b", "b-renamed"),
            ("c", "c-config"),
            ("d", "d-config"),
        ]);
        let checked = checker.check(&second, None, None).expect("check");
        assert_eq!(checked.computed, 2);
        assert_eq!(
            summary(&checked),
            summary(&check_snapshot(&second, None, None).expect("check"))
        );
        assert_eq!(checked.rendered.len(), 8);

        // Back to the first commit: its apps are computed again only where they differ.
        let checked = checker.check(&first, None, None).expect("check");
        assert_eq!(checked.computed, 1, "only b differs from what is kept");
    }

    #[test]
    fn a_platform_change_recomputes_every_app() {
        let checker = Checker::default();
        let snapshot = repository(&[("a", "a-config"), ("b", "b-config")]);
        checker.check(&snapshot, None, None).expect("check");
        let mut files: Vec<(String, String)> = snapshot
            .files()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect();
        files.push((
            "policies/no_configmaps.rego".into(),
            "package bowline.custom.no_configmaps\n\nimport rego.v1\n\ndeny contains msg if {\n  input.object.kind == \"ConfigMap\"\n  msg := \"no ConfigMaps\"\n}\n".into(),
        ));
        let changed = Snapshot::from_files(files);
        let checked = checker.check(&changed, None, None).expect("check");
        assert_eq!(checked.computed, 2);
        assert_eq!(
            summary(&checked),
            summary(&check_snapshot(&changed, None, None).expect("check"))
        );
    }

    #[test]
    fn an_object_two_apps_render_is_an_error_on_both_and_goes_when_one_renames_it() {
        let checker = Checker::default();
        let snapshot = repository(&[("a", "shared"), ("b", "shared"), ("c", "c-config")]);
        let checked = checker.check(&snapshot, None, None).expect("check");
        let shared: Vec<String> = checked
            .diagnostics
            .iter()
            .filter(|d| d.message.contains("is also rendered by app"))
            .map(ToString::to_string)
            .collect();
        // Two apps × two environments (production's two clusters in one message).
        assert_eq!(shared.len(), 4, "{shared:#?}");
        assert!(
            shared.iter().any(|d| d.starts_with("apps/a/manifests/config.yaml")
                && d.contains("ConfigMap prod/shared is also rendered by app \"b\" into clusters \"eu\", \"us\" (environment \"production\")")),
            "{shared:#?}"
        );
        assert!(shared.iter().all(|d| d.contains("error")), "{shared:#?}");

        let fixed = repository(&[("a", "shared"), ("b", "b-config"), ("c", "c-config")]);
        let checked = checker.check(&fixed, None, None).expect("check");
        assert_eq!(checked.computed, 1);
        assert!(
            !checked
                .diagnostics
                .iter()
                .any(|d| d.message.contains("is also rendered by app")),
            "{:#?}",
            checked.diagnostics
        );
    }

    #[test]
    fn a_selection_renders_only_the_selected_app_and_environment() {
        let snapshot = repository(&[("a", "a-config"), ("b", "b-config")]);
        let checker = Checker::default();
        let checked = checker
            .check(&snapshot, Some("a"), Some("production"))
            .expect("check");
        assert_eq!(checked.computed, 1);
        assert_eq!(checked.rendered.len(), 1);
        assert_eq!(checked.rendered[0].app, "a");
        assert_eq!(checked.rendered[0].environment, "production");
    }
}
