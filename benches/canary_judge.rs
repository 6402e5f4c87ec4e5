//! The canary judge on 100 metrics with 1,000 points per scope (target: under 20 ms in release).
//!
//! The data is deterministic: normal-ish latencies, a tenth of the metrics shifted up by 5 %,
//! a tenth by 30 %, 2 % missing points, a few integer-valued (tied) counters. Every iteration
//! checks the labels, so a regression that changes the verdicts fails instead of being timed.
//! With `CANARY_BENCH_DUMP=FILE` the same request is written as a `bowline canary judge` input,
//! which `benches/canary_scipy.py` judges with `scipy.stats.mannwhitneyu` for comparison.
//!
//! Run: `cargo bench --bench canary_judge` or `scripts/bench-canary.sh`.

use std::hint::black_box;

use bowline::canary::judge::{MetricSetPair, judge};
use bowline::canary::{Classification, JudgeConfig, MetricSettings, Thresholds};
use bowline::config::model::Direction;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

const METRICS: usize = 100;
const POINTS: usize = 1000;

struct Lcg(u64);

impl Lcg {
    fn uniform(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

fn dataset() -> (JudgeConfig, Vec<MetricSetPair>) {
    let mut rng = Lcg(42);
    let mut config = JudgeConfig::default();
    let mut pairs = Vec::new();
    for m in 0..METRICS {
        let name = format!("metric-{m:03}");
        let group = ["latency", "errors", "saturation", "traffic"][m % 4];
        let mut settings = MetricSettings::new(&name, vec![group.to_string()]);
        settings.direction = Direction::Increase;
        config.metrics.push(settings);
        let shift = match m % 10 {
            3 => 1.05,
            7 => 1.3,
            _ => 1.0,
        };
        let integer = m % 25 == 0;
        let mut series = |factor: f64| -> Vec<f64> {
            (0..POINTS)
                .map(|_| {
                    if rng.uniform() < 0.02 {
                        return f64::NAN;
                    }
                    let v = (100.0 + 10.0 * rng.normal()) * factor;
                    if integer { (v / 10.0).round() } else { v }
                })
                .collect()
        };
        let control = series(1.0);
        let experiment = series(shift);
        pairs.push(MetricSetPair {
            name,
            control,
            experiment,
            ..Default::default()
        });
    }
    (config, pairs)
}

const THRESHOLDS: Thresholds = Thresholds {
    pass: 95.0,
    marginal: 75.0,
};

fn dump(path: &str, config: &JudgeConfig, pairs: &[MetricSetPair]) {
    let metrics: Vec<_> = config
        .metrics
        .iter()
        .map(|m| {
            json!({"name": m.name, "groups": m.groups,
                   "analysisConfigurations": {"canary": {"direction": "increase"}}})
        })
        .collect();
    let nan = |v: &Vec<f64>| -> Vec<serde_json::Value> {
        v.iter()
            .map(|x| if x.is_nan() { json!(null) } else { json!(x) })
            .collect()
    };
    let data: serde_json::Map<String, serde_json::Value> = pairs
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                json!({"control": nan(&p.control), "experiment": nan(&p.experiment)}),
            )
        })
        .collect();
    let request = json!({
        "config": {"name": "bench", "metrics": metrics, "classifier": {"groupWeights": {}}},
        "thresholds": {"pass": THRESHOLDS.pass, "marginal": THRESHOLDS.marginal},
        "data": data,
    });
    std::fs::write(path, request.to_string()).expect("write the bench request");
}

fn bench(c: &mut Criterion) {
    let (config, pairs) = dataset();
    if let Ok(path) = std::env::var("CANARY_BENCH_DUMP") {
        dump(&path, &config, &pairs);
    }
    let expected = judge(&config, THRESHOLDS, &pairs).expect("judges");
    let highs = expected
        .results
        .iter()
        .filter(|r| r.classification == Classification::High)
        .count();
    assert!(highs >= METRICS / 10, "the 30 % shifts are High ({highs})");
    c.bench_function("canary_judge_100_metrics_x_1000_points", |b| {
        b.iter(|| {
            let result = judge(black_box(&config), THRESHOLDS, black_box(&pairs)).expect("judges");
            assert_eq!(result.score, expected.score);
            result
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = bench
}
criterion_main!(benches);
