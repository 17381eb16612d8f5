//! How every field of a gRPC CheckResponse becomes a decision and header mutations, case by
//! case: each case is decided by the provider against a real in-process tonic server, the
//! mutations are applied to a fixed request and response, and the whole outcome is rendered as
//! one string. The expected strings were taken from the implementation before the
//! copy-free rewrite of `grpc_provider.rs` (commit f06c227) and pass on both: they pin the
//! behaviour (Envoy 1.40's, see envoy-ext-authz.md GRPC-2..6, OK-3..11) while the code changes.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use authgate_authz::{
    AllowMutations, CheckError, Decision, HeaderAction, HeaderMutation, ProviderClient, RequestMutation,
    ResponseMutation,
};
use authgate_proto::auth::{CheckResponse, DeniedHttpResponse, OkHttpResponse, check_response};
use authgate_proto::core::{HeaderValue as ProtoHeader, HeaderValueOption, QueryParameter};
use authgate_proto::http_status::HttpStatus;
use envoy_types::pb::google::protobuf::BoolValue;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use support::{ClientRequest, grpc_authz, grpc_provider, ok, path_of, rpc_status};

const APPEND_IF_EXISTS_OR_ADD: i32 = 0;
const ADD_IF_ABSENT: i32 = 1;
const OVERWRITE_IF_EXISTS_OR_ADD: i32 = 2;
const OVERWRITE_IF_EXISTS: i32 = 3;

// ---------------------------------------------------------------------------------------------
// Building CheckResponses.

fn full(key: &str, value: &str, raw_value: &[u8], append: Option<bool>, action: i32) -> HeaderValueOption {
    #[allow(deprecated)]
    HeaderValueOption {
        header: Some(ProtoHeader {
            key: key.into(),
            value: value.into(),
            raw_value: raw_value.to_vec(),
        }),
        append: append.map(|value| BoolValue { value }),
        append_action: action,
        keep_empty_value: false,
    }
}

fn opt(key: &str, value: &str, append: Option<bool>, action: i32) -> HeaderValueOption {
    full(key, value, b"", append, action)
}

fn set(key: &str, value: &str) -> HeaderValueOption {
    opt(key, value, None, APPEND_IF_EXISTS_OR_ADD)
}

fn raw(key: &str, value: &str, raw_value: &[u8]) -> HeaderValueOption {
    full(key, value, raw_value, None, APPEND_IF_EXISTS_OR_ADD)
}

fn missing(append: Option<bool>) -> HeaderValueOption {
    #[allow(deprecated)]
    HeaderValueOption {
        header: None,
        append: append.map(|value| BoolValue { value }),
        append_action: 0,
        keep_empty_value: false,
    }
}

fn ok_headers(headers: Vec<HeaderValueOption>) -> CheckResponse {
    ok(OkHttpResponse {
        headers,
        ..Default::default()
    })
}

fn ok_resp_headers(response_headers_to_add: Vec<HeaderValueOption>) -> CheckResponse {
    ok(OkHttpResponse {
        response_headers_to_add,
        ..Default::default()
    })
}

fn qp(key: &str, value: &str) -> QueryParameter {
    QueryParameter {
        key: key.into(),
        value: value.into(),
    }
}

fn local(status: Option<i32>, headers: Vec<HeaderValueOption>, body: &str) -> DeniedHttpResponse {
    DeniedHttpResponse {
        status: status.map(|code| HttpStatus { code }),
        headers,
        body: body.into(),
    }
}

fn denied(code: i32, d: DeniedHttpResponse) -> CheckResponse {
    CheckResponse {
        status: rpc_status(code),
        dynamic_metadata: None,
        http_response: Some(check_response::HttpResponse::DeniedResponse(d)),
    }
}

fn error(code: i32, d: DeniedHttpResponse) -> CheckResponse {
    CheckResponse {
        status: rpc_status(code),
        dynamic_metadata: None,
        http_response: Some(check_response::HttpResponse::ErrorResponse(d)),
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering a Decision (after applying it to a fixed request and response).

const BASE_PATH: &str = "/orig?b=2&a=1";

fn base_request() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("shop.example.com"));
    h.append("x-exist", HeaderValue::from_static("c1"));
    h.append("x-exist", HeaderValue::from_static("c2"));
    h.append("x-other", HeaderValue::from_static("o"));
    h
}

fn base_response() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("r-exist", HeaderValue::from_static("up"));
    h.insert("content-type", HeaderValue::from_static("text/plain"));
    h
}

fn esc(bytes: &[u8]) -> String {
    let mut s = String::new();
    for &b in bytes {
        if (0x20..0x7f).contains(&b) {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

fn map(h: &HeaderMap) -> String {
    let mut sorted: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (n, v) in h {
        sorted.entry(n.as_str()).or_default().push(esc(v.as_bytes()));
    }
    let parts: Vec<String> = sorted
        .into_iter()
        .map(|(n, vs)| format!("{n}={}", vs.join("|")))
        .collect();
    format!("{{{}}}", parts.join(" "))
}

fn list(h: &[(HeaderName, HeaderValue)]) -> String {
    let parts: Vec<String> = h
        .iter()
        .map(|(n, v)| format!("{n}: {}", esc(v.as_bytes())))
        .collect();
    format!("[{}]", parts.join(", "))
}

fn render(d: Decision) -> String {
    match d {
        Decision::Allow(m) => {
            let AllowMutations { request, response } = m;
            let method = request
                .method
                .as_ref()
                .map_or_else(|| "-".to_owned(), ToString::to_string);
            let mut h = base_request();
            let mut path = BASE_PATH.to_owned();
            request.apply(&mut h, &mut path);
            let mut r = base_response();
            response.apply(&mut r);
            format!(
                "allow method={method} path={path} req={} resp={}",
                map(&h),
                map(&r)
            )
        }
        Decision::Deny(r) => format!(
            "deny status={} headers={} body={}",
            r.status.as_u16(),
            list(&r.headers),
            esc(&r.body)
        ),
        Decision::Invalid(reason) => format!("invalid: {reason}"),
        Decision::Error(CheckError::ErrorResponse {
            code,
            status,
            headers,
            body,
        }) => format!(
            "error code={code} status={} headers={} body={}",
            status.map_or_else(|| "none".to_owned(), |s| s.as_u16().to_string()),
            list(&headers),
            esc(&body)
        ),
        other => format!("other: {other:?}"),
    }
}

/// Allow rendering with the request/response unchanged except as given.
const BASE_REQ: &str = "{host=shop.example.com x-exist=c1|c2 x-other=o}";
const BASE_RESP: &str = "{content-type=text/plain r-exist=up}";

fn allow(method: &str, path: &str, req: &str, resp: &str) -> String {
    format!("allow method={method} path={path} req={req} resp={resp}")
}

fn allow_req(req: &str) -> String {
    allow("-", BASE_PATH, req, BASE_RESP)
}

fn allow_resp(resp: &str) -> String {
    allow("-", BASE_PATH, BASE_REQ, resp)
}

fn invalid(reason: &str) -> String {
    format!("invalid: {reason}")
}

/// Serves every case from one server (the case is picked by the request path) and checks all of
/// them, reporting every mismatch at once.
async fn run(cases: Vec<(&'static str, CheckResponse, String)>) {
    let responses: Arc<Vec<CheckResponse>> = Arc::new(cases.iter().map(|c| c.1.clone()).collect());
    let served = responses.clone();
    let server = grpc_authz(None, move |req| {
        let path = path_of(req);
        let i: usize = path
            .strip_prefix("/case/")
            .and_then(|s| s.parse().ok())
            .unwrap_or(usize::MAX);
        served
            .get(i)
            .cloned()
            .ok_or_else(|| tonic::Status::not_found(path))
    })
    .await;
    let client = ProviderClient::new(&grpc_provider(), server.target()).expect("provider builds");
    let mut failures = Vec::new();
    for (i, (name, _, expected)) in cases.iter().enumerate() {
        let req = ClientRequest::get(&format!("/case/{i}"));
        let got = render(client.check(&req.parts()).await);
        if got != *expected {
            failures.push(format!("case {name}:\n  expected: {expected}\n  actual:   {got}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// ok_response.headers

#[tokio::test]
async fn ok_request_headers() {
    let long = format!("X-{}", "A".repeat(70));
    let long_lower = format!("x-{}", "a".repeat(70));
    let long_req = format!("{{host=shop.example.com {long_lower}=long x-exist=c1|c2 x-other=o}}");
    run(vec![
        (
            "upper-case keys: sets, appends (present and absent)",
            ok_headers(vec![
                set("X-Exist", "v"),
                set("X-New", "n"),
                opt("X-Other", "a", Some(true), 0),
                opt("X-Absent-App", "a", Some(true), 0),
                set("Content-Type", "t"),
            ]),
            allow_req("{content-type=t host=shop.example.com x-exist=v x-new=n x-other=o,a}"),
        ),
        (
            "framing headers in any case are ignored",
            ok_headers(vec![
                set("CONNECTION", "close"),
                set("Transfer-Encoding", "chunked"),
                set("Content-Length", "5"),
                set("TE", "trailers"),
                set("Keep-Alive", "1"),
                set("Upgrade", "ws"),
                set("Proxy-Connection", "x"),
                opt("Connection", "x", Some(true), 0),
                set("x-after", "1"),
            ]),
            allow_req("{host=shop.example.com x-after=1 x-exist=c1|c2 x-other=o}"),
        ),
        (
            "append false and append_action (ignored for request headers)",
            ok_headers(vec![
                opt("X-Exist", "f", Some(false), ADD_IF_ABSENT),
                opt("x-aia", "v", None, ADD_IF_ABSENT),
                opt("x-other", "w", None, OVERWRITE_IF_EXISTS),
                opt("x-oioa", "w", None, OVERWRITE_IF_EXISTS_OR_ADD),
                opt("x-unk", "u", None, 9),
                opt("x-unk-neg", "u", None, -3),
                opt("x-unk-app", "u", Some(true), 9),
            ]),
            allow_req("{host=shop.example.com x-aia=v x-exist=f x-oioa=w x-other=w x-unk=u x-unk-neg=u}"),
        ),
        (
            "long upper-case name",
            ok_headers(vec![set(&long, "long")]),
            allow_req(&long_req),
        ),
        (
            "sets before appends, mixed case of one name",
            ok_headers(vec![
                opt("x-exist", "app", Some(true), 0),
                set("x-exist", "s1"),
                set("X-EXIST", "s2"),
                opt("X-Exist", "app2", Some(true), 0),
            ]),
            allow_req("{host=shop.example.com x-exist=s2,app,app2 x-other=o}"),
        ),
        (
            "empty value and tab",
            ok_headers(vec![set("x-exist", ""), set("x-tab", "a\tb")]),
            allow_req("{host=shop.example.com x-exist= x-other=o x-tab=a\\x09b}"),
        ),
        (
            "headers_to_remove: case, host, pseudo, framing, invalid, after sets",
            ok(OkHttpResponse {
                headers: vec![set("X-New", "n"), set("x-kept", "k")],
                headers_to_remove: vec![
                    "X-Exist".into(),
                    "host".into(),
                    "HOST".into(),
                    ":path".into(),
                    "Connection".into(),
                    "bad name".into(),
                    String::new(),
                    "x-new".into(),
                ],
                ..Default::default()
            }),
            allow_req("{host=shop.example.com x-kept=k x-other=o}"),
        ),
    ])
    .await;
}

#[tokio::test]
async fn ok_pseudo_and_host() {
    run(vec![
        (
            "HOST then Host",
            ok_headers(vec![set("HOST", "h1.example"), set("Host", "h2.example:8080")]),
            allow_req("{host=h2.example:8080 x-exist=c1|c2 x-other=o}"),
        ),
        (
            "appends to host and pseudo-headers are ignored",
            ok_headers(vec![
                opt("Host", "h3", Some(true), 0),
                opt(":authority", "h4", Some(true), 0),
                opt(":path", "/x", Some(true), 0),
                opt(":method", "PUT", Some(true), 0),
            ]),
            allow_req(BASE_REQ),
        ),
        (
            "upper-case pseudo-headers",
            ok_headers(vec![
                set(":PATH", "/new?z=1"),
                set(":Method", "PUT"),
                set(":AUTHORITY", "auth.example"),
            ]),
            allow(
                "PUT",
                "/new?z=1",
                "{host=auth.example x-exist=c1|c2 x-other=o}",
                BASE_RESP,
            ),
        ),
        (
            "ignored pseudo-headers",
            ok_headers(vec![
                set(":scheme", "https"),
                set(":status", "200"),
                set(":unknown", "x"),
                set(":", "x"),
                set(":Bad Name", "x"),
            ]),
            allow_req(BASE_REQ),
        ),
        (
            "lower-case method is an extension method",
            ok_headers(vec![set(":method", "patch")]),
            allow("patch", BASE_PATH, BASE_REQ, BASE_RESP),
        ),
        (
            ":path then query parameters",
            ok(OkHttpResponse {
                headers: vec![set(":path", "/p?y=1")],
                query_parameters_to_set: vec![qp("a", "1")],
                ..Default::default()
            }),
            allow("-", "/p?a=1&y=1", BASE_REQ, BASE_RESP),
        ),
        (
            "host and :authority, last wins",
            ok_headers(vec![set(":authority", "a.example"), set("host", "b.example")]),
            allow_req("{host=b.example x-exist=c1|c2 x-other=o}"),
        ),
        (
            "invalid host",
            ok_headers(vec![set("x-a", "1"), set("Host", "bad host")]),
            invalid("ok_response.headers[1]: invalid authority \"bad host\""),
        ),
        (
            "invalid :authority",
            ok_headers(vec![set(":Authority", "")]),
            invalid("ok_response.headers[0]: invalid authority \"\""),
        ),
        (
            "invalid :path",
            ok_headers(vec![set("x-a", "1"), set(":PATH", "no-slash")]),
            invalid("ok_response.headers[1]: invalid :path \"no-slash\""),
        ),
        (
            "invalid :method",
            ok_headers(vec![set(":method", "GE T")]),
            invalid("ok_response.headers[0]: invalid :method \"GE T\""),
        ),
        (
            "non-ASCII :path",
            ok_headers(vec![raw(":path", "", b"/\xff")]),
            invalid("ok_response.headers[0]: non-ASCII :path"),
        ),
    ])
    .await;
}

#[tokio::test]
async fn ok_header_errors() {
    run(vec![
        (
            "empty key",
            ok_headers(vec![set("x-a", "1"), set("x-b", "2"), set("", "v")]),
            invalid("ok_response.headers[2]: empty header name"),
        ),
        (
            "missing header",
            ok_headers(vec![set("x-a", "1"), missing(None)]),
            invalid("ok_response.headers[1]: missing header"),
        ),
        (
            "missing header with append true",
            ok_headers(vec![missing(Some(true))]),
            invalid("ok_response.headers[0]: missing header"),
        ),
        (
            "invalid name, upper-case",
            ok_headers(vec![set("Bad Name", "v")]),
            invalid("ok_response.headers[0]: invalid header name \"bad name\""),
        ),
        (
            "invalid name with append true",
            ok_headers(vec![opt("Bad Name", "v", Some(true), 0)]),
            invalid("ok_response.headers[0]: invalid header name \"bad name\""),
        ),
        (
            "invalid value (CRLF), upper-case key",
            ok_headers(vec![set("x-a", "1"), set("X-Bad", "a\r\nb")]),
            invalid("ok_response.headers[1]: invalid value for header \"x-bad\""),
        ),
        (
            "invalid value and invalid name: the value is reported",
            ok_headers(vec![set("Bad Name", "a\nb")]),
            invalid("ok_response.headers[0]: invalid value for header \"bad name\""),
        ),
        (
            "invalid value of a pseudo-header",
            ok_headers(vec![set(":Path", "a\0")]),
            invalid("ok_response.headers[0]: invalid value for header \":path\""),
        ),
        (
            "invalid value of HOST",
            ok_headers(vec![set("HOST", "a\rb")]),
            invalid("ok_response.headers[0]: invalid value for header \"host\""),
        ),
        (
            "invalid value of a framing header",
            ok_headers(vec![set("Connection", "a\nb")]),
            invalid("ok_response.headers[0]: invalid value for header \"connection\""),
        ),
        (
            "NUL value",
            ok_headers(vec![set("x-n", "a\0b")]),
            invalid("ok_response.headers[0]: invalid value for header \"x-n\""),
        ),
        (
            "DEL value",
            ok_headers(vec![set("x-d", "a\u{7f}b")]),
            invalid("ok_response.headers[0]: invalid value for header \"x-d\""),
        ),
        (
            "non-ASCII name",
            ok_headers(vec![set("X-\u{c9}t\u{e9}", "v")]),
            invalid("ok_response.headers[0]: invalid header name \"x-\u{c9}t\u{e9}\""),
        ),
        (
            "header error before query error",
            ok(OkHttpResponse {
                headers: vec![set("bad name", "v")],
                query_parameters_to_set: vec![qp("a b", "1")],
                ..Default::default()
            }),
            invalid("ok_response.headers[0]: invalid header name \"bad name\""),
        ),
        (
            "header error before response header error",
            ok(OkHttpResponse {
                headers: vec![set("x-ok", "1"), set("x y", "v")],
                response_headers_to_add: vec![set(":status", "1")],
                ..Default::default()
            }),
            invalid("ok_response.headers[1]: invalid header name \"x y\""),
        ),
    ])
    .await;
}

#[tokio::test]
async fn raw_value_precedence() {
    run(vec![
        (
            "value wins over raw_value",
            ok_headers(vec![raw("x-r", "v", b"r")]),
            allow_req("{host=shop.example.com x-exist=c1|c2 x-other=o x-r=v}"),
        ),
        (
            "raw_value when value is empty",
            ok_headers(vec![raw("x-r", "", b"r")]),
            allow_req("{host=shop.example.com x-exist=c1|c2 x-other=o x-r=r}"),
        ),
        (
            "both empty",
            ok_headers(vec![raw("x-r", "", b"")]),
            allow_req("{host=shop.example.com x-exist=c1|c2 x-other=o x-r=}"),
        ),
        (
            "obs-text raw_value",
            ok_headers(vec![raw("x-r", "", b"a\xffb")]),
            allow_req("{host=shop.example.com x-exist=c1|c2 x-other=o x-r=a\\xffb}"),
        ),
        (
            "invalid raw_value ignored when value is set",
            ok_headers(vec![raw("x-r", "v", b"a\nb")]),
            allow_req("{host=shop.example.com x-exist=c1|c2 x-other=o x-r=v}"),
        ),
        (
            "invalid value with a valid raw_value",
            ok_headers(vec![raw("X-R", "a\n", b"r")]),
            invalid("ok_response.headers[0]: invalid value for header \"x-r\""),
        ),
        (
            "invalid raw_value",
            ok_headers(vec![raw("x-r", "", b"a\nb")]),
            invalid("ok_response.headers[0]: invalid value for header \"x-r\""),
        ),
        (
            "raw_value in response headers",
            ok_resp_headers(vec![raw("X-R", "", b"r\xfe")]),
            allow_resp("{content-type=text/plain r-exist=up x-r=r\\xfe}"),
        ),
        (
            "raw_value as :authority",
            ok_headers(vec![raw(":authority", "", b"raw.example")]),
            allow_req("{host=raw.example x-exist=c1|c2 x-other=o}"),
        ),
        (
            "raw_value in a denied response",
            denied(7, local(Some(401), vec![raw("X-R", "", b"r")], "")),
            "deny status=401 headers=[x-r: r] body=".to_owned(),
        ),
    ])
    .await;
}

// ---------------------------------------------------------------------------------------------
// ok_response.response_headers_to_add

#[tokio::test]
async fn response_headers_to_add() {
    run(vec![
        (
            "upper-case keys, every action",
            ok_resp_headers(vec![
                opt("R-Exist", "1", None, APPEND_IF_EXISTS_OR_ADD),
                opt("Content-Type", "j", None, OVERWRITE_IF_EXISTS_OR_ADD),
                opt("X-Aia", "a", None, ADD_IF_ABSENT),
                opt("R-EXIST", "no", None, ADD_IF_ABSENT),
                opt("X-Oie", "o", None, OVERWRITE_IF_EXISTS),
                opt("CONTENT-TYPE", "o2", None, OVERWRITE_IF_EXISTS),
            ]),
            allow_resp("{content-type=o2 r-exist=up|1 x-aia=a}"),
        ),
        (
            "legacy append wins over append_action; unknown action dropped",
            ok_resp_headers(vec![
                opt("R-Exist", "t", Some(true), OVERWRITE_IF_EXISTS),
                opt("content-type", "f", Some(false), ADD_IF_ABSENT),
                opt("x-unk", "u", Some(true), 9),
                opt("x-unk2", "u", Some(false), -1),
                opt("x-unk3", "u", None, 4),
            ]),
            allow_resp("{content-type=f r-exist=up|t}"),
        ),
        (
            "add bucket before set bucket",
            ok_resp_headers(vec![
                opt("x-m", "set", Some(false), 0),
                opt("X-M", "add", Some(true), 0),
                opt("x-m", "aia", None, ADD_IF_ABSENT),
                opt("x-m", "oie", None, OVERWRITE_IF_EXISTS),
            ]),
            allow_resp("{content-type=text/plain r-exist=up x-m=oie}"),
        ),
        (
            "framing headers ignored",
            ok_resp_headers(vec![
                set("Content-Length", "9"),
                set("Transfer-Encoding", "x"),
                opt("CONNECTION", "x", Some(false), 0),
                set("x-k", "1"),
            ]),
            allow_resp("{content-type=text/plain r-exist=up x-k=1}"),
        ),
        (
            "host is an ordinary response header",
            ok_resp_headers(vec![set("Host", "h")]),
            allow_resp("{content-type=text/plain host=h r-exist=up}"),
        ),
        (
            "pseudo-header",
            ok_resp_headers(vec![set("x-a", "1"), set(":Status", "200")]),
            invalid("ok_response.response_headers_to_add[1]: pseudo-header \":status\" in response headers"),
        ),
        (
            "pseudo-header with append and an unknown action",
            ok_resp_headers(vec![opt(":X", "1", Some(true), 9)]),
            invalid("ok_response.response_headers_to_add[0]: pseudo-header \":x\" in response headers"),
        ),
        (
            "invalid name",
            ok_resp_headers(vec![set("ok", "1"), set("Bad Name", "1")]),
            invalid("ok_response.response_headers_to_add[1]: invalid header name \"bad name\""),
        ),
        (
            "invalid name with an unknown action",
            ok_resp_headers(vec![opt("Bad Name", "1", None, 9)]),
            invalid("ok_response.response_headers_to_add[0]: invalid header name \"bad name\""),
        ),
        (
            "empty key",
            ok_resp_headers(vec![set("", "1")]),
            invalid("ok_response.response_headers_to_add[0]: empty header name"),
        ),
        (
            "missing header",
            ok_resp_headers(vec![set("x-a", "1"), set("x-b", "1"), missing(Some(false))]),
            invalid("ok_response.response_headers_to_add[2]: missing header"),
        ),
        (
            "invalid value",
            ok_resp_headers(vec![set("X-V", "a\r\n")]),
            invalid("ok_response.response_headers_to_add[0]: invalid value for header \"x-v\""),
        ),
        (
            "query error before response header error",
            ok(OkHttpResponse {
                query_parameters_to_set: vec![qp("a", "1"), qp("k=", "1")],
                response_headers_to_add: vec![set("", "1")],
                ..Default::default()
            }),
            invalid("ok_response.query_parameters_to_set[1].key: \"k=\" is not URL-encoded"),
        ),
    ])
    .await;
}

// ---------------------------------------------------------------------------------------------
// Query parameters

#[tokio::test]
async fn query_parameters() {
    let q = |set: Vec<QueryParameter>, remove: Vec<&str>| {
        ok(OkHttpResponse {
            query_parameters_to_set: set,
            query_parameters_to_remove: remove.into_iter().map(String::from).collect(),
            ..Default::default()
        })
    };
    let at = |path: &str| allow("-", path, BASE_REQ, BASE_RESP);
    run(vec![
        (
            "set and remove",
            q(vec![qp("c", "3"), qp("b", "9")], vec!["a"]),
            at("/orig?b=9&c=3"),
        ),
        (
            "set then remove same key",
            q(vec![qp("a", "7")], vec!["a"]),
            at("/orig?b=2"),
        ),
        ("remove only", q(vec![], vec!["b"]), at("/orig?a=1")),
        (
            "remove absent still re-sorts",
            q(vec![], vec!["zz"]),
            at("/orig?a=1&b=2"),
        ),
        (
            "set twice, last wins",
            q(vec![qp("a", "x"), qp("a", "y")], vec![]),
            at("/orig?a=y&b=2"),
        ),
        (
            "empty key and value",
            q(vec![qp("", "")], vec![]),
            at("/orig?=&a=1&b=2"),
        ),
        (
            "'=' in a value",
            q(vec![qp("k", "a=b")], vec![]),
            at("/orig?a=1&b=2&k=a=b"),
        ),
        (
            "invalid key",
            q(vec![qp("ok", "1"), qp("a b", "1")], vec![]),
            invalid("ok_response.query_parameters_to_set[1].key: \"a b\" is not URL-encoded"),
        ),
        (
            "invalid value",
            q(vec![qp("k", "x&y")], vec![]),
            invalid("ok_response.query_parameters_to_set[0].value: \"x&y\" is not URL-encoded"),
        ),
        (
            "'=' in a key",
            q(vec![qp("k=v", "1")], vec![]),
            invalid("ok_response.query_parameters_to_set[0].key: \"k=v\" is not URL-encoded"),
        ),
        (
            "remove keys are not validated",
            q(vec![], vec!["a b", "&"]),
            at("/orig?a=1&b=2"),
        ),
    ])
    .await;
}

// ---------------------------------------------------------------------------------------------
// denied_response / error_response

#[tokio::test]
async fn denied_response() {
    let st = |status: Option<i32>| denied(7, local(status, vec![], "x"));
    let deny = |status: u16| format!("deny status={status} headers=[] body=x");
    run(vec![
        (
            "upper-case keys, append true skipped, host kept, actions ignored",
            denied(
                7,
                local(
                    Some(401),
                    vec![
                        set("X-D", "a"),
                        opt("X-Skip", "b", Some(true), 0),
                        set("Host", "h"),
                        opt("Set-Cookie", "c=1", Some(false), 0),
                        opt("set-cookie", "c=2", None, 9),
                        opt("X-Aia", "v", None, ADD_IF_ABSENT),
                        set("Content-Length", "99"),
                        set("Connection", "close"),
                    ],
                    "h\u{e9}llo\n",
                ),
            ),
            "deny status=401 headers=[x-d: a, host: h, set-cookie: c=1, set-cookie: c=2, x-aia: v, \
             content-length: 99, connection: close] body=h\\xc3\\xa9llo\\x0a"
                .to_owned(),
        ),
        (
            "pseudo-header",
            denied(
                7,
                local(Some(401), vec![set("x-a", "1"), set(":Status", "500")], ""),
            ),
            invalid("denied_response.headers[1]: pseudo-header \":status\" in a local reply"),
        ),
        (
            "pseudo-header with append true is skipped",
            denied(
                7,
                local(Some(401), vec![opt(":status", "500", Some(true), 0)], ""),
            ),
            "deny status=401 headers=[] body=".to_owned(),
        ),
        (
            "invalid name with append true is skipped",
            denied(
                7,
                local(Some(401), vec![opt("Bad Name", "v\n", Some(true), 0)], ""),
            ),
            "deny status=401 headers=[] body=".to_owned(),
        ),
        (
            "missing header with append true is skipped",
            denied(7, local(Some(401), vec![missing(Some(true))], "")),
            "deny status=401 headers=[] body=".to_owned(),
        ),
        (
            "missing header",
            denied(7, local(Some(401), vec![missing(Some(false))], "")),
            invalid("denied_response.headers[0]: missing header"),
        ),
        (
            "invalid name",
            denied(7, local(None, vec![opt("Bad Name", "v", Some(false), 0)], "")),
            invalid("denied_response.headers[0]: invalid header name \"bad name\""),
        ),
        (
            "empty key",
            denied(7, local(None, vec![set("", "v")], "")),
            invalid("denied_response.headers[0]: empty header name"),
        ),
        (
            "invalid value",
            denied(7, local(None, vec![set("x-ok", "1"), set("X-V", "a\0")], "")),
            invalid("denied_response.headers[1]: invalid value for header \"x-v\""),
        ),
        ("status none", st(None), deny(403)),
        ("status 0", st(Some(0)), deny(403)),
        ("status 99", st(Some(99)), deny(403)),
        ("status 100", st(Some(100)), deny(403)),
        ("status 199", st(Some(199)), deny(403)),
        ("status 200", st(Some(200)), deny(200)),
        ("status 302", st(Some(302)), deny(302)),
        ("status 599", st(Some(599)), deny(599)),
        ("status 999", st(Some(999)), deny(999)),
        ("status 1000", st(Some(1000)), deny(403)),
        ("status -1", st(Some(-1)), deny(403)),
        ("status 65536+200", st(Some(65736)), deny(403)),
        (
            "non-OK code with an ok_response",
            CheckResponse {
                status: rpc_status(7),
                dynamic_metadata: None,
                http_response: Some(check_response::HttpResponse::OkResponse(OkHttpResponse {
                    headers: vec![set("bad name", "v")],
                    ..Default::default()
                })),
            },
            "deny status=403 headers=[] body=".to_owned(),
        ),
        (
            "OK code with an invalid denied_response",
            denied(0, local(Some(401), vec![set(":status", "1")], "x")),
            allow_req(BASE_REQ),
        ),
        (
            "OK code with an error_response",
            error(0, local(Some(500), vec![set("bad name", "1")], "x")),
            allow_req(BASE_REQ),
        ),
        (
            "negative gRPC code",
            denied(-1, local(Some(401), vec![], "neg")),
            "deny status=401 headers=[] body=neg".to_owned(),
        ),
    ])
    .await;
}

#[tokio::test]
async fn error_response() {
    let st = |status: Option<i32>| error(13, local(status, vec![], "e"));
    let err = |status: &str| format!("error code=13 status={status} headers=[] body=e");
    run(vec![
        ("status none", st(None), err("none")),
        ("status 0", st(Some(0)), err("none")),
        ("status -5", st(Some(-5)), err("none")),
        ("status 100", st(Some(100)), err("403")),
        ("status 418", st(Some(418)), err("418")),
        ("status 1000", st(Some(1000)), err("403")),
        ("status 999", st(Some(999)), err("999")),
        (
            "headers and body",
            error(
                14,
                local(
                    Some(503),
                    vec![
                        set("X-E", "1"),
                        opt("x-skip", "2", Some(true), 0),
                        opt("X-E", "3", Some(false), 0),
                        raw("x-raw", "", b"r"),
                    ],
                    "b\u{fc}sy",
                ),
            ),
            "error code=14 status=503 headers=[x-e: 1, x-e: 3, x-raw: r] body=b\\xc3\\xbcsy".to_owned(),
        ),
        (
            "negative gRPC code",
            error(-2, local(None, vec![], "")),
            "error code=-2 status=none headers=[] body=".to_owned(),
        ),
        (
            "pseudo-header",
            error(13, local(Some(500), vec![set(":Path", "/")], "")),
            invalid("error_response.headers[0]: pseudo-header \":path\" in a local reply"),
        ),
        (
            "invalid name",
            error(
                13,
                local(Some(500), vec![set("x", "1"), set("bad name", "1")], ""),
            ),
            invalid("error_response.headers[1]: invalid header name \"bad name\""),
        ),
        (
            "invalid value",
            error(13, local(Some(500), vec![set("X-V", "\r")], "")),
            invalid("error_response.headers[0]: invalid value for header \"x-v\""),
        ),
        (
            "missing header",
            error(13, local(Some(500), vec![missing(None)], "")),
            invalid("error_response.headers[0]: missing header"),
        ),
        (
            "empty key",
            error(13, local(Some(500), vec![set("", "1")], "")),
            invalid("error_response.headers[0]: empty header name"),
        ),
        (
            "pseudo-header with append true is skipped",
            error(13, local(Some(500), vec![opt(":path", "/", Some(true), 0)], "e")),
            "error code=13 status=500 headers=[] body=e".to_owned(),
        ),
    ])
    .await;
}

// ---------------------------------------------------------------------------------------------
// Applying mutations (HeaderMutation::apply by value)

fn hm(name: &'static str, value: &'static str, action: HeaderAction) -> HeaderMutation {
    HeaderMutation::new(
        HeaderName::from_static(name),
        HeaderValue::from_static(value),
        action,
    )
}

#[test]
fn mutations_apply_in_order_by_value() {
    let mut h = base_request();
    h.append("x-multi", HeaderValue::from_static("m1"));
    h.append("x-multi", HeaderValue::from_static("m2"));
    let m = RequestMutation {
        headers: vec![
            hm("x-absent", "a", HeaderAction::AppendIfExists),
            hm("x-multi", "m3", HeaderAction::AppendIfExists),
            hm("x-multi", "m4", HeaderAction::AppendIfExists),
            hm("x-exist", "aia", HeaderAction::AddIfAbsent),
            hm("x-aia", "1", HeaderAction::AddIfAbsent),
            hm("x-aia", "2", HeaderAction::AddIfAbsent),
            hm("x-oie-absent", "o", HeaderAction::OverwriteIfExists),
            hm("x-other", "o2", HeaderAction::OverwriteIfExists),
            hm("x-add", "1", HeaderAction::Add),
            hm("x-add", "2", HeaderAction::Add),
            hm("x-add", "3", HeaderAction::OverwriteIfExists),
            hm("x-add", "4", HeaderAction::Add),
            hm("x-add", "5", HeaderAction::AppendIfExists),
            hm("host", "h.example", HeaderAction::Set),
        ],
        path: Some("/p?z=1&y=2".into()),
        method: Some(http::Method::DELETE),
        remove: vec![HeaderName::from_static("host"), HeaderName::from_static("x-aia")],
        query_set: vec![("x".into(), "1".into())],
        query_remove: vec!["z".into()],
    };
    let mut path = BASE_PATH.to_owned();
    // `method` is the proxy's to apply; `apply` leaves it (and must not trip over it).
    m.apply(&mut h, &mut path);
    assert_eq!(path, "/p?x=1&y=2");
    assert_eq!(
        map(&h),
        "{host=h.example x-add=3,5|4 x-exist=c1|c2 x-multi=m1,m3,m4|m2 x-other=o2}"
    );

    let mut r = base_response();
    let resp = ResponseMutation {
        headers: vec![
            hm("r-exist", "a", HeaderAction::Add),
            hm("content-type", "s", HeaderAction::Set),
            hm("r-exist", "no", HeaderAction::AddIfAbsent),
            hm("r-new", "yes", HeaderAction::AddIfAbsent),
            hm("r-none", "no", HeaderAction::OverwriteIfExists),
            hm("r-exist", "o", HeaderAction::OverwriteIfExists),
        ],
    };
    resp.apply(&mut r);
    assert_eq!(map(&r), "{content-type=s r-exist=o r-new=yes}");
}
