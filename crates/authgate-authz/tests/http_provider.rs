//! The HTTP provider against a real recording HTTP server (envoy-ext-authz.md §4, istio R-A12..18).

mod support;

use std::time::Duration;

use authgate_authz::{BuildError, CheckError, Decision, LocalResponse, ProviderClient};
use authgate_config::HttpProviderSettings;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use support::{ClientRequest, Reply, body_settings, http_authz, http_provider, patterns};

fn settings() -> HttpProviderSettings {
    HttpProviderSettings::default()
}

fn client(settings: HttpProviderSettings, server: &support::Server<support::Recorded>) -> ProviderClient {
    ProviderClient::new(&http_provider(settings), server.target()).expect("provider builds")
}

fn values(h: &HeaderMap, name: &str) -> Vec<String> {
    h.get_all(name)
        .iter()
        .map(|v| v.to_str().expect("ascii").to_owned())
        .collect()
}

fn expect_deny(d: Decision) -> LocalResponse {
    match d {
        Decision::Deny(r) => r,
        other => panic!("expected a deny, got {other:?}"),
    }
}

/// The relayed deny headers, without the `date` hyper's server adds to every answer (it is
/// relayed like any other authz header, as Envoy does).
fn deny_headers(r: &LocalResponse) -> Vec<(String, String)> {
    r.headers
        .iter()
        .filter(|(n, _)| n != "date")
        .map(|(n, v)| (n.to_string(), v.to_str().expect("ascii").to_owned()))
        .collect()
}

#[tokio::test]
async fn check_request_carries_only_default_and_listed_headers() {
    let server = http_authz(|_| Reply::new(200)).await;
    let c = client(
        HttpProviderSettings {
            path_prefix: "/check".into(),
            include_request_headers: patterns(&["x-custom-id", "X-Prefix-*", "*-suffix"]),
            additional_headers: vec![
                ("x-add".into(), "static%%pct".into()),
                (
                    "x-fmt".into(),
                    "[%REQ(x-prefix-a)%][%REQ(host)%][%REQ(:path)%][%REQ(x-nope?x-custom-id):2%]".into(),
                ),
                ("x-empty-fmt".into(), "%REQ(x-nope)%".into()),
                (
                    "x-conn".into(),
                    "%DOWNSTREAM_REMOTE_ADDRESS%|%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%|\
                     %DOWNSTREAM_LOCAL_ADDRESS%|%PROTOCOL%|%REQUESTED_SERVER_NAME%"
                        .into(),
                ),
            ],
            ..settings()
        },
        &server,
    );
    let mut req = ClientRequest::get("/a/b?x=1&y=2")
        .header("authorization", "Bearer t")
        .header("x-custom-id", "c1")
        .header("X-Custom-Id", "c2")
        .header("x-prefix-a", "pa")
        .header("foo-suffix", "s")
        .header("x-other", "not listed")
        .header("cookie", "sid=1")
        .header("content-length", "0")
        .header("x-envoy-auth-partial-body", "spoof");
    // Values travel through Envoy's CheckRequest map, so bytes that break UTF-8 become '!'.
    req.headers.append(
        "x-prefix-obs",
        HeaderValue::from_bytes(b"a\xffb").expect("obs-text"),
    );
    let d = c.check(&req.parts()).await;
    assert_eq!(d, Decision::Allow(Default::default()));

    let got = server.last();
    assert_eq!(got.method, "GET");
    // R-A12: plain concatenation of pathPrefix and path+query.
    assert_eq!(got.path, "/check/a/b?x=1&y=2");
    assert_eq!(got.header("host"), Some("shop.example.com"));
    assert_eq!(got.header("content-length"), Some("0"));
    assert_eq!(got.header("authorization"), Some("Bearer t"));
    // Repeated client values joined with "," (CVE-2021-32777 fix).
    assert_eq!(got.header("x-custom-id"), Some("c1,c2"));
    assert_eq!(got.header("x-prefix-a"), Some("pa"));
    assert_eq!(got.header("foo-suffix"), Some("s"));
    assert_eq!(got.header("x-add"), Some("static%pct"));
    assert_eq!(got.header("x-prefix-obs"), Some("a!b"));
    assert_eq!(
        got.header("x-conn"),
        Some("10.1.2.3:45678|10.1.2.3|10.0.0.1:8080|HTTP/1.1|")
    );
    assert_eq!(
        got.header("x-fmt"),
        Some("[pa][shop.example.com][/a/b?x=1&y=2][c1]")
    );
    let mut names = got.header_names();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "authorization",
            "content-length",
            "foo-suffix",
            "host",
            "x-add",
            "x-conn",
            "x-custom-id",
            "x-fmt",
            "x-prefix-a",
            "x-prefix-obs"
        ],
        "nothing but the defaults, the listed headers and the additional ones"
    );
    assert!(got.body.is_empty());
}

#[tokio::test]
async fn additional_headers_override_client_copies() {
    let server = http_authz(|_| Reply::new(200)).await;
    let c = client(
        HttpProviderSettings {
            include_request_headers: patterns(&["x-custom-id", "x-keep"]),
            additional_headers: vec![
                ("x-custom-id".into(), "override".into()),
                // An empty formatted value adds nothing and leaves the client's copy alone.
                ("x-keep".into(), "%REQ(x-absent)%".into()),
            ],
            ..settings()
        },
        &server,
    );
    let req = ClientRequest::get("/")
        .header("x-custom-id", "c1")
        .header("x-custom-id", "c2")
        .header("x-keep", "client");
    c.check(&req.parts()).await;
    let got = server.last();
    let ids: Vec<_> = got.headers.iter().filter(|(n, _)| n == "x-custom-id").collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(got.header("x-custom-id"), Some("override"));
    assert_eq!(got.header("x-keep"), Some("client"));
}

#[tokio::test]
async fn path_prefix_is_concatenated_like_envoy() {
    let server = http_authz(|_| Reply::new(200)).await;
    for (prefix, path, expected) in [
        ("", "/a?q=1", "/a?q=1"),
        ("/check", "/a?q=1", "/check/a?q=1"),
        // Envoy 1.40 neither joins nor dedupes slashes: `/check/` + `/a` = `/check//a`.
        ("/check/", "/a", "/check//a"),
        ("/check", "/", "/check/"),
    ] {
        let c = client(
            HttpProviderSettings {
                path_prefix: prefix.into(),
                ..settings()
            },
            &server,
        );
        c.check(&ClientRequest::get(path).parts()).await;
        assert_eq!(server.last().path, expected, "prefix {prefix:?} + {path:?}");
    }
}

#[tokio::test]
async fn check_keeps_the_client_method() {
    let server = http_authz(|_| Reply::new(200)).await;
    let c = client(settings(), &server);
    for m in [
        Method::POST,
        Method::DELETE,
        Method::PUT,
        Method::HEAD,
        Method::OPTIONS,
    ] {
        c.check(&ClientRequest::get("/m").method(m.clone()).parts()).await;
        assert_eq!(server.last().method, m.as_str());
    }
}

#[tokio::test]
async fn allow_mutates_upstream_and_downstream() {
    let server = http_authz(|_| {
        Reply::new(200)
            .header("x-up", "u1")
            .header("x-up", "u2")
            .header("x-down", "d1")
            .header("x-down", "d2")
            .header("set-cookie", "s=1")
            .header("x-notlisted", "n")
            .header(
                "x-envoy-auth-headers-to-remove",
                "x-remove-me, X-Remove-Too ,,host",
            )
            .header("x-envoy-auth-headers-to-remove", "x-third")
            .body(b"ignored")
    })
    .await;
    let c = client(
        HttpProviderSettings {
            headers_to_upstream_on_allow: patterns(&["x-up", "x-envoy-auth-*"]),
            headers_to_downstream_on_allow: patterns(&["*-DOWN", "set-cookie"]),
            ..settings()
        },
        &server,
    );
    let Decision::Allow(m) = c.check(&ClientRequest::get("/p").parts()).await else {
        panic!("expected allow");
    };

    let mut upstream = HeaderMap::new();
    upstream.insert("host", HeaderValue::from_static("shop.example.com"));
    upstream.append("x-up", HeaderValue::from_static("client-smuggled"));
    upstream.append("x-up", HeaderValue::from_static("client-2"));
    upstream.insert("x-remove-me", HeaderValue::from_static("1"));
    upstream.insert("x-remove-too", HeaderValue::from_static("1"));
    upstream.insert("x-third", HeaderValue::from_static("1"));
    upstream.insert("x-notlisted", HeaderValue::from_static("client"));
    let mut path = "/p".to_owned();
    m.request.apply(&mut upstream, &mut path);
    // Set (replace): the client can never smuggle a value; the last authz line wins (#32420).
    assert_eq!(values(&upstream, "x-up"), ["u2"]);
    assert!(upstream.get("x-remove-me").is_none());
    assert!(upstream.get("x-remove-too").is_none());
    assert!(upstream.get("x-third").is_none());
    assert_eq!(values(&upstream, "host"), ["shop.example.com"]);
    assert_eq!(values(&upstream, "x-notlisted"), ["client"]);
    assert!(upstream.get("x-envoy-auth-headers-to-remove").is_none());
    assert_eq!(path, "/p");

    let mut response = HeaderMap::new();
    response.insert("x-down", HeaderValue::from_static("backend"));
    m.response.apply(&mut response);
    // Appended (Envoy addCopy), not replaced.
    assert_eq!(values(&response, "x-down"), ["backend", "d1", "d2"]);
    assert_eq!(values(&response, "set-cookie"), ["s=1"]);
    assert!(response.get("x-notlisted").is_none());
}

#[tokio::test]
async fn deny_without_list_relays_every_header_and_the_body() {
    let server = http_authz(|_| {
        Reply::new(302)
            .header("location", "/login")
            .header("set-cookie", "a=1")
            .header("set-cookie", "b=2")
            .header("x-other", "o")
            .header("host", "authz.internal")
            .header("x-envoy-auth-headers-to-remove", "foo")
            .header("connection", "keep-alive")
            .header("keep-alive", "timeout=5")
            .header("content-type", "text/html")
            .body(b"redirect")
    })
    .await;
    let c = client(settings(), &server);
    let r = expect_deny(c.check(&ClientRequest::get("/").parts()).await);
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(r.body.as_ref(), b"redirect");
    // Envoy 1.40: everything but `:authority` (a response `host` header passes); connection and
    // framing headers are the gateway's own.
    assert_eq!(
        deny_headers(&r),
        [
            ("location".to_owned(), "/login".to_owned()),
            ("set-cookie".to_owned(), "a=1".to_owned()),
            ("set-cookie".to_owned(), "b=2".to_owned()),
            ("x-other".to_owned(), "o".to_owned()),
            ("host".to_owned(), "authz.internal".to_owned()),
            ("content-type".to_owned(), "text/html".to_owned()),
        ]
    );
    let resp = r.into_response();
    assert_eq!(resp.status(), 302);
    assert_eq!(values(resp.headers(), "set-cookie"), ["a=1", "b=2"]);
    assert_eq!(values(resp.headers(), "content-length"), ["8"]);
    assert_eq!(values(resp.headers(), "content-type"), ["text/html"]);
    assert_eq!(values(resp.headers(), "location"), ["/login"]);
}

#[tokio::test]
async fn deny_with_list_keeps_listed_plus_location_and_www_authenticate() {
    let server = http_authz(|r| match r.path.as_str() {
        "/401" => Reply::new(401)
            .header("www-authenticate", "Basic realm=\"x\"")
            .header("x-other", "o")
            .header("x-secret", "s")
            .header("content-type", "application/json"),
        _ => Reply::new(302)
            .header("location", "/login")
            .header("set-cookie", "a=1")
            .header("set-cookie", "b=2")
            .header("x-secret", "s")
            .body(b"go"),
    })
    .await;
    let c = client(
        HttpProviderSettings {
            headers_to_downstream_on_deny: patterns(&["x-other", "Set-*"]),
            ..settings()
        },
        &server,
    );
    let r = expect_deny(c.check(&ClientRequest::get("/401").parts()).await);
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        deny_headers(&r),
        [
            ("www-authenticate".to_owned(), "Basic realm=\"x\"".to_owned()),
            ("x-other".to_owned(), "o".to_owned()),
        ]
    );
    // Empty body: no content-type, no content-length (Envoy removes both).
    let resp = r.into_response();
    assert!(resp.headers().get("content-type").is_none());
    assert!(resp.headers().get("content-length").is_none());

    let r = expect_deny(c.check(&ClientRequest::get("/302").parts()).await);
    assert_eq!(
        deny_headers(&r),
        [
            ("location".to_owned(), "/login".to_owned()),
            ("set-cookie".to_owned(), "a=1".to_owned()),
            ("set-cookie".to_owned(), "b=2".to_owned()),
        ]
    );
    let resp = r.into_response();
    // The authz content-type was not let through: the local reply's own.
    assert_eq!(values(resp.headers(), "content-type"), ["text/plain"]);
    assert_eq!(values(resp.headers(), "content-length"), ["2"]);
}

#[tokio::test]
async fn chunked_deny_body_is_relayed_with_computed_length() {
    let server = http_authz(|_| {
        Reply::new(403)
            .header("x-other", "o")
            .body(b"chunked-body")
            .chunked()
    })
    .await;
    let c = client(settings(), &server);
    let r = expect_deny(c.check(&ClientRequest::get("/").parts()).await);
    assert_eq!(deny_headers(&r), [("x-other".to_owned(), "o".to_owned())]);
    let resp = r.into_response();
    assert_eq!(values(resp.headers(), "content-length"), ["12"]);
    assert_eq!(values(resp.headers(), "content-type"), ["text/plain"]);
    assert_eq!(resp.body().as_ref(), b"chunked-body");
}

#[tokio::test]
async fn only_200_allows_and_5xx_is_an_error() {
    let server = http_authz(|r| {
        let status: u16 = r.path.trim_start_matches('/').parse().unwrap_or(200);
        Reply::new(status).header("x-other", "o").body(b"b")
    })
    .await;
    let c = client(settings(), &server);
    for status in [201u16, 202, 204, 301, 400, 404, 429, 499] {
        let d = c.check(&ClientRequest::get(&format!("/{status}")).parts()).await;
        let r = expect_deny(d);
        assert_eq!(r.status.as_u16(), status);
    }
    for status in [500u16, 502, 503, 504, 599] {
        let d = c.check(&ClientRequest::get(&format!("/{status}")).parts()).await;
        assert_eq!(d, Decision::Error(CheckError::Status5xx(status)));
        // Fail closed: statusOnError, no authz headers, empty body (#14001).
        let Decision::Error(e) = d else { unreachable!() };
        assert_eq!(
            c.error_response(&e),
            LocalResponse::status_only(StatusCode::FORBIDDEN)
        );
    }
    assert!(matches!(
        c.check(&ClientRequest::get("/200").parts()).await,
        Decision::Allow(_)
    ));
}

#[tokio::test]
async fn unreachable_service_is_a_transport_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let c = ProviderClient::new(
        &http_provider(settings()),
        authgate_config::HostPort {
            host: "127.0.0.1".into(),
            port,
        },
    )
    .expect("builds");
    let d = c.check(&ClientRequest::get("/").parts()).await;
    assert!(matches!(d, Decision::Error(CheckError::Transport(_))), "{d:?}");
}

#[tokio::test]
async fn dns_names_resolve_at_connect_time() {
    let server = http_authz(|_| Reply::new(200)).await;
    let c = ProviderClient::new(
        &http_provider(settings()),
        authgate_config::HostPort {
            host: "localhost".into(),
            port: server.addr.port(),
        },
    )
    .expect("builds");
    let d = c.check(&ClientRequest::get("/").parts()).await;
    // `localhost` may resolve to ::1 first; the connector tries each address.
    assert!(matches!(d, Decision::Allow(_)), "{d:?}");
}

#[tokio::test]
async fn slow_service_times_out() {
    let server = http_authz(|_| Reply::new(200).delay(Duration::from_millis(800))).await;
    let mut config = http_provider(settings());
    config.timeout = Duration::from_millis(100);
    let c = ProviderClient::new(&config, server.target()).expect("builds");
    let started = std::time::Instant::now();
    let d = c.check(&ClientRequest::get("/").parts()).await;
    assert!(started.elapsed() < Duration::from_millis(700));
    let Decision::Error(e) = d else {
        panic!("expected an error, got {d:?}")
    };
    assert!(e.is_timeout());
    assert_eq!(e.to_string(), "authz check timed out");
}

#[tokio::test]
async fn body_is_sent_up_to_the_limit_with_the_partial_marker() {
    let server = http_authz(|_| Reply::new(200)).await;
    let mut config = http_provider(settings());
    config.body = Some(body_settings(8, true, false));
    let c = ProviderClient::new(&config, server.target()).expect("builds");

    let req = ClientRequest::get("/b")
        .method(Method::POST)
        .header("content-length", "16")
        .body(b"0123\xff\xfe6789abcdef", false);
    c.check(&req.parts()).await;
    let got = server.last();
    // HTTP mode packs as bytes: verbatim, truncated to maxRequestBytes.
    assert_eq!(got.body.as_ref(), b"0123\xff\xfe67");
    assert_eq!(got.header("content-length"), Some("8"));
    assert_eq!(got.header("x-envoy-auth-partial-body"), Some("true"));

    let req = ClientRequest::get("/b").method(Method::POST).body(b"0123", false);
    c.check(&req.parts()).await;
    let got = server.last();
    assert_eq!(got.body.as_ref(), b"0123");
    assert_eq!(got.header("content-length"), Some("4"));
    assert_eq!(got.header("x-envoy-auth-partial-body"), Some("false"));

    // Exactly the limit is complete, unless the proxy says it stopped early.
    let req = ClientRequest::get("/b")
        .method(Method::POST)
        .body(b"01234567", false);
    c.check(&req.parts()).await;
    assert_eq!(server.last().header("x-envoy-auth-partial-body"), Some("false"));
    let req = ClientRequest::get("/b")
        .method(Method::POST)
        .body(b"01234567", true);
    c.check(&req.parts()).await;
    assert_eq!(server.last().header("x-envoy-auth-partial-body"), Some("true"));

    // Header-only request: no body, no marker.
    c.check(&ClientRequest::get("/h").parts()).await;
    let got = server.last();
    assert_eq!(got.header("content-length"), Some("0"));
    assert_eq!(got.header("x-envoy-auth-partial-body"), None);

    // A provider without body settings ignores a buffered body.
    let plain = client(settings(), &server);
    plain
        .check(
            &ClientRequest::get("/b")
                .method(Method::POST)
                .body(b"0123", false)
                .parts(),
        )
        .await;
    let got = server.last();
    assert!(got.body.is_empty());
    assert_eq!(got.header("content-length"), Some("0"));
    assert_eq!(got.header("x-envoy-auth-partial-body"), None);
}

#[tokio::test]
async fn connections_are_pooled_and_reused() {
    let server = http_authz(|r| {
        if r.path == "/deny" {
            Reply::new(403).body(b"no")
        } else {
            Reply::new(200)
        }
    })
    .await;
    let c = client(settings(), &server);
    for i in 0..200 {
        let path = if i % 3 == 0 { "/deny" } else { "/ok" };
        c.check(&ClientRequest::get(path).parts()).await;
    }
    assert_eq!(server.count(), 200);
    assert!(
        server.connections() <= 2,
        "{} connections for 200 checks",
        server.connections()
    );
}

#[tokio::test]
async fn concurrent_checks_share_the_client() {
    let server = http_authz(|_| Reply::new(200).delay(Duration::from_millis(20))).await;
    let c = std::sync::Arc::new(client(settings(), &server));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let c = c.clone();
        tasks.spawn(async move { c.check(&ClientRequest::get("/").parts()).await });
    }
    while let Some(d) = tasks.join_next().await {
        assert!(matches!(d.expect("task"), Decision::Allow(_)));
    }
    assert_eq!(server.count(), 20);
}

#[tokio::test]
async fn build_errors() {
    let bad_prefix = http_provider(HttpProviderSettings {
        path_prefix: "check".into(),
        ..settings()
    });
    let target = authgate_config::HostPort {
        host: "127.0.0.1".into(),
        port: 1,
    };
    assert!(matches!(
        ProviderClient::new(&bad_prefix, target.clone()),
        Err(BuildError::PathPrefix { .. })
    ));
    for (name, value) in [
        ("x-a", "%START_TIME%"),
        ("x-a", "100%"),
        ("bad name", "v"),
        ("content-length", "1"),
    ] {
        let p = http_provider(HttpProviderSettings {
            additional_headers: vec![(name.into(), value.into())],
            ..settings()
        });
        let err = ProviderClient::new(&p, target.clone()).expect_err("refused");
        assert!(matches!(err, BuildError::AdditionalHeader { .. }), "{err}");
    }
    let empty_host = authgate_config::HostPort {
        host: String::new(),
        port: 1,
    };
    assert!(matches!(
        ProviderClient::new(&http_provider(settings()), empty_host),
        Err(BuildError::Target { .. })
    ));
}

#[test]
fn building_outside_a_runtime_is_an_error_not_a_panic() {
    let target = authgate_config::HostPort {
        host: "127.0.0.1".into(),
        port: 1,
    };
    let err = ProviderClient::new(&support::grpc_provider(), target).expect_err("no runtime");
    assert!(matches!(err, BuildError::NoRuntime { .. }));
}

#[tokio::test]
async fn status_on_error_is_clamped_like_envoy() {
    let target = authgate_config::HostPort {
        host: "127.0.0.1".into(),
        port: 1,
    };
    for (configured, used) in [
        (403u16, 403u16),
        (401, 401),
        (503, 503),
        (200, 200),
        (99, 403),
        (512, 403),
        (0, 403),
    ] {
        let mut p = http_provider(settings());
        p.status_on_error = configured;
        let c = ProviderClient::new(&p, target.clone()).expect("builds");
        assert_eq!(c.status_on_error().as_u16(), used, "{configured}");
        let r = c.error_response(&CheckError::Timeout);
        assert_eq!(r.status.as_u16(), used);
        assert!(r.headers.is_empty() && r.body.is_empty());
    }
}
