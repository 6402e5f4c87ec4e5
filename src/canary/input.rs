//! The request file of `bowline canary judge` (spec A.2): a config (Kayenta JSON or bowline
//! CanaryConfig), optional thresholds, and data keyed by metric name or as metric-set pairs.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::canary::judge::MetricSetPair;
use crate::canary::settings::{JudgeConfig, Thresholds};
use crate::canary::{JudgeError, kayenta};
use crate::config::model::CanaryConfig;
use crate::config::schema::{self, Kind};

/// A parsed judge request.
#[derive(Debug, Clone, PartialEq)]
pub struct JudgeRequest {
    /// The judge view of the config.
    pub config: JudgeConfig,
    /// Thresholds: the request's, else the config's.
    pub thresholds: Thresholds,
    /// Pairs in judging order.
    pub pairs: Vec<MetricSetPair>,
}

/// Rewrites the bare tokens `NaN`, `Infinity` and `-Infinity` outside strings into strings, so
/// that relaxed JSON parses with a strict parser.
pub fn relax_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(ch) = rest.chars().next() {
        if in_string {
            out.push(ch);
            if escaped {
                escaped = false;
            } else if ch == '\\' {
                escaped = true;
            } else if ch == '"' {
                in_string = false;
            }
            rest = &rest[ch.len_utf8()..];
            continue;
        }
        if ch == '"' {
            in_string = true;
            out.push(ch);
            rest = &rest[1..];
            continue;
        }
        let token = ["-Infinity", "+Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|t| rest.starts_with(t));
        if let Some(t) = token {
            out.push('"');
            out.push_str(t.trim_start_matches('+'));
            out.push('"');
            rest = &rest[t.len()..];
            continue;
        }
        out.push(ch);
        rest = &rest[ch.len_utf8()..];
    }
    out
}

/// True for a bowline `CanaryConfig` document (as opposed to a Kayenta config).
pub fn is_bowline_document(config: &Value) -> bool {
    config.get("kind").and_then(Value::as_str) == Some("CanaryConfig")
        || (config.get("apiVersion").is_some() && config.get("spec").is_some())
}

/// A bowline CanaryConfig document, schema-checked then typed.
pub fn bowline_config(config: &Value) -> Result<CanaryConfig, JudgeError> {
    let violations = schema::validate(Kind::CanaryConfig, config);
    if let Some(v) = violations.first() {
        let more = if violations.len() > 1 {
            format!(" (and {} more)", violations.len() - 1)
        } else {
            String::new()
        };
        return Err(JudgeError::Config(format!(
            "{}: {}{more}",
            if v.pointer.is_empty() {
                "/"
            } else {
                &v.pointer
            },
            v.message
        )));
    }
    serde_json::from_value(config.clone()).map_err(|e| JudgeError::Config(e.to_string()))
}

/// The judge view of either config flavour.
pub fn judge_config(config: &Value) -> Result<JudgeConfig, JudgeError> {
    if is_bowline_document(config) {
        Ok(JudgeConfig::from_bowline(&bowline_config(config)?.spec))
    } else if config.is_object() {
        kayenta::judge_config(config)
    } else {
        Err(JudgeError::Config("config must be an object".to_string()))
    }
}

/// One data point: a number, null / "NaN" (missing), or "Infinity" / "-Infinity".
fn point(v: &Value, metric: &str) -> Result<f64, JudgeError> {
    match v {
        Value::Null => Ok(f64::NAN),
        Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| JudgeError::Input(format!("{metric}: bad number {n}"))),
        Value::String(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            other => Err(JudgeError::Input(format!(
                "{metric}: value \"{other}\" is not a number"
            ))),
        },
        other => Err(JudgeError::Input(format!(
            "{metric}: value {other} is not a number"
        ))),
    }
}

fn series(values: Option<&Value>, metric: &str, side: &str) -> Result<Vec<f64>, JudgeError> {
    match values {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(|v| point(v, metric)).collect(),
        Some(_) => Err(JudgeError::Input(format!(
            "{metric}: {side} must be a list of numbers"
        ))),
    }
}

/// Pairs from the request's `data`: a map by metric name (config metrics without data become
/// empty series, unknown names are errors) or a list of metric-set pairs.
pub fn pairs(data: &Value, config: &JudgeConfig) -> Result<Vec<MetricSetPair>, JudgeError> {
    match data {
        Value::Object(map) => {
            if let Some(unknown) = map.keys().find(|k| config.metric(k).is_none()) {
                return Err(JudgeError::UnknownMetric(unknown.clone()));
            }
            let mut seen = std::collections::HashSet::new();
            let mut out = Vec::new();
            for metric in &config.metrics {
                if !seen.insert(metric.name.as_str()) {
                    continue;
                }
                let entry = map.get(&metric.name);
                out.push(MetricSetPair {
                    name: metric.name.clone(),
                    id: None,
                    tags: BTreeMap::new(),
                    control: series(
                        entry.and_then(|e| e.get("control")),
                        &metric.name,
                        "control",
                    )?,
                    experiment: series(
                        entry.and_then(|e| e.get("experiment")),
                        &metric.name,
                        "experiment",
                    )?,
                });
            }
            Ok(out)
        }
        Value::Array(items) => items.iter().map(pair).collect(),
        _ => Err(JudgeError::Input(
            "data must be an object keyed by metric name or a list of metric-set pairs".to_string(),
        )),
    }
}

fn pair(item: &Value) -> Result<MetricSetPair, JudgeError> {
    let name = item
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| JudgeError::Input("every metric-set pair needs a \"name\"".to_string()))?
        .to_string();
    let id = match item.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    };
    let mut tags = BTreeMap::new();
    if let Some(Value::Object(map)) = item.get("tags") {
        for (k, v) in map {
            let v = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            tags.insert(k.clone(), v);
        }
    }
    let values = item.get("values");
    Ok(MetricSetPair {
        control: series(values.and_then(|v| v.get("control")), &name, "control")?,
        experiment: series(
            values.and_then(|v| v.get("experiment")),
            &name,
            "experiment",
        )?,
        name,
        id,
        tags,
    })
}

/// Parses a request file's text.
pub fn parse_request(text: &str) -> Result<JudgeRequest, JudgeError> {
    let value: Value = serde_json::from_str(&relax_json(text))
        .map_err(|e| JudgeError::Input(format!("not JSON: {e}")))?;
    let config_value = value
        .get("config")
        .ok_or_else(|| JudgeError::Input("missing \"config\"".to_string()))?;
    let config = judge_config(config_value)?;
    let thresholds = match value.get("thresholds") {
        Some(t) if !t.is_null() => kayenta::parse_thresholds(t, "thresholds")?,
        _ => config.thresholds.ok_or_else(|| {
            JudgeError::Input(
                "no score thresholds: give \"thresholds\" or config.classifier.scoreThresholds"
                    .to_string(),
            )
        })?,
    };
    let data = value
        .get("data")
        .ok_or_else(|| JudgeError::Input("missing \"data\"".to_string()))?;
    let pairs = pairs(data, &config)?;
    Ok(JudgeRequest {
        config,
        thresholds,
        pairs,
    })
}
