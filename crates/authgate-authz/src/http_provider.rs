//! `envoyExtAuthzHttp`: the check is an HTTP/1.1 request to the authz service (envoy-ext-authz.md
//! §4, istio-ext-authz.md R-A12..R-A18, R-B4, R-B6, R-B7).

use std::time::Duration;

use authgate_config::{BodySettings, HeaderPattern, HttpProviderSettings, any_matches};
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, HOST, HeaderMap, HeaderName, HeaderValue};
use http::{Request, StatusCode, Uri};

use crate::check::{CheckBody, CheckRequestParts, PARTIAL_BODY_HEADER, joined_value};
use crate::format::HeaderFormatter;
use crate::http1_check::CheckConnections;
use crate::local_response::LocalResponse;
use crate::mutation::{AllowMutations, HeaderAction, HeaderMutation, RequestMutation, ResponseMutation};
use crate::resolve::connector;
use crate::{BuildError, CheckError, Decision};

/// Envoy's response header carrying names to strip from the upstream request on allow.
const HEADERS_TO_REMOVE: &str = "x-envoy-auth-headers-to-remove";

/// Headers that describe one hop's connection or framing. They are never copied from an authz
/// response to the client or upstream: the gateway frames its own messages (Envoy strips the
/// connection-level ones on encode and recomputes `content-length` too).
pub(crate) fn is_hop_or_framing(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "upgrade"
            | "te"
            | "content-length"
    )
}

pub(crate) struct HttpProvider {
    /// Keep-alive HTTP/1.1 connections to `origin`.
    client: CheckConnections,
    /// `http://host:port`, no trailing slash.
    origin: String,
    /// `origin` parses as a URI.
    origin_is_uri: bool,
    path_prefix: String,
    include: Vec<HeaderPattern>,
    additional: Vec<(HeaderName, HeaderFormatter)>,
    to_upstream: Vec<HeaderPattern>,
    to_downstream_on_deny: Vec<HeaderPattern>,
    to_downstream_on_allow: Vec<HeaderPattern>,
    body: Option<BodySettings>,
}

impl HttpProvider {
    pub(crate) fn new(
        provider: &str,
        settings: &HttpProviderSettings,
        body: Option<BodySettings>,
        origin: String,
    ) -> Result<Self, BuildError> {
        if !settings.path_prefix.is_empty() && !settings.path_prefix.starts_with('/') {
            return Err(BuildError::PathPrefix {
                provider: provider.to_owned(),
                prefix: settings.path_prefix.clone(),
            });
        }
        let mut additional = Vec::with_capacity(settings.additional_headers.len());
        for (name, template) in &settings.additional_headers {
            let bad = |reason: String| BuildError::AdditionalHeader {
                provider: provider.to_owned(),
                header: name.clone(),
                reason,
            };
            let header = HeaderName::from_bytes(name.as_bytes()).map_err(|e| bad(e.to_string()))?;
            if is_hop_or_framing(&header) {
                return Err(bad(
                    "a connection or framing header cannot be set on the check request".into(),
                ));
            }
            let formatter = HeaderFormatter::parse(template).map_err(|e| bad(e.to_string()))?;
            additional.push((header, formatter));
        }
        // An origin that is no URI fails each check when its request is built.
        let dst = origin.parse::<Uri>();
        let origin_is_uri = dst.is_ok();
        let client = CheckConnections::new(
            connector(),
            dst.unwrap_or_else(|_| Uri::from_static("http://invalid")),
            Duration::from_secs(60),
        );
        Ok(Self {
            client,
            origin,
            origin_is_uri,
            path_prefix: settings.path_prefix.clone(),
            include: settings.include_request_headers.clone(),
            additional,
            to_upstream: settings.headers_to_upstream_on_allow.clone(),
            to_downstream_on_deny: settings.headers_to_downstream_on_deny.clone(),
            to_downstream_on_allow: settings.headers_to_downstream_on_allow.clone(),
            body,
        })
    }

    /// The check request (HTTP-2/HTTP-3): the client's method; `:path` = pathPrefix + path and
    /// query, concatenated as Envoy does (`/check/` + `/a` = `/check//a`); Host = the client's
    /// authority; `content-length`; `authorization` and the headers matching
    /// `includeRequestHeadersInCheck` (repeated values joined with `,`); the partial-body marker
    /// when a body is sent; then `includeAdditionalHeadersInCheck`, which override.
    pub(crate) fn build_request(&self, parts: &CheckRequestParts<'_>) -> Result<Request<Bytes>, CheckError> {
        let body = CheckBody::from_parts(parts, self.body.as_ref());
        let uri = self.check_uri(parts.path_and_query)?;

        let mut headers = HeaderMap::new();
        // `authority` is a `&str`: already valid UTF-8, nothing to sanitize.
        let authority = HeaderValue::from_str(parts.authority)
            .map_err(|e| CheckError::Request(format!("client authority as Host: {e}")))?;
        headers.insert(HOST, authority);
        headers.insert(
            CONTENT_LENGTH,
            match &body {
                None => HeaderValue::from_static("0"),
                Some(b) => HeaderValue::from(b.bytes.len()),
            },
        );
        // The client's headers as `header_list` presents them (repeated values joined with
        // `,`, invalid UTF-8 bytes as `!`), read straight from the map: a single valid value is
        // shared, not copied.
        for name in parts.headers.keys() {
            if name == HOST || name == CONTENT_LENGTH || name.as_str() == PARTIAL_BODY_HEADER {
                continue;
            }
            if name != AUTHORIZATION && !any_matches(&self.include, name.as_str()) {
                continue;
            }
            let mut values = parts.headers.get_all(name).iter();
            let value = match (values.next(), values.next()) {
                (Some(v), None) if std::str::from_utf8(v.as_bytes()).is_ok() => Some(v.clone()),
                (Some(_), _) => HeaderValue::from_str(&joined_value(parts.headers, name)).ok(),
                (None, _) => None,
            };
            if let Some(v) = value {
                headers.insert(name.clone(), v);
            }
        }
        if let Some(body) = &body {
            headers.insert(
                HeaderName::from_static(PARTIAL_BODY_HEADER),
                HeaderValue::from_static(body.partial_header_value()),
            );
        }
        for (name, formatter) in &self.additional {
            let value = formatter.format(parts);
            // Envoy's header parser adds nothing for an empty value (and then keeps the
            // client's copy).
            if value.is_empty() {
                continue;
            }
            if let Ok(v) = HeaderValue::from_bytes(&value) {
                headers.insert(name.clone(), v);
            }
        }

        let mut request = Request::new(body.map(|b| b.bytes).unwrap_or_default());
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = uri;
        *request.version_mut() = http::Version::HTTP_11;
        *request.headers_mut() = headers;
        Ok(request)
    }

    /// `origin` + pathPrefix + path. The pool sends HTTP/1 in origin form, so the origin is
    /// only validated, not carried: the path is parsed once, with no URI string built.
    fn check_uri(&self, path_and_query: &str) -> Result<Uri, CheckError> {
        if self.origin_is_uri {
            let target = if self.path_prefix.is_empty() {
                http::uri::PathAndQuery::try_from(path_and_query)
            } else {
                http::uri::PathAndQuery::try_from(format!("{}{path_and_query}", self.path_prefix))
            };
            if let Ok(pq) = target
                && pq.as_str().starts_with('/')
            {
                return Ok(Uri::from(pq));
            }
        }
        // Anything else (an origin that is no URI, a path that does not parse) fails here
        // with the whole target in the message.
        let target = format!("{}{}{path_and_query}", self.origin, self.path_prefix);
        target
            .parse()
            .map_err(|e| CheckError::Request(format!("check request path {target:?}: {e}")))
    }

    pub(crate) async fn check(&self, parts: &CheckRequestParts<'_>) -> Decision {
        let request = match self.build_request(parts) {
            Ok(r) => r,
            Err(e) => return Decision::Error(e),
        };
        match self.client.exchange(&request).await {
            Ok(answer) => self.decide(answer.status, answer.headers, answer.body),
            Err(e) => Decision::Error(CheckError::Transport(e)),
        }
    }

    /// HTTP-5..HTTP-8.
    pub(crate) fn decide(&self, status: StatusCode, mut headers: HeaderMap, body: Bytes) -> Decision {
        if status.is_server_error() {
            return Decision::Error(CheckError::Status5xx(status.as_u16()));
        }
        if status.is_informational() {
            // The transport skips interim answers and refuses a 101; relaying one as a local
            // reply would announce a protocol switch that never happens.
            return Decision::Error(CheckError::Transport(format!("authz service answered {status}")));
        }
        // Never leaks anywhere; only honoured on 200.
        let to_remove: Vec<HeaderValue> = match headers.entry(HEADERS_TO_REMOVE) {
            http::header::Entry::Occupied(e) => e.remove_entry_mult().1.collect(),
            http::header::Entry::Vacant(_) => Vec::new(),
        };

        if status == StatusCode::OK {
            let mut request = RequestMutation::default();
            let mut response = ResponseMutation::default();
            for (name, value) in iter_entries(&headers) {
                if is_hop_or_framing(name) {
                    continue;
                }
                if any_matches(&self.to_upstream, name.as_str()) {
                    request.headers.push(HeaderMutation::new(
                        name.clone(),
                        value.clone(),
                        HeaderAction::Set,
                    ));
                }
                if any_matches(&self.to_downstream_on_allow, name.as_str()) {
                    response.headers.push(HeaderMutation::new(
                        name.clone(),
                        value.clone(),
                        HeaderAction::Add,
                    ));
                }
            }
            request.remove = headers_to_remove(&to_remove);
            return Decision::Allow(AllowMutations { request, response });
        }

        let all = self.to_downstream_on_deny.is_empty();
        let mut deny_headers = Vec::new();
        for (name, value) in iter_entries(&headers) {
            if is_hop_or_framing(name) {
                continue;
            }
            let allowed = all
                || any_matches(&self.to_downstream_on_deny, name.as_str())
                || name == http::header::LOCATION
                || name == http::header::WWW_AUTHENTICATE;
            if allowed {
                deny_headers.push((name.clone(), value.clone()));
            }
        }
        Decision::Deny(LocalResponse {
            status,
            headers: deny_headers,
            body,
        })
    }
}

/// Every header line in order, repeated names as separate entries.
fn iter_entries(headers: &HeaderMap) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
    headers.iter()
}

/// HTTP-6: each instance split on `,`, trimmed, empties dropped, lower-cased; names that are not
/// valid header names (pseudo-headers included) are skipped, and `host` is never removed.
fn headers_to_remove(values: &[HeaderValue]) -> Vec<HeaderName> {
    let mut out = Vec::new();
    for value in values {
        for name in value.as_bytes().split(|b| *b == b',') {
            let name = name.trim_ascii();
            if name.is_empty() {
                continue;
            }
            if let Ok(n) = HeaderName::from_bytes(&name.to_ascii_lowercase())
                && n != HOST
            {
                out.push(n);
            }
        }
    }
    out
}

/// `Display` of an error and its sources, for logs and `CheckError::Transport`.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut s = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        s.push_str(": ");
        s.push_str(&e.to_string());
        source = e.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removal_list_parsing() {
        let v = [
            HeaderValue::from_static("x-a, X-B ,,:path, host"),
            HeaderValue::from_static("x-c"),
        ];
        let names: Vec<_> = headers_to_remove(&v)
            .iter()
            .map(|n| n.as_str().to_owned())
            .collect();
        assert_eq!(names, ["x-a", "x-b", "x-c"]);
    }
}
