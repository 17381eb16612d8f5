//! Building scripted `CheckResponse`s, and flattening a received `CheckRequest` into
//! `field path → value` pairs that compare and print well.

use std::collections::BTreeMap;

use authgate_proto::auth::check_response::HttpResponse;
use authgate_proto::auth::{CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse};
use authgate_proto::core::header_value_option::HeaderAppendAction;
use authgate_proto::core::{Address, HeaderValue, HeaderValueOption, QueryParameter, address};
use authgate_proto::http_status::HttpStatus;
use authgate_proto::rpc;
use envoy_types::pb::google::protobuf::BoolValue;

/// A header entry with neither `append` nor `append_action` set.
pub fn header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value: value.to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A header entry with the legacy `append` flag set to `append`.
// `append` is deprecated in the proto, but servers still send it and Envoy still honours it.
#[allow(deprecated)]
pub fn header_append(key: &str, value: &str, append: bool) -> HeaderValueOption {
    HeaderValueOption {
        append: Some(BoolValue { value: append }),
        ..header(key, value)
    }
}

/// A header entry with `append_action` (and no `append`).
pub fn header_action(key: &str, value: &str, action: HeaderAppendAction) -> HeaderValueOption {
    HeaderValueOption {
        append_action: action.into(),
        ..header(key, value)
    }
}

pub fn query(key: &str, value: &str) -> QueryParameter {
    QueryParameter {
        key: key.to_owned(),
        value: value.to_owned(),
    }
}

fn status(code: tonic::Code) -> Option<rpc::Status> {
    Some(rpc::Status {
        code: code.into(),
        ..Default::default()
    })
}

/// `status: OK` with an `ok_response` holding these upstream headers.
pub fn ok(headers: Vec<HeaderValueOption>) -> CheckResponse {
    ok_with(OkHttpResponse {
        headers,
        ..Default::default()
    })
}

/// `status: OK` with this `ok_response`.
pub fn ok_with(ok: OkHttpResponse) -> CheckResponse {
    CheckResponse {
        status: status(tonic::Code::Ok),
        http_response: Some(HttpResponse::OkResponse(ok)),
        ..Default::default()
    }
}

/// A denial with gRPC `code`, and a `denied_response` when `http_status`, `headers` or `body`
/// say anything.
pub fn denied(
    code: tonic::Code,
    http_status: Option<u16>,
    headers: Vec<HeaderValueOption>,
    body: &str,
) -> CheckResponse {
    let denied = DeniedHttpResponse {
        status: http_status.map(|c| HttpStatus { code: i32::from(c) }),
        headers,
        body: body.to_owned(),
    };
    CheckResponse {
        status: status(code),
        http_response: Some(HttpResponse::DeniedResponse(denied)),
        ..Default::default()
    }
}

/// A non-OK status with no `http_response` at all.
pub fn bare_status(code: tonic::Code) -> CheckResponse {
    CheckResponse {
        status: status(code),
        ..Default::default()
    }
}

/// The `error_response` variant (Envoy 1.37+).
pub fn error_response(
    code: tonic::Code,
    http_status: Option<u16>,
    headers: Vec<HeaderValueOption>,
    body: &str,
) -> CheckResponse {
    let resp = DeniedHttpResponse {
        status: http_status.map(|c| HttpStatus { code: i32::from(c) }),
        headers,
        body: body.to_owned(),
    };
    CheckResponse {
        status: status(code),
        http_response: Some(HttpResponse::ErrorResponse(resp)),
        ..Default::default()
    }
}

/// Stand-ins for values that differ between any two runs by nature.
pub const PORT: &str = "<port>";
pub const SET: &str = "<set>";

/// Flattens a `CheckRequest` into `attributes.…` field paths. Run-specific values (ephemeral
/// ports, stream ids, request times, request ids) are replaced by stand-ins so two gateways
/// that behave alike produce equal maps. Empty/default fields are left out.
pub fn flatten(req: &CheckRequest) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        if !v.is_empty() {
            out.insert(k.to_owned(), v);
        }
    };
    let Some(a) = &req.attributes else {
        put("attributes", "<absent>".into());
        return out;
    };
    for (side, peer) in [("source", &a.source), ("destination", &a.destination)] {
        let Some(p) = peer else { continue };
        let (addr, port) = address_parts(p.address.as_ref());
        put(&format!("attributes.{side}.address"), addr);
        put(&format!("attributes.{side}.port"), port);
        put(&format!("attributes.{side}.service"), p.service.clone());
        put(&format!("attributes.{side}.principal"), p.principal.clone());
        put(&format!("attributes.{side}.certificate"), p.certificate.clone());
        for (k, v) in &p.labels {
            put(&format!("attributes.{side}.labels[{k}]"), v.clone());
        }
    }
    if let Some(r) = &a.request {
        if r.time.is_some() {
            put("attributes.request.time", SET.into());
        }
        if let Some(h) = &r.http {
            let p = "attributes.request.http";
            if !h.id.is_empty() {
                put(&format!("{p}.id"), SET.into());
            }
            put(&format!("{p}.method"), h.method.clone());
            put(&format!("{p}.path"), h.path.clone());
            put(&format!("{p}.host"), h.host.clone());
            put(&format!("{p}.scheme"), h.scheme.clone());
            put(&format!("{p}.query"), h.query.clone());
            put(&format!("{p}.fragment"), h.fragment.clone());
            put(&format!("{p}.size"), h.size.to_string());
            put(&format!("{p}.protocol"), h.protocol.clone());
            put(&format!("{p}.body"), h.body.clone());
            if !h.raw_body.is_empty() {
                put(&format!("{p}.raw_body"), escape_bytes(&h.raw_body));
            }
            for (k, v) in &h.headers {
                put(&format!("{p}.headers[{k}]"), normalize_header_value(k, v));
            }
            if let Some(m) = &h.header_map {
                for (i, hv) in m.headers.iter().enumerate() {
                    let v = if hv.raw_value.is_empty() {
                        hv.value.clone()
                    } else {
                        String::from_utf8_lossy(&hv.raw_value).into_owned()
                    };
                    put(
                        &format!("{p}.header_map[{i}]"),
                        format!("{}: {}", hv.key, normalize_header_value(&hv.key, &v)),
                    );
                }
            }
        }
    }
    for (k, v) in &a.context_extensions {
        put(&format!("attributes.context_extensions[{k}]"), v.clone());
    }
    if let Some(m) = &a.metadata_context
        && (!m.filter_metadata.is_empty() || !m.typed_filter_metadata.is_empty())
    {
        put("attributes.metadata_context", format!("{m:?}"));
    }
    if let Some(m) = &a.route_metadata_context
        && (!m.filter_metadata.is_empty() || !m.typed_filter_metadata.is_empty())
    {
        put("attributes.route_metadata_context", format!("{m:?}"));
    }
    if let Some(t) = &a.tls_session {
        put("attributes.tls_session.sni", t.sni.clone());
    }
    out
}

fn address_parts(addr: Option<&Address>) -> (String, String) {
    match addr.and_then(|a| a.address.as_ref()) {
        Some(address::Address::SocketAddress(s)) => {
            let port = match &s.port_specifier {
                Some(_) => PORT.to_owned(),
                None => String::new(),
            };
            (s.address.clone(), port)
        }
        Some(other) => (format!("{other:?}"), String::new()),
        None => (String::new(), String::new()),
    }
}

/// `x-request-id` values are random UUIDs on both sides: only their presence and shape matter.
pub fn normalize_header_value(name: &str, value: &str) -> String {
    if name.eq_ignore_ascii_case("x-request-id") && looks_like_uuid(value) {
        "<uuid>".to_owned()
    } else {
        value.to_owned()
    }
}

fn looks_like_uuid(v: &str) -> bool {
    v.len() == 36
        && v.char_indices().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// Printable rendering of arbitrary bytes: ASCII as is, anything else as `\xNN`.
pub fn escape_bytes(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    for &c in b {
        if c.is_ascii_graphic() || c == b' ' {
            s.push(c as char);
        } else {
            s.push_str(&format!("\\x{c:02x}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_shape() {
        assert!(looks_like_uuid("a0b1c2d3-e4f5-4a6b-8c7d-0123456789ab"));
        assert!(!looks_like_uuid("client-chosen-id"));
    }
}
