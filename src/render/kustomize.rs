//! Kustomize sources: an app whose `manifests/` holds a kustomization is built with the
//! kustomize built into `kubectl`, once per environment, instead of being rendered as templates.
//!
//! Which kustomization an environment builds: `spec.environments.<env>.kustomize.path` when
//! set, else `overlays/<env>/`, else `<env>/`, else the root of `manifests/` (the layouts Argo
//! CD and Flux users keep). When the app sets `spec.image`, its tag (or digest) is set on that
//! image the way `kustomize edit set image` would.
//!
//! A kustomization comes from the repository, so from any pull request: it is built in a
//! sandbox. Every path it names (resources, components, patches, generator files, …) must be
//! a relative path to a file or directory of the app's own `manifests/` in the snapshot, so
//! remote bases, absolute paths, files of other apps and Helm charts are refused before
//! anything runs. Only the app's files are written to a fresh temporary directory; `kubectl`
//! runs there with an empty environment (no `PATH`, so no `git`; HTTP proxies pointing at a
//! closed port, so no fetch), under a time limit, and its output is capped.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

use crate::config::Image;
use crate::diagnostic::Diagnostic;

/// The names kustomize looks for in a directory, in its order.
pub const FILE_NAMES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// Longest a build may run.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// Environment variable naming the `kubectl` to run (default: `kubectl` on `PATH`).
pub const KUBECTL_ENV: &str = "BOWLINE_KUBECTL";

/// The annotation kustomize adds with `buildMetadata: [originAnnotations]`, naming the file
/// each object came from; bowline reads it and removes it.
const ORIGIN_ANNOTATION: &str = "config.kubernetes.io/origin";

/// Oldest kustomize (built into kubectl 1.27 and later) that knows every field bowline writes.
const MIN_KUSTOMIZE_MAJOR: u64 = 5;

/// Most bytes of kubectl's error output kept.
const MAX_STDERR_BYTES: usize = 64 * 1024;

/// A dead address for HTTP proxies: any fetch kustomize might attempt fails at once.
const NO_NETWORK_PROXY: &str = "http://127.0.0.1:9";

/// True when `path` is a kustomization file.
pub fn is_kustomization(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    FILE_NAMES.contains(&name)
}

/// The directories of an app's `manifests/` that hold a kustomization (relative to
/// `manifests/`, `""` for its root), each with its file's repository path.
pub fn directories(files: &[(String, Arc<str>)], prefix: &str) -> BTreeMap<String, String> {
    let mut dirs: BTreeMap<String, String> = BTreeMap::new();
    for (path, _) in files {
        let Some(rel) = path.strip_prefix(prefix) else {
            continue;
        };
        if !is_kustomization(rel) {
            continue;
        }
        let dir = rel.rsplit_once('/').map_or("", |(d, _)| d).to_string();
        // kustomize reads the first of its names that exists.
        let rank = |p: &str| FILE_NAMES.iter().position(|n| p.ends_with(n));
        match dirs.get(&dir) {
            Some(existing) if rank(existing.as_str()) <= rank(path.as_str()) => {}
            _ => {
                dirs.insert(dir, path.clone());
            }
        }
    }
    dirs
}

/// The kustomization directory `environment` builds, or why there is none. `configured` is
/// the app's `spec.environments.<env>.kustomize.path`.
pub fn directory_for<'d>(
    dirs: &'d BTreeMap<String, String>,
    environment: &str,
    configured: Option<&str>,
) -> Result<&'d str, String> {
    let found = || {
        dirs.keys()
            .map(|d| if d.is_empty() { "." } else { d.as_str() })
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(path) = configured {
        let wanted = normalize("", path).unwrap_or_else(|_| path.to_string());
        return dirs
            .get_key_value(&wanted)
            .map(|(d, _)| d.as_str())
            .ok_or_else(|| {
                format!(
                    "manifests/{path} holds no kustomization.yaml (kustomizations of this app: {})",
                    found()
                )
            });
    }
    for candidate in [format!("overlays/{environment}"), environment.to_string()] {
        if let Some((dir, _)) = dirs.get_key_value(&candidate) {
            return Ok(dir);
        }
    }
    if let Some((dir, _)) = dirs.get_key_value("") {
        return Ok(dir);
    }
    Err(format!(
        "no kustomization to build: add manifests/overlays/{environment}/kustomization.yaml or manifests/kustomization.yaml, or name one in spec.environments.{environment}.kustomize.path (kustomizations of this app: {})",
        found()
    ))
}

/// `reference` joined to `dir` (both relative to `manifests/`), without `.` and `..`; an
/// error when it leaves `manifests/`.
fn normalize(dir: &str, reference: &str) -> Result<String, ()> {
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for part in reference.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop().ok_or(())?;
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// The fields of a kustomization that name files or directories.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct References {
    resources: Vec<String>,
    bases: Vec<String>,
    components: Vec<String>,
    crds: Vec<String>,
    configurations: Vec<String>,
    patches_strategic_merge: Vec<String>,
    patches: Vec<PathField>,
    patches_json6902: Vec<PathField>,
    replacements: Vec<PathField>,
    config_map_generator: Vec<Generator>,
    secret_generator: Vec<Generator>,
    generators: Vec<Entry>,
    transformers: Vec<Entry>,
    validators: Vec<Entry>,
    openapi: Option<PathField>,
    helm_charts: Option<serde::de::IgnoredAny>,
    helm_chart_inflation_generator: Option<serde::de::IgnoredAny>,
    helm_globals: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PathField {
    path: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Generator {
    files: Vec<String>,
    envs: Vec<String>,
    env: Option<String>,
}

/// A generator, transformer or validator: a file, or its configuration inline.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Entry {
    Path(String),
    Inline(serde::de::IgnoredAny),
}

/// Problems with the paths every kustomization of an app names: each must be a relative
/// path to a file or directory of the app's own `manifests/` (`prefix`) in `files`.
///
/// Every other file must be named by one of them: kustomize never reads a file no
/// kustomization names, so a manifest left out would silently not be deployed (and pruned if
/// it was). A `.yaml`, `.yml` or `.json` file nothing names is an error, any other (a
/// `README.md`) a warning.
///
/// Returns the problems with references, which stop a build, and those with files nothing
/// names, which do not.
pub fn check_references(
    files: &[(String, Arc<str>)],
    prefix: &str,
) -> (Vec<Diagnostic>, Vec<Diagnostic>) {
    let mut problems = Vec::new();
    let mut unused_files = Vec::new();
    let mut used = std::collections::HashSet::new();
    let mut all_read = true;
    for (path, text) in files {
        let Some(rel) = path.strip_prefix(prefix) else {
            continue;
        };
        if !is_kustomization(rel) {
            continue;
        }
        let dir = rel.rsplit_once('/').map_or("", |(d, _)| d);
        let value = match super::kube_yaml::parse_stream(text) {
            Ok(docs) => match docs.into_iter().next() {
                Some(doc) => doc.value,
                None => continue,
            },
            Err(e) => {
                problems.push(Diagnostic::error(
                    path,
                    e.line,
                    e.column,
                    e.field.clone(),
                    format!("not valid YAML: {}", e.message),
                ));
                all_read = false;
                continue;
            }
        };
        let refs: References = match serde_json::from_value(value) {
            Ok(refs) => refs,
            Err(e) => {
                problems.push(Diagnostic::file_error(
                    path,
                    format!("not a kustomization kustomize can read: {e}"),
                ));
                all_read = false;
                continue;
            }
        };
        let at = |reference: &str, field: &str, message: String| {
            let (line, column) = position(text, reference);
            Diagnostic::error(path, line, column, field, message)
        };
        for (field, present) in [
            ("helmCharts", refs.helm_charts.is_some()),
            (
                "helmChartInflationGenerator",
                refs.helm_chart_inflation_generator.is_some(),
            ),
            ("helmGlobals", refs.helm_globals.is_some()),
        ] {
            if present {
                problems.push(at(
                    &format!("{field}:"),
                    field,
                    "not built: kustomize would run helm and fetch the chart; render the chart into plain manifests under manifests/ (helm template) and list them in resources".to_string(),
                ));
            }
        }
        let named = refs
            .resources
            .iter()
            .map(|r| ("resources", r))
            .chain(refs.bases.iter().map(|r| ("bases", r)))
            .chain(refs.components.iter().map(|r| ("components", r)))
            .chain(refs.crds.iter().map(|r| ("crds", r)))
            .chain(refs.configurations.iter().map(|r| ("configurations", r)))
            .chain(
                refs.patches_strategic_merge
                    .iter()
                    // A patch written inline, not a file.
                    .filter(|p| !p.contains('\n'))
                    .map(|r| ("patchesStrategicMerge", r)),
            )
            .chain(path_fields("patches", &refs.patches))
            .chain(path_fields("patchesJson6902", &refs.patches_json6902))
            .chain(path_fields("replacements", &refs.replacements))
            .chain(
                refs.openapi
                    .iter()
                    .filter_map(|o| o.path.as_ref())
                    .map(|p| ("openapi", p)),
            )
            .chain(generator_files(
                "configMapGenerator",
                &refs.config_map_generator,
            ))
            .chain(generator_files("secretGenerator", &refs.secret_generator))
            .chain(entries("generators", &refs.generators))
            .chain(entries("transformers", &refs.transformers))
            .chain(entries("validators", &refs.validators));
        for (field, reference) in named {
            match check_reference(files, prefix, dir, reference) {
                Ok(target) => {
                    used.insert(target);
                }
                Err(why) => problems.push(at(reference, field, format!("\"{reference}\" {why}"))),
            }
        }
    }
    if all_read {
        for (path, _) in files {
            let Some(rel) = path.strip_prefix(prefix) else {
                continue;
            };
            if is_kustomization(rel) || used.contains(path) {
                continue;
            }
            let manifest = super::is_manifest_file(rel);
            let unused = Diagnostic::file_error(
                path,
                "no kustomization of this app names this file, so kustomize never reads it: list it (resources, patches, a generator's files) or move it out of manifests/",
            );
            unused_files.push(if manifest {
                unused
            } else {
                unused.into_warning()
            });
        }
    }
    (problems, unused_files)
}

fn path_fields<'r>(
    field: &'static str,
    entries: &'r [PathField],
) -> impl Iterator<Item = (&'static str, &'r String)> {
    entries
        .iter()
        .filter_map(move |e| e.path.as_ref().map(|p| (field, p)))
}

fn generator_files<'r>(
    field: &'static str,
    generators: &'r [Generator],
) -> impl Iterator<Item = (&'static str, &'r String)> {
    generators.iter().flat_map(move |g| {
        g.files
            .iter()
            .chain(&g.envs)
            .chain(g.env.iter())
            .map(move |f| (field, f))
    })
}

fn entries<'r>(
    field: &'static str,
    entries: &'r [Entry],
) -> impl Iterator<Item = (&'static str, &'r String)> {
    entries.iter().filter_map(move |e| match e {
        Entry::Path(p) if !p.contains('\n') => Some((field, p)),
        _ => None,
    })
}

/// Line and column of the first occurrence of `needle` in `text` (1, 1 when absent).
fn position(text: &str, needle: &str) -> (usize, usize) {
    text.lines()
        .enumerate()
        .find_map(|(n, line)| line.find(needle).map(|c| (n + 1, c + 1)))
        .unwrap_or((1, 1))
}

/// Why `reference`, named by the kustomization in `dir`, may not be built; when it is a file
/// or directory of the app's manifests, its repository path.
fn check_reference(
    files: &[(String, Arc<str>)],
    prefix: &str,
    dir: &str,
    reference: &str,
) -> Result<String, String> {
    let reference = reference.trim();
    let remote = reference.contains("://")
        || reference.contains("?ref=")
        || reference.contains("//")
        || reference.starts_with("git@")
        || reference.starts_with("github.com/")
        || reference.starts_with("gitlab.com/")
        || reference.starts_with("bitbucket.org/");
    if remote {
        return Err(
            "is remote: bowline builds only what is in the repository, so nothing is fetched; copy the base into this app's manifests/".to_string(),
        );
    }
    // A generator file may be given a key: `key=path`.
    let reference = reference
        .split_once('=')
        .map_or(reference, |(_, p)| p)
        .trim();
    if reference.is_empty() {
        return Err("names no file".to_string());
    }
    if reference.starts_with('/') {
        return Err("is an absolute path: name files relative to the kustomization".to_string());
    }
    let Ok(target) = normalize(dir, reference) else {
        return Err(format!(
            "is outside this app's manifests ({prefix}): a kustomization may only use the app's own files"
        ));
    };
    let full = format!("{prefix}{target}");
    let under = format!("{full}/");
    let exists = target.is_empty()
        || files
            .iter()
            .any(|(p, _)| *p == full || p.starts_with(&under));
    if exists {
        Ok(full)
    } else {
        Err(format!("is not in the repository: {full} does not exist"))
    }
}

/// The `kubectl` kustomizations are built with, found once: [`KUBECTL_ENV`] or `kubectl` on
/// `PATH`, with a kustomize new enough.
pub fn kubectl() -> Result<&'static Path, String> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let path = find_kubectl()?;
            check_version(&path)?;
            Ok(path)
        })
        .as_deref()
        .map_err(Clone::clone)
}

fn find_kubectl() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(KUBECTL_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("kubectl"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "building a kustomization needs kubectl (1.27 or newer, with its built-in kustomize): none on PATH; install it or set {KUBECTL_ENV}"
            )
        })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClientVersion {
    #[serde(default)]
    kustomize_version: Option<String>,
}

fn check_version(kubectl: &Path) -> Result<(), String> {
    let output = Command::new(kubectl)
        .args(["version", "--client", "-o", "json"])
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", kubectl.display()))?;
    let version: ClientVersion = serde_json::from_slice(&output.stdout).map_err(|_| {
        format!(
            "{} version --client -o json did not answer with a version; bowline needs kubectl 1.27 or newer",
            kubectl.display()
        )
    })?;
    let kustomize = version.kustomize_version.unwrap_or_default();
    let major = kustomize
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse::<u64>().ok());
    match major {
        Some(m) if m >= MIN_KUSTOMIZE_MAJOR => Ok(()),
        _ => Err(format!(
            "{} has kustomize {}; building kustomizations needs kustomize v{MIN_KUSTOMIZE_MAJOR} or newer (kubectl 1.27 or newer)",
            kubectl.display(),
            if kustomize.is_empty() {
                "(none)"
            } else {
                &kustomize
            }
        )),
    }
}

/// The app's files written out for kustomize: `m/` holds its `manifests/`, and each build
/// gets a directory of its own beside it. Removed when dropped.
pub struct Sandbox {
    dir: tempfile::TempDir,
    builds: std::sync::atomic::AtomicUsize,
}

impl Sandbox {
    /// Writes the files of `files` under `prefix` (only those) into a new temporary directory.
    pub fn new(files: &[(String, Arc<str>)], prefix: &str) -> Result<Sandbox, String> {
        let dir = tempfile::Builder::new()
            .prefix("bowline-kustomize-")
            .tempdir()
            .map_err(|e| format!("cannot create a directory for the build: {e}"))?;
        let root = dir.path().join("m");
        for (path, text) in files {
            let Some(rel) = path.strip_prefix(prefix) else {
                continue;
            };
            // Paths come from a Git tree, but nothing may be written outside the sandbox.
            if rel
                .split('/')
                .any(|p| p.is_empty() || p == "." || p == "..")
            {
                continue;
            }
            let target = root.join(rel);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("cannot write the build's files: {e}"))?;
            }
            std::fs::write(&target, text.as_bytes())
                .map_err(|e| format!("cannot write the build's files: {e}"))?;
        }
        Ok(Sandbox {
            dir,
            builds: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Builds the kustomization in `dir` (relative to `manifests/`) with `kubectl`, setting
    /// `image` when given, and returns kustomize's output (a YAML stream). At most
    /// `max_output` bytes are read.
    pub fn build(
        &self,
        kubectl: &Path,
        dir: &str,
        image: Option<&Image>,
        timeout: Duration,
        max_output: usize,
    ) -> Result<String, String> {
        let n = self
            .builds
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let build = self.dir.path().join(format!("build-{n}"));
        std::fs::create_dir(&build).map_err(|e| format!("cannot write the build's files: {e}"))?;
        let resource = if dir.is_empty() {
            "../m".to_string()
        } else {
            format!("../m/{dir}")
        };
        let mut wrapper = serde_json::json!({
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [resource],
            "buildMetadata": ["originAnnotations"],
        });
        if let Some(image) = image.filter(|i| !i.repository.is_empty()) {
            let mut set = serde_json::json!({ "name": image.repository });
            match (&image.digest, &image.tag) {
                (Some(digest), _) => set["digest"] = Value::String(digest.clone()),
                (None, Some(tag)) => set["newTag"] = Value::String(tag.clone()),
                (None, None) => {}
            }
            if set.as_object().is_some_and(|o| o.len() > 1) {
                wrapper["images"] = Value::Array(vec![set]);
            }
        }
        // JSON is YAML: no quoting to get wrong.
        std::fs::write(build.join("kustomization.yaml"), wrapper.to_string())
            .map_err(|e| format!("cannot write the build's files: {e}"))?;
        let mut command = Command::new(kubectl);
        command
            .arg("kustomize")
            .arg(&build)
            .current_dir(self.dir.path())
            .env_clear()
            .env("HOME", self.dir.path())
            .env("PATH", "")
            .env("HTTP_PROXY", NO_NETWORK_PROXY)
            .env("HTTPS_PROXY", NO_NETWORK_PROXY)
            .env("http_proxy", NO_NETWORK_PROXY)
            .env("https_proxy", NO_NETWORK_PROXY)
            .env("KUBECONFIG", "/dev/null");
        let (status, stdout, stderr) = run(command, timeout, max_output)?;
        let clean = |text: &str| self.clean(text);
        if !status {
            return Err(clean(&error_text(&stderr)));
        }
        String::from_utf8(stdout)
            .map_err(|_| "kustomize wrote output that is not UTF-8".to_string())
    }

    /// `text` with the sandbox's paths put back as repository paths.
    fn clean(&self, text: &str) -> String {
        let root = self.dir.path().display().to_string();
        text.replace(&format!("{root}/m/"), "manifests/")
            .replace(&format!("{root}/m"), "manifests")
            .replace(&root, "<build>")
    }
}

/// Runs `command`, killing it after `timeout` or once it writes more than `max_output` bytes;
/// returns whether it succeeded, with what it wrote.
pub fn run(
    mut command: Command,
    timeout: Duration,
    max_output: usize,
) -> Result<(bool, Vec<u8>, Vec<u8>), String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run kubectl: {e}"))?;
    let (Some(mut out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
        // Both were asked for as pipes just above.
        let _ = child.kill();
        return Err("cannot read kubectl's output".to_string());
    };
    let overflow = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = overflow.clone();
    let stdout = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let limit = u64::try_from(max_output)
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let _ = (&mut out).take(limit).read_to_end(&mut buf);
        if buf.len() > max_output {
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        buf
    });
    let stderr = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.take(MAX_STDERR_BYTES as u64).read_to_end(&mut buf);
        buf
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(format!("cannot wait for kubectl: {e}")),
        }
        if overflow.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "kustomize's output exceeds the limit of {}",
                crate::template::describe_size(max_output)
            ));
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "kustomize did not finish within {}",
                humantime::format_duration(timeout)
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if stdout.len() > max_output {
        return Err(format!(
            "kustomize's output exceeds the limit of {}",
            crate::template::describe_size(max_output)
        ));
    }
    Ok((status.success(), stdout, stderr))
}

/// Whether a container of `object` (at any depth: Pods, workload templates, CronJobs) runs an
/// image of `repository`.
pub fn uses_image(object: &Value, repository: &str) -> bool {
    match object {
        Value::Object(map) => map.iter().any(|(key, value)| match value {
            Value::String(image) if key == "image" => image
                .strip_prefix(repository)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '@'])),
            other => uses_image(other, repository),
        }),
        Value::Array(items) => items.iter().any(|v| uses_image(v, repository)),
        _ => false,
    }
}

/// kubectl's error output as one message: the `err="…"` of its log line when there is one.
fn error_text(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    if let Some(start) = text.find("err=\"") {
        let quoted = &text[start + 4..];
        // Go quotes the message: read it back as a JSON string, which has the same escapes
        // for what kubectl writes.
        let end = quoted
            .char_indices()
            .skip(1)
            .scan(false, |escaped, (i, c)| {
                let stop = c == '"' && !*escaped;
                *escaped = c == '\\' && !*escaped;
                Some((i, stop))
            })
            .find(|(_, stop)| *stop)
            .map(|(i, _)| i);
        if let Some(end) = end
            && let Ok(message) = serde_json::from_str::<String>(&quoted[..=end])
        {
            return without_accumulation(&message).to_string();
        }
    }
    let text = text.strip_prefix("error: ").unwrap_or(text);
    let text = without_accumulation(text);
    if text.is_empty() {
        "kustomize failed without a message".to_string()
    } else {
        text.to_string()
    }
}

/// kustomize's message without the path of attempts that led to the error: it first tries
/// each resource as a file, then as a directory, and says so before saying what went wrong.
fn without_accumulation(message: &str) -> &str {
    const RECURSED: &str = "recursed accumulation of path '";
    message
        .find(RECURSED)
        .map(|at| &message[at + RECURSED.len()..])
        .and_then(|rest| rest.find("': ").map(|end| &rest[end + 3..]))
        .unwrap_or(message)
}

/// Where kustomize says an object came from, read from (and removed from) its origin
/// annotation: a repository path under `prefix`, or `None` when it names no file there.
pub fn take_origin(object: &mut Value, prefix: &str) -> Option<String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Origin {
        path: Option<String>,
        configured_in: Option<String>,
    }
    let annotations = object
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)?;
    let origin = annotations.remove(ORIGIN_ANNOTATION)?;
    if annotations.is_empty()
        && let Some(metadata) = object
            .pointer_mut("/metadata")
            .and_then(Value::as_object_mut)
    {
        metadata.remove("annotations");
    }
    let origin: Origin = serde_yaml::from_str(origin.as_str()?).ok()?;
    let path = origin.path.or(origin.configured_in)?;
    // Relative to the build directory, beside `m/`.
    let rel = path.strip_prefix("../m/")?;
    let rel = normalize("", rel).ok()?;
    Some(format!("{prefix}{rel}"))
}

/// The line where the document defining `kind`/`name` starts in `text` (a manifest kustomize
/// read): kustomize may have renamed the object (prefixes, suffixes), so the document of that
/// kind whose name the rendered name contains, else the first of that kind, else line 1.
pub fn line_of(documents: &[(String, String, usize)], kind: &str, name: &str) -> usize {
    documents
        .iter()
        .find(|(k, n, _)| k == kind && !n.is_empty() && name.contains(n.as_str()))
        .or_else(|| documents.iter().find(|(k, _, _)| k == kind))
        .map_or(1, |(_, _, line)| *line)
}

/// Kind, name and starting line of each document of a manifest.
pub fn outline(text: &str) -> Vec<(String, String, usize)> {
    let Ok(docs) = super::kube_yaml::parse_stream(text) else {
        return Vec::new();
    };
    docs.into_iter()
        .map(|d| {
            let text = |p: &str| {
                d.value
                    .pointer(p)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            (text("/kind"), text("/metadata/name"), d.line)
        })
        .collect()
}

/// Outlines of the manifests objects came from, read once per file.
#[derive(Default)]
pub struct Outlines {
    files: HashMap<String, Vec<(String, String, usize)>>,
}

impl Outlines {
    /// The line in `path` (text from `files`) where `kind`/`name` is defined.
    pub fn line(
        &mut self,
        files: &[(String, Arc<str>)],
        path: &str,
        kind: &str,
        name: &str,
    ) -> usize {
        let outline = self.files.entry(path.to_string()).or_insert_with(|| {
            files
                .iter()
                .find(|(p, _)| p == path)
                .map(|(_, text)| outline(text))
                .unwrap_or_default()
        });
        line_of(outline, kind, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(entries: &[(&str, &str)]) -> Vec<(String, Arc<str>)> {
        entries
            .iter()
            .map(|(p, t)| (format!("apps/web/manifests/{p}"), Arc::from(*t)))
            .collect()
    }

    const PREFIX: &str = "apps/web/manifests/";

    #[test]
    fn the_environment_picks_its_overlay_then_a_directory_of_its_name_then_the_root() {
        let fs = files(&[
            ("base/kustomization.yaml", ""),
            ("overlays/production/kustomization.yaml", ""),
            ("staging/kustomization.yml", ""),
            ("kustomization.yaml", ""),
        ]);
        let dirs = directories(&fs, PREFIX);
        assert_eq!(
            directory_for(&dirs, "production", None),
            Ok("overlays/production")
        );
        assert_eq!(directory_for(&dirs, "staging", None), Ok("staging"));
        assert_eq!(directory_for(&dirs, "dev", None), Ok(""));
        assert_eq!(directory_for(&dirs, "dev", Some("./base/")), Ok("base"));
        let missing = directory_for(&dirs, "dev", Some("overlays/dev")).unwrap_err();
        assert!(
            missing.contains("manifests/overlays/dev holds no kustomization.yaml"),
            "{missing}"
        );
        let only_base = directories(&files(&[("base/kustomization.yaml", "")]), PREFIX);
        let none = directory_for(&only_base, "qa", None).unwrap_err();
        assert!(
            none.contains("manifests/overlays/qa/kustomization.yaml"),
            "{none}"
        );
        assert!(none.contains("kustomizations of this app: base"), "{none}");
    }

    #[test]
    fn references_must_stay_inside_the_apps_manifests_and_exist() {
        let fs = files(&[
            (
                "base/kustomization.yaml",
                "resources:\n- deploy.yaml\n- https://example.com/x.yaml\n- github.com/org/repo/base?ref=v1\n",
            ),
            ("base/deploy.yaml", "kind: x"),
            (
                "overlays/prod/kustomization.yaml",
                "resources:\n- ../../base\n- ../../../other/manifests\n- /etc\n- missing.yaml\nconfigMapGenerator:\n- name: c\n  files:\n  - key=../../base/deploy.yaml\n  - ../../../../../../etc/passwd\npatches:\n- path: p.yaml\n- patch: |-\n    inline\nhelmCharts:\n- name: x\n",
            ),
        ]);
        let (problems, unused) = check_references(&fs, PREFIX);
        assert!(unused.is_empty(), "{unused:?}");
        let messages: Vec<String> = problems
            .iter()
            .map(|d| {
                format!(
                    "{}:{} {} {}",
                    d.file.trim_start_matches(PREFIX),
                    d.line,
                    d.field,
                    d.message
                )
            })
            .collect();
        let has = |needle: &str| messages.iter().any(|m| m.contains(needle));
        assert!(
            has("base/kustomization.yaml:3 resources \"https://example.com/x.yaml\" is remote"),
            "{messages:#?}"
        );
        assert!(
            has("\"github.com/org/repo/base?ref=v1\" is remote"),
            "{messages:#?}"
        );
        assert!(
            has("\"../../../other/manifests\" is outside this app's manifests"),
            "{messages:#?}"
        );
        assert!(has("\"/etc\" is an absolute path"), "{messages:#?}");
        assert!(
            has(
                "\"missing.yaml\" is not in the repository: apps/web/manifests/overlays/prod/missing.yaml does not exist"
            ),
            "{messages:#?}"
        );
        assert!(
            has("configMapGenerator \"../../../../../../etc/passwd\" is outside"),
            "{messages:#?}"
        );
        assert!(
            has("patches \"p.yaml\" is not in the repository"),
            "{messages:#?}"
        );
        assert!(has("helmCharts not built"), "{messages:#?}");
        assert_eq!(messages.len(), 8, "{messages:#?}");
    }

    #[test]
    fn origins_become_repository_paths_and_leave_the_object() {
        let mut object = serde_json::json!({
            "kind": "Deployment",
            "metadata": {"name": "web", "annotations": {ORIGIN_ANNOTATION: "path: ../m/base/../base/deploy.yaml\n"}},
        });
        assert_eq!(
            take_origin(&mut object, PREFIX).as_deref(),
            Some("apps/web/manifests/base/deploy.yaml")
        );
        assert!(object.pointer("/metadata/annotations").is_none());
        let mut generated = serde_json::json!({
            "metadata": {"annotations": {"a": "b", ORIGIN_ANNOTATION: "configuredIn: ../m/kustomization.yaml\nconfiguredBy:\n  kind: ConfigMapGenerator\n"}},
        });
        assert_eq!(
            take_origin(&mut generated, PREFIX).as_deref(),
            Some("apps/web/manifests/kustomization.yaml")
        );
        assert_eq!(
            generated["metadata"]["annotations"],
            serde_json::json!({"a": "b"})
        );
    }

    #[test]
    fn images_are_found_in_any_container() {
        let cron = serde_json::json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {
            "containers": [{"name": "a", "image": "ghcr.io/acme/api:1.0"}],
            "initContainers": [{"name": "b", "image": "busybox"}]}}}}}});
        assert!(uses_image(&cron, "ghcr.io/acme/api"));
        assert!(uses_image(&cron, "busybox"));
        assert!(!uses_image(&cron, "ghcr.io/acme/ap"));
        assert!(!uses_image(&cron, "ghcr.io/acme"));
    }

    #[test]
    fn kubectl_errors_are_read_from_its_log_line() {
        let stderr = br#"E1207 20:30:20.334832    1918 run.go:72] "command failed" err="accumulating resources: \"x\" not found""#;
        assert_eq!(
            error_text(stderr),
            "accumulating resources: \"x\" not found"
        );
        assert_eq!(error_text(b"error: plain\n"), "plain");
        let nested = br#"E1 run.go:72] "command failed" err="accumulating resources: accumulation err='accumulating resources from '../m': 'manifests' must resolve to a file': recursed accumulation of path 'manifests': no matches for Id Deployment.v1.apps/shop.[noNs]""#;
        assert_eq!(
            error_text(nested),
            "no matches for Id Deployment.v1.apps/shop.[noNs]"
        );
    }

    #[test]
    fn a_build_that_runs_too_long_or_writes_too_much_is_stopped() {
        let mut slow = Command::new("sh");
        slow.args(["-c", "sleep 5"]);
        let started = Instant::now();
        let err = run(slow, Duration::from_millis(200), 1024).unwrap_err();
        assert!(err.contains("did not finish within"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(3));
        let mut loud = Command::new("sh");
        loud.args(["-c", "yes"]);
        let err = run(loud, Duration::from_secs(10), 4096).unwrap_err();
        assert!(err.contains("exceeds the limit"), "{err}");
    }
}
