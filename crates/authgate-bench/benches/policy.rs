//! Wall-clock micro-benchmarks of policy compilation and evaluation (criterion). For
//! repeatable numbers on a noisy machine use `bench/callgrind` (instruction counts).
//!
//! `cargo bench -p authgate-bench --bench policy`

use std::hint::black_box;

use authgate_bench::fixtures;
use authgate_config::PathNormalization;
use authgate_policy::{PolicyEngine, normalize_path};
use criterion::{Criterion, criterion_group, criterion_main};

fn policy(c: &mut Criterion) {
    let seed = fixtures::config(&fixtures::seed_yaml("ext-authz-grpc", 9000, 8000)).expect("seed config");
    let many = fixtures::config(&fixtures::many_policies_yaml(40)).expect("40-policy config");
    let headers = fixtures::request_headers("allow");

    c.bench_function("policy/compile/seed", |b| {
        b.iter(|| PolicyEngine::compile(black_box(&seed)).ok())
    });
    c.bench_function("policy/compile/40", |b| {
        b.iter(|| PolicyEngine::compile(black_box(&many)).ok())
    });

    let engine = PolicyEngine::compile(&seed).expect("compiles");
    let engine40 = PolicyEngine::compile(&many).expect("compiles");
    c.bench_function("policy/evaluate/seed/custom", |b| {
        let attrs = fixtures::attributes("/productpage", &headers);
        b.iter(|| engine.evaluate(black_box(&attrs)))
    });
    c.bench_function("policy/evaluate/seed/bypass", |b| {
        let attrs = fixtures::attributes("/api/v1/products", &headers);
        b.iter(|| engine.evaluate(black_box(&attrs)))
    });
    c.bench_function("policy/evaluate/40/custom", |b| {
        let attrs = fixtures::attributes("/productpage", &headers);
        b.iter(|| engine40.evaluate(black_box(&attrs)))
    });
    c.bench_function("policy/normalize_path/base", |b| {
        b.iter(|| normalize_path(black_box("/productpage?id=1"), PathNormalization::default()).ok())
    });
}

criterion_group!(benches, policy);
criterion_main!(benches);
