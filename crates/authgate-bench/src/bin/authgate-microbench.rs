//! `authgate-microbench OP ITERS`: runs one hot-path operation `ITERS` times after its setup,
//! on one thread, for instruction counting (`valgrind --tool=callgrind`) and allocation
//! counting (`valgrind --tool=dhat`). `bench/callgrind` runs every op at two iteration counts
//! and divides the difference, so setup cost cancels out exactly: instructions and heap
//! blocks *per operation*, repeatable on a noisy machine.
//!
//! `authgate-microbench list` prints the ops.

use std::hint::black_box;
use std::time::Instant;

use anyhow::{Result, bail};
use authgate_authz::CheckPreview;
use authgate_authz::check_encode::encode_grpc_check_request;
use authgate_bench::fixtures;
use authgate_config::PathNormalization;
use authgate_policy::{PolicyEngine, normalize_path};
use bytes::BytesMut;

const OPS: &[(&str, &str)] = &[
    (
        "policy-compile-seed",
        "PolicyEngine::compile of the seed configuration",
    ),
    (
        "policy-eval-seed-custom",
        "evaluate GET /productpage on the seed policies (CUSTOM matches)",
    ),
    (
        "policy-eval-seed-bypass",
        "evaluate GET /api/v1/products on the seed policies (nothing matches)",
    ),
    (
        "policy-eval-40-custom",
        "evaluate GET /productpage with 40 extra ALLOW/DENY policies",
    ),
    ("normalize-path", "normalize_path of /productpage?id=1 under BASE"),
    (
        "check-build-grpc",
        "CheckRequest wire bytes + gRPC prefix written straight from the request (check_encode), as a gRPC check sends them",
    ),
    (
        "check-build-grpc-struct",
        "ProviderClient::preview (prost CheckRequest struct) + protobuf encoding, as `explain` builds it",
    ),
    (
        "check-build-http",
        "ProviderClient::preview (HTTP check request building), HTTP provider",
    ),
    (
        "check-grpc",
        "ProviderClient::check round trip, gRPC, to a minimal in-process allow-all service",
    ),
    (
        "check-http",
        "ProviderClient::check round trip, HTTP, to a minimal in-process allow-all service",
    ),
];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (op, iters) = match args.as_slice() {
        [l] if l == "list" => {
            for (name, what) in OPS {
                println!("{name}\t{what}");
            }
            return Ok(());
        }
        [op, n] => (op.as_str(), n.parse::<u64>()?),
        _ => bail!("usage: authgate-microbench OP ITERS | list"),
    };
    let started = Instant::now();
    match op {
        "policy-compile-seed" => {
            let cfg = fixtures::config(&fixtures::seed_yaml("ext-authz-grpc", 9000, 8000))?;
            for _ in 0..iters {
                black_box(PolicyEngine::compile(black_box(&cfg)).ok());
            }
        }
        "policy-eval-seed-custom" | "policy-eval-seed-bypass" | "policy-eval-40-custom" => {
            let yaml = if op == "policy-eval-40-custom" {
                fixtures::many_policies_yaml(40)
            } else {
                fixtures::seed_yaml("ext-authz-grpc", 9000, 8000)
            };
            let cfg = fixtures::config(&yaml)?;
            let engine = PolicyEngine::compile(&cfg).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let headers = fixtures::request_headers("allow");
            let path = if op == "policy-eval-seed-bypass" {
                "/api/v1/products"
            } else {
                "/productpage"
            };
            for _ in 0..iters {
                black_box(engine.evaluate(black_box(&fixtures::attributes(path, &headers))));
            }
        }
        "normalize-path" => {
            for _ in 0..iters {
                black_box(normalize_path(black_box("/productpage?id=1"), PathNormalization::default()).ok());
            }
        }
        "check-build-grpc" => {
            // Exactly what `GrpcProvider::check` does before sending: a fresh buffer, the
            // framed message written into it, frozen into the request body.
            let cfg = fixtures::config(&fixtures::seed_yaml("ext-authz-grpc", 9000, 8000))?;
            let body = fixtures::provider_config(&cfg, "ext-authz-grpc")?.body;
            let headers = fixtures::request_headers("allow");
            let parts = fixtures::check_parts("/productpage", &headers);
            for _ in 0..iters {
                let mut buf = BytesMut::new();
                encode_grpc_check_request(black_box(&parts), body.as_ref(), &mut buf)?;
                black_box(buf.freeze());
            }
        }
        "check-build-grpc-struct" | "check-build-http" => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let _guard = rt.enter();
            let cfg = fixtures::config(&fixtures::seed_yaml("ext-authz-grpc", 9000, 8000))?;
            let name = if op == "check-build-grpc-struct" {
                "ext-authz-grpc"
            } else {
                "ext-authz-http"
            };
            let client = fixtures::provider(&cfg, name)?;
            let headers = fixtures::request_headers("allow");
            let parts = fixtures::check_parts("/productpage", &headers);
            for _ in 0..iters {
                match client
                    .preview(black_box(&parts))
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                {
                    CheckPreview::Grpc(req) => {
                        black_box(prost::Message::encode_to_vec(&*req));
                    }
                    CheckPreview::Http(req) => {
                        black_box(req);
                    }
                }
            }
        }
        "check-grpc" | "check-http" => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let grpc = fixtures::spawn_grpc_allow_all().await?;
                let http = fixtures::spawn_http_allow_all().await?;
                let cfg = fixtures::config(&fixtures::seed_yaml("ext-authz-grpc", grpc.port(), http.port()))?;
                let name = if op == "check-grpc" {
                    "ext-authz-grpc"
                } else {
                    "ext-authz-http"
                };
                let client = fixtures::provider(&cfg, name)?;
                let headers = fixtures::request_headers("allow");
                let parts = fixtures::check_parts("/productpage", &headers);
                // Connect and warm the pools outside the counted difference.
                for _ in 0..10 {
                    black_box(client.check(&parts).await);
                }
                for _ in 0..iters {
                    let d = client.check(black_box(&parts)).await;
                    if !matches!(d, authgate_authz::Decision::Allow(_)) {
                        bail!("unexpected decision: {d:?}");
                    }
                }
                Ok(())
            })?;
        }
        other => bail!("unknown op {other:?} (see `authgate-microbench list`)"),
    }
    let ns = started.elapsed().as_nanos() as f64 / iters.max(1) as f64;
    eprintln!("{op}: {iters} iterations, {ns:.0} ns/op wall (including setup)");
    Ok(())
}
