//! Issue 5: request-smuggling guards over raw TCP. Each ambiguous framing gets 400 and a closed
//! connection, and the backend (a recorder) never sees the request hidden behind it. Also the
//! header-size limit (431) and `Connection:`-nominated header stripping.

mod common;

use std::time::Duration;

use authgate_proxy::Gateway;
use common::*;

const CONFIG: &str = r#"
listeners: [{ address: "127.0.0.1:0" }]
backends: [{ name: b, endpoints: ["{{backend}}"] }]
routes: [{ name: all, backend: b }]
"#;

async fn setup() -> (Recorder, Gateway) {
    let backend = recorder().await;
    let gw = gateway(CONFIG, &[("backend", backend.addr.to_string())]).await;
    (backend, gw)
}

/// The request a smuggler hides in the first request's body.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: bookinfo.example.com\r\n\r\n";

/// `POST /first` with `framing` header lines and `body` (which embeds [`SMUGGLED`]).
fn attack(framing: &str, body: &str) -> Vec<u8> {
    format!("POST /first HTTP/1.1\r\nHost: bookinfo.example.com\r\n{framing}\r\n{body}").into_bytes()
}

/// A chunked body that ends immediately, followed by the smuggled request.
fn chunked_then_smuggled() -> String {
    format!("0\r\n\r\n{SMUGGLED}")
}

async fn assert_rejected(name: &str, bytes: Vec<u8>) {
    let (backend, gw) = setup().await;
    let out = raw_exchange(gw_addr(&gw), bytes).await;
    let statuses = out.statuses();
    // Let any (wrongly) forwarded request land before looking at the backend.
    let probe = get(gw_addr(&gw), "/probe", &[]).await;
    assert_eq!(probe.status, 200);
    let seen = backend.paths();
    let facts = format!(
        "{name}: responses {statuses:?}, connection closed: {}, backend saw {seen:?}; raw reply:\n{}",
        out.closed,
        out.text()
    );
    assert!(
        !seen.iter().any(|p| p == "/smuggled"),
        "the smuggled request reached the backend. {facts}"
    );
    assert_eq!(statuses, vec![400], "exactly one response, 400. {facts}");
    assert!(out.closed, "the connection must be closed after the 400. {facts}");
    assert_eq!(
        seen,
        vec!["/probe".to_owned()],
        "a rejected request is never forwarded. {facts}"
    );
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn control_pipelined_requests_do_reach_the_backend() {
    // Without ambiguity, two pipelined requests are two requests: proves the probes above can
    // see a second request if one got through.
    let (backend, gw) = setup().await;
    let bytes = "GET /first HTTP/1.1\r\nHost: bookinfo.example.com\r\n\r\nGET /second HTTP/1.1\r\nHost: bookinfo.example.com\r\nConnection: close\r\n\r\n";
    let out = raw_exchange(gw_addr(&gw), bytes.as_bytes().to_vec()).await;
    assert_eq!(out.statuses(), vec![200, 200], "{}", out.text());
    assert!(out.closed);
    assert_eq!(backend.paths(), vec!["/first".to_owned(), "/second".to_owned()]);
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn content_length_and_transfer_encoding() {
    let body = chunked_then_smuggled();
    let framing = format!("Content-Length: {}\r\nTransfer-Encoding: chunked\r\n", body.len());
    assert_rejected("CL then TE", attack(&framing, &body)).await;
}

#[tokio::test]
async fn transfer_encoding_and_content_length() {
    let body = chunked_then_smuggled();
    let framing = format!("Transfer-Encoding: chunked\r\nContent-Length: {}\r\n", body.len());
    assert_rejected("TE then CL", attack(&framing, &body)).await;
}

#[tokio::test]
async fn two_different_content_lengths() {
    let framing = format!("Content-Length: 0\r\nContent-Length: {}\r\n", SMUGGLED.len());
    assert_rejected("CL 0 + CL n", attack(&framing, SMUGGLED)).await;
}

#[tokio::test]
async fn transfer_encoding_gzip_chunked() {
    let body = chunked_then_smuggled();
    let framing = format!(
        "Transfer-Encoding: gzip, chunked\r\nContent-Length: {}\r\n",
        body.len()
    );
    assert_rejected("TE gzip, chunked + CL", attack(&framing, &body)).await;
    assert_rejected(
        "TE gzip, chunked",
        attack("Transfer-Encoding: gzip, chunked\r\n", &body),
    )
    .await;
}

#[tokio::test]
async fn transfer_encoding_chunked_twice() {
    let body = chunked_then_smuggled();
    assert_rejected(
        "TE chunked twice",
        attack(
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            &body,
        ),
    )
    .await;
    assert_rejected(
        "TE chunked, chunked",
        attack("Transfer-Encoding: chunked, chunked\r\n", &body),
    )
    .await;
}

#[tokio::test]
async fn obs_fold_and_space_before_colon() {
    let body = chunked_then_smuggled();
    let cl = format!("Content-Length: {}\r\n", body.len());
    // obs-fold: the value continues on the next line.
    assert_rejected(
        "obs-fold TE",
        attack(&format!("{cl}Transfer-Encoding:\r\n chunked\r\n"), &body),
    )
    .await;
    assert_rejected(
        "obs-fold after a harmless header",
        attack(
            &format!("{cl}X-Padding: a\r\n Transfer-Encoding: chunked\r\n"),
            &body,
        ),
    )
    .await;
    // Whitespace between the field name and the colon.
    assert_rejected(
        "Transfer-Encoding : chunked",
        attack(&format!("{cl}Transfer-Encoding : chunked\r\n"), &body),
    )
    .await;
    assert_rejected(
        "Transfer-Encoding\\t: chunked",
        attack(&format!("{cl}Transfer-Encoding\t: chunked\r\n"), &body),
    )
    .await;
}

#[tokio::test]
async fn oversized_request_headers_are_431() {
    let (backend, gw) = setup().await;
    let mut head = String::from("GET /big HTTP/1.1\r\nHost: bookinfo.example.com\r\n");
    for i in 0..40 {
        head.push_str(&format!("x-filler-{i}: {}\r\n", "a".repeat(2000)));
    }
    head.push_str("\r\n");
    assert!(head.len() > 80_000);
    let out = raw_exchange(gw_addr(&gw), head.into_bytes()).await;
    assert_eq!(out.statuses(), vec![431], "{}", out.text());
    assert!(out.closed, "connection closed after 431");
    assert!(backend.paths().is_empty(), "{:?}", backend.paths());
    gw.shutdown(Duration::from_secs(1)).await;
}

// --- Connection-nominated headers -------------------------------------------------------------

const AUTHZ: &str = r#"
listeners: [{ address: "127.0.0.1:0" }]
backends: [{ name: bookinfo, endpoints: ["{{backend}}"] }]
routes: [{ name: all, backend: bookinfo }]
extensionProviders:
  - name: grpc
    envoyExtAuthzGrpc: { service: "{{gh}}", port: {{gp}} }
  - name: http
    envoyExtAuthzHttp:
      service: "{{hh}}"
      port: {{hp}}
      includeRequestHeadersInCheck: [x-ext-authz]
      headersToUpstreamOnAllow: [x-ext-authz-check-result]
authorizationPolicies:
  - { name: g, action: CUSTOM, provider: { name: grpc }, rules: [{ to: [{ operation: { paths: ["/echo/g"] } }] }] }
  - { name: h, action: CUSTOM, provider: { name: http }, rules: [{ to: [{ operation: { paths: ["/echo/h"] } }] }] }
"#;

#[tokio::test]
async fn connection_header_cannot_drop_headers_the_gateway_or_authz_adds() {
    let sample = start_sample().await;
    let gw = gateway(
        AUTHZ,
        &[
            ("backend", sample.backend.to_string()),
            ("gh", sample.authz_grpc.ip().to_string()),
            ("gp", sample.authz_grpc.port().to_string()),
            ("hh", sample.authz_http.ip().to_string()),
            ("hp", sample.authz_http.port().to_string()),
        ],
    )
    .await;
    for path in ["/echo/g", "/echo/h"] {
        let r = get(
            gw_addr(&gw),
            path,
            &[
                ("x-ext-authz", "allow"),
                (
                    "connection",
                    "x-ext-authz-check-result, x-forwarded-for, x-forwarded-proto, x-request-id",
                ),
                ("x-ext-authz-check-result", "client-value"),
            ],
        )
        .await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(
            echoed_header(&r, "x-ext-authz-check-result"),
            vec!["allowed".to_owned()],
            "{path}: the authz service's header survives a Connection: nomination"
        );
        assert_eq!(
            echoed_header(&r, "x-forwarded-for"),
            vec!["127.0.0.1".to_owned()],
            "{path}"
        );
        assert_eq!(
            echoed_header(&r, "x-forwarded-proto"),
            vec!["http".to_owned()],
            "{path}"
        );
        assert_eq!(
            echoed_header(&r, "x-request-id").len(),
            1,
            "{path}: x-request-id generated"
        );
        assert!(
            echoed_header(&r, "connection").is_empty(),
            "{path}: hop-by-hop stripped"
        );
    }
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn every_connection_line_nominates_hop_by_hop_headers() {
    // RFC 9110 §5.3/§7.6.1: Connection is a list; several lines are one list. Every header it
    // names is hop-by-hop and must not be forwarded.
    let sample = start_sample().await;
    let gw = gateway(
        "listeners: [{ address: \"127.0.0.1:0\" }]\nbackends: [{ name: b, endpoints: [\"{{b}}\"] }]\nroutes: [{ backend: b }]\n",
        &[("b", sample.backend.to_string())],
    )
    .await;
    let raw = "GET /echo/hop HTTP/1.1\r\nHost: bookinfo.example.com\r\nConnection: keep-alive\r\nConnection: x-hop-one\r\nConnection: x-hop-two, close\r\nx-hop-one: 1\r\nx-hop-two: 2\r\nx-end-to-end: 3\r\n\r\n";
    let out = raw_exchange(gw_addr(&gw), raw.as_bytes().to_vec()).await;
    assert_eq!(out.statuses(), vec![200], "{}", out.text());
    let responses = out.responses();
    let body = responses.first().map(|r| r.2.clone()).unwrap_or_default();
    let json: serde_json::Value =
        serde_json::from_slice(&body).unwrap_or_else(|e| panic!("echo JSON ({e}): {}", out.text()));
    let names: Vec<String> = json["headers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.get(0).and_then(|n| n.as_str()).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    assert!(names.iter().any(|n| n == "x-end-to-end"), "{names:?}");
    assert!(
        !names.iter().any(|n| n == "x-hop-one" || n == "x-hop-two"),
        "headers nominated by any Connection line are stripped: {names:?}"
    );
    gw.shutdown(Duration::from_secs(1)).await;
}
