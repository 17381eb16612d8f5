//! The binary as a user runs it: `--help` everywhere, `validate` errors, and `demo` serving the
//! seed's three scenarios.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_authgate");

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn every_subcommand_has_help() {
    for sub in [
        &[][..],
        &["demo"],
        &["run"],
        &["ext-authz"],
        &["backend"],
        &["validate"],
        &["explain"],
    ] {
        let out = Command::new(BIN)
            .args(sub)
            .arg("--help")
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(out.status.success(), "{sub:?} --help failed");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"), "{sub:?}");
    }
}

#[test]
fn validate_names_file_line_and_field() {
    let dir = std::env::temp_dir().join(format!("authgate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let bad = dir.join("broken.yaml");
    std::fs::write(
        &bad,
        "extensionProviders:\n  - name: ext-authz-grpc\n    envoyExtAuthzGrpc:\n      service: ext-authz\n      port: 9000\n      timeout: ten seconds\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(&bad)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken.yaml:2"), "{err}");
    assert!(
        err.contains("extensionProviders[0].envoyExtAuthzGrpc.timeout"),
        "{err}"
    );

    let typo = dir.join("typo.yaml");
    std::fs::write(
        &typo,
        "listeners:\n  - address: 127.0.0.1:8080\n    protocl: h2\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(&typo)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("typo.yaml:3") && err.contains("protocl"), "{err}");

    let out = Command::new(BIN)
        .args([
            "validate",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/seed-grpc.yaml"),
        ])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // The README's Istio example: a gateway file plus the Istio manifests, unchanged.
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    let out = Command::new(BIN)
        .args([
            "validate",
            "--config",
            &format!("{examples}/gateway-for-istio.yaml"),
        ])
        .args(["--istio", &format!("{examples}/istio")])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("4 providers, 2 policies"));
    let _ = std::fs::remove_dir_all(&dir);
}

fn free_port() -> u16 {
    match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
        Ok(a) => a.port(),
        Err(e) => panic!("{e}"),
    }
}

async fn demo(provider: &str) {
    let (gw, h, g, b) = (free_port(), free_port(), free_port(), free_port());
    let child = Command::new(BIN)
        .args(["demo", "--provider", provider])
        .args(["--port", &gw.to_string(), "--authz-http-port", &h.to_string()])
        .args([
            "--authz-grpc-port",
            &g.to_string(),
            "--backend-port",
            &b.to_string(),
            "--admin-port",
            "0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let _guard = Killed(child);
    let at: std::net::SocketAddr = format!("127.0.0.1:{gw}")
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    // Wait (bounded) for the demo to listen.
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(at).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = common::get(at, "/api/v1/products", &[]).await;
    assert_eq!(r.status, 200);
    let r = common::get(at, "/productpage", &[("x-ext-authz", "deny")]).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.header("x-ext-authz-check-result"), Some("denied"));
    let r = common::get(at, "/productpage", &[("x-ext-authz", "allow")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-backend-received-check-result"), Some("allowed"));
}

#[tokio::test]
async fn demo_serves_the_seed_grpc() {
    demo("grpc").await;
}

#[tokio::test]
async fn demo_serves_the_seed_http() {
    demo("http").await;
}

/// The Kubernetes example mounts a gateway file and Istio objects from ConfigMaps; both must
/// validate as they are written there.
#[test]
fn kubernetes_example_configmaps_validate() {
    let manifest = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/kubernetes/authgate.yaml"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    // The literal block under `  <key>: |`, de-indented.
    let block = |key: &str| -> String {
        let start = manifest
            .find(&format!("  {key}: |\n"))
            .unwrap_or_else(|| panic!("no {key}"))
            + key.len()
            + 6;
        manifest[start..]
            .lines()
            .take_while(|l| l.is_empty() || l.starts_with("    "))
            .map(|l| l.get(4..).unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let dir = std::env::temp_dir().join(format!("authgate-k8s-{}", std::process::id()));
    let istio = dir.join("istio");
    std::fs::create_dir_all(&istio).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.join("gateway.yaml"), block("gateway.yaml")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(istio.join("mesh.yaml"), block("mesh.yaml")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(istio.join("policy.yaml"), block("policy.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(dir.join("gateway.yaml"))
        .arg("--istio")
        .arg(&istio)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 providers, 1 policies"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}
