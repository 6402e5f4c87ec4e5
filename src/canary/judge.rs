//! NetflixACAJudge-v1.0: per-metric classification (spec §3, §5) and scoring (spec §6), producing
//! Kayenta's result model (spec §7). Pure functions over data.

use std::collections::BTreeMap;

use rayon::prelude::*;

use serde::Serialize;

use crate::canary::mannwhitney::WilcoxonShift;
use crate::canary::preprocess::{Stats, mean, transform};
use crate::canary::random::JavaRandom;
use crate::canary::settings::{JudgeConfig, MetricSettings, Thresholds};
use crate::canary::{JudgeError, json_f64};
use crate::config::model::{Direction, EffectMeasure, NanStrategy, OutlierStrategy};

/// Name of the only judge.
pub const JUDGE_NAME: &str = "NetflixACAJudge-v1.0";

/// Mann-Whitney tolerance, hard-coded in the judge (spec §1.2).
pub const TOLERANCE: f64 = 0.25;

/// Seed of the tie-breaking noise generators (one per pair, this seed xor the pair's position).
/// Kayenta's is unseeded; fixed seeds make bowline's reports reproducible (only
/// constant-vs-constant metrics draw from it, spec §4.1).
pub const NOISE_SEED: i64 = 0x5EED_CA7A;

/// One metric-set pair: a metric's control (baseline) and experiment (canary) series.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetricSetPair {
    /// Metric name (matched to the config).
    pub name: String,
    /// Optional pair id.
    pub id: Option<String>,
    /// Tags of the series (e.g. labels).
    pub tags: BTreeMap<String, String>,
    /// Baseline values; NaN for missing points.
    pub control: Vec<f64>,
    /// Canary values; NaN for missing points.
    pub experiment: Vec<f64>,
}

/// Metric classification labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Classification {
    /// No significant change in a failing direction.
    Pass,
    /// Significant increase.
    High,
    /// Significant decrease.
    Low,
    /// Missing data, not counted.
    Nodata,
    /// Missing data on a mustHaveData metric, counted as a failure.
    NodataFailMetric,
    /// Classification failed (all observations tied).
    Error,
}

impl Classification {
    /// The label as written in results.
    pub fn as_str(self) -> &'static str {
        match self {
            Classification::Pass => "Pass",
            Classification::High => "High",
            Classification::Low => "Low",
            Classification::Nodata => "Nodata",
            Classification::NodataFailMetric => "NodataFailMetric",
            Classification::Error => "Error",
        }
    }
}

/// Overall verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Verdict {
    /// Score ≥ pass threshold.
    Pass,
    /// Score ≥ marginal threshold.
    Marginal,
    /// Below marginal.
    Fail,
}

impl Verdict {
    /// The label as written in results.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "Pass",
            Verdict::Marginal => "Marginal",
            Verdict::Fail => "Fail",
        }
    }
}

/// `stats` wrapper of the experiment / control metadata.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SeriesMetadata {
    /// Descriptive statistics of the transformed series.
    pub stats: Stats,
}

/// `resultMetadata`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ResultMetadata {
    /// meanRatio of the tested series (1.0 for the no-test rules).
    #[serde(serialize_with = "json_f64")]
    pub ratio: f64,
}

/// Result of one metric-set pair (Kayenta `CanaryAnalysisResult`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricResult {
    /// Metric name.
    pub name: String,
    /// Pair id, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Pair tags.
    pub tags: BTreeMap<String, String>,
    /// Label.
    pub classification: Classification,
    /// Why, when there is something to say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classification_reason: Option<String>,
    /// Groups of the metric.
    pub groups: Vec<String>,
    /// Canary statistics.
    pub experiment_metadata: SeriesMetadata,
    /// Baseline statistics.
    pub control_metadata: SeriesMetadata,
    /// Ratio of means; absent for Error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result_metadata: Option<ResultMetadata>,
    /// Whether this result fails the canary on its own.
    pub critical: bool,
    /// Muted metrics are reported but not scored.
    pub muted: bool,
}

/// Score of one group.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupScore {
    /// Group name.
    pub name: String,
    /// Percentage of passing metrics (0 for a group without countable results).
    #[serde(serialize_with = "json_f64")]
    pub score: f64,
    /// Always empty (Kayenta field).
    pub classification: String,
    /// Always empty (Kayenta field).
    pub classification_reason: String,
    /// True when no result of the group counted (scored as 100 in the summary).
    #[serde(skip)]
    pub no_data: bool,
}

/// Overall score and verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Score {
    /// Summary score, rounded to 2 decimals.
    #[serde(serialize_with = "json_f64")]
    pub score: f64,
    /// Verdict.
    pub classification: Verdict,
    /// Empty, or `Canary Failed: …`.
    pub classification_reason: String,
}

/// The judge's answer (Kayenta `CanaryJudgeResult`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JudgeResult {
    /// Always [`JUDGE_NAME`].
    pub judge_name: String,
    /// One per metric-set pair, input order, muted included.
    pub results: Vec<MetricResult>,
    /// Per group, in order of first appearance in the results.
    pub group_scores: Vec<GroupScore>,
    /// Summary.
    pub score: Score,
}

/// Judges the pairs under the config and thresholds (spec §1.1): classify each, then score.
pub fn judge(
    config: &JudgeConfig,
    thresholds: Thresholds,
    pairs: &[MetricSetPair],
) -> Result<JudgeResult, JudgeError> {
    // Pairs are independent: classified in parallel. Each pair draws its noise from its own
    // generator (seeded by position), so results do not depend on scheduling.
    let results = pairs
        .par_iter()
        .enumerate()
        .map(|(index, pair)| {
            let metric = config
                .metric(&pair.name)
                .ok_or_else(|| JudgeError::UnknownMetric(pair.name.clone()))?;
            let mut random = JavaRandom::new(NOISE_SEED ^ index as i64);
            classify_pair(metric, pair, &mut random)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(score_results(config, thresholds, results))
}

/// Classification outcome before it is wrapped into a [`MetricResult`].
#[derive(Debug, Clone, PartialEq)]
pub struct Classified {
    /// Label.
    pub classification: Classification,
    /// Reason, if any.
    pub reason: Option<String>,
    /// Critical flag.
    pub critical: bool,
    /// Deviation (meanRatio); None for Error.
    pub ratio: Option<f64>,
}

/// Preprocesses and classifies one pair (spec §2–§3).
pub fn classify_pair(
    metric: &MetricSettings,
    pair: &MetricSetPair,
    random: &mut JavaRandom,
) -> Result<MetricResult, JudgeError> {
    if metric.outlier_strategy == OutlierStrategy::Remove
        && (metric.outlier_factor.is_nan() || metric.outlier_factor <= 0.0)
    {
        return Err(JudgeError::OutlierFactor {
            metric: metric.name.clone(),
            factor: metric.outlier_factor,
        });
    }
    let prepare = |s: &[f64]| {
        transform(
            s,
            metric.nan_strategy,
            metric.outlier_strategy,
            metric.outlier_factor,
        )
    };
    let experiment = prepare(&pair.experiment);
    let control = prepare(&pair.control);
    let experiment_stats = Stats::of(&experiment);
    let control_stats = Stats::of(&control);
    let c = classify(metric, &experiment, &control, random);
    Ok(MetricResult {
        name: pair.name.clone(),
        id: pair.id.clone(),
        tags: pair.tags.clone(),
        classification: c.classification,
        classification_reason: c.reason,
        groups: metric.groups.clone(),
        experiment_metadata: SeriesMetadata {
            stats: experiment_stats,
        },
        control_metadata: SeriesMetadata {
            stats: control_stats,
        },
        result_metadata: c.ratio.map(|ratio| ResultMetadata { ratio }),
        critical: c.critical,
        muted: metric.muted,
    })
}

/// mean(x) / mean(y) with commons means; NaN when either mean is exactly 0 (spec §5).
pub fn mean_ratio(control: &[f64], experiment: &[f64]) -> f64 {
    let c = mean(control);
    let e = mean(experiment);
    if c == 0.0 || e == 0.0 {
        f64::NAN
    } else {
        e / c
    }
}

/// Ascending copy in `Double.compare` order (sorting the order keys: equal keys are equal bits,
/// so an unstable sort is exact).
fn sorted_total(values: &[f64]) -> Vec<f64> {
    let mut keys: Vec<i64> = values
        .iter()
        .map(|v| {
            let bits = v.to_bits() as i64;
            bits ^ ((((bits >> 63) as u64) >> 1) as i64)
        })
        .collect();
    keys.sort_unstable();
    keys.into_iter()
        .map(|k| f64::from_bits((k ^ ((((k >> 63) as u64) >> 1) as i64)) as u64))
        .collect()
}

/// True when a non-empty sorted series holds one distinct value (`Double.equals`: bits).
fn single_value(sorted: &[f64]) -> bool {
    match (sorted.first(), sorted.last()) {
        (Some(a), Some(b)) => a.to_bits() == b.to_bits(),
        _ => false,
    }
}

fn pass(reason: Option<String>) -> Classified {
    Classified {
        classification: Classification::Pass,
        reason,
        critical: false,
        ratio: Some(1.0),
    }
}

/// The decision procedure of spec §3 on transformed series (x = experiment, y = control).
pub fn classify(
    metric: &MetricSettings,
    x: &[f64],
    y: &[f64],
    random: &mut JavaRandom,
) -> Classified {
    let name = &metric.name;
    // 1. No data.
    if x.is_empty() || y.is_empty() {
        return match metric.nan_strategy {
            NanStrategy::Replace => pass(None),
            NanStrategy::Remove => Classified {
                classification: if metric.must_have_data && !metric.critical {
                    Classification::NodataFailMetric
                } else {
                    Classification::Nodata
                },
                reason: Some(format!("Missing data for {name}")),
                // NodataFailMetric implies a non-critical metric, so this is false for it.
                critical: metric.critical,
                ratio: Some(1.0),
            },
        };
    }
    // Sorted once (Double.compare order) for rules 2–4.
    let xs = sorted_total(x);
    let ys = sorted_total(y);
    // 2. Identical data (numeric equality of the sorted series, as Scala's `==` on doubles).
    if xs.len() == ys.len() && xs.iter().zip(&ys).all(|(a, b)| a == b) {
        return pass(Some(
            "The Canary and Baseline data are identical".to_string(),
        ));
    }
    // 3. Single distinct value overall (`Double.equals`: bit patterns).
    let x_constant = single_value(&xs);
    let y_constant = single_value(&ys);
    if x_constant && y_constant && xs[0].to_bits() == ys[0].to_bits() {
        return pass(None);
    }
    // 4.1 Tie-breaking noise when both series are constant: canary first, then baseline.
    let noised;
    let (x, y, shift) = if x_constant && y_constant {
        noised = (random.add_noise(x), random.add_noise(y));
        let shift = WilcoxonShift::new(&noised.0, &noised.1);
        (noised.0.as_slice(), noised.1.as_slice(), shift)
    } else {
        (x, y, WilcoxonShift::from_sorted(xs, ys))
    };
    let interval = match shift.interval() {
        Ok(i) => i,
        Err(_) => {
            return Classified {
                classification: Classification::Error,
                reason: Some("Metric Classification Failed".to_string()),
                critical: false,
                ratio: None,
            };
        }
    };
    let ratio = mean_ratio(y, x);
    let effect = match metric.measure {
        EffectMeasure::MeanRatio => ratio,
        EffectMeasure::Cles => shift.cles(),
    };
    let t = TOLERANCE * interval.est.abs();
    let increase_allowed = matches!(metric.direction, Direction::Increase | Direction::Either);
    let decrease_allowed = matches!(metric.direction, Direction::Decrease | Direction::Either);
    let label = if increase_allowed
        && interval.lo > t
        && (effect.is_nan() || effect >= metric.allowed_increase)
    {
        Classification::High
    } else if decrease_allowed
        && interval.hi < -t
        && (effect.is_nan() || effect <= metric.allowed_decrease)
    {
        Classification::Low
    } else {
        return Classified {
            classification: Classification::Pass,
            reason: None,
            critical: false,
            ratio: Some(ratio),
        };
    };
    // 5. Critical escalation.
    let critical = metric.critical
        && match label {
            Classification::High => effect.is_nan() || effect >= metric.critical_increase,
            _ => effect.is_nan() || effect <= metric.critical_decrease,
        };
    let reason = if critical {
        format!(
            "The metric {name} was classified as {} (Critical)",
            label.as_str()
        )
    } else {
        format!("{name} was classified as {}", label.as_str())
    };
    Classified {
        classification: label,
        reason: Some(reason),
        critical,
        ratio: Some(ratio),
    }
}

/// Group scores, summary score and verdict (spec §6).
pub fn score_results(
    config: &JudgeConfig,
    thresholds: Thresholds,
    results: Vec<MetricResult>,
) -> JudgeResult {
    let scored: Vec<&MetricResult> = results.iter().filter(|r| !r.muted).collect();
    // Group scores in order of first appearance.
    let mut order: Vec<String> = Vec::new();
    let mut counts: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for r in &scored {
        for g in &r.groups {
            if !counts.contains_key(g.as_str()) {
                order.push(g.clone());
            }
            let entry = counts.entry(g.as_str()).or_insert((0, 0));
            match r.classification {
                Classification::Pass => {
                    entry.0 += 1;
                    entry.1 += 1;
                }
                Classification::High | Classification::Low | Classification::NodataFailMetric => {
                    entry.1 += 1;
                }
                Classification::Nodata | Classification::Error => {}
            }
        }
    }
    let group_scores: Vec<GroupScore> = order
        .iter()
        .map(|g| {
            let (p, n) = counts.get(g.as_str()).copied().unwrap_or((0, 0));
            let no_data = n == 0;
            GroupScore {
                name: g.clone(),
                score: if no_data {
                    0.0
                } else {
                    (p as f64 / n as f64) * 100.0
                },
                classification: String::new(),
                classification_reason: String::new(),
                no_data,
            }
        })
        .collect();

    let critical_failure = scored
        .iter()
        .find(|r| r.critical && r.classification != Classification::Pass);
    let nodata = scored
        .iter()
        .filter(|r| r.classification == Classification::Nodata)
        .count();
    let (summary, reason) = if let Some(r) = critical_failure {
        (
            0.0,
            format!(
                "Canary Failed: {}",
                r.classification_reason.as_deref().unwrap_or("")
            ),
        )
    } else if nodata as f64 / scored.len() as f64 * 100.0 >= 50.0 {
        (
            0.0,
            "Canary Failed: 50% or more metrics returned NODATA".to_string(),
        )
    } else {
        let configured: f64 = config.group_weights.values().sum();
        let unweighted = group_scores
            .iter()
            .filter(|g| !config.group_weights.contains_key(&g.name))
            .count();
        let share = (100.0 - configured) / unweighted as f64;
        let mut sum = 0.0;
        for g in &group_scores {
            let weight = config.group_weights.get(&g.name).copied().unwrap_or(share);
            let effective = if g.no_data { 100.0 } else { g.score };
            sum += effective * (weight / 100.0);
        }
        (round_half_up_2(sum), String::new())
    };
    let classification = if summary >= thresholds.pass {
        Verdict::Pass
    } else if summary >= thresholds.marginal {
        Verdict::Marginal
    } else {
        Verdict::Fail
    };
    JudgeResult {
        judge_name: JUDGE_NAME.to_string(),
        results,
        group_scores,
        score: Score {
            score: summary,
            classification,
            classification_reason: reason,
        },
    }
}

/// commons `Precision.round(x, 2)` (HALF_UP on the shortest decimal representation of x).
pub fn round_half_up_2(x: f64) -> f64 {
    if !x.is_finite() {
        return x;
    }
    // `{:e}` gives the shortest round-trip digits, as Double.toString does.
    let text = format!("{:e}", x.abs());
    let Some((mantissa, exponent)) = text.split_once('e') else {
        return x;
    };
    let Ok(exponent) = exponent.parse::<i32>() else {
        return x;
    };
    let digits: Vec<u8> = mantissa
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|d| d - b'0')
        .collect();
    // |x| = d1.d2d3… × 10^exponent; keep the digits down to 10^-2 as an integer N = |x|·100.
    if exponent > 12 {
        return x; // no fractional digits are representable at this magnitude
    }
    let keep = exponent + 3; // digits of N
    if keep < 0 {
        return 0.0_f64.copysign(x);
    }
    let keep = keep as usize;
    let mut n: u64 = 0;
    for i in 0..keep {
        n = n * 10 + u64::from(digits.get(i).copied().unwrap_or(0));
    }
    if digits.get(keep).is_some_and(|&d| d >= 5) {
        n += 1;
    }
    // N < 10^18 is exact in u64; N / 100 is correctly rounded, like parsing "N/100" as decimal.
    ((n as f64) / 100.0).copysign(x)
}
