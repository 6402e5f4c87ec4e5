//! Loading a config repository snapshot into the typed model, with every problem reported as a
//! [`Diagnostic`] carrying file, line, column and field.
//!
//! Steps per file: YAML parse (duplicate keys, alias bombs, depth limits) → kind and location
//! check → JSON Schema → typed deserialization. Then [`validate::check`] runs the rules that
//! span documents. Positions are computed lazily, only for documents that have a problem.

pub mod inputs;
pub mod instantiate;
mod locate;
pub mod model;
pub mod schema;
pub mod validate;
pub mod yaml;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use rayon::prelude::*;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::diagnostic::{Diagnostic, pointer_to_field};
use crate::source::Snapshot;
pub use locate::LocationIndex;
pub use model::*;
pub use schema::Kind;

/// Root document path.
pub use crate::source::ROOT_FILE;

/// A parsed document together with where it came from, able to locate its fields.
#[derive(Debug)]
pub struct Document<T> {
    /// Path relative to the repository root.
    pub file: String,
    /// The typed document.
    pub doc: T,
    source: Arc<str>,
    index: OnceLock<LocationIndex>,
}

impl<T> Document<T> {
    /// Line and column of the node at a JSON pointer (or its nearest existing ancestor).
    pub fn position(&self, pointer: &str) -> (usize, usize) {
        self.index
            .get_or_init(|| LocationIndex::build(&self.source))
            .locate(pointer)
    }

    /// An error about the field at `pointer`.
    pub fn error(&self, pointer: &str, message: impl Into<String>) -> Diagnostic {
        let (line, column) = self.position(pointer);
        Diagnostic::error(
            self.file.clone(),
            line,
            column,
            pointer_to_field(pointer),
            message,
        )
    }

    /// A warning about the field at `pointer`.
    pub fn warning(&self, pointer: &str, message: impl Into<String>) -> Diagnostic {
        self.error(pointer, message).into_warning()
    }

    /// The YAML source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The document as parsed, before typing (for the rare rule that needs what typing
    /// dropped). Parsed again on each call rather than kept: kept documents stay small.
    pub fn raw(&self) -> Value {
        yaml::parse_single(&self.source).unwrap_or(Value::Null)
    }
}

/// Manifest templates of one application, by path.
#[derive(Debug, Default)]
pub struct Manifests {
    /// `apps/<app>/manifests/...` paths with their text, sorted by path.
    pub files: Vec<(String, Arc<str>)>,
}

/// A loaded config repository. Documents that failed to load are absent; their problems are in
/// the diagnostics returned by [`load`].
#[derive(Debug, Default)]
pub struct ConfigRepo {
    /// `bowline.yaml`, when it loaded.
    pub repository: Option<Arc<Document<Repository>>>,
    /// Applications by name (= directory under `apps/`).
    pub apps: BTreeMap<String, Arc<Document<Application>>>,
    /// Manifest templates by application directory.
    pub manifests: BTreeMap<String, Manifests>,
    /// Pipeline templates by name.
    pub pipelines: BTreeMap<String, Arc<Document<PipelineTemplate>>>,
    /// Canary configs by name.
    pub canaries: BTreeMap<String, Arc<Document<CanaryConfig>>>,
    /// Application directories without a loadable app.yaml (so references to them are not
    /// reported again as unknown).
    pub broken_apps: Vec<String>,
    /// Names of pipeline templates whose file failed to load (its `metadata.name` when it could
    /// be read, else the file name), so references to them are not reported as unknown too.
    pub broken_pipelines: Vec<String>,
    /// The same for canary configs.
    pub broken_canaries: Vec<String>,
}

impl ConfigRepo {
    /// The environments of `bowline.yaml` in promotion order (none when it did not load).
    pub fn environments(&self) -> &[Environment] {
        self.repository
            .as_ref()
            .map_or(&[], |r| r.doc.spec.environments.as_slice())
    }

    /// The environment called `name`.
    pub fn environment(&self, name: &str) -> Option<&Environment> {
        self.environments().iter().find(|e| e.name == name)
    }

    /// Environment names in promotion order.
    pub fn environment_names(&self) -> Vec<&str> {
        self.environments()
            .iter()
            .map(|e| e.name.as_str())
            .collect()
    }

    /// The environments an application deploys to, in promotion order (unknown ones skipped;
    /// a duplicated environment name, an error reported elsewhere, counts once).
    pub fn app_environments(&self, app: &Application) -> Vec<&Environment> {
        let all = self.environments();
        all.iter()
            .enumerate()
            .filter(|(i, e)| {
                app.spec.environments.contains_key(&e.name)
                    && !all[..*i].iter().any(|earlier| earlier.name == e.name)
            })
            .map(|(_, e)| e)
            .collect()
    }

    /// The effective sync policy of `app`: its own settings over the repository defaults.
    pub fn sync_policy(&self, app: &Application) -> SyncPolicy {
        let defaults = self
            .repository
            .as_ref()
            .map(|r| r.doc.spec.defaults.sync_policy)
            .unwrap_or_default();
        app.spec.sync_policy.resolve(&defaults)
    }

    /// The pipeline template an application runs: its own or the repository default.
    pub fn pipeline_of<'a>(&'a self, app: &'a Application) -> Option<&'a str> {
        app.spec
            .pipeline
            .as_ref()
            .map(|p| p.template.as_str())
            .or_else(|| {
                self.repository
                    .as_ref()
                    .and_then(|r| r.doc.spec.defaults.pipeline.as_deref())
            })
    }
}

/// Where a file sits in the repository layout.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Role {
    Repository,
    Application { dir: String },
    Manifest { dir: String },
    Pipeline,
    Canary,
    Policy,
    Ignored(&'static str),
}

fn role_of(path: &str) -> Role {
    let parts: Vec<&str> = path.split('/').collect();
    let yaml = path.ends_with(".yaml") || path.ends_with(".yml");
    match parts.as_slice() {
        [f] if *f == ROOT_FILE => Role::Repository,
        ["apps", dir, f] if *f == "app.yaml" || *f == "app.yml" => Role::Application {
            dir: (*dir).to_string(),
        },
        // Manifests, and in apps built with Kustomize the files their kustomizations use:
        // the renderer refuses what it cannot use.
        ["apps", dir, "manifests", ..] => Role::Manifest {
            dir: (*dir).to_string(),
        },
        ["apps", ..] => Role::Ignored("apps/<app>/ holds app.yaml and manifests/"),
        ["pipelines", _] if yaml => Role::Pipeline,
        ["pipelines", ..] => Role::Ignored(
            "pipelines/ holds one PipelineTemplate per .yaml file, not subdirectories",
        ),
        ["canary", _] if yaml => Role::Canary,
        ["canary", ..] => {
            Role::Ignored("canary/ holds one CanaryConfig per .yaml file, not subdirectories")
        }
        ["policies", ..] => Role::Policy,
        _ => Role::Ignored("not part of the config repository layout"),
    }
}

/// What loading one file gave: the document (if it loaded), its problems, and for a file that
/// did not load, its kind and name (so references to it are not reported as unknown).
type FileOutcome = (Option<Loaded>, Vec<Diagnostic>, Option<(Kind, String)>);

#[derive(Clone)]
enum Loaded {
    Repository(Arc<Document<Repository>>),
    Application(String, Arc<Document<Application>>),
    Pipeline(Arc<Document<PipelineTemplate>>),
    Canary(Arc<Document<CanaryConfig>>),
}

impl Loaded {
    /// Kind, `metadata.name` and file of the document.
    fn identity(&self) -> (Kind, String, String) {
        let (kind, name, file) = match self {
            Loaded::Repository(d) => (Kind::Repository, &d.doc.metadata.name, &d.file),
            Loaded::Application(_, d) => (Kind::Application, &d.doc.metadata.name, &d.file),
            Loaded::Pipeline(d) => (Kind::PipelineTemplate, &d.doc.metadata.name, &d.file),
            Loaded::Canary(d) => (Kind::CanaryConfig, &d.doc.metadata.name, &d.file),
        };
        (kind, name.clone(), file.clone())
    }

    fn error(&self, pointer: &str, message: String) -> Diagnostic {
        match self {
            Loaded::Repository(d) => d.error(pointer, message),
            Loaded::Application(_, d) => d.error(pointer, message),
            Loaded::Pipeline(d) => d.error(pointer, message),
            Loaded::Canary(d) => d.error(pointer, message),
        }
    }
}

/// Loads every document of a snapshot and runs the cross-document checks.
#[tracing::instrument(level = "info", skip_all, fields(files = snapshot.len()))]
pub fn load(snapshot: &Snapshot) -> (ConfigRepo, Vec<Diagnostic>) {
    let (repo, mut diagnostics) = load_documents(snapshot, &LoadCache::default());
    diagnostics.extend(validate::check(&repo));
    (repo, diagnostics)
}

/// Parsed files by path, each with the text it was parsed from: loading a commit that shares
/// most files with one loaded before parses only the files whose text differs.
#[derive(Default)]
pub struct LoadCache {
    files: std::sync::Mutex<std::collections::HashMap<String, (Arc<str>, FileOutcome)>>,
}

impl std::fmt::Debug for LoadCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let files = self.files.lock().map_or(0, |files| files.len());
        f.debug_struct("LoadCache").field("files", &files).finish()
    }
}

impl LoadCache {
    /// The cached outcome of `path` when it was parsed from the same text.
    fn get(&self, path: &str, text: &Arc<str>) -> Option<FileOutcome> {
        let files = self
            .files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (cached, outcome) = files.get(path)?;
        (Arc::ptr_eq(cached, text) || cached == text).then(|| outcome.clone())
    }

    /// Records what this load parsed and forgets paths the snapshot no longer has once they
    /// outnumber the ones it has (so a long-running daemon's cache follows the repository).
    fn update(&self, snapshot: &Snapshot, parsed: Vec<(String, Arc<str>, FileOutcome)>) {
        let mut files = self
            .files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (path, text, outcome) in parsed {
            files.insert(path, (text, outcome));
        }
        if files.len() > 2 * snapshot.len() + 64 {
            files.retain(|path, _| snapshot.get(path).is_some());
        }
    }
}

/// Loads every document of a snapshot, reusing what `cache` parsed before, without the
/// cross-document checks of [`validate`] (callers run them, or their per-app parts, next).
pub fn load_documents(snapshot: &Snapshot, cache: &LoadCache) -> (ConfigRepo, Vec<Diagnostic>) {
    let mut repo = ConfigRepo::default();
    let mut diagnostics = Vec::new();
    let mut work = Vec::new();
    let mut app_dirs_with_manifests = Vec::new();
    for (path, text) in snapshot.files() {
        match role_of(path) {
            Role::Manifest { dir } => {
                if app_dirs_with_manifests.last() != Some(&dir) {
                    app_dirs_with_manifests.push(dir.clone());
                }
                repo.manifests
                    .entry(dir)
                    .or_default()
                    .files
                    .push((path.to_string(), text.clone()));
            }
            Role::Policy => {}
            Role::Ignored(why) => {
                if path.ends_with(".yaml") || path.ends_with(".yml") {
                    diagnostics.push(
                        Diagnostic::file_error(path, format!("file is ignored: {why}"))
                            .into_warning(),
                    );
                }
            }
            role => work.push((path.to_string(), text.clone(), role)),
        }
    }

    let mut results: Vec<Option<FileOutcome>> = work
        .iter()
        .map(|(path, text, _)| cache.get(path, text))
        .collect();
    let parsed: Vec<(String, Arc<str>, FileOutcome)> = work
        .into_par_iter()
        .zip(results.par_iter())
        .filter(|(_, cached)| cached.is_none())
        .map(|((path, text, role), _)| {
            let outcome = load_file(path.clone(), text.clone(), role);
            (path, text, outcome)
        })
        .collect();
    let mut fresh = parsed.iter().map(|(_, _, outcome)| outcome.clone());
    for slot in results.iter_mut().filter(|r| r.is_none()) {
        *slot = fresh.next();
    }
    cache.update(snapshot, parsed);

    let mut seen: BTreeMap<(Kind, String), String> = BTreeMap::new();
    for (loaded, diags, broken) in results.into_iter().flatten() {
        diagnostics.extend(diags);
        match broken {
            Some((Kind::PipelineTemplate, name)) => repo.broken_pipelines.push(name),
            Some((Kind::CanaryConfig, name)) => repo.broken_canaries.push(name),
            _ => {}
        }
        let Some(loaded) = loaded else { continue };
        let (kind, name, file) = loaded.identity();
        if let Some(first) = seen.get(&(kind, name.clone())) {
            let message = format!(
                "duplicate {} name \"{name}\": also defined in {first}",
                kind.as_str()
            );
            diagnostics.push(loaded.error("/metadata/name", message));
            continue;
        }
        seen.insert((kind, name.clone()), file);
        match loaded {
            Loaded::Repository(d) => repo.repository = Some(d),
            Loaded::Application(dir, d) => {
                repo.apps.insert(dir, d);
            }
            Loaded::Pipeline(d) => {
                repo.pipelines.insert(name, d);
            }
            Loaded::Canary(d) => {
                repo.canaries.insert(name, d);
            }
        }
    }

    // Files that exist but could not be read still count as present.
    for path in snapshot.refused() {
        match role_of(path) {
            Role::Pipeline => repo.broken_pipelines.push(file_stem(path)),
            Role::Canary => repo.broken_canaries.push(file_stem(path)),
            _ => {}
        }
    }
    let exists = |p: &str| snapshot.get(p).is_some() || snapshot.was_refused(p);
    for dir in app_dirs_with_manifests {
        let has_app_file =
            exists(&format!("apps/{dir}/app.yaml")) || exists(&format!("apps/{dir}/app.yml"));
        if !has_app_file {
            diagnostics.push(Diagnostic::file_error(
                format!("apps/{dir}/app.yaml"),
                format!("missing: apps/{dir}/manifests/ exists but there is no app.yaml (kind: Application) next to it"),
            ));
        }
        if !repo.apps.contains_key(&dir) {
            repo.broken_apps.push(dir);
        }
    }
    for (path, _) in snapshot.files_under("apps/") {
        if let Role::Application { dir } = role_of(path) {
            if !repo.apps.contains_key(&dir) && !repo.broken_apps.contains(&dir) {
                repo.broken_apps.push(dir);
            }
        }
    }

    (repo, diagnostics)
}

fn load_file(path: String, text: Arc<str>, role: Role) -> FileOutcome {
    let kind = match role {
        Role::Repository => Kind::Repository,
        Role::Application { .. } => Kind::Application,
        Role::Pipeline => Kind::PipelineTemplate,
        Role::Canary => Kind::CanaryConfig,
        _ => return (None, Vec::new(), None),
    };
    match parse_document(&path, &text, kind) {
        Err((diags, name)) => {
            let name = name.unwrap_or_else(|| file_stem(&path));
            (None, diags, Some((kind, name)))
        }
        Ok(raw) => {
            let result = match role {
                Role::Repository => {
                    typed::<Repository>(path, text, raw).map(|d| Loaded::Repository(Arc::new(d)))
                }
                Role::Application { dir } => typed::<Application>(path, text, raw).and_then(|d| {
                    if d.doc.metadata.name == dir {
                        Ok(Loaded::Application(dir, Arc::new(d)))
                    } else {
                        let message = format!(
                            "\"{}\" must equal the directory name \"{dir}\"",
                            d.doc.metadata.name
                        );
                        Err(vec![d.error("/metadata/name", message)])
                    }
                }),
                Role::Pipeline => typed::<PipelineTemplate>(path, text, raw)
                    .map(|d| Loaded::Pipeline(Arc::new(d))),
                Role::Canary => {
                    typed::<CanaryConfig>(path, text, raw).map(|d| Loaded::Canary(Arc::new(d)))
                }
                _ => Err(Vec::new()),
            };
            match result {
                Ok(l) => (Some(l), Vec::new(), None),
                Err(d) => (None, d, None),
            }
        }
    }
}

/// Parses and schema-checks one document. On failure returns the diagnostics and, when it
/// could be read, the document's `metadata.name`.
fn parse_document(
    path: &str,
    text: &Arc<str>,
    kind: Kind,
) -> Result<Value, (Vec<Diagnostic>, Option<String>)> {
    let value = yaml::parse_single(text).map_err(|e| {
        (
            vec![Diagnostic::error(
                path, e.line, e.column, e.field, e.message,
            )],
            None,
        )
    })?;
    let doc = Document {
        file: path.to_string(),
        doc: (),
        source: text.clone(),
        index: OnceLock::new(),
    };
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .map(str::to_string);
    if !value.is_object() {
        return Err((
            vec![doc.error(
                "",
                "expected a mapping with apiVersion, kind, metadata and spec",
            )],
            name,
        ));
    }
    if let Some(found) = value.get("kind").and_then(Value::as_str) {
        if found != kind.as_str() {
            return Err((
                vec![doc.error(
                    "/kind",
                    format!(
                        "kind {} does not belong here: {} holds kind {}",
                        schema::short_value(&Value::String(found.to_string())),
                        expected_place(kind),
                        kind.as_str()
                    ),
                )],
                name,
            ));
        }
    }
    let violations = schema::validate(kind, &value);
    if violations.is_empty() {
        Ok(value)
    } else {
        Err((
            violations
                .into_iter()
                .map(|v| doc.error(&v.pointer, v.message))
                .collect(),
            name,
        ))
    }
}

/// `pipelines/canary-release.yaml` → `canary-release`.
fn file_stem(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.rsplit_once('.')
        .map_or(name, |(stem, _)| stem)
        .to_string()
}

fn expected_place(kind: Kind) -> &'static str {
    match kind {
        Kind::Repository => "bowline.yaml",
        Kind::Application => "apps/<app>/app.yaml",
        Kind::PipelineTemplate => "pipelines/<name>.yaml",
        Kind::CanaryConfig => "canary/<name>.yaml",
    }
}

fn typed<T: DeserializeOwned>(
    path: String,
    text: Arc<str>,
    raw: Value,
) -> Result<Document<T>, Vec<Diagnostic>> {
    match T::deserialize(&raw) {
        Ok(doc) => Ok(Document {
            file: path,
            doc,
            source: text,
            index: OnceLock::new(),
        }),
        Err(e) => {
            // The schema admits only what the types accept; reaching this is a schema gap,
            // reported like any other problem rather than hidden.
            Err(vec![Diagnostic::file_error(
                path,
                format!("invalid document: {e}"),
            )])
        }
    }
}
