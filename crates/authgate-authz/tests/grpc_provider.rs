//! The gRPC provider against a real tonic `AuthorizationServer` (envoy-ext-authz.md §3, §5, §6).
//! Expected values marked "Envoy 1.40" were observed by running Envoy 1.40.0 against these same
//! servers.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use authgate_authz::{CheckError, Decision, LocalResponse, ProviderClient};
use authgate_proto::auth::{
    CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse, attribute_context, check_response,
};
use authgate_proto::core::{
    HeaderValue as ProtoHeader, HeaderValueOption, QueryParameter, address, socket_address,
};
use authgate_proto::http_status::HttpStatus;
use envoy_types::pb::google::protobuf::BoolValue;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use support::{ClientRequest, GrpcServer, body_settings, grpc_authz, grpc_provider, ok, path_of, rpc_status};

const APPEND_IF_EXISTS_OR_ADD: i32 = 0;
const ADD_IF_ABSENT: i32 = 1;
const OVERWRITE_IF_EXISTS_OR_ADD: i32 = 2;
const OVERWRITE_IF_EXISTS: i32 = 3;

fn opt(key: &str, value: &str, append: Option<bool>, action: i32) -> HeaderValueOption {
    #[allow(deprecated)]
    HeaderValueOption {
        header: Some(ProtoHeader {
            key: key.into(),
            value: value.into(),
            raw_value: vec![],
        }),
        append: append.map(|value| BoolValue { value }),
        append_action: action,
        keep_empty_value: false,
    }
}

fn set(key: &str, value: &str) -> HeaderValueOption {
    opt(key, value, None, APPEND_IF_EXISTS_OR_ADD)
}

fn denied(code: i32, status: u32, headers: Vec<HeaderValueOption>, body: &str) -> CheckResponse {
    CheckResponse {
        status: rpc_status(code),
        dynamic_metadata: None,
        http_response: Some(check_response::HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: (status > 0).then(|| HttpStatus {
                code: i32::try_from(status).expect("small"),
            }),
            headers,
            body: body.into(),
        })),
    }
}

async fn server_answering(resp: CheckResponse) -> GrpcServer {
    grpc_authz(None, move |_| Ok(resp.clone())).await
}

fn client(server: &GrpcServer) -> ProviderClient {
    ProviderClient::new(&grpc_provider(), server.target()).expect("provider builds")
}

async fn check_with(resp: CheckResponse, req: &ClientRequest) -> Decision {
    let server = server_answering(resp).await;
    client(&server).check(&req.parts()).await
}

fn values(h: &HeaderMap, name: &str) -> Vec<String> {
    h.get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

fn http_attrs(req: &CheckRequest) -> &attribute_context::HttpRequest {
    req.attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
        .expect("http attributes")
}

fn sock(peer: Option<&attribute_context::Peer>) -> (String, u32) {
    match peer
        .and_then(|p| p.address.as_ref())
        .and_then(|a| a.address.as_ref())
    {
        Some(address::Address::SocketAddress(s)) => {
            let port = match s.port_specifier {
                Some(socket_address::PortSpecifier::PortValue(p)) => p,
                _ => 0,
            };
            (s.address.clone(), port)
        }
        other => panic!("not a socket address: {other:?}"),
    }
}

#[tokio::test]
async fn check_request_carries_the_full_attribute_context() {
    let server = server_answering(CheckResponse::default()).await;
    let c = client(&server);
    let mut req = ClientRequest::get("/a/b?x=1&y=%2F")
        .header("x-rep", "1")
        .header("X-Rep", "2")
        .header("host", "shop.example.com")
        .header("cookie", "a=1")
        .header("x-envoy-downstream-service-cluster", "svc")
        .header("x-envoy-auth-partial-body", "spoof")
        .header("x-bytes", "caf\u{e9}");
    req.headers.insert(
        "x-obs",
        HeaderValue::from_bytes(b"a\xffb").expect("obs-text is a valid value"),
    );
    req.version = http::Version::HTTP_2;
    req.scheme = "https".into();
    req.principal = Some("spiffe://cluster.local/ns/foo/sa/bar".into());
    req.sni = Some("shop.example.com".into());
    req.context_extensions = vec![("virtual_host".into(), "shop".into())];
    assert_eq!(c.check(&req.parts()).await, Decision::Allow(Default::default()));

    let got = server.last();
    let attrs = got.attributes.as_ref().expect("attributes");
    assert_eq!(sock(attrs.source.as_ref()), ("10.1.2.3".into(), 45678));
    assert_eq!(sock(attrs.destination.as_ref()), ("10.0.0.1".into(), 8080));
    let source = attrs.source.as_ref().expect("source");
    assert_eq!(source.principal, "spiffe://cluster.local/ns/foo/sa/bar");
    assert_eq!(source.service, "svc");
    assert_eq!(attrs.destination.as_ref().map(|d| d.principal.as_str()), Some(""));
    let time = attrs.request.as_ref().and_then(|r| r.time).expect("time");
    assert_eq!((time.seconds, time.nanos), (1_700_000_000, 123_000_000));
    assert_eq!(
        attrs.context_extensions,
        HashMap::from([("virtual_host".to_owned(), "shop".to_owned())])
    );
    assert_eq!(
        attrs.tls_session.as_ref().map(|t| t.sni.as_str()),
        Some("shop.example.com")
    );
    assert!(attrs.metadata_context.is_some());

    let http = http_attrs(&got);
    assert_eq!(http.id, "4242");
    assert_eq!(http.method, "GET");
    assert_eq!(http.path, "/a/b?x=1&y=%2F");
    assert_eq!(http.host, "shop.example.com");
    assert_eq!(http.scheme, "https");
    assert_eq!(http.query, "");
    assert_eq!(http.fragment, "");
    assert_eq!(http.size, 0);
    assert_eq!(http.protocol, "HTTP/2");
    assert!(http.body.is_empty() && http.raw_body.is_empty());
    let expected: HashMap<String, String> = [
        (":authority", "shop.example.com"),
        (":method", "GET"),
        (":path", "/a/b?x=1&y=%2F"),
        (":scheme", "https"),
        ("x-request-id", "req-1"),
        ("x-rep", "1,2"),
        ("cookie", "a=1"),
        ("x-envoy-downstream-service-cluster", "svc"),
        ("x-bytes", "caf\u{e9}"),
        ("x-obs", "a!b"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(http.headers, expected);

    // Istio sets the call's authority to the provider's service hostname; the timeout travels
    // as grpc-timeout.
    let seen = server.seen.lock().expect("lock").clone();
    assert_eq!(seen[0].authority, "ext-authz.local");
    assert!(seen[0].grpc_timeout.is_some(), "grpc-timeout sent");
}

#[tokio::test]
async fn protocols_and_absent_tls() {
    let server = server_answering(CheckResponse::default()).await;
    let c = client(&server);
    for (version, name) in [
        (http::Version::HTTP_10, "HTTP/1.0"),
        (http::Version::HTTP_11, "HTTP/1.1"),
        (http::Version::HTTP_2, "HTTP/2"),
        (http::Version::HTTP_3, "HTTP/3"),
    ] {
        let mut req = ClientRequest::get("/");
        req.version = version;
        c.check(&req.parts()).await;
        let got = server.last();
        assert_eq!(http_attrs(&got).protocol, name);
        let attrs = got.attributes.as_ref().expect("attributes");
        assert!(attrs.tls_session.is_none());
        assert_eq!(attrs.source.as_ref().map(|s| s.principal.as_str()), Some(""));
    }
}

#[tokio::test]
async fn body_as_sanitized_string_or_raw_bytes() {
    let server = server_answering(CheckResponse::default()).await;
    for (pack, max) in [(false, 8u32), (true, 8)] {
        let mut config = grpc_provider();
        config.body = Some(body_settings(max, true, pack));
        let c = ProviderClient::new(&config, server.target()).expect("builds");
        let req = ClientRequest::get("/b")
            .method(Method::POST)
            .header("content-length", "16")
            .header("x-envoy-auth-partial-body", "spoof")
            .body(b"0123\xff\xfe6789abcdef", false);
        c.check(&req.parts()).await;
        let got = server.last();
        let http = http_attrs(&got);
        // Envoy 1.40: size is the whole buffered length, the body the first maxRequestBytes.
        assert_eq!(http.size, 16);
        assert_eq!(
            http.headers.get("x-envoy-auth-partial-body").map(String::as_str),
            Some("true")
        );
        assert_eq!(http.headers.get("content-length").map(String::as_str), Some("16"));
        if pack {
            assert_eq!(http.raw_body, b"0123\xff\xfe67");
            assert!(http.body.is_empty());
        } else {
            // Envoy 1.40: each invalid UTF-8 byte becomes '!'.
            assert_eq!(http.body, "0123!!67");
            assert!(http.raw_body.is_empty());
        }

        let req = ClientRequest::get("/b").method(Method::POST).body(b"0123", false);
        c.check(&req.parts()).await;
        let got = server.last();
        let http = http_attrs(&got);
        assert_eq!(http.size, 4);
        assert_eq!(
            http.headers.get("x-envoy-auth-partial-body").map(String::as_str),
            Some("false")
        );

        c.check(&ClientRequest::get("/nobody").parts()).await;
        let got = server.last();
        let http = http_attrs(&got);
        assert_eq!(http.size, 0);
        assert!(!http.headers.contains_key("x-envoy-auth-partial-body"));
    }

    // No body settings: nothing of the body is sent (and the client's marker is still dropped).
    let c = client(&server);
    let req = ClientRequest::get("/b")
        .method(Method::POST)
        .header("x-envoy-auth-partial-body", "spoof")
        .body(b"0123", false);
    c.check(&req.parts()).await;
    let got = server.last();
    let http = http_attrs(&got);
    assert_eq!((http.size, http.body.as_str(), http.raw_body.len()), (0, "", 0));
    assert!(!http.headers.contains_key("x-envoy-auth-partial-body"));
}

#[tokio::test]
async fn missing_status_or_ok_response_allows_without_mutations() {
    let req = ClientRequest::get("/");
    assert_eq!(
        check_with(CheckResponse::default(), &req).await,
        Decision::Allow(Default::default())
    );
    // OK code with a denied_response attached is still an allow (Envoy 1.40).
    assert_eq!(
        check_with(denied(0, 401, vec![set("x-a", "1")], "x"), &req).await,
        Decision::Allow(Default::default())
    );
}

/// The request-header mutation scenario run through Envoy 1.40 (see the module doc).
#[tokio::test]
async fn ok_request_mutations_follow_envoy() {
    let resp = ok(OkHttpResponse {
        headers: vec![
            set("x-set", "s1"),
            set("x-set-new", "n"),
            opt("x-app-true", "a", Some(true), 0),
            opt("x-app-true-absent", "a", Some(true), 0),
            opt("x-app-false", "f", Some(false), 0),
            // `append_action` is ignored for request headers: all of these are sets.
            opt("x-act-aia", "v", None, ADD_IF_ABSENT),
            opt("x-act-aia-absent", "v", None, ADD_IF_ABSENT),
            opt("x-act-oie", "v", None, OVERWRITE_IF_EXISTS),
            opt("x-act-oie-absent", "v", None, OVERWRITE_IF_EXISTS),
            opt("x-act-oioa", "v", None, OVERWRITE_IF_EXISTS_OR_ADD),
            opt("x-unknown-action", "v", None, 9),
            set("x-dup", "1"),
            set("x-dup", "2"),
            // Sets are applied before appends whatever the order received.
            opt("x-order", "first", Some(true), 0),
            set("x-order", "second"),
            set("X-Upper", "up"),
            set("x-empty", ""),
        ],
        headers_to_remove: vec![
            "x-remove".into(),
            ":path".into(),
            "host".into(),
            "Bad Name".into(),
            "X-Remove-Upper".into(),
        ],
        query_parameters_to_set: vec![
            QueryParameter {
                key: "add-me".into(),
                value: "9".into(),
            },
            QueryParameter {
                key: "overwrite-me".into(),
                value: "new".into(),
            },
        ],
        query_parameters_to_remove: vec!["remove-me".into()],
        ..Default::default()
    });
    let req = ClientRequest::get("/ok?remove-me=1&overwrite-me=2&leave-me=3&flag&&z=1");
    let Decision::Allow(m) = check_with(resp, &req).await else {
        panic!("expected allow")
    };
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("shop.example.com"));
    for (n, v) in [
        ("x-set", "c"),
        ("x-set", "c2"),
        ("x-app-true", "c"),
        ("x-app-false", "c"),
        ("x-act-aia", "c"),
        ("x-act-oie", "c"),
        ("x-act-oioa", "c"),
        ("x-order", "c"),
        ("x-remove", "r"),
        ("x-remove-upper", "r"),
        ("x-empty", "client"),
    ] {
        h.append(n, HeaderValue::from_static(v));
    }
    let mut path = req.path_and_query.clone();
    assert!(m.request.method.is_none());
    m.request.apply(&mut h, &mut path);
    for (name, expected) in [
        ("host", vec!["shop.example.com"]),
        ("x-set", vec!["s1"]),
        ("x-set-new", vec!["n"]),
        ("x-app-true", vec!["c,a"]),
        ("x-app-true-absent", vec![]),
        ("x-app-false", vec!["f"]),
        ("x-act-aia", vec!["v"]),
        ("x-act-aia-absent", vec!["v"]),
        ("x-act-oie", vec!["v"]),
        ("x-act-oie-absent", vec!["v"]),
        ("x-act-oioa", vec!["v"]),
        ("x-unknown-action", vec!["v"]),
        ("x-dup", vec!["2"]),
        ("x-order", vec!["second,first"]),
        ("x-upper", vec!["up"]),
        ("x-empty", vec![""]),
        ("x-remove", vec![]),
        ("x-remove-upper", vec![]),
    ] {
        assert_eq!(values(&h, name), expected, "{name}");
    }
    // OK-9, Envoy 1.40: keys sorted, a bare key gets '=', an empty segment becomes "=".
    assert_eq!(path, "/ok?=&add-me=9&flag=&leave-me=3&overwrite-me=new&z=1");
}

#[tokio::test]
async fn ok_response_header_actions_follow_envoy() {
    let resp = ok(OkHttpResponse {
        response_headers_to_add: vec![
            opt("r-default", "1", None, APPEND_IF_EXISTS_OR_ADD),
            opt("r-app-true", "1", Some(true), 0),
            opt("r-app-false", "1", Some(false), 0),
            opt("r-aia", "1", None, ADD_IF_ABSENT),
            opt("r-aia-absent", "1", None, ADD_IF_ABSENT),
            opt("r-oie", "1", None, OVERWRITE_IF_EXISTS),
            opt("r-oie-absent", "1", None, OVERWRITE_IF_EXISTS),
            opt("r-oioa", "1", None, OVERWRITE_IF_EXISTS_OR_ADD),
            // An unknown action matches none of Envoy's cases: dropped.
            opt("r-bad", "1", None, 9),
            // Envoy applies the add bucket before the set bucket: the set wins.
            opt("r-mixed", "set", Some(false), 0),
            opt("r-mixed", "add", Some(true), 0),
        ],
        ..Default::default()
    });
    let Decision::Allow(m) = check_with(resp, &ClientRequest::get("/")).await else {
        panic!("expected allow")
    };
    let mut h = HeaderMap::new();
    for n in [
        "r-default",
        "r-app-true",
        "r-app-false",
        "r-aia",
        "r-oie",
        "r-mixed",
    ] {
        h.insert(n, HeaderValue::from_static("up"));
    }
    m.response.apply(&mut h);
    for (name, expected) in [
        ("r-default", vec!["up", "1"]),
        ("r-app-true", vec!["up", "1"]),
        ("r-app-false", vec!["1"]),
        ("r-aia", vec!["up"]),
        ("r-aia-absent", vec!["1"]),
        ("r-oie", vec!["1"]),
        ("r-oie-absent", vec![]),
        ("r-oioa", vec!["1"]),
        ("r-bad", vec![]),
        ("r-mixed", vec!["set"]),
    ] {
        assert_eq!(values(&h, name), expected, "{name}");
    }
}

#[tokio::test]
async fn pseudo_header_mutations() {
    let resp = ok(OkHttpResponse {
        headers: vec![
            set(":path", "/rewritten?x=1"),
            set(":authority", "new.host"),
            set(":method", "POST"),
        ],
        query_parameters_to_set: vec![QueryParameter {
            key: "a".into(),
            value: "1".into(),
        }],
        ..Default::default()
    });
    let Decision::Allow(m) = check_with(resp, &ClientRequest::get("/orig")).await else {
        panic!("expected allow")
    };
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("shop.example.com"));
    let mut path = "/orig".to_owned();
    assert_eq!(m.request.method, Some(Method::POST));
    m.request.apply(&mut h, &mut path);
    assert_eq!(path, "/rewritten?a=1&x=1");
    assert_eq!(values(&h, "host"), ["new.host"]);

    let resp = ok(OkHttpResponse {
        headers: vec![
            set("host", "other.host"),
            set(":scheme", "https"),
            opt(":path", "/x", Some(true), 0),
        ],
        ..Default::default()
    });
    let Decision::Allow(m) = check_with(resp, &ClientRequest::get("/orig")).await else {
        panic!("expected allow")
    };
    let mut path = "/orig".to_owned();
    m.request.apply(&mut h, &mut path);
    assert_eq!(path, "/orig");
    assert_eq!(values(&h, "host"), ["other.host"]);
}

#[tokio::test]
async fn denied_response_is_relayed() {
    let resp = denied(
        7,
        401,
        vec![
            set("x-d1", "a"),
            // Envoy 1.40: `append: true` entries never reach the local reply.
            opt("x-d2", "b", Some(true), 0),
            set("set-cookie", "a=1"),
            set("set-cookie", "b=2"),
            set("content-type", "application/json"),
            opt("x-d3", "c", Some(false), 0),
            opt("X-D4", "d", None, ADD_IF_ABSENT),
        ],
        "nope",
    );
    let Decision::Deny(r) = check_with(resp, &ClientRequest::get("/")).await else {
        panic!("expected deny")
    };
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.body.as_ref(), b"nope");
    let names: Vec<_> = r
        .headers
        .iter()
        .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap_or("?")))
        .collect();
    assert_eq!(
        names,
        [
            "x-d1: a",
            "set-cookie: a=1",
            "set-cookie: b=2",
            "content-type: application/json",
            "x-d3: c",
            "x-d4: d"
        ]
    );
    let resp = r.clone().into_response();
    assert_eq!(resp.status(), 401);
    assert_eq!(values(resp.headers(), "set-cookie"), ["a=1", "b=2"]);
    assert_eq!(values(resp.headers(), "content-type"), ["application/json"]);
    assert_eq!(values(resp.headers(), "content-length"), ["4"]);

    // The same denial for a gRPC client: trailers-only, 401 → UNAUTHENTICATED.
    let resp = r.into_grpc_response();
    assert_eq!(resp.status(), 200);
    assert_eq!(values(resp.headers(), "grpc-status"), ["16"]);
    assert_eq!(values(resp.headers(), "grpc-message"), ["nope"]);
    assert_eq!(values(resp.headers(), "content-type"), ["application/grpc"]);
    assert_eq!(values(resp.headers(), "set-cookie"), ["a=1", "b=2"]);
}

#[tokio::test]
async fn a_denial_with_a_5xx_status_is_still_a_denial() {
    let d = check_with(denied(7, 503, vec![], "down"), &ClientRequest::get("/")).await;
    let Decision::Deny(r) = d else {
        panic!("a denial is never an error (#10158): {d:?}")
    };
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.body.as_ref(), b"down");
}

#[tokio::test]
async fn denial_defaults_to_403() {
    let bare = CheckResponse {
        status: rpc_status(16),
        dynamic_metadata: None,
        http_response: None,
    };
    let d = check_with(bare, &ClientRequest::get("/")).await;
    // The gRPC code never becomes the HTTP status (#11079).
    assert_eq!(
        d,
        Decision::Deny(LocalResponse::status_only(StatusCode::FORBIDDEN))
    );
    let d = check_with(denied(7, 0, vec![], "why"), &ClientRequest::get("/")).await;
    let Decision::Deny(r) = d else { panic!("deny") };
    assert_eq!((r.status, r.body.as_ref()), (StatusCode::FORBIDDEN, &b"why"[..]));
}

#[tokio::test]
async fn error_response_is_an_error_with_its_own_reply() {
    let resp = CheckResponse {
        status: rpc_status(13),
        dynamic_metadata: None,
        http_response: Some(check_response::HttpResponse::ErrorResponse(DeniedHttpResponse {
            status: Some(HttpStatus { code: 418 }),
            headers: vec![set("x-e", "1")],
            body: "err".into(),
        })),
    };
    let server = server_answering(resp).await;
    let c = client(&server);
    let Decision::Error(e) = c.check(&ClientRequest::get("/").parts()).await else {
        panic!("expected error")
    };
    let r = c.error_response(&e);
    assert_eq!(r.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(r.body.as_ref(), b"err");
    assert_eq!(r.headers.len(), 1);

    let resp = CheckResponse {
        status: rpc_status(13),
        dynamic_metadata: None,
        http_response: Some(check_response::HttpResponse::ErrorResponse(
            DeniedHttpResponse::default(),
        )),
    };
    let server = server_answering(resp).await;
    let mut config = grpc_provider();
    config.status_on_error = 503;
    let c = ProviderClient::new(&config, server.target()).expect("builds");
    let Decision::Error(e) = c.check(&ClientRequest::get("/").parts()).await else {
        panic!("expected error")
    };
    assert_eq!(c.error_response(&e).status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn failed_rpcs_are_errors() {
    let server = grpc_authz(None, |_| Err(tonic::Status::unavailable("down"))).await;
    let c = client(&server);
    let d = c.check(&ClientRequest::get("/").parts()).await;
    assert_eq!(
        d,
        Decision::Error(CheckError::Rpc(tonic::Code::Unavailable, "down".into()))
    );
    let Decision::Error(e) = d else { unreachable!() };
    assert_eq!(
        c.error_response(&e),
        LocalResponse::status_only(StatusCode::FORBIDDEN)
    );

    // Nobody listening.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let c = ProviderClient::new(
        &grpc_provider(),
        authgate_config::HostPort {
            host: "127.0.0.1".into(),
            port,
        },
    )
    .expect("builds");
    let d = c.check(&ClientRequest::get("/").parts()).await;
    assert!(matches!(d, Decision::Error(CheckError::Rpc(..))), "{d:?}");
}

#[tokio::test]
async fn slow_service_times_out() {
    let server = grpc_authz(Some(Duration::from_millis(800)), |_| Ok(CheckResponse::default())).await;
    let mut config = grpc_provider();
    config.timeout = Duration::from_millis(100);
    let c = ProviderClient::new(&config, server.target()).expect("builds");
    let started = std::time::Instant::now();
    let d = c.check(&ClientRequest::get("/").parts()).await;
    assert!(started.elapsed() < Duration::from_millis(700));
    let Decision::Error(e) = d else {
        panic!("expected an error, got {d:?}")
    };
    // Either our local deadline or the server-side grpc-timeout fires first.
    assert!(
        e.is_timeout()
            || matches!(
                e,
                CheckError::Rpc(tonic::Code::DeadlineExceeded | tonic::Code::Cancelled, _)
            ),
        "{e}"
    );
}

#[tokio::test]
async fn invalid_mutations_are_invalid() {
    let cases = [
        ok(OkHttpResponse {
            headers: vec![set("bad name", "v")],
            ..Default::default()
        }),
        ok(OkHttpResponse {
            headers: vec![set("x-bad", "a\r\nx-injected: 1")],
            ..Default::default()
        }),
        ok(OkHttpResponse {
            headers: vec![set("", "v")],
            ..Default::default()
        }),
        ok(OkHttpResponse {
            headers: vec![set(":path", "no-slash")],
            ..Default::default()
        }),
        ok(OkHttpResponse {
            response_headers_to_add: vec![set("x-bad", "nul\0")],
            ..Default::default()
        }),
        ok(OkHttpResponse {
            query_parameters_to_set: vec![QueryParameter {
                key: "a b".into(),
                value: "c".into(),
            }],
            ..Default::default()
        }),
        ok(OkHttpResponse {
            query_parameters_to_set: vec![QueryParameter {
                key: "a".into(),
                value: "x&admin=1".into(),
            }],
            ..Default::default()
        }),
        denied(7, 403, vec![set("bad name", "v")], "x"),
        denied(7, 403, vec![set("x-ok", "line\nbreak")], "x"),
    ];
    for resp in cases {
        let d = check_with(resp.clone(), &ClientRequest::get("/")).await;
        assert!(matches!(d, Decision::Invalid(_)), "{resp:?} gave {d:?}");
    }
    // Invalid removal names are skipped, not fatal.
    let d = check_with(
        ok(OkHttpResponse {
            headers_to_remove: vec!["bad name".into(), "".into()],
            ..Default::default()
        }),
        &ClientRequest::get("/"),
    )
    .await;
    assert_eq!(d, Decision::Allow(Default::default()));
}

#[tokio::test]
async fn one_connection_for_many_checks() {
    let server = grpc_authz(None, |req| {
        let path = path_of(req);
        Ok(if path == "/deny" {
            denied(7, 403, vec![], "no")
        } else {
            CheckResponse::default()
        })
    })
    .await;
    let c = std::sync::Arc::new(client(&server));
    for i in 0..200 {
        let path = if i % 4 == 0 { "/deny" } else { "/ok" };
        c.check(&ClientRequest::get(path).parts()).await;
    }
    // And concurrently: multiplexed on the same HTTP/2 connection.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let c = c.clone();
        tasks.spawn(async move { c.check(&ClientRequest::get("/ok").parts()).await });
    }
    while let Some(d) = tasks.join_next().await {
        assert!(matches!(d.expect("task"), Decision::Allow(_)));
    }
    assert_eq!(server.count(), 250);
    assert!(server.connections() <= 2, "{} connections", server.connections());
}
