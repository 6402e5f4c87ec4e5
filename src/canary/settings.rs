//! What the judge needs from a canary config: per-metric settings (spec §1.2), group weights and
//! score thresholds, built from a bowline `CanaryConfig` or from a Kayenta config
//! ([`crate::canary::kayenta`]).

use std::collections::BTreeMap;

use crate::config::model::{
    CanaryConfigSpec, CanaryMetric, Direction, EffectMeasure, NanStrategy, OutlierStrategy,
};

/// Judge settings of one metric, defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSettings {
    /// Metric name; metric-set pairs are matched to the first metric with their name.
    pub name: String,
    /// Groups the metric is scored in.
    pub groups: Vec<String>,
    /// Which significant change fails the metric.
    pub direction: Direction,
    /// NaN handling.
    pub nan_strategy: NanStrategy,
    /// Outlier handling.
    pub outlier_strategy: OutlierStrategy,
    /// IQR factor (must be > 0 when outliers are removed).
    pub outlier_factor: f64,
    /// A failure zeroes the score.
    pub critical: bool,
    /// Missing data fails the metric (NodataFailMetric) unless critical.
    pub must_have_data: bool,
    /// Reported but not scored.
    pub muted: bool,
    /// Effect size used by the gates.
    pub measure: EffectMeasure,
    /// Smallest effect that lets a significant increase fail.
    pub allowed_increase: f64,
    /// Largest effect that lets a significant decrease fail.
    pub allowed_decrease: f64,
    /// Smallest effect that makes a High critical.
    pub critical_increase: f64,
    /// Largest effect that makes a Low critical.
    pub critical_decrease: f64,
}

impl MetricSettings {
    /// Settings with every default of spec §1.2.
    pub fn new(name: impl Into<String>, groups: Vec<String>) -> Self {
        MetricSettings {
            name: name.into(),
            groups,
            direction: Direction::Either,
            nan_strategy: NanStrategy::Remove,
            outlier_strategy: OutlierStrategy::Keep,
            outlier_factor: 3.0,
            critical: false,
            must_have_data: false,
            muted: false,
            measure: EffectMeasure::MeanRatio,
            allowed_increase: 1.0,
            allowed_decrease: 1.0,
            critical_increase: 1.0,
            critical_decrease: 1.0,
        }
    }

    /// Settings of a metric of a bowline `CanaryConfig`.
    pub fn from_bowline(metric: &CanaryMetric) -> Self {
        let (allowed_increase, allowed_decrease, critical_increase, critical_decrease) =
            metric.effect_size.bounds();
        MetricSettings {
            name: metric.name.clone(),
            groups: metric.groups.clone(),
            direction: metric.direction,
            nan_strategy: metric.nan_strategy,
            outlier_strategy: metric.outliers.strategy,
            outlier_factor: metric.outliers.outlier_factor,
            critical: metric.critical,
            must_have_data: metric.must_have_data,
            muted: metric.muted,
            measure: metric.effect_size.measure,
            allowed_increase,
            allowed_decrease,
            critical_increase,
            critical_decrease,
        }
    }
}

/// Score thresholds of the verdict.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Score at or above: Pass.
    pub pass: f64,
    /// Score at or above (and below pass): Marginal.
    pub marginal: f64,
}

/// Everything the judge reads from a canary config.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JudgeConfig {
    /// Metrics in config order.
    pub metrics: Vec<MetricSettings>,
    /// Weight of each group (0–100 scale; not required to sum to 100).
    pub group_weights: BTreeMap<String, f64>,
    /// `classifier.scoreThresholds`, when the config has them.
    pub thresholds: Option<Thresholds>,
}

impl JudgeConfig {
    /// The judge view of a bowline `CanaryConfig` spec.
    pub fn from_bowline(spec: &CanaryConfigSpec) -> Self {
        JudgeConfig {
            metrics: spec
                .metrics
                .iter()
                .map(MetricSettings::from_bowline)
                .collect(),
            group_weights: spec.classifier.group_weights.clone(),
            thresholds: Some(Thresholds {
                pass: spec.classifier.score_thresholds.pass,
                marginal: spec.classifier.score_thresholds.marginal,
            }),
        }
    }

    /// The first metric with this name.
    pub fn metric(&self, name: &str) -> Option<&MetricSettings> {
        self.metrics.iter().find(|m| m.name == name)
    }
}
