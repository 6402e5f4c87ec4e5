//! Canary analysis: the Kayenta-compatible judge (NetflixACAJudge-v1.0), metric retrieval from
//! Prometheus, live analysis, and reports.
//!
//! The judge is pure: [`preprocess`] cleans each series, [`mannwhitney`] computes the shift
//! interval, [`judge`] classifies and scores. [`input`] and [`kayenta`] read judge requests and
//! Kayenta configs. I/O lives apart in [`retrieval`] (Prometheus range queries) and [`analysis`]
//! (the live loop); [`report`] renders JSON, Markdown and SVG.

pub mod analysis;
pub mod input;
pub mod judge;
pub mod kayenta;
pub mod mannwhitney;
pub mod preprocess;
pub mod random;
pub mod report;
pub mod retrieval;
pub mod settings;

pub use judge::{
    Classification, JudgeResult, MetricResult, MetricSetPair, Verdict, judge as run_judge,
};
pub use settings::{JudgeConfig, MetricSettings, Thresholds};

use serde::Serializer;

/// Why a whole judge call fails (Kayenta throws; bowline's `canary judge` exits 2).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JudgeError {
    /// A metric-set pair names a metric the config does not have.
    #[error("Could not find metric config for {0}")]
    UnknownMetric(String),
    /// Outlier removal with a factor that is not > 0.
    #[error("metric {metric}: outlierFactor must be greater than 0 (got {factor})")]
    OutlierFactor {
        /// Metric name.
        metric: String,
        /// The factor.
        factor: f64,
    },
    /// A config field has the wrong type or value.
    #[error("invalid canary config: {0}")]
    Config(String),
    /// The judge request itself is malformed.
    #[error("invalid judge input: {0}")]
    Input(String),
}

/// Serializes a double as Jackson does: non-finite values as the strings "NaN", "Infinity",
/// "-Infinity".
pub fn json_f64<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_nan() {
        s.serialize_str("NaN")
    } else if v.is_infinite() {
        s.serialize_str(if *v > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        s.serialize_f64(*v)
    }
}
