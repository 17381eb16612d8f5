//! The authgate request pipeline: listeners, routing, authorization (Istio CUSTOM/DENY/ALLOW
//! with Envoy ext_authz providers) and upstream forwarding.

mod access_log;
mod admin;
mod authority;
mod body;
mod error;
mod framing;
mod headers;
mod metrics;
mod pipeline;
mod server;
mod snapshot;
mod tls;
mod upstream;

pub use admin::config_dump;
pub use body::{BoxError, ProxyBody};
pub use error::ProxyError;
pub use pipeline::{ConnInfo, TlsInfo};
pub use server::{Gateway, Shared};
pub use snapshot::{Snapshot, SnapshotError};
