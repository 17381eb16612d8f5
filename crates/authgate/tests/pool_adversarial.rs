//! Adversarial end-to-end tests of the upstream keep-alive pool (`authgate-pool`) through the
//! real gateway: hostile or broken backends and HTTP authorization services, written byte for
//! byte on raw loopback sockets, and clients that misbehave around pooled connections.
//!
//! Tests that expose a bug assert the correct (Envoy-like) behaviour and fail until it is fixed;
//! their doc comments say so. Every server listens on an ephemeral 127.0.0.1 port, every wait
//! is bounded, and every task a test starts is aborted when the test ends.

mod common;
mod raw_backend;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use raw_backend::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

// ---------------------------------------------------------------------------------------------
// Response framing attacks from the backend
// ---------------------------------------------------------------------------------------------

/// A backend appends a complete second response after the first one's body (response
/// smuggling / splitting). The extra response must never be delivered as the answer to a later
/// request that reuses the pooled connection.
#[tokio::test]
async fn p01_extra_response_after_body_is_never_delivered_to_the_next_request() {
    let backend = RawServer::start(|s| {
        if s.target() == "/first" {
            Plan {
                read_body: true,
                steps: vec![Step::Write(cat(&[
                    &ok("one"),
                    b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled",
                ]))],
            }
        } else {
            echo_target(s)
        }
    })
    .await;
    let gw = gw_for(backend.addr, "5s").await;
    let r = fetch(&gw, "GET", "/first")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((r.status.as_u16(), r.text()), (200, "one".into()));
    for i in 0..5 {
        expect_own_answer(&gw, &format!("/next-{i}"), "after a smuggled response").await;
    }
    stop(gw).await;
}

/// `Content-Length` shorter than the body the backend writes: the excess is garbage on the
/// connection. It must not turn the next request into a 503 or a wrong answer.
#[tokio::test]
async fn p02_content_length_shorter_than_body_does_not_poison_the_pool() {
    let backend = RawServer::start(|s| {
        if s.target() == "/short" {
            Plan {
                read_body: true,
                steps: vec![Step::Write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcDEFGHIJ-trailing-garbage".to_vec(),
                )],
            }
        } else {
            echo_target(s)
        }
    })
    .await;
    let gw = gw_for(backend.addr, "5s").await;
    let r = fetch(&gw, "GET", "/short")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((r.status.as_u16(), r.text()), (200, "abc".into()));
    for i in 0..5 {
        expect_own_answer(&gw, &format!("/next-{i}"), "after an over-long body").await;
    }
    stop(gw).await;
}

/// `Content-Length` longer than what the backend sends before closing: the client must see a
/// truncated (failed) response, never a complete-looking one, and the broken connection is
/// not reused.
#[tokio::test]
async fn p03_backend_closing_mid_body_truncates_and_is_not_reused() {
    let backend = RawServer::start(|s| {
        if s.target() == "/cut" {
            Plan {
                read_body: true,
                steps: vec![
                    Step::Write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort".to_vec()),
                    Step::Sleep(50),
                    Step::Close,
                ],
            }
        } else {
            echo_target(s)
        }
    })
    .await;
    let gw = gw_for(backend.addr, "5s").await;
    match fetch(&gw, "GET", "/cut").await {
        Err(_) => {}
        Ok(r) => panic!(
            "a body cut at 5 of 100 bytes reached the client as a complete {} {:?}",
            r.status,
            r.text()
        ),
    }
    for i in 0..3 {
        expect_own_answer(&gw, &format!("/next-{i}"), "after a truncated body").await;
    }
    assert_ne!(backend.conn_of("/next-0"), backend.conn_of("/cut"));
    stop(gw).await;
}

/// BUG: the route timeout ("whole upstream exchange", as Envoy's route timeout) only bounds the
/// wait for the response head. A backend that sends the head and then stalls the body holds
/// the client (and a gateway task and connection) forever. Envoy resets the stream at the
/// route timeout (flag UT), so the client sees the response end (truncated) after ~1 s.
#[tokio::test]
async fn p04_stalled_body_is_cut_at_the_route_timeout() {
    let backend = RawServer::start(|s| {
        if s.target() == "/stall" {
            Plan {
                read_body: true,
                steps: vec![
                    Step::Write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort".to_vec()),
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
    let outcome = tokio::time::timeout(
        Duration::from_secs(6),
        try_send(gw_addr(&gw), "GET", "/stall", &[], b""),
    )
    .await;
    match outcome {
        Err(_) => panic!(
            "route timeout 1s: the stalled response body was still open after {:?} \
             (the timeout only covers the response head)",
            started.elapsed()
        ),
        Ok(Ok(r)) => panic!(
            "a 5-of-100-byte body came back complete: {} {:?}",
            r.status,
            r.text()
        ),
        Ok(Err(_)) => {}
    }
    expect_own_answer(&gw, "/after", "after a stalled body").await;
    stop(gw).await;
}

/// A slow-loris backend that answers only after the route timeout: 504, and its late answer
/// (still arriving on that connection) never reaches a later request.
#[tokio::test]
async fn p05_late_answer_after_timeout_is_not_delivered_later() {
    let backend = RawServer::start(|s| {
        if s.target() == "/slow" {
            Plan {
                read_body: true,
                steps: vec![Step::Sleep(1500), Step::Write(ok("late")), Step::Hold],
            }
        } else {
            echo_target(s)
        }
    })
    .await;
    let gw = gw_for(backend.addr, "1s").await;
    let r = fetch(&gw, "GET", "/slow").await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status, 504, "{}", r.text());
    tokio::time::sleep(Duration::from_millis(800)).await;
    for i in 0..3 {
        expect_own_answer(&gw, &format!("/next-{i}"), "after a timed-out request").await;
    }
    stop(gw).await;
}

/// A response with both `Content-Length` and `Transfer-Encoding: chunked`. Envoy rejects it
/// (502, UPE). Forwarding is acceptable only as RFC 9112 §6.3 says: chunked wins and the
/// Content-Length is removed; the next response on the same client connection must be intact.
#[tokio::test]
async fn p06_content_length_and_chunked_response() {
    let backend = RawServer::start(|s| {
        if s.target() == "/both" {
            Plan {
                read_body: true,
                steps: vec![Step::Write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                        .to_vec(),
                )],
            }
        } else {
            echo_target(s)
        }
    })
    .await;
    let gw = gw_for(backend.addr, "5s").await;
    let mut client = h1_connect(gw_addr(&gw)).await;
    let req = |path: &str| {
        http::Request::builder()
            .uri(path)
            .header("host", "bookinfo.example.com")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let first = exchange_h1(&mut client, req("/both")).await;
    match &first {
        Ok(r) if r.status == 502 => {}
        Ok(r) => assert!(
            r.status == 200 && r.text() == "hello" && r.header("content-length").is_none_or(|v| v == "5"),
            "CL+TE response relayed as {} cl={:?} body={:?}",
            r.status,
            r.header("content-length"),
            r.text()
        ),
        Err(e) => panic!("CL+TE response: client connection broken: {e}"),
    }
    if client.ready().await.is_ok() {
        let second = exchange_h1(&mut client, req("/second")).await;
        match second {
            Ok(r) => assert_eq!((r.status.as_u16(), r.text()), (200, "/second".into())),
            Err(e) => panic!("second request on the client connection: {e}"),
        }
    }
    for i in 0..3 {
        expect_own_answer(&gw, &format!("/next-{i}"), "after a CL+TE response").await;
    }
    stop(gw).await;
}

/// Malformed response heads are upstream protocol errors: Envoy answers 502 (flag UPE), not
/// the 503 of a connection reset.
#[tokio::test]
async fn p07_malformed_response_heads_are_502() {
    let cases: [(&str, &[u8]); 4] = [
        (
            "bad content-length",
            b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
        ),
        (
            "two different content-lengths",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nhello",
        ),
        ("not HTTP at all", b"NOT-HTTP garbage\r\n\r\n"),
        (
            "invalid status code",
            b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
        ),
    ];
    let mut wrong = Vec::new();
    for (what, reply) in cases {
        let reply = reply.to_vec();
        let backend = RawServer::start(move |_| Plan {
            read_body: true,
            steps: vec![Step::Write(reply.clone()), Step::Sleep(100), Step::Close],
        })
        .await;
        let gw = gw_for(backend.addr, "5s").await;
        let r = fetch(&gw, "GET", "/x")
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        if r.status != 502 {
            wrong.push(format!("{what}: {} {:?}", r.status, r.text()));
        }
        stop(gw).await;
    }
    assert!(
        wrong.is_empty(),
        "upstream protocol errors should be 502 (UPE):\n{}",
        wrong.join("\n")
    );
}

/// `100 Continue` and `103 Early Hints` before the final response (in one write, and spread
/// over several): the client gets the final 200 and the connection stays usable.
#[tokio::test]
async fn p08_informational_responses_before_the_final_one() {
    let backend = RawServer::start(|s| match s.target() {
        "/together" => Plan {
            read_body: true,
            steps: vec![Step::Write(cat(&[
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n",
                &ok("final"),
            ]))],
        },
        "/spread" => Plan {
            read_body: true,
            steps: vec![
                Step::Write(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec()),
                Step::Sleep(100),
                Step::Write(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n".to_vec()),
                Step::Sleep(100),
                Step::Write(ok("final")),
            ],
        },
        _ => echo_target(s),
    })
    .await;
    let gw = gw_for(backend.addr, "5s").await;
    for path in ["/together", "/spread"] {
        let r = fetch(&gw, "GET", path)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!((r.status.as_u16(), r.text()), (200, "final".into()), "{path}");
        expect_own_answer(&gw, &format!("{path}-next"), "after 1xx responses").await;
    }
    assert_eq!(
        backend.conns.load(Ordering::SeqCst),
        1,
        "1xx then 200 should keep one reusable connection"
    );
    stop(gw).await;
}

/// A backend that sends a body with its answer to HEAD, or with 204/304: the bytes are
/// garbage on the connection and must not break (503) or answer the next request.
#[tokio::test]
async fn p09_bodies_on_head_204_and_304_do_not_poison_the_pool() {
    let backend = RawServer::start(|s| {
        let reply: Option<&[u8]> = match (s.method(), s.target()) {
            ("HEAD", _) => Some(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
            (_, "/204") => Some(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello"),
            (_, "/304") => Some(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nhello"),
            _ => None,
        };
        match reply {
            Some(r) => Plan {
                read_body: true,
                steps: vec![Step::Write(r.to_vec())],
            },
            None => echo_target(s),
        }
    })
    .await;
    let gw = gw_for(backend.addr, "5s").await;
    let mut failures = Vec::new();
    for (method, path, status) in [
        ("HEAD", "/head", 200u16),
        ("GET", "/204", 204),
        ("GET", "/304", 304),
    ] {
        match fetch(&gw, method, path).await {
            Ok(r) if r.status == status && r.body.is_empty() => {}
            Ok(r) => failures.push(format!("{method} {path}: {} {:?}", r.status, r.text())),
            Err(e) => failures.push(format!("{method} {path}: {e}")),
        }
        for i in 0..3 {
            let next = format!("{path}-next-{i}");
            match fetch(&gw, "GET", &next).await {
                Ok(r) if r.status == 200 && r.text() == next => {}
                Ok(r) => failures.push(format!(
                    "after {method} {path}: GET {next}: {} {:?}",
                    r.status,
                    r.text()
                )),
                Err(e) => failures.push(format!("after {method} {path}: GET {next}: {e}")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    stop(gw).await;
}

/// A backend that sends `101 Switching Protocols` to a request that asked for no upgrade (the
/// gateway strips non-WebSocket `Upgrade`). Envoy treats it as an upstream protocol error
/// (502); relaying a 101 nobody asked for leaves the client connection in limbo.
#[tokio::test]
async fn p10_unsolicited_101_is_not_relayed() {
    let backend = RawServer::start(|s| {
        if s.target() == "/sneaky" {
            Plan {
                read_body: true,
                steps: vec![
                    Step::Write(
                        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
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
    let gw = gw_for(backend.addr, "5s").await;
    let mut s = raw_connect(gw_addr(&gw)).await;
    within(
        "write",
        s.write_all(b"GET /sneaky HTTP/1.1\r\nHost: bookinfo.example.com\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let (data, _) = read_until(&mut s, b"\r\n\r\n", Duration::from_secs(5)).await;
    assert_eq!(
        status_of(&data),
        Some(502),
        "unsolicited 101 relayed as: {:?}",
        String::from_utf8_lossy(&data)
    );
    drop(s);
    expect_own_answer(&gw, "/after", "after an unsolicited 101").await;
    stop(gw).await;
}

// ---------------------------------------------------------------------------------------------
// Request-side attacks: early responses, client disconnects, pipelining
// ---------------------------------------------------------------------------------------------

/// BUG: the backend answers a POST before reading its body (an early 200/413 without
/// `Connection: close`), then the client sends the body — which is itself an HTTP request.
/// Envoy closes an upstream connection whose response completed before the request did, so
/// the rest of the body never reaches the backend. The pool instead keeps that connection
/// ("busy", set aside, then reused) and the gateway keeps streaming the client's body into it:
/// the backend parses the body as a second request (request smuggling past the gateway's
/// routing and authorization), and its answer lands on whichever request reuses the
/// connection next (response desynchronisation).
#[tokio::test]
async fn p11_early_response_then_body_is_not_smuggled_into_the_pooled_connection() {
    let backend = RawServer::start(|s| {
        if s.target() == "/upload" {
            // Naive: answers at once and does not read the body.
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
    let smuggled = b"GET /smuggled HTTP/1.1\r\nHost: internal\r\nContent-Length: 0\r\n\r\n";
    let mut client = raw_connect(gw_addr(&gw)).await;
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: bookinfo.example.com\r\nContent-Length: {}\r\n\r\n",
        smuggled.len()
    );
    within("write head", client.write_all(head.as_bytes()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (data, found) = read_until(&mut client, b"early", Duration::from_secs(5)).await;
    assert!(found, "no early answer: {:?}", String::from_utf8_lossy(&data));
    // As Envoy: the early answer tells the client its connection ends with it.
    assert!(
        String::from_utf8_lossy(&data)
            .to_ascii_lowercase()
            .contains("connection: close"),
        "early answer without connection: close: {:?}",
        String::from_utf8_lossy(&data)
    );
    // The client now sends its body: bytes that read as a request.
    let _ = within("write body", client.write_all(smuggled)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut wrong = Vec::new();
    for i in 0..4 {
        let path = format!("/next-{i}");
        match fetch(&gw, "GET", &path).await {
            Ok(r) if r.status == 200 && r.text() == path => {}
            Ok(r) => wrong.push(format!("GET {path} answered {} {:?}", r.status, r.text())),
            Err(e) => wrong.push(format!("GET {path}: {e}")),
        }
    }
    drop(client);
    let targets = backend.targets();
    assert!(
        !targets.iter().any(|t| t == "/smuggled") && wrong.is_empty(),
        "request body forwarded after the response completed; backend parsed: {targets:?}; {wrong:?}"
    );
    stop(gw).await;
}

/// A well-behaved backend answers early (413) while the client is still uploading, and reads
/// and discards the rest. Later requests are answered correctly.
#[tokio::test]
async fn p12_early_413_while_uploading_then_normal_requests() {
    let backend = RawServer::start(|s| {
        if s.target() == "/upload" {
            Plan {
                read_body: false,
                steps: vec![Step::Write(
                    b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_vec(),
                )],
            }
        } else {
            echo_target(s)
        }
    })
    .await;
    let gw = gw_for(backend.addr, "5s").await;
    let mut client = raw_connect(gw_addr(&gw)).await;
    let total = 256 * 1024;
    let head =
        format!("POST /upload HTTP/1.1\r\nHost: bookinfo.example.com\r\nContent-Length: {total}\r\n\r\n");
    within("write head", client.write_all(head.as_bytes()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (mut rd, mut wr) = client.into_split();
    let uploader = tokio::spawn(async move {
        let chunk = vec![b'x'; 8 * 1024];
        for _ in 0..total / chunk.len() {
            if wr.write_all(&chunk).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        wr
    });
    let mut data = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while find(&data, b"\r\n\r\n").is_none() {
        match tokio::time::timeout_at(deadline, rd.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => data.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    uploader.abort();
    let status = status_of(&data);
    assert!(
        matches!(status, Some(413) | Some(503)),
        "early 413 relayed as {:?}",
        String::from_utf8_lossy(&data)
    );
    for i in 0..3 {
        expect_own_answer(&gw, &format!("/next-{i}"), "after an early 413").await;
    }
    stop(gw).await;
}

/// The client disconnects after the first bytes of a large response: the half-read upstream
/// connection must be closed, never handed to the next request.
#[tokio::test]
async fn p13_client_disconnect_mid_response_does_not_return_the_connection() {
    let backend = RawServer::start(|s| {
        if s.target() == "/big" {
            let mut steps = vec![Step::Write(
                b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n".to_vec(),
            )];
            for _ in 0..40 {
                steps.push(Step::Write(vec![b'x'; 64 * 1024]));
                steps.push(Step::Sleep(25));
            }
            steps.push(Step::Hold);
            Plan {
                read_body: true,
                steps,
            }
        } else {
            echo_target(s)
        }
    })
    .await;
    let gw = gw_for(backend.addr, "5s").await;
    let mut client = raw_connect(gw_addr(&gw)).await;
    within(
        "write",
        client.write_all(b"GET /big HTTP/1.1\r\nHost: bookinfo.example.com\r\n\r\n"),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let (data, found) = read_until(&mut client, b"xxxxxxxx", Duration::from_secs(5)).await;
    assert!(found, "no body started: {:?}", String::from_utf8_lossy(&data));
    drop(client);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..3 {
        expect_own_answer(&gw, &format!("/after-{i}"), "after a client disconnect mid-body").await;
    }
    assert_ne!(backend.conn_of("/after-0"), backend.conn_of("/big"));
    stop(gw).await;
}

/// Three pipelined requests in one write, the first one slow: answered in order, each with its
/// own response.
#[tokio::test]
async fn p14_pipelined_client_requests_keep_their_order() {
    let backend = RawServer::start(|s| {
        if s.target() == "/p1" {
            Plan {
                read_body: true,
                steps: vec![Step::Sleep(300), Step::Write(ok("/p1"))],
            }
        } else {
            echo_target(s)
        }
    })
    .await;
    let gw = gw_for(backend.addr, "5s").await;
    let out = raw_exchange(
        gw_addr(&gw),
        b"GET /p1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /p2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /p3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
            .to_vec(),
    )
    .await;
    let got: Vec<(u16, String)> = out
        .responses()
        .into_iter()
        .map(|(s, _, b)| (s, String::from_utf8_lossy(&b).into_owned()))
        .collect();
    assert_eq!(
        got,
        vec![(200, "/p1".into()), (200, "/p2".into()), (200, "/p3".into())],
        "{}",
        out.text()
    );
    stop(gw).await;
}

// ---------------------------------------------------------------------------------------------
// Connection lifecycle: idle closes, kills, restarts, upgrades
// ---------------------------------------------------------------------------------------------

/// The backend closes idle keep-alive connections after 1 s (FIN, or RST); a request 2 s later
/// gets a fresh connection and is sent exactly once.
#[tokio::test]
async fn p15_idle_connections_closed_by_the_backend_are_replaced() {
    for (what, last) in [("FIN", Step::Close), ("RST", Step::Reset)] {
        let last = last.clone();
        let backend = RawServer::start(move |s| Plan {
            read_body: true,
            steps: vec![Step::Write(ok(s.target())), Step::Sleep(1000), last.clone()],
        })
        .await;
        let gw = gw_for(backend.addr, "5s").await;
        expect_own_answer(&gw, "/one", what).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        expect_own_answer(&gw, "/two", what).await;
        assert_eq!(backend.targets(), ["/one", "/two"], "{what}: sent once each");
        stop(gw).await;
    }
}

/// Concurrent non-idempotent POSTs while the backend is killed and restarted: a POST that
/// reached the backend is never sent twice, and every answer is the backend's 200 or a 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p16_kill_and_restart_never_sends_a_post_twice() {
    let backend = Arc::new(
        RawServer::start(|s| Plan {
            read_body: true,
            steps: vec![
                Step::Sleep(20),
                Step::Write(ok(&s.header("x-id").unwrap_or_default())),
            ],
        })
        .await,
    );
    let gw = gw_for(backend.addr, "5s").await;
    let to = gw_addr(&gw);
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut mismatched = Vec::new();
    for round in 0..4 {
        let mut tasks = JoinSet::new();
        for i in 0..30 {
            let id = format!("r{round}-{i}");
            tasks.spawn(async move {
                tokio::time::sleep(Duration::from_millis(i as u64 * 3)).await;
                let r = try_send(to, "POST", "/tx", &[("x-id", &id)], b"pay").await;
                (id, r)
            });
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
        backend.kill();
        tokio::time::sleep(Duration::from_millis(60)).await;
        backend.restart().await;
        while let Some(joined) = within("POSTs", tasks.join_next()).await {
            let (id, r) = joined.unwrap_or_else(|e| panic!("{e}"));
            match r {
                Ok(r) => {
                    *statuses.entry(r.status.as_u16()).or_default() += 1;
                    if r.status == 200 && r.text() != id {
                        mismatched.push(format!("{id} got {:?}", r.text()));
                    }
                }
                Err(e) => mismatched.push(format!("{id}: {e}")),
            }
        }
        // Let ejection of the (briefly refusing) endpoint lapse.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let mut per_id: BTreeMap<String, usize> = BTreeMap::new();
    for s in backend.seen() {
        *per_id.entry(s.header("x-id").unwrap_or_default()).or_default() += 1;
    }
    let twice: Vec<_> = per_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "POSTs that reached the backend more than once: {twice:?}"
    );
    assert!(mismatched.is_empty(), "{mismatched:?}");
    assert!(
        statuses.keys().all(|s| *s == 200 || *s == 503),
        "statuses: {statuses:?}"
    );
    stop(gw).await;
}

/// A WebSocket upgrade takes its connection for good; normal requests afterwards use other
/// connections and get their own answers, while the tunnel keeps working.
#[tokio::test]
async fn p17_websocket_upgrade_then_normal_requests() {
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
    let gw = gw_for(backend.addr, "5s").await;
    expect_own_answer(&gw, "/before", "before the upgrade").await;
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
    for i in 0..3 {
        expect_own_answer(&gw, &format!("/after-{i}"), "after a WebSocket upgrade").await;
    }
    // Bytes in the tunnel that look like HTTP are tunnel data, echoed back.
    within("tunnel write", ws.write_all(b"GET /in-tunnel HTTP/1.1\r\n\r\n"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (echo, found) = read_until(&mut ws, b"/in-tunnel", Duration::from_secs(5)).await;
    assert!(found, "tunnel: {:?}", String::from_utf8_lossy(&echo));
    let ws_conn = backend.conn_of("/ws");
    assert!(ws_conn.is_some());
    assert_ne!(backend.conn_of("/after-0"), ws_conn);
    assert!(!backend.targets().iter().any(|t| t == "/in-tunnel"));
    drop(ws);
    stop(gw).await;
}

// ---------------------------------------------------------------------------------------------
// The HTTP ext_authz provider's pool
// ---------------------------------------------------------------------------------------------

fn raw_authz(reply: Vec<u8>, after: Option<Step>) -> impl Fn(&Seen) -> Plan + Send + Sync + 'static {
    move |_| {
        let mut steps = vec![Step::Write(reply.clone())];
        steps.extend(after.clone());
        Plan {
            read_body: true,
            steps,
        }
    }
}

/// An authz service that closes every connection after its answer, without saying so: every
/// check still succeeds (no 403 from a stale pooled connection).
#[tokio::test]
async fn p18_authz_closing_after_every_answer() {
    let backend = RawServer::start(echo_target).await;
    let authz = RawServer::start(raw_authz(
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec(),
        Some(Step::Close),
    ))
    .await;
    let gw = gw_with_authz(backend.addr, authz.addr).await;
    let mut failed = Vec::new();
    for i in 0..20 {
        let path = format!("/c{i}");
        match fetch(&gw, "GET", &path).await {
            Ok(r) if r.status == 200 && r.text() == path => {}
            Ok(r) => failed.push(format!("{path}: {} {:?}", r.status, r.text())),
            Err(e) => failed.push(format!("{path}: {e}")),
        }
    }
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(authz.seen().len(), 20, "each check sent once");
    stop(gw).await;
}

/// An authz service that denies and appends a smuggled `200 OK` after its answer: the extra
/// bytes must never be taken as the answer to a later check (which would allow a request the
/// service denies).
#[tokio::test]
async fn p19_authz_extra_allow_after_a_deny_never_allows() {
    let backend = RawServer::start(echo_target).await;
    let authz = RawServer::start(raw_authz(
        cat(&[
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 6\r\n\r\ndenied",
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        ]),
        None,
    ))
    .await;
    let gw = gw_with_authz(backend.addr, authz.addr).await;
    for i in 0..10 {
        let path = format!("/d{i}");
        let r = fetch(&gw, "GET", &path).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status, 403, "{path}: {}", r.text());
    }
    assert!(
        backend.targets().is_empty(),
        "backend reached: {:?}",
        backend.targets()
    );
    stop(gw).await;
}

/// An authz service that allows and leaves garbage on the connection: later checks are not
/// failed (403) because of it.
#[tokio::test]
async fn p20_authz_garbage_after_an_allow_does_not_fail_later_checks() {
    let backend = RawServer::start(echo_target).await;
    let authz = RawServer::start(raw_authz(
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n\x00\x01garbage\r\n\r\n".to_vec(),
        None,
    ))
    .await;
    let gw = gw_with_authz(backend.addr, authz.addr).await;
    let mut failed = Vec::new();
    for i in 0..10 {
        let path = format!("/g{i}");
        match fetch(&gw, "GET", &path).await {
            Ok(r) if r.status == 200 && r.text() == path => {}
            Ok(r) => failed.push(format!("{path}: {} {:?}", r.status, r.text())),
            Err(e) => failed.push(format!("{path}: {e}")),
        }
    }
    assert!(failed.is_empty(), "{failed:?}");
    stop(gw).await;
}

/// An authz service that sends its head and then stalls the body: the check timeout (1 s)
/// bounds the whole check, the request fails closed, and the stalled connection is not reused.
#[tokio::test]
async fn p21_authz_stalled_body_fails_closed_at_the_check_timeout() {
    let backend = RawServer::start(echo_target).await;
    let authz = RawServer::start(|s| {
        if s.target() == "/stall" {
            Plan {
                read_body: true,
                steps: vec![
                    Step::Write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_vec()),
                    Step::Hold,
                ],
            }
        } else {
            Plan {
                read_body: true,
                steps: vec![Step::Write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec(),
                )],
            }
        }
    })
    .await;
    let gw = gw_with_authz(backend.addr, authz.addr).await;
    let started = std::time::Instant::now();
    let r = fetch(&gw, "GET", "/stall")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    expect_own_answer(&gw, "/ok", "after a stalled check").await;
    assert!(!backend.targets().iter().any(|t| t == "/stall"));
    stop(gw).await;
}

/// The upload guard must not cost keep-alive: uploads the backend reads whole before answering
/// (Content-Length in several frames, chunked in two writes) leave the connection pooled, and
/// every request rides the same backend connection.
#[tokio::test]
async fn p22_uploads_read_whole_keep_the_connection_pooled() {
    let backend = RawServer::start(echo_target).await;
    let gw = gw_for(backend.addr, "5s").await;
    let big = vec![b'x'; 256 * 1024];
    for i in 0..3 {
        let path = format!("/upload-{i}");
        let r = within(&path, try_send(gw_addr(&gw), "POST", &path, &[], &big))
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!((r.status.as_u16(), r.text()), (200, path.clone()));
    }
    for i in 0..3 {
        let path = format!("/chunked-{i}");
        let mut s = raw_connect(gw_addr(&gw)).await;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: bookinfo.example.com\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
        );
        within("write head", s.write_all(head.as_bytes()))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        tokio::time::sleep(Duration::from_millis(50)).await;
        within("write rest", s.write_all(b"6\r\n world\r\n0\r\n\r\n"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (data, found) = read_until(&mut s, path.as_bytes(), Duration::from_secs(5)).await;
        assert!(found, "{path}: {:?}", String::from_utf8_lossy(&data));
        assert_eq!(status_of(&data), Some(200), "{path}");
        assert!(
            !String::from_utf8_lossy(&data)
                .to_ascii_lowercase()
                .contains("connection: close"),
            "{path}: a complete upload must not close the client connection"
        );
    }
    expect_own_answer(&gw, "/after", "after the uploads").await;
    assert_eq!(
        backend.conns.load(Ordering::SeqCst),
        1,
        "uploads read whole should keep one reusable backend connection"
    );
    stop(gw).await;
}
