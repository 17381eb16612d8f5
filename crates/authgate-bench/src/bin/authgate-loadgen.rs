//! `authgate-loadgen`: open-loop (fixed rate) or closed-loop HTTP/1.1, h2c and TLS load with
//! an HdrHistogram. Prints `MEASURE_START` / `MEASURE_END` on stdout when the measured window
//! opens and closes (so `bench/run` samples `/proc` exactly there), then one JSON line
//! prefixed `RESULT `. Runs on one thread: pin it with `taskset`.
//!
//! ```text
//! authgate-loadgen --url http://127.0.0.1:18080/productpage -H 'x-ext-authz: allow' \
//!     --rate 2000 --connections 32 --warmup 2 --duration 10
//! ```

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use authgate_bench::loadgen::{self, Phase, Spec};
use clap::Parser;
use http::{HeaderName, HeaderValue, Method, Uri};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

#[derive(Parser)]
#[command(version, about = "Open-loop / closed-loop HTTP load generator for bench/run")]
struct Args {
    /// Target URL (http:// or https://).
    #[arg(long)]
    url: Uri,
    /// Extra request header `name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    #[arg(long, default_value = "GET")]
    method: Method,
    /// Offered requests per second over all connections; 0 = closed loop (saturation).
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    #[arg(long, short = 'c', default_value_t = 32)]
    connections: usize,
    /// h2: concurrent streams per connection (closed loop: kept in flight; open loop: cap).
    #[arg(long, default_value_t = 1)]
    streams: usize,
    /// Seconds of load before the measured window.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Seconds in the measured window.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// h2c prior knowledge (ALPN h2 over TLS) instead of HTTP/1.1.
    #[arg(long)]
    http2: bool,
    /// PEM CA certificate(s) to trust for https:// targets.
    #[arg(long)]
    cacert: Option<PathBuf>,
    /// Closed loop: send exactly this many requests in all, then stop (ignores --duration).
    #[arg(long)]
    requests: Option<u64>,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
}

fn parse_header(h: &str) -> Result<(HeaderName, HeaderValue)> {
    let (k, v) = h
        .split_once(':')
        .with_context(|| format!("header {h:?}: expected 'name: value'"))?;
    Ok((
        HeaderName::from_bytes(k.trim().as_bytes())?,
        HeaderValue::from_str(v.trim())?,
    ))
}

fn tls_config(cacert: &std::path::Path, http2: bool) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(cacert).with_context(|| format!("read {}", cacert.display()))? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![if http2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    Ok(Arc::new(cfg))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let headers = args
        .headers
        .iter()
        .map(|h| parse_header(h))
        .collect::<Result<Vec<_>>>()?;
    let tls = match &args.cacert {
        Some(p) => Some(tls_config(p, args.http2)?),
        None => None,
    };
    let spec = Spec {
        uri: args.url,
        method: args.method,
        headers,
        rate: args.rate,
        connections: args.connections,
        streams: args.streams,
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.duration),
        http2: args.http2,
        tls,
        request_timeout: Duration::from_secs_f64(args.timeout),
        max_requests: args.requests,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(loadgen::run(spec, |phase| {
        let mut out = std::io::stdout().lock();
        let _ = match phase {
            Phase::MeasureStart => writeln!(out, "MEASURE_START"),
            Phase::MeasureEnd => writeln!(out, "MEASURE_END"),
        };
        let _ = out.flush();
    }))?;
    println!("RESULT {}", report.to_json());
    Ok(())
}
