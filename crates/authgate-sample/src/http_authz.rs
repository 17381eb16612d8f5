//! The HTTP check server: the Go sample's `ExtAuthzServer.ServeHTTP`, byte for byte where it
//! matters (status, header names and values, body).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, TRANSFER_ENCODING};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use tokio::net::TcpListener;

use crate::golog::golog;
use crate::{
    ALLOWED_VALUE, CHECK_HEADER, CheckCounters, DENY_BODY, OVERRIDE_HEADER, RECEIVED_HEADER, RESULT_HEADER,
    SampleConfig, TOO_LONG, is_too_long, server,
};

/// Go reads the whole body into memory; we stop at this much and call the body too long (it
/// would be rendered `<too-long>` anyway) rather than let one client exhaust memory.
const MAX_BODY_READ: usize = 64 << 20;

pub(crate) async fn serve(
    listener: TcpListener,
    _cfg: Arc<SampleConfig>, // the HTTP sample has no service-account rule (R-D5)
    counters: Arc<CheckCounters>,
) -> std::io::Result<()> {
    let service = service_fn(move |request| {
        counters.http.fetch_add(1, Ordering::Relaxed);
        async move { Ok::<_, Infallible>(check(request).await) }
    });
    let mut builder = server::http_builder();
    // Go writes canonical header names (`X-Ext-Authz-Check-Result`); so do we on HTTP/1.
    builder.http1().title_case_headers(true);
    server::serve(listener, builder, service).await
}

async fn check(request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = read_body(body).await;
    let summary = summarize(&parts, &body);
    // `Header.Get` in Go: the first value decides, compared exactly.
    let allowed = parts
        .headers
        .get(CHECK_HEADER)
        .is_some_and(|value| value.as_bytes() == ALLOWED_VALUE.as_bytes());
    let verdict = if allowed { "allowed" } else { "denied" };
    golog!("[HTTP][{verdict}]: {}", String::from_utf8_lossy(&summary));
    // Go echoes the check request's own override value, or sends the header empty.
    let echoed = parts.headers.get(OVERRIDE_HEADER).cloned();
    let mut response = check_response(allowed, parts.method == Method::HEAD);
    let headers = response.headers_mut();
    headers.insert(OVERRIDE_HEADER, echoed.unwrap_or(HeaderValue::from_static("")));
    headers.insert(RECEIVED_HEADER, header_value(&summary));
    headers.insert(RESULT_HEADER, HeaderValue::from_static(verdict));
    response
}

/// 200 with an empty body, or 403 with the deny body, each with the headers Go adds itself.
fn check_response(allowed: bool, head: bool) -> Response<Full<Bytes>> {
    let (status, body) = if allowed {
        (StatusCode::OK, "")
    } else {
        (StatusCode::FORBIDDEN, DENY_BODY)
    };
    let sent = if head { "" } else { body };
    let mut response = Response::new(Full::new(Bytes::from_static(sent.as_bytes())));
    *response.status_mut() = status;
    if !allowed {
        // What Go's content sniffing picks for the deny body.
        let text = HeaderValue::from_static("text/plain; charset=utf-8");
        response.headers_mut().insert(CONTENT_TYPE, text);
    }
    let length = HeaderValue::from(body.len());
    response.headers_mut().insert(CONTENT_LENGTH, length);
    response
}

/// What the check saw of the body: its bytes, or that it was longer than we read.
enum CheckBody {
    Read(Vec<u8>),
    TooLong,
}

async fn read_body(mut body: Incoming) -> CheckBody {
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                let Some(data) = frame.data_ref() else {
                    continue; // trailers
                };
                if bytes.len() + data.len() > MAX_BODY_READ {
                    return CheckBody::TooLong;
                }
                bytes.extend_from_slice(data);
            }
            Err(err) => {
                // Like Go's io.ReadAll: log, and carry on with what was read.
                golog!("[HTTP] read body failed: {err}");
                break;
            }
        }
    }
    CheckBody::Read(bytes)
}

/// The sample's `L` without its final newline:
/// `<METHOD> <Host><RequestURI>, headers: <Go %v of the header map>, body: [<body>]`.
/// Built as bytes because Go prints header values and the body verbatim.
fn summarize(parts: &Parts, body: &CheckBody) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(host(parts));
    out.extend_from_slice(request_uri(parts).as_bytes());
    out.extend_from_slice(b", headers: ");
    write_go_header_map(&mut out, &parts.headers);
    out.extend_from_slice(b", body: [");
    out.extend_from_slice(match body {
        CheckBody::Read(bytes) if !is_too_long(bytes) => bytes,
        _ => TOO_LONG.as_bytes(),
    });
    out.push(b']');
    out
}

/// Go's `Request.Host`: the absolute-form or `:authority` host, else the `Host` header.
fn host(parts: &Parts) -> &[u8] {
    match parts.uri.authority() {
        Some(authority) => authority.as_str().as_bytes(),
        None => parts.headers.get(HOST).map_or(&[], HeaderValue::as_bytes),
    }
}

/// Go's `Request.URL` as `%s` prints it: the request target as received.
fn request_uri(parts: &Parts) -> String {
    match parts.version {
        // hyper fills in scheme and authority from the h2 pseudo-headers; Go's URL holds `:path`.
        Version::HTTP_2 => parts
            .uri
            .path_and_query()
            .map_or_else(String::new, ToString::to_string),
        _ => parts.uri.to_string(),
    }
}

/// Go's `%v` of an `http.Header`: `map[Key1:[v1 v2] Key2:[v]]`, keys canonicalized and sorted,
/// and without the headers Go's server moves into `Request` fields (`Host`, `Transfer-Encoding`).
fn write_go_header_map(out: &mut Vec<u8>, headers: &HeaderMap) {
    let mut map: BTreeMap<String, Vec<&[u8]>> = BTreeMap::new();
    for (name, value) in headers {
        if name != HOST && name != TRANSFER_ENCODING {
            let values = map.entry(canonical_key(name.as_str())).or_default();
            values.push(value.as_bytes());
        }
    }
    out.extend_from_slice(b"map[");
    for (i, (key, values)) in map.iter().enumerate() {
        let separator = if i == 0 { "" } else { " " };
        let _ = write!(out, "{separator}{key}:[");
        out.extend_from_slice(&values.join(&b' '));
        out.push(b']');
    }
    out.push(b']');
}

/// Go's `CanonicalMIMEHeaderKey` for a valid token: `x-ext-authz` → `X-Ext-Authz`.
fn canonical_key(name: &str) -> String {
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

/// Go writes the summary as a header value with newlines turned into spaces. Other control
/// bytes, which Go would send raw and break the response, also become spaces.
fn header_value(summary: &[u8]) -> HeaderValue {
    let cleaned: Vec<u8> = summary
        .iter()
        .map(|&b| {
            if (b < b' ' && b != b'\t') || b == 0x7f {
                b' '
            } else {
                b
            }
        })
        .collect();
    HeaderValue::from_bytes(&cleaned).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(request: Request<()>) -> Parts {
        request.into_parts().0
    }

    #[test]
    fn summary_renders_headers_like_go() {
        let request = Request::post("/check/productpage?x=1")
            .header("host", "authz.local")
            .header("x-ext-authz", "allow")
            .header("x-b", "2")
            .header("x-b", "1")
            .header("accept", "*/*")
            .body(())
            .expect("valid request");
        let summary = summarize(&parts(request), &CheckBody::Read(b"hi".to_vec()));
        assert_eq!(
            String::from_utf8_lossy(&summary),
            "POST authz.local/check/productpage?x=1, headers: \
             map[Accept:[*/*] X-B:[2 1] X-Ext-Authz:[allow]], body: [hi]"
        );
    }

    #[test]
    fn empty_header_map_and_too_long_body() {
        let request = Request::get("/").body(()).expect("valid request");
        let summary = summarize(&parts(request), &CheckBody::TooLong);
        assert_eq!(summary, b"GET /, headers: map[], body: [<too-long>]");
    }

    #[test]
    fn canonical_keys() {
        assert_eq!(canonical_key("x-ext-authz"), "X-Ext-Authz");
        assert_eq!(canonical_key("content-type"), "Content-Type");
        assert_eq!(canonical_key("x--a_b"), "X--A_b");
    }

    #[test]
    fn control_bytes_become_spaces() {
        assert_eq!(header_value(b"a\r\nb\x00c\td").as_bytes(), b"a  b c\td");
    }
}
