//! Issue 5 (production proxy core), end to end over real sockets on 127.0.0.1: h2c, a gRPC
//! backend behind authorization, graceful shutdown, authz connection reuse, upstream failures
//! and the admin metrics. TLS, WebSocket, smuggling and binary reload live in the sibling
//! `proxy_core_*.rs` files.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use authgate_proto::auth::attribute_context::{HttpRequest, Request as AttrRequest};
use authgate_proto::auth::authorization_client::AuthorizationClient;
use authgate_proto::auth::{AttributeContext, CheckRequest, check_response};
use authgate_proto::tonic;
use common::*;

const DENY_BODY: &str = "denied by ext_authz for not found header `x-ext-authz: allow` in the request";

fn host_port(a: SocketAddr) -> [(&'static str, String); 2] {
    [("h", a.ip().to_string()), ("p", a.port().to_string())]
}

// ---------------------------------------------------------------------------------------------
// 1. h2c prior knowledge through the gRPC authz provider.
// ---------------------------------------------------------------------------------------------

const H2C: &str = r#"
listeners: [{ address: "127.0.0.1:0" }]
backends: [{ name: bookinfo, endpoints: ["{{backend}}"] }]
routes: [{ name: all, backend: bookinfo }]
extensionProviders:
  - name: grpc
    envoyExtAuthzGrpc: { service: "{{gh}}", port: {{gp}} }
authorizationPolicies:
  - name: ext-authz
    action: CUSTOM
    provider: { name: grpc }
    rules: [{ to: [{ operation: { paths: ["/productpage", "/echo/*"] } }] }]
"#;

#[tokio::test]
async fn h2c_prior_knowledge_through_grpc_authz() {
    let sample = start_sample().await;
    let gw = gateway(
        H2C,
        &[
            ("backend", sample.backend.to_string()),
            ("gh", sample.authz_grpc.ip().to_string()),
            ("gp", sample.authz_grpc.port().to_string()),
        ],
    )
    .await;
    let tcp = within("connect", tokio::net::TcpStream::connect(gw_addr(&gw)))
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let mut h2 = h2_handshake(tcp).await;

    let allowed = h2_request(
        &mut h2,
        "GET",
        "http://bookinfo.example.com/productpage",
        &[("x-ext-authz", "allow")],
    )
    .await;
    assert_eq!(allowed.status, 200, "{}", allowed.text());
    assert!(
        allowed
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/html")),
        "the product page came from the backend"
    );
    assert!(allowed.body.len() > 2000);

    let denied = h2_request(
        &mut h2,
        "GET",
        "http://bookinfo.example.com/productpage",
        &[("x-ext-authz", "deny")],
    )
    .await;
    assert_eq!(denied.status, 403);
    assert_eq!(denied.text(), DENY_BODY);
    assert_eq!(denied.header("x-ext-authz-check-result"), Some("denied"));

    // Several streams at once on the same connection, allow and deny interleaved.
    let mut tasks = Vec::new();
    for i in 0..10 {
        let mut h2 = h2.clone();
        tasks.push(tokio::spawn(async move {
            let verdict = if i % 2 == 0 { "allow" } else { "deny" };
            let r = h2_request(
                &mut h2,
                "GET",
                &format!("http://bookinfo.example.com/echo/{i}"),
                &[("x-ext-authz", verdict)],
            )
            .await;
            (i, r)
        }));
    }
    for t in tasks {
        let (i, r) = within("stream", t).await.unwrap_or_else(|e| panic!("join: {e}"));
        if i % 2 == 0 {
            assert_eq!(r.status, 200, "stream {i}: {}", r.text());
            assert_eq!(
                echoed_header(&r, "x-ext-authz-check-result"),
                vec!["allowed".to_owned()]
            );
        } else {
            assert_eq!(r.status, 403, "stream {i}");
        }
    }
    assert_eq!(
        sample.counters.grpc.load(Ordering::SeqCst),
        12,
        "every request was checked over gRPC"
    );
    gw.shutdown(Duration::from_secs(1)).await;
}

// ---------------------------------------------------------------------------------------------
// 3. A gRPC backend (h2c upstream) behind the gateway, with the HTTP provider on its path.
// ---------------------------------------------------------------------------------------------

const GRPC_BACKEND: &str = r#"
listeners: [{ address: "127.0.0.1:0" }]
backends: [{ name: grpc-backend, endpoints: ["{{backend}}"], protocol: http2 }]
routes: [{ name: grpc, match: { prefix: /envoy.service.auth.v3.Authorization/ }, backend: grpc-backend }]
extensionProviders:
  - name: http
    envoyExtAuthzHttp:
      service: "{{hh}}"
      port: {{hp}}
      includeRequestHeadersInCheck: [x-ext-authz]
authorizationPolicies:
  - name: ext-authz
    action: CUSTOM
    provider: { name: http }
    rules: [{ to: [{ operation: { paths: ["/envoy.service.auth.v3.Authorization/*"] } }] }]
"#;

/// A second sample gRPC ext-authz server, used as an ordinary gRPC *backend*.
async fn grpc_backend() -> (SocketAddr, Arc<authgate_sample::CheckCounters>) {
    let l = bind().await;
    let a = addr(&l);
    let counters = Arc::new(authgate_sample::CheckCounters::default());
    tokio::spawn(authgate_sample::serve_ext_authz_grpc(
        l,
        Arc::new(authgate_sample::SampleConfig::default()),
        counters.clone(),
    ));
    (a, counters)
}

async fn grpc_client(to: SocketAddr) -> AuthorizationClient<tonic::transport::Channel> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{to}"))
        .unwrap_or_else(|e| panic!("endpoint: {e}"))
        .timeout(PATIENCE);
    let channel = within("grpc connect", endpoint.connect())
        .await
        .unwrap_or_else(|e| panic!("grpc connect: {e}"));
    AuthorizationClient::new(channel)
}

/// A CheckRequest whose embedded HTTP request carries `x-ext-authz: <inner>`: the backend's
/// own verdict, so the test can tell the backend's answer from anything the gateway made up.
fn check_request(inner: &str) -> CheckRequest {
    let mut http = HttpRequest {
        path: "/inner".into(),
        host: "inner.example.com".into(),
        ..Default::default()
    };
    http.headers.insert("x-ext-authz".into(), inner.into());
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(AttrRequest {
                http: Some(http),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

fn with_metadata(req: CheckRequest, allow: Option<&str>) -> tonic::Request<CheckRequest> {
    let mut r = tonic::Request::new(req);
    if let Some(v) = allow {
        r.metadata_mut().insert(
            "x-ext-authz",
            v.parse().unwrap_or_else(|e| panic!("metadata: {e:?}")),
        );
    }
    r
}

/// A unary Check call by hand over h2c: (HTTP status, grpc-status from headers or trailers,
/// grpc-message).
async fn raw_grpc_call(at: SocketAddr, metadata: &[(&str, &str)]) -> (u16, Option<String>, Option<String>) {
    use authgate_proto::prost::Message as _;
    use http_body_util::BodyExt as _;
    let tcp = within("connect", tokio::net::TcpStream::connect(at))
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let mut h2 = h2_handshake(tcp).await;
    let msg = check_request("allow").encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(msg.len()).unwrap_or(0).to_be_bytes());
    frame.extend_from_slice(&msg);
    let mut req = http::Request::builder()
        .method("POST")
        .uri("http://bookinfo.example.com/envoy.service.auth.v3.Authorization/Check")
        .version(http::Version::HTTP_2)
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in metadata {
        req = req.header(*k, *v);
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::from(frame)))
        .unwrap_or_else(|e| panic!("{e}"));
    let resp = within("raw gRPC call", h2.send_request(req))
        .await
        .unwrap_or_else(|e| panic!("raw gRPC call: {e}"));
    let (parts, body) = resp.into_parts();
    let collected = within("raw gRPC body", body.collect())
        .await
        .unwrap_or_else(|e| panic!("raw gRPC body: {e}"));
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let pick = |name: &str| {
        parts
            .headers
            .get(name)
            .or_else(|| trailers.get(name))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    (parts.status.as_u16(), pick("grpc-status"), pick("grpc-message"))
}

#[tokio::test]
async fn grpc_backend_behind_http_authz() {
    let sample = start_sample().await;
    let (backend, backend_counters) = grpc_backend().await;
    let gw = gateway(
        GRPC_BACKEND,
        &[
            ("backend", backend.to_string()),
            ("hh", sample.authz_http.ip().to_string()),
            ("hp", sample.authz_http.port().to_string()),
        ],
    )
    .await;
    let mut client = grpc_client(gw_addr(&gw)).await;

    // Allowed by the gateway's authz; the backend's own CheckResponse comes back intact.
    let resp = within(
        "allowed call",
        client.check(with_metadata(check_request("allow"), Some("allow"))),
    )
    .await
    .unwrap_or_else(|s| panic!("allowed call failed: {s:?}"))
    .into_inner();
    assert_eq!(
        resp.status.as_ref().map(|s| s.code),
        Some(0),
        "backend said OK: {resp:?}"
    );
    assert!(
        matches!(
            resp.http_response,
            Some(check_response::HttpResponse::OkResponse(_))
        ),
        "{resp:?}"
    );
    // Allowed by the gateway, denied *inside* by the backend: a normal RPC result, relayed.
    let resp = within(
        "allowed call",
        client.check(with_metadata(check_request("deny"), Some("allow"))),
    )
    .await
    .unwrap_or_else(|s| panic!("allowed call failed: {s:?}"))
    .into_inner();
    assert_eq!(resp.status.as_ref().map(|s| s.code), Some(7), "{resp:?}");
    match &resp.http_response {
        Some(check_response::HttpResponse::DeniedResponse(d)) => assert_eq!(d.body, DENY_BODY),
        other => panic!("expected the backend's denied_response, got {other:?}"),
    }
    assert_eq!(
        backend_counters.grpc.load(Ordering::SeqCst),
        2,
        "both allowed calls reached the backend"
    );

    // Denied by the gateway: PERMISSION_DENIED from the gateway, never reaching the backend.
    let status = within(
        "denied call",
        client.check(with_metadata(check_request("allow"), None)),
    )
    .await
    .expect_err("the gateway must deny a call without x-ext-authz: allow");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    let status = within(
        "denied call",
        client.check(with_metadata(check_request("allow"), Some("deny"))),
    )
    .await
    .expect_err("the gateway must deny x-ext-authz: deny");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    // tonic would also infer PERMISSION_DENIED from a bare HTTP 403: look at the wire. A gRPC
    // client must get HTTP 200 with grpc-status 7 from the gateway.
    let (http_status, grpc_status, _) = raw_grpc_call(gw_addr(&gw), &[]).await;
    assert_eq!(http_status, 200, "gRPC local replies are HTTP 200");
    assert_eq!(grpc_status.as_deref(), Some("7"), "grpc-status PERMISSION_DENIED");
    assert_eq!(
        backend_counters.grpc.load(Ordering::SeqCst),
        2,
        "denied calls never reach the backend"
    );
    assert_eq!(
        sample.counters.http.load(Ordering::SeqCst),
        5,
        "every call was checked"
    );
    gw.shutdown(Duration::from_secs(1)).await;
}

// ---------------------------------------------------------------------------------------------
// 7. Graceful shutdown: in-flight requests (HTTP/1.1 and HTTP/2) complete, new connections are
//    refused.
// ---------------------------------------------------------------------------------------------

const PLAIN: &str = r#"
listeners: [{ address: "127.0.0.1:0" }]
backends: [{ name: b, endpoints: ["{{backend}}"] }]
routes: [{ name: all, backend: b }]
"#;

#[tokio::test]
async fn graceful_shutdown_completes_in_flight_requests() {
    let backend = recorder().await;
    let gw = gateway(PLAIN, &[("backend", backend.addr.to_string())]).await;
    let at = gw_addr(&gw);

    let mut h1 = h1_connect(at).await;
    let h1_req = http::Request::builder()
        .uri("/hold/h1")
        .header("host", "bookinfo.example.com")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap_or_else(|e| panic!("{e}"));
    let h1_flight = tokio::spawn(async move { exchange_h1(&mut h1, h1_req).await });
    let tcp = within("connect", tokio::net::TcpStream::connect(at))
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let mut h2 = h2_handshake(tcp).await;
    let h2_flight =
        tokio::spawn(
            async move { h2_request(&mut h2, "GET", "http://bookinfo.example.com/hold/h2", &[]).await },
        );

    // Both requests are at the (slow) backend before shutdown starts.
    let mut arrived = vec![backend.next_arrival().await, backend.next_arrival().await];
    arrived.sort();
    assert_eq!(arrived, vec!["/hold/h1".to_owned(), "/hold/h2".to_owned()]);

    let shutdown = tokio::spawn(gw.shutdown(Duration::from_secs(10)));

    // The listener stops accepting while the in-flight requests are still running.
    let mut refused = false;
    for _ in 0..500 {
        match tokio::net::TcpStream::connect(at).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                refused = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    assert!(refused, "new connections must be refused once shutdown started");
    assert!(
        !h1_flight.is_finished() && !h2_flight.is_finished(),
        "still in flight"
    );

    backend.release(2);
    let r1 = within("h1 in-flight", h1_flight)
        .await
        .unwrap_or_else(|e| panic!("join: {e}"))
        .unwrap_or_else(|e| panic!("in-flight HTTP/1.1 request failed during drain: {e}"));
    assert_eq!(r1.status, 200);
    assert_eq!(r1.text(), "ok /hold/h1");
    let r2 = within("h2 in-flight", h2_flight)
        .await
        .unwrap_or_else(|e| panic!("in-flight HTTP/2 request failed during drain: {e}"));
    assert_eq!(r2.status, 200);
    assert_eq!(r2.text(), "ok /hold/h2");
    within("shutdown", shutdown)
        .await
        .unwrap_or_else(|e| panic!("join: {e}"));

    match tokio::net::TcpStream::connect(at).await {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}"),
        Ok(_) => panic!("a new connection was accepted after shutdown"),
    }
}

// ---------------------------------------------------------------------------------------------
// 8. Authz connection reuse: 1000 checks per provider over a handful of connections.
// ---------------------------------------------------------------------------------------------

const REUSE: &str = r#"
listeners: [{ address: "127.0.0.1:0" }]
backends: [{ name: b, endpoints: ["{{backend}}"] }]
routes: [{ name: all, backend: b }]
extensionProviders:
  - name: grpc
    envoyExtAuthzGrpc: { service: "{{gh}}", port: {{gp}} }
  - name: http
    envoyExtAuthzHttp: { service: "{{hh}}", port: {{hp}}, includeRequestHeadersInCheck: [x-ext-authz] }
authorizationPolicies:
  - { name: g, action: CUSTOM, provider: { name: grpc }, rules: [{ to: [{ operation: { paths: ["/g/*"] } }] }] }
  - { name: h, action: CUSTOM, provider: { name: http }, rules: [{ to: [{ operation: { paths: ["/h/*"] } }] }] }
"#;

const CHECKS: usize = 1000;

/// `CHECKS` requests under `prefix` from `workers` keep-alive client connections at once.
async fn hammer(at: SocketAddr, prefix: &'static str, workers: usize) {
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..workers {
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = h1_connect(at).await;
            for i in 0..CHECKS / workers {
                let deny = i % 10 == 9;
                let req = http::Request::builder()
                    .uri(format!("{prefix}{w}-{i}"))
                    .header("host", "bookinfo.example.com")
                    .header("x-ext-authz", if deny { "deny" } else { "allow" })
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .unwrap_or_else(|e| panic!("{e}"));
                let r = match exchange_h1(&mut conn, req).await {
                    Ok(r) => r,
                    Err(e) => panic!("request {prefix}{w}-{i}: {e}"),
                };
                assert_eq!(
                    r.status,
                    if deny { 403 } else { 200 },
                    "{prefix}{w}-{i}: {}",
                    r.text()
                );
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap_or_else(|e| panic!("worker: {e}"));
    }
    assert_eq!(done.load(Ordering::SeqCst), CHECKS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authz_connections_are_reused() {
    let sample = start_sample().await;
    let backend = recorder().await;
    let (grpc_fwd, grpc_conns) = counting_forwarder(sample.authz_grpc).await;
    let (http_fwd, http_conns) = counting_forwarder(sample.authz_http).await;
    let gw = gateway(
        REUSE,
        &[
            ("backend", backend.addr.to_string()),
            ("gh", grpc_fwd.ip().to_string()),
            ("gp", grpc_fwd.port().to_string()),
            ("hh", http_fwd.ip().to_string()),
            ("hp", http_fwd.port().to_string()),
        ],
    )
    .await;
    let at = gw_addr(&gw);

    // gRPC multiplexes: any concurrency fits on one h2 connection.
    hammer(at, "/g/", 8).await;
    assert_eq!(
        sample.counters.grpc.load(Ordering::SeqCst),
        CHECKS as u64,
        "every request was checked"
    );
    let g = grpc_conns.load(Ordering::SeqCst);
    assert!(
        (1..=4).contains(&g),
        "gRPC provider opened {g} connections for {CHECKS} checks"
    );

    // HTTP/1.1 keep-alive cannot multiplex: k concurrent checks need k connections, plus the odd
    // one opened while a finished one is on its way back to the pool. Two at a time keeps the
    // "≤ 4" bound meaningful (a connection per check would be ~1000) without racing it.
    hammer(at, "/h/", 2).await;
    assert_eq!(
        sample.counters.http.load(Ordering::SeqCst),
        CHECKS as u64,
        "every request was checked"
    );
    let h = http_conns.load(Ordering::SeqCst);
    eprintln!("authz connections for {CHECKS} checks each: gRPC {g}, HTTP {h}");
    assert!(
        (1..=4).contains(&h),
        "HTTP provider opened {h} connections for {CHECKS} checks"
    );
    gw.shutdown(Duration::from_secs(1)).await;
}

// ---------------------------------------------------------------------------------------------
// 9. Upstream failures: unreachable → 503 (flag UF, counted), too slow → 504, gRPC → 14.
// ---------------------------------------------------------------------------------------------

const FAILURES: &str = r#"
listeners: [{ address: "127.0.0.1:0" }]
backends:
  - { name: dead, endpoints: ["{{dead}}"], connectTimeout: 2s }
  - { name: slow, endpoints: ["{{slow}}"] }
  - { name: grpc-dead, endpoints: ["{{dead}}"], protocol: http2 }
routes:
  - { name: dead, match: { prefix: /dead }, backend: dead }
  - { name: slow, match: { prefix: /hold }, backend: slow, timeout: 300ms }
  - { name: grpc-dead, match: { prefix: /envoy.service.auth.v3.Authorization/ }, backend: grpc-dead }
"#;

#[tokio::test]
async fn upstream_unreachable_is_503_and_slow_is_504() {
    let dead = closed_port().await;
    let slow = recorder().await; // never released: answers nothing within the route timeout
    let gw = gateway(
        FAILURES,
        &[("dead", dead.to_string()), ("slow", slow.addr.to_string())],
    )
    .await;
    let at = gw_addr(&gw);

    let r = get(at, "/dead/x", &[]).await;
    assert_eq!(r.status, 503, "{}", r.text());
    let stats = admin(&gw, "/stats/prometheus").await.text();
    let fails = metric(
        &stats,
        "authgate_upstream_cx_connect_fail_total{backend=\"dead\"}",
    );
    assert!(
        fails.is_some_and(|n| n >= 1.0),
        "connect failure counted for backend dead: {fails:?}\n{stats}"
    );

    let r = get(at, "/hold/x", &[]).await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(
        slow.paths(),
        vec!["/hold/x".to_owned()],
        "the slow backend did get the request"
    );

    // A gRPC client gets grpc-status 14 (UNAVAILABLE) instead of an HTML 503.
    let mut client = grpc_client(at).await;
    let status = within(
        "grpc to dead backend",
        client.check(tonic::Request::new(check_request("allow"))),
    )
    .await
    .expect_err("dead backend");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    // On the wire: HTTP 200 with grpc-status 14, not an HTTP 503 tonic would map to the same.
    let (http_status, grpc_status, _) = raw_grpc_call(at, &[]).await;
    assert_eq!(http_status, 200, "gRPC local replies are HTTP 200");
    assert_eq!(grpc_status.as_deref(), Some("14"), "grpc-status UNAVAILABLE");
    let stats = admin(&gw, "/stats/prometheus").await.text();
    let fails = metric(
        &stats,
        "authgate_upstream_cx_connect_fail_total{backend=\"grpc-dead\"}",
    );
    assert!(fails.is_some_and(|n| n >= 1.0), "{fails:?}\n{stats}");
    gw.shutdown(Duration::from_secs(1)).await;
}

// ---------------------------------------------------------------------------------------------
// 10. Metrics per provider, and /config_dump with secrets redacted.
// ---------------------------------------------------------------------------------------------

const SECRET: &str = "s3cr3t-token-0xC0FFEE-never-dumped";

const METRICS: &str = r#"
listeners: [{ address: "127.0.0.1:0" }]
backends: [{ name: b, endpoints: ["{{backend}}"] }]
routes: [{ name: all, backend: b }]
extensionProviders:
  - name: grpc
    envoyExtAuthzGrpc: { service: "{{gh}}", port: {{gp}} }
  - name: http
    envoyExtAuthzHttp:
      service: "{{hh}}"
      port: {{hp}}
      includeRequestHeadersInCheck: [x-ext-authz]
      includeAdditionalHeadersInCheck: { x-api-key: "{{secret}}" }
  - name: broken
    envoyExtAuthzGrpc: { service: "{{dh}}", port: {{dp}}, timeout: 2s }
authorizationPolicies:
  - { name: g, action: CUSTOM, provider: { name: grpc }, rules: [{ to: [{ operation: { paths: ["/g/*"] } }] }] }
  - { name: h, action: CUSTOM, provider: { name: http }, rules: [{ to: [{ operation: { paths: ["/h/*"] } }] }] }
  - { name: e, action: CUSTOM, provider: { name: broken }, rules: [{ to: [{ operation: { paths: ["/e/*"] } }] }] }
"#;

#[tokio::test]
async fn metrics_count_checks_per_provider_and_config_dump_redacts() {
    let sample = start_sample().await;
    let backend = recorder().await;
    let dead = closed_port().await;
    let mut vars = vec![
        ("backend", backend.addr.to_string()),
        ("secret", SECRET.to_owned()),
    ];
    let [(_, gh), (_, gp)] = host_port(sample.authz_grpc);
    let [(_, hh), (_, hp)] = host_port(sample.authz_http);
    let [(_, dh), (_, dp)] = host_port(dead);
    vars.extend([
        ("gh", gh),
        ("gp", gp),
        ("hh", hh),
        ("hp", hp),
        ("dh", dh),
        ("dp", dp),
    ]);
    let gw = gateway(METRICS, &vars).await;
    let at = gw_addr(&gw);

    for (path, verdict, want) in [
        ("/g/1", "allow", 200),
        ("/g/2", "allow", 200),
        ("/g/3", "allow", 200),
        ("/g/4", "deny", 403),
        ("/g/5", "deny", 403),
        ("/h/1", "allow", 200),
        ("/h/2", "allow", 200),
        ("/h/3", "deny", 403),
        ("/e/1", "allow", 403),
    ] {
        let r = get(at, path, &[("x-ext-authz", verdict)]).await;
        assert_eq!(r.status, want, "{path}: {}", r.text());
    }

    let stats = admin(&gw, "/stats/prometheus").await.text();
    let m = |name: &str, provider: &str| {
        metric(
            &stats,
            &format!("authgate_ext_authz_{name}_total{{provider=\"{provider}\"}}"),
        )
        .unwrap_or(0.0)
    };
    let table = [
        ("ok", "grpc", 3.0),
        ("denied", "grpc", 2.0),
        ("error", "grpc", 0.0),
        ("ok", "http", 2.0),
        ("denied", "http", 1.0),
        ("error", "http", 0.0),
        ("ok", "broken", 0.0),
        ("denied", "broken", 0.0),
        ("error", "broken", 1.0),
    ];
    for (name, provider, want) in table {
        assert_eq!(
            m(name, provider),
            want,
            "authgate_ext_authz_{name}_total{{provider={provider}}}\n{stats}"
        );
    }
    for series in [
        "authgate_ext_authz_ok_total{provider=\"grpc\"}",
        "authgate_ext_authz_denied_total{provider=\"http\"}",
        "authgate_ext_authz_error_total{provider=\"broken\"}",
    ] {
        assert!(
            metric(&stats, series).is_some(),
            "series {series} present\n{stats}"
        );
    }

    let dump = admin(&gw, "/config_dump").await;
    assert_eq!(dump.status, 200);
    let json = dump.json();
    assert!(json.is_object(), "{json}");
    let text = dump.text();
    assert!(
        !text.contains(SECRET),
        "includeAdditionalHeadersInCheck values are redacted: {text}"
    );
    assert!(
        text.contains("x-api-key"),
        "the header name itself is shown: {text}"
    );
    gw.shutdown(Duration::from_secs(1)).await;
}
