//! Edge cases of the hot-path optimisations (shared authority, borrowed path and upstream URI, header
//! survey, one-read framing scan, HTTP check URI): requests whose handling those changes could
//! alter, end to end through real loopback sockets. Each test states what the gateway must do
//! (the behaviour before the changes, and Envoy's).

mod common;
mod raw_backend;

use std::time::Duration;

use authgate_proxy::Gateway;
use common::*;
use raw_backend::*;

/// A raw backend that answers every request 200 with its request target as the body, and
/// records the request line and head byte for byte.
async fn raw_echo_backend() -> RawServer {
    RawServer::start(echo_target).await
}

/// `GET http://host HTTP/1.1` (absolute form, no path) means `/` (RFC 9112 §3.2.2): the
/// backend must receive `GET / HTTP/1.1`, never an empty request target (`GET  HTTP/1.1`),
/// which some parsers refuse and others read as something else. The received target is empty
/// in the `http` crate (`PathAndQuery::as_str` says "/" for it, but a `Uri` built from it has
/// no path at all).
#[tokio::test]
async fn absolute_form_without_path_reaches_the_backend_as_slash() {
    let backend = raw_echo_backend().await;
    let gw = gw_for(backend.addr, "5s").await;
    let out = raw_exchange(
        gw_addr(&gw),
        b"GET http://bookinfo.example.com HTTP/1.1\r\nHost: other.example.com\r\nConnection: close\r\n\r\n"
            .to_vec(),
    )
    .await;
    let seen = backend.seen();
    let lines: Vec<&str> = seen.iter().map(|s| s.line.as_str()).collect();
    assert_eq!(lines, vec!["GET / HTTP/1.1"], "client got: {}", out.text());
    assert_eq!(
        seen[0].header("host").as_deref(),
        Some("bookinfo.example.com"),
        "absolute-form authority replaces Host"
    );
    assert_eq!(out.statuses(), vec![200], "{}", out.text());
    stop(gw).await;
}

/// The client sends `x-forwarded-for`, `x-forwarded-host`, `x-forwarded-client-cert` and an
/// `x-envoy-*` header and also nominates them in `Connection`: the header survey saw them
/// before the nomination removed them, so its flags are stale. The backend must still see the
/// peer alone in `x-forwarded-for` (not the client's value, not an empty entry) and none of
/// the others, with or without trusted proxies in front.
#[tokio::test]
async fn connection_nominated_forwarding_headers_the_client_also_sent() {
    for hops in [0u32, 1] {
        let backend = recorder().await;
        let gw = gateway(
            "listeners: [{ address: \"127.0.0.1:0\" }]\nbackends: [{ name: b, endpoints: [\"{{b}}\"] }]\nroutes: [{ backend: b }]\ngateway: { numTrustedProxies: {{hops}} }\n",
            &[("b", backend.addr.to_string()), ("hops", hops.to_string())],
        )
        .await;
        let raw = "GET /xff HTTP/1.1\r\nHost: bookinfo.example.com\r\n\
                   X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: admin.example.com\r\n\
                   X-Forwarded-Client-Cert: By=spiffe://evil\r\nX-Envoy-Original-Path: /admin\r\n\
                   Connection: x-forwarded-for, X-Forwarded-Host\r\n\
                   Connection: x-forwarded-client-cert,x-envoy-original-path, close\r\n\r\n";
        let out = raw_exchange(gw_addr(&gw), raw.as_bytes().to_vec()).await;
        assert_eq!(out.statuses(), vec![200], "hops {hops}: {}", out.text());
        let seen = backend.recorded();
        assert_eq!(seen.len(), 1, "hops {hops}");
        let values = |name: &str| -> Vec<String> {
            seen[0]
                .headers
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect()
        };
        assert_eq!(
            values("x-forwarded-for"),
            vec!["127.0.0.1".to_owned()],
            "hops {hops}"
        );
        for gone in [
            "x-forwarded-host",
            "x-forwarded-client-cert",
            "x-envoy-original-path",
            "connection",
        ] {
            assert!(
                values(gone).is_empty(),
                "hops {hops}: {gone} forwarded: {:?}",
                values(gone)
            );
        }
        stop(gw).await;
    }
}

/// The HTTP check request's target is pathPrefix + path?query by plain concatenation, exactly
/// as the gateway forwards the path (Envoy: `/check/` + `/a` = `/check//a`), for targets the
/// borrowed-path and `PathAndQuery` shortcuts treat specially: an empty query, a doubled
/// slash, an encoded slash and `;` (kept as sent), a normalized path (the normalized one is
/// checked and forwarded), a fragment (dropped), and absolute form without a path (`/`).
/// The check's Host and the upstream Host are the absolute-form authority as received, not
/// the client's Host header.
#[tokio::test]
async fn check_request_target_is_prefix_plus_forwarded_path() {
    let authz = RawServer::start(|_| Plan {
        read_body: true,
        steps: vec![Step::Write(ok(""))],
    })
    .await;
    let backend = raw_echo_backend().await;
    let gw = gateway(
        r#"
listeners: [{ address: "127.0.0.1:0" }]
backends: [{ name: b, endpoints: ["{{b}}"] }]
routes: [{ name: r, backend: b, timeout: 5s }]
extensionProviders:
  - name: authz
    envoyExtAuthzHttp: { service: "127.0.0.1", port: {{ap}}, pathPrefix: "/check/", timeout: 1s, failOpen: false }
authorizationPolicies:
  - { name: all, action: CUSTOM, provider: { name: authz }, rules: [{}] }
"#,
        &[
            ("b", backend.addr.to_string()),
            ("ap", authz.addr.port().to_string()),
        ],
    )
    .await;
    // (request target, Host header, what the backend gets, what the authz service gets, Host
    // both see)
    let cases = [
        (
            "/a",
            "bookinfo.example.com",
            "/a",
            "/check//a",
            "bookinfo.example.com",
        ),
        (
            "/a?",
            "bookinfo.example.com",
            "/a?",
            "/check//a?",
            "bookinfo.example.com",
        ),
        ("//a?x=1", "h.example", "//a?x=1", "/check///a?x=1", "h.example"),
        (
            "/a%2Fb;p?q=%2F;",
            "h.example",
            "/a%2Fb?q=%2F;",
            "/check//a%2Fb?q=%2F;",
            "h.example",
        ),
        (
            "/a/./b/../c?k",
            "h.example",
            "/a/c?k",
            "/check//a/c?k",
            "h.example",
        ),
        ("/f?q#frag", "h.example", "/f?q", "/check//f?q", "h.example"),
        (
            "http://Bookinfo.Example.com.:8080/p?z",
            "other.example",
            "/p?z",
            "/check//p?z",
            "Bookinfo.Example.com.:8080",
        ),
        ("http://h.example", "other.example", "/", "/check//", "h.example"),
        (
            "/x",
            "[fe80::1%25eth0]:8080",
            "/x",
            "/check//x",
            "[fe80::1%25eth0]:8080",
        ),
    ];
    for (i, (target, host, upstream, check, want_host)) in cases.iter().enumerate() {
        let raw = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let out = raw_exchange(gw_addr(&gw), raw.into_bytes()).await;
        assert_eq!(out.statuses(), vec![200], "{target}: {}", out.text());
        let checks = authz.seen();
        let check_seen = checks.get(i).unwrap_or_else(|| panic!("{target}: no check"));
        assert_eq!(
            check_seen.line,
            format!("GET {check} HTTP/1.1"),
            "{target}: check request line"
        );
        assert_eq!(
            check_seen.header("host").as_deref(),
            Some(*want_host),
            "{target}: check Host"
        );
        assert_eq!(
            check_seen.header("content-length").as_deref(),
            Some("0"),
            "{target}"
        );
        let sent = backend.seen();
        let up = sent.get(i).unwrap_or_else(|| panic!("{target}: not forwarded"));
        assert_eq!(
            up.line,
            format!("GET {upstream} HTTP/1.1"),
            "{target}: upstream request line"
        );
        assert_eq!(
            up.header("host").as_deref(),
            Some(*want_host),
            "{target}: upstream Host"
        );
    }
    stop(gw).await;
}

/// Host values the shared-`HeaderValue` authority must refuse as the `http` crate did (400,
/// nothing forwarded): obs-text, an empty value, a port without a host, userinfo, a tab inside,
/// two ports, a `%` outside an IPv6 literal, unbalanced brackets.
#[tokio::test]
async fn invalid_host_values_are_refused() {
    let backend = raw_echo_backend().await;
    let gw = gw_for(backend.addr, "5s").await;
    let hosts: [&[u8]; 10] = [
        b"h\xe9st.example",
        b"",
        b":8080",
        b"user@admin.example.com",
        b"a\tb.example",
        b"h.example:80:81",
        b"h%41.example",
        b"[::1",
        b"::1]",
        b"h.example/x",
    ];
    for host in hosts {
        let mut raw = b"GET /x HTTP/1.1\r\nHost: ".to_vec();
        raw.extend_from_slice(host);
        raw.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
        let out = raw_exchange(gw_addr(&gw), raw).await;
        assert_eq!(
            out.statuses(),
            vec![400],
            "Host {:?}: {}",
            String::from_utf8_lossy(host),
            out.text()
        );
    }
    // Absolute form with userinfo, whatever the Host says.
    let out = raw_exchange(
        gw_addr(&gw),
        b"GET http://x@admin.example.com/x HTTP/1.1\r\nHost: h.example\r\nConnection: close\r\n\r\n".to_vec(),
    )
    .await;
    assert_eq!(out.statuses(), vec![400], "{}", out.text());
    assert!(backend.seen().is_empty(), "forwarded: {:?}", backend.targets());
    stop(gw).await;
}

/// Content-Length and Transfer-Encoding (odd case) with the header block cut mid-name and
/// mid-line across TCP writes, so the framing guard's one-read shortcut and its byte-at-a-time
/// fallback both run: 400, connection closed, the request hidden in the body never forwarded.
#[tokio::test]
async fn framing_guard_across_tcp_reads() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: h.example\r\n\r\n";
    let body = format!("0\r\n\r\n{smuggled}");
    for cut in [&b"Content-Le"[..], b"tRaNsFeR-e", b"Content-Length: ", b"\r"] {
        let backend = raw_echo_backend().await;
        let gw = gw_for(backend.addr, "5s").await;
        let head = format!(
            "POST /first HTTP/1.1\r\nHost: h.example\r\nContent-Length: {}\r\ntRaNsFeR-eNcOdInG: chunked\r\n\r\n",
            body.len()
        );
        let bytes = format!("{head}{body}").into_bytes();
        // Split right after the first occurrence of `cut` (inside the header block).
        let at = bytes
            .windows(cut.len())
            .position(|w| w == cut)
            .map_or(bytes.len() / 2, |p| p + cut.len());
        let mut s = raw_connect(gw_addr(&gw)).await;
        let mut data = Vec::new();
        if s.write_all(&bytes[..at]).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(30)).await;
            let _ = s.write_all(&bytes[at..]).await;
        }
        let mut chunk = [0u8; 4096];
        let closed = loop {
            match tokio::time::timeout(PATIENCE, s.read(&mut chunk)).await {
                Err(_) => break false,
                Ok(Ok(0) | Err(_)) => break true,
                Ok(Ok(n)) => data.extend_from_slice(&chunk[..n]),
            }
        };
        let text = String::from_utf8_lossy(&data).into_owned();
        let cut_text = String::from_utf8_lossy(cut);
        assert!(text.starts_with("HTTP/1.1 400"), "cut after {cut_text:?}: {text}");
        assert!(closed, "cut after {cut_text:?}: connection left open");
        assert!(
            backend.seen().is_empty(),
            "cut after {cut_text:?}: forwarded {:?}",
            backend.targets()
        );
        stop(gw).await;
    }
}

/// A gateway whose every request is checked by an HTTP provider with `pathPrefix: prefix` and
/// `failOpen: true`, in front of a raw authz service answering each check with `answer` and a
/// raw echo backend.
async fn fail_open_prefix_gateway(answer: &[u8], prefix: &str) -> (RawServer, RawServer, Gateway) {
    let answer = answer.to_vec();
    let authz = RawServer::start(move |_| Plan {
        read_body: true,
        steps: vec![Step::Write(answer.clone())],
    })
    .await;
    let backend = raw_echo_backend().await;
    let gw = gateway(
        r#"
listeners: [{ address: "127.0.0.1:0" }]
backends: [{ name: b, endpoints: ["{{b}}"] }]
routes: [{ name: r, backend: b, timeout: 5s }]
extensionProviders:
  - name: authz
    envoyExtAuthzHttp: { service: "127.0.0.1", port: {{ap}}, pathPrefix: "{{prefix}}", timeout: 2s, failOpen: true }
authorizationPolicies:
  - { name: all, action: CUSTOM, provider: { name: authz }, rules: [{}] }
"#,
        &[
            ("b", backend.addr.to_string()),
            ("ap", authz.addr.port().to_string()),
            ("prefix", prefix.to_owned()),
        ],
    )
    .await;
    (authz, backend, gw)
}

/// A long request target with a long pathPrefix: `http://host:port` + prefix + path is longer
/// than the `http` crate accepts for a whole URI (65534 bytes) although prefix + path alone is
/// not. The check must be made and its answer followed, as Envoy does. (When the whole
/// origin + prefix + path was parsed, this check could not be built, and under `failOpen: true`
/// the request was forwarded unchecked; see also the next test.)
#[tokio::test]
async fn long_target_is_still_checked_under_fail_open() {
    let prefix = format!("/{}", "p".repeat(4_600));
    let (authz, backend, gw) = fail_open_prefix_gateway(
        b"HTTP/1.1 403 Forbidden\r\nContent-Length: 6\r\n\r\ndenied",
        &prefix,
    )
    .await;
    // prefix + path: 65530 bytes, just under the `http` crate's 65534; with the origin, over.
    let path = format!("/{}", "a".repeat(65_530 - prefix.len() - 1));
    let origin_len = format!("http://{}", authz.addr).len();
    assert!(prefix.len() + path.len() <= 65_534 && origin_len + prefix.len() + path.len() > 65_534);
    let raw = format!("GET {path} HTTP/1.1\r\nHost: h.example\r\nConnection: close\r\n\r\n");
    let out = raw_exchange(gw_addr(&gw), raw.into_bytes()).await;
    let statuses = out.statuses();
    let checks: Vec<usize> = authz.seen().iter().map(|s| s.target().len()).collect();
    assert!(
        backend.seen().is_empty(),
        "forwarded without a check: client got {statuses:?}, authz saw targets of lengths {checks:?}"
    );
    assert_eq!(
        checks,
        vec![prefix.len() + path.len()],
        "the check carries prefix + path"
    );
    assert_eq!(statuses, vec![403], "the authz service's denial");
    stop(gw).await;
}

/// pathPrefix + path longer than any URI can be (the `http` crate's 65,534 bytes): the check
/// request cannot be built. That is the client's doing, not the authorization service failing,
/// so `failOpen: true` must not let the request through unchecked: the gateway answers as for
/// an authz error when failing closed (403), and neither service sees anything.
#[tokio::test]
async fn check_that_cannot_be_built_fails_closed_under_fail_open() {
    let prefix = format!("/{}", "p".repeat(7_999));
    let (authz, backend, gw) =
        fail_open_prefix_gateway(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", &prefix).await;
    // A target the gateway accepts (under its 60 KiB head limit) that, prefixed, no URI holds.
    let path = format!("/{}", "a".repeat(59_999));
    assert!(prefix.len() + path.len() > 65_534);
    let raw = format!("GET {path} HTTP/1.1\r\nHost: h.example\r\nConnection: close\r\n\r\n");
    let out = raw_exchange(gw_addr(&gw), raw.into_bytes()).await;
    assert!(
        backend.seen().is_empty(),
        "forwarded without a check: {:?}",
        out.statuses()
    );
    assert!(authz.seen().is_empty(), "the check was sent after all");
    assert_eq!(out.statuses(), vec![403], "{}", out.text());
    stop(gw).await;
}
