//! The seed's three verification scenarios and the issue's failure cases, end to end over real
//! sockets: client → gateway → sample ext-authz service (HTTP or gRPC) → demo backend.

mod common;

use common::*;
use std::sync::atomic::Ordering;

const CONFIG: &str = r#"
listeners: [{ address: "127.0.0.1:0" }]
backends: [{ name: bookinfo, endpoints: ["{{backend}}"] }]
routes: [{ backend: bookinfo }]
extensionProviders:
  - name: ext-authz-grpc
    envoyExtAuthzGrpc: { service: "{{grpc_host}}", port: {{grpc_port}}, timeout: "{{timeout}}", failOpen: {{fail_open}}, statusOnError: "{{status_on_error}}" }
  - name: ext-authz-http
    envoyExtAuthzHttp:
      service: "{{http_host}}"
      port: {{http_port}}
      timeout: "{{timeout}}"
      failOpen: {{fail_open}}
      statusOnError: "{{status_on_error}}"
      includeRequestHeadersInCheck: ["x-ext-authz"]
      headersToUpstreamOnAllow: ["x-ext-authz-check-result", "x-ext-authz-additional-header-override"]
authorizationPolicies:
  - name: ext-authz
    action: CUSTOM
    provider: { name: "{{provider}}" }
    rules: [{ to: [{ operation: { paths: ["/productpage", "/echo/*"] } }] }]
"#;

const DENY_BODY: &str = "denied by ext_authz for not found header `x-ext-authz: allow` in the request";

struct Setup {
    provider: &'static str,
    grpc: std::net::SocketAddr,
    http: std::net::SocketAddr,
    timeout: &'static str,
    fail_open: bool,
    status_on_error: u16,
}

async fn gateway_for(s: &Setup, backend: std::net::SocketAddr) -> authgate_proxy::Gateway {
    gateway(
        CONFIG,
        &[
            ("backend", backend.to_string()),
            ("grpc_host", s.grpc.ip().to_string()),
            ("grpc_port", s.grpc.port().to_string()),
            ("http_host", s.http.ip().to_string()),
            ("http_port", s.http.port().to_string()),
            ("provider", s.provider.to_owned()),
            ("timeout", s.timeout.to_owned()),
            ("fail_open", s.fail_open.to_string()),
            ("status_on_error", s.status_on_error.to_string()),
        ],
    )
    .await
}

fn setup(provider: &'static str, sample: &Sample) -> Setup {
    Setup {
        provider,
        grpc: sample.authz_grpc,
        http: sample.authz_http,
        timeout: "5s",
        fail_open: false,
        status_on_error: 403,
    }
}

fn checks(sample: &Sample) -> u64 {
    sample.counters.http.load(Ordering::SeqCst) + sample.counters.grpc.load(Ordering::SeqCst)
}

async fn seed_scenarios(provider: &'static str) {
    let sample = start_sample().await;
    let gw = gateway_for(&setup(provider, &sample), sample.backend).await;
    let at = gw_addr(&gw);

    // Scenario 1: a path outside the match rules is never checked.
    let r = get(at, "/api/v1/products", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json"))
    );
    assert_eq!(checks(&sample), 0, "no authz call for a non-matching path");

    // Scenario 2: denied, with the service's status, header and body.
    let r = get(at, "/productpage", &[("x-ext-authz", "deny")]).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.header("x-ext-authz-check-result"), Some("denied"));
    assert_eq!(r.text(), DENY_BODY);
    assert_eq!(checks(&sample), 1);

    // Scenario 3: allowed; the backend answered and saw the service's verdict header.
    let r = get(at, "/productpage", &[("x-ext-authz", "allow")]).await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/html"))
    );
    assert!(r.body.len() > 2000, "the product page is a few KB");
    assert_eq!(r.header("server"), Some("authgate"));
    let echo = get(at, "/echo/x", &[("x-ext-authz", "allow")]).await;
    assert_eq!(echo.status, 200);
    assert_eq!(
        backend_header(&echo, "x-ext-authz-check-result"),
        vec!["allowed".to_owned()]
    );
    assert_eq!(checks(&sample), 3);
    gw.shutdown(std::time::Duration::from_secs(1)).await;
}

/// Every value the backend received for `name`, from the /echo endpoint's JSON.
fn backend_header(r: &Reply, name: &str) -> Vec<String> {
    let v = r.json();
    let Some(headers) = v.get("headers").and_then(|h| h.as_array()) else {
        panic!("echo without headers: {v}");
    };
    headers
        .iter()
        .filter_map(|pair| {
            let pair = pair.as_array()?;
            (pair.first()?.as_str()?.eq_ignore_ascii_case(name))
                .then(|| pair.get(1)?.as_str().map(str::to_owned))?
        })
        .collect()
}

#[tokio::test]
async fn seed_scenarios_grpc() {
    seed_scenarios("ext-authz-grpc").await;
}

#[tokio::test]
async fn seed_scenarios_http() {
    seed_scenarios("ext-authz-http").await;
}

async fn smuggled_verdict_header(provider: &'static str) {
    let sample = start_sample().await;
    let gw = gateway_for(&setup(provider, &sample), sample.backend).await;
    let at = gw_addr(&gw);
    let r = get(
        at,
        "/echo/x",
        &[("x-ext-authz", "deny"), ("x-ext-authz-check-result", "allowed")],
    )
    .await;
    assert_eq!(r.status, 403, "a client-sent verdict header changes nothing");
    let r = get(
        at,
        "/echo/x",
        &[
            ("x-ext-authz", "allow"),
            ("x-ext-authz-check-result", "allowed-by-client"),
            ("x-ext-authz-check-result", "second-copy"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        backend_header(&r, "x-ext-authz-check-result"),
        vec!["allowed".to_owned()]
    );
}

#[tokio::test]
async fn client_cannot_smuggle_verdict_grpc() {
    smuggled_verdict_header("ext-authz-grpc").await;
}

#[tokio::test]
async fn client_cannot_smuggle_verdict_http() {
    smuggled_verdict_header("ext-authz-http").await;
}

async fn authz_down(provider: &'static str) {
    let sample = start_sample().await;
    let dead = closed_port().await;
    let mut s = Setup {
        grpc: dead,
        http: dead,
        ..setup(provider, &sample)
    };
    let gw = gateway_for(&s, sample.backend).await;
    let r = get(gw_addr(&gw), "/productpage", &[("x-ext-authz", "allow")]).await;
    assert_eq!(r.status, 403, "fail closed when the authz service is down");
    assert!(r.body.is_empty(), "statusOnError replies have an empty body");
    let r = get(gw_addr(&gw), "/api/v1/products", &[]).await;
    assert_eq!(r.status, 200, "unprotected paths still work");

    s.fail_open = true;
    let gw = gateway_for(&s, sample.backend).await;
    let r = get(gw_addr(&gw), "/productpage", &[]).await;
    assert_eq!(r.status, 200, "failOpen lets the request through");
}

#[tokio::test]
async fn authz_down_fails_closed_grpc() {
    authz_down("ext-authz-grpc").await;
}

#[tokio::test]
async fn authz_down_fails_closed_http() {
    authz_down("ext-authz-http").await;
}

async fn authz_slow(provider: &'static str) {
    let sample = start_sample().await;
    let hole = black_hole().await;
    let s = Setup {
        grpc: hole,
        http: hole,
        timeout: "300ms",
        status_on_error: 503,
        ..setup(provider, &sample)
    };
    let gw = gateway_for(&s, sample.backend).await;
    let r = get(gw_addr(&gw), "/productpage", &[("x-ext-authz", "allow")]).await;
    assert_eq!(r.status, 503, "timeout → statusOnError");
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn authz_timeout_is_status_on_error_grpc() {
    authz_slow("ext-authz-grpc").await;
}

#[tokio::test]
async fn authz_timeout_is_status_on_error_http() {
    authz_slow("ext-authz-http").await;
}

#[tokio::test]
async fn no_route_is_404_without_a_check() {
    let sample = start_sample().await;
    let gw = gateway(
        "listeners: [{address: \"127.0.0.1:0\"}]\nbackends: [{name: b, endpoints: [\"{{b}}\"]}]\nroutes: [{backend: b, match: {prefix: /api}}]\nextensionProviders: [{name: g, envoyExtAuthzGrpc: {service: \"{{g}}\", port: {{gp}}}}]\nauthorizationPolicies: [{name: all, action: CUSTOM, provider: {name: g}, rules: [{}]}]\n",
        &[
            ("b", sample.backend.to_string()),
            ("g", sample.authz_grpc.ip().to_string()),
            ("gp", sample.authz_grpc.port().to_string()),
        ],
    )
    .await;
    let r = get(gw_addr(&gw), "/productpage", &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(checks(&sample), 0);
}

#[tokio::test]
async fn buffered_body_is_checked_and_forwarded_whole() {
    let sample = start_sample().await;
    let gw = gateway(
        "listeners: [{address: \"127.0.0.1:0\"}]\nbackends: [{name: b, endpoints: [\"{{b}}\"]}]\nroutes: [{backend: b}]\nextensionProviders: [{name: g, envoyExtAuthzGrpc: {service: \"{{g}}\", port: {{gp}}, includeRequestBodyInCheck: {maxRequestBytes: 8, allowPartialMessage: true}}}]\nauthorizationPolicies: [{name: all, action: CUSTOM, provider: {name: g}, rules: [{}]}]\n",
        &[
            ("b", sample.backend.to_string()),
            ("g", sample.authz_grpc.ip().to_string()),
            ("gp", sample.authz_grpc.port().to_string()),
        ],
    )
    .await;
    for body in [&b"tiny"[..], b"0123456789abcdef0123456789"] {
        let r = send(
            gw_addr(&gw),
            "POST",
            "/echo/body",
            &[("x-ext-authz", "allow")],
            body,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.json().get("body_len").and_then(serde_json::Value::as_u64),
            Some(body.len() as u64)
        );
    }
}
