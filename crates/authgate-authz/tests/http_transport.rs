//! The HTTP/1.1 transport of the `envoyExtAuthzHttp` provider against a scripted raw TCP server:
//! each connection's answer is written byte for byte, so framing, keep-alive and error handling
//! are pinned independently of any HTTP server library (envoy-ext-authz.md §4).
//!
//! They were written against hyper's HTTP/1 client (which the provider used before
//! `http1_check.rs`) and kept when it was replaced; the two that changed on purpose (an answer
//! with both framings, a transfer coding other than chunked: now errors, as in Envoy) say so.
//! Cases where the behaviour is debatable are marked `NOTE:`. The scripted server is in
//! `support/scripted.rs`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use authgate_authz::{CheckError, Decision};
use http::{Method, StatusCode};
use support::scripted::*;
use support::{ClientRequest, body_settings};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout};

// ---------------------------------------------------------------------------------------------
// 1-3: keep-alive
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn keep_alive_sequential_checks_share_one_connection() {
    let server = Server::answering(|_| OK.to_vec()).await;
    let mut config = provider();
    config.body = Some(body_settings(16, false, false));
    let c = client_with(&config, &server);
    for i in 0..5 {
        // The third check carries a body: the server must see it framed by content-length.
        let req = if i == 2 {
            ClientRequest::get("/with-body")
                .method(Method::POST)
                .body(b"abcd", false)
        } else {
            ClientRequest::get("/")
        };
        assert_eq!(check_req(&c, &req).await, allowed(), "check {i}");
    }
    assert_eq!(server.connections(), 1);
    assert_eq!(server.conns_used(), [0, 0, 0, 0, 0]);
    let seen = server.seen();
    assert!(
        seen[2].head.starts_with("POST /with-body HTTP/1.1\r\n"),
        "{}",
        seen[2].head
    );
    assert_eq!(seen[2].body, b"abcd");
    assert!(seen[3].head.starts_with("GET / HTTP/1.1\r\n"), "{}", seen[3].head);
    assert!(seen[3].body.is_empty());
}

#[tokio::test]
async fn connection_close_in_the_answer_makes_the_next_check_use_a_new_connection() {
    // The server keeps its side open: the client alone must decide not to reuse.
    let server =
        Server::answering(|_| b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n".to_vec())
            .await;
    let c = client(&server);
    assert_eq!(check(&c).await, allowed());
    next_check_on_a_new_connection(&c, &server, "").await;
}

#[tokio::test]
async fn idle_connection_closed_by_the_server_is_not_an_error() {
    let server = Server::first_then_ok(|mut conn| async move {
        if conn.request().await.is_some() {
            conn.send(OK).await;
            sleep(Duration::from_millis(50)).await;
        }
        // Dropping the stream closes the pooled connection while it is idle.
    })
    .await;
    let c = client(&server);
    assert_eq!(check(&c).await, allowed());
    sleep(Duration::from_millis(200)).await;
    next_check_on_a_new_connection(&c, &server, "").await;
}

// ---------------------------------------------------------------------------------------------
// 4-6: body framing
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn chunked_deny_body_with_extension_and_trailer_is_concatenated_and_connection_reused() {
    let server = Server::answering(|r| {
        if r.n == 0 {
            b"HTTP/1.1 403 Forbidden\r\n\
              x-h: v\r\n\
              transfer-encoding: chunked\r\n\
              \r\n\
              4;x=y\r\nWiki\r\n\
              5\r\npedia\r\n\
              E\r\n in\r\n\r\nchunks.\r\n\
              0\r\n\
              x-trailer: t\r\n\
              \r\n"
                .to_vec()
        } else {
            OK.to_vec()
        }
    })
    .await;
    let c = client(&server);
    let r = expect_deny(check(&c).await);
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.body.as_ref(), b"Wikipedia in\r\n\r\nchunks.");
    // Framing headers are never relayed; trailers are not headers.
    assert_eq!(header_pairs(&r), [pair("x-h", "v")]);
    assert_eq!(check(&c).await, allowed());
    assert_eq!(server.connections(), 1);
    assert_eq!(server.conns_used(), [0, 0]);
}

#[tokio::test]
async fn close_delimited_deny_body_is_read_to_eof_and_connection_not_reused() {
    let server = Server::first_then_ok(|mut conn| async move {
        if conn.request().await.is_some() {
            conn.send(b"HTTP/1.1 403 Forbidden\r\nx-h: v\r\n\r\nfirst part, ")
                .await;
            sleep(Duration::from_millis(20)).await;
            conn.send(b"second part").await;
        }
        // Closing ends the body.
    })
    .await;
    let c = client(&server);
    let r = expect_deny(check(&c).await);
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.body.as_ref(), b"first part, second part");
    assert_eq!(header_pairs(&r), [pair("x-h", "v")]);
    next_check_on_a_new_connection(&c, &server, "").await;
}

#[tokio::test]
async fn answers_written_one_byte_at_a_time_are_parsed() {
    let pause = Duration::from_millis(1);
    let server = Server::start(move |mut conn| async move {
        for _ in 0..10 {
            let Some(req) = conn.request().await else { return };
            let answer: &[u8] = match req.n {
                0 => OK,
                1 => b"HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Basic\r\ncontent-length: 11\r\n\r\nhello world",
                _ => b"HTTP/1.1 403 Forbidden\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            };
            conn.send_slowly(answer, pause).await;
        }
    })
    .await;
    let c = client(&server);
    assert_eq!(check(&c).await, allowed());
    let r = expect_deny(check(&c).await);
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.body.as_ref(), b"hello world");
    assert_eq!(header_pairs(&r), [pair("www-authenticate", "Basic")]);
    let r = expect_deny(check(&c).await);
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.body.as_ref(), b"abcde");
    assert_eq!(server.connections(), 1);
}

// ---------------------------------------------------------------------------------------------
// 7-9: status codes without a body, interim answers, HEAD
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn interim_1xx_answers_are_skipped() {
    let server = Server::answering(|r| match r.n {
        0 => b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec(),
        // Several interim answers, one with headers (which must not leak into the final one).
        1 => b"HTTP/1.1 100 Continue\r\n\r\n\
               HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n\
               HTTP/1.1 403 Forbidden\r\nx-h: v\r\ncontent-length: 2\r\n\r\nno"
            .to_vec(),
        _ => OK.to_vec(),
    })
    .await;
    let c = client(&server);
    assert_eq!(check(&c).await, allowed());
    let r = expect_deny(check(&c).await);
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.body.as_ref(), b"no");
    assert_eq!(header_pairs(&r), [pair("x-h", "v")]);
    assert_eq!(check(&c).await, allowed());
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn switching_protocols_101_is_a_transport_error_and_the_connection_is_dropped() {
    let server = Server::first_then_ok(|mut conn| async move {
        if conn.request().await.is_some() {
            conn.send(
                b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
            )
            .await;
            conn.wait_for_close().await;
        }
    })
    .await;
    let c = client(&server);
    let msg = expect_transport(check(&c).await);
    assert!(msg.contains("101"), "{msg}");
    next_check_on_a_new_connection(&c, &server, "").await;
}

#[tokio::test]
async fn head_check_ignores_the_declared_content_length_and_reuses_the_connection() {
    let server = Server::answering(|r| {
        if r.n == 0 {
            // No body follows: a HEAD answer never has one, whatever its content-length says.
            b"HTTP/1.1 403 Forbidden\r\nx-h: v\r\ncontent-length: 5\r\n\r\n".to_vec()
        } else {
            OK.to_vec()
        }
    })
    .await;
    let c = client(&server);
    let r = expect_deny(check_req(&c, &ClientRequest::get("/h").method(Method::HEAD)).await);
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.is_empty());
    assert_eq!(header_pairs(&r), [pair("x-h", "v")]);
    // A GET on the same connection: had the client waited for 5 body bytes, this would hang
    // or be misparsed.
    assert_eq!(check(&c).await, allowed());
    let seen = server.seen();
    assert!(
        seen[0].head.starts_with("HEAD /h HTTP/1.1\r\n"),
        "{}",
        seen[0].head
    );
    assert!(seen[1].head.starts_with("GET / HTTP/1.1\r\n"), "{}", seen[1].head);
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn no_content_204_is_a_deny_with_an_empty_body() {
    let server = Server::answering(|r| {
        if r.n == 0 {
            b"HTTP/1.1 204 No Content\r\nx-h: v\r\n\r\n".to_vec()
        } else {
            OK.to_vec()
        }
    })
    .await;
    let c = client(&server);
    let r = expect_deny(check(&c).await);
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.body.is_empty());
    assert_eq!(header_pairs(&r), [pair("x-h", "v")]);
    assert_eq!(check(&c).await, allowed());
    assert_eq!(server.connections(), 1);
}

// ---------------------------------------------------------------------------------------------
// 10-11: invalid and oversize answers
// ---------------------------------------------------------------------------------------------

/// Connection 0 answers the first check with `answer` (then closes, or waits for the client to
/// close); the check must fail with a transport error, and the next check must succeed on a
/// new connection.
async fn assert_transport_error(case: &str, answer: Vec<u8>, close: bool) {
    let answer = Arc::new(answer);
    let server = Server::first_then_ok(move |mut conn| {
        let answer = answer.clone();
        async move {
            if conn.request().await.is_some() {
                conn.send(&answer).await;
                if !close {
                    conn.wait_for_close().await;
                }
            }
        }
    })
    .await;
    let c = client(&server);
    let d = check(&c).await;
    assert!(
        matches!(d, Decision::Error(CheckError::Transport(_))),
        "{case}: expected a transport error, got {d:?}"
    );
    next_check_on_a_new_connection(&c, &server, case).await;
}

fn many_headers(n: usize) -> Vec<u8> {
    let mut out = b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n".to_vec();
    // The content-length line counts as one.
    for i in 1..n {
        out.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[tokio::test]
async fn invalid_answers_are_transport_errors() {
    let cases: [(&str, &[u8], bool); 7] = [
        ("garbage status line", b"garbage\r\n\r\n", false),
        (
            "non-numeric status",
            b"HTTP/1.1 2OO OK\r\ncontent-length: 0\r\n\r\n",
            false,
        ),
        (
            "two different content-lengths",
            b"HTTP/1.1 403 Forbidden\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!",
            false,
        ),
        (
            "non-numeric content-length",
            b"HTTP/1.1 403 Forbidden\r\ncontent-length: abc\r\n\r\nabc",
            false,
        ),
        (
            "head with no end, then close",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n",
            true,
        ),
        ("closed before any byte", b"", true),
        (
            "closed mid-body",
            b"HTTP/1.1 403 Forbidden\r\ncontent-length: 100\r\n\r\n0123456789",
            true,
        ),
    ];
    for (case, answer, close) in cases {
        assert_transport_error(case, answer.to_vec(), close).await;
    }
    assert_transport_error("101 headers", many_headers(101), false).await;
}

#[tokio::test]
async fn one_hundred_headers_are_accepted() {
    let server = Server::answering(|_| many_headers(100)).await;
    let c = client(&server);
    let r = expect_deny(check(&c).await);
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // content-length is not relayed: 99 x-h headers.
    assert_eq!(r.headers.len(), 99);
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn repeated_equal_content_lengths_are_accepted() {
    let server = Server::answering(|r| match r.n {
        0 => b"HTTP/1.1 403 Forbidden\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\nhello".to_vec(),
        1 => b"HTTP/1.1 403 Forbidden\r\ncontent-length: 3, 3\r\n\r\nabc".to_vec(),
        _ => OK.to_vec(),
    })
    .await;
    let c = client(&server);
    assert_eq!(expect_deny(check(&c).await).body.as_ref(), b"hello");
    assert_eq!(expect_deny(check(&c).await).body.as_ref(), b"abc");
    assert_eq!(check(&c).await, allowed());
    assert_eq!(server.connections(), 1);
}

/// Connection 0 answers a 403 with `head` and then up to `total` bytes of body (in 64 KiB
/// writes, stopping when the client goes away), then closes.
async fn huge_deny(head: &'static [u8], total: usize, chunked: bool) -> Server {
    Server::first_then_ok(move |mut conn| async move {
        if conn.request().await.is_none() {
            return;
        }
        conn.send(head).await;
        let piece = vec![b'x'; 64 * 1024];
        let mut frame = piece.clone();
        if chunked {
            frame = format!("{:x}\r\n", piece.len()).into_bytes();
            frame.extend_from_slice(&piece);
            frame.extend_from_slice(b"\r\n");
        }
        let mut sent = 0;
        while sent < total {
            if conn.stream.write_all(&frame).await.is_err() {
                return;
            }
            sent += piece.len();
        }
        if chunked {
            conn.send(b"0\r\n\r\n").await;
        }
        conn.wait_for_close().await;
    })
    .await
}

#[tokio::test]
async fn deny_body_over_4_mib_is_a_transport_error() {
    const FIVE_MIB: usize = 5 << 20;
    for chunked in [false, true] {
        let head: &'static [u8] = if chunked {
            b"HTTP/1.1 403 Forbidden\r\ntransfer-encoding: chunked\r\n\r\n"
        } else {
            b"HTTP/1.1 403 Forbidden\r\ncontent-length: 5242880\r\n\r\n"
        };
        let server = huge_deny(head, FIVE_MIB, chunked).await;
        let c = client(&server);
        let started = Instant::now();
        expect_transport(check(&c).await);
        assert!(
            started.elapsed() < WAIT,
            "chunked={chunked}: took {:?}",
            started.elapsed()
        );
        assert_eq!(check(&c).await, allowed(), "chunked={chunked}");
        assert_eq!(server.connections(), 2, "chunked={chunked}");
    }
}

#[tokio::test]
async fn deny_body_of_exactly_4_mib_is_relayed() {
    const FOUR_MIB: usize = 4 << 20;
    let server = huge_deny(
        b"HTTP/1.1 403 Forbidden\r\ncontent-length: 4194304\r\n\r\n",
        FOUR_MIB,
        false,
    )
    .await;
    let c = client(&server);
    let r = expect_deny(check(&c).await);
    assert_eq!(r.body.len(), FOUR_MIB);
    assert!(r.body.iter().all(|b| *b == b'x'));
}

// ---------------------------------------------------------------------------------------------
// 12-15: framing edge cases
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn stray_bytes_after_an_answer_are_never_read_as_the_next_answer() {
    // Connection 0 sends its answer and an unsolicited 403 in the same write; if the client ever
    // sent a second request on it, it would get a 401.
    let server = Server::start(|mut conn| async move {
        if conn.index > 0 {
            conn.serve(|_| OK.to_vec()).await;
            return;
        }
        if conn.request().await.is_none() {
            return;
        }
        let mut both = OK.to_vec();
        both.extend_from_slice(&deny_with(b"stray"));
        conn.send(&both).await;
        conn.serve(|_| b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n".to_vec())
            .await;
    })
    .await;
    let c = client(&server);
    assert_eq!(check(&c).await, allowed());
    // The stray bytes make the client drop connection 0; the next check goes to a new one and
    // gets its real answer.
    next_check_on_a_new_connection(&c, &server, "").await;
}

#[tokio::test]
async fn unsolicited_bytes_on_an_idle_connection_close_it() {
    let server = Server::start(|mut conn| async move {
        if conn.index > 0 {
            conn.serve(|_| OK.to_vec()).await;
            return;
        }
        if conn.request().await.is_none() {
            return;
        }
        conn.send(OK).await;
        sleep(Duration::from_millis(50)).await;
        conn.send(&deny_with(b"stray")).await;
        conn.serve(|_| b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n".to_vec())
            .await;
    })
    .await;
    let c = client(&server);
    assert_eq!(check(&c).await, allowed());
    sleep(Duration::from_millis(200)).await;
    next_check_on_a_new_connection(&c, &server, "").await;
}

#[tokio::test]
async fn transfer_encoding_with_content_length_is_a_transport_error() {
    let server = Server::answering(|r| {
        if r.n == 0 {
            b"HTTP/1.1 403 Forbidden\r\n\
              transfer-encoding: chunked\r\n\
              content-length: 100\r\n\
              \r\n\
              3\r\nabc\r\n0\r\n\r\n"
                .to_vec()
        } else {
            OK.to_vec()
        }
    })
    .await;
    let c = client(&server);
    // Both framings in one answer: RFC 9112 §6.3 says such a message "ought to be handled as
    // an error" (request smuggling / response splitting); Envoy's HTTP/1 codec rejects it
    // unless `allow_chunked_length` is set. A transport error, and the connection is not
    // kept (hyper's client accepted it, chunked framing winning, and kept the connection).
    assert!(
        matches!(check(&c).await, Decision::Error(CheckError::Transport(_))),
        "an answer with both framings is an error"
    );
    next_check_on_a_new_connection(&c, &server, "").await;
}

#[tokio::test]
async fn transfer_codings_other_than_chunked_are_a_transport_error() {
    for coding in ["gzip", "gzip, chunked", "chunked, chunked", "chunked, gzip"] {
        let server = Server::first_then_ok(move |mut conn| async move {
            if conn.request().await.is_some() {
                let answer = format!(
                    "HTTP/1.1 403 Forbidden\r\ntransfer-encoding: {coding}\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
                );
                conn.send(answer.as_bytes()).await;
            }
        })
        .await;
        let c = client(&server);
        // A coding the gateway cannot decode would reach the client as coded bytes with the
        // header that says so stripped (hyper's client read such a body to EOF and relayed
        // it): refused instead, as Envoy's codec refuses codings other than chunked.
        assert!(
            matches!(check(&c).await, Decision::Error(CheckError::Transport(_))),
            "transfer-encoding: {coding}"
        );
        assert_eq!(check(&c).await, allowed(), "transfer-encoding: {coding}");
        assert_eq!(server.connections(), 2, "transfer-encoding: {coding}");
    }
}

#[tokio::test]
async fn http_1_0_answer_without_keep_alive_is_not_reused() {
    // The server keeps its side open: the client alone decides.
    let server = Server::answering(|_| b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec()).await;
    let c = client(&server);
    assert_eq!(check(&c).await, allowed());
    next_check_on_a_new_connection(&c, &server, "").await;
}

#[tokio::test]
async fn http_1_0_answer_with_keep_alive_is_reused() {
    let server = Server::answering(|_| {
        b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n".to_vec()
    })
    .await;
    let c = client(&server);
    assert_eq!(check(&c).await, allowed());
    assert_eq!(check(&c).await, allowed());
    assert_eq!(server.connections(), 1);
    assert_eq!(server.conns_used(), [0, 0]);
}

/// A header continuation line (obs-fold, RFC 9112 §5.2) is rejected, not unfolded.
#[tokio::test]
async fn obs_fold_in_the_answer_is_a_transport_error() {
    assert_transport_error(
        "obs-fold",
        b"HTTP/1.1 200 OK\r\nx-a: b\r\n  c\r\ncontent-length: 0\r\n\r\n".to_vec(),
        false,
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// 16-17: concurrency and timeout
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn concurrent_checks_use_at_most_one_connection_each() {
    let server = Server::start(|mut conn| async move {
        for _ in 0..100 {
            if conn.request().await.is_none() {
                return;
            }
            sleep(Duration::from_millis(50)).await;
            conn.send(OK).await;
        }
    })
    .await;
    let c = Arc::new(client(&server));
    let mut tasks = JoinSet::new();
    for _ in 0..8 {
        let c = c.clone();
        tasks.spawn(async move { check(&c).await });
    }
    let mut done = 0;
    while let Some(d) = timeout(2 * WAIT, tasks.join_next()).await.expect("checks hung") {
        assert_eq!(d.expect("task"), allowed());
        done += 1;
    }
    assert_eq!(done, 8);
    assert_eq!(server.seen().len(), 8);
    let n = server.connections();
    assert!((1..=8).contains(&n), "{n} connections");
}

#[tokio::test]
async fn unanswered_check_times_out_and_the_next_check_works() {
    let closed = Arc::new(AtomicBool::new(false));
    let flag = closed.clone();
    let server = Server::first_then_ok(move |mut conn| {
        let flag = flag.clone();
        async move {
            if conn.request().await.is_some() && conn.wait_for_close().await {
                flag.store(true, Ordering::SeqCst);
            }
        }
    })
    .await;
    let mut config = provider();
    config.timeout = Duration::from_millis(200);
    let c = client_with(&config, &server);
    let started = Instant::now();
    assert_eq!(check(&c).await, Decision::Error(CheckError::Timeout));
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    next_check_on_a_new_connection(&c, &server, "").await;
    // The abandoned connection is closed by the client, never reused.
    for _ in 0..50 {
        if closed.load(Ordering::SeqCst) {
            break;
        }
        sleep(Duration::from_millis(20)).await;
    }
    assert!(
        closed.load(Ordering::SeqCst),
        "the timed-out connection was not closed"
    );
}
