//! Envoy v3 `ext_authz` protobuf types, re-exported from `envoy-types`.
//!
//! Everything else in authgate imports protos from here, so the heavy generated code is compiled
//! in exactly one crate and never rebuilt by edits elsewhere.

pub use envoy_types::pb::envoy::config::core::v3 as core;
pub use envoy_types::pb::envoy::service::auth::v3 as auth;
pub use envoy_types::pb::envoy::r#type::v3 as http_status;
pub use envoy_types::pb::google::rpc;
pub use prost;
pub use prost_types;
pub use tonic;

/// The fully qualified gRPC method path of the v3 Check call.
pub const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";
