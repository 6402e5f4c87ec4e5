//! Rendering: (application, environment) → the sorted list of Kubernetes objects to apply.
//!
//! Manifests under `apps/<app>/manifests/` are MiniJinja templates (sandboxed, see
//! [`crate::template`]) with `app`, `env`, `namespace`, `image` and `parameters` in the
//! context; files whose name starts with `_` are partials, only used through `{% include %}`.
//! An app whose manifests hold a kustomization is built by kustomize instead ([`kustomize`]).
//! bowline's labels and annotations are added, namespaced objects get the app's namespace when
//! they name none, and objects are sorted by [`order`]. The output is deterministic byte for
//! byte: keys are sorted and so are objects.

pub mod kube_yaml;
pub mod kustomize;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use rayon::prelude::*;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::config::{Application, ConfigRepo, Document, Environment, Image};
use crate::diagnostic::Diagnostic;
use crate::template;

pub use crate::object::{APP_KEY, ENV_KEY, MANAGED_BY, MANAGED_BY_LABEL};

/// One rendered Kubernetes object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RenderedObject {
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// `metadata.namespace`, absent for cluster-scoped objects.
    pub namespace: Option<String>,
    /// `metadata.name`.
    pub name: String,
    /// The manifest file it came from.
    pub source: String,
    /// Line of the rendered output where its document starts.
    pub line: usize,
    /// The whole object.
    pub object: Value,
}

impl RenderedObject {
    /// An object read back from the store or an execution snapshot: no source position.
    pub fn from_value(object: Value) -> RenderedObject {
        let key = crate::diff::ObjectKey::of(&object);
        RenderedObject {
            api_version: key.api_version,
            kind: key.kind,
            namespace: key.namespace,
            name: key.name,
            source: String::new(),
            line: 0,
            object,
        }
    }
}

impl RenderedObject {
    /// `kind/namespace/name` (or `kind/name`), for messages and tables.
    pub fn id(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{}/{ns}/{}", self.kind, self.name),
            None => format!("{}/{}", self.kind, self.name),
        }
    }

    fn group(&self) -> &str {
        self.api_version.rsplit_once('/').map_or("", |(g, _)| g)
    }
}

/// Why a file under `manifests/` of an app rendered from templates is refused.
const NOT_A_MANIFEST: &str = "not a manifest: files under manifests/ are Kubernetes manifests ending in .yaml, .yml or .json (or, in an app built with Kustomize, the files its kustomizations use); move other files out of manifests/";

/// Whether `path` ends in `.yaml`, `.yml` or `.json` in any case: what a manifest may be.
fn is_manifest_file(path: &str) -> bool {
    path.rsplit_once('.').is_some_and(|(_, ext)| {
        ["yaml", "yml", "json"]
            .iter()
            .any(|wanted| ext.eq_ignore_ascii_case(wanted))
    })
}

/// The manifests of one application compiled once, ready to render for each environment.
pub struct AppRenderer<'r> {
    app: &'r Document<Application>,
    sources: Sources,
    /// Problems with the app's files that do not stop its renders: a file that is not a
    /// manifest, or that no kustomization names.
    file_problems: Vec<Diagnostic>,
    /// `apps/<app>/manifests/`.
    prefix: String,
}

/// What an app's `manifests/` holds.
enum Sources {
    /// MiniJinja templates.
    Templates {
        env: Box<minijinja::Environment<'static>>,
        /// Names of the templates that produce objects (not partials), relative to manifests/.
        roots: Vec<String>,
    },
    /// Kustomizations, built per environment (see [`kustomize`]).
    Kustomize {
        files: Vec<(String, Arc<str>)>,
        /// Directories holding a kustomization, with its file.
        dirs: BTreeMap<String, String>,
        /// The app's files written out, on the first build.
        sandbox: OnceLock<Result<kustomize::Sandbox, String>>,
    },
}

impl<'r> AppRenderer<'r> {
    /// Compiles the manifest templates of `app` (or checks its kustomizations); syntax errors
    /// come back with file and line.
    pub fn new(repo: &ConfigRepo, app: &'r Document<Application>) -> Result<Self, Vec<Diagnostic>> {
        let prefix = format!("apps/{}/manifests/", app.doc.metadata.name);
        let files: &[(String, Arc<str>)] = repo
            .manifests
            .get(&app.doc.metadata.name)
            .map_or(&[], |m| m.files.as_slice());
        let dirs = kustomize::directories(files, &prefix);
        if !dirs.is_empty() {
            let (errors, unused) = kustomize::check_references(files, &prefix);
            if !errors.is_empty() {
                return Err(errors.into_iter().chain(unused).collect());
            }
            return Ok(AppRenderer {
                app,
                sources: Sources::Kustomize {
                    files: files.to_vec(),
                    dirs,
                    sandbox: OnceLock::new(),
                },
                file_problems: unused,
                prefix,
            });
        }
        let mut env = template::sandbox();
        let mut roots = Vec::new();
        let mut errors = Vec::new();
        let mut file_problems = Vec::new();
        for (path, text) in files {
            if !is_manifest_file(path) {
                file_problems.push(Diagnostic::file_error(path, NOT_A_MANIFEST));
                continue;
            }
            // Templates are named relative to manifests/, so includes read
            // `{% include "_labels.yaml" %}`.
            let name = path.strip_prefix(&prefix).unwrap_or(path).to_string();
            if let Err(e) = env.add_template_owned(name.clone(), text.to_string()) {
                errors.push(template_error(&prefix, &e, Some(text)));
                continue;
            }
            let partial = name.rsplit('/').next().is_some_and(|f| f.starts_with('_'));
            if !partial {
                roots.push(name);
            }
        }
        if errors.is_empty() {
            Ok(AppRenderer {
                app,
                sources: Sources::Templates {
                    env: Box::new(env),
                    roots,
                },
                file_problems,
                prefix,
            })
        } else {
            errors.extend(file_problems);
            Err(errors)
        }
    }

    /// Problems with the app's files that do not stop its renders (errors among them still
    /// make the repository invalid), reported with each render.
    pub fn file_problems(&self) -> &[Diagnostic] {
        &self.file_problems
    }

    /// Renders every manifest for `environment`, sorted in apply order.
    pub fn render(
        &self,
        environment: &Environment,
    ) -> Result<Vec<RenderedObject>, Vec<Diagnostic>> {
        let app = &self.app.doc;
        let env_values = app
            .spec
            .environments
            .get(&environment.name)
            .cloned()
            .flatten()
            .unwrap_or_default();
        let namespace = env_values
            .namespace
            .clone()
            .unwrap_or_else(|| environment.namespace.clone());
        let image = Image::effective(app.spec.image.as_ref(), env_values.image.as_ref());
        let (mut objects, mut errors) = match &self.sources {
            Sources::Templates { env, roots } => self.render_templates(
                env,
                roots,
                environment,
                &env_values,
                &namespace,
                image.as_ref(),
            ),
            Sources::Kustomize {
                files,
                dirs,
                sandbox,
            } => self.render_kustomization(
                files,
                dirs,
                sandbox,
                environment,
                env_values.kustomize.as_ref().map(|k| k.path.as_str()),
                &namespace,
                image.as_ref(),
            ),
        };
        let mut seen: BTreeMap<(String, String, Option<String>, String), String> = BTreeMap::new();
        for o in &objects {
            let key = (
                o.group().to_string(),
                o.kind.clone(),
                o.namespace.clone(),
                o.name.clone(),
            );
            let here = format!("{}:{}", o.source, o.line);
            if let Some(first) = seen.insert(key, here) {
                errors.push(Diagnostic::error(
                    &o.source,
                    o.line,
                    1,
                    "",
                    format!(
                        "environment {}: {} is defined twice (first at {first})",
                        environment.name,
                        o.id()
                    ),
                ));
            }
        }
        // Destinations are the platform's, not the app's: an object outside them fails the
        // render, so it never reaches validation's "ok", a plan or an execution snapshot.
        let destinations = crate::destination::Destinations::of(environment);
        for o in &objects {
            let key = crate::diff::ObjectKey::of(&o.object);
            if let Err(refused) = destinations.check(&key, o.namespace.is_none()) {
                let field = if o.namespace.is_some() {
                    "metadata.namespace"
                } else {
                    "kind"
                };
                errors.push(Diagnostic::error(
                    &o.source,
                    o.line,
                    1,
                    field,
                    refused.to_string(),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        objects.sort_by(|a, b| {
            (
                crate::object::kind_rank(&a.kind),
                &a.kind,
                &a.namespace,
                &a.name,
                &a.api_version,
            )
                .cmp(&(
                    crate::object::kind_rank(&b.kind),
                    &b.kind,
                    &b.namespace,
                    &b.name,
                    &b.api_version,
                ))
        });
        Ok(objects)
    }

    /// Renders each template for `environment`.
    fn render_templates(
        &self,
        env: &minijinja::Environment<'static>,
        roots: &[String],
        environment: &Environment,
        env_values: &crate::config::AppEnvironment,
        namespace: &str,
        image: Option<&Image>,
    ) -> (Vec<RenderedObject>, Vec<Diagnostic>) {
        let app = &self.app.doc;
        let mut parameters = Value::Object(app.spec.parameters.clone());
        merge(
            &mut parameters,
            &Value::Object(env_values.parameters.clone()),
        );
        let mut context = serde_json::json!({
            "app": {
                "name": app.metadata.name,
                "labels": app.metadata.labels,
            },
            "env": {
                "name": environment.name,
                "clusters": environment.clusters.iter().map(|c| &c.name).collect::<Vec<_>>(),
            },
            "namespace": namespace,
            "parameters": parameters,
        });
        // Without an image, `image` and `app.image` stay undefined, so a template using them
        // fails (strictly undefined) instead of rendering a null.
        if let Some(image) = &image {
            context["image"] = Value::String(image.reference());
            context["app"]["image"] = serde_json::to_value(image).unwrap_or(Value::Null);
        }
        let ctx = minijinja::Value::from(minijinja::value::Serde(&context));

        let mut objects = Vec::new();
        let mut errors = Vec::new();
        // What the app's manifests may still write in this environment.
        let mut budget = template::MAX_TOTAL_OUTPUT_BYTES;
        for name in roots {
            let path = &format!("{}{name}", self.prefix);
            if budget == 0 {
                errors.push(Diagnostic::file_error(
                    path,
                    format!(
                        "environment {}: not rendered: the app's manifests exceed the total limit of {}",
                        environment.name,
                        template::describe_size(template::MAX_TOTAL_OUTPUT_BYTES)
                    ),
                ));
                break;
            }
            let cap = budget.min(template::MAX_OUTPUT_BYTES);
            let rendered = env
                .get_template(name)
                .and_then(|t| template::render_capped(&t, &ctx, cap));
            if let Ok(text) = &rendered {
                budget = budget.saturating_sub(text.len());
            }
            let text = match rendered {
                Ok(text) => text,
                Err(e) => {
                    let source = e
                        .name()
                        .and_then(|n| env.get_template(n).ok())
                        .map(|t| t.source().to_string());
                    let mut d = template_error(&self.prefix, &e, source.as_deref());
                    if e.name().is_none() {
                        // The output cap stops a render without naming the template.
                        d.file = path.clone();
                    }
                    d.message = format!("environment {}: {}", environment.name, d.message);
                    if image.is_none() && e.kind() == minijinja::ErrorKind::UndefinedError {
                        d.message.push_str(
                            ": this app sets no spec.image, so its templates cannot use image or app.image",
                        );
                    }
                    errors.push(d);
                    continue;
                }
            };
            match kube_yaml::parse_stream(&text) {
                Ok(docs) => {
                    for (n, doc) in docs.into_iter().enumerate() {
                        match self.object(path, n + 1, doc.line, doc.value, namespace, &environment.name) {
                            Ok(o) => objects.push(o),
                            Err(d) => errors.push(d),
                        }
                    }
                }
                Err(e) => errors.push(Diagnostic::error(
                    path,
                    e.line,
                    e.column,
                    "",
                    format!(
                        "environment {}: rendered output is not valid YAML (line {} of the output): {}{}",
                        environment.name,
                        e.line,
                        if e.field.is_empty() { String::new() } else { format!("{}: ", e.field) },
                        e.message
                    ),
                )),
            }
        }
        (objects, errors)
    }

    /// Builds the kustomization `environment` uses (see [`kustomize`]); each object is
    /// attributed to the manifest kustomize read it from.
    #[allow(clippy::too_many_arguments)]
    fn render_kustomization(
        &self,
        files: &[(String, Arc<str>)],
        dirs: &BTreeMap<String, String>,
        sandbox: &OnceLock<Result<kustomize::Sandbox, String>>,
        environment: &Environment,
        configured: Option<&str>,
        namespace: &str,
        image: Option<&Image>,
    ) -> (Vec<RenderedObject>, Vec<Diagnostic>) {
        let env_name = environment.name.as_str();
        let fail = |file: &str, message: String| {
            let d = Diagnostic::file_error(file, format!("environment {env_name}: {message}"));
            (Vec::new(), vec![d])
        };
        let dir = match kustomize::directory_for(dirs, env_name, configured) {
            Ok(dir) => dir,
            Err(message) if configured.is_some() => {
                let pointer = format!("/spec/environments/{env_name}/kustomize/path");
                return (Vec::new(), vec![self.app.error(&pointer, message)]);
            }
            Err(message) => {
                let pointer = format!("/spec/environments/{env_name}");
                return (Vec::new(), vec![self.app.error(&pointer, message)]);
            }
        };
        // `directory_for` only answers directories of `dirs`.
        let Some(file) = dirs.get(dir) else {
            return fail(
                &self.app.file,
                format!("no kustomization in manifests/{dir}"),
            );
        };
        let kubectl = match kustomize::kubectl() {
            Ok(kubectl) => kubectl,
            Err(message) => return fail(file, message),
        };
        let sandbox = match sandbox.get_or_init(|| kustomize::Sandbox::new(files, &self.prefix)) {
            Ok(sandbox) => sandbox,
            Err(message) => return fail(file, message.clone()),
        };
        let built = {
            let _span = tracing::info_span!(
                "kustomize",
                app = %self.app.doc.metadata.name,
                environment = env_name,
                dir
            )
            .entered();
            sandbox.build(
                kubectl,
                dir,
                image,
                kustomize::TIMEOUT,
                template::MAX_TOTAL_OUTPUT_BYTES,
            )
        };
        let text = match built {
            Ok(text) => text,
            Err(message) => return fail(file, format!("kustomize: {message}")),
        };
        let documents = match kube_yaml::parse_stream(&text) {
            Ok(documents) => documents,
            Err(e) => {
                return fail(
                    file,
                    format!("kustomize's output is not valid YAML: {}", e.message),
                );
            }
        };
        let mut outlines = kustomize::Outlines::default();
        let mut objects = Vec::new();
        let mut errors = Vec::new();
        for (n, document) in documents.into_iter().enumerate() {
            let mut value = document.value;
            let source =
                kustomize::take_origin(&mut value, &self.prefix).unwrap_or_else(|| file.clone());
            let text = |p: &str| value.pointer(p).and_then(Value::as_str).unwrap_or_default();
            let line = outlines.line(files, &source, text("/kind"), text("/metadata/name"));
            match self.object(&source, n + 1, line, value, namespace, env_name) {
                Ok(o) => objects.push(o),
                Err(d) => errors.push(d),
            }
        }
        // kustomize sets a tag only on an image the manifests name: spec.image would otherwise
        // be ignored without a word, and a release would deploy nothing new.
        if let Some(image) = image.filter(|i| !i.repository.is_empty())
            && errors.is_empty()
            && !objects
                .iter()
                .any(|o| kustomize::uses_image(&o.object, &image.repository))
        {
            errors.push(self.app.error(
                "/spec/image/repository",
                format!(
                    "environment {env_name}: no container of the kustomization's output uses image {}: kustomize sets spec.image's tag only on an image the manifests name; name it in a manifest, or remove spec.image",
                    image.repository
                ),
            ));
        }
        (objects, errors)
    }

    /// Checks one rendered document and adds bowline's metadata.
    fn object(
        &self,
        path: &str,
        number: usize,
        line: usize,
        mut value: Value,
        namespace: &str,
        environment: &str,
    ) -> Result<RenderedObject, Diagnostic> {
        let fail = |message: String| {
            Diagnostic::error(
                path,
                line,
                1,
                "",
                format!("environment {environment}: document {number}: {message}"),
            )
        };
        let Some(obj) = value.as_object_mut() else {
            return Err(fail("expected a Kubernetes object (a mapping)".to_string()));
        };
        let api_version = match obj.get("apiVersion").and_then(Value::as_str) {
            Some(v) if !v.is_empty() => v.to_string(),
            _ => return Err(fail("missing apiVersion".to_string())),
        };
        let kind = match obj.get("kind").and_then(Value::as_str) {
            Some(k) if !k.is_empty() => k.to_string(),
            _ => return Err(fail("missing kind".to_string())),
        };
        let metadata = obj
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        let Some(metadata) = metadata.as_object_mut() else {
            return Err(fail("metadata must be a mapping".to_string()));
        };
        let name = match metadata.get("name").and_then(Value::as_str) {
            Some(n) if !n.is_empty() => n.to_string(),
            _ if metadata.contains_key("generateName")
                && matches!(self.sources, Sources::Kustomize { .. }) =>
            {
                return Err(fail(format!(
                    "{kind} has metadata.generateName but no metadata.name: bowline applies, compares and prunes objects by name, so a name the server makes up cannot be tracked; give it a metadata.name (a new one per release, e.g. with a nameSuffix in the overlay, since a Job's template is immutable)"
                )));
            }
            _ if metadata.contains_key("generateName") => {
                return Err(fail(format!(
                    "{kind} has metadata.generateName but no metadata.name: bowline applies, compares and prunes objects by name, so a name the server makes up cannot be tracked; name it per deploy instead, e.g. name: {{{{ app.name }}}}-migrate-{{{{ app.image.tag }}}} (a Job's template is immutable, so a new name per image also gives each deploy its own Job)"
                )));
            }
            _ => return Err(fail(format!("{kind} has no metadata.name"))),
        };
        let namespace = if crate::object::is_cluster_scoped(&kind) {
            None
        } else {
            match metadata.get("namespace") {
                Some(Value::String(ns)) => Some(ns.clone()),
                Some(_) => return Err(fail("metadata.namespace must be a string".to_string())),
                None => {
                    metadata.insert("namespace".into(), Value::String(namespace.to_string()));
                    Some(namespace.to_string())
                }
            }
        };
        let app = self.app.doc.metadata.name.as_str();
        let labels: &[(&str, &str)] = &[
            (MANAGED_BY_LABEL, MANAGED_BY),
            (APP_KEY, app),
            (ENV_KEY, environment),
        ];
        let annotations: &[(&str, &str)] = &[(APP_KEY, app), (ENV_KEY, environment)];
        for (field, entries) in [("labels", labels), ("annotations", annotations)] {
            let map = metadata
                .entry(field)
                .or_insert_with(|| Value::Object(Map::new()));
            let Some(map) = map.as_object_mut() else {
                return Err(fail(format!("metadata.{field} must be a mapping")));
            };
            for (k, v) in entries {
                map.insert((*k).to_string(), Value::String((*v).to_string()));
            }
        }
        Ok(RenderedObject {
            api_version,
            kind,
            namespace,
            name,
            source: path.to_string(),
            line,
            object: value,
        })
    }
}

/// Result of rendering one application in one environment.
#[derive(Debug)]
pub struct Rendered {
    /// Application name.
    pub app: String,
    /// Environment name.
    pub environment: String,
    /// Objects, or the problems that prevented rendering.
    pub result: Result<Vec<RenderedObject>, Vec<Diagnostic>>,
    /// Problems that do not prevent rendering (see [`lint`]).
    pub warnings: Vec<Diagnostic>,
}

/// Warnings about rendered objects that are valid but unwise: a Secret with literal values
/// means the secret is stored in clear in Git, readable by everyone with access to the
/// repository.
pub fn lint(objects: &[RenderedObject]) -> Vec<Diagnostic> {
    let secrets = objects
        .iter()
        .filter(|o| o.kind == "Secret" && o.api_version == "v1")
        .filter(|o| {
            ["data", "stringData"].iter().any(|f| {
                o.object
                    .get(f)
                    .and_then(Value::as_object)
                    .is_some_and(|m| !m.is_empty())
            })
        })
        .map(|o| {
            Diagnostic::file_error(
                &o.source,
                format!(
                    "Secret \"{}\" has literal data: its values are stored in clear in Git; \
                     keep secrets out of the config repository (for example with an external \
                     secrets operator or sealed secrets)",
                    o.name
                ),
            )
            .into_warning()
        });
    secrets
        .chain(objects.iter().flat_map(argo_cd_annotations))
        .collect()
}

/// Argo CD annotations that change how Argo CD applies an object, which bowline does not
/// read: said rather than silently ignored, with what bowline does instead.
fn argo_cd_annotations(object: &RenderedObject) -> Vec<Diagnostic> {
    let Some(annotations) = object
        .object
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    else {
        return Vec::new();
    };
    let what = |key: &str| match key {
        "argocd.argoproj.io/sync-wave" => Some(
            "bowline applies objects in its own kind order (namespaces and CRDs first, workloads after their config), cluster wave by cluster wave; order dependent steps as pipeline stages",
        ),
        "argocd.argoproj.io/hook" | "argocd.argoproj.io/hook-delete-policy" => Some(
            "bowline runs no hooks: the object is applied like any other on every sync; run such work as a pipeline stage (a webhook, or a Job deployed by its own app)",
        ),
        "argocd.argoproj.io/sync-options" | "argocd.argoproj.io/compare-options" => {
            Some("bowline has its own settings: syncPolicy and ignoreDifferences in app.yaml")
        }
        _ => None,
    };
    annotations
        .keys()
        .filter_map(|key| what(key).map(|instead| (key, instead)))
        .map(|(key, instead)| {
            Diagnostic::file_error(
                &object.source,
                format!(
                    "{} \"{}\" has the Argo CD annotation {key}, which bowline does not read: {instead}",
                    object.kind, object.name
                ),
            )
            .into_warning()
        })
        .collect()
}

/// Renders the selected applications for the selected environments (all when `None`), in
/// parallel, in application then promotion order.
#[tracing::instrument(level = "info", skip(repo))]
pub fn render_repo(
    repo: &ConfigRepo,
    app_filter: Option<&str>,
    env_filter: Option<&str>,
) -> Vec<Rendered> {
    render_repo_with(repo, app_filter, env_filter, |r| r)
}

/// What `validate` and `plan` keep of a render: the object count and the problems. Keeping
/// summaries instead of objects holds peak memory down on large repositories.
#[derive(Debug, Clone)]
pub struct RenderSummary {
    /// Application name.
    pub app: String,
    /// Environment name.
    pub environment: String,
    /// Number of objects, or the problems that prevented rendering.
    pub result: Result<usize, Vec<Diagnostic>>,
    /// Problems that do not prevent rendering.
    pub warnings: Vec<Diagnostic>,
}

impl From<Rendered> for RenderSummary {
    fn from(r: Rendered) -> Self {
        RenderSummary {
            app: r.app,
            environment: r.environment,
            result: r.result.map(|objects| objects.len()),
            warnings: r.warnings,
        }
    }
}

/// Like [`render_repo`], but summarizes each render as soon as it is done, so rendered objects
/// never all live at once.
#[tracing::instrument(level = "info", skip(repo))]
pub fn render_summaries(
    repo: &ConfigRepo,
    app_filter: Option<&str>,
    env_filter: Option<&str>,
) -> Vec<RenderSummary> {
    render_repo_with(repo, app_filter, env_filter, RenderSummary::from)
}

/// Renders in parallel and maps each result through `keep` right away (to a summary, to text),
/// so only what `keep` returns stays in memory.
pub fn render_repo_with<T: Send>(
    repo: &ConfigRepo,
    app_filter: Option<&str>,
    env_filter: Option<&str>,
    keep: impl Fn(Rendered) -> T + Sync,
) -> Vec<T> {
    let apps: Vec<&Document<Application>> = repo
        .apps
        .values()
        .map(|a| a.as_ref())
        .filter(|a| app_filter.is_none_or(|f| a.doc.metadata.name == f))
        .collect();
    apps.par_iter()
        .flat_map_iter(|app| render_app(repo, app, env_filter).into_iter().map(&keep))
        .collect()
}

/// Renders one app for each of its environments (or only `env_filter`), in promotion order.
pub fn render_app(
    repo: &ConfigRepo,
    app: &Document<Application>,
    env_filter: Option<&str>,
) -> Vec<Rendered> {
    let renderer = AppRenderer::new(repo, app);
    repo.app_environments(&app.doc)
        .into_iter()
        .filter(|e| env_filter.is_none_or(|f| e.name == f))
        .map(|e| {
            let result = match &renderer {
                Ok(r) => r.render(e),
                Err(errors) => Err(errors.clone()),
            };
            let mut warnings = result.as_deref().map(lint).unwrap_or_default();
            if let Ok(r) = &renderer {
                warnings.extend(r.file_problems().iter().cloned());
            }
            Rendered {
                app: app.doc.metadata.name.clone(),
                environment: e.name.clone(),
                result,
                warnings,
            }
        })
        .collect()
}

/// The YAML stream of `objects`: one document each, preceded by a `# Source:` comment.
pub fn to_yaml_stream(objects: &[RenderedObject]) -> String {
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n# Source: ");
        out.push_str(&o.source);
        out.push('\n');
        // Serializing a serde_json::Value to YAML cannot fail: keys are strings, values plain.
        match serde_yaml::to_string(&o.object) {
            Ok(text) => out.push_str(&text),
            Err(e) => out.push_str(&format!("# unserializable object: {e}\n")),
        }
    }
    out
}

/// Deep merge: mappings merge key by key, anything else in `over` replaces.
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// A template error located in the manifest file it names (`prefix` + template name).
/// `source` is the text of that template, used to turn MiniJinja's byte range into a column.
fn template_error(prefix: &str, e: &minijinja::Error, source: Option<&str>) -> Diagnostic {
    let file = format!("{prefix}{}", e.name().unwrap_or_default());
    let line = e.line().unwrap_or(1);
    let column = match (e.range(), source) {
        (Some(range), Some(text)) if range.start <= text.len() => {
            let before = text.get(..range.start).unwrap_or_default();
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            before[line_start..].chars().count() + 1
        }
        _ => 1,
    };
    Diagnostic::error(file, line, column, "", template::error_message(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(kind: &str, body: Value) -> RenderedObject {
        RenderedObject {
            api_version: "v1".into(),
            kind: kind.into(),
            namespace: Some("ns".into()),
            name: "x".into(),
            source: "apps/a/manifests/x.yaml".into(),
            line: 1,
            object: body,
        }
    }

    #[test]
    fn secrets_with_literal_data_are_flagged() {
        let flagged = lint(&[
            object("Secret", json!({"data": {"password": "aHVudGVyMg=="}})),
            object("Secret", json!({"type": "kubernetes.io/tls"})),
            object("ConfigMap", json!({"data": {"a": "b"}})),
        ]);
        assert_eq!(flagged.len(), 1);
        assert!(!flagged[0].is_error());
        assert!(!flagged[0].message.contains("aHVudGVyMg=="));
    }

    #[test]
    fn merge_is_deep_for_maps_only() {
        let mut base = json!({"a": {"x": 1, "y": 2}, "b": [1, 2]});
        merge(&mut base, &json!({"a": {"y": 3}, "b": [9]}));
        assert_eq!(base, json!({"a": {"x": 1, "y": 3}, "b": [9]}));
    }
}
