//! `envoyExtAuthzGrpc`: `envoy.service.auth.v3.Authorization/Check` over one lazily connected,
//! multiplexed HTTP/2 channel (envoy-ext-authz.md §5, §6; istio-ext-authz.md R-A20a, R-B5, R-B8).

use std::time::Duration;

use authgate_config::BodySettings;
use authgate_proto::auth::{CheckResponse, DeniedHttpResponse, OkHttpResponse, check_response};
use authgate_proto::core::HeaderValueOption;
use authgate_proto::core::header_value_option::HeaderAppendAction;
use bytes::BytesMut;
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
            Some(check_response::HttpResponse::OkResponse(ok)) => ok_mutations(&ok),
            _ => Ok(AllowMutations::default()),
        };
        return match mutations {
            Ok(m) => Decision::Allow(m),
            Err(reason) => Decision::Invalid(reason),
        };
    }
    match response.http_response {
        Some(check_response::HttpResponse::DeniedResponse(denied)) => {
            match local_response(&denied, "denied_response") {
                Ok(r) => Decision::Deny(r),
                Err(reason) => Decision::Invalid(reason),
            }
        }
        Some(check_response::HttpResponse::ErrorResponse(error)) => {
            match local_response(&error, "error_response") {
                Ok(r) => Decision::Error(CheckError::ErrorResponse {
                    code,
                    status: error.status.as_ref().filter(|s| s.code > 0).map(|_| r.status),
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

fn local_response(denied: &DeniedHttpResponse, field: &str) -> Result<LocalResponse, String> {
    let status = deny_status(denied.status.as_ref().map_or(0, |s| s.code));
    let mut headers = Vec::with_capacity(denied.headers.len());
    for (i, opt) in denied.headers.iter().enumerate() {
        // GRPC-6 as Envoy 1.40 behaves: `append: true` entries never reach the local reply.
        if legacy_append(opt) == Some(true) {
            continue;
        }
        let (name, value) = header_pair(opt, &format!("{field}.headers[{i}]"))?;
        if name.starts_with(':') {
            return Err(format!(
                "{field}.headers[{i}]: pseudo-header {name:?} in a local reply"
            ));
        }
        headers.push((parse_name(&name, field, i)?, value));
    }
    Ok(LocalResponse {
        status,
        headers,
        body: bytes::Bytes::from(denied.body.clone().into_bytes()),
    })
}

fn parse_name(name: &str, field: &str, i: usize) -> Result<HeaderName, String> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("{field}[{i}]: invalid header name {name:?}"))
}

/// The lower-cased key and the value of one `HeaderValueOption`, validated.
fn header_pair(opt: &HeaderValueOption, at: &str) -> Result<(String, HeaderValue), String> {
    let Some(header) = &opt.header else {
        return Err(format!("{at}: missing header"));
    };
    let key = header.key.to_ascii_lowercase();
    if key.is_empty() {
        return Err(format!("{at}: empty header name"));
    }
    let raw = if header.value.is_empty() && !header.raw_value.is_empty() {
        header.raw_value.as_slice()
    } else {
        header.value.as_bytes()
    };
    let value =
        HeaderValue::from_bytes(raw).map_err(|_| format!("{at}: invalid value for header {key:?}"))?;
    if !key.starts_with(':') && HeaderName::from_bytes(key.as_bytes()).is_err() {
        return Err(format!("{at}: invalid header name {key:?}"));
    }
    Ok((key, value))
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
    at: &str,
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

fn ok_mutations(ok: &OkHttpResponse) -> Result<AllowMutations, String> {
    let mut request = RequestMutation::default();
    // GRPC-3 / OK-3, as Envoy 1.40 behaves: `append: true` entries go to the append bucket
    // (folded into an existing header, dropped when absent); every other entry, whatever its
    // `append_action`, goes to the set bucket. Sets are applied first, then appends.
    let mut appends = Vec::new();
    for (i, opt) in ok.headers.iter().enumerate() {
        let at = format!("ok_response.headers[{i}]");
        let (key, value) = header_pair(opt, &at)?;
        let append = legacy_append(opt) == Some(true);
        if key.starts_with(':') || key == "host" {
            pseudo_mutation(&mut request, &key, value, append, &at)?;
            continue;
        }
        let name = parse_name(&key, "ok_response.headers", i)?;
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
        request.query_set.push((q.key.clone(), q.value.clone()));
    }
    request.query_remove.clone_from(&ok.query_parameters_to_remove);

    // OK-11 / GRPC-4: four buckets, applied add, set, add-if-absent, overwrite-if-exists.
    let (mut add, mut set, mut add_if_absent, mut overwrite) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, opt) in ok.response_headers_to_add.iter().enumerate() {
        let at = format!("ok_response.response_headers_to_add[{i}]");
        let (key, value) = header_pair(opt, &at)?;
        if key.starts_with(':') {
            return Err(format!("{at}: pseudo-header {key:?} in response headers"));
        }
        let name = parse_name(&key, "ok_response.response_headers_to_add", i)?;
        if is_hop_or_framing(&name) {
            tracing::debug!(header = %name, "ignoring a framing response header from the authz service");
            continue;
        }
        // An unknown `append_action` matches none of Envoy's cases: the entry is dropped.
        let Ok(action) = HeaderAppendAction::try_from(opt.append_action) else {
            continue;
        };
        match legacy_append(opt) {
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
