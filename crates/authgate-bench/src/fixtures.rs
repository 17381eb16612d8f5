//! Inputs shared by the criterion benches and the callgrind/DHAT driver: the seed gateway
//! configuration (plus a larger, realistic policy set), a request as the proxy sees it, and
//! minimal in-process authz services (gRPC and HTTP) that answer "allow" at almost no cost,
//! so a check round trip measures the *client* side (CheckRequest building, encoding, h2/HTTP
//! framing, response parsing) rather than the sample service's logging.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::SystemTime;

use anyhow::{Context, Result};
use authgate_authz::{CheckRequestParts, ProviderClient};
use authgate_config::{Config, Provider};
use authgate_policy::RequestAttributes;
use authgate_proto::auth::authorization_server::{Authorization, AuthorizationServer};
use authgate_proto::auth::check_response::HttpResponse;
use authgate_proto::auth::{CheckRequest, CheckResponse, OkHttpResponse};
use authgate_proto::core::{HeaderValue as PbHeaderValue, HeaderValueOption};
use authgate_proto::rpc;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// The seed configuration of `examples/seed-grpc.yaml` with both providers defined (the
/// policy sends `/productpage` to `provider`), authz ports filled in.
pub fn seed_yaml(provider: &str, grpc_port: u16, http_port: u16) -> String {
    format!(
        r#"
listeners: [{{ name: http, address: "127.0.0.1:0" }}]
backends: [{{ name: bookinfo, endpoints: ["127.0.0.1:9080"] }}]
routes: [{{ name: bookinfo, match: {{ prefix: / }}, backend: bookinfo }}]
extensionProviders:
  - name: ext-authz-grpc
    envoyExtAuthzGrpc: {{ service: 127.0.0.1, port: {grpc_port}, timeout: 10s }}
  - name: ext-authz-http
    envoyExtAuthzHttp:
      service: 127.0.0.1
      port: {http_port}
      timeout: 10s
      includeRequestHeadersInCheck: ["x-ext-authz"]
      headersToUpstreamOnAllow: ["x-ext-authz-check-result"]
authorizationPolicies:
  - name: ext-authz
    action: CUSTOM
    provider: {{ name: {provider} }}
    rules:
      - to: [{{ operation: {{ paths: ["/productpage"] }} }}]
admin: {{ address: disabled }}
accessLog: {{ format: "off" }}
"#
    )
}

/// The seed policy plus `extra` ordinary ALLOW/DENY policies of the shapes real gateways
/// carry (path prefixes, methods, hosts, header conditions, IP blocks), none of which denies
/// the benchmark request — so evaluation walks all of them.
pub fn many_policies_yaml(extra: usize) -> String {
    let mut s = seed_yaml("ext-authz-grpc", 9000, 8000);
    for i in 0..extra {
        let p = match i % 4 {
            0 => format!(
                r#"
  - name: deny-admin-{i}
    action: DENY
    rules:
      - to: [{{ operation: {{ paths: ["/admin{i}/*", "/internal{i}"], methods: ["POST", "PUT"] }} }}]
"#
            ),
            1 => format!(
                r#"
  - name: deny-bad-ips-{i}
    action: DENY
    rules:
      - from: [{{ source: {{ ipBlocks: ["203.0.{}.0/24", "198.51.100.{}/32"] }} }}]
"#,
                i % 250,
                i % 250
            ),
            2 => format!(
                r#"
  - name: deny-header-{i}
    action: DENY
    rules:
      - when: [{{ key: "request.headers[x-block-{i}]", values: ["yes", "true"] }}]
"#
            ),
            _ => format!(
                r#"
  - name: allow-site-{i}
    action: ALLOW
    rules:
      - to: [{{ operation: {{ hosts: ["site{i}.example.com", "*.example.org", "127.0.0.1*"], paths: ["/*"] }} }}]
"#
            ),
        };
        // Inserted into the authorizationPolicies list (it precedes `admin:` in seed_yaml).
        let at = s.find("admin:").unwrap_or(s.len());
        s.insert_str(at, p.trim_start_matches('\n'));
    }
    s
}

/// Parses and validates gateway YAML held in memory.
pub fn config(yaml: &str) -> Result<Config> {
    authgate_config::parse(yaml, "bench.yaml", Path::new("."), &[]).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Request headers as the proxy holds them when it evaluates policies and builds the check:
/// what wrk/curl send plus what the connection manager added.
pub fn request_headers(authz: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("user-agent", HeaderValue::from_static("curl/7.88.1"));
    h.insert("accept", HeaderValue::from_static("*/*"));
    h.insert(
        "x-ext-authz",
        HeaderValue::from_str(authz).unwrap_or(HeaderValue::from_static("allow")),
    );
    h.insert(
        "x-request-id",
        HeaderValue::from_static("6f1c4a52-9d3e-4b7a-8c21-0e5f9a7b3d44"),
    );
    h.insert("x-forwarded-for", HeaderValue::from_static("127.0.0.1"));
    h.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    h
}

pub const PEER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 41234);
pub const LOCAL: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);

/// The policy input for `GET http://127.0.0.1:8080{path}`.
pub fn attributes<'a>(path: &'a str, headers: &'a HeaderMap) -> RequestAttributes<'a> {
    RequestAttributes {
        method: "GET",
        path,
        path_and_query: path,
        authority: "127.0.0.1:8080",
        port: LOCAL.port(),
        source_ip: PEER.ip(),
        remote_ip: PEER.ip(),
        destination_ip: LOCAL.ip(),
        headers,
        sni: None,
        principal: None,
    }
}

/// The check input for `GET http://127.0.0.1:8080{path_and_query}`.
pub fn check_parts<'a>(path_and_query: &'a str, headers: &'a HeaderMap) -> CheckRequestParts<'a> {
    CheckRequestParts {
        method: &Method::GET,
        path_and_query,
        authority: "127.0.0.1:8080",
        scheme: "http",
        version: http::Version::HTTP_11,
        headers,
        source: PEER,
        destination: LOCAL,
        stream_id: 1,
        request_time: SystemTime::UNIX_EPOCH,
        body: None,
        principal: None,
        sni: None,
        context_extensions: &[],
    }
}

/// The configuration of provider `name`.
pub fn provider_config<'c>(config: &'c Config, name: &str) -> Result<&'c Provider> {
    config
        .providers
        .iter()
        .find(|p| p.name == name)
        .with_context(|| format!("no provider {name}"))
}

/// The provider client for `name` from `config` (inside a tokio runtime).
pub fn provider(config: &Config, name: &str) -> Result<ProviderClient> {
    let p = provider_config(config, name)?;
    Ok(ProviderClient::new(p, p.target(&config.static_hosts))?)
}

/// A gRPC authz service that allows everything, adding one upstream header (like the sample's
/// `x-ext-authz-check-result: allowed`), and does nothing else.
struct AllowAll;

#[tonic::async_trait]
impl Authorization for AllowAll {
    async fn check(
        &self,
        _request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        Ok(tonic::Response::new(CheckResponse {
            status: Some(rpc::Status {
                code: 0,
                ..Default::default()
            }),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers: vec![HeaderValueOption {
                    header: Some(PbHeaderValue {
                        key: "x-ext-authz-check-result".into(),
                        value: "allowed".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            })),
            ..Default::default()
        }))
    }
}

/// Serves [`AllowAll`] over h2c on an ephemeral loopback port (tasks on the current runtime).
pub async fn spawn_grpc_allow_all() -> Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let service = TowerToHyperService::new(AuthorizationServer::new(AllowAll));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let service = service.clone();
            tokio::spawn(async move {
                let builder = Builder::new(TokioExecutor::new()).http2_only();
                let _ = builder.serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    Ok(addr)
}

/// An HTTP authz service that answers 200 with `x-ext-authz-check-result: allowed`.
pub async fn spawn_http_allow_all() -> Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|_req| async {
                    let mut resp = Response::new(Full::new(Bytes::new()));
                    resp.headers_mut()
                        .insert("x-ext-authz-check-result", HeaderValue::from_static("allowed"));
                    Ok::<_, Infallible>(resp)
                });
                let builder = Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_configs_validate_and_compile() {
        for yaml in [seed_yaml("ext-authz-grpc", 9000, 8000), many_policies_yaml(40)] {
            let cfg = config(&yaml).expect("valid config");
            let engine = authgate_policy::PolicyEngine::compile(&cfg).expect("compiles");
            let headers = request_headers("allow");
            let v = engine.evaluate(&attributes("/productpage", &headers));
            assert_eq!(v.providers.len(), 1, "the seed policy selects one provider");
            assert!(v.local.is_allow(), "no bench policy denies the bench request");
            let v = engine.evaluate(&attributes("/api/v1/products", &headers));
            assert!(v.providers.is_empty());
        }
    }

    #[test]
    fn check_round_trips_against_the_minimal_services() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let grpc = spawn_grpc_allow_all().await.expect("grpc");
            let http = spawn_http_allow_all().await.expect("http");
            let cfg = config(&seed_yaml("ext-authz-grpc", grpc.port(), http.port())).expect("config");
            let headers = request_headers("allow");
            for name in ["ext-authz-grpc", "ext-authz-http"] {
                let client = provider(&cfg, name).expect("client");
                let d = client.check(&check_parts("/productpage", &headers)).await;
                assert!(matches!(d, authgate_authz::Decision::Allow(_)), "{name}: {d:?}");
            }
        });
    }
}
