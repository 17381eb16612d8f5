//! External authorization providers with Envoy `envoy.filters.http.ext_authz` semantics, as
//! Istio/ASM configure them (`envoyExtAuthzHttp` / `envoyExtAuthzGrpc`).
//!
//! One [`ProviderClient`] per configured provider: it owns a pooled connection to the authz
//! service and turns a [`CheckRequestParts`] into a [`Decision`]. The proxy then applies the
//! decision: [`AllowMutations`] on the upstream request and on the response, a [`LocalResponse`]
//! for a denial, `statusOnError` / fail-open for an error, 500 for an invalid answer.
//!
//! Where this crate knowingly differs from Envoy it says so on the item (see also
//! `docs/compatibility.md`).

#![forbid(unsafe_code)]

mod check;
pub mod check_encode;
mod format;
mod grpc_provider;
mod h2_channel;
mod http1_check;
mod http_provider;
mod local_response;
mod mutation;
mod resolve;

use std::fmt;
use std::time::Duration;

use authgate_config::{HostPort, Provider, ProviderKind};
use http::StatusCode;

pub use check::{BufferedBody, CheckRequestParts, PARTIAL_BODY_HEADER};
pub use format::{FormatError, HeaderFormatter};
pub use local_response::{LocalResponse, grpc_percent_encode, http_to_grpc_status, is_grpc_request};
pub use mutation::{
    AllowMutations, HeaderAction, HeaderMutation, RequestMutation, ResponseMutation, rewrite_query,
};

use grpc_provider::GrpcProvider;
use http_provider::HttpProvider;

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Continue upstream with these mutations.
    Allow(AllowMutations),
    /// Relayed denial. HTTP provider: any status but 200 and 5xx. gRPC provider: any non-OK
    /// status code, even when `denied_response` carries a 5xx (never an error, never fail-open).
    Deny(LocalResponse),
    /// The check could not be made or completed: the proxy applies `failOpen` / `statusOnError`
    /// (see [`ProviderClient::error_response`]).
    Error(CheckError),
    /// The authz service answered something that cannot be applied (bad header names/values,
    /// malformed query parameters): 500 even with `failOpen` ([`LocalResponse::invalid`]).
    Invalid(String),
}

/// Why a check failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckError {
    /// `timeout` elapsed before the answer was complete.
    Timeout,
    /// Connect, reset, protocol or body read failure.
    Transport(String),
    /// The HTTP authz service answered with a 5xx (its body and headers are discarded).
    Status5xx(u16),
    /// The gRPC call failed (UNAVAILABLE, DEADLINE_EXCEEDED, UNIMPLEMENTED, …).
    Rpc(tonic::Code, String),
    /// The check request could not be formed from the client request.
    Request(String),
    /// The gRPC authz service answered a non-OK status with `error_response` (Envoy 1.37+):
    /// an error (so `failOpen` applies), whose reply, when failing closed, is this one. `status`
    /// is `None` when the service set none (then `statusOnError` is used).
    ErrorResponse {
        code: i32,
        status: Option<StatusCode>,
        headers: Vec<(http::HeaderName, http::HeaderValue)>,
        body: bytes::Bytes,
    },
}

impl CheckError {
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout)
    }

    /// The check could not be formed from the client's request (e.g. a target too long for a
    /// URI once the path prefix is added). The client caused it, so `failOpen` must not let
    /// the request through unchecked.
    pub fn is_request(&self) -> bool {
        matches!(self, Self::Request(_))
    }
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.write_str("authz check timed out"),
            Self::Transport(e) => write!(f, "authz transport error: {e}"),
            Self::Status5xx(s) => write!(f, "authz service answered HTTP {s}"),
            Self::Rpc(code, msg) => write!(f, "authz RPC failed: {code:?}: {msg}"),
            Self::Request(e) => write!(f, "cannot build the check request: {e}"),
            Self::ErrorResponse { code, status, .. } => match status {
                Some(s) => write!(
                    f,
                    "authz service returned an error response (code {code}, HTTP {s})"
                ),
                None => write!(f, "authz service returned an error response (code {code})"),
            },
        }
    }
}

impl std::error::Error for CheckError {}

/// A provider that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("provider {provider}: invalid target {target}: {reason}")]
    Target {
        provider: String,
        target: String,
        reason: String,
    },
    #[error("provider {provider}: pathPrefix {prefix:?} must start with '/'")]
    PathPrefix { provider: String, prefix: String },
    #[error("provider {provider}: includeAdditionalHeadersInCheck[{header}]: {reason}")]
    AdditionalHeader {
        provider: String,
        header: String,
        reason: String,
    },
    #[error("provider {provider}: must be built inside a tokio runtime")]
    NoRuntime { provider: String },
}

enum Transport {
    Http(Box<HttpProvider>),
    Grpc(Box<GrpcProvider>),
}

/// One configured authz provider with its pooled connection. `Send + Sync`; share it in an
/// `Arc`.
pub struct ProviderClient {
    config: Provider,
    transport: Transport,
}

impl fmt::Debug for ProviderClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderClient")
            .field("name", &self.config.name)
            .field("kind", &self.kind_name())
            .finish_non_exhaustive()
    }
}

impl ProviderClient {
    /// No I/O: connections are made lazily (and pooled). `target` is where to connect
    /// (`config.target(&static_hosts)`); DNS names are resolved with tokio at connect time.
    /// Must be called inside a tokio runtime (the gRPC channel spawns its worker).
    pub fn new(config: &Provider, target: HostPort) -> Result<Self, BuildError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(BuildError::NoRuntime {
                provider: config.name.clone(),
            });
        }
        let origin = format!("http://{target}");
        if origin.parse::<http::Uri>().is_err() || target.host.is_empty() {
            return Err(BuildError::Target {
                provider: config.name.clone(),
                target: target.to_string(),
                reason: "not a host:port".into(),
            });
        }
        let transport = match &config.kind {
            ProviderKind::Http(settings) => Transport::Http(Box::new(HttpProvider::new(
                &config.name,
                settings,
                config.body,
                origin,
            )?)),
            ProviderKind::Grpc => {
                // Istio sets the gRPC authority to the provider's hostname.
                let authority = if config.service.contains(':') && !config.service.starts_with('[') {
                    format!("[{}]", config.service)
                } else {
                    config.service.clone()
                };
                Transport::Grpc(Box::new(GrpcProvider::new(
                    &config.name,
                    &origin,
                    &authority,
                    config.body,
                    config.timeout,
                )?))
            }
        };
        Ok(Self {
            config: config.clone(),
            transport,
        })
    }

    pub fn config(&self) -> &Provider {
        &self.config
    }

    fn kind_name(&self) -> &'static str {
        match self.transport {
            Transport::Http(_) => "http",
            Transport::Grpc(_) => "grpc",
        }
    }

    /// The whole check, bounded by `config.timeout` (zero means no timeout, as in Envoy 1.38+).
    /// Never panics; every failure is a [`Decision`].
    pub async fn check(&self, req: &CheckRequestParts<'_>) -> Decision {
        // Boxed: the provider futures are several KB, and unboxed they were copied into each
        // enclosing future (timeout, this one, the pipeline's) — 4 copies per check in callgrind.
        let call = Box::pin(async {
            match &self.transport {
                Transport::Http(p) => p.check(req).await,
                Transport::Grpc(p) => p.check(req).await,
            }
        });
        let timeout = self.config.timeout;
        if timeout == Duration::ZERO {
            return call.await;
        }
        match tokio::time::timeout(timeout, call).await {
            Ok(decision) => decision,
            Err(_) => Decision::Error(CheckError::Timeout),
        }
    }

    /// The exact check request `check` would send for `req`.
    pub fn preview(&self, req: &CheckRequestParts<'_>) -> Result<CheckPreview, CheckError> {
        match &self.transport {
            Transport::Http(p) => Ok(CheckPreview::Http(Box::new(p.build_request(req)?))),
            Transport::Grpc(p) => Ok(CheckPreview::Grpc(Box::new(check::build_check_request(
                req,
                p.body.as_ref(),
            )))),
        }
    }

    /// `statusOnError` as Envoy applies it: codes outside 100..=511 become 403.
    pub fn status_on_error(&self) -> StatusCode {
        status_on_error(self.config.status_on_error)
    }

    /// The reply for a check error when not failing open (Envoy ERR-2/ERR-3): `statusOnError`
    /// with no headers and an empty body, or the gRPC service's `error_response`.
    pub fn error_response(&self, err: &CheckError) -> LocalResponse {
        match err {
            CheckError::ErrorResponse {
                status,
                headers,
                body,
                ..
            } => LocalResponse {
                status: status.unwrap_or_else(|| self.status_on_error()),
                headers: headers.clone(),
                body: body.clone(),
            },
            _ => LocalResponse::status_only(self.status_on_error()),
        }
    }
}

/// Envoy's `toErrorCode`: a code within 100..=511 is used as is, anything else is 403.
pub fn status_on_error(code: u16) -> StatusCode {
    if (100..=511).contains(&code) {
        StatusCode::from_u16(code).unwrap_or(StatusCode::FORBIDDEN)
    } else {
        StatusCode::FORBIDDEN
    }
}

/// The check request a provider would send, built without sending it (`authgate explain`).
#[derive(Debug)]
pub enum CheckPreview {
    Http(Box<http::Request<bytes::Bytes>>),
    Grpc(Box<authgate_proto::auth::CheckRequest>),
}

impl fmt::Display for CheckPreview {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Http(req) => {
                let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
                writeln!(f, "{} {} HTTP/1.1", req.method(), target)?;
                for (k, v) in req.headers() {
                    writeln!(f, "{}: {}", k, String::from_utf8_lossy(v.as_bytes()))?;
                }
                writeln!(f)?;
                if !req.body().is_empty() {
                    writeln!(f, "{}", String::from_utf8_lossy(req.body()))?;
                }
                Ok(())
            }
            Self::Grpc(check) => {
                writeln!(f, "POST {} (gRPC)", authgate_proto::CHECK_PATH)?;
                writeln!(f, "{check:#?}")
            }
        }
    }
}
