//! A byte-faithful clone of Istio's sample ext-authz server (`samples/extauthz`), plus a small
//! Bookinfo-like demo backend.
//!
//! * HTTP check server ([`serve_ext_authz_http`]): allows iff the first `x-ext-authz` request
//!   header is exactly `allow`; answers 200 or 403 with the three `x-ext-authz-*` headers.
//! * gRPC check server ([`serve_ext_authz_grpc`], `envoy.service.auth.v3.Authorization/Check`):
//!   the header rule, else the service-account rule on `source.principal`.
//! * Demo backend ([`serve_backend`]): `/productpage`, `/api/v1/products`, `/health`, `/echo/*`.
//!
//! The behaviour follows `shared/spec/istio-ext-authz.md` Part D; log lines go to stderr in
//! Go's `log` format, so they read like the original sample's.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use tokio::net::TcpListener;

use crate::golog::golog;

mod backend;
mod golog;
mod grpc_authz;
mod http_authz;
mod prototext;
mod server;

/// Request header whose value decides the check.
pub const CHECK_HEADER: &str = "x-ext-authz";
/// The only value of [`CHECK_HEADER`] that allows (exact, case-sensitive).
pub const ALLOWED_VALUE: &str = "allow";
/// Response header carrying `allowed` or `denied`.
pub const RESULT_HEADER: &str = "x-ext-authz-check-result";
/// Response header carrying a dump of what the check server received.
pub const RECEIVED_HEADER: &str = "x-ext-authz-check-received";
/// Response header echoing (HTTP) or overriding (gRPC) the client's value.
pub const OVERRIDE_HEADER: &str = "x-ext-authz-additional-header-override";
/// The value the gRPC server puts in [`OVERRIDE_HEADER`].
pub const GRPC_OVERRIDE_VALUE: &str = "grpc-additional-header-override-value";
/// Body of every denial: 76 bytes, literal backticks, no trailing newline.
pub const DENY_BODY: &str = "denied by ext_authz for not found header `x-ext-authz: allow` in the request";
/// Response header the demo backend adds, carrying the `x-ext-authz-check-result` it received.
pub const BACKEND_RECEIVED_HEADER: &str = "x-backend-received-check-result";

/// Dumps longer than this many bytes are replaced by [`TOO_LONG`]: the sample's guard against
/// Envoy's 60 KiB header limit (istio PR #49363).
const MAX_DUMP_LEN: usize = 60_000;
const TOO_LONG: &str = "<too-long>";

/// Settings of the sample check servers (the Go sample's flags).
#[derive(Debug, Clone)]
pub struct SampleConfig {
    /// gRPC rule: without an `x-ext-authz` header, allow iff `source.principal` ends with
    /// `"/sa/" + allow_service_account`. The Go flag `-allow_service_account`.
    pub allow_service_account: String,
}

impl Default for SampleConfig {
    fn default() -> Self {
        Self {
            allow_service_account: "a".to_owned(),
        }
    }
}

/// How many checks each server has answered, so tests can assert "authz saw zero checks".
#[derive(Debug, Default)]
pub struct CheckCounters {
    pub http: AtomicU64,
    pub grpc: AtomicU64,
}

/// Serves the HTTP check protocol (HTTP/1.1 and h2c) on `listener` until the future is dropped.
/// Dropping it also closes the connections it accepted.
pub async fn serve_ext_authz_http(
    listener: TcpListener,
    cfg: Arc<SampleConfig>,
    counters: Arc<CheckCounters>,
) -> std::io::Result<()> {
    http_authz::serve(listener, cfg, counters).await
}

/// Serves `envoy.service.auth.v3.Authorization` (h2c, many streams per connection) on `listener`
/// until the future is dropped.
pub async fn serve_ext_authz_grpc(
    listener: TcpListener,
    cfg: Arc<SampleConfig>,
    counters: Arc<CheckCounters>,
) -> std::io::Result<()> {
    grpc_authz::serve(listener, cfg, counters).await
}

/// Serves the demo backend (HTTP/1.1 and h2c) on `listener` until the future is dropped.
pub async fn serve_backend(listener: TcpListener) -> std::io::Result<()> {
    backend::serve(listener).await
}

/// Binds HTTP and gRPC (ports may be 0), logs the two Starting lines with the real port, serves
/// both until the future is dropped.
pub async fn run_ext_authz(http: SocketAddr, grpc: SocketAddr, cfg: SampleConfig) -> std::io::Result<()> {
    let http = bind(http, "HTTP").await?;
    let grpc = bind(grpc, "gRPC").await?;
    let (cfg, counters) = (Arc::new(cfg), Arc::new(CheckCounters::default()));
    tokio::try_join!(
        serve_ext_authz_http(http, cfg.clone(), counters.clone()),
        serve_ext_authz_grpc(grpc, cfg, counters),
    )?;
    Ok(())
}

/// Binds `addr`, logs its Starting line with the real port and serves the demo backend.
pub async fn run_backend(addr: SocketAddr) -> std::io::Result<()> {
    serve_backend(bind(addr, "backend").await?).await
}

/// Binds and logs like the Go sample: `Starting HTTP server at [::]:8000`, or
/// `Failed to start HTTP server: <err>` before returning the error.
async fn bind(addr: SocketAddr, what: &str) -> std::io::Result<TcpListener> {
    let bound = TcpListener::bind(addr)
        .await
        .and_then(|listener| Ok((listener.local_addr()?, listener)));
    match bound {
        Ok((local, listener)) => {
            golog!("Starting {what} server at {local}");
            Ok(listener)
        }
        Err(err) => {
            golog!("Failed to start {what} server: {err}");
            Err(err)
        }
    }
}

/// The sample's `returnIfNotTooLong` test; lengths count bytes, as Go's `len` does.
fn is_too_long(dump: &[u8]) -> bool {
    dump.len() > MAX_DUMP_LEN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_body_is_76_bytes() {
        assert_eq!(DENY_BODY.len(), 76);
        assert!(!DENY_BODY.ends_with('\n'));
    }

    #[test]
    fn too_long_boundary_is_60000_bytes() {
        assert!(!is_too_long(&[b'x'; MAX_DUMP_LEN]));
        assert!(is_too_long(&[b'x'; MAX_DUMP_LEN + 1]));
    }
}
