//! Metric retrieval from Prometheus: each metric's PromQL template rendered for a scope, run as
//! a range query over a window with the configured step, and turned into metric-set pairs.
//!
//! Rendering and pairing are pure; [`PrometheusSource`] is the only part that does I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_http_query::Client;
use serde::Serialize;
use tracing::Instrument;

use crate::canary::judge::MetricSetPair;
use crate::config::model::{CanaryConfigSpec, CanaryMetric};

/// Why metrics could not be retrieved. Every variant is an error of the analysis, never a pass.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RetrievalError {
    /// The PromQL template does not render.
    #[error("metric {metric}: query template: {message}")]
    Template {
        /// Metric name.
        metric: String,
        /// What went wrong.
        message: String,
    },
    /// Prometheus could not be reached (connection refused, timeout, TLS, bad URL).
    #[error("Prometheus at {url} is unreachable: {message}")]
    Unreachable {
        /// Base URL.
        url: String,
        /// Transport error.
        message: String,
    },
    /// Prometheus answered with an error (bad PromQL, timeout of the query, …).
    #[error("metric {metric}: query failed: {message}")]
    Query {
        /// Metric name.
        metric: String,
        /// Prometheus' message.
        message: String,
    },
    /// The answer was not a range vector.
    #[error("metric {metric}: expected a range vector (matrix) result, got {kind}")]
    NotAMatrix {
        /// Metric name.
        metric: String,
        /// What came back.
        kind: String,
    },
}

/// Who is measured: a scope (Deployment or app name), its location (namespace) and extra labels.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Scope {
    /// `{{ scope }}` in queries.
    pub scope: String,
    /// `{{ location }}` (also `{{ namespace }}`) in queries.
    pub location: String,
    /// `{{ labels.<name> }}`, and `{{ label_filter }}` as `name="value", …`.
    pub labels: BTreeMap<String, String>,
}

/// A closed time window `[start, end]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Window {
    /// First instant.
    pub start: DateTime<Utc>,
    /// Last instant.
    pub end: DateTime<Utc>,
}

impl Window {
    /// The same window moved back by `offset`.
    pub fn shifted_back(&self, offset: Duration) -> Window {
        let d = chrono::Duration::from_std(offset).unwrap_or(chrono::Duration::zero());
        Window {
            start: self.start - d,
            end: self.end - d,
        }
    }

    /// Grid timestamps (unix seconds) of a range query with this step.
    pub fn grid(&self, step: Duration) -> Vec<i64> {
        let step = step.as_secs().max(1) as i64;
        let (start, end) = (self.start.timestamp(), self.end.timestamp());
        (0..)
            .map(|k| start + k * step)
            .take_while(|t| *t <= end)
            .collect()
    }
}

/// One series of a range query: its labels and (unix seconds, value) samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    /// Label set.
    pub labels: BTreeMap<String, String>,
    /// Samples in time order.
    pub samples: Vec<(i64, f64)>,
}

fn escape_label_value(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Renders a metric's PromQL for a scope: filter templates first, then the query, both with
/// `scope`, `location`, `namespace`, `labels` and `label_filter`; the query also sees
/// `templates.<name>`.
pub fn render_query(
    spec: &CanaryConfigSpec,
    metric: &CanaryMetric,
    scope: &Scope,
) -> Result<String, RetrievalError> {
    let err = |e: minijinja::Error| RetrievalError::Template {
        metric: metric.name.clone(),
        message: crate::template::error_message(&e),
    };
    let label_filter = scope
        .labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label_value(v)))
        .collect::<Vec<_>>()
        .join(", ");
    let base = minijinja::context! {
        scope => &scope.scope,
        location => &scope.location,
        namespace => &scope.location,
        labels => &scope.labels,
        label_filter => label_filter,
    };
    let env = crate::template::sandbox();
    let mut templates = BTreeMap::new();
    for (name, body) in &spec.templates {
        templates.insert(name.clone(), env.render_str(body, &base).map_err(err)?);
    }
    let ctx = minijinja::context! { templates => templates, ..base };
    env.render_str(&metric.query, ctx).map_err(err)
}

/// Values on the window's step grid, NaN where Prometheus has no sample (Kayenta's shape).
pub fn values_on_grid(series: &Series, window: &Window, step: Duration) -> Vec<f64> {
    let by_time: BTreeMap<i64, f64> = series.samples.iter().copied().collect();
    window
        .grid(step)
        .into_iter()
        .map(|t| by_time.get(&t).copied().unwrap_or(f64::NAN))
        .collect()
}

/// Pairs the control and experiment series of one metric by label set. Series that only one
/// side has are paired with an empty series; no series at all gives one empty pair (Nodata).
pub fn pair_series(
    metric: &str,
    control: &[Series],
    experiment: &[Series],
    control_window: &Window,
    experiment_window: &Window,
    step: Duration,
) -> Vec<MetricSetPair> {
    // Single series on each side: one pair whatever the labels (they name the scopes).
    if control.len() <= 1 && experiment.len() <= 1 {
        let tags = experiment
            .first()
            .or(control.first())
            .map(|s| common_labels(s, control.first()))
            .unwrap_or_default();
        return vec![MetricSetPair {
            name: metric.to_string(),
            id: None,
            tags,
            control: control
                .first()
                .map(|s| values_on_grid(s, control_window, step))
                .unwrap_or_default(),
            experiment: experiment
                .first()
                .map(|s| values_on_grid(s, experiment_window, step))
                .unwrap_or_default(),
        }];
    }
    let keys: BTreeSet<&BTreeMap<String, String>> = control
        .iter()
        .chain(experiment)
        .map(|s| &s.labels)
        .collect();
    keys.into_iter()
        .map(|labels| {
            let find = |side: &[Series], window: &Window| {
                side.iter()
                    .find(|s| &s.labels == labels)
                    .map(|s| values_on_grid(s, window, step))
                    .unwrap_or_default()
            };
            MetricSetPair {
                name: metric.to_string(),
                id: None,
                tags: labels.clone(),
                control: find(control, control_window),
                experiment: find(experiment, experiment_window),
            }
        })
        .collect()
}

fn common_labels(a: &Series, b: Option<&Series>) -> BTreeMap<String, String> {
    match b {
        None => a.labels.clone(),
        Some(b) => a
            .labels
            .iter()
            .filter(|(k, v)| b.labels.get(*k) == Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// A Prometheus server queried over its HTTP API.
#[derive(Clone)]
pub struct PrometheusSource {
    client: Client,
    url: String,
}

impl std::fmt::Debug for PrometheusSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusSource")
            .field("url", &self.url)
            .finish()
    }
}

impl PrometheusSource {
    /// A client for `url` with a per-request timeout.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, RetrievalError> {
        // One crypto provider for rustls (ring); a no-op when the process installed it already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let unreachable = |message: String| RetrievalError::Unreachable {
            url: url.to_string(),
            message,
        };
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| unreachable(e.to_string()))?;
        let client = Client::from(http, url).map_err(|e| unreachable(e.to_string()))?;
        Ok(PrometheusSource {
            client,
            url: url.to_string(),
        })
    }

    /// Base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs one range query.
    pub async fn range_query(
        &self,
        metric: &str,
        query: &str,
        window: &Window,
        step: Duration,
    ) -> Result<Vec<Series>, RetrievalError> {
        let span = tracing::info_span!(
            "prometheus.query_range",
            url = %self.url,
            metric,
            query,
            start = %window.start,
            end = %window.end,
            step_s = step.as_secs_f64(),
        );
        async {
            let response = self
                .client
                .query_range(
                    query,
                    window.start.timestamp(),
                    window.end.timestamp(),
                    step.as_secs_f64().max(1.0),
                )
                .get()
                .await
                .map_err(|e| match e {
                    prometheus_http_query::Error::Prometheus(p) => RetrievalError::Query {
                        metric: metric.to_string(),
                        message: p.to_string(),
                    },
                    other => RetrievalError::Unreachable {
                        url: self.url.clone(),
                        message: error_chain(&other),
                    },
                })?;
            let Some(matrix) = response.data().as_matrix() else {
                return Err(RetrievalError::NotAMatrix {
                    metric: metric.to_string(),
                    kind: format!("{:?}", response.data())
                        .split('(')
                        .next()
                        .unwrap_or("")
                        .to_string(),
                });
            };
            let series: Vec<Series> = matrix
                .iter()
                .map(|rv| Series {
                    labels: rv
                        .metric()
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    samples: rv
                        .samples()
                        .iter()
                        .map(|s| (s.timestamp().round() as i64, s.value()))
                        .collect(),
                })
                .collect();
            tracing::debug!(series = series.len(), "range query answered");
            Ok(series)
        }
        .instrument(span)
        .await
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let s = inner.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::CanaryConfig;

    fn spec() -> CanaryConfigSpec {
        let doc: CanaryConfig = serde_yaml::from_str(
            r#"
metadata: {name: c}
spec:
  templates:
    app: 'app="{{ scope }}", namespace="{{ location }}"'
  metrics:
    - name: errors
      groups: [errors]
      query: 'sum(rate(http_requests_total{ {{ templates.app }}, code=~"5.." }[1m]))'
    - name: extra
      groups: [errors]
      query: 'up{ {{ label_filter }} } * on() group_left() vector({{ labels.weight }})'
  classifier:
    groupWeights: {errors: 100}
    scoreThresholds: {marginal: 75, pass: 95}
"#,
        )
        .expect("valid config");
        doc.spec
    }

    #[test]
    fn queries_render_scope_location_templates_and_labels() {
        let spec = spec();
        let scope = Scope {
            scope: "checkout-canary".into(),
            location: "shop".into(),
            labels: BTreeMap::from([("weight".to_string(), "2".to_string())]),
        };
        assert_eq!(
            render_query(&spec, &spec.metrics[0], &scope).expect("renders"),
            r#"sum(rate(http_requests_total{ app="checkout-canary", namespace="shop", code=~"5.." }[1m]))"#
        );
        assert_eq!(
            render_query(&spec, &spec.metrics[1], &scope).expect("renders"),
            r#"up{ weight="2" } * on() group_left() vector(2)"#
        );
        let missing = Scope::default();
        assert!(matches!(
            render_query(&spec, &spec.metrics[1], &missing),
            Err(RetrievalError::Template { .. })
        ));
    }

    #[test]
    fn grid_fills_missing_points_with_nan() {
        let start = DateTime::from_timestamp(1_000_000_000, 0).expect("valid");
        let window = Window {
            start,
            end: start + chrono::Duration::seconds(180),
        };
        let s = Series {
            labels: BTreeMap::new(),
            samples: vec![(1_000_000_000, 1.0), (1_000_000_120, 3.0)],
        };
        let v = values_on_grid(&s, &window, Duration::from_secs(60));
        assert_eq!(v.len(), 4);
        assert_eq!((v[0], v[2]), (1.0, 3.0));
        assert!(v[1].is_nan() && v[3].is_nan());
    }

    #[test]
    fn series_are_paired_by_labels() {
        let start = DateTime::from_timestamp(0, 0).expect("valid");
        let w = Window { start, end: start };
        let series = |code: &str, v: f64| Series {
            labels: BTreeMap::from([("code".to_string(), code.to_string())]),
            samples: vec![(0, v)],
        };
        let pairs = pair_series(
            "m",
            &[series("500", 1.0), series("503", 2.0)],
            &[series("500", 5.0)],
            &w,
            &w,
            Duration::from_secs(60),
        );
        assert_eq!(pairs.len(), 2);
        assert_eq!(
            (pairs[0].control.clone(), pairs[0].experiment.clone()),
            (vec![1.0], vec![5.0])
        );
        assert!(pairs[1].experiment.is_empty());
        let none = pair_series("m", &[], &[], &w, &w, Duration::from_secs(60));
        assert_eq!(none.len(), 1);
        assert!(none[0].control.is_empty() && none[0].experiment.is_empty());
    }
}
