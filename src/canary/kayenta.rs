//! Kayenta canary configs (JSON, as exported from Spinnaker): the judge's lenient reading of the
//! per-metric settings (spec §1.2, MapUtils quirks) and the conversion to a bowline
//! `CanaryConfig` (`bowline canary import-kayenta`).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::canary::JudgeError;
use crate::canary::settings::{JudgeConfig, MetricSettings, Thresholds};
use crate::config::model::{Direction, EffectMeasure, NanStrategy, OutlierStrategy};

/// Path lookup through nested maps: `None` when absent (or an intermediate is not a map),
/// `Some(Value::Null)` for an explicit null.
fn lookup<'a>(root: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut current = root;
    for key in path {
        current = current.as_object()?.get(*key)?;
    }
    Some(current)
}

fn field_error(metric: &str, path: &[&str], what: &str, value: &Value) -> JudgeError {
    JudgeError::Config(format!(
        "metric {metric}: analysisConfigurations.canary.{} must be {what}, got {value}",
        path[2..].join(".")
    ))
}

/// String setting: absent → default; null or non-string → error (a cast failure in Kayenta).
fn get_string(
    metric: &str,
    root: &Value,
    path: &[&str],
    default: &str,
) -> Result<String, JudgeError> {
    match lookup(root, path) {
        None => Ok(default.to_string()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(field_error(metric, path, "a string", other)),
    }
}

/// Boolean setting: absent → default; null → false; only JSON booleans are accepted.
fn get_bool(metric: &str, root: &Value, path: &[&str], default: bool) -> Result<bool, JudgeError> {
    match lookup(root, path) {
        None => Ok(default),
        Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(field_error(metric, path, "a boolean", other)),
    }
}

/// Number setting: absent → default; null → 0.0; integers must fit a Java int.
fn get_number(metric: &str, root: &Value, path: &[&str], default: f64) -> Result<f64, JudgeError> {
    match lookup(root, path) {
        None => Ok(default),
        Some(Value::Null) => Ok(0.0),
        Some(Value::Number(n)) => number_value(n).ok_or_else(|| {
            field_error(
                metric,
                path,
                "a number within range",
                &Value::Number(n.clone()),
            )
        }),
        Some(other) => Err(field_error(metric, path, "a number", other)),
    }
}

/// A JSON number as Kayenta reads it: an `Integer` in int range or a `Double`.
fn number_value(n: &serde_json::Number) -> Option<f64> {
    if n.is_f64() {
        n.as_f64()
    } else {
        n.as_i64()
            .filter(|v| i32::try_from(*v).is_ok())
            .map(|v| v as f64)
    }
}

/// The judge settings of one Kayenta metric config.
pub fn metric_settings(metric: &Value) -> Result<MetricSettings, JudgeError> {
    let name = metric
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| JudgeError::Config("every metric needs a string \"name\"".to_string()))?
        .to_string();
    let groups = match metric.get("groups") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|g| {
                g.as_str().map(str::to_string).ok_or_else(|| {
                    JudgeError::Config(format!("metric {name}: groups must be strings"))
                })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(JudgeError::Config(format!(
                "metric {name}: groups must be a list"
            )));
        }
    };
    let base = ["analysisConfigurations", "canary"];
    let p =
        |rest: &[&'static str]| -> Vec<&'static str> { base.iter().chain(rest).copied().collect() };
    let n = name.as_str();
    let direction = match get_string(n, metric, &p(&["direction"]), "either")?.as_str() {
        "increase" => Direction::Increase,
        "decrease" => Direction::Decrease,
        _ => Direction::Either,
    };
    let nan_strategy = match get_string(n, metric, &p(&["nanStrategy"]), "none")?.as_str() {
        "replace" => NanStrategy::Replace,
        _ => NanStrategy::Remove,
    };
    let outlier_strategy =
        match get_string(n, metric, &p(&["outliers", "strategy"]), "none")?.as_str() {
            "remove" => OutlierStrategy::Remove,
            _ => OutlierStrategy::Keep,
        };
    let outlier_factor = get_number(n, metric, &p(&["outliers", "outlierFactor"]), 3.0)?;
    let critical = get_bool(n, metric, &p(&["critical"]), false)?;
    let must_have_data = get_bool(n, metric, &p(&["mustHaveData"]), false)?;
    let muted = get_bool(n, metric, &p(&["muted"]), false)?;
    let measure = match get_string(n, metric, &p(&["effectSize", "measure"]), "meanRatio")?.as_str()
    {
        "cles" => EffectMeasure::Cles,
        _ => EffectMeasure::MeanRatio,
    };
    let neutral = match measure {
        EffectMeasure::MeanRatio => 1.0,
        EffectMeasure::Cles => 0.5,
    };
    let effect = |key: &'static str| get_number(n, metric, &p(&["effectSize", key]), neutral);
    Ok(MetricSettings {
        allowed_increase: effect("allowedIncrease")?,
        allowed_decrease: effect("allowedDecrease")?,
        critical_increase: effect("criticalIncrease")?,
        critical_decrease: effect("criticalDecrease")?,
        name,
        groups,
        direction,
        nan_strategy,
        outlier_strategy,
        outlier_factor,
        critical,
        must_have_data,
        muted,
        measure,
    })
}

fn thresholds_from(value: &Value, what: &str) -> Result<Thresholds, JudgeError> {
    let get = |key: &str| -> Result<f64, JudgeError> {
        match value.get(key) {
            Some(Value::Number(n)) => n
                .as_f64()
                .ok_or_else(|| JudgeError::Config(format!("{what}.{key} is not a number"))),
            _ => Err(JudgeError::Config(format!("{what}.{key} must be a number"))),
        }
    };
    Ok(Thresholds {
        pass: get("pass")?,
        marginal: get("marginal")?,
    })
}

/// Parses score thresholds `{pass, marginal}`.
pub fn parse_thresholds(value: &Value, what: &str) -> Result<Thresholds, JudgeError> {
    if !value.is_object() {
        return Err(JudgeError::Config(format!("{what} must be an object")));
    }
    thresholds_from(value, what)
}

/// The judge view of a Kayenta canary config.
pub fn judge_config(config: &Value) -> Result<JudgeConfig, JudgeError> {
    let metrics = match config.get("metrics") {
        Some(Value::Array(items)) => items
            .iter()
            .map(metric_settings)
            .collect::<Result<Vec<_>, _>>()?,
        None | Some(Value::Null) => Vec::new(),
        Some(_) => return Err(JudgeError::Config("metrics must be a list".to_string())),
    };
    let classifier = config.get("classifier");
    let mut group_weights = BTreeMap::new();
    if let Some(weights) = classifier.and_then(|c| c.get("groupWeights")) {
        match weights {
            Value::Null => {}
            Value::Object(map) => {
                for (group, weight) in map {
                    let w = match weight {
                        Value::Number(n) => number_value(n),
                        _ => None,
                    }
                    .ok_or_else(|| {
                        JudgeError::Config(format!("groupWeights.{group} must be a number"))
                    })?;
                    group_weights.insert(group.clone(), w);
                }
            }
            _ => {
                return Err(JudgeError::Config(
                    "classifier.groupWeights must be an object".to_string(),
                ));
            }
        }
    }
    let thresholds = match classifier.and_then(|c| c.get("scoreThresholds")) {
        None | Some(Value::Null) => None,
        Some(t) => Some(parse_thresholds(t, "classifier.scoreThresholds")?),
    };
    Ok(JudgeConfig {
        metrics,
        group_weights,
        thresholds,
    })
}

// ------------------------------------------------------------------ import

/// A bowline CanaryConfig converted from Kayenta, with what could not be carried over.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    /// The CanaryConfig document (YAML text).
    pub yaml: String,
    /// Problems: each one needs a human before the config is used.
    pub warnings: Vec<String>,
}

/// Kayenta `${name}` placeholders to MiniJinja `{{ name }}`: `scope` and `location` as they
/// are, `namespace` as `location` (bowline's location is the app's namespace); any other
/// placeholder has no value in bowline, so the import is refused naming it rather than
/// producing a query that cannot validate.
fn convert_placeholders(
    text: &str,
    what: &str,
    warnings: &mut Vec<String>,
) -> Result<String, JudgeError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) => {
                let var = after[..end].trim();
                match var {
                    "scope" | "location" => out.push_str(&format!("{{{{ {var} }}}}")),
                    "namespace" => {
                        warnings.push(format!(
                            "{what}: placeholder ${{namespace}} became {{{{ location }}}}, the app's namespace in the environment analysed"
                        ));
                        out.push_str("{{ location }}");
                    }
                    _ => {
                        return Err(JudgeError::Config(format!(
                            "{what}: placeholder ${{{var}}} has no bowline equivalent (queries get scope, the app, and location, its namespace): rewrite it with those, or as a literal, before importing"
                        )));
                    }
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// A DNS-1123 label from free text.
fn dns_label(text: &str) -> String {
    let mut out = String::new();
    for ch in text.chars().flat_map(char::to_lowercase) {
        if ch.is_ascii_alphanumeric() {
            out.push(ch);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let trimmed: String = out.trim_matches('-').chars().take(63).collect();
    let trimmed = trimmed.trim_end_matches('-').to_string();
    if trimmed.is_empty() {
        "imported".to_string()
    } else {
        trimmed
    }
}

/// A template name usable as `templates.<name>`.
fn template_key(name: &str) -> String {
    let mut key: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if key.is_empty() || key.starts_with(|c: char| c.is_ascii_digit()) {
        key.insert(0, '_');
    }
    key
}

/// The PromQL template of one Kayenta metric, or why it cannot be converted.
fn convert_query(
    metric: &str,
    query: &Value,
    template_keys: &BTreeMap<String, String>,
    warnings: &mut Vec<String>,
) -> Result<Option<String>, JudgeError> {
    let kind = query.get("type").and_then(Value::as_str).unwrap_or("");
    if kind != "prometheus" {
        warnings.push(format!(
            "metric {metric}: query type \"{kind}\" is not Prometheus; write its PromQL by hand"
        ));
        return Ok(None);
    }
    let what = format!("metric {metric}");
    if let Some(inline) = query
        .get("customInlineTemplate")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
    {
        let promql = inline
            .trim()
            .strip_prefix("PromQL:")
            .unwrap_or(inline)
            .trim();
        return convert_placeholders(promql, &what, warnings).map(Some);
    }
    let Some(metric_name) = query.get("metricName").and_then(Value::as_str) else {
        return Ok(None);
    };
    let mut selectors: Vec<String> = Vec::new();
    if let Some(filter) = query
        .get("customFilterTemplate")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        match template_keys.get(filter) {
            Some(key) => selectors.push(format!("{{{{ templates.{key} }}}}")),
            None => {
                warnings.push(format!(
                    "metric {metric}: customFilterTemplate \"{filter}\" is not among the config's templates"
                ));
                return Ok(None);
            }
        }
    } else {
        // Kayenta's default Prometheus filter for a scope without a template.
        selectors.push("app=\"{{ scope }}\"".to_string());
        warnings.push(format!(
            "metric {metric}: no filter template; assumed app=\"<scope>\" (check the label your services use)"
        ));
    }
    if let Some(Value::Array(bindings)) = query.get("labelBindings")
        && !bindings.is_empty()
    {
        warnings.push(format!(
            "metric {metric}: labelBindings are not supported and were dropped"
        ));
    }
    let selector = format!("{}{{ {} }}", metric_name, selectors.join(", "));
    let group_by: Vec<&str> = match query.get("groupByFields") {
        Some(Value::Array(fields)) => fields.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let is_counter = metric_name.ends_with("_total") || metric_name.ends_with("_count");
    let inner = if is_counter {
        warnings.push(format!(
            "metric {metric}: {metric_name} looks like a counter; compared as rate(…[1m])"
        ));
        format!("rate({selector}[1m])")
    } else {
        selector
    };
    Ok(Some(if group_by.is_empty() {
        inner
    } else {
        format!("sum by ({}) ({inner})", group_by.join(", "))
    }))
}

fn yaml_string(s: &str) -> String {
    // JSON strings are valid YAML flow scalars and keep every character as is.
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

fn yaml_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Converts a Kayenta canary config (JSON value) to a bowline `CanaryConfig` YAML document.
/// The judge bowline implements; Kayenta configs naming another are refused, not re-judged.
const JUDGE: &str = "NetflixACAJudge-v1.0";

/// Converts a Kayenta canary config. Refused, as Kayenta's API refuses them or because bowline
/// would judge them differently: another judge than [`JUDGE`], no metrics, two metrics of one
/// name, a placeholder with no bowline value.
pub fn import(config: &Value) -> Result<Imported, JudgeError> {
    if let Some(judge) = lookup(config, &["judge", "name"]).and_then(Value::as_str)
        && judge != JUDGE
    {
        return Err(JudgeError::Config(format!(
            "judge \"{judge}\" is not supported: bowline judges as {JUDGE} only, and would give other verdicts"
        )));
    }
    let judge = judge_config(config)?;
    if judge.metrics.is_empty() {
        return Err(JudgeError::Config(
            "the config has no metrics: there is nothing to judge".to_string(),
        ));
    }
    let mut names = std::collections::BTreeSet::new();
    for m in &judge.metrics {
        if !names.insert(m.name.as_str()) {
            return Err(JudgeError::Config(format!(
                "two metrics are named \"{}\" (Kayenta refuses such a config): rename one",
                m.name
            )));
        }
    }
    let mut warnings = Vec::new();
    let name = config
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("imported");
    let empty = Map::new();
    let templates = config
        .get("templates")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut template_keys = BTreeMap::new();
    let mut template_lines = Vec::new();
    for (tname, body) in templates {
        let key = template_key(tname);
        if key != *tname {
            warnings.push(format!("template \"{tname}\" renamed to \"{key}\""));
        }
        let Some(body) = body.as_str() else {
            warnings.push(format!("template \"{tname}\" is not a string; dropped"));
            continue;
        };
        let converted = convert_placeholders(body, &format!("template {tname}"), &mut warnings)?;
        template_lines.push(format!("    {key}: {}", yaml_string(&converted)));
        template_keys.insert(tname.clone(), key);
    }
    let raw_metrics: Vec<Value> = config
        .get("metrics")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut out = String::new();
    out.push_str("# yaml-language-server: $schema=../../schema/canary-config.schema.json\n");
    out.push_str("apiVersion: bowline/v1\nkind: CanaryConfig\nmetadata:\n");
    out.push_str(&format!("  name: {}\n", dns_label(name)));
    let description = config
        .get("description")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("Imported from Kayenta canary config \"{name}\"."));
    out.push_str(&format!("  description: {}\n", yaml_string(&description)));
    out.push_str("spec:\n  judge: NetflixACAJudge-v1.0\n");
    if !template_lines.is_empty() {
        out.push_str("  templates:\n");
        for line in &template_lines {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str("  metrics:\n");
    for (raw, m) in raw_metrics.iter().zip(&judge.metrics) {
        out.push_str(&format!("    - name: {}\n", yaml_string(&m.name)));
        let groups: Vec<String> = if m.groups.is_empty() {
            warnings.push(format!(
                "metric {}: no groups; put in group \"default\"",
                m.name
            ));
            vec![yaml_string("default")]
        } else {
            m.groups.iter().map(|g| yaml_string(g)).collect()
        };
        out.push_str(&format!("      groups: [{}]\n", groups.join(", ")));
        let converted = match raw.get("query") {
            Some(q) => convert_query(&m.name, q, &template_keys, &mut warnings)?,
            None => None,
        };
        let query = converted.unwrap_or_else(|| {
            format!(
                "UNCONVERTED {}",
                raw.get("query").map(Value::to_string).unwrap_or_default()
            )
        });
        out.push_str(&format!("      query: {}\n", yaml_string(&query)));
        let canary = lookup(raw, &["analysisConfigurations", "canary"]);
        let given = |path: &[&str]| canary.and_then(|c| lookup(c, path)).is_some();
        let raw_string = |path: &[&str]| {
            canary
                .and_then(|c| lookup(c, path))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        if let Some(d) = raw_string(&["direction"])
            && !matches!(d.as_str(), "increase" | "decrease" | "either")
        {
            warnings.push(format!(
                "metric {}: direction \"{d}\" is read as either",
                m.name
            ));
        }
        out.push_str(&format!(
            "      direction: {}\n",
            match m.direction {
                Direction::Increase => "increase",
                Direction::Decrease => "decrease",
                Direction::Either => "either",
            }
        ));
        out.push_str(&format!(
            "      nanStrategy: {}\n",
            match m.nan_strategy {
                NanStrategy::Remove => "remove",
                NanStrategy::Replace => "replace",
            }
        ));
        for (flag, value) in [
            ("critical", m.critical),
            ("mustHaveData", m.must_have_data),
            ("muted", m.muted),
        ] {
            if value {
                out.push_str(&format!("      {flag}: true\n"));
            }
        }
        let effect_keys = [
            ("allowedIncrease", m.allowed_increase),
            ("allowedDecrease", m.allowed_decrease),
            ("criticalIncrease", m.critical_increase),
            ("criticalDecrease", m.critical_decrease),
        ];
        let effect_given: Vec<_> = effect_keys
            .iter()
            .filter(|(k, _)| given(&["effectSize", k]))
            .collect();
        if m.measure == EffectMeasure::Cles || !effect_given.is_empty() {
            out.push_str("      effectSize:\n");
            out.push_str(&format!(
                "        measure: {}\n",
                match m.measure {
                    EffectMeasure::Cles => "cles",
                    EffectMeasure::MeanRatio => "meanRatio",
                }
            ));
            for (k, v) in effect_given {
                out.push_str(&format!("        {k}: {}\n", yaml_number(*v)));
            }
        }
        if m.outlier_strategy == OutlierStrategy::Remove {
            if m.outlier_factor.is_nan() || m.outlier_factor <= 0.0 {
                warnings.push(format!(
                    "metric {}: outlierFactor {} must be > 0",
                    m.name, m.outlier_factor
                ));
            }
            out.push_str(&format!(
                "      outliers: {{strategy: remove, outlierFactor: {}}}\n",
                yaml_number(m.outlier_factor)
            ));
        }
    }
    out.push_str("  classifier:\n");
    if judge.group_weights.is_empty() {
        out.push_str("    groupWeights: {}\n");
    } else {
        out.push_str("    groupWeights:\n");
        for (g, w) in &judge.group_weights {
            out.push_str(&format!("      {}: {}\n", yaml_string(g), yaml_number(*w)));
        }
    }
    if !judge.group_weights.is_empty() {
        let groups: std::collections::BTreeSet<&str> = judge
            .metrics
            .iter()
            .flat_map(|m| m.groups.iter().map(String::as_str))
            .collect();
        for group in &groups {
            if !judge.group_weights.contains_key(*group) {
                warnings.push(format!(
                    "group \"{group}\" has no weight in classifier.groupWeights: its metrics would not count"
                ));
            }
        }
        for group in judge.group_weights.keys() {
            if !groups.contains(group.as_str()) {
                warnings.push(format!(
                    "classifier.groupWeights gives group \"{group}\" a weight, but no metric is in it"
                ));
            }
        }
    }
    let sum: f64 = judge.group_weights.values().sum();
    if !judge.group_weights.is_empty() && (sum - 100.0).abs() > 1e-9 {
        warnings.push(format!("group weights sum to {sum}, not 100"));
    }
    let thresholds = judge.thresholds.unwrap_or_else(|| {
        warnings.push(
            "no classifier.scoreThresholds (Kayenta takes them from the execution request); set marginal 75, pass 95"
                .to_string(),
        );
        Thresholds {
            pass: 95.0,
            marginal: 75.0,
        }
    });
    out.push_str(&format!(
        "    scoreThresholds:\n      marginal: {}\n      pass: {}\n",
        yaml_number(thresholds.marginal),
        yaml_number(thresholds.pass)
    ));
    Ok(Imported {
        yaml: out,
        warnings,
    })
}
