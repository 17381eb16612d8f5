//! `AttributeContext` in the compact protobuf text format, which the Go sample returns in
//! `x-ext-authz-check-received` (`request.GetAttributes().String()`).
//!
//! prost has no reflection, so each message the check request can carry is written out by hand,
//! following Go's `prototext` rules: fields in declaration order, unset fields omitted (set
//! messages and oneof members always shown), map entries sorted by key, Go's string escaping.
//! Go randomizes the spacing of this format on purpose, so nobody may compare it byte for byte;
//! we keep one space between fields.

use std::collections::HashMap;
use std::fmt::{Display, Write as _};

use authgate_proto::auth::AttributeContext;
use authgate_proto::auth::attribute_context::{HttpRequest, Peer, Request};
use authgate_proto::core::address::Address as AddressKind;
use authgate_proto::core::envoy_internal_address::AddressNameSpecifier;
use authgate_proto::core::socket_address::{PortSpecifier, Protocol};
use authgate_proto::core::{Address, Metadata, SocketAddress};
use envoy_types::pb::google::protobuf::value::Kind;
use envoy_types::pb::google::protobuf::{Struct, Value};

pub(crate) fn attributes(attributes: &AttributeContext) -> String {
    let mut text = Text::default();
    let a = attributes;
    text.message("source", a.source.as_ref(), peer);
    text.message("destination", a.destination.as_ref(), peer);
    text.message("request", a.request.as_ref(), request);
    text.map("context_extensions", &a.context_extensions, Text::string_value);
    text.message("metadata_context", a.metadata_context.as_ref(), metadata);
    text.message(
        "route_metadata_context",
        a.route_metadata_context.as_ref(),
        metadata,
    );
    text.message("tls_session", a.tls_session.as_ref(), |t, s| {
        t.string("sni", &s.sni)
    });
    text.out
}

fn peer(t: &mut Text, peer: &Peer) {
    t.message("address", peer.address.as_ref(), address);
    t.string("service", &peer.service);
    t.map("labels", &peer.labels, Text::string_value);
    t.string("principal", &peer.principal);
    t.string("certificate", &peer.certificate);
}

fn address(t: &mut Text, address: &Address) {
    match &address.address {
        Some(AddressKind::SocketAddress(socket)) => {
            t.message("socket_address", Some(socket), socket_address);
        }
        Some(AddressKind::Pipe(pipe)) => t.message("pipe", Some(pipe), |t, pipe| {
            t.string("path", &pipe.path);
            t.scalar("mode", pipe.mode);
        }),
        Some(AddressKind::EnvoyInternalAddress(internal)) => {
            t.message("envoy_internal_address", Some(internal), |t, internal| {
                if let Some(AddressNameSpecifier::ServerListenerName(name)) = &internal.address_name_specifier
                {
                    t.quoted("server_listener_name", name.as_bytes());
                }
                t.string("endpoint_id", &internal.endpoint_id);
            });
        }
        None => {}
    }
}

fn socket_address(t: &mut Text, socket: &SocketAddress) {
    if socket.protocol != 0 {
        // Enums print by name; an unknown number prints as itself.
        let name = Protocol::try_from(socket.protocol).map(|p| p.as_str_name());
        match name {
            Ok(name) => t.field("protocol", name),
            Err(_) => t.field("protocol", socket.protocol),
        }
    }
    t.string("address", &socket.address);
    match &socket.port_specifier {
        Some(PortSpecifier::PortValue(port)) => t.field("port_value", port),
        Some(PortSpecifier::NamedPort(name)) => t.quoted("named_port", name.as_bytes()),
        None => {}
    }
    t.string("resolver_name", &socket.resolver_name);
    t.scalar("ipv4_compat", socket.ipv4_compat);
    t.string("network_namespace_filepath", &socket.network_namespace_filepath);
}

fn request(t: &mut Text, request: &Request) {
    t.message("time", request.time.as_ref(), |t, time| {
        t.scalar("seconds", time.seconds);
        t.scalar("nanos", time.nanos);
    });
    t.message("http", request.http.as_ref(), http_request);
}

fn http_request(t: &mut Text, http: &HttpRequest) {
    t.string("id", &http.id);
    t.string("method", &http.method);
    t.map("headers", &http.headers, Text::string_value);
    t.message("header_map", http.header_map.as_ref(), |t, map| {
        for header in &map.headers {
            t.message("headers", Some(header), |t, header| {
                t.string("key", &header.key);
                t.string("value", &header.value);
                t.bytes("raw_value", &header.raw_value);
            });
        }
    });
    t.string("path", &http.path);
    t.string("host", &http.host);
    t.string("scheme", &http.scheme);
    t.string("query", &http.query);
    t.string("fragment", &http.fragment);
    t.scalar("size", http.size);
    t.string("protocol", &http.protocol);
    t.string("body", &http.body);
    t.bytes("raw_body", &http.raw_body);
}

fn metadata(t: &mut Text, metadata: &Metadata) {
    t.map("filter_metadata", &metadata.filter_metadata, |t, s| {
        t.message("value", Some(s), structure);
    });
    t.map(
        "typed_filter_metadata",
        &metadata.typed_filter_metadata,
        |t, any| {
            t.message("value", Some(any), |t, any| {
                t.string("type_url", &any.type_url);
                t.bytes("value", &any.value);
            });
        },
    );
}

fn structure(t: &mut Text, structure: &Struct) {
    t.map("fields", &structure.fields, |t, v| {
        t.message("value", Some(v), dynamic_value)
    });
}

fn dynamic_value(t: &mut Text, value: &Value) {
    match &value.kind {
        Some(Kind::NullValue(_)) => t.field("null_value", "NULL_VALUE"),
        Some(Kind::NumberValue(n)) => t.field("number_value", n),
        Some(Kind::StringValue(s)) => t.quoted("string_value", s.as_bytes()),
        Some(Kind::BoolValue(b)) => t.field("bool_value", b),
        Some(Kind::StructValue(s)) => t.message("struct_value", Some(s), structure),
        Some(Kind::ListValue(list)) => t.message("list_value", Some(list), |t, list| {
            for v in &list.values {
                t.message("values", Some(v), dynamic_value);
            }
        }),
        None => {}
    }
}

/// The text being written, and whether the next field needs a separating space.
#[derive(Default)]
struct Text {
    out: String,
    after_field: bool,
}

impl Text {
    fn name(&mut self, name: &str) {
        if self.after_field {
            self.out.push(' ');
        }
        self.out.push_str(name);
        self.out.push(':');
        self.after_field = true;
    }

    /// A field printed whatever its value (oneof members, map entries, enum names).
    fn field(&mut self, name: &str, value: impl Display) {
        self.name(name);
        let _ = write!(self.out, "{value}");
    }

    /// A proto3 scalar: omitted when it holds the default value.
    fn scalar<T: Display + Default + PartialEq>(&mut self, name: &str, value: T) {
        if value != T::default() {
            self.field(name, value);
        }
    }

    fn string(&mut self, name: &str, value: &str) {
        self.bytes(name, value.as_bytes());
    }

    fn bytes(&mut self, name: &str, value: &[u8]) {
        if !value.is_empty() {
            self.quoted(name, value);
        }
    }

    /// Go's text-format string: quotes, `\"` `\\` `\n` `\r` `\t`, other control bytes and
    /// invalid UTF-8 as `\xHH`, C1 controls as `\uHHHH`, every other character as itself.
    fn quoted(&mut self, name: &str, value: &[u8]) {
        self.name(name);
        self.out.push('"');
        for chunk in value.utf8_chunks() {
            for c in chunk.valid().chars() {
                let _ = match c {
                    '"' | '\\' => write!(self.out, "\\{c}"),
                    '\n' => write!(self.out, "\\n"),
                    '\r' => write!(self.out, "\\r"),
                    '\t' => write!(self.out, "\\t"),
                    '\0'..='\x1f' | '\x7f' => write!(self.out, "\\x{:02x}", u32::from(c)),
                    '\u{80}'..='\u{9f}' => write!(self.out, "\\u{:04x}", u32::from(c)),
                    c => write!(self.out, "{c}"),
                };
            }
            for byte in chunk.invalid() {
                let _ = write!(self.out, "\\x{byte:02x}");
            }
        }
        self.out.push('"');
    }

    /// A map value that is a string: shown even when empty, as Go does inside map entries.
    fn string_value(&mut self, value: &String) {
        self.quoted("value", value.as_bytes());
    }

    /// `name:{...}` when the message is set, even if all its fields are unset.
    fn message<M>(&mut self, name: &str, message: Option<&M>, body: impl FnOnce(&mut Self, &M)) {
        let Some(message) = message else { return };
        self.name(name);
        self.out.push('{');
        self.after_field = false;
        body(self, message);
        self.out.push('}');
        self.after_field = true;
    }

    /// Repeated `name:{key:"k" value:...}` entries, sorted by key.
    fn map<V>(&mut self, name: &str, map: &HashMap<String, V>, value: impl Fn(&mut Self, &V)) {
        let mut entries: Vec<_> = map.iter().collect();
        entries.sort_unstable_by_key(|(key, _)| *key);
        for (key, v) in entries {
            self.message(name, Some(v), |t, v| {
                t.quoted("key", key.as_bytes());
                value(t, v);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use authgate_proto::core::socket_address::PortSpecifier;

    #[test]
    fn renders_a_typical_check() {
        let mut http = HttpRequest {
            method: "GET".into(),
            path: "/productpage".into(),
            host: "bookinfo.example".into(),
            ..Default::default()
        };
        http.headers.insert("x-ext-authz".into(), "allow".into());
        http.headers.insert(":method".into(), "GET".into());
        let attributes = AttributeContext {
            source: Some(Peer {
                address: Some(Address {
                    address: Some(AddressKind::SocketAddress(SocketAddress {
                        address: "10.0.0.1".into(),
                        port_specifier: Some(PortSpecifier::PortValue(4321)),
                        ..Default::default()
                    })),
                }),
                principal: "spiffe://cluster.local/ns/default/sa/a".into(),
                ..Default::default()
            }),
            request: Some(Request {
                http: Some(http),
                ..Default::default()
            }),
            tls_session: Some(Default::default()),
            ..Default::default()
        };
        assert_eq!(
            super::attributes(&attributes),
            "source:{address:{socket_address:{address:\"10.0.0.1\" port_value:4321}} \
             principal:\"spiffe://cluster.local/ns/default/sa/a\"} \
             request:{http:{method:\"GET\" headers:{key:\":method\" value:\"GET\"} \
             headers:{key:\"x-ext-authz\" value:\"allow\"} path:\"/productpage\" \
             host:\"bookinfo.example\"}} tls_session:{}"
        );
    }

    #[test]
    fn escapes_like_go() {
        let mut text = Text::default();
        text.quoted("s", b"a\"b\\c\nd\x01\x7f\xc2\x85\xffh\xc3\xa9");
        assert_eq!(text.out, r#"s:"a\"b\\c\nd\x01\x7f\u0085\xffhé""#);
    }

    #[test]
    fn empty_attributes_render_empty() {
        assert_eq!(super::attributes(&AttributeContext::default()), "");
    }
}
