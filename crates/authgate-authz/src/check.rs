//! What the proxy knows about a request when it asks for a check, and the pieces of the
//! `CheckRequest` both providers derive from it (envoy-ext-authz.md §3).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::SystemTime;

use authgate_config::BodySettings;
use authgate_proto::auth::{AttributeContext, CheckRequest, attribute_context};
use authgate_proto::core::{Address, SocketAddress, address, socket_address};
use bytes::Bytes;
use envoy_types::pb::google::protobuf::Timestamp;
use http::header::HOST;

/// The header Envoy adds to the check (never taken from the client) when a body is sent.
pub const PARTIAL_BODY_HEADER: &str = "x-envoy-auth-partial-body";

/// The downstream request, as the proxy has it when the check starts.
#[derive(Debug, Clone, Copy)]
pub struct CheckRequestParts<'a> {
    pub method: &'a http::Method,
    /// Normalized path + query, never a fragment: exactly what goes upstream.
    pub path_and_query: &'a str,
    /// `:authority` / `Host` as the client sent it.
    pub authority: &'a str,
    /// `"http"` or `"https"`.
    pub scheme: &'a str,
    pub version: http::Version,
    /// Downstream request headers (hop-by-hop already stripped, `x-request-id` present).
    pub headers: &'a http::HeaderMap,
    /// The direct peer.
    pub source: SocketAddr,
    /// The local address of the downstream connection.
    pub destination: SocketAddr,
    pub stream_id: u64,
    pub request_time: SystemTime,
    /// `Some` only when the proxy buffered per the provider's body settings (never for upgrades
    /// or header-only requests).
    pub body: Option<&'a BufferedBody>,
    /// Client-certificate principal (URI SAN, else DNS SAN, else subject); `None` without one.
    pub principal: Option<&'a str>,
    pub sni: Option<&'a str>,
    pub context_extensions: &'a [(String, String)],
}

/// The request body as buffered by the proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BufferedBody {
    pub bytes: Bytes,
    /// True when the proxy stopped buffering before the end of the body
    /// (`allowPartialMessage`).
    pub partial: bool,
}

/// The body part of a check (Envoy REQ-7): the first `maxRequestBytes` bytes, and whether that
/// is less than the whole body.
pub(crate) struct CheckBody {
    pub bytes: Bytes,
    pub partial: bool,
}

impl CheckBody {
    pub(crate) fn from_parts(parts: &CheckRequestParts<'_>, settings: Option<&BodySettings>) -> Option<Self> {
        let (body, len, partial) = check_body(parts, settings)?;
        Some(Self {
            bytes: body.bytes.slice(..len),
            partial,
        })
    }

    pub(crate) fn partial_header_value(&self) -> &'static str {
        if self.partial { "true" } else { "false" }
    }
}

/// The body part of a check, borrowed: the buffered body, how many of its bytes are sent
/// (`maxRequestBytes` at most) and whether that is less than the whole body.
pub(crate) fn check_body<'a>(
    parts: &CheckRequestParts<'a>,
    settings: Option<&BodySettings>,
) -> Option<(&'a BufferedBody, usize, bool)> {
    let (body, settings) = (parts.body?, settings?);
    let max = usize::try_from(settings.max_request_bytes).unwrap_or(usize::MAX);
    let len = body.bytes.len().min(max);
    Some((body, len, body.partial || body.bytes.len() > max))
}

/// `HTTP/1.0`, `HTTP/1.1`, `HTTP/2`, `HTTP/3` as Envoy names protocols.
pub(crate) fn protocol_name(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// Envoy `MessageUtil::sanitizeUtf8String`: every byte that breaks UTF-8 becomes `!`.
pub(crate) fn sanitize_utf8(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    let mut rest = bytes;
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                return out;
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                // `valid` is valid UTF-8 by construction.
                out.push_str(&String::from_utf8_lossy(valid));
                out.push('!');
                rest = after.get(1..).unwrap_or_default();
            }
        }
    }
}

/// The request headers as Envoy's CheckRequest `headers` map sees them (REQ-5/6): lower-case
/// names in first-arrival order, pseudo-headers first, repeated values joined with `,`, values
/// UTF-8 sanitized, the client's own `x-envoy-auth-partial-body` dropped and `host` folded into
/// `:authority`.
pub(crate) fn header_list(parts: &CheckRequestParts<'_>) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(parts.headers.keys_len() + 4);
    out.push((":authority".to_owned(), sanitize_utf8(parts.authority.as_bytes())));
    out.push((
        ":method".to_owned(),
        sanitize_utf8(parts.method.as_str().as_bytes()),
    ));
    out.push((":path".to_owned(), sanitize_utf8(parts.path_and_query.as_bytes())));
    out.push((":scheme".to_owned(), sanitize_utf8(parts.scheme.as_bytes())));
    for name in parts.headers.keys() {
        if name == HOST || name.as_str() == PARTIAL_BODY_HEADER {
            continue;
        }
        out.push((name.as_str().to_owned(), joined_value(parts.headers, name)));
    }
    out
}

pub(crate) fn joined_value(headers: &http::HeaderMap, name: &http::HeaderName) -> String {
    let mut joined: Vec<u8> = Vec::new();
    for (i, v) in headers.get_all(name).iter().enumerate() {
        if i > 0 {
            joined.push(b',');
        }
        joined.extend_from_slice(v.as_bytes());
    }
    sanitize_utf8(&joined)
}

fn socket_address(addr: SocketAddr) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            protocol: socket_address::Protocol::Tcp as i32,
            address: addr.ip().to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(addr.port()))),
            ..Default::default()
        })),
    }
}

pub(crate) fn timestamp(t: SystemTime) -> Timestamp {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => Timestamp {
            seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
        },
        Err(_) => Timestamp::default(),
    }
}

/// The gRPC `CheckRequest` (REQ-1..REQ-8).
pub(crate) fn build_check_request(
    parts: &CheckRequestParts<'_>,
    body_settings: Option<&BodySettings>,
) -> CheckRequest {
    let body = CheckBody::from_parts(parts, body_settings);
    let mut headers: HashMap<String, String> = header_list(parts).into_iter().collect();

    let mut http = attribute_context::HttpRequest {
        id: parts.stream_id.to_string(),
        method: sanitize_utf8(parts.method.as_str().as_bytes()),
        path: sanitize_utf8(parts.path_and_query.as_bytes()),
        host: sanitize_utf8(parts.authority.as_bytes()),
        scheme: sanitize_utf8(parts.scheme.as_bytes()),
        query: String::new(),
        fragment: String::new(),
        size: 0,
        protocol: protocol_name(parts.version).to_owned(),
        ..Default::default()
    };
    if let Some(body) = body {
        headers.insert(
            PARTIAL_BODY_HEADER.to_owned(),
            body.partial_header_value().to_owned(),
        );
        http.size = i64::try_from(parts.body.map_or(0, |b| b.bytes.len())).unwrap_or(i64::MAX);
        if body_settings.is_some_and(|s| s.pack_as_bytes) {
            http.raw_body = body.bytes.to_vec();
        } else {
            http.body = sanitize_utf8(&body.bytes);
        }
    }
    http.headers = headers;

    let source = attribute_context::Peer {
        address: Some(socket_address(parts.source)),
        principal: parts
            .principal
            .map(|p| sanitize_utf8(p.as_bytes()))
            .unwrap_or_default(),
        // REQ-1: Envoy copies this request header into `source.service`.
        service: parts
            .headers
            .get("x-envoy-downstream-service-cluster")
            .map(|v| sanitize_utf8(v.as_bytes()))
            .unwrap_or_default(),
        ..Default::default()
    };
    let destination = attribute_context::Peer {
        address: Some(socket_address(parts.destination)),
        ..Default::default()
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(source),
            destination: Some(destination),
            request: Some(attribute_context::Request {
                time: Some(timestamp(parts.request_time)),
                http: Some(http),
            }),
            context_extensions: parts.context_extensions.iter().cloned().collect(),
            metadata_context: Some(Default::default()),
            route_metadata_context: Some(Default::default()),
            tls_session: parts
                .sni
                .filter(|s| !s.is_empty())
                .map(|sni| attribute_context::TlsSession { sni: sni.to_owned() }),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_replaces_each_bad_byte() {
        assert_eq!(sanitize_utf8(b"ok"), "ok");
        assert_eq!(sanitize_utf8(b"a\xffb\xfe\xfdc"), "a!b!!c");
        assert_eq!(sanitize_utf8("é".as_bytes()), "é");
        assert_eq!(sanitize_utf8(b"\xc3"), "!");
    }
}
