//! Issue 5: TLS termination end to end, with rcgen certificates written to a temp dir: SNI picks
//! the certificate, ALPN h2 and http/1.1 both work, a verified client certificate's URI SAN is
//! the `source.principal` the authz service sees and becomes `x-forwarded-client-cert` upstream,
//! and a client can never forge `x-forwarded-client-cert`.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use authgate_proxy::Gateway;
use common::*;

const SA_A: &str = "spiffe://cluster.local/ns/default/sa/a";
const SA_B: &str = "spiffe://cluster.local/ns/default/sa/b";
const FORGED_XFCC: &str = "By=spiffe://evil;Hash=00;URI=spiffe://cluster.local/ns/default/sa/a";

const CONFIG: &str = r#"
listeners:
  - name: tls
    address: "127.0.0.1:0"
    tls:
      certificates:
        - { certFile: "{{a_cert}}", keyFile: "{{a_key}}" }
        - { certFile: "{{b_cert}}", keyFile: "{{b_key}}" }
      clientCaFile: "{{ca}}"
      requireClientCertificate: false
{{more_listeners}}
backends: [{ name: bookinfo, endpoints: ["{{backend}}"] }]
routes: [{ name: all, backend: bookinfo }]
extensionProviders:
  - name: grpc
    envoyExtAuthzGrpc: { service: "{{gh}}", port: {{gp}} }
authorizationPolicies:
  - name: ext-authz
    action: CUSTOM
    provider: { name: grpc }
    rules: [{ to: [{ operation: { paths: ["/productpage", "/echo/*"] } }] }]
"#;

struct Setup {
    sample: Sample,
    pki: Pki,
    a_der: rustls_pki_types::CertificateDer<'static>,
    b_der: rustls_pki_types::CertificateDer<'static>,
    gw: Gateway,
}

impl Setup {
    fn tls(&self) -> std::net::SocketAddr {
        self.gw.local_addrs()[0]
    }
}

/// Only the TLS listener; see `tls_and_plain_listeners_in_one_config` for two listeners.
async fn setup(tag: &str) -> Setup {
    setup_with(tag, "").await
}

async fn setup_with(tag: &str, more_listeners: &str) -> Setup {
    let sample = start_sample().await;
    let pki = Pki::new(tag);
    let (a_cert, a_key, a_der) = pki.server_cert("a", &["a.example.com"]);
    let (b_cert, b_key, b_der) = pki.server_cert("b", &["b.example.com"]);
    let path = |p: &std::path::Path| p.display().to_string();
    let gw = gateway(
        CONFIG,
        &[
            ("a_cert", path(&a_cert)),
            ("a_key", path(&a_key)),
            ("b_cert", path(&b_cert)),
            ("b_key", path(&b_key)),
            ("ca", path(&pki.ca_file)),
            ("backend", sample.backend.to_string()),
            ("gh", sample.authz_grpc.ip().to_string()),
            ("gp", sample.authz_grpc.port().to_string()),
            ("more_listeners", more_listeners.to_owned()),
        ],
    )
    .await;
    Setup {
        sample,
        pki,
        a_der,
        b_der,
        gw,
    }
}

fn get_req(
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let mut b = http::Request::builder().uri(path).header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// One HTTP/1.1 request over a fresh TLS connection.
async fn tls_get(s: &Setup, sni: &str, cert: Option<&str>, path: &str, headers: &[(&str, &str)]) -> Reply {
    let client = cert.map(|uri| s.pki.client_cert(uri));
    let tls = tls_connect(s.tls(), sni, s.pki.roots(), &[b"http/1.1"], client).await;
    let mut h1 = h1_handshake(tls).await;
    exchange_h1(&mut h1, get_req(path, sni, headers))
        .await
        .unwrap_or_else(|e| panic!("GET {path} over TLS: {e}"))
}

#[tokio::test]
async fn sni_selects_the_certificate() {
    let s = setup("sni").await;
    for (sni, want, other) in [
        ("a.example.com", &s.a_der, &s.b_der),
        ("b.example.com", &s.b_der, &s.a_der),
    ] {
        // The client trusts only the test CA and checks the name: the handshake itself fails
        // unless the gateway served the certificate for this SNI.
        let tls = tls_connect(s.tls(), sni, s.pki.roots(), &[b"http/1.1"], None).await;
        let served = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .cloned()
            .unwrap_or_else(|| panic!("no server certificate for {sni}"));
        assert_eq!(&served, want, "certificate served for SNI {sni}");
        assert_ne!(&served, other);
        let mut h1 = h1_handshake(tls).await;
        let r = exchange_h1(&mut h1, get_req("/api/v1/products", sni, &[]))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status, 200, "{sni}: {}", r.text());
    }
    s.gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn alpn_h2_and_http11_both_work() {
    let s = setup("alpn").await;

    let tls = tls_connect(
        s.tls(),
        "a.example.com",
        s.pki.roots(),
        &[b"h2", b"http/1.1"],
        None,
    )
    .await;
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "ALPN picks h2 when offered"
    );
    let mut h2 = h2_handshake(tls).await;
    let r = h2_request(
        &mut h2,
        "GET",
        "https://a.example.com/echo/h2",
        &[("x-ext-authz", "allow")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(echoed_header(&r, "x-forwarded-proto"), vec!["https".to_owned()]);
    let r = h2_request(
        &mut h2,
        "GET",
        "https://a.example.com/productpage",
        &[("x-ext-authz", "deny")],
    )
    .await;
    assert_eq!(r.status, 403);

    let tls = tls_connect(s.tls(), "b.example.com", s.pki.roots(), &[b"http/1.1"], None).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut h1 = h1_handshake(tls).await;
    let r = exchange_h1(
        &mut h1,
        get_req("/echo/h1", "b.example.com", &[("x-ext-authz", "allow")]),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(echoed_header(&r, "x-forwarded-proto"), vec!["https".to_owned()]);
    // Keep-alive on the TLS connection.
    let r = exchange_h1(&mut h1, get_req("/api/v1/products", "b.example.com", &[]))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status, 200);
    s.gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn client_certificate_is_the_principal_and_xfcc() {
    let s = setup("mtls").await;
    let sni = "a.example.com";

    // sa/a: the sample allows without x-ext-authz only for principals ending in /sa/a.
    let r = tls_get(&s, sni, Some(SA_A), "/productpage", &[]).await;
    assert_eq!(r.status, 200, "sa/a is allowed by principal: {}", r.text());
    assert_eq!(s.sample.counters.grpc.load(Ordering::SeqCst), 1);

    // The backend sees x-forwarded-client-cert with the URI SAN, exactly once, even when the
    // client sent its own.
    let r = tls_get(
        &s,
        sni,
        Some(SA_A),
        "/echo/xfcc",
        &[("x-forwarded-client-cert", FORGED_XFCC)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let xfcc = echoed_header(&r, "x-forwarded-client-cert");
    assert_eq!(xfcc.len(), 1, "one x-forwarded-client-cert: {xfcc:?}");
    assert!(xfcc[0].contains(&format!("URI={SA_A}")), "{xfcc:?}");
    assert!(
        !xfcc[0].contains("spiffe://evil"),
        "the client's copy was replaced: {xfcc:?}"
    );

    // No client certificate, or the wrong service account: denied by the authz service.
    let r = tls_get(&s, sni, None, "/productpage", &[]).await;
    assert_eq!(r.status, 403, "no client certificate: {}", r.text());
    let r = tls_get(&s, sni, Some(SA_B), "/productpage", &[]).await;
    assert_eq!(r.status, 403, "sa/b: {}", r.text());
    let r = tls_get(&s, sni, Some(SA_B), "/echo/b", &[("x-ext-authz", "allow")]).await;
    assert_eq!(r.status, 200);
    let xfcc = echoed_header(&r, "x-forwarded-client-cert");
    assert!(
        xfcc.len() == 1 && xfcc[0].contains(&format!("URI={SA_B}")),
        "{xfcc:?}"
    );
    assert_eq!(
        s.sample.counters.grpc.load(Ordering::SeqCst),
        5,
        "every request was checked"
    );
    s.gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_never_a_principal() {
    let s = setup("rogue").await;
    let rogue = Pki::with_ca_name("rogue-ca", "rogue CA");
    let (chain, key) = rogue.client_cert(SA_A);
    // The handshake may fail outright (TLS 1.2), or the server may reject the certificate
    // right after it (TLS 1.3): either way, no 200.
    let outcome = match try_tls_connect(
        s.tls(),
        "a.example.com",
        s.pki.roots(),
        &[b"http/1.1"],
        Some((chain, key)),
    )
    .await
    {
        Err(e) => Err(e),
        Ok(tls) => {
            let mut h1 = h1_handshake(tls).await;
            exchange_h1(&mut h1, get_req("/productpage", "a.example.com", &[])).await
        }
    };
    if let Ok(r) = &outcome {
        assert_ne!(
            r.status, 200,
            "a certificate from an untrusted CA must not authenticate sa/a"
        );
    }
    s.gw.shutdown(Duration::from_secs(1)).await;
}

const PLAIN: &str = r#"
listeners: [{ name: plain, address: "127.0.0.1:0" }]
backends: [{ name: bookinfo, endpoints: ["{{backend}}"] }]
routes: [{ name: all, backend: bookinfo }]
extensionProviders:
  - name: grpc
    envoyExtAuthzGrpc: { service: "{{gh}}", port: {{gp}} }
authorizationPolicies:
  - name: ext-authz
    action: CUSTOM
    provider: { name: grpc }
    rules: [{ to: [{ operation: { paths: ["/productpage", "/echo/*"] } }] }]
"#;

#[tokio::test]
async fn client_sent_xfcc_never_reaches_the_backend() {
    let s = setup("xfcc").await;
    let plain_gw = gateway(
        PLAIN,
        &[
            ("backend", s.sample.backend.to_string()),
            ("gh", s.sample.authz_grpc.ip().to_string()),
            ("gp", s.sample.authz_grpc.port().to_string()),
        ],
    )
    .await;
    let plain = gw_addr(&plain_gw);

    // Plain listener.
    let r = get(
        plain,
        "/echo/plain",
        &[("x-ext-authz", "allow"), ("x-forwarded-client-cert", FORGED_XFCC)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(echoed_header(&r, "x-forwarded-client-cert"), Vec::<String>::new());
    assert_eq!(echoed_header(&r, "x-forwarded-proto"), vec!["http".to_owned()]);

    // A forged header is no principal either: without x-ext-authz the sample denies.
    let r = get(plain, "/productpage", &[("x-forwarded-client-cert", FORGED_XFCC)]).await;
    assert_eq!(r.status, 403, "a forged XFCC must not authenticate sa/a");

    // TLS listener without a client certificate.
    let r = tls_get(
        &s,
        "b.example.com",
        None,
        "/echo/tls",
        &[("x-ext-authz", "allow"), ("x-forwarded-client-cert", FORGED_XFCC)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(echoed_header(&r, "x-forwarded-client-cert"), Vec::<String>::new());
    s.gw.shutdown(Duration::from_secs(1)).await;
    plain_gw.shutdown(Duration::from_secs(1)).await;
}

/// Several listeners per config, each on its own ephemeral port: TLS and plain side by side.
#[tokio::test]
async fn tls_and_plain_listeners_in_one_config() {
    let s = setup_with("two-listeners", "  - name: plain\n    address: \"127.0.0.1:0\"\n").await;
    let addrs = s.gw.local_addrs().to_vec();
    assert_eq!(addrs.len(), 2, "two listeners");
    assert_ne!(addrs[0], addrs[1]);
    let r = tls_get(&s, "a.example.com", None, "/api/v1/products", &[]).await;
    assert_eq!(r.status, 200);
    let r = get(addrs[1], "/echo/plain", &[("x-ext-authz", "allow")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(echoed_header(&r, "x-forwarded-proto"), vec!["http".to_owned()]);
    s.gw.shutdown(Duration::from_secs(1)).await;
}
