//! Issue 5, through the real binary (`authgate run`): hot reload on SIGHUP under continuous
//! load, SIGTERM drain, and the access log's response flags for upstream failures.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::*;

const CONFIG: &str = r#"
listeners: [{ address: "127.0.0.1:0" }]
admin: { address: "127.0.0.1:0" }
accessLog: { format: "off" }
backends: [{ name: bookinfo, endpoints: ["{{backend}}"] }]
routes: [{ name: "{{route}}", backend: bookinfo }]
extensionProviders:
  - name: grpc
    envoyExtAuthzGrpc: { service: "{{gh}}", port: {{gp}} }
authorizationPolicies:
  - name: ext-authz
    action: CUSTOM
    provider: { name: grpc }
    rules: [{ to: [{ operation: { paths: ["/productpage"] } }] }]
{{extra}}
"#;

fn config(sample: &Sample, route: &str, valid: bool) -> String {
    render(
        CONFIG,
        &[
            ("backend", sample.backend.to_string()),
            ("gh", sample.authz_grpc.ip().to_string()),
            ("gp", sample.authz_grpc.port().to_string()),
            ("route", route.to_owned()),
            (
                "extra",
                if valid {
                    ""
                } else {
                    "notAField: true   # unknown field: rejected"
                }
                .to_owned(),
            ),
        ],
    )
}

/// The config as the binary sees it: `<dir>/link/gateway.yaml`, a symlink to
/// `<dir>/real/gateway.yaml`. Rewriting the real file changes what a reload reads without
/// touching the watched directory, so SIGHUP is the only reload trigger and reload counts are
/// exact.
struct ConfigFile {
    _dir: TempDir,
    real: std::path::PathBuf,
    link: std::path::PathBuf,
}

impl ConfigFile {
    fn new(tag: &str, contents: &str) -> Self {
        let dir = TempDir::new(tag);
        let real_dir = dir.path().join("real");
        let link_dir = dir.path().join("link");
        for d in [&real_dir, &link_dir] {
            std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("mkdir: {e}"));
        }
        let real = real_dir.join("gateway.yaml");
        let link = link_dir.join("gateway.yaml");
        std::fs::write(&real, contents).unwrap_or_else(|e| panic!("write: {e}"));
        std::os::unix::fs::symlink(&real, &link).unwrap_or_else(|e| panic!("symlink: {e}"));
        Self {
            _dir: dir,
            real,
            link,
        }
    }

    fn write(&self, contents: &str) {
        std::fs::write(&self.real, contents).unwrap_or_else(|e| panic!("write {}: {e}", self.real.display()));
    }
}

async fn stats(gw: &mut Child) -> String {
    gw.admin_get("/stats/prometheus").await.text()
}

fn reloads(text: &str) -> (f64, f64) {
    (
        metric(text, "authgate_config_reload_ok_total").unwrap_or(0.0),
        metric(text, "authgate_config_reload_failed_total").unwrap_or(0.0),
    )
}

#[derive(Default)]
struct Load {
    ok: AtomicU64,
    failed: AtomicU64,
    errors: std::sync::Mutex<Vec<String>>,
}

impl Load {
    /// Counts one request; true when it succeeded.
    fn record(&self, what: &str, r: Result<Reply, String>) -> bool {
        match r {
            Ok(r) if r.status == 200 => {
                self.ok.fetch_add(1, Ordering::SeqCst);
                return true;
            }
            Ok(r) => self.fail(format!("{what}: status {} {}", r.status, r.text())),
            Err(e) => self.fail(format!("{what}: {e}")),
        }
        false
    }

    fn fail(&self, e: String) {
        self.failed.fetch_add(1, Ordering::SeqCst);
        let mut errors = self
            .errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if errors.len() < 20 {
            errors.push(e);
        }
    }
}

/// A bound on each client loop, far above what 20 reloads take.
const MAX_ITERATIONS: usize = 200_000;

struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

async fn h2_connect(
    at: SocketAddr,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Full<bytes::Bytes>> {
    let tcp = within("connect", tokio::net::TcpStream::connect(at))
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    h2_handshake(tcp).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_via_sighup() {
    let sample = start_sample().await;
    let file = ConfigFile::new("reload", &config(&sample, "route-start", true));
    let mut gw = spawn_binary(&file.link, &[]);
    let at = gw.listen;
    assert_eq!(route_name(&mut gw).await, "route-start");

    let load = Arc::new(Load::default());
    let done = Arc::new(AtomicBool::new(false));
    // Stops the client loops however this test ends (a panic included).
    let _stop = StopOnDrop(done.clone());
    let mut clients = Vec::new();
    // A keep-alive HTTP/1.1 connection through the authz path (a new one only after a failure,
    // which is counted).
    {
        let (load, done) = (load.clone(), done.clone());
        clients.push(tokio::spawn(async move {
            let mut conn = h1_connect(at).await;
            for _ in 0..MAX_ITERATIONS {
                if done.load(Ordering::SeqCst) {
                    break;
                }
                let req = http::Request::builder()
                    .uri("/productpage")
                    .header("host", "bookinfo.example.com")
                    .header("x-ext-authz", "allow")
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .unwrap_or_else(|e| panic!("{e}"));
                if !load.record("keep-alive /productpage", exchange_h1(&mut conn, req).await) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    conn = h1_connect(at).await;
                }
            }
        }));
    }
    // A fresh connection per request, no authz.
    {
        let (load, done) = (load.clone(), done.clone());
        clients.push(tokio::spawn(async move {
            for _ in 0..MAX_ITERATIONS {
                if done.load(Ordering::SeqCst) {
                    break;
                }
                let ok = load.record(
                    "fresh /api/v1/products",
                    try_send(at, "GET", "/api/v1/products", &[], b"").await,
                );
                if !ok {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    // An h2c connection through the authz path (a new one only after a failure).
    {
        let (load, done) = (load.clone(), done.clone());
        clients.push(tokio::spawn(async move {
            let mut h2 = h2_connect(at).await;
            for _ in 0..MAX_ITERATIONS {
                if done.load(Ordering::SeqCst) {
                    break;
                }
                let req = http::Request::builder()
                    .uri("http://bookinfo.example.com/productpage")
                    .version(http::Version::HTTP_2)
                    .header("x-ext-authz", "allow")
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .unwrap_or_else(|e| panic!("{e}"));
                let r = match tokio::time::timeout(PATIENCE, h2.send_request(req)).await {
                    Err(_) => Err("h2: no response in time".to_owned()),
                    Ok(Err(e)) => Err(format!("h2: {e}")),
                    Ok(Ok(resp)) => collect_reply(resp).await,
                };
                if !load.record("h2 /productpage", r) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    h2 = h2_connect(at).await;
                }
            }
        }));
    }

    let mut last_valid = "route-start".to_owned();
    for i in 0..20u32 {
        let valid = i % 2 == 0;
        let name = format!("route-{i}");
        file.write(&config(&sample, &name, valid));
        let before = load.ok.load(Ordering::SeqCst);
        gw.assert_alive(&format!("before reload {i}"));
        gw.signal("HUP");
        // Wait (bounded) until this reload is accounted for, so no two SIGHUPs coalesce.
        let want = f64::from(i + 1);
        let mut seen = (0.0, 0.0);
        for _ in 0..400 {
            gw.assert_alive(&format!("after SIGHUP {i}"));
            seen = reloads(&stats(&mut gw).await);
            if seen.0 + seen.1 >= want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(
            seen.0 + seen.1,
            want,
            "reload {i} ({}) was not accounted for: {seen:?}",
            if valid { "valid" } else { "invalid" }
        );
        if valid {
            last_valid = name;
        }
        assert_eq!(route_name(&mut gw).await, last_valid, "after reload {i}");
        // A short pause with traffic flowing (bounded: at most ~2 s).
        for _ in 0..40 {
            if load.ok.load(Ordering::SeqCst) >= before + 5 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    done.store(true, Ordering::SeqCst);
    for c in clients {
        within("client loop", c)
            .await
            .unwrap_or_else(|e| panic!("client: {e}"));
    }

    let text = stats(&mut gw).await;
    let (ok, failed) = reloads(&text);
    eprintln!(
        "reloads ok {ok} failed {failed}; requests ok {} failed {}",
        load.ok.load(Ordering::SeqCst),
        load.failed.load(Ordering::SeqCst)
    );
    let errors = load
        .errors
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    assert_eq!(
        load.failed.load(Ordering::SeqCst),
        0,
        "failed requests during reloads: {errors:#?}"
    );
    assert!(load.ok.load(Ordering::SeqCst) >= 20, "the load actually ran");
    assert!(text.contains("authgate_config_reload_failed_total 10"), "{text}");
    assert_eq!(failed, 10.0, "{text}");
    assert!(ok >= 10.0, "{text}");
}

// --- File watching --------------------------------------------------------------------------

/// The config file sits in a directory where other files change all the time (here the
/// gateway's own log, as `authgate run --config gw.yaml > gw.log` makes it): only changes to
/// the config itself reload. Before, every write to any file of the directory reloaded the
/// configuration (and dropped every pooled connection), and a log line per reload in the same
/// directory kept it reloading forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_config_files_changing_triggers_a_reload() {
    let backend = recorder().await;
    let dir = TempDir::new("watch");
    let yaml = |route: &str| {
        render(DRAIN, &[("backend", backend.addr.to_string())])
            .replace("name: all", &format!("name: {route}"))
    };
    let path = dir.write("gateway.yaml", &yaml("first"));
    let mut gw = spawn_binary(&path, &[]);
    assert_eq!(route_name(&mut gw).await, "first");
    for i in 0..10 {
        dir.write("gw.log", &format!("line {i}\n"));
        dir.write(".gateway.yaml.swp", "editor state");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Well past the 200 ms debounce of any reload those writes could have started.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        reloads(&stats(&mut gw).await),
        (0.0, 0.0),
        "writes to other files of the config directory reloaded the configuration"
    );

    // An editor saving by rename still counts.
    let tmp = dir.write("gateway.yaml.tmp", &yaml("second"));
    std::fs::rename(&tmp, &path).unwrap_or_else(|e| panic!("rename: {e}"));
    let seen = wait_route(&mut gw, "second", 5).await;
    assert_eq!(seen, "second", "the renamed config was not picked up");
    let (ok, failed) = reloads(&stats(&mut gw).await);
    assert!(
        (1.0..=2.0).contains(&ok) && failed == 0.0,
        "reloads ok={ok} failed={failed}"
    );
    gw.assert_alive("after the reloads");
}

/// A Kubernetes ConfigMap volume: `gateway.yaml -> ..data/gateway.yaml`, `..data ->
/// ..<timestamp>`; an update writes a new timestamped directory and renames a new `..data`
/// symlink over the old one, never touching `gateway.yaml` itself. That still reloads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_style_symlink_swap_reloads() {
    use std::os::unix::fs::symlink;
    let backend = recorder().await;
    let dir = TempDir::new("configmap");
    let yaml = |route: &str| {
        render(DRAIN, &[("backend", backend.addr.to_string())])
            .replace("name: all", &format!("name: {route}"))
    };
    let version = |name: &str, route: &str| {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("mkdir: {e}"));
        std::fs::write(d.join("gateway.yaml"), yaml(route)).unwrap_or_else(|e| panic!("write: {e}"));
    };
    version("..2026_12_04_1", "first");
    symlink("..2026_12_04_1", dir.path().join("..data")).unwrap_or_else(|e| panic!("symlink: {e}"));
    let path = dir.path().join("gateway.yaml");
    symlink("..data/gateway.yaml", &path).unwrap_or_else(|e| panic!("symlink: {e}"));
    let mut gw = spawn_binary(&path, &[]);
    assert_eq!(route_name(&mut gw).await, "first");

    version("..2026_12_04_2", "second");
    symlink("..2026_12_04_2", dir.path().join("..data_tmp")).unwrap_or_else(|e| panic!("symlink: {e}"));
    std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data"))
        .unwrap_or_else(|e| panic!("rename: {e}"));
    let seen = wait_route(&mut gw, "second", 5).await;
    assert_eq!(seen, "second", "the ConfigMap update was not picked up");
}

// --- SIGTERM drain --------------------------------------------------------------------------

const DRAIN: &str = r#"
listeners: [{ address: "127.0.0.1:0" }]
admin: { address: "127.0.0.1:0" }
accessLog: { format: "off" }
backends: [{ name: b, endpoints: ["{{backend}}"] }]
routes: [{ name: all, backend: b }]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests() {
    let backend = recorder().await;
    let file = ConfigFile::new("drain", &render(DRAIN, &[("backend", backend.addr.to_string())]));
    let mut gw = spawn_binary(&file.link, &["--drain-timeout", "20s"]);
    let at = gw.listen;
    let flight = tokio::spawn(async move { try_send(at, "GET", "/hold/term", &[], b"").await });
    assert_eq!(backend.next_arrival().await, "/hold/term");
    gw.signal("TERM");
    let mut refused = false;
    for _ in 0..500 {
        match tokio::net::TcpStream::connect(at).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                refused = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    assert!(refused, "no new connections after SIGTERM");
    backend.release(1);
    let flight = within("in-flight request", flight)
        .await
        .unwrap_or_else(|e| panic!("join: {e}"));
    let mut status = None;
    for _ in 0..400 {
        if let Ok(Some(s)) = gw.child.try_wait() {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let facts = format!("authgate exit status {status:?}; stderr:\n{}", gw.stderr_text());
    let r = flight.unwrap_or_else(|e| panic!("in-flight request failed during drain: {e}\n{facts}"));
    assert_eq!(r.status, 200, "{facts}");
    assert_eq!(r.text(), "ok /hold/term");
    let status = status.unwrap_or_else(|| panic!("authgate did not exit after draining; {facts}"));
    assert!(status.success(), "{facts}");
}

// --- Access log response flags --------------------------------------------------------------

const FLAGS: &str = r#"
listeners: [{ address: "127.0.0.1:0" }]
admin: { address: "127.0.0.1:0" }
accessLog: { format: json }
backends:
  - { name: dead, endpoints: ["{{dead}}"], connectTimeout: 2s }
  - { name: slow, endpoints: ["{{slow}}"] }
routes:
  - { name: dead, match: { prefix: /dead }, backend: dead }
  - { name: slow, match: { prefix: /hold }, backend: slow, timeout: 300ms }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_flags_upstream_failures() {
    let dead = closed_port().await;
    let slow = recorder().await;
    let file = ConfigFile::new(
        "flags",
        &render(
            FLAGS,
            &[("dead", dead.to_string()), ("slow", slow.addr.to_string())],
        ),
    );
    let gw = spawn_binary(&file.link, &[]);

    let r = get(gw.listen, "/dead/x", &[]).await;
    assert_eq!(r.status, 503, "{}", r.text());
    let r = get(gw.listen, "/hold/x", &[]).await;
    assert_eq!(r.status, 504, "{}", r.text());

    let mut lines = Vec::new();
    for _ in 0..200 {
        lines = gw
            .stdout_lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .collect::<Vec<_>>();
        if lines.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let find = |path: &str| {
        lines
            .iter()
            .find(|l| l["path"].as_str() == Some(path))
            .cloned()
            .unwrap_or_else(|| panic!("no access-log line for {path}: {lines:#?}"))
    };
    let dead_line = find("/dead/x");
    assert_eq!(dead_line["response_code"], 503, "{dead_line}");
    assert_eq!(dead_line["response_flags"], "UF", "{dead_line}");
    let slow_line = find("/hold/x");
    assert_eq!(slow_line["response_code"], 504, "{slow_line}");
    assert_eq!(slow_line["response_flags"], "UT", "{slow_line}");
}
