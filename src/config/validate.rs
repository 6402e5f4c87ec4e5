//! Rules that span documents: references between kinds, duplicate names, the stage DAG,
//! template parameters, canary weights and thresholds. Each rule reports at the field that has
//! to change.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use rayon::prelude::*;
use serde_json::Value;

use super::instantiate::{self, INSTANTIATION_ROOTS, RUNTIME_FIELDS};
use super::model::*;
use super::{ConfigRepo, Document};
use crate::destination::{self, Destinations};
use crate::diagnostic::{Diagnostic, did_you_mean, pointer_join, pointer_to_field, suggest};
use crate::template;

/// Runs every cross-document rule.
pub fn check(repo: &ConfigRepo) -> Vec<Diagnostic> {
    let (mut out, broken_templates) = check_platform(repo);
    // Apps are independent: check them in parallel, keeping their order.
    let apps: Vec<&Document<Application>> = repo.apps.values().map(|a| a.as_ref()).collect();
    let per_app: Vec<Vec<Diagnostic>> = apps
        .par_iter()
        .map(|app| check_app(repo, app, &broken_templates))
        .collect();
    out.extend(per_app.into_iter().flatten());
    out
}

/// Pipeline templates with errors of their own: not instantiated per app, which would only
/// repeat their errors.
pub type BrokenTemplates = HashSet<String>;

/// The rules of the platform's documents (`bowline.yaml`, pipeline templates, canary configs),
/// and the templates found broken.
pub fn check_platform(repo: &ConfigRepo) -> (Vec<Diagnostic>, BrokenTemplates) {
    let mut out = Vec::new();
    if let Some(r) = &repo.repository {
        check_repository(repo, r, &mut out);
    }
    let mut broken_templates = HashSet::new();
    for (name, template) in &repo.pipelines {
        let before = out.len();
        check_pipeline(repo, template, &mut out);
        if out[before..].iter().any(Diagnostic::is_error) {
            broken_templates.insert(name.clone());
        }
    }
    for canary in repo.canaries.values() {
        check_canary(canary, &mut out);
    }
    (out, broken_templates)
}

/// The rules of one application against the platform's documents. Its result depends only
/// on the app's own files and the platform's documents, never on other apps.
pub fn check_app(
    repo: &ConfigRepo,
    app: &Document<Application>,
    broken_templates: &BrokenTemplates,
) -> Vec<Diagnostic> {
    let mut diagnostics = Vec::new();
    check_application(repo, app, broken_templates, &mut diagnostics);
    diagnostics
}

fn list(names: &[&str]) -> String {
    if names.is_empty() {
        "none defined".to_string()
    } else {
        names.join(", ")
    }
}

/// Reports each repeated `name` of the array at `array` (items with a `name` field), citing the
/// first occurrence.
fn report_duplicates<'a, T>(
    doc: &Document<T>,
    array: &str,
    what: &str,
    names: impl IntoIterator<Item = &'a str>,
    out: &mut Vec<Diagnostic>,
) {
    let names: Vec<&str> = names.into_iter().collect();
    let field = pointer_to_field(array);
    for (i, first) in duplicates(names.iter().copied()) {
        out.push(doc.error(
            &format!("{array}/{i}/name"),
            format!(
                "duplicate {what} name \"{}\" (first at {field}[{first}])",
                names[i]
            ),
        ));
    }
}

/// Positions of repeated names, each with the position of the first occurrence. Empty names
/// (items that could not be read) are skipped.
fn duplicates<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<(usize, usize)> {
    let mut first: HashMap<&str, usize> = HashMap::new();
    let mut out = Vec::new();
    for (i, name) in names.into_iter().enumerate().filter(|(_, n)| !n.is_empty()) {
        match first.get(name) {
            Some(&f) => out.push((i, f)),
            None => {
                first.insert(name, i);
            }
        }
    }
    out
}

fn known_names<T>(map: &BTreeMap<String, T>, broken: &[String]) -> Vec<String> {
    map.keys().chain(broken.iter()).cloned().collect()
}

/// Error for a reference to something that does not exist, with the known names and a hint.
fn unknown<T>(
    doc: &Document<T>,
    pointer: &str,
    what: &str,
    name: &str,
    known: &[&str],
) -> Diagnostic {
    let hint = match suggest(name, known.iter().copied()) {
        Some(s) => format!("did you mean \"{s}\"? known: "),
        None => "known: ".to_string(),
    };
    doc.error(
        pointer,
        format!("unknown {what} \"{name}\" ({hint}{})", list(known)),
    )
}

// ---------------------------------------------------------------- Repository

fn check_repository(repo: &ConfigRepo, doc: &Document<Repository>, out: &mut Vec<Diagnostic>) {
    let environments = &doc.doc.spec.environments;
    report_duplicates(
        doc,
        "/spec/environments",
        "environment",
        environments.iter().map(|e| e.name.as_str()),
        out,
    );
    // Cluster names are unique across environments.
    let clusters: Vec<(usize, usize, &str)> = environments
        .iter()
        .enumerate()
        .flat_map(|(i, e)| {
            e.clusters
                .iter()
                .enumerate()
                .map(move |(j, c)| (i, j, c.name.as_str()))
        })
        .collect();
    for (k, first) in duplicates(clusters.iter().map(|c| c.2)) {
        let (i, j, name) = clusters[k];
        let (fi, fj, _) = clusters[first];
        out.push(doc.error(
            &format!("/spec/environments/{i}/clusters/{j}/name"),
            format!(
                "duplicate cluster name \"{name}\" (first at spec.environments[{fi}].clusters[{fj}])"
            ),
        ));
    }
    for (i, env) in environments.iter().enumerate() {
        check_destinations(doc, i, env, out);
    }
    if let Some(pipeline) = &doc.doc.spec.defaults.pipeline {
        let known = known_names(&repo.pipelines, &repo.broken_pipelines);
        if !known.contains(pipeline) {
            let known: Vec<&str> = repo.pipelines.keys().map(String::as_str).collect();
            out.push(unknown(
                doc,
                "/spec/defaults/pipeline",
                "pipeline template",
                pipeline,
                &known,
            ));
        }
    }
}

/// Globs of an environment's `destinations` compile, and its own namespace is among them.
fn check_destinations(
    doc: &Document<Repository>,
    i: usize,
    env: &Environment,
    out: &mut Vec<Diagnostic>,
) {
    let base = format!("/spec/environments/{i}/destinations");
    let spec = &env.destinations;
    for (j, glob) in spec.namespaces.iter().enumerate() {
        if let Some(e) = destination::glob_error(glob) {
            out.push(doc.error(
                &format!("{base}/namespaces/{j}"),
                format!("invalid namespace glob \"{glob}\": {e}"),
            ));
        }
    }
    for (j, gk) in spec.cluster_resources.iter().enumerate() {
        for (field, glob) in [("group", &gk.group), ("kind", &gk.kind)] {
            if let Some(e) = destination::glob_error(glob) {
                out.push(doc.error(
                    &format!("{base}/clusterResources/{j}/{field}"),
                    format!("invalid {field} glob \"{glob}\": {e}"),
                ));
            }
        }
    }
    if !spec.namespaces.is_empty() && !Destinations::of(env).allows_namespace(&env.namespace) {
        out.push(doc.error(
            &format!("{base}/namespaces"),
            format!(
                "environment \"{}\" deploys to namespace \"{}\" by default, which is not among its destinations.namespaces",
                env.name, env.namespace
            ),
        ));
    }
}

// ---------------------------------------------------------------- Application

fn check_application(
    repo: &ConfigRepo,
    doc: &Document<Application>,
    broken_templates: &BrokenTemplates,
    out: &mut Vec<Diagnostic>,
) {
    let app = &doc.doc;
    let env_names = repo.environment_names();
    if repo.repository.is_some() {
        for name in app.spec.environments.keys() {
            if !env_names.contains(&name.as_str()) {
                out.push(unknown(
                    doc,
                    &pointer_join("/spec/environments", name),
                    "environment",
                    name,
                    &env_names,
                ));
            }
        }
    }
    for env in repo.app_environments(app) {
        let overridden = app
            .spec
            .environments
            .get(&env.name)
            .and_then(|e| e.as_ref())
            .and_then(|e| e.namespace.as_ref());
        if let Some(namespace) = overridden
            && !Destinations::of(env).allows_namespace(namespace)
        {
            out.push(doc.error(
                &format!("{}/namespace", pointer_join("/spec/environments", &env.name)),
                format!(
                    "namespace \"{namespace}\" is outside the destinations of environment \"{}\" (set in bowline.yaml by the platform team)",
                    env.name
                ),
            ));
        }
    }
    if let Some(canary) = &app.spec.canary {
        if !known_names(&repo.canaries, &repo.broken_canaries).contains(&canary.config) {
            let known: Vec<&str> = repo.canaries.keys().map(String::as_str).collect();
            out.push(unknown(
                doc,
                "/spec/canary/config",
                "canary config",
                &canary.config,
                &known,
            ));
        }
    }
    if !repo.manifests.contains_key(&app.metadata.name) {
        out.push(doc.warning(
            "",
            format!(
                "no manifests: apps/{}/manifests/ has no .yaml files, so nothing is deployed",
                app.metadata.name
            ),
        ));
    }

    let Some(pipeline_name) = repo.pipeline_of(app) else {
        return;
    };
    let template_pointer = if app.spec.pipeline.is_some() {
        "/spec/pipeline/template"
    } else {
        ""
    };
    let Some(template) = repo.pipelines.get(pipeline_name) else {
        // An unknown default pipeline is reported once, in bowline.yaml.
        let from_defaults = app.spec.pipeline.is_none();
        if !from_defaults && !repo.broken_pipelines.iter().any(|n| n == pipeline_name) {
            let known: Vec<&str> = repo.pipelines.keys().map(String::as_str).collect();
            out.push(unknown(
                doc,
                template_pointer,
                "pipeline template",
                pipeline_name,
                &known,
            ));
        }
        return;
    };
    let before = out.len();
    check_variables(doc, template, out);
    if broken_templates.contains(pipeline_name) || out[before..].iter().any(Diagnostic::is_error) {
        return;
    }

    match instantiate::instantiate(&template.doc, app) {
        Ok(stages) => {
            for (i, stage) in stages.iter().enumerate() {
                if let Some(env) = &stage.environment {
                    if env_names.contains(&env.as_str()) && !app.spec.environments.contains_key(env)
                    {
                        out.push(doc.warning(
                            "/spec/environments",
                            format!(
                                "pipeline template \"{pipeline_name}\" stage \"{}\" targets environment \"{env}\", which this app does not deploy to; the stage will be skipped",
                                stage.name
                            ),
                        ));
                    }
                }
                if let StageAction::CanaryAnalysis(analysis) = &stage.action {
                    check_analysis_timing(repo, doc, template, i, stage, analysis, out);
                    if analysis.canary_config.is_none() && app.spec.canary.is_none() {
                        out.push(doc.error(
                            template_pointer_or_spec(app),
                            format!(
                                "pipeline template \"{pipeline_name}\" has canaryAnalysis stage \"{}\" but this app sets no spec.canary.config",
                                stage.name
                            ),
                        ));
                    }
                }
            }
        }
        Err(errors) => {
            for e in errors {
                out.push(template.error(
                    &e.pointer,
                    format!("for app \"{}\": {}", app.metadata.name, e.message),
                ));
            }
        }
    }
}

fn template_pointer_or_spec(app: &Application) -> &'static str {
    if app.spec.pipeline.is_some() {
        "/spec/pipeline/template"
    } else {
        "/spec"
    }
}

/// An analysis whose interval comes from the stage and lifetime from the canary config (or the
/// other way round) must still fit; when both come from one place, that place is checked.
fn check_analysis_timing(
    repo: &ConfigRepo,
    app: &Document<Application>,
    template: &Document<PipelineTemplate>,
    index: usize,
    stage: &Stage,
    analysis: &CanaryAnalysisStage,
    out: &mut Vec<Diagnostic>,
) {
    if analysis.lifetime.is_some() == analysis.interval.is_some() {
        return;
    }
    let config_name = analysis.canary_config.as_deref().or(app
        .doc
        .spec
        .canary
        .as_ref()
        .map(|c| c.config.as_str()));
    let Some(config) = config_name.and_then(|n| repo.canaries.get(n)) else {
        return;
    };
    let settings = &config.doc.spec.analysis;
    let lifetime = analysis.lifetime.unwrap_or(settings.lifetime);
    if let Some(interval) = analysis.interval.or(settings.interval) {
        if interval > lifetime {
            out.push(template.error(
                &format!("/spec/stages/{index}"),
                format!(
                    "for app \"{}\": stage \"{}\" analyses every {interval} over a lifetime of {lifetime} (canary config \"{}\" gives the other value); interval must not exceed lifetime",
                    app.doc.metadata.name, stage.name, config.doc.metadata.name
                ),
            ));
        }
    }
}

fn check_variables(
    doc: &Document<Application>,
    template: &Document<PipelineTemplate>,
    out: &mut Vec<Diagnostic>,
) {
    let params = &template.doc.spec.parameters;
    let declared: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
    let template_name = &template.doc.metadata.name;
    let empty = serde_json::Map::new();
    let variables = doc
        .doc
        .spec
        .pipeline
        .as_ref()
        .map_or(&empty, |p| &p.variables);
    for (name, value) in variables {
        let pointer = pointer_join("/spec/pipeline/variables", name);
        match params.iter().find(|p| &p.name == name) {
            None => out.push(doc.error(
                &pointer,
                format!(
                    "unknown variable \"{name}\": pipeline template \"{template_name}\" has no such parameter{} (parameters: {})",
                    did_you_mean(name, declared.iter().copied()),
                    list(&declared)
                ),
            )),
            Some(p) => {
                if let Err(e) = p.kind.check(value) {
                    out.push(doc.error(&pointer, format!("parameter \"{name}\": {e}")));
                }
            }
        }
    }
    for p in params {
        if p.default.is_none() && !variables.contains_key(&p.name) {
            let pointer = if doc.doc.spec.pipeline.is_some() {
                "/spec/pipeline"
            } else {
                ""
            };
            out.push(doc.error(
                pointer,
                format!(
                    "missing variable \"{}\": pipeline template \"{template_name}\" requires it (no default)",
                    p.name
                ),
            ));
        }
    }
}

// ---------------------------------------------------------------- PipelineTemplate

fn check_pipeline(repo: &ConfigRepo, doc: &Document<PipelineTemplate>, out: &mut Vec<Diagnostic>) {
    let spec = &doc.doc.spec;
    let env = template::sandbox();
    let env_names = repo.environment_names();
    let check_envs = repo.repository.is_some();

    // Parameters: duplicates and default types.
    report_duplicates(
        doc,
        "/spec/parameters",
        "parameter",
        spec.parameters.iter().map(|p| p.name.as_str()),
        out,
    );
    for (i, p) in spec.parameters.iter().enumerate() {
        if let Some(default) = &p.default {
            if let Err(e) = p.kind.check(default) {
                out.push(doc.error(
                    &format!("/spec/parameters/{i}/default"),
                    format!("default of \"{}\": {e}", p.name),
                ));
            }
        }
    }
    let declared: Vec<&str> = spec.parameters.iter().map(|p| p.name.as_str()).collect();

    // Windows.
    for (i, w) in spec.execution_windows.iter().enumerate() {
        let base = format!("/spec/executionWindows/{i}");
        if w.timezone.parse::<chrono_tz::Tz>().is_err() {
            out.push(doc.error(
                &format!("{base}/timezone"),
                format!(
                    "unknown time zone \"{}\": use an IANA name such as Europe/Berlin or UTC",
                    w.timezone
                ),
            ));
        }
        if w.start == w.end {
            out.push(doc.error(&format!("{base}/end"), "window is empty: end equals start"));
        }
        if check_envs {
            for (j, env) in w.environments.iter().enumerate() {
                if !env_names.contains(&env.as_str()) {
                    out.push(unknown(
                        doc,
                        &format!("{base}/environments/{j}"),
                        "environment",
                        env,
                        &env_names,
                    ));
                }
            }
        }
    }

    // Stage headers (literal fields).
    let headers: Vec<Option<StageHeader>> = spec
        .stages
        .iter()
        .map(|s| serde_json::from_value::<StageHeader>(s.clone()).ok())
        .collect();
    report_duplicates(
        doc,
        "/spec/stages",
        "stage",
        headers
            .iter()
            .map(|h| h.as_ref().map_or("", |h| h.name.as_str())),
        out,
    );
    // Name → first stage with it.
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, h) in headers.iter().enumerate() {
        if let Some(h) = h {
            index.entry(h.name.as_str()).or_insert(i);
        }
    }
    let stage_names: Vec<&str> = headers.iter().flatten().map(|h| h.name.as_str()).collect();
    for (i, h) in headers.iter().enumerate() {
        let Some(h) = h else { continue };
        let base = format!("/spec/stages/{i}");
        if check_envs {
            if let Some(env) = &h.environment {
                if !env_names.contains(&env.as_str()) {
                    out.push(unknown(
                        doc,
                        &format!("{base}/environment"),
                        "environment",
                        env,
                        &env_names,
                    ));
                }
            }
        }
        for (j, dep) in h.depends_on.iter().enumerate() {
            let pointer = format!("{base}/dependsOn/{j}");
            if dep == &h.name {
                out.push(doc.error(&pointer, format!("stage \"{}\" depends on itself", h.name)));
            } else if !index.contains_key(dep.as_str()) {
                let others: Vec<&str> = stage_names
                    .iter()
                    .copied()
                    .filter(|n| *n != h.name)
                    .collect();
                out.push(unknown(doc, &pointer, "stage", dep, &others));
            }
        }
        check_stage_fields(repo, doc, &env, &spec.stages[i], &base, &declared, out);
    }
    for cycle in find_cycles(&headers, &index) {
        let first = cycle[0];
        let names: Vec<&str> = cycle
            .iter()
            .chain(std::iter::once(&first))
            .filter_map(|&i| headers[i].as_ref().map(|h| h.name.as_str()))
            .collect();
        out.push(doc.error(
            &format!("/spec/stages/{first}/dependsOn"),
            format!("dependency cycle: {}", names.join(" → ")),
        ));
    }
}

/// Checks templates and expressions in one stage, plus type-specific references.
fn check_stage_fields(
    repo: &ConfigRepo,
    doc: &Document<PipelineTemplate>,
    env: &minijinja::Environment<'static>,
    stage: &Value,
    base: &str,
    declared: &[&str],
    out: &mut Vec<Diagnostic>,
) {
    let mut strings = Vec::new();
    collect_strings(stage, base, false, &mut strings);
    for (pointer, text, runtime, is_expression) in strings {
        let variables = if is_expression {
            match env.compile_expression(text) {
                Ok(expr) => expr.undeclared_variables(true),
                Err(e) => {
                    out.push(doc.error(
                        &pointer,
                        format!("invalid expression: {}", template::error_message(&e)),
                    ));
                    continue;
                }
            }
        } else if template::is_templated(text) {
            match env.template_from_str(text) {
                Ok(t) => t.undeclared_variables(true),
                Err(e) => {
                    out.push(doc.error(&pointer, template::error_message(&e)));
                    continue;
                }
            }
        } else {
            continue;
        };
        let mut variables: Vec<String> = variables.into_iter().collect();
        variables.sort();
        for var in variables {
            let mut parts = var.splitn(3, '.');
            let root = parts.next().unwrap_or_default();
            let field = parts.next();
            if root == "parameters" {
                if let Some(name) = field {
                    if !declared.contains(&name) {
                        out.push(doc.error(
                            &pointer,
                            format!(
                                "unknown parameter \"{name}\"{} (declared: {})",
                                did_you_mean(name, declared.iter().copied()),
                                list(declared)
                            ),
                        ));
                    }
                }
            } else if !runtime && !INSTANTIATION_ROOTS.contains(&root) {
                out.push(doc.error(
                    &pointer,
                    format!("unknown variable \"{var}\": stage fields may use parameters.<name> and app.name"),
                ));
            }
        }
    }

    // Type-specific references.
    if stage.get("type").and_then(Value::as_str) == Some("canaryAnalysis") {
        if let Some(name) = stage.get("canaryConfig").and_then(Value::as_str) {
            if !known_names(&repo.canaries, &repo.broken_canaries)
                .iter()
                .any(|n| n == name)
            {
                let known: Vec<&str> = repo.canaries.keys().map(String::as_str).collect();
                out.push(unknown(
                    doc,
                    &format!("{base}/canaryConfig"),
                    "canary config",
                    name,
                    &known,
                ));
            }
        }
        let duration = |field: &str| {
            stage
                .get(field)
                .and_then(Value::as_str)
                .filter(|s| !template::is_templated(s))
                .and_then(|s| Duration::parse(s).ok())
        };
        if let (Some(lifetime), Some(interval)) = (duration("lifetime"), duration("interval")) {
            if interval > lifetime {
                out.push(doc.error(
                    &format!("{base}/interval"),
                    format!("interval ({interval}) is longer than lifetime ({lifetime})"),
                ));
            }
        }
        if let Some(t) = stage.get("scoreThresholds") {
            check_thresholds(doc, t, &format!("{base}/scoreThresholds"), out);
        }
    }
}

/// Every string of a stage with its pointer, whether it is evaluated at run time, and whether
/// it is a bare expression (`when`, `expression`) rather than a template.
fn collect_strings<'a>(
    value: &'a Value,
    pointer: &str,
    runtime: bool,
    out: &mut Vec<(String, &'a str, bool, bool)>,
) {
    match value {
        Value::String(s) => out.push((pointer.to_string(), s, runtime, false)),
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                collect_strings(v, &pointer_join(pointer, &i.to_string()), runtime, out);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                let p = pointer_join(pointer, k);
                if (k == "when" || k == "expression") && v.is_string() {
                    out.push((p, v.as_str().unwrap_or_default(), true, true));
                } else {
                    collect_strings(v, &p, runtime || RUNTIME_FIELDS.contains(&k.as_str()), out);
                }
            }
        }
        _ => {}
    }
}

/// Cycles of the stage graph, each as stage indices in dependency order, each reported once.
fn find_cycles(headers: &[Option<StageHeader>], index: &HashMap<&str, usize>) -> Vec<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Color {
        White,
        Grey,
        Black,
    }
    let n = headers.len();
    let deps: Vec<Vec<usize>> = headers
        .iter()
        .map(|h| {
            h.as_ref()
                .map(|h| {
                    h.depends_on
                        .iter()
                        .filter(|d| **d != h.name)
                        .filter_map(|d| index.get(d.as_str()).copied())
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect();
    let mut color = vec![Color::White; n];
    let mut cycles: BTreeSet<Vec<usize>> = BTreeSet::new();
    for start in 0..n {
        if color[start] != Color::White {
            continue;
        }
        // Iterative DFS: (node, next dependency index).
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        color[start] = Color::Grey;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&dep) = deps[node].get(*next) {
                *next += 1;
                match color[dep] {
                    Color::White => {
                        color[dep] = Color::Grey;
                        stack.push((dep, 0));
                    }
                    Color::Grey => {
                        let pos = stack.iter().position(|(s, _)| *s == dep).unwrap_or(0);
                        let mut cycle: Vec<usize> = stack[pos..].iter().map(|(s, _)| *s).collect();
                        // Rotate so the cycle starts at its first-declared stage.
                        let min_pos = cycle
                            .iter()
                            .enumerate()
                            .min_by_key(|(_, s)| **s)
                            .map_or(0, |(i, _)| i);
                        cycle.rotate_left(min_pos);
                        // A stage depends on the next one; report in "runs before" order.
                        cycle[1..].reverse();
                        cycles.insert(cycle);
                    }
                    Color::Black => {}
                }
            } else {
                color[node] = Color::Black;
                stack.pop();
            }
        }
    }
    cycles.into_iter().collect()
}

// ---------------------------------------------------------------- CanaryConfig

fn check_thresholds<T>(doc: &Document<T>, t: &Value, pointer: &str, out: &mut Vec<Diagnostic>) {
    let marginal = t.get("marginal").and_then(Value::as_f64);
    let pass = t.get("pass").and_then(Value::as_f64);
    if let (Some(marginal), Some(pass)) = (marginal, pass) {
        if marginal > pass {
            out.push(doc.error(
                &format!("{pointer}/marginal"),
                format!(
                    "thresholds out of order: marginal ({marginal}) must not be above pass ({pass})"
                ),
            ));
        }
    }
}

fn check_canary(doc: &Document<CanaryConfig>, out: &mut Vec<Diagnostic>) {
    let spec = &doc.doc.spec;
    let env = template::sandbox();
    report_duplicates(
        doc,
        "/spec/metrics",
        "metric",
        spec.metrics.iter().map(|m| m.name.as_str()),
        out,
    );
    let mut groups: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, m) in spec.metrics.iter().enumerate() {
        let base = format!("/spec/metrics/{i}");
        for (j, g) in m.groups.iter().enumerate() {
            groups.entry(g).or_insert(j);
            if !spec.classifier.group_weights.contains_key(g) {
                out.push(doc.error(
                    &format!("{base}/groups/{j}"),
                    format!(
                        "group \"{g}\" has no weight in spec.classifier.groupWeights{}",
                        did_you_mean(g, spec.classifier.group_weights.keys().map(String::as_str))
                    ),
                ));
            }
        }
        // Only bounds the user wrote are compared: a defaulted critical bound (the neutral
        // value) just means "every failure of a critical metric is critical".
        let (ai, ad, ci, cd) = m.effect_size.bounds();
        let es = format!("{base}/effectSize");
        if m.effect_size.critical_increase.is_some() && ai > ci {
            out.push(doc.error(
                &format!("{es}/criticalIncrease"),
                format!("effect sizes out of order: criticalIncrease ({ci}) is below allowedIncrease ({ai})"),
            ));
        }
        if m.effect_size.critical_decrease.is_some() && cd > ad {
            out.push(doc.error(
                &format!("{es}/criticalDecrease"),
                format!("effect sizes out of order: criticalDecrease ({cd}) is above allowedDecrease ({ad})"),
            ));
        }
        check_query(
            doc,
            &env,
            &spec.templates,
            &m.query,
            &format!("{base}/query"),
            out,
        );
    }
    let mut sum = 0.0;
    for (g, w) in &spec.classifier.group_weights {
        sum += w;
        if !groups.contains_key(g.as_str()) {
            out.push(doc.error(
                &pointer_join("/spec/classifier/groupWeights", g),
                format!("weight for group \"{g}\", which no metric belongs to"),
            ));
        }
    }
    if !spec.classifier.group_weights.is_empty() && (sum - 100.0).abs() > 1e-9 {
        out.push(doc.error(
            "/spec/classifier/groupWeights",
            format!("group weights add up to {sum}, not 100"),
        ));
    }
    let thresholds = doc
        .raw()
        .pointer("/spec/classifier/scoreThresholds")
        .cloned()
        .unwrap_or(Value::Null);
    check_thresholds(doc, &thresholds, "/spec/classifier/scoreThresholds", out);

    let a = &spec.analysis;
    if let Some(interval) = a.interval {
        if interval > a.lifetime {
            out.push(doc.error(
                "/spec/analysis/interval",
                format!(
                    "interval ({interval}) is longer than lifetime ({})",
                    a.lifetime
                ),
            ));
        }
        if a.step > interval {
            out.push(doc.error(
                "/spec/analysis/step",
                format!("step ({}) is longer than interval ({interval})", a.step),
            ));
        }
    } else if a.step > a.lifetime {
        out.push(doc.error(
            "/spec/analysis/step",
            format!("step ({}) is longer than lifetime ({})", a.step, a.lifetime),
        ));
    }
    for (name, text) in &spec.templates {
        check_query(
            doc,
            &env,
            &BTreeMap::new(),
            text,
            &pointer_join("/spec/templates", name),
            out,
        );
    }
}

/// Checks a PromQL template: syntax and variables (`scope`, `location`, `templates.<name>`).
fn check_query(
    doc: &Document<CanaryConfig>,
    env: &minijinja::Environment<'static>,
    templates: &BTreeMap<String, String>,
    text: &str,
    pointer: &str,
    out: &mut Vec<Diagnostic>,
) {
    let t = match env.template_from_str(text) {
        Ok(t) => t,
        Err(e) => {
            out.push(doc.error(pointer, template::error_message(&e)));
            return;
        }
    };
    let mut variables: Vec<String> = t.undeclared_variables(true).into_iter().collect();
    variables.sort();
    let in_template = pointer.starts_with("/spec/templates");
    for var in variables {
        let (root, rest) = var.split_once('.').unwrap_or((var.as_str(), ""));
        match root {
            "scope" | "location" => {}
            "templates" if !in_template => {
                if !rest.is_empty() && !templates.contains_key(rest) {
                    out.push(doc.error(
                        pointer,
                        format!(
                            "unknown template \"{rest}\"{} (spec.templates has: {})",
                            did_you_mean(rest, templates.keys().map(String::as_str)),
                            list(&templates.keys().map(String::as_str).collect::<Vec<_>>())
                        ),
                    ));
                }
            }
            _ => out.push(doc.error(
                pointer,
                format!(
                    "unknown variable \"{var}\": queries may use scope, location{}",
                    if in_template {
                        ""
                    } else {
                        " and templates.<name>"
                    }
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::duplicates;

    #[test]
    fn every_repeat_points_at_the_first_occurrence() {
        assert_eq!(
            duplicates(["a", "b", "a", "c", "a", "b"]),
            vec![(2, 0), (4, 0), (5, 1)]
        );
        assert!(duplicates(["a", "b"]).is_empty());
    }
}
