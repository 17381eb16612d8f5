//! The demo backend over real sockets.

mod common;

use common::{raw_http, start_backend};

#[tokio::test]
async fn productpage_is_html_with_content_length() {
    let backend = start_backend().await;
    let response = raw_http(
        backend,
        b"GET /productpage HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header_str("content-type").as_deref(),
        Some("text/html; charset=utf-8")
    );
    let length = response.header_str("content-length").unwrap_or_default();
    assert_eq!(length, response.body.len().to_string());
    assert!((4_000..6_000).contains(&response.body.len()));
    assert!(response.body.starts_with(b"<!DOCTYPE html>"));
    assert!(response.header("x-backend-received-check-result").is_none());
}

#[tokio::test]
async fn head_keeps_the_length_not_the_body() {
    let backend = start_backend().await;
    let get = raw_http(
        backend,
        b"GET /productpage HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n",
    )
    .await;
    let head = raw_http(
        backend,
        b"HEAD /productpage HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), get.header("content-length"));
    assert!(head.body.is_empty());
}

#[tokio::test]
async fn products_health_and_not_found() {
    let backend = start_backend().await;
    let products = raw_http(
        backend,
        b"GET /api/v1/products HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(products.status, 200);
    assert_eq!(
        products.header_str("content-type").as_deref(),
        Some("application/json")
    );
    let list: serde_json::Value = serde_json::from_slice(&products.body).expect("JSON");
    assert!(list.as_array().is_some_and(|products| products.len() >= 2));
    assert!((300..500).contains(&products.body.len()));

    let health = raw_http(
        backend,
        b"GET /health HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!((health.status, health.body.as_slice()), (200, &b"ok"[..]));
    assert_eq!(health.header_str("content-length").as_deref(), Some("2"));

    let missing = raw_http(
        backend,
        b"GET /nope HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(missing.status, 404);

    let wrong_method = raw_http(
        backend,
        b"DELETE /productpage HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.header_str("allow").as_deref(), Some("GET, HEAD"));
}

#[tokio::test]
async fn reports_the_check_result_it_received() {
    let backend = start_backend().await;
    for path in ["/productpage", "/nope", "/echo/x"] {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: b\r\nx-ext-authz-check-result: allowed\r\nConnection: close\r\n\r\n"
        );
        let response = raw_http(backend, request.as_bytes()).await;
        assert_eq!(
            response.header_str("x-backend-received-check-result").as_deref(),
            Some("allowed"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn echo_shows_what_reached_the_backend() {
    let backend = start_backend().await;
    let response = raw_http(
        backend,
        b"POST /echo/a/b?c=1&d=2 HTTP/1.1\r\nHost: upstream.local\r\nX-One: 1\r\n\
          x-two: a\r\nx-two: b\r\nContent-Length: 11\r\nConnection: close\r\n\r\nhello world",
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header_str("content-type").as_deref(),
        Some("application/json")
    );
    let echoed: serde_json::Value = serde_json::from_slice(&response.body).expect("JSON");
    assert_eq!(
        echoed,
        serde_json::json!({
            "method": "POST",
            "path": "/echo/a/b?c=1&d=2",
            "version": "HTTP/1.1",
            "authority": null,
            "headers": [
                ["host", "upstream.local"],
                ["x-one", "1"],
                ["x-two", "a"],
                ["x-two", "b"],
                ["content-length", "11"],
                ["connection", "close"],
            ],
            "body_len": 11,
        })
    );
}

#[tokio::test]
async fn keep_alive_serves_several_requests_on_one_connection() {
    let backend = start_backend().await;
    // Two pipelined requests, the first with a body the route ignores; then close.
    let reply = common::raw_exchange(
        backend,
        b"POST /health HTTP/1.1\r\nHost: b\r\nContent-Length: 3\r\n\r\nabc\
          GET /health HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n",
    )
    .await;
    let text = String::from_utf8_lossy(&reply);
    assert_eq!(text.matches("HTTP/1.1 ").count(), 2, "{text}");
    assert!(text.starts_with("HTTP/1.1 405"));
    assert!(text.ends_with("\r\n\r\nok"));
}

#[tokio::test]
async fn dropping_the_server_closes_its_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (listener, addr) = common::listener().await;
    let server = tokio::spawn(authgate_sample::serve_backend(listener));
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: b\r\n\r\n")
        .await
        .expect("write");
    let mut first = [0u8; 12];
    stream.read_exact(&mut first).await.expect("response");
    assert_eq!(&first, b"HTTP/1.1 200");

    server.abort();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(common::TIMEOUT, stream.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the kept-alive connection is closed, not left open");
}
