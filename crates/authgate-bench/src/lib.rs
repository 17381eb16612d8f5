//! Tools behind `bench/run` (see `BENCHMARKS.md`).
//!
//! - [`loadgen`]: an open-loop (fixed offered rate, latency measured from the *intended* send
//!   time, so a stalled proxy cannot hide its queueing: no coordinated omission) or closed-loop
//!   HTTP/1.1, h2c and TLS load generator with an HdrHistogram, used as the `authgate-loadgen`
//!   binary.
//! - [`fixtures`]: the seed configuration, requests and a minimal in-process authz service
//!   shared by the criterion benches (`benches/`) and the callgrind/DHAT driver
//!   (`authgate-microbench`).
//!
//! Nothing here asserts timings: numbers are reported, never judged, by code.

pub mod fixtures;
pub mod loadgen;
pub mod schedule;
