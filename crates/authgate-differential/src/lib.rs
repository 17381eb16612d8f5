//! The differential harness of issue 3: the same requests through authgate and through a real
//! Envoy 1.40 configured equivalently, both pointed at the same recording authorization
//! services and backend; then a field-by-field comparison of what the client, the backend and
//! the authorization service saw. `docs/compatibility.md` explains the method and lists the
//! intentional differences.
//!
//! * [`recorder`]: the recording, scriptable HTTP/gRPC authz servers and backend.
//! * [`envoy`]: finding and running Envoy, and generating its bootstrap from an authgate config
//!   the way istiod would.
//! * [`client`]: the downstream client (HTTP/1.1 and h2c).
//! * [`grpc`]: scripted `CheckResponse`s and `CheckRequest` flattening.
//! * [`corpus`]: the gateway configuration and the cases.
//! * [`compare`]: observations flattened into fields, normalized, and diffed.
//! * [`listed`]: the intentional differences (mirrors `docs/compatibility.md`).
//! * [`harness`]: running cases, classifying and printing.
//!
//! The tests live in `tests/differential.rs`.
#![forbid(unsafe_code)]

pub mod client;
pub mod compare;
pub mod corpus;
pub mod envoy;
pub mod grpc;
pub mod harness;
pub mod listed;
pub mod recorder;
