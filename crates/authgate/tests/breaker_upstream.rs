//! Breaker tests for the upload guard (`GuardedBody`), the response-body route timeout
//! (`Deadline`), `timeout: 0s`, unsolicited 101, and the config file watcher (commits 62975e8
//! and 3c6e546).
//!
//! Each test asserts the safe / Envoy-like behaviour: a failing test is a bug. Every server
//! listens on an ephemeral 127.0.0.1 port, every wait is bounded, and every task a test starts
//! is aborted when the test ends.

mod common;
mod raw_backend;

use std::net::SocketAddr;
use std::pin::Pin;

use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use hyper::body::{Body, Frame, SizeHint};
use raw_backend::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// True when the peer closes (EOF or reset) within `limit`; other bytes are discarded.
async fn closes_within(s: &mut TcpStream, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

fn lower(data: &[u8]) -> String {
    String::from_utf8_lossy(data).to_ascii_lowercase()
}

const SMUGGLED: &[u8] = b"GET /SMUGGLED HTTP/1.1\r\nHost: internal\r\nContent-Length: 0\r\n\r\n";

// --- An HTTP/2 (h2c prior knowledge) client with a body the test feeds ------------------------

/// A request body fed through a channel (`None` receiver: a body known whole from the start).
struct FedBody {
    first: Option<Bytes>,
    rx: Option<tokio::sync::mpsc::UnboundedReceiver<Bytes>>,
}

impl FedBody {
    fn empty() -> Self {
        Self {
            first: None,
            rx: None,
        }
    }

    /// One DATA frame carrying END_STREAM.
    fn whole(b: &[u8]) -> Self {
        Self {
            first: Some(Bytes::copy_from_slice(b)),
            rx: None,
        }
    }

    /// Frames as the test sends them; END_STREAM (an empty DATA frame) when the sender drops.
    fn fed() -> (tokio::sync::mpsc::UnboundedSender<Bytes>, Self) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (
            tx,
            Self {
                first: None,
                rx: Some(rx),
            },
        )
    }
}

impl Body for FedBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(b) = self.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        match self.rx.as_mut() {
            None => Poll::Ready(None),
            Some(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rx.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.first, &self.rx) {
            (Some(b), None) => SizeHint::with_exact(b.len() as u64),
            (None, None) => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

type H2 = hyper::client::conn::http2::SendRequest<FedBody>;

async fn h2c(to: SocketAddr) -> H2 {
    let tcp = raw_connect(to).await;
    let (tx, conn) = within(
        "h2 handshake",
        hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("h2 handshake: {e}"));
    tokio::spawn(conn);
    tx
}

fn h2_req(method: &str, path: &str, headers: &[(&str, &str)], body: FedBody) -> http::Request<FedBody> {
    let mut b = http::Request::builder()
        .method(method)
        .uri(format!("http://bookinfo.example.com{path}"))
        .version(http::Version::HTTP_2);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(body).unwrap_or_else(|e| panic!("{e}"))
}

/// Sends and waits for the head (bounded); errors as text.
async fn h2_send(
    h2: &mut H2,
    req: http::Request<FedBody>,
) -> Result<http::Response<hyper::body::Incoming>, String> {
    within("h2 ready", h2.ready())
        .await
        .map_err(|e| format!("h2 not ready: {e}"))?;
    within("h2 response", h2.send_request(req))
        .await
        .map_err(|e| format!("h2 send: {e}"))
}

async fn h2_fetch(h2: &mut H2, method: &str, path: &str) -> Result<Reply, String> {
    let resp = h2_send(h2, h2_req(method, path, &[], FedBody::empty())).await?;
    collect_reply(resp).await
}

// ---------------------------------------------------------------------------------------------
// Upload guard: keep-alive must survive complete uploads
// ---------------------------------------------------------------------------------------------

/// An h1 client uploads chunked bodies that end with a trailer section (`Trailer:` declared,
/// as AWS SDKs do for trailing checksums). The backend reads each body whole (terminating
/// chunk included) and only then answers: the exchange is complete and ordinary, so the
/// upstream connection must be reused and the client must not be told `Connection: close`.
#[tokio::test]
async fn b01_chunked_upload_with_trailers_keeps_keepalive() {
    let backend = RawServer::start(echo_target).await;
    let gw = gw_for(backend.addr, "5s").await;
    let mut problems = Vec::new();
    for i in 0..3 {
        let path = format!("/trailers-{i}");
        let mut s = raw_connect(gw_addr(&gw)).await;
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: bookinfo.example.com\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n5\r\nhello\r\n0\r\nx-checksum: abc\r\n\r\n"
        );
        within("write", s.write_all(req.as_bytes()))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (data, found) = read_until(&mut s, path.as_bytes(), Duration::from_secs(5)).await;
        if !found || status_of(&data) != Some(200) {
            problems.push(format!("{path}: {:?}", String::from_utf8_lossy(&data)));
        } else if lower(&data).contains("connection: close") {
            problems.push(format!("{path}: complete upload answered with connection: close"));
        }
    }
    expect_own_answer(&gw, "/after", "after trailer uploads").await;
    let conns = backend.conns();
    assert!(
        problems.is_empty() && conns == 1,
        "chunked uploads with trailers, read whole by the backend: {problems:?}; backend saw {conns} \
         connections for 4 sequential requests (want 1)"
    );
    stop(gw).await;
}

/// Control for b03: an h2c client whose last DATA frame carries END_STREAM. Several uploads
/// with `content-length`, read whole by the backend, ride one upstream connection.
#[tokio::test]
async fn b02_h2_upload_end_stream_on_data_keeps_pool() {
    let backend = RawServer::start(echo_target).await;
    let gw = gw_for(backend.addr, "5s").await;
    let mut h2 = h2c(gw_addr(&gw)).await;
    for i in 0..3 {
        let path = format!("/h2-whole-{i}");
        let resp = h2_send(
            &mut h2,
            h2_req(
                "POST",
                &path,
                &[("content-length", "5")],
                FedBody::whole(b"hello"),
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
        let r = collect_reply(resp)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!((r.status.as_u16(), r.text()), (200, path.clone()));
    }
    assert_eq!(
        backend.conns(),
        1,
        "h2 uploads read whole should share one upstream connection"
    );
    stop(gw).await;
}

/// An h2c client sends its body, then END_STREAM on a separate empty DATA frame (what many
/// clients do for streamed bodies). With `content-length` the upstream HTTP/1 request is
/// length-delimited and complete after the last byte; the backend reads it whole and answers.
/// The upstream connection must be reused (Envoy: one connection).
#[tokio::test]
async fn b03_h2_upload_end_stream_apart_keeps_pool() {
    let backend = RawServer::start(echo_target).await;
    let gw = gw_for(backend.addr, "5s").await;
    let mut h2 = h2c(gw_addr(&gw)).await;
    for i in 0..3 {
        let path = format!("/h2-apart-{i}");
        let (tx, body) = FedBody::fed();
        let _ = tx.send(Bytes::from_static(b"hello"));
        let ender = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(tx);
        });
        let resp = h2_send(&mut h2, h2_req("POST", &path, &[("content-length", "5")], body))
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let r = collect_reply(resp)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!((r.status.as_u16(), r.text()), (200, path.clone()));
        within("ender", ender).await.unwrap_or_else(|e| panic!("{e}"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = h2_fetch(&mut h2, "GET", "/h2-after")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((r.status.as_u16(), r.text()), (200, "/h2-after".to_owned()));
    let conns = backend.conns();
    assert_eq!(
        conns, 1,
        "3 complete h2 uploads (END_STREAM apart) + 1 GET used {conns} upstream connections (want 1)"
    );
    stop(gw).await;
}

/// Large uploads streamed slowly by the client (1 MiB in 64 KiB writes; Content-Length and
/// chunked), read whole by the backend, on one client keep-alive connection: one upstream
/// connection for all, and no `Connection: close`.
#[tokio::test]
async fn b04_large_streamed_uploads_keep_one_upstream_connection() {
    let backend = RawServer::start(echo_target).await;
    let gw = gw_for(backend.addr, "10s").await;
    let mut s = raw_connect(gw_addr(&gw)).await;
    let piece = vec![b'x'; 64 * 1024];
    for (i, chunked) in [false, true, false, true].into_iter().enumerate() {
        let path = format!("/big-{i}");
        let framing = if chunked {
            "Transfer-Encoding: chunked".to_owned()
        } else {
            format!("Content-Length: {}", 16 * piece.len())
        };
        let head = format!("POST {path} HTTP/1.1\r\nHost: bookinfo.example.com\r\n{framing}\r\n\r\n");
        within("head", s.write_all(head.as_bytes()))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        for _ in 0..16 {
            let bytes = if chunked {
                [format!("{:x}\r\n", piece.len()).as_bytes(), &piece, b"\r\n"].concat()
            } else {
                piece.clone()
            };
            within("piece", s.write_all(&bytes))
                .await
                .unwrap_or_else(|e| panic!("{path}: {e}"));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if chunked {
            within("end", s.write_all(b"0\r\n\r\n"))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let (data, found) = read_until(&mut s, path.as_bytes(), Duration::from_secs(10)).await;
        assert!(found, "{path}: {:?}", String::from_utf8_lossy(&data));
        assert_eq!(status_of(&data), Some(200), "{path}");
        assert!(
            !lower(&data).contains("connection: close"),
            "{path}: a complete upload closed the client connection"
        );
    }
    assert_eq!(
        backend.conns(),
        1,
        "streamed uploads read whole: one upstream connection"
    );
    stop(gw).await;
}

/// HEAD and 204 answers (no response body: the pool returns the connection at the head) to
/// uploads the backend read whole: the connection is still reused.
#[tokio::test]
async fn b05_head_and_204_answers_to_uploads_keep_pool() {
    let backend = RawServer::start(|s| {
        let reply: &[u8] = if s.line.starts_with("HEAD ") {
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
        } else if s.target().starts_with("/204") {
            b"HTTP/1.1 204 No Content\r\n\r\n"
        } else {
            return echo_target(s);
        };
        Plan {
            read_body: true,
            steps: vec![Step::Write(reply.to_vec())],
        }
    })
    .await;
    let gw = gw_for(backend.addr, "5s").await;
    let body = vec![b'y'; 32 * 1024];
    for i in 0..3 {
        let r = within(
            "POST",
            try_send(gw_addr(&gw), "POST", &format!("/204-{i}"), &[], &body),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status, 204);
        let r = within(
            "HEAD",
            try_send(gw_addr(&gw), "HEAD", &format!("/head-{i}"), &[], b""),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status, 200);
    }
    expect_own_answer(&gw, "/after", "after HEAD/204").await;
    assert_eq!(
        backend.conns(),
        1,
        "HEAD/204 exchanges should keep one upstream connection"
    );
    stop(gw).await;
}

// ---------------------------------------------------------------------------------------------
// Upload guard: early responses must stop the upload
// ---------------------------------------------------------------------------------------------

/// A naive backend answers a chunked upload before reading it (200 with a body, 204, chunked
/// 200). The slow client sends the rest of its body — a chunk holding a request — only after
/// it received the whole answer. That chunk must never reach the backend, the client connection
/// must be closed (Envoy), and later requests get their own answers.
#[tokio::test]
async fn b06_chunked_upload_early_answer_slow_client_rest_never_forwarded() {
    let cases: [(&str, &[u8], &[u8]); 3] = [
        (
            "200 with body",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nearly",
            b"early",
        ),
        ("204", b"HTTP/1.1 204 No Content\r\n\r\n", b"\r\n\r\n"),
        (
            "chunked 200",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nearly\r\n0\r\n\r\n",
            b"0\r\n\r\n",
        ),
    ];
    let mut wrong = Vec::new();
    for (what, reply, needle) in cases {
        let reply = reply.to_vec();
        let backend = RawServer::start(move |s| {
            if s.target() == "/upload" {
                Plan {
                    read_body: false,
                    steps: vec![Step::Write(reply.clone())],
                }
            } else {
                echo_target(s)
            }
        })
        .await;
        let gw = gw_for(backend.addr, "5s").await;
        let mut c = raw_connect(gw_addr(&gw)).await;
        within(
            "head",
            c.write_all(b"POST /upload HTTP/1.1\r\nHost: bookinfo.example.com\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let (data, found) = read_until(&mut c, needle, Duration::from_secs(5)).await;
        if !found {
            wrong.push(format!(
                "{what}: no early answer: {:?}",
                String::from_utf8_lossy(&data)
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let rest = [
            format!("{:x}\r\n", SMUGGLED.len()).as_bytes(),
            SMUGGLED,
            b"\r\n0\r\n\r\n",
        ]
        .concat();
        let _ = tokio::time::timeout(Duration::from_secs(2), c.write_all(&rest)).await;
        if !closes_within(&mut c, Duration::from_secs(3)).await {
            wrong.push(format!(
                "{what}: client connection left open after an early answer"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        for i in 0..3 {
            let path = format!("/next-{i}");
            match fetch(&gw, "GET", &path).await {
                Ok(r) if r.status == 200 && r.text() == path => {}
                Ok(r) => wrong.push(format!("{what}: GET {path}: {} {:?}", r.status, r.text())),
                Err(e) => wrong.push(format!("{what}: GET {path}: {e}")),
            }
        }
        let smuggled = backend.heads_with("/SMUGGLED");
        if !smuggled.is_empty() {
            wrong.push(format!(
                "{what}: body sent after the answer reached the backend: {smuggled:?}"
            ));
        }
        stop(gw).await;
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// The same over HTTP/2: the h2c client's upload gets a complete early answer; the rest of the
/// body, sent afterwards, must not reach the backend, and the client's h2 connection keeps
/// working (its other streams get their own answers).
#[tokio::test]
async fn b07_h2_upload_early_answer_rest_never_forwarded() {
    let backend = RawServer::start(|s| {
        if s.target() == "/upload" {
            Plan {
                read_body: false,
                steps: vec![Step::Write(ok("early"))],
            }
        } else {
            echo_target(s)
        }
    })
    .await;
    let gw = gw_for(backend.addr, "5s").await;
    let mut h2 = h2c(gw_addr(&gw)).await;
    let (tx, body) = FedBody::fed();
    let _ = tx.send(Bytes::from_static(b"hello"));
    let resp = h2_send(&mut h2, h2_req("POST", "/upload", &[], body))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let r = collect_reply(resp).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((r.status.as_u16(), r.text()), (200, "early".to_owned()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = tx.send(Bytes::from_static(SMUGGLED));
    drop(tx);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..3 {
        let path = format!("/h2-next-{i}");
        let r = h2_fetch(&mut h2, "GET", &path)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!((r.status.as_u16(), r.text()), (200, path.clone()));
    }
    let smuggled = backend.heads_with("/SMUGGLED");
    assert!(
        smuggled.is_empty(),
        "h2 body sent after the answer reached the backend: {smuggled:?}"
    );
    stop(gw).await;
}

/// A fast client: head and whole body (holding a request) in one write, and a naive backend
/// that answers early and then answers the "request" it parsed from the body too. That second
/// answer is unsolicited: it must never be delivered to a later request.
#[tokio::test]
async fn b08_fast_client_early_answer_extra_response_never_delivered() {
    let backend = RawServer::start(|s| match s.target() {
        "/upload" => Plan {
            read_body: false,
            steps: vec![Step::Write(ok("early"))],
        },
        "/SMUGGLED" => Plan {
            read_body: true,
            steps: vec![Step::Write(ok("SMUGGLED-ANSWER"))],
        },
        _ => echo_target(s),
    })
    .await;
    let gw = gw_for(backend.addr, "5s").await;
    let mut c = raw_connect(gw_addr(&gw)).await;
    let req = [
        format!(
            "POST /upload HTTP/1.1\r\nHost: bookinfo.example.com\r\nContent-Length: {}\r\n\r\n",
            SMUGGLED.len()
        )
        .as_bytes(),
        SMUGGLED,
    ]
    .concat();
    within("write", c.write_all(&req))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (data, found) = read_until(&mut c, b"early", Duration::from_secs(5)).await;
    assert!(found, "{:?}", String::from_utf8_lossy(&data));
    drop(c);
    let mut wrong = Vec::new();
    for i in 0..6 {
        let path = format!("/next-{i}");
        match fetch(&gw, "GET", &path).await {
            Ok(r) if r.status == 200 && r.text() == path => {}
            Ok(r) => wrong.push(format!("GET {path}: {} {:?}", r.status, r.text())),
            Err(e) => wrong.push(format!("GET {path}: {e}")),
        }
    }
    assert!(wrong.is_empty(), "{wrong:?}");
    stop(gw).await;
}

// ---------------------------------------------------------------------------------------------
// Route timeout over the response body (Deadline), timeout 0
// ---------------------------------------------------------------------------------------------

fn slow_body_plan(head_after_ms: u64, pieces: usize, every_ms: u64, chunked: bool) -> Plan {
    let mut steps = vec![Step::Sleep(head_after_ms)];
    if chunked {
        steps.push(Step::Write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
        ));
    } else {
        steps.push(Step::Write(
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", pieces * 4).into_bytes(),
        ));
    }
    for _ in 0..pieces {
        steps.push(Step::Sleep(every_ms));
        steps.push(Step::Write(if chunked {
            b"4\r\nabcd\r\n".to_vec()
        } else {
            b"abcd".to_vec()
        }));
    }
    if chunked {
        steps.push(Step::Write(b"0\r\n\r\n".to_vec()));
    }
    Plan {
        read_body: true,
        steps,
    }
}

/// Route timeout 3 s; the head comes after 1 s and the body trickles in until ~2.2 s
/// (Content-Length and chunked, HTTP/1 and h2c clients). It ends before the deadline: never cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b09_progressing_body_finishing_under_the_timeout_is_not_cut() {
    let backend = RawServer::start(|s| match s.target() {
        "/cl" => slow_body_plan(1000, 8, 150, false),
        "/chunked" => slow_body_plan(1000, 8, 150, true),
        _ => echo_target(s),
    })
    .await;
    let gw = gw_for(backend.addr, "3s").await;
    let want = "abcd".repeat(8);
    let (h1_cl, h1_ch, h2_cl, h2_ch) = tokio::join!(
        fetch(&gw, "GET", "/cl"),
        fetch(&gw, "GET", "/chunked"),
        async {
            let mut h2 = h2c(gw_addr(&gw)).await;
            h2_fetch(&mut h2, "GET", "/cl").await
        },
        async {
            let mut h2 = h2c(gw_addr(&gw)).await;
            h2_fetch(&mut h2, "GET", "/chunked").await
        },
    );
    let mut wrong = Vec::new();
    for (what, r) in [
        ("h1 cl", h1_cl),
        ("h1 chunked", h1_ch),
        ("h2 cl", h2_cl),
        ("h2 chunked", h2_ch),
    ] {
        match r {
            Ok(r) if r.status == 200 && r.text() == want => {}
            Ok(r) => wrong.push(format!("{what}: {} {:?}", r.status, r.text())),
            Err(e) => wrong.push(format!("{what}: {e}")),
        }
    }
    assert!(
        wrong.is_empty(),
        "bodies finishing ~0.8 s before the 3 s deadline: {wrong:?}"
    );
    stop(gw).await;
}

/// A chunked response that stalls after its first chunk is cut at the route timeout (1 s) for
/// HTTP/1 and h2c clients alike, and its upstream connection is not reused.
#[tokio::test]
async fn b10_stalled_chunked_body_is_cut_for_h1_and_h2() {
    let backend = RawServer::start(|s| {
        if s.target().starts_with("/stall") {
            Plan {
                read_body: true,
                steps: vec![
                    Step::Write(
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n".to_vec(),
                    ),
                    Step::Hold,
                ],
            }
        } else {
            echo_target(s)
        }
    })
    .await;
    let gw = gw_for(backend.addr, "1s").await;
    let started = std::time::Instant::now();
    let h1 = tokio::time::timeout(Duration::from_secs(6), fetch(&gw, "GET", "/stall-h1")).await;
    assert!(
        matches!(h1, Ok(Err(_))),
        "h1: stalled chunked body not cut at 1 s (after {:?}): {:?}",
        started.elapsed(),
        h1.map(|r| r.map(|r| (r.status, r.text())))
    );
    let mut h2 = h2c(gw_addr(&gw)).await;
    let started = std::time::Instant::now();
    let h2r = tokio::time::timeout(Duration::from_secs(6), h2_fetch(&mut h2, "GET", "/stall-h2")).await;
    assert!(
        matches!(h2r, Ok(Err(_))),
        "h2: stalled chunked body not reset at 1 s (after {:?}): {:?}",
        started.elapsed(),
        h2r.map(|r| r.map(|r| (r.status, r.text())))
    );
    let r = h2_fetch(&mut h2, "GET", "/h2-after")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((r.status.as_u16(), r.text()), (200, "/h2-after".to_owned()));
    expect_own_answer(&gw, "/after", "after cut bodies").await;
    let after = backend.conn_of("/after");
    assert_ne!(after, backend.conn_of("/stall-h1"));
    assert_ne!(after, backend.conn_of("/stall-h2"));
    stop(gw).await;
}

/// `timeout: 0s` disables the route timeout (Envoy): a head after 1.2 s and a body until
/// ~2.4 s come through whole. So does the largest timeout the config accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b11_timeout_zero_and_huge_never_cut_a_slow_exchange() {
    for t in ["0s", "315576000000s"] {
        let backend = RawServer::start(|s| match s.target() {
            "/slow" => slow_body_plan(1200, 8, 150, true),
            _ => echo_target(s),
        })
        .await;
        let gw = gw_for(backend.addr, t).await;
        let r = fetch(&gw, "GET", "/slow").await;
        match r {
            Ok(r) => assert_eq!(
                (r.status.as_u16(), r.text()),
                (200, "abcd".repeat(8)),
                "timeout {t}"
            ),
            Err(e) => panic!("timeout {t}: {e}"),
        }
        expect_own_answer(&gw, "/after", t).await;
        stop(gw).await;
    }
}

/// A real WebSocket upgrade (101) on a route with a 1 s timeout: the tunnel outlives the route
/// timeout (Envoy's applies until the upgrade response), both before and after it.
#[tokio::test]
async fn b14_websocket_tunnel_outlives_the_route_timeout() {
    let backend = RawServer::start(|s| {
        if s.header("upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
            Plan {
                read_body: false,
                steps: vec![
                    Step::Write(
                        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
                            .to_vec(),
                    ),
                    Step::Echo,
                ],
            }
        } else {
            echo_target(s)
        }
    })
    .await;
    let gw = gw_for(backend.addr, "1s").await;
    let mut ws = raw_connect(gw_addr(&gw)).await;
    within(
        "write",
        ws.write_all(
            b"GET /ws HTTP/1.1\r\nHost: bookinfo.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let (data, _) = read_until(&mut ws, b"\r\n\r\n", Duration::from_secs(5)).await;
    assert_eq!(
        status_of(&data),
        Some(101),
        "{:?}",
        String::from_utf8_lossy(&data)
    );
    within("w1", ws.write_all(b"early-frame"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (echo, found) = read_until(&mut ws, b"early-frame", Duration::from_secs(3)).await;
    assert!(found, "{:?}", String::from_utf8_lossy(&echo));
    tokio::time::sleep(Duration::from_millis(1600)).await;
    within("w2", ws.write_all(b"late-frame"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (echo, found) = read_until(&mut ws, b"late-frame", Duration::from_secs(3)).await;
    assert!(
        found,
        "tunnel cut at the route timeout: {:?}",
        String::from_utf8_lossy(&echo)
    );
    stop(gw).await;
}

// ---------------------------------------------------------------------------------------------
// Config file watcher (the real binary)
// ---------------------------------------------------------------------------------------------

const PLAIN: &str = r#"
listeners: [{ address: "127.0.0.1:0" }]
admin: { address: "127.0.0.1:0" }
accessLog: { format: "off" }
backends: [{ name: b, endpoints: ["{{backend}}"] }]
routes: [{ name: {{route}}, backend: b }]
{{extra}}
"#;

fn plain(backend: SocketAddr, route: &str, extra: &str) -> String {
    render(
        PLAIN,
        &[
            ("backend", backend.to_string()),
            ("route", route.to_owned()),
            ("extra", extra.to_owned()),
        ],
    )
}

/// Replaces `path` atomically (write a temp file next to it, rename over), as editors and
/// config-management tools do.
fn replace_file(path: &std::path::Path, contents: &str) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, contents).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename {}: {e}", path.display()));
}

const TLS_GW: &str = r#"
listeners:
  - name: tls
    address: "127.0.0.1:0"
    tls:
      certificates:
        - { certFile: "{{cert}}", keyFile: "{{key}}" }
admin: { address: "127.0.0.1:0" }
accessLog: { format: "off" }
backends: [{ name: b, endpoints: ["{{backend}}"] }]
routes: [{ name: all, backend: b }]
"#;

async fn served_leaf(at: SocketAddr, pki: &Pki) -> Option<Vec<u8>> {
    let tls = try_tls_connect(at, "a.example.com", pki.roots(), &[b"http/1.1"], None)
        .await
        .ok()?;
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
}

/// Rotates the certificate/key files (write both, in place) and reports whether the gateway
/// serves the new leaf within 5 s without a SIGHUP; then SIGHUPs and checks it does after.
async fn rotate_and_check(
    gw: &mut Child,
    pki: &Pki,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> (bool, bool, (f64, f64)) {
    let (new_cert, new_key, new_der) = pki.server_cert("rotated", &["a.example.com"]);
    let c = std::fs::read_to_string(&new_cert).unwrap_or_else(|e| panic!("{e}"));
    let k = std::fs::read_to_string(&new_key).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(cert, c).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(key, k).unwrap_or_else(|e| panic!("{e}"));
    let mut by_watch = false;
    for _ in 0..50 {
        if served_leaf(gw.listen, pki).await.as_deref() == Some(new_der.as_ref()) {
            by_watch = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let counts = reload_counts(gw).await;
    let mut by_hup = by_watch;
    if !by_watch {
        gw.signal("HUP");
        for _ in 0..50 {
            if served_leaf(gw.listen, pki).await.as_deref() == Some(new_der.as_ref()) {
                by_hup = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    (by_watch, by_hup, counts)
}

/// The listener's certificate and key live next to the config file (`certFile: cert.pem`).
/// Rotating them (as cert renewal does) must reload the TLS material, as it did before
/// 3c6e546 (any change in the config directory reloaded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b15_watch_tls_cert_next_to_the_config_rotates() {
    let backend = recorder().await;
    let pki = Pki::new("rot-same");
    let (c0, k0, d0) = pki.server_cert("initial", &["a.example.com"]);
    let dir = TempDir::new("rot-same-cfg");
    let cert = dir.write(
        "cert.pem",
        &std::fs::read_to_string(&c0).unwrap_or_else(|e| panic!("{e}")),
    );
    let key = dir.write(
        "key.pem",
        &std::fs::read_to_string(&k0).unwrap_or_else(|e| panic!("{e}")),
    );
    let yaml = render(
        TLS_GW,
        &[
            ("cert", "cert.pem".into()),
            ("key", "key.pem".into()),
            ("backend", backend.addr.to_string()),
        ],
    );
    let path = dir.write("gateway.yaml", &yaml);
    let mut gw = spawn_binary(&path, &[]);
    assert_eq!(
        served_leaf(gw.listen, &pki).await.as_deref(),
        Some(d0.as_ref()),
        "initial cert"
    );
    let (by_watch, by_hup, counts) = rotate_and_check(&mut gw, &pki, &cert, &key).await;
    assert!(
        by_watch,
        "cert.pem/key.pem next to gateway.yaml rotated: old certificate still served after 5 s \
         (reloads ok/failed before SIGHUP {counts:?}; after SIGHUP the new one is served: {by_hup})"
    );
}

/// The listener's certificate lives in another directory (a mounted Secret). Rotating it must
/// reload the TLS material without a SIGHUP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b16_watch_tls_cert_in_another_directory_rotates() {
    let backend = recorder().await;
    let pki = Pki::new("rot-other");
    let (cert, key, d0) = pki.server_cert("serving", &["a.example.com"]);
    let dir = TempDir::new("rot-other-cfg");
    let yaml = render(
        TLS_GW,
        &[
            ("cert", cert.display().to_string()),
            ("key", key.display().to_string()),
            ("backend", backend.addr.to_string()),
        ],
    );
    let path = dir.write("gateway.yaml", &yaml);
    let mut gw = spawn_binary(&path, &[]);
    assert_eq!(
        served_leaf(gw.listen, &pki).await.as_deref(),
        Some(d0.as_ref()),
        "initial cert"
    );
    let (by_watch, by_hup, counts) = rotate_and_check(&mut gw, &pki, &cert, &key).await;
    assert!(
        by_watch,
        "certificate in another directory rotated: old certificate still served after 5 s \
         (reloads ok/failed before SIGHUP {counts:?}; after SIGHUP the new one is served: {by_hup})"
    );
}

const POLICY: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-{{n}}, namespace: istio-system }
spec:
  action: DENY
  rules: [{ to: [{ operation: { paths: ["/blocked-{{n}}"] } }] }]
"#;

/// A reload adds `include: [policy.yaml]` (a file in the config's own directory). Editing that
/// file afterwards must reload, as editing a file included from the start does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b17_watch_include_added_by_a_reload_is_watched() {
    let backend = recorder().await;
    let dir = TempDir::new("inc-added");
    let policy = dir.write("policy.yaml", &render(POLICY, &[("n", "1".into())]));
    let path = dir.write("gateway.yaml", &plain(backend.addr, "first", ""));
    let mut gw = spawn_binary(&path, &[]);
    replace_file(
        &path,
        &plain(backend.addr, "second", "include: [\"policy.yaml\"]"),
    );
    assert_eq!(
        wait_route(&mut gw, "second", 5).await,
        "second",
        "config edit not seen"
    );
    let before = wait_reloads(&mut gw, 1.0, 2).await;
    assert_eq!(before.1, 0.0, "the include is valid: {before:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = reload_counts(&mut gw).await;
    replace_file(&policy, &render(POLICY, &[("n", "2".into())]));
    let after = wait_reloads(&mut gw, before.0 + before.1 + 1.0, 5).await;
    assert!(
        after.0 + after.1 > before.0 + before.1,
        "edited {} (included since the last reload): no reload in 5 s ({before:?} -> {after:?})",
        policy.display()
    );
}

/// The config file is deleted, then recreated with new contents (a deploy tool's `rm` + `cp`):
/// the new contents are picked up, and the gateway keeps serving throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b18_watch_config_deleted_then_recreated() {
    let backend = recorder().await;
    let dir = TempDir::new("del-recreate");
    let path = dir.write("gateway.yaml", &plain(backend.addr, "first", ""));
    let mut gw = spawn_binary(&path, &[]);
    assert_eq!(route_name(&mut gw).await, "first");
    std::fs::remove_file(&path).unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let r = within("get", try_send(gw.listen, "GET", "/during", &[], b"")).await;
    assert!(
        matches!(&r, Ok(r) if r.status == 200),
        "serving while the file is gone: {:?}",
        r.map(|r| r.status)
    );
    std::fs::write(&path, plain(backend.addr, "second", "")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        wait_route(&mut gw, "second", 5).await,
        "second",
        "recreated config not picked up"
    );
    gw.assert_alive("after delete + recreate");
}

/// Hundreds of other files churn in the config directory: no reload; an edit to the config
/// among the churn is still picked up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b19_watch_churning_directory_only_config_edits_reload() {
    let backend = recorder().await;
    let dir = TempDir::new("churn");
    let path = dir.write("gateway.yaml", &plain(backend.addr, "first", ""));
    let mut gw = spawn_binary(&path, &[]);
    assert_eq!(route_name(&mut gw).await, "first");
    for round in 0..3 {
        for i in 0..200 {
            dir.write(&format!("cache-{i}.json"), &format!("{{\"round\":{round}}}"));
        }
        for i in 0..50 {
            let _ = std::fs::remove_file(dir.path().join(format!("cache-{i}.json")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let counts = reload_counts(&mut gw).await;
    assert_eq!(
        counts,
        (0.0, 0.0),
        "other files of the directory reloaded the config"
    );
    let churn = {
        let dir = dir.path().to_path_buf();
        std::thread::spawn(move || {
            for i in 0..400 {
                let _ = std::fs::write(dir.join(format!("late-{}.json", i % 50)), "x");
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    replace_file(&path, &plain(backend.addr, "second", ""));
    let seen = wait_route(&mut gw, "second", 5).await;
    let _ = churn.join();
    assert_eq!(seen, "second", "a config edit among churning files was missed");
}

/// The config's directory is reached through a symlink (`<d>/link -> <d>/real`, config path
/// `<d>/link/gateway.yaml`); an editor replaces `real/gateway.yaml`: reloaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b20_watch_symlinked_config_directory() {
    let backend = recorder().await;
    let dir = TempDir::new("dirlink");
    let real = dir.path().join("real");
    std::fs::create_dir_all(&real).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(real.join("gateway.yaml"), plain(backend.addr, "first", ""))
        .unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap_or_else(|e| panic!("{e}"));
    let mut gw = spawn_binary(&dir.path().join("link").join("gateway.yaml"), &[]);
    assert_eq!(route_name(&mut gw).await, "first");
    replace_file(&real.join("gateway.yaml"), &plain(backend.addr, "second", ""));
    assert_eq!(
        wait_route(&mut gw, "second", 5).await,
        "second",
        "edit through the real dir missed"
    );
}

/// The config (`<d>/link/gateway.yaml`, `link -> real`) includes a policy by the directory's
/// other name (`<d>/real/policy.yaml`): the same directory, spelled two ways. Edits to the
/// main config must still reload (before 3c6e546 any event did).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b21_watch_same_directory_spelled_two_ways() {
    let backend = recorder().await;
    let dir = TempDir::new("twoways");
    let real = dir.path().join("real");
    std::fs::create_dir_all(&real).unwrap_or_else(|e| panic!("{e}"));
    let policy = real.join("policy.yaml");
    std::fs::write(&policy, render(POLICY, &[("n", "1".into())])).unwrap_or_else(|e| panic!("{e}"));
    let include = format!("include: [\"{}\"]", policy.display());
    std::fs::write(real.join("gateway.yaml"), plain(backend.addr, "first", &include))
        .unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap_or_else(|e| panic!("{e}"));
    let mut gw = spawn_binary(&dir.path().join("link").join("gateway.yaml"), &[]);
    assert_eq!(route_name(&mut gw).await, "first");
    replace_file(
        &real.join("gateway.yaml"),
        &plain(backend.addr, "second", &include),
    );
    let seen = wait_route(&mut gw, "second", 5).await;
    let counts = reload_counts(&mut gw).await;
    assert_eq!(
        seen,
        "second",
        "main config edited: not reloaded in 5 s (reloads {counts:?}); the include names its \
         directory as {}",
        real.display()
    );
}

/// An Istio directory (`--istio <dir>`) gets an editor's swap file and a notes file written
/// repeatedly: neither is configuration (the loader skips hidden and non-YAML files), so no
/// reload — the same rule 3c6e546 applies to the config file's directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b22_watch_istio_dir_non_yaml_files_do_not_reload() {
    let backend = recorder().await;
    let cfg = TempDir::new("istio-dir-cfg");
    let istio = TempDir::new("istio-dir");
    istio.write("policy.yaml", &render(POLICY, &[("n", "1".into())]));
    let path = cfg.write("gateway.yaml", &plain(backend.addr, "first", ""));
    let istio_arg = istio.path().display().to_string();
    let mut gw = spawn_binary(&path, &["--istio", &istio_arg]);
    for i in 0..10 {
        istio.write(".policy.yaml.swp", &format!("editor state {i}"));
        istio.write("notes.txt", &format!("note {i}"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let counts = reload_counts(&mut gw).await;
    assert_eq!(
        counts,
        (0.0, 0.0),
        "writes to .policy.yaml.swp / notes.txt in the Istio directory reloaded the config"
    );
}
