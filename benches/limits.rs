//! Refusing deep nesting: 200 KB of `[`, of `{` and of `- ` through the YAML loader, which
//! scans the depth before parsing. Target: under 50 ms each in a release build (the parser
//! alone took about a microsecond per bracket, its cost per token growing with the depth).
//!
//! The end-to-end figures (the `bowline` binary on hostile repositories, policies over their
//! memory and time limits included) come from `scripts/bench-limits.sh`.
//!
//! Run: `cargo bench --bench limits`.

use std::hint::black_box;

use bowline::config::yaml;
use criterion::{Criterion, criterion_group, criterion_main};

fn nesting(c: &mut Criterion) {
    let cases = [
        ("200 KB of [", "[".repeat(200_000)),
        ("200 KB of {", "{".repeat(200_000)),
        ("200 KB of '- '", "- ".repeat(100_000)),
        (
            "600 nested block mappings",
            (0..600)
                .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
                .collect(),
        ),
    ];
    let mut group = c.benchmark_group("nesting refused");
    for (name, text) in &cases {
        group.bench_function(*name, |b| {
            b.iter(|| {
                let e = yaml::parse_stream(black_box(text)).expect_err("too deep");
                assert!(e.message.contains("128 levels"), "{}", e.message);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, nesting);
criterion_main!(benches);
