//! Preprocessing of one series (NaN strategy, IQR outliers) and its descriptive statistics,
//! following commons-math 3.6.1 as Kayenta uses it (spec §2).

use serde::Serialize;

use crate::canary::json_f64;
use crate::config::model::{NanStrategy, OutlierStrategy};

/// NaN handling then optional IQR outlier removal, each series independently (spec §2).
pub fn transform(
    series: &[f64],
    nan: NanStrategy,
    outliers: OutlierStrategy,
    factor: f64,
) -> Vec<f64> {
    let cleaned: Vec<f64> = match nan {
        NanStrategy::Remove => series.iter().copied().filter(|v| !v.is_nan()).collect(),
        NanStrategy::Replace => series
            .iter()
            .map(|&v| if v.is_nan() { 0.0 } else { v })
            .collect(),
    };
    match outliers {
        OutlierStrategy::Keep => cleaned,
        OutlierStrategy::Remove => remove_outliers(&cleaned, factor),
    }
}

/// IQR detector with reduced sensitivity: fences widened to P1 / P99, strict comparisons.
pub fn remove_outliers(series: &[f64], factor: f64) -> Vec<f64> {
    if series.is_empty() {
        return Vec::new();
    }
    let mut sorted = series.to_vec();
    sorted.sort_by(f64::total_cmp);
    let q1 = percentile_sorted(&sorted, 25.0);
    let q3 = percentile_sorted(&sorted, 75.0);
    let iqr = q3 - q1;
    let lower = percentile_sorted(&sorted, 1.0).min(q1 - factor * iqr);
    let upper = percentile_sorted(&sorted, 99.0).max(q3 + factor * iqr);
    series
        .iter()
        .copied()
        .filter(|&v| !(v > upper || v < lower))
        .collect()
}

/// Percentile `p` in (0, 100] of ascending-sorted values, estimation type R-7.
pub fn percentile_sorted(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    match n {
        0 => f64::NAN,
        1 => sorted[0],
        _ => {
            let q = p / 100.0;
            let h = 1.0 + (n as f64 - 1.0) * q;
            if h < 1.0 {
                sorted[0]
            } else if h >= n as f64 {
                sorted[n - 1]
            } else {
                let fl = h.floor();
                // 1 <= fl < n, so both indices are in range.
                let i = fl as usize;
                sorted[i - 1] + (h - fl) * (sorted[i] - sorted[i - 1])
            }
        }
    }
}

/// commons-math `Mean`: sequential sum / n plus the second-pass correction. NaN when empty.
pub fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let n = values.len() as f64;
    let mut sum = 0.0;
    for &v in values {
        sum += v;
    }
    let xbar = sum / n;
    let mut correction = 0.0;
    for &v in values {
        correction += v - xbar;
    }
    xbar + correction / n
}

/// commons-math bias-corrected `Variance` (two-pass corrected formula); 0 for one value.
pub fn variance(values: &[f64]) -> f64 {
    match values.len() {
        0 => f64::NAN,
        1 => 0.0,
        len => {
            let m = mean(values);
            let mut accum = 0.0;
            let mut accum2 = 0.0;
            for &v in values {
                let dev = v - m;
                accum += dev * dev;
                accum2 += dev;
            }
            let len = len as f64;
            (accum - (accum2 * accum2 / len)) / (len - 1.0)
        }
    }
}

/// Descriptive statistics of a transformed series (`experimentMetadata.stats`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stats {
    /// Smallest value (0 when empty).
    #[serde(serialize_with = "json_f64")]
    pub min: f64,
    /// Largest value (0 when empty).
    #[serde(serialize_with = "json_f64")]
    pub max: f64,
    /// Two-pass mean (0 when empty).
    #[serde(serialize_with = "json_f64")]
    pub mean: f64,
    /// Sample standard deviation, n−1 (0 when empty or one value).
    #[serde(serialize_with = "json_f64")]
    pub std: f64,
    /// Number of values.
    pub count: usize,
}

impl Stats {
    /// Statistics of `values`; all zero for an empty series.
    pub fn of(values: &[f64]) -> Stats {
        if values.is_empty() {
            return Stats {
                min: 0.0,
                max: 0.0,
                mean: 0.0,
                std: 0.0,
                count: 0,
            };
        }
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Stats {
            min,
            max,
            mean: mean(values),
            std: variance(values).sqrt(),
            count: values.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_remove_drops_and_replace_zeroes() {
        let s = [1.0, f64::NAN, 3.0];
        assert_eq!(
            transform(&s, NanStrategy::Remove, OutlierStrategy::Keep, 3.0),
            vec![1.0, 3.0]
        );
        assert_eq!(
            transform(&s, NanStrategy::Replace, OutlierStrategy::Keep, 3.0),
            vec![1.0, 0.0, 3.0]
        );
    }

    #[test]
    fn percentile_r7() {
        let s = [1.0, 2.0, 3.0, 4.0];
        // h = 1 + 3*0.25 = 1.75 -> 1 + 0.75*(2-1)
        assert_eq!(percentile_sorted(&s, 25.0), 1.75);
        assert_eq!(percentile_sorted(&s, 100.0), 4.0);
        assert_eq!(percentile_sorted(&s, 1.0), 1.0 + 0.03);
        assert_eq!(percentile_sorted(&[5.0], 50.0), 5.0);
        assert!(percentile_sorted(&[], 50.0).is_nan());
    }

    #[test]
    fn outliers_strictly_outside_widened_fences_are_removed() {
        let mut s: Vec<f64> = (0..200).map(|i| (i % 10) as f64).collect();
        s.push(1000.0);
        s.insert(3, -1000.0);
        let out = remove_outliers(&s, 3.0);
        assert_eq!(out.len(), 200);
        assert!(!out.contains(&1000.0) && !out.contains(&-1000.0));
        // order of the other values is kept
        assert_eq!(&out[..4], &[0.0, 1.0, 2.0, 3.0]);
        // P1/P99 widening: with few points nothing extreme enough is removed
        assert_eq!(remove_outliers(&[1.0, 2.0, 100.0], 3.0).len(), 3);
        assert!(remove_outliers(&[], 3.0).is_empty());
    }

    #[test]
    fn stats_follow_commons_math() {
        let st = Stats::of(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!((st.min, st.max, st.mean, st.count), (1.0, 4.0, 2.5, 4));
        assert!((st.std - 1.2909944487358056).abs() < 1e-15);
        assert_eq!(Stats::of(&[7.0]).std, 0.0);
        let empty = Stats::of(&[]);
        assert_eq!((empty.min, empty.mean, empty.count), (0.0, 0.0, 0));
    }
}
