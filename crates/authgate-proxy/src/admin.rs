//! The admin listener (default 127.0.0.1:15000, as Envoy's): `/ready`, `/healthz`,
//! `/stats/prometheus`, `/config_dump`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use authgate_config::{Config, ProviderKind};
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::server::Shared;

pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            () = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(_) => continue,
            },
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, std::convert::Infallible>(route(&req, &shared)) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn route<B>(req: &Request<B>, shared: &Shared) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/ready" => {
            if shared.draining.load(Ordering::Relaxed) {
                text(StatusCode::SERVICE_UNAVAILABLE, "DRAINING\n")
            } else {
                text(StatusCode::OK, "LIVE\n")
            }
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/stats/prometheus" | "/metrics" => {
            let mut r = text(StatusCode::OK, &shared.metrics.encode());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        "/config_dump" => {
            let snap = shared.snapshot.load();
            let mut r = text(StatusCode::OK, &config_dump(&snap.config).to_string());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            r
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /ready /healthz /stats/prometheus /config_dump\n",
        ),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::copy_from_slice(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The effective configuration. Values that may hold credentials (static headers added to
/// check requests) are redacted.
pub fn config_dump(c: &Config) -> serde_json::Value {
    json!({
        "files": c.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
        "listeners": c.listeners.iter().map(|l| json!({
            "name": l.name,
            "address": l.address.to_string(),
            "tls": l.tls.as_ref().map(|t| json!({
                "certificates": t.certificates.iter().map(|c| c.cert_file.display().to_string()).collect::<Vec<_>>(),
                "clientCaFile": t.client_ca_file.as_ref().map(|f| f.display().to_string()),
                "requireClientCertificate": t.require_client_certificate,
            })),
        })).collect::<Vec<_>>(),
        "routes": c.routes.iter().map(|r| json!({
            "name": r.name,
            "hosts": r.hosts.iter().map(|h| format!("{h:?}")).collect::<Vec<_>>(),
            "path": format!("{:?}", r.path),
            "backend": c.backends.get(r.backend).map(|b| b.name.clone()),
            "timeoutMs": r.timeout.map(|t| t.as_millis() as u64),
        })).collect::<Vec<_>>(),
        "backends": c.backends.iter().map(|b| json!({
            "name": b.name,
            "endpoints": b.endpoints.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "protocol": format!("{:?}", b.protocol),
        })).collect::<Vec<_>>(),
        "extensionProviders": c.providers.iter().map(|p| {
            let mut v = json!({
                "name": p.name,
                "service": p.service,
                "port": p.port,
                "timeoutMs": p.timeout.as_millis() as u64,
                "failOpen": p.fail_open,
                "statusOnError": p.status_on_error,
                "includeRequestBodyInCheck": p.body.map(|b| json!({
                    "maxRequestBytes": b.max_request_bytes,
                    "allowPartialMessage": b.allow_partial_message,
                    "packAsBytes": b.pack_as_bytes,
                })),
            });
            match &p.kind {
                ProviderKind::Grpc => v["kind"] = json!("envoyExtAuthzGrpc"),
                ProviderKind::Http(h) => {
                    v["kind"] = json!("envoyExtAuthzHttp");
                    v["pathPrefix"] = json!(h.path_prefix);
                    v["includeRequestHeadersInCheck"] = json!(patterns(&h.include_request_headers));
                    v["includeAdditionalHeadersInCheck"] = json!(h.additional_headers.iter().map(|(k, _)| (k.clone(), "[redacted]")).collect::<std::collections::BTreeMap<_, _>>());
                    v["headersToUpstreamOnAllow"] = json!(patterns(&h.headers_to_upstream_on_allow));
                    v["headersToDownstreamOnAllow"] = json!(patterns(&h.headers_to_downstream_on_allow));
                    v["headersToDownstreamOnDeny"] = json!(patterns(&h.headers_to_downstream_on_deny));
                }
            }
            v
        }).collect::<Vec<_>>(),
        "authorizationPolicies": c.policies.iter().map(|p| json!({
            "name": p.name,
            "namespace": p.namespace,
            "action": format!("{:?}", p.action()).to_uppercase(),
            "provider": p.spec.provider.as_ref().map(|x| x.name.clone()),
            "rules": p.spec.rules.as_ref().map(Vec::len),
            "origin": p.origin.to_string(),
            "dryRun": p.dry_run(),
        })).collect::<Vec<_>>(),
        "pathNormalization": format!("{:?}", c.path_normalization),
        "gateway": {
            "labels": c.gateway.labels,
            "namespace": c.gateway.namespace,
            "rootNamespace": c.gateway.root_namespace,
            "numTrustedProxies": c.gateway.num_trusted_proxies,
        },
    })
}

fn patterns(p: &[authgate_config::HeaderPattern]) -> Vec<String> {
    p.iter()
        .map(|p| match p {
            authgate_config::HeaderPattern::Exact(s) => s.clone(),
            authgate_config::HeaderPattern::Prefix(s) => format!("{s}*"),
            authgate_config::HeaderPattern::Suffix(s) => format!("*{s}"),
        })
        .collect()
}
