//! Istio YAML, unchanged, through the binary: `authgate run --istio examples/istio/` serving
//! the seed scenarios, `authgate validate` on an invalid AuthorizationPolicy, and
//! `authgate explain`.
//!
//! The example manifests name `ext-authz.default.svc.cluster.local:9000` (and `:8000`, and the
//! same in namespace `foo`) and must stay unchanged, so the sample ext-authz service is bound
//! on those fixed ports on a loopback address of its own (`127.x.y.z`, free for sure), and the
//! gateway file's `staticHosts` points the service names there.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use authgate_sample::{CheckCounters, SampleConfig};
use common::*;

const DENY_BODY: &str = authgate_sample::DENY_BODY;

fn examples_istio() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/istio")
}

/// The sample ext-authz service on `ip:8000` (HTTP) and `ip:9000` (gRPC), the ports the
/// examples name, on a loopback address nobody else uses.
async fn sample_on_example_ports() -> (IpAddr, Arc<CheckCounters>) {
    let seed = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    for attempt in 0..64u32 {
        let n = seed.wrapping_add(attempt.wrapping_mul(2_654_435_761));
        let ip = IpAddr::V4(Ipv4Addr::new(
            127,
            (n >> 16) as u8 | 1,
            (n >> 8) as u8,
            (n as u8).clamp(2, 254),
        ));
        let (Ok(h), Ok(g)) = (
            tokio::net::TcpListener::bind(SocketAddr::new(ip, 8000)).await,
            tokio::net::TcpListener::bind(SocketAddr::new(ip, 9000)).await,
        ) else {
            continue;
        };
        let counters = Arc::new(CheckCounters::default());
        let cfg = Arc::new(SampleConfig::default());
        tokio::spawn(authgate_sample::serve_ext_authz_http(
            h,
            cfg.clone(),
            counters.clone(),
        ));
        tokio::spawn(authgate_sample::serve_ext_authz_grpc(g, cfg, counters.clone()));
        return (ip, counters);
    }
    panic!("no loopback address with ports 8000 and 9000 free");
}

/// A gateway file that uses the examples as they are: only listeners, the backend, the route
/// and `staticHosts` for the service names they reference.
fn gateway_file(dir: &TempDir, authz_ip: IpAddr, backend_port: u16) -> PathBuf {
    dir.write(
        "gw.yaml",
        &format!(
            r#"listeners: [{{ name: http, address: "127.0.0.1:0" }}]
admin: {{ address: "127.0.0.1:0" }}
backends:
  - name: bookinfo
    endpoints: ["productpage.default.svc.cluster.local:{backend_port}"]
routes:
  - name: bookinfo
    match: {{ prefix: / }}
    backend: bookinfo
staticHosts:
  ext-authz.default.svc.cluster.local: {authz_ip}
  ext-authz.foo.svc.cluster.local: {authz_ip}
  productpage.default.svc.cluster.local: 127.0.0.1
"#
        ),
    )
}

fn grpc(c: &CheckCounters) -> u64 {
    c.grpc.load(Ordering::SeqCst)
}

fn http(c: &CheckCounters) -> u64 {
    c.http.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_istio_examples_serves_the_seed_scenarios() {
    let (authz_ip, counters) = sample_on_example_ports().await;
    let backend = bind().await;
    let backend_port = addr(&backend).port();
    tokio::spawn(authgate_sample::serve_backend(backend));
    let dir = TempDir::new("istio-run");
    let gw_file = gateway_file(&dir, authz_ip, backend_port);
    let istio = examples_istio();
    let istio_arg = istio.to_string_lossy().into_owned();
    let child = spawn_binary(&gw_file, &["--istio", &istio_arg]);
    let at = child.listen;
    let stderr = || child.stderr_text();

    // Scenario 1: outside the rules, no check.
    let r = get(at, "/api/v1/products", &[]).await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), stderr());
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json"))
    );
    assert_eq!((grpc(&counters), http(&counters)), (0, 0));

    // Scenario 2: denied by the gRPC provider the seed manifest names.
    let r = get(at, "/productpage", &[("x-ext-authz", "deny")]).await;
    assert_eq!(r.status, 403, "{}\n{}", r.text(), stderr());
    assert_eq!(r.text(), DENY_BODY);
    assert_eq!(r.header("x-ext-authz-check-result"), Some("denied"));
    assert_eq!(grpc(&counters), 1);

    // Scenario 3: allowed; the backend saw the service's verdict.
    let r = get(at, "/productpage", &[("x-ext-authz", "allow")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/html"))
    );
    assert_eq!(r.header("x-backend-received-check-result"), Some("allowed"));
    assert_eq!(grpc(&counters), 2);

    // The bypass spellings reach the check too.
    for target in [
        "/public/../productpage",
        "/public/%2e%2e/productpage",
        "//productpage",
        "/productpage;x=1",
    ] {
        let before = grpc(&counters);
        let raw = format!(
            "GET {target} HTTP/1.1\r\nHost: BOOKINFO.example.com.\r\nx-ext-authz: deny\r\nConnection: close\r\n\r\n"
        );
        let r = raw_request(at, raw.as_bytes()).await;
        assert_eq!(r.status, 403, "{target}: {}", r.text());
        assert_eq!(r.text(), DENY_BODY, "{target}");
        assert_eq!(grpc(&counters), before + 1, "{target}: checked");
    }

    // The Istio task's policy (httpbin-ext-authz.yaml) through `sample-ext-authz-grpc`.
    let before = grpc(&counters);
    let r = get(at, "/headers", &[("x-ext-authz", "deny")]).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.text(), DENY_BODY);
    let r = get(at, "/headers", &[("x-ext-authz", "allow")]).await;
    assert_ne!(r.status, 403, "allowed: the demo backend answers: {}", r.text());
    assert_eq!(grpc(&counters), before + 2);
    assert_eq!(http(&counters), 0, "no policy uses an HTTP provider");

    let err = stderr();
    assert!(!err.contains("ERROR"), "errors logged:\n{err}");
}

#[test]
fn validate_accepts_the_examples() {
    let dir = TempDir::new("istio-validate-ok");
    let gw = gateway_file(&dir, IpAddr::V4(Ipv4Addr::LOCALHOST), 9080);
    let out = Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args(["validate", "--config"])
        .arg(&gw)
        .arg("--istio")
        .arg(examples_istio())
        .env("NO_COLOR", "1")
        .output()
        .unwrap_or_else(|e| panic!("run authgate validate: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("ok"), "{stdout}");
}

/// Two invalid AuthorizationPolicy documents in one manifest: both reported, each naming the
/// file, a line inside its own document, the policy and the field; exit status non-zero.
#[test]
fn validate_names_file_line_and_field_of_an_invalid_policy() {
    let dir = TempDir::new("istio-validate-bad");
    let gw = gateway_file(&dir, IpAddr::V4(Ipv4Addr::LOCALHOST), 9080);
    let bad = dir.write(
        "bad-policy.yaml",
        r#"# A CUSTOM policy may not use principals (Istio rejects it at admission).
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: ext-authz-principals
  namespace: istio-system
spec:
  action: CUSTOM
  provider:
    name: ext-authz-grpc
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/sleep"]
    to:
    - operation:
        paths: ["/productpage"]
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: blacklist-typo
  namespace: istio-system
spec:
  action: DENY
  rules:
  - from:
    - source:
        ipBlocks: ["10.0.0.300/8"]
"#,
    );
    let out = Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args(["validate", "--config"])
        .arg(&gw)
        .arg("--istio")
        .arg(examples_istio().join("mesh-config.yaml"))
        .arg("--istio")
        .arg(&bad)
        .env("NO_COLOR", "1")
        .output()
        .unwrap_or_else(|e| panic!("run authgate validate: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let all = format!("{stdout}\n{stderr}");
    assert!(!out.status.success(), "exit 0 for an invalid policy:\n{all}");

    // (policy, field, first line of its document, last line of its document)
    for (policy, field, first, last) in [
        (
            "ext-authz-principals",
            "rules[0].from[0].source.principals",
            1,
            18,
        ),
        ("blacklist-typo", "rules[0].from[0].source.ipBlocks", 19, 29),
    ] {
        let line = all
            .lines()
            .find(|l| l.contains(policy) && l.contains(field))
            .unwrap_or_else(|| panic!("no error naming {policy} and {field}:\n{all}"));
        let at = line
            .find("bad-policy.yaml:")
            .unwrap_or_else(|| panic!("the error does not name the file with a line: {line}"));
        let n: u64 = line[at + "bad-policy.yaml:".len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap_or_else(|_| panic!("no line number after the file name: {line}"));
        assert!(
            (first..=last).contains(&n),
            "{policy}: line {n} is outside its document (lines {first}..={last}): {line}"
        );
    }
}

fn explain(gw: &Path, istio: &Path, request: &str, headers: &[&str]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_authgate"));
    cmd.args(["explain", "--config"])
        .arg(gw)
        .arg("--istio")
        .arg(istio)
        .arg(request)
        .env("NO_COLOR", "1");
    for h in headers {
        cmd.arg("-H").arg(h);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("run authgate explain: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "explain failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn explain_shows_normalized_path_matching_policy_and_check_request() {
    let dir = TempDir::new("istio-explain");
    let gw = gateway_file(&dir, IpAddr::V4(Ipv4Addr::LOCALHOST), 9080);
    let out = explain(
        &gw,
        &examples_istio(),
        "GET http://bookinfo.example.com/public/../productpage",
        &["x-ext-authz: allow"],
    );
    // The normalized path.
    assert!(out.contains("\"/productpage\""), "no normalized path:\n{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("normalized") && l.contains("\"/productpage\"")),
        "{out}"
    );
    // The matching policy, where it was written, and that it matched.
    let policy_line = out
        .lines()
        .find(|l| l.contains("CUSTOM") && l.contains("istio-system/ext-authz "))
        .unwrap_or_else(|| panic!("the seed policy is not listed:\n{out}"));
    assert!(
        policy_line.contains("MATCH") && !policy_line.contains("no match"),
        "{policy_line}"
    );
    assert!(
        policy_line.contains("ext-authz-productpage.yaml"),
        "{policy_line}"
    );
    assert!(policy_line.contains("ext-authz-grpc"), "{policy_line}");
    // The Istio task's policy applies but does not match /productpage.
    assert!(
        out.lines()
            .any(|l| l.contains("httpbin-ext-authz") && l.contains("no match")),
        "{out}"
    );
    // The check request the gRPC provider would receive: the normalized path and the header.
    let check = out
        .split_once("check request to provider \"ext-authz-grpc\"")
        .map(|(_, c)| c)
        .unwrap_or_else(|| panic!("no check request:\n{out}"));
    assert!(check.contains("\"/productpage\""), "check path:\n{check}");
    assert!(
        !check.contains("/public/"),
        "the raw path leaked into the check:\n{check}"
    );
    assert!(
        check.contains("x-ext-authz") && check.contains("\"allow\""),
        "{check}"
    );
    assert!(check.contains("bookinfo.example.com"), "host:\n{check}");
    // Only the matching provider would be called.
    assert!(
        !out.contains("check request to provider \"sample-ext-authz-grpc\""),
        "{out}"
    );
}

#[test]
fn explain_http_provider_check_request_and_rejections() {
    let dir = TempDir::new("istio-explain-http");
    let gw = gateway_file(&dir, IpAddr::V4(Ipv4Addr::LOCALHOST), 9080);
    // The same seed manifest switched to the HTTP provider, as its comment suggests.
    let seed = std::fs::read_to_string(examples_istio().join("ext-authz-productpage.yaml"))
        .unwrap_or_else(|e| panic!("read seed manifest: {e}"));
    let http_seed = seed.replace("name: ext-authz-grpc", "name: ext-authz-http");
    assert_ne!(seed, http_seed);
    let istio = TempDir::new("istio-explain-http-manifests");
    istio.write("ext-authz-productpage.yaml", &http_seed);
    let mesh = std::fs::read_to_string(examples_istio().join("mesh-config.yaml"))
        .unwrap_or_else(|e| panic!("read mesh config: {e}"));
    istio.write("mesh-config.yaml", &mesh);

    let out = explain(
        &gw,
        istio.path(),
        "GET http://BOOKINFO.example.com.//productpage;x=1?q=1#frag",
        &["x-ext-authz: allow", "cookie: secret"],
    );
    let check = out
        .split_once("check request to provider \"ext-authz-http\"")
        .map(|(_, c)| c)
        .unwrap_or_else(|| panic!("no HTTP check request:\n{out}"));
    // The request line the HTTP service would get: the normalized path and the query.
    assert!(
        check.contains("GET //productpage?q=1 HTTP/1.1"),
        "check request line:\n{check}"
    );
    assert!(check.contains("x-ext-authz: allow"), "{check}");
    assert!(
        !check.contains("cookie"),
        "only includeRequestHeadersInCheck headers:\n{check}"
    );
    assert!(!check.contains(";x=1") && !check.contains("frag"), "{check}");

    // Escaped slashes under REJECT: explain says 400, no provider.
    let reject = dir.write(
        "gw-reject.yaml",
        &format!(
            "{}pathNormalization: {{ normalization: BASE, escapedSlashes: REJECT }}\n",
            std::fs::read_to_string(&gw).unwrap_or_else(|e| panic!("read: {e}"))
        ),
    );
    let out = explain(
        &reject,
        &examples_istio(),
        "GET http://bookinfo.example.com/productpage%2Fx",
        &[],
    );
    assert!(out.contains("400"), "{out}");
    assert!(!out.contains("check request to provider"), "{out}");
}
