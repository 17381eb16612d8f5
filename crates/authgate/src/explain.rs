//! `authgate explain`: what the gateway would do with one request, without sending it.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    config: crate::ConfigArgs,
    /// The request line: `METHOD URL`, e.g. `GET https://bookinfo.example.com:8443/productpage?x=1`.
    request: String,
    /// Request headers, `name: value`. Repeatable.
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Client address (direct peer).
    #[arg(long)]
    from: Option<std::net::IpAddr>,
}

pub fn explain(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let _ = (&args.request, &args.headers, &args.from, PathBuf::new());
    let _cfg = crate::load(&args.config.config, &args.config.istio).map_err(|e| anyhow::anyhow!("{e}"))?;
    anyhow::bail!("explain: not wired yet")
}
