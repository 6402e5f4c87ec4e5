//! Load + validate + render of synthetic config repositories (100 and 1000 apps, each with six
//! templated manifests and two environments).
//!
//! `full/<apps>` measures what `bowline validate` does: `Snapshot::from_dir`, `config::load`
//! (parse, schema, cross-document checks) and `render::render_repo` for every app and
//! environment. Every iteration checks that no error was reported, so a generator or parser
//! regression fails the bench instead of timing an early exit. `phase/*` splits the 1000-app
//! case into its three steps to show where the time goes.
//!
//! Run: `cargo bench --bench load_render` (a few minutes on 2 cores).

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use bowline::config::{self, ConfigRepo};
use bowline::diagnostic::Diagnostic;
use bowline::render::{self, Rendered};
use bowline::source::{Limits, Snapshot};
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};

#[path = "support/synthetic.rs"]
mod synthetic;

/// Environments every synthetic app deploys to.
const ENVIRONMENTS: usize = 2;
/// Rendered objects per app and environment (one per manifest).
const OBJECTS_PER_RENDER: usize = 6;

/// What one full run produced, kept alive until it is passed to `black_box`.
struct Outcome {
    repo: ConfigRepo,
    rendered: Vec<Rendered>,
}

/// Snapshot + load + render, panicking on any error diagnostic or on a render count that does
/// not match the generated repository.
fn load_and_render(root: &Path, apps: usize) -> Outcome {
    let (snapshot, mut diagnostics) =
        Snapshot::from_dir(root, &Limits::default()).expect("synthetic repository is readable");
    let (repo, config_diagnostics) = config::load(&snapshot);
    diagnostics.extend(config_diagnostics);
    let rendered = render::render_repo(&repo, None, None);
    check(&diagnostics, &rendered, apps);
    Outcome { repo, rendered }
}

fn check(diagnostics: &[Diagnostic], rendered: &[Rendered], apps: usize) {
    let errors: Vec<String> = diagnostics
        .iter()
        .filter(|d| d.is_error())
        .chain(
            rendered
                .iter()
                .filter_map(|r| r.result.as_ref().err())
                .flatten(),
        )
        .map(ToString::to_string)
        .collect();
    assert!(
        errors.is_empty(),
        "synthetic repository has {} errors, first: {}",
        errors.len(),
        errors[0]
    );
    assert_eq!(
        rendered.len(),
        apps * ENVIRONMENTS,
        "app/environment renders"
    );
    let objects: usize = rendered
        .iter()
        .filter_map(|r| r.result.as_ref().ok())
        .map(Vec::len)
        .sum();
    assert_eq!(objects, apps * ENVIRONMENTS * OBJECTS_PER_RENDER, "objects");
}

fn generate(apps: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary directory");
    let summary = synthetic::generate(dir.path(), apps).expect("synthetic repository written");
    eprintln!(
        "generated {} apps: {} files, {:.1} MiB",
        summary.apps,
        summary.files,
        summary.bytes as f64 / (1024.0 * 1024.0)
    );
    dir
}

fn full(c: &mut Criterion) {
    let mut group = c.benchmark_group("full");
    for apps in [100, 1000] {
        let dir = generate(apps);
        // Fail before measuring, with the errors, if the input is not valid.
        drop(load_and_render(dir.path(), apps));
        // Flat sampling: every sample runs the same number of iterations, which suits runs of
        // 50-700 ms (linear sampling would need 55 iterations for 10 samples).
        group.sampling_mode(SamplingMode::Flat);
        group.sample_size(if apps >= 1000 { 10 } else { 20 });
        group.measurement_time(Duration::from_secs(if apps >= 1000 { 15 } else { 8 }));
        group.throughput(Throughput::Elements(apps as u64));
        group.bench_with_input(BenchmarkId::from_parameter(apps), &apps, |b, &apps| {
            b.iter(|| {
                let outcome = load_and_render(dir.path(), apps);
                black_box((&outcome.repo, &outcome.rendered));
                outcome
            });
        });
    }
    group.finish();
}

fn phases(c: &mut Criterion) {
    let apps = 1000;
    let dir = generate(apps);
    let limits = Limits::default();
    let mut group = c.benchmark_group("phase");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));

    group.bench_function("snapshot_1000", |b| {
        b.iter(|| Snapshot::from_dir(black_box(dir.path()), &limits).expect("readable"));
    });

    let (snapshot, _) = Snapshot::from_dir(dir.path(), &limits).expect("readable");
    group.bench_function("load_1000", |b| {
        b.iter(|| config::load(black_box(&snapshot)));
    });

    let (repo, diagnostics) = config::load(&snapshot);
    let rendered = render::render_repo(&repo, None, None);
    check(&diagnostics, &rendered, apps);
    drop(rendered);
    group.bench_function("render_1000", |b| {
        b.iter(|| render::render_repo(black_box(&repo), None, None));
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(2));
    targets = full, phases
}
criterion_main!(benches);
