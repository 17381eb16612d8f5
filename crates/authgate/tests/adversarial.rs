//! Adversarial end-to-end suite: real sockets on 127.0.0.1, attacks sent byte for byte.
//!
//! Part A holds the attacks that currently **succeed** (each test fails until the bug is
//! fixed; the assertion message names the finding). Part B holds important attacks that are
//! correctly refused today, so they stay refused.
//!
//! Every server used here listens on an ephemeral loopback port; every wait is bounded.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use authgate_proto::auth::check_response::HttpResponse;
use authgate_proto::auth::{CheckResponse, DeniedHttpResponse, OkHttpResponse};
use authgate_proto::core::{HeaderValue as PbHeaderValue, HeaderValueOption};
use authgate_proto::http_status::HttpStatus;
use authgate_proto::{rpc, tonic};
use bytes::Bytes;
use common::*;
use http_body_util::Full;

const DRAIN: Duration = Duration::from_secs(1);

fn http_response(status: u16, headers: &[(&str, &str)], body: &str) -> http::Response<Full<Bytes>> {
    let mut b = http::Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::from(body.to_owned())))
        .unwrap_or_else(|e| panic!("response: {e}"))
}

fn pb_header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(PbHeaderValue {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn grpc_ok(headers: Vec<HeaderValueOption>) -> CheckResponse {
    CheckResponse {
        status: Some(rpc::Status {
            code: 0,
            ..Default::default()
        }),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers,
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn grpc_denied(code: i32, http_status: Option<i32>, body: &str) -> CheckResponse {
    CheckResponse {
        status: Some(rpc::Status {
            code,
            ..Default::default()
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: http_status.map(|c| HttpStatus { code: c }),
            body: body.into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn header_str(h: &http::HeaderMap, name: &str) -> Vec<String> {
    h.get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

fn statuses(raw: &RawOutcome) -> Vec<u16> {
    raw.statuses()
}

// =============================================================================================
// Part A — findings (these tests fail while the bug exists)
// =============================================================================================

// ---------------------------------------------------------------------------------------------
// A1. Any `Upgrade:` token turns off request-body buffering for the check
//     (pipeline.rs: `if let (Some(settings), None, None) = (config.body, &buffered, &upgrade)`).
//     Envoy only skips buffering for WebSocket upgrades and answers 403 `upgrade_failed` for
//     upgrade types the route does not allow (Istio configures only `websocket`).
// ---------------------------------------------------------------------------------------------

const BODY_CHECK: &str = r#"
listeners: [{ address: "127.0.0.1:0" }]
backends: [{ name: app, endpoints: ["{{backend}}"] }]
routes: [{ name: all, backend: app }]
extensionProviders:
  - name: body-authz
    envoyExtAuthzHttp:
      service: "127.0.0.1"
      port: {{authz_port}}
      timeout: 5s
      includeRequestBodyInCheck: { maxRequestBytes: 16, allowPartialMessage: false }
authorizationPolicies:
  - name: inspect-bodies
    action: CUSTOM
    provider: { name: body-authz }
    rules: [{ to: [{ operation: { paths: ["/api/*"] } }] }]
"#;

/// The authz service refuses any body that contains `DROP TABLE`.
async fn body_inspecting_setup() -> (
    Recorder,
    SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<SeenCheck>>>,
    authgate_proxy::Gateway,
) {
    let backend = recorder().await;
    let (authz, seen) = scripted_http_authz(|c| {
        if c.body.windows(10).any(|w| w == b"DROP TABLE") {
            http_response(403, &[], "malicious body")
        } else {
            http_response(200, &[], "")
        }
    })
    .await;
    let gw = gateway(
        BODY_CHECK,
        &[
            ("backend", backend.addr.to_string()),
            ("authz_port", authz.port().to_string()),
        ],
    )
    .await;
    (backend, authz, seen, gw)
}

#[tokio::test]
async fn a1_upgrade_header_skips_request_body_inspection() {
    let (backend, _authz, seen, gw) = body_inspecting_setup().await;
    let at = gw_addr(&gw);
    let body = "x; DROP TABLE users; -- padding padding padding padding padding";

    // Control: without Upgrade, the body is over maxRequestBytes and partial messages are not
    // allowed: 413 and nothing reaches the check or the backend.
    let plain = format!(
        "POST /api/orders HTTP/1.1\r\nHost: shop.example.com\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let r = raw_request(at, plain.as_bytes()).await;
    assert_eq!(r.status, 413, "control: {}", r.text());
    assert!(backend.paths().is_empty(), "control reached the backend");

    // Attack: same request plus a made-up upgrade token.
    let attack = format!(
        "POST /api/orders HTTP/1.1\r\nHost: shop.example.com\r\nContent-Length: {}\r\nConnection: Upgrade, close\r\nUpgrade: anything\r\n\r\n{body}",
        body.len()
    );
    let out = raw_exchange(at, attack.into_bytes()).await;
    let checks = seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let reached: Vec<(String, usize)> = backend
        .recorded()
        .iter()
        .map(|r| (r.path.clone(), r.body_len))
        .collect();
    assert!(
        reached.is_empty(),
        "FINDING A1: a request body the authz service never saw reached the backend because of \
         `Upgrade: anything` (check bodies seen: {:?}; backend got {reached:?}; client got {:?})",
        checks
            .iter()
            .map(|c| String::from_utf8_lossy(&c.body).into_owned())
            .collect::<Vec<_>>(),
        statuses(&out)
    );
    gw.shutdown(DRAIN).await;
}

// ---------------------------------------------------------------------------------------------
// A2. h2c upgrade smuggling: `Upgrade: h2c` (any token, really) is forwarded and, on a 101 from
//     the backend, the connection becomes an opaque tunnel; later requests on it are never
//     routed, checked or logged. Envoy strips h2c upgrade headers in its HTTP/1 codec and
//     rejects unconfigured upgrade types.
// ---------------------------------------------------------------------------------------------

const H2C: &str = r#"
listeners: [{ address: "127.0.0.1:0" }]
backends: [{ name: app, endpoints: ["{{backend}}"] }]
routes: [{ name: all, backend: app }]
extensionProviders:
  - name: grpc
    envoyExtAuthzGrpc: { service: "127.0.0.1", port: {{gp}}, timeout: 5s }
authorizationPolicies:
  - name: protect-admin
    action: CUSTOM
    provider: { name: grpc }
    rules: [{ to: [{ operation: { paths: ["/admin*"] } }] }]
"#;

#[tokio::test]
async fn a2_h2c_upgrade_tunnels_requests_past_authorization() {
    let sample = start_sample().await;
    let (backend, lines) = upgrade_backend().await;
    let gw = gateway(
        H2C,
        &[
            ("backend", backend.to_string()),
            ("gp", sample.authz_grpc.port().to_string()),
        ],
    )
    .await;
    let at = gw_addr(&gw);
    // Control: /admin is checked and denied (no `x-ext-authz: allow`).
    let r = raw_request(
        at,
        b"GET /admin/secret HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 403, "control: {}", r.text());

    let attack = b"GET /public HTTP/1.1\r\nHost: app.example.com\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\nGET /admin/secret HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n".to_vec();
    let out = raw_exchange(at, attack).await;
    let seen = lines
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    assert!(
        !seen.iter().any(|l| l.starts_with("GET /admin")),
        "FINDING A2: /admin/secret reached the backend through an h2c upgrade tunnel without an \
         authorization check. Backend saw {seen:?}; client got:\n{}",
        out.text()
    );
    gw.shutdown(DRAIN).await;
}

// ---------------------------------------------------------------------------------------------
// A3. DENY/ALLOW policies are evaluated on the request *before* the CUSTOM provider's
//     mutations (pipeline.rs computes `verdict` once, before the provider loop). In Istio the
//     RBAC filters run after ext_authz (R-B1), so they see the headers the authz service set.
// ---------------------------------------------------------------------------------------------

const ROLE_POLICY: &str = r#"
listeners: [{ address: "127.0.0.1:0" }]
backends: [{ name: app, endpoints: ["{{backend}}"] }]
routes: [{ name: all, backend: app }]
extensionProviders:
  - name: idp
    envoyExtAuthzHttp:
      service: "127.0.0.1"
      port: {{authz_port}}
      timeout: 5s
      headersToUpstreamOnAllow: ["x-user-role", "x-risk"]
authorizationPolicies:
  - name: authenticate-everything
    action: CUSTOM
    provider: { name: idp }
    rules: [{}]
  - name: admins-only-on-admin
    action: ALLOW
    rules:
      - to: [{ operation: { notPaths: ["/admin*"] } }]
      - to: [{ operation: { paths: ["/admin*"] } }]
        when: [{ key: "request.headers[x-user-role]", values: ["admin"] }]
  - name: block-risky
    action: DENY
    rules:
      - when: [{ key: "request.headers[x-risk]", values: ["high"] }]
"#;

/// The identity provider: every caller is an authenticated *guest*; callers presenting
/// `authorization: Bearer risky` are additionally flagged `x-risk: high`.
async fn role_setup() -> (Recorder, authgate_proxy::Gateway) {
    let backend = recorder().await;
    let (authz, _) = scripted_http_authz(|c| {
        let risky = c
            .headers
            .get("authorization")
            .is_some_and(|v| v.as_bytes() == b"Bearer risky");
        let mut h = vec![("x-user-role", "guest")];
        h.push(("x-risk", if risky { "high" } else { "low" }));
        http_response(200, &h, "")
    })
    .await;
    let gw = gateway(
        ROLE_POLICY,
        &[
            ("backend", backend.addr.to_string()),
            ("authz_port", authz.port().to_string()),
        ],
    )
    .await;
    (backend, gw)
}

#[tokio::test]
async fn a3_allow_policy_is_evaluated_on_client_headers_instead_of_authz_headers() {
    let (backend, gw) = role_setup().await;
    let at = gw_addr(&gw);
    // Control: a guest without the forged header is refused /admin.
    let r = get(at, "/admin/users", &[]).await;
    assert_eq!(r.status, 403, "control: {}", r.text());
    // Attack: the guest sends the role header itself. The authz service overwrites it with
    // `guest` for the upstream, but the ALLOW policy looked at the client's copy.
    let r = get(at, "/admin/users", &[("x-user-role", "admin")]).await;
    let roles: Vec<Vec<String>> = backend
        .recorded()
        .iter()
        .map(|r| header_str(&r.headers, "x-user-role"))
        .collect();
    assert_eq!(
        r.status, 403,
        "FINDING A3: a guest reached /admin by sending `x-user-role: admin`; the ALLOW policy \
         matched the client's header while the backend received the authz service's {roles:?}"
    );
    gw.shutdown(DRAIN).await;
}

#[tokio::test]
async fn a3_deny_policy_never_sees_headers_set_by_the_authz_service() {
    let (backend, gw) = role_setup().await;
    let at = gw_addr(&gw);
    let r = get(at, "/orders", &[("authorization", "Bearer risky")]).await;
    let risk: Vec<Vec<String>> = backend
        .recorded()
        .iter()
        .map(|r| header_str(&r.headers, "x-risk"))
        .collect();
    assert_eq!(
        r.status, 403,
        "FINDING A3: the authz service flagged the request `x-risk: high` but the DENY policy on \
         that header did not fire (backend received x-risk {risk:?})"
    );
    gw.shutdown(DRAIN).await;
}

// ---------------------------------------------------------------------------------------------
// A4. Only the first `X-Forwarded-For` line is forwarded (pipeline.rs `forwarded_headers` uses
//     `h.get`, then `insert`): later lines — e.g. the one a trusted front proxy such as HAProxy
//     (`option forwardfor`) *adds* — are dropped, so the authz service and the backend see an
//     attacker-chosen client address. The policy engine reads every line, so the gateway's own
//     view and what it forwards disagree.
// ---------------------------------------------------------------------------------------------

const XFF: &str = r#"
listeners: [{ address: "127.0.0.1:0" }]
backends: [{ name: app, endpoints: ["{{backend}}"] }]
routes: [{ name: all, backend: app }]
gateway: { numTrustedProxies: 1 }
"#;

#[tokio::test]
async fn a4_later_x_forwarded_for_lines_are_dropped() {
    let backend = recorder().await;
    let gw = gateway(XFF, &[("backend", backend.addr.to_string())]).await;
    // The client forged line 1; the trusted front proxy added line 2 with the real address.
    let raw = b"GET /whoami HTTP/1.1\r\nHost: app.example.com\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 203.0.113.9\r\nConnection: close\r\n\r\n";
    let r = raw_request(gw_addr(&gw), raw).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let xff: Vec<String> = backend
        .recorded()
        .iter()
        .flat_map(|r| header_str(&r.headers, "x-forwarded-for"))
        .collect();
    assert!(
        xff.iter().any(|v| v.contains("203.0.113.9")),
        "FINDING A4: the real client address added by the trusted proxy (203.0.113.9) was \
         dropped; upstream x-forwarded-for = {xff:?}"
    );
    gw.shutdown(DRAIN).await;
}

// ---------------------------------------------------------------------------------------------
// A5. Envoy-internal request headers from an external client are not sanitized:
//     `x-envoy-downstream-service-cluster` becomes `CheckRequest.attributes.source.service`
//     (check.rs) and `x-envoy-internal` reaches the backend. Envoy (use_remote_address, edge)
//     removes both from external requests.
// ---------------------------------------------------------------------------------------------

const GRPC_ALL: &str = r#"
listeners: [{ address: "127.0.0.1:0" }]
backends: [{ name: app, endpoints: ["{{backend}}"] }]
routes: [{ name: all, backend: app }]
extensionProviders:
  - name: grpc
    envoyExtAuthzGrpc: { service: "127.0.0.1", port: {{gp}}, timeout: 5s, failOpen: false }
authorizationPolicies:
  - name: everything
    action: CUSTOM
    provider: { name: grpc }
    rules: [{}]
"#;

#[tokio::test]
async fn a5_client_controls_check_source_service_and_envoy_internal_headers() {
    let backend = recorder().await;
    let (authz, seen) = scripted_grpc_authz(|_| Ok(grpc_ok(vec![]))).await;
    let gw = gateway(
        GRPC_ALL,
        &[
            ("backend", backend.addr.to_string()),
            ("gp", authz.port().to_string()),
        ],
    )
    .await;
    let r = get(
        gw_addr(&gw),
        "/x",
        &[
            ("x-envoy-downstream-service-cluster", "trusted-internal-job"),
            ("x-envoy-internal", "true"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let service = seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .first()
        .and_then(|c| c.attributes.as_ref())
        .and_then(|a| a.source.as_ref())
        .map(|s| s.service.clone())
        .unwrap_or_default();
    let upstream: Vec<(String, Vec<String>)> = backend
        .recorded()
        .iter()
        .flat_map(|r| {
            ["x-envoy-internal", "x-envoy-downstream-service-cluster"]
                .iter()
                .map(|n| ((*n).to_owned(), header_str(&r.headers, n)))
                .collect::<Vec<_>>()
        })
        .filter(|(_, v)| !v.is_empty())
        .collect();
    assert!(
        service.is_empty() && upstream.is_empty(),
        "FINDING A5: external client set CheckRequest source.service = {service:?} and forwarded \
         internal headers {upstream:?}"
    );
    gw.shutdown(DRAIN).await;
}

// ---------------------------------------------------------------------------------------------
// A6. Authorities that are not host[:port] are accepted: userinfo in an absolute-form target
//     (`http://x@admin.example.com/`) and a Host with `/` or a space. Routing strips nothing
//     and matches the wildcard route, while a `hosts:` rule on `admin.example.com` does not
//     match, so the CUSTOM check is skipped. Envoy takes the host from the absolute URL without
//     userinfo and answers 400 to an invalid :authority/Host.
// ---------------------------------------------------------------------------------------------

const HOST_POLICY: &str = r#"
listeners: [{ address: "127.0.0.1:0" }]
backends: [{ name: app, endpoints: ["{{backend}}"] }]
routes: [{ name: sites, hosts: ["*.example.com"], backend: app }]
extensionProviders:
  - name: grpc
    envoyExtAuthzGrpc: { service: "127.0.0.1", port: {{gp}}, timeout: 5s }
authorizationPolicies:
  - name: protect-admin-site
    action: CUSTOM
    provider: { name: grpc }
    rules: [{ to: [{ operation: { hosts: ["admin.example.com", "admin.example.com:*"] } }] }]
"#;

#[tokio::test]
async fn a6_malformed_authority_skips_host_scoped_policy() {
    let sample = start_sample().await;
    let backend = recorder().await;
    let gw = gateway(
        HOST_POLICY,
        &[
            ("backend", backend.addr.to_string()),
            ("gp", sample.authz_grpc.port().to_string()),
        ],
    )
    .await;
    let at = gw_addr(&gw);
    // Control.
    let r = raw_request(
        at,
        b"GET /users HTTP/1.1\r\nHost: admin.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 403, "control: {}", r.text());

    let mut bypasses = Vec::new();
    for (target, host) in [
        ("http://x@admin.example.com/users", "admin.example.com"),
        ("/users", "x/admin.example.com"),
        ("/users", "x admin.example.com"),
    ] {
        let before = backend.paths().len();
        let req = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let r = raw_request(at, req.as_bytes()).await;
        if backend.paths().len() > before {
            let got = backend
                .recorded()
                .last()
                .map(|r| header_str(&r.headers, "host"))
                .unwrap_or_default();
            bypasses.push(format!(
                "{target} (Host: {host}) → {} unchecked, upstream Host {got:?}",
                r.status
            ));
        }
    }
    assert!(
        bypasses.is_empty(),
        "FINDING A6: requests for the admin site reached the backend without the CUSTOM check:\n{}",
        bypasses.join("\n")
    );
    gw.shutdown(DRAIN).await;
}

// ---------------------------------------------------------------------------------------------
// A7. Listener TLS settings are looked up by *index* in the new snapshot after a reload
//     (server.rs accept_loop: `snapshot.load().tls.get(index)`), while the sockets stay bound
//     from the first configuration. Adding a listener in front of an mTLS listener (and
//     saving the file: `authgate run` reloads on file change) makes the mTLS port serve
//     plaintext HTTP with no client certificate.
// ---------------------------------------------------------------------------------------------

const MTLS_ONLY: &str = r#"
listeners:
  - name: mtls
    address: "127.0.0.1:0"
    tls:
      certificates: [{ certFile: "{{cert}}", keyFile: "{{key}}" }]
      clientCaFile: "{{ca}}"
      requireClientCertificate: true
backends: [{ name: app, endpoints: ["{{backend}}"] }]
routes: [{ name: all, backend: app }]
admin: { address: "127.0.0.1:0" }
"#;

const MTLS_PLUS_PLAIN: &str = r#"
listeners:
  - name: health
    address: "127.0.0.2:0"
  - name: mtls
    address: "127.0.0.1:0"
    tls:
      certificates: [{ certFile: "{{cert}}", keyFile: "{{key}}" }]
      clientCaFile: "{{ca}}"
      requireClientCertificate: true
backends: [{ name: app, endpoints: ["{{backend}}"] }]
routes: [{ name: all, backend: app }]
admin: { address: "127.0.0.1:0" }
"#;

#[tokio::test]
async fn a7_reload_that_adds_a_listener_turns_mtls_port_into_plaintext() {
    let backend = recorder().await;
    let pki = Pki::new("adv-reload");
    let (cert, key, _) = pki.server_cert("srv", &["app.example.com"]);
    let vars = [
        ("cert", cert.display().to_string()),
        ("key", key.display().to_string()),
        ("ca", pki.ca_file.display().to_string()),
        ("backend", backend.addr.to_string()),
    ];
    let gw = gateway(MTLS_ONLY, &vars).await;
    let at = gw_addr(&gw);
    let plain = b"GET /secret HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n".to_vec();

    // Control: plaintext on the mTLS port gets no HTTP answer.
    let out = raw_exchange(at, plain.clone()).await;
    assert!(
        statuses(&out).is_empty(),
        "control: plaintext answered: {}",
        out.text()
    );

    let config = authgate_config::parse(
        &render(MTLS_PLUS_PLAIN, &vars),
        "reload.yaml",
        std::path::Path::new("."),
        &[],
    )
    .unwrap_or_else(|e| panic!("config: {e}"));
    let snapshot = authgate_proxy::Snapshot::build(config).unwrap_or_else(|e| panic!("snapshot: {e}"));
    gw.reload(snapshot);

    let out = raw_exchange(at, plain).await;
    assert!(
        statuses(&out).is_empty() && backend.paths().is_empty(),
        "FINDING A7: after a reload, the mTLS listener answered plaintext HTTP without a client \
         certificate (statuses {:?}, backend saw {:?})",
        statuses(&out),
        backend.paths()
    );
    gw.shutdown(DRAIN).await;
}

// ---------------------------------------------------------------------------------------------
// A8. `request.headers[:path]` is matched against the path *without* the query
//     (compiled.rs HeaderSource::Path uses the normalized path). Envoy's `:path` header, which
//     Istio's RBAC header matcher reads, carries the query, so DENY rules written on it (e.g.
//     on a dangerous query parameter) never fire here.
// ---------------------------------------------------------------------------------------------

const PATH_HEADER_DENY: &str = r#"
listeners: [{ address: "127.0.0.1:0" }]
backends: [{ name: app, endpoints: ["{{backend}}"] }]
routes: [{ name: all, backend: app }]
authorizationPolicies:
  - name: no-debug
    action: DENY
    rules: [{ when: [{ key: "request.headers[:path]", values: ["*debug=true"] }] }]
"#;

#[tokio::test]
async fn a8_path_header_condition_ignores_the_query() {
    let backend = recorder().await;
    let gw = gateway(PATH_HEADER_DENY, &[("backend", backend.addr.to_string())]).await;
    let r = get(gw_addr(&gw), "/report?debug=true", &[]).await;
    assert_eq!(
        r.status,
        403,
        "FINDING A8: DENY on request.headers[:path] '*debug=true' did not match \
         /report?debug=true (backend saw {:?})",
        backend.paths()
    );
    gw.shutdown(DRAIN).await;
}

// ---------------------------------------------------------------------------------------------
// A9. `authgate validate` says "ok" for configurations that `authgate run` (and every reload)
//     refuses: provider targets, header formatters and TLS files are only checked when the
//     snapshot is built (main.rs `validate` compiles policies but never calls Snapshot::build).
// ---------------------------------------------------------------------------------------------

#[test]
fn a9_validate_accepts_configs_that_run_refuses() {
    let dir = TempDir::new("adv-validate");
    let cases = [
        (
            "formatter.yaml",
            "listeners: [{ address: \"127.0.0.1:0\" }]\nadmin: { address: \"127.0.0.1:0\" }\nextensionProviders:\n  - name: x\n    envoyExtAuthzHttp: { service: \"127.0.0.1\", port: 1, includeAdditionalHeadersInCheck: { x-d: \"%START_TIME(%s)%\" } }\n",
        ),
        (
            "target.yaml",
            "listeners: [{ address: \"127.0.0.1:0\" }]\nadmin: { address: \"127.0.0.1:0\" }\nextensionProviders:\n  - name: x\n    envoyExtAuthzGrpc: { service: \"[::1\", port: 80 }\n",
        ),
        (
            "tls.yaml",
            "listeners: [{ address: \"127.0.0.1:0\", tls: { certificates: [{ certFile: \"/dev/null\", keyFile: \"/dev/null\" }] } }]\nadmin: { address: \"127.0.0.1:0\" }\n",
        ),
    ];
    let mut lies = Vec::new();
    for (name, text) in cases {
        let path = dir.write(name, text);
        let run = |cmd: &str| {
            let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_authgate"));
            c.arg(cmd).arg("--config").arg(&path);
            c.stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped());
            let mut child = c.spawn().unwrap_or_else(|e| panic!("spawn: {e}"));
            // `run` on a valid config would serve forever: give it a moment, then stop it.
            for _ in 0..60 {
                if let Ok(Some(s)) = child.try_wait() {
                    return s.code();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            None
        };
        let (validate, serve) = (run("validate"), run("run"));
        if validate == Some(0) && serve != validate {
            lies.push(format!("{name}: validate exit {validate:?}, run exit {serve:?}"));
        }
    }
    assert!(
        lies.is_empty(),
        "FINDING A9: validate reports ok for configurations run refuses:\n{}",
        lies.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// A10. SIGTERM is lost while a file-change reload is pending: run.rs creates a fresh
//      `shutdown_signal()` future on every loop turn, and the 200 ms debounce sleep + reload
//      run inside a select arm, so a signal delivered then has no listener (tokio has already
//      replaced the default action). The pod never drains and is SIGKILLed at the deadline.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a10_sigterm_during_reload_debounce_is_lost() {
    let dir = TempDir::new("adv-term");
    let cfg = "listeners: [{ address: \"127.0.0.1:0\" }]\nadmin: { address: \"127.0.0.1:0\" }\n";
    let path = dir.write("gw.yaml", cfg);
    let mut gw = spawn_binary(&path, &["--drain-timeout", "1s"]);
    // Let the watcher settle, then change the file and send SIGTERM inside the debounce window.
    tokio::time::sleep(Duration::from_millis(300)).await;
    dir.write("gw.yaml", &format!("{cfg}# touched\n"));
    tokio::time::sleep(Duration::from_millis(60)).await;
    gw.signal("TERM");
    let mut exited = false;
    for _ in 0..100 {
        if let Ok(Some(_)) = gw.child.try_wait() {
            exited = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        exited,
        "FINDING A10: authgate ignored a SIGTERM delivered during a configuration reload; \
         stderr:\n{}",
        gw.stderr_text()
    );
}

// ---------------------------------------------------------------------------------------------
// A11. HTTP/2 cookie crumbs (RFC 9113 §8.2.3) are forwarded to an HTTP/1.1 backend as several
//      `cookie` lines and sent to the authz service joined with "," instead of "; ". Browsers
//      split cookies over h2; an authz service parsing the Cookie header (as it must with
//      Envoy, which concatenates with "; ") sees `a=1,session=…` as one cookie `a`.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a11_h2_cookie_crumbs_are_not_concatenated() {
    let backend = recorder().await;
    let (authz, seen) = scripted_grpc_authz(|_| Ok(grpc_ok(vec![]))).await;
    let gw = gateway(
        GRPC_ALL,
        &[
            ("backend", backend.addr.to_string()),
            ("gp", authz.port().to_string()),
        ],
    )
    .await;
    let o = h2_raw(
        gw_addr(&gw),
        &[
            (b":method", b"GET"),
            (b":scheme", b"http"),
            (b":authority", b"app.example.com"),
            (b":path", b"/x"),
            (b"cookie", b"theme=dark"),
            (b"cookie", b"session=s3cr3t"),
        ],
        None,
    )
    .await;
    assert!(!o.refused(), "{o:?}");
    let check_cookie = seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .first()
        .and_then(|c| c.attributes.as_ref())
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
        .and_then(|h| h.headers.get("cookie").cloned())
        .unwrap_or_default();
    let upstream: Vec<String> = backend
        .recorded()
        .iter()
        .flat_map(|r| header_str(&r.headers, "cookie"))
        .collect();
    assert!(
        check_cookie == "theme=dark; session=s3cr3t" && upstream == ["theme=dark; session=s3cr3t"],
        "FINDING A11: cookie crumbs: authz saw {check_cookie:?}, HTTP/1.1 backend got {upstream:?}"
    );
    gw.shutdown(DRAIN).await;
}

// =============================================================================================
// Part B — attacks that are correctly refused (keep them refused)
// =============================================================================================

// ---------------------------------------------------------------------------------------------
// B1. Path tricks against the seed policy: each is refused (400), or checked by the authz
//     service (denied without `x-ext-authz: allow`), and never reaches the backend unchecked.
// ---------------------------------------------------------------------------------------------

const SEED: &str = r#"
listeners: [{ address: "127.0.0.1:0" }]
backends: [{ name: app, endpoints: ["{{backend}}"] }]
routes: [{ name: all, backend: app }]
extensionProviders:
  - name: grpc
    envoyExtAuthzGrpc: { service: "127.0.0.1", port: {{gp}}, timeout: 5s }
authorizationPolicies:
  - name: ext-authz
    action: CUSTOM
    provider: { name: grpc }
    rules: [{ to: [{ operation: { paths: ["/productpage", "/admin/*"] } }] }]
"#;

async fn seed_setup() -> (Sample, Recorder, authgate_proxy::Gateway) {
    let sample = start_sample().await;
    let backend = recorder().await;
    let gw = gateway(
        SEED,
        &[
            ("backend", backend.addr.to_string()),
            ("gp", sample.authz_grpc.port().to_string()),
        ],
    )
    .await;
    (sample, backend, gw)
}

#[tokio::test]
async fn b1_path_tricks_are_refused_or_checked() {
    let (sample, backend, gw) = seed_setup().await;
    let at = gw_addr(&gw);
    let targets = [
        "/productpage",
        "/%70roductpage",
        "/public/%2e%2e/productpage",
        "/public/%2E%2e/productpage",
        "/public/.%2e/productpage",
        "/public/%2e./productpage",
        "/public/..%2fproductpage",
        "/public/%252e%252e/productpage",
        "/public/%c0%ae%c0%ae/productpage",
        "/public/%u002e%u002e/productpage",
        "/public\\..\\productpage",
        "/public/..;/productpage",
        "/public;x/../productpage",
        "/productpage;jsessionid=1",
        "//productpage",
        "///productpage",
        "/./productpage",
        "/productpage/",
        "/productpage/.",
        "/productpage//",
        "/productpage#/../public",
        "/productpage?x=/../public",
        "/admin/../admin/users",
        "/admin//users",
        "/admin/./users",
        "/admin/%2e/users",
        "/admin;/users",
        "/public/../admin/users",
        "/productpage%00",
        "/productpage%0d%0aX-Injected:%201",
        "/productpage\t",
        "http://bookinfo.example.com/productpage",
        "http://other.example.com/public/../productpage",
        "HTTP://bookinfo.example.com//productpage",
    ];
    let mut leaks = Vec::new();
    for t in targets {
        let before_backend = backend.paths().len();
        let before_checks = sample.counters.grpc.load(Ordering::SeqCst);
        let req = format!("GET {t} HTTP/1.1\r\nHost: bookinfo.example.com\r\nConnection: close\r\n\r\n");
        let out = raw_exchange(at, req.into_bytes()).await;
        let checked = sample.counters.grpc.load(Ordering::SeqCst) > before_checks;
        let reached = backend.paths().len() > before_backend;
        if reached {
            let path = backend.paths().last().cloned().unwrap_or_default();
            // Reaching the backend is fine only for a path no rule covers, and never after a
            // denial. Escaped slashes and double encodings are kept verbatim under
            // `escapedSlashes: KEEP` (Istio's default; see the report): forwarded byte for byte,
            // never decoded into another path by the gateway.
            let verbatim = !checked && path == t && t.contains('%');
            let harmless = verbatim || (!checked && !path.contains("productpage") && !path.contains("admin"));
            if !harmless {
                leaks.push(format!(
                    "{t} → backend {path} (checked: {checked}, statuses {:?})",
                    statuses(&out)
                ));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "protected paths reached without an allow:\n{}",
        leaks.join("\n")
    );
    gw.shutdown(DRAIN).await;
}

// ---------------------------------------------------------------------------------------------
// B2. The verdict header cannot be smuggled: duplicates, case variants, h2, and Connection
//     nominations on a second Connection line; the backend sees only the authz service's value.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn b2_client_cannot_smuggle_or_drop_the_authz_verdict_header() {
    let (_sample, backend, gw) = seed_setup().await;
    let at = gw_addr(&gw);
    let raw = b"GET /productpage HTTP/1.1\r\nHost: bookinfo.example.com\r\nx-ext-authz: allow\r\nX-Ext-Authz-Check-Result: allowed-by-client\r\nx-ext-authz-check-result: second\r\nConnection: close\r\nConnection: x-ext-authz-check-result\r\n\r\n";
    let r = raw_request(at, raw).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut h2 = h2_handshake(
        within("connect", tokio::net::TcpStream::connect(at))
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .await;
    let r = h2_request(
        &mut h2,
        "GET",
        "http://bookinfo.example.com/productpage",
        &[
            ("x-ext-authz", "allow"),
            ("x-ext-authz-check-result", "h2-client"),
            ("x-ext-authz-check-result", "h2-client-2"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    for rec in backend.recorded() {
        assert_eq!(
            header_str(&rec.headers, "x-ext-authz-check-result"),
            vec!["allowed".to_owned()],
            "{} {:?}",
            rec.path,
            rec.version
        );
    }
    assert_eq!(backend.recorded().len(), 2);
    gw.shutdown(DRAIN).await;
}

// ---------------------------------------------------------------------------------------------
// B3. `x-envoy-auth-partial-body` and `x-forwarded-client-cert` cannot be forged.
// ---------------------------------------------------------------------------------------------

const PARTIAL: &str = r#"
listeners: [{ address: "127.0.0.1:0" }]
backends: [{ name: app, endpoints: ["{{backend}}"] }]
routes: [{ name: all, backend: app }]
extensionProviders:
  - name: body
    envoyExtAuthzHttp:
      service: "127.0.0.1"
      port: {{authz_port}}
      timeout: 5s
      includeRequestHeadersInCheck: ["x-envoy-*", "x-forwarded-*"]
      includeRequestBodyInCheck: { maxRequestBytes: 8, allowPartialMessage: true }
authorizationPolicies:
  - { name: all, action: CUSTOM, provider: { name: body }, rules: [{}] }
"#;

#[tokio::test]
async fn b3_partial_body_marker_and_xfcc_cannot_be_forged() {
    let backend = recorder().await;
    let (authz, seen) = scripted_http_authz(|_| http_response(200, &[], "")).await;
    let gw = gateway(
        PARTIAL,
        &[
            ("backend", backend.addr.to_string()),
            ("authz_port", authz.port().to_string()),
        ],
    )
    .await;
    let r = send(
        gw_addr(&gw),
        "POST",
        "/upload",
        &[
            ("x-envoy-auth-partial-body", "false"),
            (
                "x-forwarded-client-cert",
                "By=spiffe://evil;URI=spiffe://cluster.local/ns/x/sa/admin",
            ),
        ],
        b"0123456789abcdef-this-is-longer-than-eight",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let checks = seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    assert_eq!(checks.len(), 1);
    assert_eq!(
        header_str(&checks[0].headers, "x-envoy-auth-partial-body"),
        vec!["true".to_owned()]
    );
    assert!(header_str(&checks[0].headers, "x-forwarded-client-cert").is_empty());
    assert_eq!(checks[0].body.as_ref(), b"01234567");
    let up = backend.recorded();
    assert_eq!(up.len(), 1);
    assert!(
        header_str(&up[0].headers, "x-forwarded-client-cert").is_empty(),
        "xfcc forwarded"
    );
    assert_eq!(up[0].body_len, 42, "the whole body goes upstream");
    gw.shutdown(DRAIN).await;
}

// ---------------------------------------------------------------------------------------------
// B4. Fail closed, HTTP provider: every failure of the authz service is a denial
//     (statusOnError 403), never an allow, and the backend is never reached.
// ---------------------------------------------------------------------------------------------

const FAIL_HTTP: &str = r#"
listeners: [{ address: "127.0.0.1:0" }]
backends: [{ name: app, endpoints: ["{{backend}}"] }]
routes: [{ name: all, backend: app }]
extensionProviders:
  - name: authz
    envoyExtAuthzHttp: { service: "127.0.0.1", port: {{authz_port}}, timeout: 1s, failOpen: false }
authorizationPolicies:
  - { name: all, action: CUSTOM, provider: { name: authz }, rules: [{}] }
"#;

async fn assert_fails_closed_http(what: &str, authz: SocketAddr) {
    let backend = recorder().await;
    let gw = gateway(
        FAIL_HTTP,
        &[
            ("backend", backend.addr.to_string()),
            ("authz_port", authz.port().to_string()),
        ],
    )
    .await;
    let r = send(
        gw_addr(&gw),
        "POST",
        "/x",
        &[("content-type", "text/plain")],
        b"hello",
    )
    .await;
    assert!(
        r.status.as_u16() >= 400,
        "{what}: an authz failure became status {} ({})",
        r.status,
        r.text()
    );
    assert!(backend.paths().is_empty(), "{what}: the backend was reached");
    gw.shutdown(DRAIN).await;
}

#[tokio::test]
async fn b4_http_authz_failures_fail_closed() {
    let huge_headers: String = (0..200).map(|i| format!("x-h{i}: v\r\n")).collect();
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("garbage bytes", b"\x00\x01garbage\r\n\r\n".to_vec(), true),
        ("HTTP/0.9-style body only", b"OK allowed\n".to_vec(), true),
        (
            "reset right after 200 head",
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort".to_vec(),
            true,
        ),
        (
            "truncated chunked 200",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab".to_vec(),
            true,
        ),
        (
            "bad chunk size",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n".to_vec(),
            true,
        ),
        (
            "500",
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n".to_vec(),
            true,
        ),
        (
            "503 with a body",
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\nok".to_vec(),
            true,
        ),
        (
            "599",
            b"HTTP/1.1 599 Whatever\r\nContent-Length: 0\r\n\r\n".to_vec(),
            true,
        ),
        (
            "101 switching",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n".to_vec(),
            false,
        ),
        (
            "1000 status",
            b"HTTP/1.1 1000 OK\r\nContent-Length: 0\r\n\r\n".to_vec(),
            true,
        ),
        (
            "200 with a NUL in a header",
            b"HTTP/1.1 200 OK\r\nx-a: a\x00b\r\nContent-Length: 0\r\n\r\n".to_vec(),
            true,
        ),
        (
            "200 with 200 headers",
            format!("HTTP/1.1 200 OK\r\n{huge_headers}Content-Length: 0\r\n\r\n").into_bytes(),
            true,
        ),
        (
            "200 with a 1 MiB header",
            {
                let mut v = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
                v.extend(std::iter::repeat_n(b'a', 1 << 20));
                v.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
                v
            },
            true,
        ),
        (
            "200 with CL and TE",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
            true,
        ),
        (
            "200 head then silence (timeout)",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n".to_vec(),
            false,
        ),
        (
            "100 continue then silence",
            b"HTTP/1.1 100 Continue\r\n\r\n".to_vec(),
            false,
        ),
    ];
    for (what, reply, close) in cases {
        let (authz, _) = raw_reply_server(reply, close).await;
        assert_fails_closed_http(what, authz).await;
    }
    assert_fails_closed_http("nothing listening", closed_port().await).await;
    assert_fails_closed_http("accepts and never answers", black_hole().await).await;
}

// ---------------------------------------------------------------------------------------------
// B5. Fail closed, gRPC provider: RPC errors, odd decisions and invalid OK mutations.
// ---------------------------------------------------------------------------------------------

async fn grpc_case(
    what: &str,
    answer: impl Fn(&authgate_proto::auth::CheckRequest) -> Result<CheckResponse, tonic::Status>
    + Send
    + Sync
    + 'static,
    expect_status: Option<u16>,
) {
    let backend = recorder().await;
    let (authz, seen) = scripted_grpc_authz(answer).await;
    let gw = gateway(
        GRPC_ALL,
        &[
            ("backend", backend.addr.to_string()),
            ("gp", authz.port().to_string()),
        ],
    )
    .await;
    let r = get(gw_addr(&gw), "/x", &[]).await;
    assert!(
        backend.paths().is_empty(),
        "{what}: backend reached (status {}, body {:?})",
        r.status,
        r.text()
    );
    assert!(
        !seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_empty(),
        "{what}: no check"
    );
    if let Some(s) = expect_status {
        assert_eq!(r.status.as_u16(), s, "{what}: {}", r.text());
    }
    gw.shutdown(DRAIN).await;
}

#[tokio::test]
async fn b5_grpc_authz_failures_and_odd_answers_never_allow() {
    grpc_case(
        "UNAVAILABLE",
        |_| Err(tonic::Status::unavailable("down")),
        Some(403),
    )
    .await;
    grpc_case(
        "UNIMPLEMENTED",
        |_| Err(tonic::Status::unimplemented("nope")),
        Some(403),
    )
    .await;
    grpc_case(
        "OK status code in an RPC error",
        |_| Err(tonic::Status::new(tonic::Code::Ok, "")),
        Some(403),
    )
    .await;
    grpc_case(
        "PERMISSION_DENIED without denied_response",
        |_| {
            Ok(CheckResponse {
                status: Some(rpc::Status {
                    code: 7,
                    ..Default::default()
                }),
                ..Default::default()
            })
        },
        Some(403),
    )
    .await;
    grpc_case("unknown code 99", |_| Ok(grpc_denied(99, None, "")), Some(403)).await;
    grpc_case("negative code", |_| Ok(grpc_denied(-1, None, "")), Some(403)).await;
    // The service's own status is relayed, even a 200: still a denial, nothing upstream.
    grpc_case(
        "denied_response with HTTP 200",
        |_| Ok(grpc_denied(7, Some(200), "nope")),
        Some(200),
    )
    .await;
    grpc_case(
        "denied_response with HTTP 101",
        |_| Ok(grpc_denied(7, Some(101), "")),
        Some(403),
    )
    .await;
    grpc_case(
        "denied_response with HTTP 99999",
        |_| Ok(grpc_denied(7, Some(99_999), "")),
        Some(403),
    )
    .await;
    grpc_case(
        "OK with a CR/LF header value",
        |_| Ok(grpc_ok(vec![pb_header("x-user", "a\r\nx-admin: true")])),
        Some(500),
    )
    .await;
    grpc_case(
        "OK with an invalid header name",
        |_| Ok(grpc_ok(vec![pb_header("bad header", "v")])),
        Some(500),
    )
    .await;
    grpc_case(
        "OK with a :path that is not a path",
        |_| Ok(grpc_ok(vec![pb_header(":path", "http://evil/")])),
        Some(500),
    )
    .await;
}

#[tokio::test]
async fn b5_invalid_mutation_is_500_even_with_fail_open() {
    let backend = recorder().await;
    let (authz, _) = scripted_grpc_authz(|_| Ok(grpc_ok(vec![pb_header("x-user", "a\nb")]))).await;
    let yaml = GRPC_ALL.replace("failOpen: false", "failOpen: true");
    let gw = gateway(
        &yaml,
        &[
            ("backend", backend.addr.to_string()),
            ("gp", authz.port().to_string()),
        ],
    )
    .await;
    let r = get(gw_addr(&gw), "/x", &[]).await;
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(backend.paths().is_empty());
    gw.shutdown(DRAIN).await;
}

#[tokio::test]
async fn b5_grpc_transport_failures_fail_closed() {
    for (what, authz) in [
        ("nothing listening", closed_port().await),
        ("accepts and never answers", black_hole().await),
        (
            "speaks HTTP/1.1 garbage",
            raw_reply_server(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec(), true)
                .await
                .0,
        ),
    ] {
        let backend = recorder().await;
        let yaml = GRPC_ALL.replace("timeout: 5s", "timeout: 1s");
        let gw = gateway(
            &yaml,
            &[
                ("backend", backend.addr.to_string()),
                ("gp", authz.port().to_string()),
            ],
        )
        .await;
        let r = get(gw_addr(&gw), "/x", &[]).await;
        assert_eq!(r.status, 403, "{what}: {}", r.text());
        assert!(backend.paths().is_empty(), "{what}");
        gw.shutdown(DRAIN).await;
    }
}

// ---------------------------------------------------------------------------------------------
// B6. Request smuggling on HTTP/1.1: the hidden request never reaches the backend, including
//     after an early 413 or a denial with an unread body.
// ---------------------------------------------------------------------------------------------

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: bookinfo.example.com\r\n\r\n";

#[tokio::test]
async fn b6_framing_variants_never_smuggle_a_request() {
    let (_sample, backend, gw) = seed_setup().await;
    let at = gw_addr(&gw);
    let cases = [
        format!(
            "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{SMUGGLED}"
        ),
        format!("POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{SMUGGLED}"),
        format!("POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"),
        format!("POST /x HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"),
        format!("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc{SMUGGLED}"),
        format!(
            "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\nabc{SMUGGLED}"
        ),
        format!("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc{SMUGGLED}"),
        format!(
            "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff1\r\na\r\n0\r\n\r\n{SMUGGLED}"
        ),
        format!("POST /x HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\nContent-Length: 0\r\n\r\n{SMUGGLED}"),
        format!("POST /x HTTP/1.1\r\nHost: a\r\n Content-Length: 0\r\n\r\n{SMUGGLED}"),
        format!("GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n{SMUGGLED}"),
        // A denial with the body unread: the body must be skipped by its framing, not parsed.
        format!(
            "POST /productpage HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{SMUGGLED}",
            SMUGGLED.len()
        ),
        format!(
            "POST /productpage HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n",
            SMUGGLED.len()
        ),
    ];
    for c in cases {
        // A final request closes the connection, so a desynchronized parser would have to
        // read the hidden request before it.
        let c = format!("{c}GET /after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        let _ = raw_exchange(at, c.clone().into_bytes()).await;
        assert!(
            !backend.paths().iter().any(|p| p == "/smuggled"),
            "smuggled via {c:?}: backend saw {:?}",
            backend.paths()
        );
    }
    gw.shutdown(DRAIN).await;
}

#[tokio::test]
async fn b6_oversized_body_413_does_not_desync_the_connection() {
    let (backend, _authz, _seen, gw) = body_inspecting_setup().await;
    let at = gw_addr(&gw);
    let hidden = "GET /api/hidden HTTP/1.1\r\nHost: a\r\n\r\n";
    let body = format!("{}{hidden}{}", "A".repeat(20), "B".repeat(30));
    for framing in [
        format!("Content-Length: {}\r\n\r\n{body}", body.len()),
        format!(
            "Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        ),
    ] {
        let req = format!(
            "POST /api/orders HTTP/1.1\r\nHost: a\r\n{framing}GET /after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        );
        let out = raw_exchange(at, req.into_bytes()).await;
        assert_eq!(statuses(&out).first(), Some(&413), "{}", out.text());
        assert!(
            !backend.paths().iter().any(|p| p == "/api/hidden"),
            "{:?}",
            backend.paths()
        );
    }
    gw.shutdown(DRAIN).await;
}

// ---------------------------------------------------------------------------------------------
// B7. Methods and request-target forms.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn b7_method_case_connect_and_asterisk_are_refused() {
    let (sample, backend, gw) = seed_setup().await;
    let at = gw_addr(&gw);
    for req in [
        "get /productpage HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        "Get /productpage HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        "CONNECT bookinfo.example.com:80 HTTP/1.1\r\nHost: bookinfo.example.com:80\r\nConnection: close\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        "GET productpage HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    ] {
        let r = raw_request(at, req.as_bytes()).await;
        assert_eq!(r.status, 400, "{req:?}: {}", r.text());
    }
    assert!(backend.paths().is_empty(), "{:?}", backend.paths());
    assert_eq!(sample.counters.grpc.load(Ordering::SeqCst), 0);
    gw.shutdown(DRAIN).await;
}

// ---------------------------------------------------------------------------------------------
// B8. HTTP/2 header injection and pseudo-header abuse, sent as raw frames.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn b8_h2_header_injection_and_pseudo_header_abuse_are_refused() {
    let (_sample, backend, gw) = seed_setup().await;
    let at = gw_addr(&gw);
    type H = (&'static [u8], &'static [u8]);
    let base: [H; 4] = [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":authority", b"bookinfo.example.com"),
        (b":path", b"/public"),
    ];
    // Control.
    let ok = h2_raw(at, &base, None).await;
    assert!(!ok.refused(), "control refused: {ok:?}");
    let with = |extra: &[H]| -> Vec<H> { base.iter().copied().chain(extra.iter().copied()).collect() };
    let cases: Vec<(&str, Vec<H>)> = vec![
        (
            "CRLF in a value",
            with(&[(b"x-a", b"v\r\nx-ext-authz-check-result: allowed")]),
        ),
        ("LF in a value", with(&[(b"x-a", b"v\nx: y")])),
        ("NUL in a value", with(&[(b"x-a", b"v\x00w")])),
        ("upper-case name", with(&[(b"X-A", b"v")])),
        ("colon inside a name", with(&[(b"x:a", b"v")])),
        (
            "connection header",
            with(&[(b"connection", b"x-ext-authz-check-result")]),
        ),
        ("te other than trailers", with(&[(b"te", b"gzip")])),
        ("transfer-encoding", with(&[(b"transfer-encoding", b"chunked")])),
        ("second :path", with(&[(b":path", b"/productpage")])),
        ("unknown pseudo-header", with(&[(b":x", b"1")])),
        (
            "pseudo-header after a regular one",
            vec![
                (b":method", b"GET"),
                (b"x-a", b"1"),
                (b":scheme", b"http"),
                (b":authority", b"a"),
                (b":path", b"/productpage"),
            ],
        ),
        (
            ":path with a space",
            vec![
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":authority", b"a"),
                (b":path", b"/productpage x"),
            ],
        ),
        (
            "empty :path",
            vec![
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":authority", b"a"),
                (b":path", b""),
            ],
        ),
        (
            ":path *",
            vec![
                (b":method", b"OPTIONS"),
                (b":scheme", b"http"),
                (b":authority", b"a"),
                (b":path", b"*"),
            ],
        ),
        (
            "CONNECT",
            vec![(b":method", b"CONNECT"), (b":authority", b"127.0.0.1:1")],
        ),
        (
            "extended CONNECT",
            vec![
                (b":method", b"CONNECT"),
                (b":protocol", b"websocket"),
                (b":scheme", b"http"),
                (b":authority", b"a"),
                (b":path", b"/productpage"),
            ],
        ),
        (
            "lower-case :method",
            vec![
                (b":method", b"get"),
                (b":scheme", b"http"),
                (b":authority", b"a"),
                (b":path", b"/public"),
            ],
        ),
    ];
    for (what, headers) in cases {
        let o = h2_raw(at, &headers, None).await;
        assert!(o.refused(), "{what}: accepted: {o:?}");
    }
    // A body longer than its content-length.
    let o = h2_raw(
        at,
        &[
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":authority", b"a"),
            (b":path", b"/public"),
            (b"content-length", b"3"),
        ],
        Some(b"abcdef"),
    )
    .await;
    assert!(o.refused(), "content-length mismatch accepted: {o:?}");
    assert_eq!(backend.paths(), vec!["/public".to_owned()], "only the control");
    gw.shutdown(DRAIN).await;
}

// ---------------------------------------------------------------------------------------------
// B9. One authority end to end: absolute-form beats Host, h2 :authority beats host, duplicate
//     Host is 400; the authority the policy matched is the Host the backend gets.
// ---------------------------------------------------------------------------------------------

const HOSTS: &str = r#"
listeners: [{ address: "127.0.0.1:0" }]
backends: [{ name: app, endpoints: ["{{backend}}"] }]
routes: [{ name: sites, hosts: ["*.example.com"], backend: app }]
extensionProviders:
  - name: grpc
    envoyExtAuthzGrpc: { service: "127.0.0.1", port: {{gp}}, timeout: 5s }
authorizationPolicies:
  - name: protect-admin-site
    action: CUSTOM
    provider: { name: grpc }
    rules: [{ to: [{ operation: { hosts: ["admin.example.com", "admin.example.com:*"] } }] }]
"#;

#[tokio::test]
async fn b9_host_disagreements_resolve_to_one_checked_authority() {
    let sample = start_sample().await;
    let backend = recorder().await;
    let gw = gateway(
        HOSTS,
        &[
            ("backend", backend.addr.to_string()),
            ("gp", sample.authz_grpc.port().to_string()),
        ],
    )
    .await;
    let at = gw_addr(&gw);
    for req in [
        "GET http://admin.example.com/x HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n",
        "GET http://ADMIN.example.com./x HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: Admin.Example.Com.:8080\r\nConnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: www.example.com\r\nHost: admin.example.com\r\nConnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: admin.example.com\r\nHost: www.example.com\r\nConnection: close\r\n\r\n",
    ] {
        let r = raw_request(at, req.as_bytes()).await;
        assert!(
            r.status == 403 || r.status == 400,
            "{req:?}: {} {}",
            r.status,
            r.text()
        );
    }
    // h2: :authority admin, host www → admin is checked.
    let o = h2_raw(
        at,
        &[
            (b":method", b"GET"),
            (b":scheme", b"http"),
            (b":authority", b"admin.example.com"),
            (b":path", b"/x"),
            (b"host", b"www.example.com"),
        ],
        None,
    )
    .await;
    assert!(o.refused(), "h2 :authority/host disagreement not checked: {o:?}");
    // A forwarded www request carries the authority it was routed with.
    let r = raw_request(
        at,
        b"GET http://www.example.com/x HTTP/1.1\r\nHost: admin.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = backend.recorded();
    assert_eq!(rec.len(), 1, "{:?}", backend.paths());
    assert_eq!(
        header_str(&rec[0].headers, "host"),
        vec!["www.example.com".to_owned()]
    );
    gw.shutdown(DRAIN).await;
}

// ---------------------------------------------------------------------------------------------
// B10. remoteIpBlocks cannot be dodged with X-Forwarded-For tricks.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn b10_xff_spoofing_does_not_dodge_remote_ip_blocks() {
    let backend = recorder().await;
    let none = r#"
listeners: [{ address: "127.0.0.1:0" }]
backends: [{ name: app, endpoints: ["{{backend}}"] }]
routes: [{ name: all, backend: app }]
gateway: { numTrustedProxies: {{hops}} }
authorizationPolicies:
  - name: block
    action: DENY
    rules: [{ from: [{ source: { remoteIpBlocks: ["{{blocked}}"] } }] }]
"#;
    // No trusted proxies: XFF is ignored, the peer (127.0.0.1) is blocked.
    let gw = gateway(
        none,
        &[
            ("backend", backend.addr.to_string()),
            ("hops", "0".into()),
            ("blocked", "127.0.0.0/8".into()),
        ],
    )
    .await;
    for xff in ["1.2.3.4", "1.2.3.4, 5.6.7.8", "garbage", "::ffff:8.8.8.8"] {
        let r = get(gw_addr(&gw), "/x", &[("x-forwarded-for", xff)]).await;
        assert_eq!(r.status, 403, "xff {xff}: {}", r.text());
    }
    gw.shutdown(DRAIN).await;
    // One trusted proxy that appended the real client on its own line: still blocked.
    let gw = gateway(
        none,
        &[
            ("backend", backend.addr.to_string()),
            ("hops", "1".into()),
            ("blocked", "203.0.113.0/24".into()),
        ],
    )
    .await;
    for raw in [
        "GET /x HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 203.0.113.9\r\nConnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.1.1.1, 203.0.113.9\r\nConnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.1.1.1,::ffff:203.0.113.9\r\nConnection: close\r\n\r\n",
    ] {
        let r = raw_request(gw_addr(&gw), raw.as_bytes()).await;
        assert_eq!(r.status, 403, "{raw:?}: {}", r.text());
    }
    assert!(backend.paths().is_empty(), "{:?}", backend.paths());
    gw.shutdown(DRAIN).await;
}

// ---------------------------------------------------------------------------------------------
// B11. Expect: 100-continue with body buffering: the check sees the body; oversize → 413.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn b11_expect_continue_bodies_are_inspected() {
    let (backend, _authz, seen, gw) = body_inspecting_setup().await;
    let at = gw_addr(&gw);
    let body = "DROP TABLE x";
    let req = format!(
        "POST /api/orders HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let out = raw_exchange(at, req.into_bytes()).await;
    assert!(statuses(&out).contains(&403), "{}", out.text());
    let checks = seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].body.as_ref(), body.as_bytes());
    let big = "y".repeat(64);
    let req = format!(
        "POST /api/orders HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{big}",
        big.len()
    );
    let out = raw_exchange(at, req.into_bytes()).await;
    assert!(statuses(&out).contains(&413), "{}", out.text());
    assert!(backend.paths().is_empty(), "{:?}", backend.paths());
    gw.shutdown(DRAIN).await;
}

// ---------------------------------------------------------------------------------------------
// B12. Resource exhaustion, kept modest: an h2 rapid-reset burst and oversized header blocks
//      leave the gateway serving.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn b12_h2_rapid_reset_and_header_floods_leave_the_gateway_serving() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_sample, backend, gw) = seed_setup().await;
    let at = gw_addr(&gw);
    // 2000 HEADERS+RST_STREAM pairs on one connection.
    let mut block = Vec::new();
    for (k, v) in [
        (&b":method"[..], &b"GET"[..]),
        (b":scheme", b"http"),
        (b":authority", b"a"),
        (b":path", b"/public"),
    ] {
        block.push(0);
        block.push(k.len() as u8);
        block.extend_from_slice(k);
        block.push(v.len() as u8);
        block.extend_from_slice(v);
    }
    let frame = |kind: u8, flags: u8, stream: u32, payload: &[u8]| {
        let len = payload.len() as u32;
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    };
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(4, 0, 0, b""));
    for i in 0..2000u32 {
        let id = 1 + 2 * i;
        out.extend(frame(1, 0x5, id, &block));
        out.extend(frame(3, 0, id, &8u32.to_be_bytes()));
    }
    let mut s = within("connect", tokio::net::TcpStream::connect(at))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = within("write burst", s.write_all(&out)).await;
    let mut sink = vec![0u8; 65536];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, s.read(&mut sink)).await {
        if n == 0 {
            break;
        }
    }
    drop(s);
    // A header block far over the 60 KiB limit.
    let huge = "v".repeat(100 * 1024);
    let o = h2_raw(
        at,
        &[
            (b":method", b"GET"),
            (b":scheme", b"http"),
            (b":authority", b"a"),
            (b":path", b"/public"),
            (b"x-big", huge.as_bytes()),
        ],
        None,
    )
    .await;
    assert!(o.refused(), "100 KiB header accepted");
    // Many small headers over HTTP/1.1.
    let many: String = (0..5000).map(|i| format!("x-{i}: 1\r\n")).collect();
    let out = raw_exchange(
        at,
        format!("GET /public HTTP/1.1\r\nHost: a\r\n{many}\r\n").into_bytes(),
    )
    .await;
    assert!(
        statuses(&out).iter().all(|s| *s == 431 || *s == 400),
        "{:?}",
        statuses(&out)
    );
    // Still serving.
    let r = get(at, "/public", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(backend.paths().iter().any(|p| p == "/public"));
    gw.shutdown(DRAIN).await;
}

// ---------------------------------------------------------------------------------------------
// B13. Configuration inputs never panic `validate` (exit 0 or 1, never a panic's 101).
// ---------------------------------------------------------------------------------------------

#[test]
fn b13_hostile_configs_never_panic_validate() {
    let dir = TempDir::new("adv-config");
    let bomb = "a: &a [1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nlisteners: *g\n";
    let deep = format!("listeners: {}{}", "[".repeat(50_000), "]".repeat(50_000));
    let cases: Vec<(&str, String)> = vec![
        ("empty.yaml", String::new()),
        ("bomb.yaml", bomb.to_owned()),
        ("deep.yaml", deep),
        ("tabs.yaml", "\t\tlisteners:\n\t- x".to_owned()),
        ("nul.yaml", "listeners: [\u{0}]".to_owned()),
        ("bom.yaml", "\u{feff}listeners: []".to_owned()),
        ("huge-port.yaml", "extensionProviders: [{ name: x, envoyExtAuthzGrpc: { service: a, port: 99999999999999999999999 } }]".to_owned()),
        ("huge-timeout.yaml", "extensionProviders: [{ name: x, envoyExtAuthzGrpc: { service: a, port: 1, timeout: \"1e400s\" } }]".to_owned()),
        ("long-timeout.yaml", "extensionProviders: [{ name: x, envoyExtAuthzGrpc: { service: a, port: 1, timeout: \"315576000000s\", statusOnError: \"-1\" } }]".to_owned()),
        ("unicode.yaml", "listeners: [{ address: \"１２７.0.0.1:80\" }]\nbackends: [{ name: \"💥\", endpoints: [\"ホスト:80\", \":80\", \"[::1\", \"a:b:c:80\"] }]\nroutes: [{ backend: \"💥\", hosts: [\"*\", \"\", \"*.\"], match: { prefix: \"\" } }]\nauthorizationPolicies: [{ name: p, action: CUSTOM, provider: { name: \"é\" }, rules: [{ to: [{ operation: { paths: [\"/{**}/{*}\", \"{**}\", \"/{*}x\"], ports: [\"65536\"] } }], when: [{ key: \"request.headers[é]\", values: [\"x\"] }] }] }]".to_owned()),
        ("types.yaml", "listeners: 5\nroutes: {a: b}\nbackends: \"x\"".to_owned()),
        ("include-dir.yaml", "include: [\".\", \"/nonexistent\", \"/dev/null\"]".to_owned()),
    ];
    for (name, text) in cases {
        let path = dir.write(name, &text);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_authgate"))
            .arg("validate")
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap_or_else(|e| panic!("spawn: {e}"));
        let code = out.status.code();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            matches!(code, Some(0) | Some(1)) && !stderr.contains("panicked"),
            "{name}: exit {code:?}\n{stderr}"
        );
    }
    // A directory as the config file.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_authgate"))
        .arg("validate")
        .arg("--config")
        .arg(dir.path())
        .output()
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    assert_eq!(out.status.code(), Some(1));
}
