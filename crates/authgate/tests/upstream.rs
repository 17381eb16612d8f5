//! Upstream features: TLS to backends, passive ejection of endpoints that refuse connections,
//! and least-request balancing.

mod common;

use common::*;

#[tokio::test]
async fn tls_to_the_backend_verifies_the_certificate() {
    let sample = start_sample().await;
    let pki = Pki::new("upstream-tls");
    let (cert, key, _) = pki.server_cert("inner", &["inner.example.com"]);
    let path = |p: &std::path::Path| p.display().to_string();
    // A TLS front (another gateway) before the demo backend plays the TLS backend.
    let inner = gateway(
        "listeners: [{address: \"127.0.0.1:0\", tls: {certificates: [{certFile: \"{{cert}}\", keyFile: \"{{key}}\"}]}}]\nbackends: [{name: b, endpoints: [\"{{b}}\"]}]\nroutes: [{backend: b}]\n",
        &[("cert", path(&cert)), ("key", path(&key)), ("b", sample.backend.to_string())],
    )
    .await;
    let outer_yaml = "listeners: [{address: \"127.0.0.1:0\"}]\nbackends: [{name: tls, endpoints: [\"{{inner}}\"], tls: {caFile: \"{{ca}}\", serverName: {{name}}}}]\nroutes: [{backend: tls}]\n";
    let vars = |name: &str| {
        vec![
            ("inner", gw_addr(&inner).to_string()),
            ("ca", path(&pki.ca_file)),
            ("name", name.to_owned()),
        ]
    };
    let outer = gateway(outer_yaml, &vars("inner.example.com")).await;
    let r = get(gw_addr(&outer), "/api/v1/products", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json"))
    );

    // The wrong name fails verification: never a silent plaintext or unverified fallback.
    let wrong = gateway(outer_yaml, &vars("other.example.com")).await;
    let r = get(gw_addr(&wrong), "/api/v1/products", &[]).await;
    assert_eq!(r.status, 503, "{}", r.text());
}

async fn ejection(lb: &str) {
    let sample = start_sample().await;
    let dead = closed_port().await;
    let gw = gateway(
        "listeners: [{address: \"127.0.0.1:0\"}]\nbackends: [{name: b, lbPolicy: {{lb}}, endpoints: [\"{{dead}}\", \"{{live}}\"]}]\nroutes: [{backend: b}]\n",
        &[("lb", lb.to_owned()), ("dead", dead.to_string()), ("live", sample.backend.to_string())],
    )
    .await;
    let mut failed = 0;
    for _ in 0..20 {
        let r = get(gw_addr(&gw), "/health", &[]).await;
        if r.status != 200 {
            assert_eq!(r.status, 503);
            failed += 1;
        }
    }
    // Without ejection every other request would hit the dead endpoint (10 of 20).
    assert!(failed <= 1, "{failed} requests went to the refusing endpoint");
    let stats = admin(&gw, "/stats/prometheus").await.text();
    assert!(
        metric(&stats, "authgate_upstream_cx_connect_fail_total{backend=\"b\"}").is_some_and(|v| v >= 1.0),
        "{stats}"
    );
}

#[tokio::test]
async fn refusing_endpoint_is_ejected_round_robin() {
    ejection("ROUND_ROBIN").await;
}

#[tokio::test]
async fn refusing_endpoint_is_ejected_least_request() {
    ejection("LEAST_REQUEST").await;
}
