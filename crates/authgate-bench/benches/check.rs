//! Wall-clock micro-benchmarks of one ext_authz check, as the proxy makes it: `CheckRequest`
//! (or HTTP check request) building from the downstream request, encoding, the pooled
//! connection round trip to a minimal in-process allow-all service, response parsing into a
//! `Decision`. The service side is deliberately trivial, so the numbers are the client's
//! (plus loopback). `check/build/*` measure the building alone: `check/build/grpc` the gRPC
//! message as `check` writes it (`check_encode`, straight from the request),
//! `check/build/grpc-struct` the prost struct of `ProviderClient::preview` plus its encoding,
//! `check/build/http` the HTTP check request of `preview`.
//!
//! `cargo bench -p authgate-bench --bench check`

use std::hint::black_box;

use authgate_authz::CheckPreview;
use authgate_authz::check_encode::encode_grpc_check_request;
use authgate_bench::fixtures;
use bytes::BytesMut;
use criterion::{Criterion, criterion_group, criterion_main};

fn check(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (grpc_client, http_client) = rt.block_on(async {
        let grpc = fixtures::spawn_grpc_allow_all().await.expect("grpc service");
        let http = fixtures::spawn_http_allow_all().await.expect("http service");
        let cfg = fixtures::config(&fixtures::seed_yaml("ext-authz-grpc", grpc.port(), http.port()))
            .expect("config");
        (
            fixtures::provider(&cfg, "ext-authz-grpc").expect("grpc client"),
            fixtures::provider(&cfg, "ext-authz-http").expect("http client"),
        )
    });
    let headers = fixtures::request_headers("allow");
    let parts = fixtures::check_parts("/productpage", &headers);

    let grpc_body = grpc_client.config().body;
    c.bench_function("check/build/grpc", |b| {
        b.iter(|| {
            let mut buf = BytesMut::new();
            let _ = encode_grpc_check_request(black_box(&parts), grpc_body.as_ref(), &mut buf);
            buf.freeze()
        })
    });
    c.bench_function("check/build/grpc-struct", |b| {
        b.iter(|| match grpc_client.preview(black_box(&parts)) {
            Ok(CheckPreview::Grpc(req)) => prost::Message::encode_to_vec(&*req).len(),
            _ => 0,
        })
    });
    c.bench_function("check/build/http", |b| {
        b.iter(|| http_client.preview(black_box(&parts)).is_ok())
    });
    c.bench_function("check/grpc/allow", |b| {
        b.iter(|| rt.block_on(grpc_client.check(black_box(&parts))))
    });
    c.bench_function("check/http/allow", |b| {
        b.iter(|| rt.block_on(http_client.check(black_box(&parts))))
    });
}

criterion_group!(benches, check);
criterion_main!(benches);
