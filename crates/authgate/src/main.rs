//! `authgate`: an ingress gateway that delegates authorization to an external service, the
//! custom authorization model of Istio and Alibaba Cloud Service Mesh (Envoy ext_authz).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use authgate_config::Config;
use authgate_proxy::{Gateway, Snapshot};
use clap::{Parser, Subcommand, ValueEnum};

mod explain;
mod run;

const SEED_GRPC: &str = include_str!("../../../examples/seed-grpc.yaml");
const SEED_HTTP: &str = include_str!("../../../examples/seed-http.yaml");

#[derive(Parser)]
#[command(name = "authgate", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// The seed scenario in one process: demo backend, sample ext-authz service and the gateway
    /// (custom authorization on /productpage). The default when no command is given.
    Demo(DemoArgs),
    /// Run the gateway from a YAML configuration file.
    Run(RunArgs),
    /// Run the sample authorization service (Istio's ext-authz sample): HTTP and gRPC.
    ExtAuthz(ExtAuthzArgs),
    /// Run the demo backend (/productpage, /api/v1/products, /health, /echo/*).
    Backend(BackendArgs),
    /// Parse and validate a configuration; print every error with file, line and field.
    Validate(ConfigArgs),
    /// Explain how the gateway would handle one request: normalized path, route, each
    /// policy's verdict, and the exact check request a provider would receive.
    Explain(explain::ExplainArgs),
}

#[derive(clap::Args)]
struct DemoArgs {
    /// Which ext_authz provider protects /productpage.
    #[arg(long, value_enum, default_value_t = ProviderChoice::Grpc)]
    provider: ProviderChoice,
    /// Gateway port.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Address the gateway listens on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    bind: IpAddr,
    /// Sample ext-authz HTTP port.
    #[arg(long, default_value_t = 8000)]
    authz_http_port: u16,
    /// Sample ext-authz gRPC port.
    #[arg(long, default_value_t = 9000)]
    authz_grpc_port: u16,
    /// Demo backend port.
    #[arg(long, default_value_t = 9080)]
    backend_port: u16,
    /// Admin listener port on 127.0.0.1 (/ready, /stats/prometheus, /config_dump); 0 picks one.
    #[arg(long, default_value_t = 15000)]
    admin_port: u16,
}

impl Default for DemoArgs {
    fn default() -> Self {
        Self {
            provider: ProviderChoice::Grpc,
            port: 8080,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            authz_http_port: 8000,
            authz_grpc_port: 9000,
            backend_port: 9080,
            admin_port: 15000,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum ProviderChoice {
    Grpc,
    Http,
}

#[derive(clap::Args)]
struct ConfigArgs {
    /// Gateway configuration file (YAML).
    #[arg(long, short)]
    config: PathBuf,
    /// Istio YAML file or directory (AuthorizationPolicy, the istio ConfigMap, MeshConfig).
    /// Repeatable.
    #[arg(long)]
    istio: Vec<PathBuf>,
}

#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// Worker threads (0: one per CPU).
    #[arg(long, default_value_t = 0)]
    workers: usize,
}

#[derive(clap::Args)]
struct ExtAuthzArgs {
    /// HTTP port.
    #[arg(long, default_value_t = 8000)]
    http: u16,
    /// gRPC port.
    #[arg(long, default_value_t = 9000)]
    grpc: u16,
    /// Service-account suffix the gRPC check allows when x-ext-authz is absent.
    #[arg(
        long = "allow-service-account",
        alias = "allow_service_account",
        default_value = "a"
    )]
    allow_service_account: String,
}

#[derive(clap::Args)]
struct BackendArgs {
    #[arg(long, default_value_t = 9080)]
    port: u16,
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    bind: IpAddr,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    authgate_config::parse_duration(s)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Demo(DemoArgs::default()));
    let workers = match &command {
        Command::Run(r) => r.workers,
        _ => 0,
    };
    init_tracing();
    // One worker means one thread doing everything: the current-thread scheduler does that
    // without the work-stealing machinery (the `--concurrency 1` / `worker_processes 1` setup).
    let mut rt = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    rt.enable_all();
    if workers > 1 {
        rt.worker_threads(workers);
    }
    let rt = match rt.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("authgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("authgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AUTHGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Demo(args) => demo(args).await,
        Command::Run(args) => run::run(args.config.config, args.config.istio, args.drain_timeout).await,
        Command::ExtAuthz(args) => {
            let cfg = authgate_sample::SampleConfig {
                allow_service_account: args.allow_service_account,
            };
            let any = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
            authgate_sample::run_ext_authz(
                SocketAddr::new(any, args.http),
                SocketAddr::new(any, args.grpc),
                cfg,
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Backend(args) => {
            let addr = SocketAddr::new(args.bind, args.port);
            eprintln!("Starting demo backend at {addr}");
            authgate_sample::run_backend(addr).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate(args) => Ok(validate(&args.config, &args.istio)),
        Command::Explain(args) => explain::explain(args),
    }
}

/// Loads and compiles a configuration the way `run` does, without binding anything.
pub(crate) fn load(config: &Path, istio: &[PathBuf]) -> Result<Config, String> {
    let mut cfg = authgate_config::load(config, istio).map_err(|e| e.to_string())?;
    let engine = authgate_policy::PolicyEngine::compile(&cfg).map_err(|errs| {
        errs.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    // The engine's notes (a CUSTOM policy naming an undefined provider, ignored dry-run
    // policies) are printed by `validate` and logged by `run`.
    cfg.notes.extend(engine.notes().iter().cloned());
    Ok(cfg)
}

/// Everything `run` does before binding: parse, validate, compile policies, and build the
/// snapshot (provider clients, upstream pools, TLS material), so `validate` says ok only for a
/// configuration `run` would accept.
fn validate(config: &Path, istio: &[PathBuf]) -> ExitCode {
    let checked = load(config, istio).and_then(|cfg| {
        let notes = cfg.notes.clone();
        let counts = (
            cfg.listeners.len(),
            cfg.routes.len(),
            cfg.providers.len(),
            cfg.policies.len(),
        );
        Snapshot::build(cfg)
            .map(|_| (notes, counts))
            .map_err(|e| e.to_string())
    });
    match checked {
        Ok((notes, (listeners, routes, providers, policies))) => {
            for note in &notes {
                println!("note: {note}");
            }
            println!(
                "{}: ok ({listeners} listeners, {routes} routes, {providers} providers, {policies} policies)",
                config.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let (yaml, name) = match args.provider {
        ProviderChoice::Grpc => (SEED_GRPC, "examples/seed-grpc.yaml"),
        ProviderChoice::Http => (SEED_HTTP, "examples/seed-http.yaml"),
    };
    let mut config =
        authgate_config::parse(yaml, name, Path::new("."), &[]).map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(l) = config.listeners.first_mut() {
        l.address = SocketAddr::new(args.bind, args.port);
    }
    for p in &mut config.providers {
        p.port = match p.kind {
            authgate_config::ProviderKind::Grpc => args.authz_grpc_port,
            authgate_config::ProviderKind::Http(_) => args.authz_http_port,
        };
    }
    config.admin = Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), args.admin_port));
    for b in &mut config.backends {
        for e in &mut b.endpoints {
            e.port = args.backend_port;
        }
    }

    let backend_addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), args.backend_port);
    let backend = tokio::net::TcpListener::bind(backend_addr)
        .await
        .with_context(|| format!("demo backend on {backend_addr}"))?;
    eprintln!("Starting demo backend at {backend_addr}");
    let any = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    let sample = authgate_sample::run_ext_authz(
        SocketAddr::new(any, args.authz_http_port),
        SocketAddr::new(any, args.authz_grpc_port),
        authgate_sample::SampleConfig::default(),
    );
    let snapshot = Snapshot::build(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let gateway = Gateway::start(snapshot).await.context("starting the gateway")?;
    let addr = gateway.local_addrs().first().copied().context("no listener")?;
    let admin = gateway
        .admin_addr()
        .map_or_else(|| "-".to_owned(), |a| a.to_string());
    let shown = if addr.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
    } else {
        addr
    };
    eprintln!(
        "\nauthgate demo: gateway on http://{shown} ({} provider protects /productpage)\n\n\
         Scenario 1, a path without authorization (expect 200):\n  curl -I http://{shown}/api/v1/products\n\n\
         Scenario 2, denied by the ext-authz service (expect 403, x-ext-authz-check-result: denied):\n  curl -I -H \"x-ext-authz: deny\" http://{shown}/productpage\n\n\
         Scenario 3, allowed by the ext-authz service (expect 200):\n  curl -I -H \"x-ext-authz: allow\" http://{shown}/productpage\n\n\
         Admin: http://{admin}/stats/prometheus  http://{admin}/config_dump\n",
        match args.provider {
            ProviderChoice::Grpc => "gRPC",
            ProviderChoice::Http => "HTTP",
        }
    );
    tokio::select! {
        r = authgate_sample::serve_backend(backend) => r.context("demo backend")?,
        r = sample => r.context("sample ext-authz service")?,
        () = run::shutdown_signal() => {}
    }
    gateway.shutdown(Duration::from_secs(5)).await;
    Ok(ExitCode::SUCCESS)
}
