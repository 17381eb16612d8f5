//! `envoyExtAuthzGrpc`: `envoy.service.auth.v3.Authorization/Check` over one lazily connected,
//! multiplexed HTTP/2 channel (envoy-ext-authz.md §5, §6; istio-ext-authz.md R-A20a, R-B5, R-B8).

use std::fmt;
use std::time::Duration;

use authgate_config::BodySettings;
use authgate_proto::auth::{CheckResponse, DeniedHttpResponse, OkHttpResponse, check_response};
use authgate_proto::core::HeaderValueOption;
use authgate_proto::core::header_value_option::HeaderAppendAction;
use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http::header::{HOST, HeaderName, HeaderValue};

use crate::check::CheckRequestParts;
use crate::check_encode::encode_grpc_check_request;
use crate::h2_channel::H2Channel;
use crate::http_provider::is_hop_or_framing;
use crate::local_response::LocalResponse;
use crate::mutation::{AllowMutations, HeaderAction, HeaderMutation, RequestMutation, ResponseMutation};
use crate::{BuildError, CheckError, Decision};

pub(crate) struct GrpcProvider {
    channel: H2Channel,
    pub(crate) body: Option<BodySettings>,
}

impl GrpcProvider {
    /// `origin` is where to connect; `authority` is the `:authority` of the calls (Istio sends
    /// the provider's service hostname).
    pub(crate) fn new(
        provider: &str,
        origin: &str,
        authority: &str,
        body: Option<BodySettings>,
        timeout: Duration,
    ) -> Result<Self, BuildError> {
        let bad = |reason: String| BuildError::Target {
            provider: provider.to_owned(),
            target: origin.to_owned(),
            reason,
        };
        let target = origin.strip_prefix("http://").unwrap_or(origin).to_owned();
        let uri: http::Uri = format!("http://{authority}{}", authgate_proto::CHECK_PATH)
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(format!("authority {authority:?}: {e}")))?;
        Ok(Self {
            channel: H2Channel::new(target, uri, timeout),
            body,
        })
    }

    pub(crate) async fn check(&self, parts: &CheckRequestParts<'_>) -> Decision {
        // The CheckRequest's wire bytes, written straight from `parts` (the same message as
        // `build_check_request`, without building it), framed for gRPC in one buffer.
        let mut message = BytesMut::new();
        if let Err(e) = encode_grpc_check_request(parts, self.body.as_ref(), &mut message) {
            return Decision::Error(e);
        }
        match self.channel.unary::<CheckResponse>(message.freeze()).await {
            Ok(response) => decide(response),
            Err(e) => Decision::Error(e),
        }
    }
}

/// GRPC-2..GRPC-6 and §6.
pub(crate) fn decide(response: CheckResponse) -> Decision {
    let code = response.status.as_ref().map_or(0, |s| s.code);
    if code == 0 {
        let mutations = match response.http_response {
            Some(check_response::HttpResponse::OkResponse(ok)) => ok_mutations(ok),
            _ => Ok(AllowMutations::default()),
        };
        return match mutations {
            Ok(m) => Decision::Allow(m),
            Err(reason) => Decision::Invalid(reason),
        };
    }
    match response.http_response {
        Some(check_response::HttpResponse::DeniedResponse(denied)) => {
            match local_response(denied, "denied_response") {
                Ok(r) => Decision::Deny(r),
                Err(reason) => Decision::Invalid(reason),
            }
        }
        Some(check_response::HttpResponse::ErrorResponse(error)) => {
            let status_set = error.status.as_ref().is_some_and(|s| s.code > 0);
            match local_response(error, "error_response") {
                Ok(r) => Decision::Error(CheckError::ErrorResponse {
                    code,
                    status: status_set.then_some(r.status),
                    headers: r.headers,
                    body: r.body,
                }),
                Err(reason) => Decision::Invalid(reason),
            }
        }
        _ => Decision::Deny(LocalResponse::status_only(StatusCode::FORBIDDEN)),
    }
}

/// The deny status: `denied_response.status.code` when set and usable, else 403.
fn deny_status(code: i32) -> StatusCode {
    u16::try_from(code)
        .ok()
        .and_then(|c| StatusCode::from_u16(c).ok())
        .filter(|s| !s.is_informational())
        .unwrap_or(StatusCode::FORBIDDEN)
}

fn local_response(denied: DeniedHttpResponse, field: &'static str) -> Result<LocalResponse, String> {
    let status = deny_status(denied.status.as_ref().map_or(0, |s| s.code));
    let mut headers = Vec::with_capacity(denied.headers.len());
    for (index, opt) in denied.headers.into_iter().enumerate() {
        // GRPC-6 as Envoy 1.40 behaves: `append: true` entries never reach the local reply.
        if legacy_append(&opt) == Some(true) {
            continue;
        }
        let at = At {
            field,
            list: "headers",
            index,
        };
        match header_pair(opt, at)? {
            (Key::Name(name), value) => headers.push((name, value)),
            (Key::Pseudo(key), _) => {
                return Err(format!("{at}: pseudo-header {key:?} in a local reply"));
            }
        }
    }
    Ok(LocalResponse {
        status,
        headers,
        body: Bytes::from(denied.body),
    })
}

/// Where a `HeaderValueOption` sits in the CheckResponse (`ok_response.headers[2]`), for error
/// messages: formatted only when there is an error.
#[derive(Clone, Copy)]
struct At {
    field: &'static str,
    list: &'static str,
    index: usize,
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}[{}]", self.field, self.list, self.index)
    }
}

/// A `HeaderValueOption`'s key: a header name (the `HeaderName` parse lower-cases it), or a
/// lower-cased pseudo-header.
enum Key {
    Name(HeaderName),
    Pseudo(String),
}

/// The key and the value of one `HeaderValueOption`, validated. The value's bytes are moved,
/// not copied, into the `HeaderValue`.
fn header_pair(opt: HeaderValueOption, at: At) -> Result<(Key, HeaderValue), String> {
    let Some(header) = opt.header else {
        return Err(format!("{at}: missing header"));
    };
    if header.key.is_empty() {
        return Err(format!("{at}: empty header name"));
    }
    let raw = if header.value.is_empty() && !header.raw_value.is_empty() {
        Bytes::from(header.raw_value)
    } else {
        Bytes::from(header.value)
    };
    let Ok(value) = HeaderValue::from_maybe_shared(raw) else {
        let key = header.key.to_ascii_lowercase();
        return Err(format!("{at}: invalid value for header {key:?}"));
    };
    if header.key.starts_with(':') {
        return Ok((Key::Pseudo(header.key.to_ascii_lowercase()), value));
    }
    match HeaderName::from_bytes(header.key.as_bytes()) {
        Ok(name) => Ok((Key::Name(name), value)),
        Err(_) => {
            let key = header.key.to_ascii_lowercase();
            Err(format!("{at}: invalid header name {key:?}"))
        }
    }
}

/// The deprecated `append` BoolValue: authz services still send it, and Envoy still honours it
/// ahead of `append_action`.
#[allow(deprecated)]
fn legacy_append(opt: &HeaderValueOption) -> Option<bool> {
    opt.append.as_ref().map(|b| b.value)
}

/// Pseudo-header (and `host`) entries of `ok_response.headers`. Envoy 1.40 applies a set of
/// `:path`, `:authority`/`host` and `:method` to the upstream request; anything else (`:scheme`,
/// unknown pseudo-headers, appends to pseudo-headers) is ignored here.
fn pseudo_mutation(
    request: &mut RequestMutation,
    key: &str,
    value: HeaderValue,
    append: bool,
    at: At,
) -> Result<(), String> {
    if append {
        tracing::debug!(
            header = key,
            "ignoring an append to a pseudo-header from the authz service"
        );
        return Ok(());
    }
    match key {
        ":path" => {
            let path = value.to_str().map_err(|_| format!("{at}: non-ASCII :path"))?;
            if !path.starts_with('/') || path.parse::<http::uri::PathAndQuery>().is_err() {
                return Err(format!("{at}: invalid :path {path:?}"));
            }
            request.path = Some(path.to_owned());
        }
        ":authority" | "host" => {
            if value
                .to_str()
                .ok()
                .and_then(|v| v.parse::<http::uri::Authority>().ok())
                .is_none()
            {
                return Err(format!("{at}: invalid authority {value:?}"));
            }
            request
                .headers
                .push(HeaderMutation::new(HOST, value, HeaderAction::Set));
        }
        ":method" => {
            let method = http::Method::from_bytes(value.as_bytes())
                .map_err(|_| format!("{at}: invalid :method {value:?}"))?;
            request.method = Some(method);
        }
        _ => tracing::debug!(
            header = key,
            "ignoring a pseudo-header mutation from the authz service"
        ),
    }
    Ok(())
}

fn ok_mutations(ok: OkHttpResponse) -> Result<AllowMutations, String> {
    let mut request = RequestMutation::default();
    // GRPC-3 / OK-3, as Envoy 1.40 behaves: `append: true` entries go to the append bucket
    // (folded into an existing header, dropped when absent); every other entry, whatever its
    // `append_action`, goes to the set bucket. Sets are applied first, then appends.
    let mut appends = Vec::new();
    for (index, opt) in ok.headers.into_iter().enumerate() {
        let at = At {
            field: "ok_response",
            list: "headers",
            index,
        };
        let append = legacy_append(&opt) == Some(true);
        let (name, value) = match header_pair(opt, at)? {
            (Key::Pseudo(key), value) => {
                pseudo_mutation(&mut request, &key, value, append, at)?;
                continue;
            }
            (Key::Name(name), value) if name == HOST => {
                pseudo_mutation(&mut request, "host", value, append, at)?;
                continue;
            }
            (Key::Name(name), value) => (name, value),
        };
        if is_hop_or_framing(&name) {
            // The gateway frames the upstream request itself; an authz service never does.
            tracing::debug!(header = %name, "ignoring a framing header mutation from the authz service");
            continue;
        }
        if append {
            appends.push(HeaderMutation::new(name, value, HeaderAction::AppendIfExists));
        } else {
            request
                .headers
                .push(HeaderMutation::new(name, value, HeaderAction::Set));
        }
    }
    request.headers.extend(appends);

    // OK-8: invalid names are skipped; pseudo-headers and host are never removed.
    for name in &ok.headers_to_remove {
        let lower = name.to_ascii_lowercase();
        if let Ok(n) = HeaderName::from_bytes(lower.as_bytes())
            && n != HOST
            && !is_hop_or_framing(&n)
        {
            request.remove.push(n);
        }
    }

    for (i, q) in ok.query_parameters_to_set.iter().enumerate() {
        check_query_part(&q.key, true)
            .map_err(|e| format!("ok_response.query_parameters_to_set[{i}].key: {e}"))?;
        check_query_part(&q.value, false)
            .map_err(|e| format!("ok_response.query_parameters_to_set[{i}].value: {e}"))?;
    }
    request.query_set = ok
        .query_parameters_to_set
        .into_iter()
        .map(|q| (q.key, q.value))
        .collect();
    request.query_remove = ok.query_parameters_to_remove;

    // OK-11 / GRPC-4: four buckets, applied add, set, add-if-absent, overwrite-if-exists.
    let (mut add, mut set, mut add_if_absent, mut overwrite) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (index, opt) in ok.response_headers_to_add.into_iter().enumerate() {
        let at = At {
            field: "ok_response",
            list: "response_headers_to_add",
            index,
        };
        let (append_action, legacy) = (opt.append_action, legacy_append(&opt));
        let (name, value) = match header_pair(opt, at)? {
            (Key::Name(name), value) => (name, value),
            (Key::Pseudo(key), _) => {
                return Err(format!("{at}: pseudo-header {key:?} in response headers"));
            }
        };
        if is_hop_or_framing(&name) {
            tracing::debug!(header = %name, "ignoring a framing response header from the authz service");
            continue;
        }
        // An unknown `append_action` matches none of Envoy's cases: the entry is dropped.
        let Ok(action) = HeaderAppendAction::try_from(append_action) else {
            continue;
        };
        match legacy {
            Some(true) => add.push(HeaderMutation::new(name, value, HeaderAction::Add)),
            Some(false) => set.push(HeaderMutation::new(name, value, HeaderAction::Set)),
            None => match action {
                HeaderAppendAction::AppendIfExistsOrAdd => {
                    add.push(HeaderMutation::new(name, value, HeaderAction::Add))
                }
                HeaderAppendAction::OverwriteIfExistsOrAdd => {
                    set.push(HeaderMutation::new(name, value, HeaderAction::Set));
                }
                HeaderAppendAction::AddIfAbsent => {
                    add_if_absent.push(HeaderMutation::new(name, value, HeaderAction::AddIfAbsent));
                }
                HeaderAppendAction::OverwriteIfExists => {
                    overwrite.push(HeaderMutation::new(name, value, HeaderAction::OverwriteIfExists));
                }
            },
        }
    }
    let mut response = ResponseMutation::default();
    response.headers.extend(add);
    response.headers.extend(set);
    response.headers.extend(add_if_absent);
    response.headers.extend(overwrite);

    Ok(AllowMutations { request, response })
}

/// A query key or value must already be URL-encoded: only bytes a URI query may carry, and
/// nothing that would change the parameter structure (`&`, `#`, and `=` in a key).
fn check_query_part(s: &str, is_key: bool) -> Result<(), String> {
    for b in s.bytes() {
        let ok = match b {
            b'&' | b'#' => false,
            b'=' => !is_key,
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => true,
            b'-' | b'.' | b'_' | b'~' | b'%' | b'!' | b'$' | b'\'' | b'(' | b')' | b'*' | b'+' | b','
            | b';' | b':' | b'@' | b'/' | b'?' => true,
            _ => false,
        };
        if !ok {
            return Err(format!("{s:?} is not URL-encoded"));
        }
    }
    Ok(())
}
