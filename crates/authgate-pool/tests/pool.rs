//! The pool against real hyper (and raw TCP) servers on 127.0.0.1.
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use authgate_pool::{Config, Pool, Protocol};
use bytes::Bytes;
use futures_util::future::join_all;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

type TestPool = Pool<HttpConnector, Full<Bytes>>;

#[derive(Default)]
struct Counts {
    accepted: AtomicUsize,
    requests: AtomicUsize,
    /// `x-id` of each request the raw server read.
    ids: std::sync::Mutex<Vec<String>>,
}

impl Counts {
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

type Handler = Arc<dyn Fn(Request<Incoming>) -> Response<ServerBody> + Send + Sync>;
type ServerBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn full(s: &'static str) -> ServerBody {
    Full::new(Bytes::from_static(s.as_bytes())).boxed()
}

/// A hyper server (HTTP/1.1 with keep-alive, or h2c) running `handler` after `delay`.
async fn server(h2: bool, delay: Duration, handler: Handler) -> (SocketAddr, Arc<Counts>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            c.accepted.fetch_add(1, Ordering::SeqCst);
            let c = c.clone();
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    c.requests.fetch_add(1, Ordering::SeqCst);
                    let handler = handler.clone();
                    async move {
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        Ok::<_, Infallible>(handler(req))
                    }
                });
                let io = TokioIo::new(stream);
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, service)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .with_upgrades()
                        .await;
                }
            });
        }
    });
    (addr, counts)
}

fn ok_handler() -> Handler {
    Arc::new(|_req| Response::new(full("hello")))
}

fn pool(addr: SocketAddr, protocol: Protocol) -> TestPool {
    pool_with(addr, protocol, Duration::from_secs(60))
}

fn pool_with(addr: SocketAddr, protocol: Protocol, idle_timeout: Duration) -> TestPool {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let config = Config {
        protocol,
        idle_timeout,
        max_idle: 1024,
    };
    Pool::new(connector, format!("http://{addr}").parse().unwrap(), &config)
}

fn get(addr: SocketAddr, path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("http://{addr}{path}"))
        .header(http::header::HOST, "example.test")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

async fn get_text(pool: &TestPool, addr: SocketAddr, path: &str) -> (StatusCode, String) {
    let resp = pool.send(get(addr, path)).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn sequential_requests_reuse_one_connection() {
    let handler: Handler = Arc::new(|req| {
        // The request target is sent in origin form with the caller's Host.
        let seen = format!(
            "{} {}",
            req.uri(),
            req.headers().get("host").unwrap().to_str().unwrap()
        );
        Response::new(Full::new(Bytes::from(seen)).boxed())
    });
    let (addr, counts) = server(false, Duration::ZERO, handler).await;
    let pool = pool(addr, Protocol::Http1);
    for i in 0..10 {
        let (status, body) = get_text(&pool, addr, &format!("/r/{i}?q=1")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, format!("/r/{i}?q=1 example.test"));
    }
    assert_eq!(counts.accepted(), 1);
    assert_eq!(counts.requests(), 10);
    assert_eq!(pool.idle_count(), 1);
}

#[tokio::test]
async fn streamed_and_empty_bodies_return_the_connection() {
    let handler: Handler = Arc::new(|req| match req.uri().path() {
        "/chunked" => Response::new(Chunks(vec!["a", "bb", "ccc"]).boxed()),
        "/empty" => Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(full(""))
            .unwrap(),
        _ => Response::new(full("hello")),
    });
    let (addr, counts) = server(false, Duration::ZERO, handler).await;
    let pool = pool(addr, Protocol::Http1);
    for _ in 0..3 {
        assert_eq!(get_text(&pool, addr, "/chunked").await.1, "abbccc");
        let resp = pool.send(get(addr, "/empty")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        // Never polled: the body was already at its end.
        drop(resp);
        let head = Request::head(format!("http://{addr}/"))
            .header("host", "x")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = pool.send(head).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        drop(resp);
    }
    assert_eq!(counts.accepted(), 1);
    assert_eq!(counts.requests(), 9);
}

/// A body of several data frames and no known length: sent chunked.
struct Chunks(Vec<&'static str>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let next = if self.0.is_empty() {
            None
        } else {
            Some(self.0.remove(0))
        };
        std::task::Poll::Ready(next.map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes())))))
    }
}

#[tokio::test]
async fn connection_close_responses_get_fresh_connections() {
    let handler: Handler = Arc::new(|_req| {
        Response::builder()
            .header(http::header::CONNECTION, "close")
            .body(full("bye"))
            .unwrap()
    });
    let (addr, counts) = server(false, Duration::ZERO, handler).await;
    let pool = pool(addr, Protocol::Http1);
    for _ in 0..5 {
        assert_eq!(get_text(&pool, addr, "/").await, (StatusCode::OK, "bye".into()));
    }
    assert_eq!(
        counts.requests(),
        5,
        "every request reached the server exactly once"
    );
    assert_eq!(counts.accepted(), 5);
}

/// A raw HTTP/1.1 server that answers one request per connection with a keep-alive response,
/// then closes the connection after `linger` without a word.
async fn silent_closer(linger: Duration) -> (SocketAddr, Arc<Counts>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            c.accepted.fetch_add(1, Ordering::SeqCst);
            let c = c.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                loop {
                    let Ok(n) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                c.requests.fetch_add(1, Ordering::SeqCst);
                let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
                if let Some(id) = head.lines().find_map(|l| l.strip_prefix("x-id: ")) {
                    c.ids.lock().unwrap().push(id.trim().to_owned());
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                tokio::time::sleep(linger).await;
                // Dropping the stream closes it.
            });
        }
    });
    (addr, counts)
}

#[tokio::test]
async fn silently_closed_idle_connections_are_replaced_without_double_sends() {
    let (addr, counts) = silent_closer(Duration::from_millis(10)).await;
    let pool = pool(addr, Protocol::Http1);
    for i in 1..=5 {
        assert_eq!(get_text(&pool, addr, "/").await, (StatusCode::OK, "ok".into()));
        // Let the server close the idle connection (and the client notice).
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(counts.requests(), i, "no request was sent twice");
    }
    assert_eq!(counts.accepted(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_closed_right_after_the_response_never_get_a_request_twice() {
    // The close races the next request: hyper either notices it first (the request is handed
    // back unsent and retried on a new connection) or the request is written into the closing
    // connection (an error, not retried). Either way no request reaches the server twice.
    let (addr, counts) = silent_closer(Duration::ZERO).await;
    let pool = pool(addr, Protocol::Http1);
    let mut ok = 0;
    for i in 0..40 {
        let req = Request::get(format!("http://{addr}/"))
            .header("host", "x")
            .header("x-id", i.to_string())
            .body(Full::new(Bytes::new()))
            .unwrap();
        match pool.send(req).await {
            Ok(resp) => {
                resp.into_body().collect().await.unwrap();
                ok += 1;
            }
            Err(e) => assert!(!e.is_connect(), "{e:?}"),
        }
    }
    let mut ids = counts.ids.lock().unwrap().clone();
    let seen = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), seen, "a request reached the server twice");
    assert!(ok >= 1 && seen >= ok, "ok {ok}, seen {seen}");
}

#[tokio::test]
async fn retries_only_requests_that_were_never_sent() {
    // Several idle connections, all closed by the server: the request walks past every one
    // (each hands it back unsent) and succeeds on a new connection.
    let (addr, counts) = silent_closer(Duration::from_millis(10)).await;
    let pool = pool(addr, Protocol::Http1);
    let all = (0..4).map(|_| get_text(&pool, addr, "/"));
    for (status, _) in join_all(all).await {
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(counts.accepted(), 4);
    assert_eq!(pool.idle_count(), 4);
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(get_text(&pool, addr, "/").await.1, "ok");
    assert_eq!(counts.requests(), 5);
    assert_eq!(counts.accepted(), 5);
}

#[tokio::test]
async fn a_body_dropped_midway_closes_its_connection() {
    let handler: Handler = Arc::new(|req| {
        if req.uri().path() == "/big" {
            Response::new(Full::new(Bytes::from(vec![b'x'; 4 << 20])).boxed())
        } else {
            Response::new(full("small"))
        }
    });
    let (addr, counts) = server(false, Duration::ZERO, handler).await;
    let pool = pool(addr, Protocol::Http1);
    let resp = pool.send(get(addr, "/big")).await.unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.data_ref().is_some_and(|d| !d.is_empty()));
    drop(body);
    assert_eq!(pool.idle_count(), 0);
    assert_eq!(get_text(&pool, addr, "/").await.1, "small");
    assert_eq!(counts.accepted(), 2, "the half-read connection was not reused");
    assert_eq!(get_text(&pool, addr, "/").await.1, "small");
    assert_eq!(counts.accepted(), 2);
}

#[tokio::test]
async fn concurrent_requests_open_several_connections_then_reuse_them() {
    let (addr, counts) = server(false, Duration::from_millis(50), ok_handler()).await;
    let pool = Arc::new(pool(addr, Protocol::Http1));
    for round in 0..3 {
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move { get_text(&pool, addr, "/").await })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), (StatusCode::OK, "hello".into()));
        }
        assert_eq!(counts.accepted(), 8, "round {round}");
    }
    assert_eq!(counts.requests(), 24);
    assert_eq!(pool.idle_count(), 8);
}

#[tokio::test]
async fn http2_multiplexes_on_one_connection() {
    let handler: Handler = Arc::new(|req| {
        assert_eq!(req.version(), http::Version::HTTP_2);
        Response::new(Full::new(Bytes::from(req.uri().path().to_owned())).boxed())
    });
    let (addr, counts) = server(true, Duration::from_millis(50), handler).await;
    let pool = Arc::new(pool(addr, Protocol::Http2));
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut req = get(addr, &format!("/s/{i}"));
                *req.version_mut() = http::Version::HTTP_2;
                let resp = pool.send(req).await.unwrap();
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(body, format!("/s/{i}"));
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(counts.accepted(), 1);
    assert_eq!(counts.requests(), 20);
}

#[tokio::test]
async fn http2_connection_is_remade_after_it_closes() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = accepted.clone();
    // Serves one request per connection, then closes the connection (GOAWAY).
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            a.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req: Request<Incoming>| async {
                    Ok::<_, Infallible>(Response::new(full("h2")))
                });
                let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service);
                let mut conn = std::pin::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = tokio::time::sleep(Duration::from_millis(30)) => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            });
        }
    });
    let pool = pool(addr, Protocol::Http2);
    for _ in 0..3 {
        let mut req = get(addr, "/");
        *req.version_mut() = http::Version::HTTP_2;
        let resp = pool.send(req).await.unwrap();
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "h2");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn refused_connections_are_connect_errors() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    for protocol in [Protocol::Http1, Protocol::Http2] {
        let pool = pool(addr, protocol);
        let err = pool.send(get(addr, "/")).await.unwrap_err();
        assert!(err.is_connect(), "{err:?}");
        assert!(err.is_unsent());
    }
}

#[tokio::test]
async fn a_reset_after_sending_is_not_a_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let r = requests.clone();
    // Reads the request, then closes without answering.
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let r = r.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                if stream.read(&mut buf).await.is_ok_and(|n| n > 0) {
                    r.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    let pool = pool(addr, Protocol::Http1);
    let err = pool.send(get(addr, "/")).await.unwrap_err();
    assert!(!err.is_connect(), "{err:?}");
    assert!(!err.is_unsent());
    assert_eq!(requests.load(Ordering::SeqCst), 1, "not retried");
}

#[tokio::test]
async fn idle_connections_expire() {
    let (addr, counts) = server(false, Duration::ZERO, ok_handler()).await;
    let pool = pool_with(addr, Protocol::Http1, Duration::from_millis(100));
    get_text(&pool, addr, "/").await;
    get_text(&pool, addr, "/").await;
    assert_eq!(counts.accepted(), 1);
    tokio::time::sleep(Duration::from_millis(150)).await;
    get_text(&pool, addr, "/").await;
    assert_eq!(counts.accepted(), 2);
}

#[tokio::test]
async fn upgrades_work_and_the_connection_is_not_reused() {
    let handler: Handler = Arc::new(|mut req| {
        if req.uri().path() != "/ws" {
            return Response::new(full("plain"));
        }
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else { return };
            let mut io = TokioIo::new(upgraded);
            let mut buf = [0u8; 5];
            if io.read_exact(&mut buf).await.is_ok() {
                let _ = io.write_all(&buf).await;
            }
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(http::header::CONNECTION, "upgrade")
            .header(http::header::UPGRADE, "echo")
            .body(full(""))
            .unwrap()
    });
    let (addr, counts) = server(false, Duration::ZERO, handler).await;
    let pool = pool(addr, Protocol::Http1);
    let req = Request::get(format!("http://{addr}/ws"))
        .header(http::header::HOST, "x")
        .header(http::header::CONNECTION, "upgrade")
        .header(http::header::UPGRADE, "echo")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let mut resp = pool.send(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    let upgraded = hyper::upgrade::on(&mut resp).await.unwrap();
    let mut io = TokioIo::new(upgraded);
    io.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    io.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello");
    assert_eq!(pool.idle_count(), 0);
    assert_eq!(get_text(&pool, addr, "/").await.1, "plain");
    assert_eq!(counts.accepted(), 2);
}

#[tokio::test]
async fn an_idle_connection_the_server_closed_is_let_go_by_the_sweep() {
    // The sweep (every half idle timeout, here 2 s) lets it go well before it would expire
    // (4 s): a closed connection's socket is not held for the whole idle timeout.
    let (addr, counts) = silent_closer(Duration::from_millis(10)).await;
    let pool = pool_with(addr, Protocol::Http1, Duration::from_secs(4));
    assert_eq!(get_text(&pool, addr, "/").await, (StatusCode::OK, "ok".into()));
    assert_eq!(pool.idle_count(), 1);
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(pool.idle_count(), 0, "the closed connection is no longer held");
    assert_eq!(get_text(&pool, addr, "/").await, (StatusCode::OK, "ok".into()));
    assert_eq!(counts.requests(), 2);
    assert_eq!(counts.accepted(), 2);
}
