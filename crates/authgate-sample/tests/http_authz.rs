//! The HTTP check server over real sockets, compared byte for byte with the Go sample.

mod common;

use std::sync::atomic::Ordering;

use authgate_sample::{DENY_BODY, SampleConfig};
use bytes::Bytes;
use common::{raw_http, start_authz};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};

#[tokio::test]
async fn allow_answers_200_with_the_three_headers() {
    let authz = start_authz(SampleConfig::default()).await;
    let response = raw_http(
        authz.http,
        b"GET /check/productpage?x=1 HTTP/1.1\r\n\
          Host: authz.local\r\n\
          x-ext-authz: allow\r\n\
          X-Forwarded-For: 10.0.0.1\r\n\
          x-multi: one\r\n\
          x-multi: two\r\n\
          Connection: close\r\n\r\n",
    )
    .await;

    assert_eq!(response.status, 200);
    assert!(response.head.starts_with("HTTP/1.1 200 OK\r\n"));
    // Go writes canonical header names.
    assert!(
        response
            .head
            .contains("\r\nX-Ext-Authz-Check-Result: allowed\r\n")
    );
    assert!(
        response
            .head
            .contains("\r\nX-Ext-Authz-Additional-Header-Override: \r\n")
    );
    assert!(response.head.contains("\r\nContent-Length: 0\r\n"));
    assert!(response.header("date").is_some());
    assert_eq!(
        response.header_str("x-ext-authz-check-received").as_deref(),
        Some(
            "GET authz.local/check/productpage?x=1, headers: map[Connection:[close] \
             X-Ext-Authz:[allow] X-Forwarded-For:[10.0.0.1] X-Multi:[one two]], body: []"
        )
    );
    assert!(response.body.is_empty());
    assert_eq!(authz.counters.http.load(Ordering::Relaxed), 1);
    assert_eq!(authz.counters.grpc.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn deny_answers_403_with_the_76_byte_body() {
    let authz = start_authz(SampleConfig::default()).await;
    let response = raw_http(
        authz.http,
        b"POST /check HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nx-ext-authz: deny\r\n\
          x-ext-authz-additional-header-override: from-client\r\nConnection: close\r\n\r\nhello",
    )
    .await;

    assert_eq!(response.status, 403);
    assert!(response.head.starts_with("HTTP/1.1 403 Forbidden\r\n"));
    assert_eq!(
        response.header_str("content-type").as_deref(),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(response.header_str("content-length").as_deref(), Some("76"));
    assert_eq!(response.body, DENY_BODY.as_bytes());
    assert_eq!(
        response.body,
        b"denied by ext_authz for not found header `x-ext-authz: allow` in the request"
    );
    assert_eq!(
        response.header_str("x-ext-authz-check-result").as_deref(),
        Some("denied")
    );
    // The override header echoes the check request's own value.
    assert_eq!(
        response
            .header_str("x-ext-authz-additional-header-override")
            .as_deref(),
        Some("from-client")
    );
    assert_eq!(
        response.header_str("x-ext-authz-check-received").as_deref(),
        Some(
            "POST a/check, headers: map[Connection:[close] Content-Length:[5] \
             X-Ext-Authz:[deny] X-Ext-Authz-Additional-Header-Override:[from-client]], \
             body: [hello]"
        )
    );
}

#[tokio::test]
async fn only_exactly_allow_allows() {
    let authz = start_authz(SampleConfig::default()).await;
    for value in ["Allow", "ALLOW", "allow,allow", "deny", ""] {
        let request =
            format!("GET /p HTTP/1.1\r\nHost: a\r\nx-ext-authz: {value}\r\nConnection: close\r\n\r\n");
        let response = raw_http(authz.http, request.as_bytes()).await;
        assert_eq!(response.status, 403, "x-ext-authz: {value:?}");
    }
    let missing = raw_http(
        authz.http,
        b"GET /p HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(missing.await.status, 403);
    assert_eq!(authz.counters.http.load(Ordering::Relaxed), 6);
}

#[tokio::test]
async fn the_first_header_value_decides() {
    let authz = start_authz(SampleConfig::default()).await;
    let first_allow = raw_http(
        authz.http,
        b"GET / HTTP/1.1\r\nHost: a\r\nx-ext-authz: allow\r\nx-ext-authz: deny\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(first_allow.status, 200);
    let first_deny = raw_http(
        authz.http,
        b"GET / HTTP/1.1\r\nHost: a\r\nx-ext-authz: deny\r\nx-ext-authz: allow\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(first_deny.status, 403);
}

#[tokio::test]
async fn long_body_becomes_too_long_and_newlines_become_spaces() {
    let authz = start_authz(SampleConfig::default()).await;
    let send = |body: Vec<u8>| {
        let mut request = format!(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(&body);
        async move { raw_http(authz.http, &request).await }
    };

    let received = |response: &common::RawResponse| {
        response
            .header_str("x-ext-authz-check-received")
            .unwrap_or_default()
    };
    let at_limit = send(vec![b'x'; 60_000]).await;
    assert!(received(&at_limit).ends_with(&format!("body: [{}]", "x".repeat(60_000))));
    let over_limit = send(vec![b'x'; 60_001]).await;
    assert!(received(&over_limit).ends_with("body: [<too-long>]"));
    let multi_line = send(b"a\nb\r\nc".to_vec()).await;
    assert!(received(&multi_line).ends_with("body: [a b  c]"));
}

#[tokio::test]
async fn h2c_reports_the_path_not_the_full_uri() {
    let authz = start_authz(SampleConfig::default()).await;
    let stream = tokio::net::TcpStream::connect(authz.http).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(connection);
    let request = http::Request::get("http://authz.local/check?q=1")
        .header("x-ext-authz", "allow")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-ext-authz-check-received"],
        "GET authz.local/check?q=1, headers: map[X-Ext-Authz:[allow]], body: []"
    );
    let body = response.into_body().collect().await.expect("body");
    assert!(body.to_bytes().is_empty());
}

#[tokio::test]
async fn garbage_does_not_stop_the_server() {
    let authz = start_authz(SampleConfig::default()).await;
    let garbage = common::raw_exchange(authz.http, b"\x00\xff\r\n\r\nNOT HTTP AT ALL\r\n\r\n").await;
    assert!(garbage.is_empty() || garbage.starts_with(b"HTTP/1.1 400"));
    let response = raw_http(
        authz.http,
        b"GET / HTTP/1.1\r\nHost: a\r\nx-ext-authz: allow\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(response.status, 200);
}

#[tokio::test]
async fn run_ext_authz_reports_a_port_in_use() {
    let (_held, addr) = common::listener().await;
    let free = "127.0.0.1:0".parse().expect("addr");
    let result = authgate_sample::run_ext_authz(addr, free, SampleConfig::default()).await;
    assert!(result.is_err());
}

#[tokio::test]
async fn run_ext_authz_serves_until_dropped() {
    let any = "127.0.0.1:0".parse().expect("addr");
    let run = authgate_sample::run_ext_authz(any, any, SampleConfig::default());
    let still_running = tokio::time::timeout(std::time::Duration::from_millis(200), run).await;
    assert!(still_running.is_err(), "serves until the future is dropped");
}
