//! The gRPC `envoy.service.auth.v3.CheckRequest` written straight into its protobuf wire bytes
//! (the hot path of every gRPC check).
//!
//! `check::build_check_request` builds the prost struct (still used by
//! [`ProviderClient::preview`](crate::ProviderClient::preview), hence `authgate explain`): one
//! `String` per header name and value, a `HashMap`, the IPs and the stream id as `String`s,
//! then `prost::Message::encode` walks it all again (~40 heap allocations per check). This module writes the same message
//! from the [`CheckRequestParts`] into one caller-provided [`BytesMut`]: a sizing pass computes
//! every nested message's length (protobuf prefixes each one with its length as a varint), then
//! a writing pass emits the fields in prost's order (by field number). Nothing is allocated
//! except the buffer's single reservation.
//!
//! The decoded message equals `build_check_request` for every input (the tests check that and
//! that the encoded length equals prost's `encoded_len()`): same header list (pseudo-headers,
//! repeated values joined with `,`, `host` folded into `:authority`, the client's
//! `x-envoy-auth-partial-body` dropped and Envoy's own added when a body is sent), same UTF-8
//! sanitization (every byte that breaks UTF-8 becomes `!`, so the length never changes), same
//! presence of the empty messages (`metadata_context`, `route_metadata_context`, `time`), a
//! `tls_session` only for a non-empty SNI. Context extensions repeating a key are written once,
//! with the last value (what the struct's `HashMap` keeps).

use std::io::Write as _;
use std::iter::Peekable;
use std::net::{IpAddr, SocketAddr};

use authgate_config::BodySettings;
use bytes::{BufMut, BytesMut};
use http::header::{self, HOST, HeaderName, HeaderValue};
use prost::encoding::encoded_len_varint;

use crate::CheckError;
use crate::check::{CheckRequestParts, PARTIAL_BODY_HEADER, check_body, protocol_name, timestamp};

/// Envoy copies this request header into `attributes.source.service` (REQ-1).
const SERVICE_CLUSTER_HEADER: &str = "x-envoy-downstream-service-cluster";

/// Length of the gRPC message prefix: compressed flag (1 byte) + big-endian length (4 bytes).
pub const GRPC_PREFIX_LEN: usize = 5;

// Field numbers (envoy/service/auth/v3/attribute_context.proto, external_auth.proto,
// envoy/config/core/v3/address.proto, google/protobuf/timestamp.proto). All are < 16, so every
// field key is one byte.
mod tag {
    // CheckRequest
    pub(super) const ATTRIBUTES: u8 = 1;
    // AttributeContext
    pub(super) const SOURCE: u8 = 1;
    pub(super) const DESTINATION: u8 = 2;
    pub(super) const REQUEST: u8 = 4;
    pub(super) const CONTEXT_EXTENSIONS: u8 = 10;
    pub(super) const METADATA_CONTEXT: u8 = 11;
    pub(super) const TLS_SESSION: u8 = 12;
    pub(super) const ROUTE_METADATA_CONTEXT: u8 = 13;
    // AttributeContext.Peer
    pub(super) const PEER_ADDRESS: u8 = 1;
    pub(super) const PEER_SERVICE: u8 = 2;
    pub(super) const PEER_PRINCIPAL: u8 = 4;
    // config.core.v3.Address (oneof) / SocketAddress
    pub(super) const ADDRESS_SOCKET_ADDRESS: u8 = 1;
    pub(super) const SOCKET_ADDRESS: u8 = 2;
    pub(super) const SOCKET_PORT_VALUE: u8 = 3;
    // AttributeContext.Request
    pub(super) const REQUEST_TIME: u8 = 1;
    pub(super) const REQUEST_HTTP: u8 = 2;
    // google.protobuf.Timestamp
    pub(super) const SECONDS: u8 = 1;
    pub(super) const NANOS: u8 = 2;
    // AttributeContext.HttpRequest
    pub(super) const HTTP_ID: u8 = 1;
    pub(super) const HTTP_METHOD: u8 = 2;
    pub(super) const HTTP_HEADERS: u8 = 3;
    pub(super) const HTTP_PATH: u8 = 4;
    pub(super) const HTTP_HOST: u8 = 5;
    pub(super) const HTTP_SCHEME: u8 = 6;
    pub(super) const HTTP_SIZE: u8 = 9;
    pub(super) const HTTP_PROTOCOL: u8 = 10;
    pub(super) const HTTP_BODY: u8 = 11;
    pub(super) const HTTP_RAW_BODY: u8 = 12;
    // map<string, string> entries
    pub(super) const MAP_KEY: u8 = 1;
    pub(super) const MAP_VALUE: u8 = 2;
    // AttributeContext.TlsSession
    pub(super) const TLS_SNI: u8 = 1;
}

const WIRE_VARINT: u8 = 0;
const WIRE_LEN: u8 = 2;

/// The protobuf wire bytes of the `CheckRequest` (no gRPC prefix), appended to `buf`.
pub fn encode_check_request(
    parts: &CheckRequestParts<'_>,
    body_settings: Option<&BodySettings>,
    buf: &mut BytesMut,
) {
    let plan = Plan::new(parts, body_settings);
    buf.reserve(plan.total);
    plan.write(buf);
}

/// One gRPC length-prefixed message (uncompressed) carrying the `CheckRequest`, appended to
/// `buf`: what the HTTP/2 request body of the Check call is. `buf` grows at most once.
pub fn encode_grpc_check_request(
    parts: &CheckRequestParts<'_>,
    body_settings: Option<&BodySettings>,
    buf: &mut BytesMut,
) -> Result<(), CheckError> {
    let plan = Plan::new(parts, body_settings);
    let len = u32::try_from(plan.total).map_err(|_| CheckError::Request("check request too large".into()))?;
    buf.reserve(GRPC_PREFIX_LEN + plan.total);
    buf.put_u8(0);
    buf.put_u32(len);
    plan.write(buf);
    Ok(())
}

/// The length of [`encode_check_request`]'s output (prost's `encoded_len()` of the struct).
pub fn check_request_len(parts: &CheckRequestParts<'_>, body_settings: Option<&BodySettings>) -> usize {
    Plan::new(parts, body_settings).total
}

/// Everything the writing pass needs that costs something to find out: the nested lengths,
/// the texts that are not in `parts` as bytes.
struct Plan<'p, 'a> {
    parts: &'p CheckRequestParts<'a>,
    /// The body bytes sent (at most `maxRequestBytes`), `partial`, `pack_as_bytes`.
    body: Option<(&'a [u8], bool, bool)>,
    id: Decimal,
    source_ip: IpText,
    destination_ip: IpText,
    /// First value of `x-envoy-downstream-service-cluster` (not joined, as `HeaderMap::get`).
    service: Option<&'a HeaderValue>,
    seconds: u64,
    nanos: u64,
    http_len: usize,
    time_len: usize,
    request_len: usize,
    source_socket_len: usize,
    source_address_len: usize,
    source_len: usize,
    destination_socket_len: usize,
    destination_address_len: usize,
    destination_len: usize,
    context_extensions_len: usize,
    tls_len: Option<usize>,
    attributes_len: usize,
    /// The whole `CheckRequest`.
    total: usize,
}

impl<'p, 'a> Plan<'p, 'a> {
    fn new(parts: &'p CheckRequestParts<'a>, body_settings: Option<&BodySettings>) -> Self {
        let body = check_body(parts, body_settings).map(|(body, len, partial)| {
            (
                body.bytes.get(..len).unwrap_or_default(),
                partial,
                body_settings.is_some_and(|s| s.pack_as_bytes),
            )
        });

        // HttpRequest.headers: the pseudo-headers, the client's headers, Envoy's partial-body
        // flag.
        let mut headers_len = map_entry_field_len(":authority".len(), parts.authority.len())
            + map_entry_field_len(":method".len(), parts.method.as_str().len())
            + map_entry_field_len(":path".len(), parts.path_and_query.len())
            + map_entry_field_len(":scheme".len(), parts.scheme.len());
        let mut service = None;
        for group in Groups::new(parts.headers) {
            if group.name.as_str() == SERVICE_CLUSTER_HEADER && service.is_none() {
                service = Some(group.first);
            }
            if !group.skipped() {
                headers_len += map_entry_field_len(group.name.as_str().len(), group.joined_len);
            }
        }
        if let Some((_, partial, _)) = body {
            headers_len += map_entry_field_len(PARTIAL_BODY_HEADER.len(), partial_value(partial).len());
        }

        let id = Decimal::new(parts.stream_id);
        let mut http_len = str_field_len(id.as_bytes().len())
            + str_field_len(parts.method.as_str().len())
            + headers_len
            + str_field_len(parts.path_and_query.len())
            + str_field_len(parts.authority.len())
            + str_field_len(parts.scheme.len())
            + str_field_len(protocol_name(parts.version).len());
        if let Some((bytes, _, _)) = body {
            http_len += varint_field_len(body_size(parts)) + str_field_len(bytes.len());
        }

        let ts = timestamp(parts.request_time);
        let (seconds, nanos) = (ts.seconds as u64, i64::from(ts.nanos) as u64);
        let time_len = varint_field_len(seconds) + varint_field_len(nanos);
        let request_len = message_field_len(time_len) + message_field_len(http_len);

        let source_ip = IpText::new(parts.source);
        let source_socket_len = socket_address_len(&source_ip, parts.source.port());
        let source_address_len = message_field_len(source_socket_len);
        let source_len = message_field_len(source_address_len)
            + str_field_len(service.map_or(0, HeaderValue::len))
            + str_field_len(parts.principal.map_or(0, str::len));

        let destination_ip = IpText::new(parts.destination);
        let destination_socket_len = socket_address_len(&destination_ip, parts.destination.port());
        let destination_address_len = message_field_len(destination_socket_len);
        let destination_len = message_field_len(destination_address_len);

        let context_extensions_len = context_extensions(parts.context_extensions)
            .map(|(k, v)| map_entry_field_len(k.len(), v.len()))
            .sum();
        let tls_len = sni(parts).map(|s| str_field_len(s.len()));

        let attributes_len = message_field_len(source_len)
            + message_field_len(destination_len)
            + message_field_len(request_len)
            + context_extensions_len
            + message_field_len(0)
            + tls_len.map_or(0, message_field_len)
            + message_field_len(0);
        let total = message_field_len(attributes_len);

        Self {
            parts,
            body,
            id,
            source_ip,
            destination_ip,
            service,
            seconds,
            nanos,
            http_len,
            time_len,
            request_len,
            source_socket_len,
            source_address_len,
            source_len,
            destination_socket_len,
            destination_address_len,
            destination_len,
            context_extensions_len,
            tls_len,
            attributes_len,
            total,
        }
    }

    /// Writes `self.total` bytes, fields in field-number order (as prost does).
    fn write(&self, buf: &mut BytesMut) {
        let parts = self.parts;
        #[cfg(debug_assertions)]
        let start = buf.len();

        put_message_key(buf, tag::ATTRIBUTES, self.attributes_len);

        // AttributeContext.source
        put_message_key(buf, tag::SOURCE, self.source_len);
        put_message_key(buf, tag::PEER_ADDRESS, self.source_address_len);
        put_message_key(buf, tag::ADDRESS_SOCKET_ADDRESS, self.source_socket_len);
        put_socket_address(buf, &self.source_ip, parts.source.port());
        if let Some(service) = self.service {
            put_sanitized_field(buf, tag::PEER_SERVICE, service.as_bytes());
        }
        if let Some(principal) = parts.principal {
            put_str_field(buf, tag::PEER_PRINCIPAL, principal.as_bytes());
        }

        // AttributeContext.destination
        put_message_key(buf, tag::DESTINATION, self.destination_len);
        put_message_key(buf, tag::PEER_ADDRESS, self.destination_address_len);
        put_message_key(buf, tag::ADDRESS_SOCKET_ADDRESS, self.destination_socket_len);
        put_socket_address(buf, &self.destination_ip, parts.destination.port());

        // AttributeContext.request
        put_message_key(buf, tag::REQUEST, self.request_len);
        put_message_key(buf, tag::REQUEST_TIME, self.time_len);
        put_varint_field(buf, tag::SECONDS, self.seconds);
        put_varint_field(buf, tag::NANOS, self.nanos);
        put_message_key(buf, tag::REQUEST_HTTP, self.http_len);
        self.write_http(buf);

        // AttributeContext.context_extensions
        if self.context_extensions_len > 0 {
            for (k, v) in context_extensions(parts.context_extensions) {
                put_map_entry(buf, tag::CONTEXT_EXTENSIONS, k.as_bytes(), v.as_bytes());
            }
        }
        // Present but empty, as `build_check_request` sets them.
        put_message_key(buf, tag::METADATA_CONTEXT, 0);
        if let (Some(len), Some(sni)) = (self.tls_len, sni(parts)) {
            put_message_key(buf, tag::TLS_SESSION, len);
            put_str_field(buf, tag::TLS_SNI, sni.as_bytes());
        }
        put_message_key(buf, tag::ROUTE_METADATA_CONTEXT, 0);

        #[cfg(debug_assertions)]
        debug_assert_eq!(
            buf.len() - start,
            self.total,
            "CheckRequest sizing and writing disagree"
        );
    }

    /// The fields of `AttributeContext.HttpRequest` (its key and length already written).
    fn write_http(&self, buf: &mut BytesMut) {
        let parts = self.parts;
        put_str_field(buf, tag::HTTP_ID, self.id.as_bytes());
        put_str_field(buf, tag::HTTP_METHOD, parts.method.as_str().as_bytes());

        // headers (map field 3): pseudo-headers, then the client's, then Envoy's partial-body
        // flag. No name repeats (HeaderMap names are unique and never pseudo-headers), so the
        // order does not matter to a decoder; it is `header_list`'s.
        put_map_entry(buf, tag::HTTP_HEADERS, b":authority", parts.authority.as_bytes());
        put_map_entry(
            buf,
            tag::HTTP_HEADERS,
            b":method",
            parts.method.as_str().as_bytes(),
        );
        put_map_entry(buf, tag::HTTP_HEADERS, b":path", parts.path_and_query.as_bytes());
        put_map_entry(buf, tag::HTTP_HEADERS, b":scheme", parts.scheme.as_bytes());
        // Two walks of the same sequence: `groups` looks ahead to size each name's entry,
        // `values` follows to write the values.
        let mut values = parts.headers.iter();
        for group in Groups::new(parts.headers) {
            let values = values.by_ref().take(group.count);
            if group.skipped() {
                values.for_each(drop);
                continue;
            }
            let name = group.name.as_str().as_bytes();
            put_message_key(
                buf,
                tag::HTTP_HEADERS,
                str_field_len(name.len()) + str_field_len(group.joined_len),
            );
            put_str_field(buf, tag::MAP_KEY, name);
            if group.joined_len > 0 {
                put_key(buf, tag::MAP_VALUE, WIRE_LEN);
                put_varint(buf, group.joined_len as u64);
                for (i, (_, value)) in values.enumerate() {
                    if i > 0 {
                        buf.put_u8(b',');
                    }
                    // Sanitizing each value equals sanitizing the joined bytes: `,` is ASCII,
                    // so no UTF-8 sequence spans two values.
                    put_sanitized(buf, value.as_bytes());
                }
            } else {
                values.for_each(drop);
            }
        }
        if let Some((_, partial, _)) = self.body {
            put_map_entry(
                buf,
                tag::HTTP_HEADERS,
                PARTIAL_BODY_HEADER.as_bytes(),
                partial_value(partial).as_bytes(),
            );
        }

        put_str_field(buf, tag::HTTP_PATH, parts.path_and_query.as_bytes());
        put_str_field(buf, tag::HTTP_HOST, parts.authority.as_bytes());
        put_str_field(buf, tag::HTTP_SCHEME, parts.scheme.as_bytes());
        if self.body.is_some() {
            put_varint_field(buf, tag::HTTP_SIZE, body_size(parts));
        }
        put_str_field(buf, tag::HTTP_PROTOCOL, protocol_name(parts.version).as_bytes());
        match self.body {
            Some((bytes, _, true)) => put_str_field(buf, tag::HTTP_RAW_BODY, bytes),
            Some((bytes, _, false)) => put_sanitized_field(buf, tag::HTTP_BODY, bytes),
            None => {}
        }
    }
}

/// The `x-envoy-auth-partial-body` value Envoy sends.
fn partial_value(partial: bool) -> &'static str {
    if partial { "true" } else { "false" }
}

/// `HttpRequest.size`: the whole body's length, not only the part sent.
fn body_size(parts: &CheckRequestParts<'_>) -> u64 {
    let len = parts.body.map_or(0, |b| b.bytes.len());
    u64::try_from(i64::try_from(len).unwrap_or(i64::MAX)).unwrap_or(u64::MAX)
}

fn sni<'a>(parts: &CheckRequestParts<'a>) -> Option<&'a str> {
    parts.sni.filter(|s| !s.is_empty())
}

/// The context extensions as the struct's `HashMap` holds them: for a repeated key the last
/// value wins, so earlier entries with the same key are skipped.
fn context_extensions(all: &[(String, String)]) -> impl Iterator<Item = (&String, &String)> {
    all.iter()
        .enumerate()
        .filter(move |(i, (k, _))| {
            !all.get(i + 1..)
                .unwrap_or_default()
                .iter()
                .any(|(later, _)| later == k)
        })
        .map(|(_, (k, v))| (k, v))
}

/// One header name of a `HeaderMap` with all its values: `HeaderMap::iter` yields the values
/// of a name one after the other.
struct Group<'a> {
    name: &'a HeaderName,
    first: &'a HeaderValue,
    count: usize,
    /// Length of the values joined with `,` (sanitizing never changes a length).
    joined_len: usize,
}

impl Group<'_> {
    /// `host` is folded into `:authority`; the client's partial-body flag never reaches the
    /// authorization service.
    fn skipped(&self) -> bool {
        *self.name == HOST || self.name.as_str() == PARTIAL_BODY_HEADER
    }
}

struct Groups<'a> {
    iter: Peekable<header::Iter<'a, HeaderValue>>,
}

impl<'a> Groups<'a> {
    fn new(headers: &'a http::HeaderMap) -> Self {
        Self {
            iter: headers.iter().peekable(),
        }
    }
}

impl<'a> Iterator for Groups<'a> {
    type Item = Group<'a>;

    fn next(&mut self) -> Option<Group<'a>> {
        let (name, first) = self.iter.next()?;
        let mut group = Group {
            name,
            first,
            count: 1,
            joined_len: first.len(),
        };
        // The values of one name share its key: a pointer comparison finds the group's end
        // without comparing names (the name comparison is only a fallback).
        while let Some((_, value)) = self
            .iter
            .next_if(|(next, _)| std::ptr::eq(*next, name) || *next == name)
        {
            group.count += 1;
            group.joined_len += 1 + value.len();
        }
        Some(group)
    }
}

/// An IP address as `IpAddr::to_string` writes it, without allocating.
enum IpText {
    Stack([u8; 64], usize),
    /// Never used: an IPv6 text is at most 45 bytes. Kept so a formatting surprise costs an
    /// allocation rather than a wrong address.
    Heap(String),
}

impl IpText {
    fn new(addr: SocketAddr) -> Self {
        let mut text = [0u8; 64];
        match addr.ip() {
            // The common case, by hand: `fmt` costs ~1,300 instructions for a dotted quad.
            IpAddr::V4(ip) => {
                let mut len = 0;
                let mut push = |b: u8| {
                    if let Some(slot) = text.get_mut(len) {
                        *slot = b;
                        len += 1;
                    }
                };
                for (i, octet) in ip.octets().into_iter().enumerate() {
                    if i > 0 {
                        push(b'.');
                    }
                    if octet >= 100 {
                        push(b'0' + octet / 100);
                    }
                    if octet >= 10 {
                        push(b'0' + octet / 10 % 10);
                    }
                    push(b'0' + octet % 10);
                }
                Self::Stack(text, len)
            }
            IpAddr::V6(ip) => {
                let mut rest: &mut [u8] = &mut text;
                match write!(rest, "{ip}") {
                    Ok(()) => {
                        let len = 64 - rest.len();
                        Self::Stack(text, len)
                    }
                    Err(_) => Self::Heap(ip.to_string()),
                }
            }
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Stack(text, len) => text.get(..*len).unwrap_or_default(),
            Self::Heap(s) => s.as_bytes(),
        }
    }
}

/// A `u64` in decimal, without allocating.
struct Decimal {
    digits: [u8; 20],
    start: usize,
}

impl Decimal {
    fn new(mut n: u64) -> Self {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        loop {
            start -= 1;
            if let Some(d) = digits.get_mut(start) {
                *d = b'0' + (n % 10) as u8;
            }
            n /= 10;
            if n == 0 {
                break;
            }
        }
        Self { digits, start }
    }

    fn as_bytes(&self) -> &[u8] {
        self.digits.get(self.start..).unwrap_or_default()
    }
}

/// `SocketAddress { protocol: TCP (0, so not written), address, port_value }`.
fn socket_address_len(ip: &IpText, port: u16) -> usize {
    str_field_len(ip.as_bytes().len()) + 1 + encoded_len_varint(u64::from(port))
}

fn put_socket_address(buf: &mut BytesMut, ip: &IpText, port: u16) {
    put_str_field(buf, tag::SOCKET_ADDRESS, ip.as_bytes());
    // A oneof member is written even when zero.
    put_key(buf, tag::SOCKET_PORT_VALUE, WIRE_VARINT);
    put_varint(buf, u64::from(port));
}

/// A `string`/`bytes` field: absent when empty (proto3).
fn str_field_len(len: usize) -> usize {
    if len == 0 { 0 } else { message_field_len(len) }
}

/// A present length-delimited field: key, length, content.
fn message_field_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// A scalar varint field: absent when zero (proto3).
fn varint_field_len(value: u64) -> usize {
    if value == 0 {
        0
    } else {
        1 + encoded_len_varint(value)
    }
}

/// One `map<string, string>` entry: an embedded message whose key and value are absent when
/// empty (prost's encoding).
fn map_entry_field_len(key_len: usize, value_len: usize) -> usize {
    message_field_len(str_field_len(key_len) + str_field_len(value_len))
}

/// A base-128 varint (prost's `encode_varint`, without a capacity check per byte).
fn put_varint(buf: &mut BytesMut, mut value: u64) {
    if value < 0x80 {
        buf.put_u8(value as u8);
        return;
    }
    let mut bytes = [0u8; 10];
    let mut len = 0;
    for slot in &mut bytes {
        len += 1;
        if value < 0x80 {
            *slot = value as u8;
            break;
        }
        *slot = (value as u8 & 0x7f) | 0x80;
        value >>= 7;
    }
    buf.put_slice(bytes.get(..len).unwrap_or_default());
}

fn put_key(buf: &mut BytesMut, tag: u8, wire_type: u8) {
    buf.put_u8(tag << 3 | wire_type);
}

fn put_message_key(buf: &mut BytesMut, tag: u8, len: usize) {
    put_key(buf, tag, WIRE_LEN);
    put_varint(buf, len as u64);
}

fn put_varint_field(buf: &mut BytesMut, tag: u8, value: u64) {
    if value != 0 {
        put_key(buf, tag, WIRE_VARINT);
        put_varint(buf, value);
    }
}

fn put_str_field(buf: &mut BytesMut, tag: u8, bytes: &[u8]) {
    if !bytes.is_empty() {
        put_message_key(buf, tag, bytes.len());
        buf.put_slice(bytes);
    }
}

/// A `string` field from bytes that may not be UTF-8 (`sanitize_utf8` while writing).
fn put_sanitized_field(buf: &mut BytesMut, tag: u8, bytes: &[u8]) {
    if !bytes.is_empty() {
        put_message_key(buf, tag, bytes.len());
        put_sanitized(buf, bytes);
    }
}

/// A map entry from strings (`&str` inputs: already UTF-8, nothing to sanitize).
fn put_map_entry(buf: &mut BytesMut, tag: u8, key: &[u8], value: &[u8]) {
    put_message_key(buf, tag, str_field_len(key.len()) + str_field_len(value.len()));
    put_str_field(buf, tag::MAP_KEY, key);
    put_str_field(buf, tag::MAP_VALUE, value);
}

/// Envoy `MessageUtil::sanitizeUtf8String` (as `check::sanitize_utf8`): every byte that breaks
/// UTF-8 becomes `!`, so the output is exactly as long as the input. Valid input (the common
/// case) is validated once and copied.
fn put_sanitized(buf: &mut BytesMut, mut rest: &[u8]) {
    loop {
        match std::str::from_utf8(rest) {
            Ok(_) => {
                buf.put_slice(rest);
                return;
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                buf.put_slice(valid);
                buf.put_u8(b'!');
                rest = after.get(1..).unwrap_or_default();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV6};
    use std::time::{Duration, SystemTime};

    use authgate_proto::auth::CheckRequest;
    use http::{HeaderMap, Method, Version};
    use prost::Message as _;

    use super::*;
    use crate::check::{BufferedBody, build_check_request};

    /// Owns everything a `CheckRequestParts` borrows.
    #[derive(Clone)]
    struct Case {
        method: Method,
        path: String,
        authority: String,
        scheme: &'static str,
        version: Version,
        headers: HeaderMap,
        source: SocketAddr,
        destination: SocketAddr,
        stream_id: u64,
        time: SystemTime,
        body: Option<BufferedBody>,
        settings: Option<BodySettings>,
        principal: Option<String>,
        sni: Option<String>,
        extensions: Vec<(String, String)>,
    }

    fn base() -> Case {
        let mut headers = HeaderMap::new();
        headers.insert("user-agent", HeaderValue::from_static("curl/7.88.1"));
        headers.insert("accept", HeaderValue::from_static("*/*"));
        headers.insert(
            "x-request-id",
            HeaderValue::from_static("6f1c4a52-9d3e-4b7a-8c21-0e5f9a7b3d44"),
        );
        headers.insert("host", HeaderValue::from_static("example.com:8080"));
        Case {
            method: Method::GET,
            path: "/productpage?id=1".into(),
            authority: "example.com:8080".into(),
            scheme: "http",
            version: Version::HTTP_11,
            headers,
            source: "10.1.2.3:41234".parse().expect("addr"),
            destination: "127.0.0.1:8080".parse().expect("addr"),
            stream_id: 7,
            time: SystemTime::UNIX_EPOCH + Duration::new(1_764_000_000, 123_456_789),
            body: None,
            settings: None,
            principal: None,
            sni: None,
            extensions: Vec::new(),
        }
    }

    fn with(f: impl FnOnce(&mut Case)) -> Case {
        let mut c = base();
        f(&mut c);
        c
    }

    fn add(c: &mut Case, name: &'static str, value: &[u8]) {
        c.headers
            .append(name, HeaderValue::from_bytes(value).expect("valid header value"));
    }

    fn body(c: &mut Case, bytes: &[u8], partial: bool, max: u32, pack_as_bytes: bool) {
        c.body = Some(BufferedBody {
            bytes: bytes::Bytes::copy_from_slice(bytes),
            partial,
        });
        c.settings = Some(BodySettings {
            max_request_bytes: max,
            allow_partial_message: true,
            pack_as_bytes,
        });
    }

    /// decode(direct bytes) == build_check_request, lengths agree with prost, and the framed
    /// variant is the prefix plus the same bytes, appended after what the buffer held.
    fn assert_equivalent(name: &str, c: &Case) {
        let parts = CheckRequestParts {
            method: &c.method,
            path_and_query: &c.path,
            authority: &c.authority,
            scheme: c.scheme,
            version: c.version,
            headers: &c.headers,
            source: c.source,
            destination: c.destination,
            stream_id: c.stream_id,
            request_time: c.time,
            body: c.body.as_ref(),
            principal: c.principal.as_deref(),
            sni: c.sni.as_deref(),
            context_extensions: &c.extensions,
        };
        let settings = c.settings.as_ref();
        let expected = build_check_request(&parts, settings);

        let mut direct = BytesMut::new();
        encode_check_request(&parts, settings, &mut direct);
        assert_eq!(
            direct.len(),
            expected.encoded_len(),
            "{name}: encoded length vs prost"
        );
        assert_eq!(
            check_request_len(&parts, settings),
            direct.len(),
            "{name}: check_request_len"
        );
        let decoded = CheckRequest::decode(direct.as_ref())
            .unwrap_or_else(|e| panic!("{name}: direct bytes do not decode: {e}"));
        assert_eq!(
            decoded, expected,
            "{name}: decoded direct bytes vs build_check_request"
        );

        let mut framed = BytesMut::from(&b"xy"[..]);
        encode_grpc_check_request(&parts, settings, &mut framed).expect("frame");
        assert_eq!(framed.get(..2), Some(&b"xy"[..]), "{name}: appended");
        assert_eq!(framed.get(2), Some(&0), "{name}: uncompressed flag");
        let len = framed
            .get(3..7)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
        assert_eq!(len, Some(direct.len()), "{name}: gRPC length prefix");
        assert_eq!(framed.get(7..), Some(direct.as_ref()), "{name}: framed message");
    }

    fn table() -> Vec<(&'static str, Case)> {
        let big_200 = vec![b'a'; 200];
        let big_20k = vec![b'b'; 20_000];
        let big_3m = vec![b'c'; 3 << 20];
        vec![
            ("fixture", base()),
            ("no headers at all", with(|c| c.headers = HeaderMap::new())),
            (
                "empty pseudo values",
                with(|c| {
                    c.authority.clear();
                    c.path.clear();
                    c.scheme = "";
                }),
            ),
            (
                "repeated headers joined",
                with(|c| {
                    add(c, "accept", b"text/html");
                    add(c, "accept", b"application/json");
                    add(c, "cookie", b"a=1");
                    add(c, "x-multi", b"");
                    add(c, "cookie", b"b=2");
                    add(c, "x-multi", b"");
                    add(c, "x-multi", b"z");
                }),
            ),
            (
                "empty values",
                with(|c| {
                    add(c, "x-empty", b"");
                    add(c, "x-two-empty", b"");
                    add(c, "x-two-empty", b"");
                }),
            ),
            (
                "invalid UTF-8 in values",
                with(|c| {
                    add(c, "x-bad", b"a\xffb\xfe\xfdc");
                    add(c, "x-trunc", b"\xe2\x82");
                    add(c, "x-lead-end", b"ab\xc3");
                    add(c, "x-lead-end", b"\xa9cd");
                    add(c, "x-utf8", "é€😀".as_bytes());
                    add(c, "x-lone-cont", b"\x80\x80\x80");
                    add(c, "x-overlong", b"\xc0\xaf\xed\xa0\x80\xf4\x90\x80\x80");
                }),
            ),
            (
                "non-ASCII (valid) authority, path, principal, sni",
                with(|c| {
                    c.authority = "exämple.com".into();
                    c.path = "/päth?q=ü".into();
                    c.principal = Some("spiffe://cluster.local/ns/ä/sa/b".into());
                    c.sni = Some("exämple.com".into());
                }),
            ),
            (
                "host differs from authority, is dropped",
                with(|c| {
                    c.headers.insert("host", HeaderValue::from_static("other:1"));
                    add(c, "host", b"third");
                }),
            ),
            (
                "IPv6 peers",
                with(|c| {
                    c.source = "[2001:db8::1]:443".parse().expect("addr");
                    c.destination = "[::1]:8443".parse().expect("addr");
                }),
            ),
            (
                "IPv4-mapped, scoped and full IPv6, port 0",
                with(|c| {
                    c.source =
                        SocketAddr::new(IpAddr::V6(Ipv4Addr::new(192, 168, 10, 20).to_ipv6_mapped()), 0);
                    c.destination = SocketAddr::V6(SocketAddrV6::new(
                        Ipv6Addr::new(0xfe80, 0, 0, 0, 0x1234, 0x5678, 0x9abc, 0xdef0),
                        65535,
                        7,
                        3,
                    ));
                }),
            ),
            (
                "longest IPv6 text",
                with(|c| {
                    c.source = SocketAddr::new(
                        IpAddr::V6(Ipv6Addr::new(
                            0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff,
                        )),
                        65535,
                    );
                    c.destination = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(255, 255, 255, 255)), 1);
                }),
            ),
            (
                "unspecified addresses",
                with(|c| {
                    c.source = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
                    c.destination = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0);
                }),
            ),
            ("full body", with(|c| body(c, b"hello=world", false, 1024, false))),
            (
                "partial body (buffering stopped)",
                with(|c| body(c, b"hello", true, 1024, false)),
            ),
            (
                "body cut at maxRequestBytes",
                with(|c| body(c, b"0123456789abcdef", false, 4, false)),
            ),
            (
                "body with maxRequestBytes 0",
                with(|c| body(c, b"0123", false, 0, false)),
            ),
            ("empty body", with(|c| body(c, b"", false, 1024, false))),
            (
                "invalid UTF-8 body, sanitized",
                with(|c| body(c, b"ok\xff\xc3(\xe2\x82", false, 1024, false)),
            ),
            (
                "invalid UTF-8 body, packed as bytes",
                with(|c| body(c, b"ok\xff\xc3(\xe2\x82\x00", false, 1024, true)),
            ),
            ("packed body cut", with(|c| body(c, b"0123456789", true, 3, true))),
            ("empty packed body", with(|c| body(c, b"", false, 1024, true))),
            (
                "body settings without a buffered body",
                with(|c| {
                    body(c, b"x", false, 10, false);
                    c.body = None;
                }),
            ),
            (
                "buffered body without body settings",
                with(|c| {
                    body(c, b"x", false, 10, false);
                    c.settings = None;
                }),
            ),
            (
                "client partial-body header, no body",
                with(|c| add(c, "x-envoy-auth-partial-body", b"true")),
            ),
            (
                "client partial-body header, body sent",
                with(|c| {
                    add(c, "x-envoy-auth-partial-body", b"true");
                    add(c, "x-envoy-auth-partial-body", b"also");
                    body(c, b"abc", false, 1024, false);
                }),
            ),
            (
                "client partial-body header, partial packed body",
                with(|c| {
                    add(c, "x-envoy-auth-partial-body", b"false");
                    body(c, b"abcdef", false, 2, true);
                }),
            ),
            (
                "principal and sni",
                with(|c| {
                    c.principal = Some("spiffe://cluster.local/ns/default/sa/client".into());
                    c.sni = Some("example.com".into());
                    c.scheme = "https";
                }),
            ),
            (
                "empty principal and sni",
                with(|c| {
                    c.principal = Some(String::new());
                    c.sni = Some(String::new());
                }),
            ),
            (
                "context extensions",
                with(|c| {
                    c.extensions = vec![
                        ("virtual_host".into(), "bookinfo".into()),
                        ("empty-value".into(), String::new()),
                        (String::new(), "empty-key".into()),
                        ("dup".into(), "first".into()),
                        ("dup".into(), "last".into()),
                    ];
                }),
            ),
            (
                "context extension, only an empty entry",
                with(|c| c.extensions = vec![(String::new(), String::new())]),
            ),
            (
                "downstream service cluster",
                with(|c| add(c, "x-envoy-downstream-service-cluster", b"frontend")),
            ),
            (
                "downstream service cluster repeated and invalid",
                with(|c| {
                    add(c, "x-envoy-downstream-service-cluster", b"fr\xffnt");
                    add(c, "x-envoy-downstream-service-cluster", b"second");
                }),
            ),
            (
                "downstream service cluster empty",
                with(|c| add(c, "x-envoy-downstream-service-cluster", b"")),
            ),
            ("HTTP/0.9", with(|c| c.version = Version::HTTP_09)),
            ("HTTP/1.0", with(|c| c.version = Version::HTTP_10)),
            ("HTTP/2", with(|c| c.version = Version::HTTP_2)),
            ("HTTP/3", with(|c| c.version = Version::HTTP_3)),
            (
                "methods",
                with(|c| c.method = Method::from_bytes(b"PURGE").expect("method")),
            ),
            ("CONNECT", with(|c| c.method = Method::CONNECT)),
            ("stream id 0", with(|c| c.stream_id = 0)),
            ("stream id max", with(|c| c.stream_id = u64::MAX)),
            ("time at the epoch", with(|c| c.time = SystemTime::UNIX_EPOCH)),
            (
                "time before the epoch",
                with(|c| c.time = SystemTime::UNIX_EPOCH - Duration::from_secs(5)),
            ),
            (
                "nanos only",
                with(|c| c.time = SystemTime::UNIX_EPOCH + Duration::from_nanos(1)),
            ),
            ("now", with(|c| c.time = SystemTime::now())),
            ("header value > 127 bytes", with(|c| add(c, "x-big", &big_200))),
            (
                "header value > 16383 bytes",
                with(|c| {
                    add(c, "x-big", &big_20k);
                    add(c, "x-big", &big_200);
                }),
            ),
            (
                "header value > 2 MiB (4-byte lengths at every level)",
                with(|c| add(c, "x-huge", &big_3m)),
            ),
            (
                "big path and body",
                with(|c| {
                    c.path = format!("/{}", "p".repeat(20_000));
                    body(c, &big_20k, false, 1 << 20, false);
                }),
            ),
            (
                "everything",
                with(|c| {
                    c.version = Version::HTTP_2;
                    c.scheme = "https";
                    c.source = "[2001:db8::42]:50000".parse().expect("addr");
                    add(c, "x-envoy-downstream-service-cluster", b"frontend");
                    add(c, "x-envoy-auth-partial-body", b"client");
                    add(c, "cookie", b"a=\xff");
                    add(c, "cookie", b"b=2");
                    c.principal = Some("spiffe://x".into());
                    c.sni = Some("example.com".into());
                    c.extensions = vec![("k".into(), "v".into())];
                    body(c, b"{\"a\":1}", true, 1024, false);
                }),
            ),
        ]
    }

    #[test]
    fn direct_encoding_equals_the_struct() {
        for (name, case) in table() {
            assert_equivalent(name, &case);
        }
    }

    /// A small deterministic generator (xorshift64*): no dependency for a property test.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> usize {
            (self.next() % n) as usize
        }

        fn bytes(&mut self, max: u64, alphabet: &[u8]) -> Vec<u8> {
            let len = self.below(max + 1);
            (0..len)
                .map(|_| {
                    alphabet
                        .get(self.below(alphabet.len() as u64))
                        .copied()
                        .unwrap_or(b'x')
                })
                .collect()
        }
    }

    #[test]
    fn random_requests_encode_like_the_struct() {
        const NAMES: &[&str] = &[
            "accept",
            "cookie",
            "host",
            "x-envoy-auth-partial-body",
            "x-envoy-downstream-service-cluster",
            "x-a",
            "x-b",
            "user-agent",
            "content-type",
        ];
        // Header-value-legal bytes, biased towards the ones that make UTF-8 interesting.
        let alphabet: Vec<u8> = b"az09 ,;=/\t!~"
            .iter()
            .copied()
            .chain([
                0x80, 0xbf, 0xc2, 0xc3, 0xa9, 0xe2, 0x82, 0xac, 0xed, 0xa0, 0xf0, 0x9f, 0x98, 0xff,
            ])
            .collect();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for i in 0..3000 {
            let mut c = base();
            c.headers.clear();
            for _ in 0..rng.below(12) {
                let name = NAMES.get(rng.below(NAMES.len() as u64)).copied().unwrap_or("x-a");
                let max = if rng.below(20) == 0 { 400 } else { 12 };
                let value = rng.bytes(max, &alphabet);
                add(&mut c, name, &value);
            }
            c.version = [Version::HTTP_10, Version::HTTP_11, Version::HTTP_2][rng.below(3)];
            if rng.below(2) == 0 {
                let raw = rng.bytes(40, &alphabet);
                body(
                    &mut c,
                    &raw,
                    rng.below(2) == 0,
                    rng.below(50) as u32,
                    rng.below(2) == 0,
                );
            }
            if rng.below(3) == 0 {
                c.source = SocketAddr::new(
                    IpAddr::V6(Ipv6Addr::from(
                        u128::from(rng.next()) << 64 | u128::from(rng.next()),
                    )),
                    rng.below(65536) as u16,
                );
            }
            c.principal = [None, Some(String::new()), Some("p".into())][rng.below(3)].clone();
            c.sni = [None, Some(String::new()), Some("s.example".into())][rng.below(3)].clone();
            c.stream_id = rng.next() >> rng.below(64);
            for _ in 0..rng.below(3) {
                c.extensions.push((
                    ["a", "b", ""][rng.below(3)].to_owned(),
                    ["1", ""][rng.below(2)].to_owned(),
                ));
            }
            assert_equivalent(&format!("random case {i}"), &c);
        }
    }

    #[test]
    fn sanitizing_while_writing_matches_sanitize_utf8() {
        for input in [
            &b""[..],
            b"ok",
            b"a\xffb\xfe\xfdc",
            "é".as_bytes(),
            b"\xc3",
            b"\xe2\x82",
            b"\xe2\x82(",
            b"\xf0\x9f\x98",
            b"\xf0\x9f\x98\x80",
            b"\xed\xa0\x80",
        ] {
            let mut buf = BytesMut::new();
            put_sanitized(&mut buf, input);
            assert_eq!(
                buf.as_ref(),
                crate::check::sanitize_utf8(input).as_bytes(),
                "{input:?}"
            );
        }
    }

    #[test]
    fn decimal_and_ip_texts() {
        for n in [0, 1, 9, 10, 99, 100, 12_345, u64::from(u32::MAX), u64::MAX] {
            assert_eq!(Decimal::new(n).as_bytes(), n.to_string().as_bytes());
        }
        for addr in ["1.2.3.4:1", "[::]:1", "[::ffff:1.2.3.4]:1", "[1:2:3:4:5:6:7:8]:1"] {
            let addr: SocketAddr = addr.parse().expect("addr");
            assert_eq!(IpText::new(addr).as_bytes(), addr.ip().to_string().as_bytes());
        }
        for octet in 0..=255u8 {
            for ip in [
                Ipv4Addr::new(octet, 0, 9, 255),
                Ipv4Addr::new(10, octet, 100, 99),
                Ipv4Addr::new(255, 1, octet, 0),
                Ipv4Addr::new(0, 199, 20, octet),
            ] {
                let addr = SocketAddr::new(IpAddr::V4(ip), 1);
                assert_eq!(IpText::new(addr).as_bytes(), ip.to_string().as_bytes());
            }
        }
    }

    #[test]
    fn varints_match_prost() {
        let mut values = vec![
            0,
            1,
            127,
            128,
            255,
            300,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ];
        values.extend((0..64).map(|shift| 1u64 << shift));
        values.extend((1..64).map(|shift| (1u64 << shift) - 1));
        for v in values {
            let (mut ours, mut theirs) = (BytesMut::new(), BytesMut::new());
            put_varint(&mut ours, v);
            prost::encoding::encode_varint(v, &mut theirs);
            assert_eq!(ours, theirs, "{v}");
        }
    }
}
