//! Where a request failed decides its status, its response flag and its log line
//! (pingora's idea: one error type that knows its side).

use authgate_authz::LocalResponse;
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};

/// Why the proxy answered the request itself instead of relaying the upstream's answer.
#[derive(Debug)]
pub enum ProxyError {
    /// The client sent something we refuse to interpret (smuggling attempts, bad paths).
    /// `close` asks to close the connection after the reply.
    BadRequest { reason: String, close: bool },
    /// No route matched host and path (Envoy flag NR). No authorization call is made.
    NoRoute,
    /// Body larger than a buffering limit.
    PayloadTooLarge,
    /// The authorization service denied (flag UAEX); its reply is relayed.
    AuthzDenied { provider: usize, reply: LocalResponse },
    /// The authorization call failed and the provider does not fail open (flag UAEX).
    AuthzError {
        provider: usize,
        reply: LocalResponse,
        reason: String,
    },
    /// The authorization service answered with mutations we must not apply (flag UAEX).
    AuthzInvalid { provider: usize, reason: String },
    /// A local DENY/ALLOW AuthorizationPolicy refused the request (flag RBAC).
    RbacDenied { policy: String },
    /// No connection could be made to any endpoint (flag UF).
    UpstreamUnavailable { reason: String },
    /// The upstream did not answer in time (flag UT).
    UpstreamTimeout,
    /// The upstream reset or broke the exchange before response headers (flag UR).
    UpstreamReset { reason: String },
    /// The upstream answered with something that is not valid HTTP, or with an upgrade nobody
    /// asked for (flag UPE).
    UpstreamProtocolError { reason: String },
}

impl ProxyError {
    /// Envoy's response-flag short name, for the access log.
    pub fn response_flag(&self) -> &'static str {
        match self {
            Self::BadRequest { .. } => "DPE",
            Self::NoRoute => "NR",
            Self::PayloadTooLarge => "-",
            Self::AuthzDenied { .. } | Self::AuthzError { .. } | Self::AuthzInvalid { .. } => "UAEX",
            Self::RbacDenied { .. } => "RBAC",
            Self::UpstreamUnavailable { .. } => "UF",
            Self::UpstreamTimeout => "UT",
            Self::UpstreamReset { .. } => "UR",
            Self::UpstreamProtocolError { .. } => "UPE",
        }
    }

    /// The local reply for this error, as Envoy would send it.
    pub fn into_reply(self) -> LocalResponse {
        let (status, body): (StatusCode, Bytes) = match self {
            Self::AuthzDenied { reply, .. } | Self::AuthzError { reply, .. } => return reply,
            Self::BadRequest { close, .. } => {
                let mut r = plain(StatusCode::BAD_REQUEST, Bytes::from_static(b"Bad Request"));
                if close {
                    r.headers.push((header::CONNECTION, HeaderValue::from_static("close")));
                }
                return r;
            }
            Self::NoRoute => (StatusCode::NOT_FOUND, Bytes::new()),
            Self::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, Bytes::from_static(b"Payload Too Large")),
            Self::AuthzInvalid { .. } => (StatusCode::INTERNAL_SERVER_ERROR, Bytes::new()),
            Self::RbacDenied { .. } => (StatusCode::FORBIDDEN, Bytes::from_static(b"RBAC: access denied")),
            Self::UpstreamUnavailable { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                Bytes::from_static(
                    b"upstream connect error or disconnect/reset before headers. reset reason: connection failure",
                ),
            ),
            Self::UpstreamTimeout => (StatusCode::GATEWAY_TIMEOUT, Bytes::from_static(b"upstream request timeout")),
            Self::UpstreamReset { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                Bytes::from_static(b"upstream connect error or disconnect/reset before headers. reset reason: connection termination"),
            ),
            Self::UpstreamProtocolError { .. } => (
                StatusCode::BAD_GATEWAY,
                Bytes::from_static(b"upstream connect error or disconnect/reset before headers. reset reason: protocol error"),
            ),
        };
        plain(status, body)
    }

    pub fn detail(&self) -> String {
        match self {
            Self::BadRequest { reason, .. } => reason.clone(),
            Self::NoRoute => "route_not_found".into(),
            Self::PayloadTooLarge => "request_payload_too_large".into(),
            Self::AuthzDenied { .. } => "ext_authz_denied".into(),
            Self::AuthzError { reason, .. } => format!("ext_authz_error: {reason}"),
            Self::AuthzInvalid { reason, .. } => format!("ext_authz_invalid: {reason}"),
            Self::RbacDenied { policy } => format!("rbac_access_denied_matched_policy[{policy}]"),
            Self::UpstreamUnavailable { reason } => format!("upstream_connect_failure: {reason}"),
            Self::UpstreamTimeout => "upstream_response_timeout".into(),
            Self::UpstreamReset { reason } => format!("upstream_reset_before_response_started: {reason}"),
            Self::UpstreamProtocolError { reason } => {
                format!("upstream_reset_before_response_started{{protocol_error}}: {reason}")
            }
        }
    }

    pub fn provider(&self) -> Option<usize> {
        match self {
            Self::AuthzDenied { provider, .. }
            | Self::AuthzError { provider, .. }
            | Self::AuthzInvalid { provider, .. } => Some(*provider),
            _ => None,
        }
    }
}

fn plain(status: StatusCode, body: Bytes) -> LocalResponse {
    LocalResponse {
        status,
        headers: Vec::new(),
        body,
    }
}
