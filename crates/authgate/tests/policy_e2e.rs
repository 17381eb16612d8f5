//! Issue 4's end-to-end acceptance, over real sockets: client → gateway → ext_authz services
//! (the sample's HTTP and gRPC servers, or a recording one) → a recording backend.
//!
//! - IP whitelist / blacklist with `ipBlocks` (the direct peer) and `remoteIpBlocks` (the
//!   client from `X-Forwarded-For` with `gateway.numTrustedProxies` hops trusted);
//! - ALLOW + CUSTOM + DENY together, in the order CUSTOM → DENY → ALLOW;
//! - two CUSTOM providers on different paths, each called only for its own paths;
//! - a CUSTOM policy naming an unknown provider;
//! - the bypass list against the seed policy on `/productpage`, sent as raw bytes so nothing
//!   between the test and the gateway rewrites the request target, asserting "the path the
//!   policy matched = the path the authz service saw = the path the backend received".

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use authgate_proxy::Gateway;
use common::*;

const RBAC: &str = "RBAC: access denied";
const DENY_BODY: &str = authgate_sample::DENY_BODY;

/// The sample's two providers (gRPC first by name), a recording backend on `/`, and
/// `{{extra}}` top-level keys; `{{policies}}` is the body of `authorizationPolicies:`.
const TEMPLATE: &str = r#"
listeners: [{ address: "127.0.0.1:0" }]
backends: [{ name: app, endpoints: ["{{backend}}"] }]
routes: [{ name: all, match: { prefix: / }, backend: app }]
extensionProviders:
  - name: ext-authz-grpc
    envoyExtAuthzGrpc: { service: "127.0.0.1", port: {{grpc_port}}, timeout: 5s }
  - name: ext-authz-http
    envoyExtAuthzHttp:
      service: "127.0.0.1"
      port: {{http_port}}
      timeout: 5s
      includeRequestHeadersInCheck: ["x-ext-authz"]
      headersToUpstreamOnAllow: ["x-ext-authz-check-result", "x-ext-authz-check-received"]
  - name: ext-authz-http-blind
    envoyExtAuthzHttp:
      service: "127.0.0.1"
      port: {{http_port}}
      timeout: 5s
{{extra}}
authorizationPolicies:
{{policies}}
"#;

async fn start(sample: &Sample, backend: SocketAddr, extra: &str, policies: &str) -> Gateway {
    gateway(
        TEMPLATE,
        &[
            ("backend", backend.to_string()),
            ("grpc_port", sample.authz_grpc.port().to_string()),
            ("http_port", sample.authz_http.port().to_string()),
            ("extra", extra.to_owned()),
            ("policies", policies.to_owned()),
        ],
    )
    .await
}

fn grpc_checks(s: &Sample) -> u64 {
    s.counters.grpc.load(Ordering::SeqCst)
}

fn http_checks(s: &Sample) -> u64 {
    s.counters.http.load(Ordering::SeqCst)
}

/// (gRPC checks, HTTP checks) so far.
fn checks(s: &Sample) -> (u64, u64) {
    (grpc_checks(s), http_checks(s))
}

#[track_caller]
fn assert_rbac(r: &Reply, what: &str) {
    assert_eq!(
        r.status,
        403,
        "{what}: expected the local RBAC denial, got {}",
        r.text()
    );
    assert_eq!(r.text(), RBAC, "{what}");
}

#[track_caller]
fn assert_passed(r: &Reply, what: &str) {
    assert_eq!(r.status, 200, "{what}: {}", r.text());
    assert!(
        r.text().starts_with("ok /"),
        "{what}: not the backend's answer: {}",
        r.text()
    );
}

/// Sends `GET path` with `headers` and checks the backend saw it iff `expect_pass`.
async fn expect(gw: SocketAddr, backend: &Recorder, path: &str, headers: &[(&str, &str)], expect_pass: bool) {
    let before = backend.paths().len();
    let r = get(gw, path, headers).await;
    let what = format!("GET {path} {headers:?}");
    if expect_pass {
        assert_passed(&r, &what);
        assert_eq!(backend.paths().len(), before + 1, "{what}: backend saw it once");
    } else {
        assert_rbac(&r, &what);
        assert_eq!(
            backend.paths().len(),
            before,
            "{what}: a denied request reached the backend"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 1. IP whitelist and blacklist
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn ip_blocks_whitelist_allows_only_the_listed_peer() {
    let sample = start_sample().await;
    let backend = recorder().await;

    // The test client is 127.0.0.1: whitelisted.
    let gw = start(
        &sample,
        backend.addr,
        "",
        r#"  - { name: whitelist, action: ALLOW, rules: [{ from: [{ source: { ipBlocks: ["127.0.0.1/32"] } }] }] }"#,
    )
    .await;
    expect(gw_addr(&gw), &backend, "/a", &[], true).await;
    gw.shutdown(std::time::Duration::from_secs(1)).await;

    // Only 10/8 whitelisted: the test client is refused, and an X-Forwarded-For claiming 10.x
    // changes nothing (ipBlocks is the direct peer, even with a trusted proxy configured).
    let gw = start(
        &sample,
        backend.addr,
        "gateway: { numTrustedProxies: 1 }",
        r#"  - { name: whitelist, action: ALLOW, rules: [{ from: [{ source: { ipBlocks: ["10.0.0.0/8"] } }] }] }"#,
    )
    .await;
    let at = gw_addr(&gw);
    expect(at, &backend, "/b", &[], false).await;
    expect(at, &backend, "/b", &[("x-forwarded-for", "10.1.2.3")], false).await;
    assert_eq!(backend.paths(), ["/a"]);
    assert_eq!(checks(&sample), (0, 0), "no ext_authz involved");
    gw.shutdown(std::time::Duration::from_secs(1)).await;
}

#[tokio::test]
async fn ip_blocks_blacklist_denies_the_listed_peer() {
    let sample = start_sample().await;
    let backend = recorder().await;
    let gw = start(
        &sample,
        backend.addr,
        "",
        r#"  - { name: blacklist, action: DENY, rules: [{ from: [{ source: { ipBlocks: ["127.0.0.0/8"] } }] }] }"#,
    )
    .await;
    expect(gw_addr(&gw), &backend, "/a", &[], false).await;
    gw.shutdown(std::time::Duration::from_secs(1)).await;

    // A bare address (no mask) is a /32.
    let gw = start(
        &sample,
        backend.addr,
        "",
        r#"  - { name: blacklist, action: DENY, rules: [{ from: [{ source: { ipBlocks: ["127.0.0.1"] } }] }] }"#,
    )
    .await;
    expect(gw_addr(&gw), &backend, "/a", &[], false).await;
    gw.shutdown(std::time::Duration::from_secs(1)).await;

    // Other ranges blacklisted: the test client passes, even claiming one of them in XFF.
    let gw = start(
        &sample,
        backend.addr,
        "gateway: { numTrustedProxies: 1 }",
        r#"  - { name: blacklist, action: DENY, rules: [{ from: [{ source: { ipBlocks: ["10.0.0.0/8", "192.168.0.0/16"] } }] }] }"#,
    )
    .await;
    let at = gw_addr(&gw);
    expect(at, &backend, "/b", &[], true).await;
    expect(at, &backend, "/c", &[("x-forwarded-for", "10.1.2.3")], true).await;
    assert_eq!(backend.paths(), ["/b", "/c"]);
    gw.shutdown(std::time::Duration::from_secs(1)).await;
}

#[tokio::test]
async fn remote_ip_blocks_use_xff_with_one_trusted_proxy() {
    let sample = start_sample().await;
    let backend = recorder().await;
    // Blacklist on the client address.
    let gw = start(
        &sample,
        backend.addr,
        "gateway: { numTrustedProxies: 1 }",
        r#"  - { name: blacklist, action: DENY, rules: [{ from: [{ source: { remoteIpBlocks: ["10.0.0.0/8"] } }] }] }"#,
    )
    .await;
    let at = gw_addr(&gw);
    // Without XFF the client is the peer (127.0.0.1): not blacklisted.
    expect(at, &backend, "/none", &[], true).await;
    // One trusted hop: the client is the last XFF entry the trusted proxy appended.
    expect(at, &backend, "/xff-10", &[("x-forwarded-for", "10.1.2.3")], false).await;
    expect(
        at,
        &backend,
        "/xff-203",
        &[("x-forwarded-for", "203.0.113.9")],
        true,
    )
    .await;
    // Only the rightmost entry counts: what the client itself put further left is not trusted.
    expect(
        at,
        &backend,
        "/spoof-left",
        &[("x-forwarded-for", "10.1.2.3, 203.0.113.9")],
        true,
    )
    .await;
    expect(
        at,
        &backend,
        "/real-right",
        &[("x-forwarded-for", "203.0.113.9, 10.1.2.3")],
        false,
    )
    .await;
    // Several XFF lines read as one list.
    expect(
        at,
        &backend,
        "/two-lines",
        &[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-for", "10.1.2.3"),
        ],
        false,
    )
    .await;
    // Not an IP: the peer is the client.
    expect(at, &backend, "/garbage", &[("x-forwarded-for", "unknown")], true).await;
    gw.shutdown(std::time::Duration::from_secs(1)).await;

    // Whitelist on the client address.
    let gw = start(
        &sample,
        backend.addr,
        "gateway: { numTrustedProxies: 1 }",
        r#"  - { name: whitelist, action: ALLOW, rules: [{ from: [{ source: { remoteIpBlocks: ["203.0.113.0/24"] } }] }] }"#,
    )
    .await;
    let at = gw_addr(&gw);
    expect(at, &backend, "/w-ok", &[("x-forwarded-for", "203.0.113.9")], true).await;
    expect(at, &backend, "/w-10", &[("x-forwarded-for", "10.1.2.3")], false).await;
    expect(at, &backend, "/w-none", &[], false).await;
    gw.shutdown(std::time::Duration::from_secs(1)).await;
    assert_eq!(
        backend.paths(),
        ["/none", "/xff-203", "/spoof-left", "/garbage", "/w-ok"]
    );
}

#[tokio::test]
async fn remote_ip_blocks_with_two_trusted_proxies() {
    let sample = start_sample().await;
    let backend = recorder().await;
    let gw = start(
        &sample,
        backend.addr,
        "gateway: { numTrustedProxies: 2 }",
        r#"  - { name: blacklist, action: DENY, rules: [{ from: [{ source: { remoteIpBlocks: ["198.51.100.0/24"] } }] }] }"#,
    )
    .await;
    let at = gw_addr(&gw);
    // Two trusted hops: the second entry from the right is the client.
    expect(
        at,
        &backend,
        "/a",
        &[("x-forwarded-for", "198.51.100.4, 10.1.2.3")],
        false,
    )
    .await;
    expect(
        at,
        &backend,
        "/b",
        &[("x-forwarded-for", "10.1.2.3, 198.51.100.4")],
        true,
    )
    .await;
    expect(
        at,
        &backend,
        "/c",
        &[("x-forwarded-for", "192.0.2.1, 198.51.100.4, 10.1.2.3")],
        false,
    )
    .await;
    // Fewer entries than trusted hops: the peer is the client.
    expect(at, &backend, "/d", &[("x-forwarded-for", "198.51.100.4")], true).await;
    gw.shutdown(std::time::Duration::from_secs(1)).await;
}

#[tokio::test]
async fn remote_ip_blocks_ignore_xff_without_trusted_proxies() {
    let sample = start_sample().await;
    let backend = recorder().await;
    // numTrustedProxies 0 (the default): XFF is client-controlled and ignored.
    let gw = start(
        &sample,
        backend.addr,
        "gateway: { numTrustedProxies: 0 }",
        r#"  - { name: blacklist, action: DENY, rules: [{ from: [{ source: { remoteIpBlocks: ["10.0.0.0/8"] } }] }] }"#,
    )
    .await;
    let at = gw_addr(&gw);
    expect(at, &backend, "/a", &[("x-forwarded-for", "10.1.2.3")], true).await;
    gw.shutdown(std::time::Duration::from_secs(1)).await;

    let gw = start(
        &sample,
        backend.addr,
        "",
        r#"  - { name: blacklist, action: DENY, rules: [{ from: [{ source: { remoteIpBlocks: ["127.0.0.1/32"] } }] }] }"#,
    )
    .await;
    let at = gw_addr(&gw);
    expect(at, &backend, "/b", &[("x-forwarded-for", "203.0.113.9")], false).await;
    expect(at, &backend, "/b", &[], false).await;
    gw.shutdown(std::time::Duration::from_secs(1)).await;

    let gw = start(
        &sample,
        backend.addr,
        "",
        r#"  - { name: whitelist, action: ALLOW, rules: [{ from: [{ source: { remoteIpBlocks: ["203.0.113.0/24"] } }] }] }"#,
    )
    .await;
    let at = gw_addr(&gw);
    expect(at, &backend, "/c", &[("x-forwarded-for", "203.0.113.9")], false).await;
    gw.shutdown(std::time::Duration::from_secs(1)).await;
    assert_eq!(backend.paths(), ["/a"]);
}

#[tokio::test]
async fn remote_ip_when_condition_follows_xff() {
    let sample = start_sample().await;
    let backend = recorder().await;
    let gw = start(
        &sample,
        backend.addr,
        "gateway: { numTrustedProxies: 1 }",
        r#"  - { name: blacklist, action: DENY, rules: [{ when: [{ key: remote.ip, values: ["10.0.0.0/8"] }] }] }
  - { name: peer-blacklist, action: DENY, rules: [{ when: [{ key: source.ip, values: ["10.0.0.0/8"] }] }] }"#,
    )
    .await;
    let at = gw_addr(&gw);
    expect(at, &backend, "/a", &[("x-forwarded-for", "10.1.2.3")], false).await;
    expect(at, &backend, "/b", &[("x-forwarded-for", "203.0.113.9")], true).await;
    gw.shutdown(std::time::Duration::from_secs(1)).await;
}

// ---------------------------------------------------------------------------------------------
// 2. ALLOW + CUSTOM + DENY together
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn allow_custom_and_deny_together() {
    let sample = start_sample().await;
    let backend = recorder().await;
    let gw = start(
        &sample,
        backend.addr,
        "",
        r#"  - name: ext-authz
    action: CUSTOM
    provider: { name: ext-authz-grpc }
    rules: [{ to: [{ operation: { paths: ["/app/*", "/admin/*"] } }] }]
  - name: deny-secret
    action: DENY
    rules: [{ to: [{ operation: { paths: ["/admin/secret", "/public/blocked"] } }] }]
  - name: allow-some
    action: ALLOW
    rules: [{ to: [{ operation: { paths: ["/app/*", "/public/*", "/admin/secret"] } }] }]"#,
    )
    .await;
    let at = gw_addr(&gw);
    let allow = [("x-ext-authz", "allow")];
    let deny = [("x-ext-authz", "deny")];

    // CUSTOM allows, no DENY, an ALLOW matches: the backend gets it, with the service's header.
    let r = get(at, "/app/x", &allow).await;
    assert_passed(&r, "/app/x allow");
    assert_eq!(grpc_checks(&sample), 1);
    let seen = backend.recorded();
    let last = seen.last().unwrap_or_else(|| panic!("backend saw nothing"));
    assert_eq!(last.path, "/app/x");
    assert_eq!(
        last.headers
            .get("x-ext-authz-check-result")
            .and_then(|v| v.to_str().ok()),
        Some("allowed")
    );

    // CUSTOM denies: the authorization service's reply, not RBAC; nothing upstream.
    let r = get(at, "/app/x", &deny).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.text(), DENY_BODY);
    assert_eq!(r.header("x-ext-authz-check-result"), Some("denied"));
    assert_eq!(grpc_checks(&sample), 2);

    // CUSTOM first: on a path both CUSTOM and DENY match, a CUSTOM deny answers.
    let r = get(at, "/admin/secret", &deny).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.text(), DENY_BODY, "CUSTOM is evaluated before DENY");
    assert_eq!(grpc_checks(&sample), 3);

    // A CUSTOM allow is still subject to DENY ...
    let r = get(at, "/admin/secret", &allow).await;
    assert_rbac(&r, "/admin/secret: CUSTOM allowed, DENY matched");
    assert_eq!(grpc_checks(&sample), 4, "the check still happened");

    // ... and to ALLOW: CUSTOM allowed, but no ALLOW rule matches.
    let r = get(at, "/admin/other", &allow).await;
    assert_rbac(&r, "/admin/other: CUSTOM allowed, no ALLOW matched");
    assert_eq!(grpc_checks(&sample), 5);

    // Not a CUSTOM path: no check; ALLOW decides.
    let r = get(at, "/public/x", &[]).await;
    assert_passed(&r, "/public/x");
    let r = get(at, "/public/blocked", &allow).await;
    assert_rbac(&r, "/public/blocked: DENY");
    let r = get(at, "/elsewhere", &allow).await;
    assert_rbac(&r, "/elsewhere: no ALLOW matched");
    assert_eq!(grpc_checks(&sample), 5, "no check for non-CUSTOM paths");
    assert_eq!(http_checks(&sample), 0);

    assert_eq!(backend.paths(), ["/app/x", "/public/x"]);
    gw.shutdown(std::time::Duration::from_secs(1)).await;
}

#[tokio::test]
async fn default_deny_allow_policy_still_applies_after_custom_allow() {
    let sample = start_sample().await;
    let backend = recorder().await;
    // `spec: {}` ALLOW: allow nothing. A CUSTOM allow does not skip it (R-B1a).
    let gw = start(
        &sample,
        backend.addr,
        "",
        r#"  - name: ext-authz
    action: CUSTOM
    provider: { name: ext-authz-http }
    rules: [{ to: [{ operation: { paths: ["/productpage"] } }] }]
  - metadata: { name: allow-nothing, namespace: istio-system }
    spec: {}"#,
    )
    .await;
    let at = gw_addr(&gw);
    let r = get(at, "/productpage", &[("x-ext-authz", "allow")]).await;
    assert_rbac(&r, "default deny after CUSTOM allow");
    assert_eq!(http_checks(&sample), 1);
    let r = get(at, "/productpage", &[("x-ext-authz", "deny")]).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.text(), DENY_BODY);
    let r = get(at, "/other", &[]).await;
    assert_rbac(&r, "default deny");
    assert_eq!(http_checks(&sample), 2);
    assert!(backend.paths().is_empty());
    gw.shutdown(std::time::Duration::from_secs(1)).await;
}

// ---------------------------------------------------------------------------------------------
// 3. Two CUSTOM providers on different paths
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn two_custom_providers_each_called_only_for_their_paths() {
    let sample = start_sample().await;
    let backend = recorder().await;
    let gw = start(
        &sample,
        backend.addr,
        "",
        r#"  - name: grpc-paths
    action: CUSTOM
    provider: { name: ext-authz-grpc }
    rules: [{ to: [{ operation: { paths: ["/g/*", "/both/*", "/strict/*"] } }] }]
  - name: http-paths
    action: CUSTOM
    provider: { name: ext-authz-http }
    rules: [{ to: [{ operation: { paths: ["/h/*", "/both/*"] } }] }]
  - name: blind-paths
    action: CUSTOM
    provider: { name: ext-authz-http-blind }
    rules: [{ to: [{ operation: { paths: ["/strict/*"] } }] }]"#,
    )
    .await;
    let at = gw_addr(&gw);
    let allow = [("x-ext-authz", "allow")];

    let r = get(at, "/g/1", &allow).await;
    assert_passed(&r, "/g/1");
    assert_eq!(checks(&sample), (1, 0), "/g/1: only the gRPC provider");

    let r = get(at, "/h/1", &allow).await;
    assert_passed(&r, "/h/1");
    assert_eq!(checks(&sample), (1, 1), "/h/1: only the HTTP provider");

    let r = get(at, "/none", &allow).await;
    assert_passed(&r, "/none");
    assert_eq!(checks(&sample), (1, 1), "/none: no provider");

    let r = get(at, "/both/1", &allow).await;
    assert_passed(&r, "/both/1");
    assert_eq!(checks(&sample), (2, 2), "/both/1: both providers");

    // Both match and the first (by name: ext-authz-grpc) denies: it answers, the second is not
    // called.
    let r = get(at, "/both/2", &[("x-ext-authz", "deny")]).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.text(), DENY_BODY);
    assert_eq!(
        r.header("x-ext-authz-additional-header-override"),
        Some(authgate_sample::GRPC_OVERRIDE_VALUE),
        "the gRPC provider's denial"
    );
    assert_eq!(checks(&sample), (3, 2), "the first deny stops the chain");

    // Each must allow: gRPC allows, then the HTTP provider that is not sent x-ext-authz denies.
    let r = get(at, "/strict/1", &allow).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.text(), DENY_BODY);
    assert_eq!(checks(&sample), (4, 3), "/strict/1: both called");

    assert_eq!(backend.paths(), ["/g/1", "/h/1", "/none", "/both/1"]);
    gw.shutdown(std::time::Duration::from_secs(1)).await;
}

// ---------------------------------------------------------------------------------------------
// 4. CUSTOM with an unknown provider
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn custom_policy_with_unknown_provider_denies_only_its_requests() {
    let sample = start_sample().await;
    let backend = recorder().await;
    let gw = start(
        &sample,
        backend.addr,
        "",
        r#"  - name: typo
    action: CUSTOM
    provider: { name: ext-authz-grcp }
    rules: [{ to: [{ operation: { paths: ["/locked/*"] } }] }]
  - name: ext-authz
    action: CUSTOM
    provider: { name: ext-authz-grpc }
    rules: [{ to: [{ operation: { paths: ["/checked"] } }] }]"#,
    )
    .await;
    let at = gw_addr(&gw);
    let allow = [("x-ext-authz", "allow")];
    expect(at, &backend, "/locked/x", &allow, false).await;
    expect(at, &backend, "/locked/x", &[], false).await;
    assert_eq!(
        checks(&sample),
        (0, 0),
        "nothing to call for the unknown provider"
    );
    expect(at, &backend, "/open", &[], true).await;
    expect(at, &backend, "/checked", &allow, true).await;
    assert_eq!(checks(&sample), (1, 0));
    assert_eq!(backend.paths(), ["/open", "/checked"]);
    gw.shutdown(std::time::Duration::from_secs(1)).await;
}

// ---------------------------------------------------------------------------------------------
// 5. The bypass list against the seed policy
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// 400 before any check.
    Refused,
    /// Sent to the authorization service with this `path?query` (and, on allow, forwarded
    /// with exactly this one).
    Checked(&'static str),
    /// Not covered by the policy: forwarded unchecked with this `path?query`.
    Unchecked(&'static str),
}

struct Attempt {
    /// Request target, written as is on the request line.
    target: &'static str,
    host: &'static str,
    expect: Expect,
}

const fn at(target: &'static str, expect: Expect) -> Attempt {
    Attempt {
        target,
        host: "bookinfo.example.com",
        expect,
    }
}

const fn at_host(target: &'static str, host: &'static str, expect: Expect) -> Attempt {
    Attempt { target, host, expect }
}

fn raw_get(a: &Attempt, verdict: &str) -> Vec<u8> {
    format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nx-ext-authz: {verdict}\r\nuser-agent: policy-e2e\r\nConnection: close\r\n\r\n",
        a.target, a.host
    )
    .into_bytes()
}

/// With the gRPC sample denying (`x-ext-authz: deny`): every attempt is refused with 400 (no
/// check) or denied by the service (one check), and the backend sees nothing. With it allowing:
/// the gRPC service's dump of what it received names the same path the backend got.
async fn bypass_with_sample(policy: &str, extra: &str, attempts: &[Attempt]) {
    let sample = start_sample().await;
    let backend = recorder().await;
    let gw = start(&sample, backend.addr, extra, policy).await;
    let gw_at = gw_addr(&gw);
    for a in attempts {
        let what = format!("{extra:?} GET {} (Host: {})", a.target, a.host);
        let (before, seen_before) = (checks(&sample), backend.paths().len());

        // Denied by the service.
        let r = raw_request(gw_at, &raw_get(a, "deny")).await;
        let after = checks(&sample);
        match a.expect {
            Expect::Refused => {
                assert_eq!(r.status, 400, "{what}: {}", r.text());
                assert_eq!(after, before, "{what}: refused before any check");
            }
            Expect::Checked(_) => {
                assert_eq!(r.status, 403, "{what}: {}", r.text());
                assert_eq!(r.text(), DENY_BODY, "{what}: the service's denial");
                assert_eq!(after.0, before.0 + 1, "{what}: the check happened");
            }
            Expect::Unchecked(p) => {
                assert_eq!(r.status, 200, "{what}: {}", r.text());
                assert_eq!(after, before, "{what}: not covered, not checked");
                assert_eq!(backend.paths().last().map(String::as_str), Some(p), "{what}");
                continue;
            }
        }
        assert_eq!(
            backend.paths().len(),
            seen_before,
            "{what}: the backend was reached without an allow: {:?}",
            backend.paths()
        );

        // Allowed by the service: what it saw is what the backend got.
        let r = raw_request(gw_at, &raw_get(a, "allow")).await;
        match a.expect {
            Expect::Refused => {
                assert_eq!(r.status, 400, "{what} (allow): {}", r.text());
                assert_eq!(backend.paths().len(), seen_before, "{what}");
            }
            Expect::Checked(p) => {
                assert_eq!(r.status, 200, "{what} (allow): {}", r.text());
                let seen = backend.recorded();
                assert_eq!(seen.len(), seen_before + 1, "{what}: backend once");
                let last = &seen[seen.len() - 1];
                assert_eq!(last.path, p, "{what}: the backend's path");
                let dump = last
                    .headers
                    .get("x-ext-authz-check-received")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_else(|| panic!("{what}: no x-ext-authz-check-received upstream"));
                // The gRPC CheckRequest's `path` is `path?query`, as Envoy's :path.
                assert!(
                    dump.contains(&format!("path:\"{p}\"")),
                    "{what}: the authz service saw another path than the backend ({p}): {dump}"
                );
            }
            Expect::Unchecked(_) => {}
        }
    }
    gw.shutdown(std::time::Duration::from_secs(1)).await;
}

/// With a recording HTTP authorization service (answers 200 to everything, records the check
/// request's path): for each checked attempt, the path the service saw, the path the backend
/// saw and the expected normalized path are one string.
async fn bypass_with_recording_authz(policy: &str, extra: &str, attempts: &[Attempt]) {
    let authz = recorder().await;
    let backend = recorder().await;
    let sample = start_sample().await;
    let yaml = TEMPLATE.replace(
        "extensionProviders:\n",
        &format!(
            "extensionProviders:\n  - name: recording-authz\n    envoyExtAuthzHttp: {{ service: \"127.0.0.1\", port: {}, timeout: 5s }}\n",
            authz.addr.port()
        ),
    );
    let gw = gateway(
        &yaml,
        &[
            ("backend", backend.addr.to_string()),
            ("grpc_port", sample.authz_grpc.port().to_string()),
            ("http_port", sample.authz_http.port().to_string()),
            ("extra", extra.to_owned()),
            ("policies", policy.replace("ext-authz-grpc", "recording-authz")),
        ],
    )
    .await;
    let gw_at = gw_addr(&gw);
    for a in attempts {
        let what = format!("{extra:?} GET {} (Host: {}) [recording authz]", a.target, a.host);
        let (authz_before, backend_before) = (authz.paths().len(), backend.paths().len());
        let r = raw_request(gw_at, &raw_get(a, "allow")).await;
        let (authz_seen, backend_seen) = (authz.paths(), backend.paths());
        match a.expect {
            Expect::Refused => {
                assert_eq!(r.status, 400, "{what}: {}", r.text());
                assert_eq!(authz_seen.len(), authz_before, "{what}: no check");
                assert_eq!(backend_seen.len(), backend_before, "{what}: not forwarded");
            }
            Expect::Checked(p) => {
                assert_eq!(r.status, 200, "{what}: {}", r.text());
                assert_eq!(authz_seen.len(), authz_before + 1, "{what}: one check");
                assert_eq!(backend_seen.len(), backend_before + 1, "{what}: forwarded once");
                assert_eq!(
                    (
                        authz_seen[authz_before].as_str(),
                        backend_seen[backend_before].as_str()
                    ),
                    (p, p),
                    "{what}: (authz path, upstream path) must both be the matched path"
                );
            }
            Expect::Unchecked(p) => {
                assert_eq!(r.status, 200, "{what}: {}", r.text());
                assert_eq!(authz_seen.len(), authz_before, "{what}: no check");
                assert_eq!(backend_seen.last().map(String::as_str), Some(p), "{what}");
            }
        }
    }
    gw.shutdown(std::time::Duration::from_secs(1)).await;
}

const SEED_POLICY: &str = r#"  - name: ext-authz
    action: CUSTOM
    provider: { name: ext-authz-grpc }
    rules: [{ to: [{ operation: { paths: ["/productpage"] } }] }]"#;

fn base_attempts() -> Vec<Attempt> {
    use Expect::*;
    vec![
        at("/productpage", Checked("/productpage")),
        at("/public/../productpage", Checked("/productpage")),
        at("/public/%2e%2e/productpage", Checked("/productpage")),
        at("/public/%2E%2E/productpage", Checked("/productpage")),
        at("/public/./../productpage", Checked("/productpage")),
        at("/public/..;/productpage", Checked("/productpage")),
        at("/%70roductpage", Checked("/productpage")),
        // Slash-tolerant literal paths under BASE: checked, forwarded as is.
        at("//productpage", Checked("//productpage")),
        at("/productpage/", Checked("/productpage/")),
        at("/productpage/.", Checked("/productpage/")),
        at("/productpage;x=1", Checked("/productpage")),
        at("/productpage;x=1?a=b", Checked("/productpage?a=b")),
        at("/productpage#frag", Checked("/productpage")),
        at("/productpage?a=1#frag", Checked("/productpage?a=1")),
        // Absolute form: the target's authority and path, normalized.
        at(
            "http://bookinfo.example.com/public/../productpage",
            Checked("/productpage"),
        ),
        at(
            "http://bookinfo.example.com//productpage",
            Checked("//productpage"),
        ),
        // Controls: other paths are not checked.
        at("/api/v1/products", Unchecked("/api/v1/products")),
        at("/productpage.html", Unchecked("/productpage.html")),
        // Refused in every mode.
        at("/productpage%00", Refused),
        at("/productpage%zz", Refused),
    ]
}

fn merge_slashes_attempts() -> Vec<Attempt> {
    use Expect::*;
    vec![
        at("/productpage", Checked("/productpage")),
        at("//productpage", Checked("/productpage")),
        at("///productpage//", Checked("/productpage/")),
        at("/productpage/.", Checked("/productpage/")),
        at("/public/../productpage", Checked("/productpage")),
        at("/public/%2e%2e//productpage", Checked("/productpage")),
        at("/productpage;x=1", Checked("/productpage")),
        at("/productpage#frag", Checked("/productpage")),
        at(
            "http://bookinfo.example.com//productpage",
            Checked("/productpage"),
        ),
        at("/api/v1/products", Unchecked("/api/v1/products")),
    ]
}

fn reject_attempts() -> Vec<Attempt> {
    use Expect::*;
    vec![
        at("/productpage%2Fx", Refused),
        at("/productpage%2fx", Refused),
        at("/productpage%5Cx", Refused),
        at("/public%2F..%2Fproductpage", Refused),
        at("/productpage", Checked("/productpage")),
        at("/productpage;x=1", Checked("/productpage")),
    ]
}

#[tokio::test]
async fn bypass_list_base() {
    bypass_with_sample(SEED_POLICY, "", &base_attempts()).await;
    bypass_with_recording_authz(SEED_POLICY, "", &base_attempts()).await;
}

#[tokio::test]
async fn bypass_list_merge_slashes() {
    let extra = "pathNormalization: { normalization: MERGE_SLASHES }";
    bypass_with_sample(SEED_POLICY, extra, &merge_slashes_attempts()).await;
    bypass_with_recording_authz(SEED_POLICY, extra, &merge_slashes_attempts()).await;
}

#[tokio::test]
async fn bypass_list_escaped_slashes_reject() {
    let extra = "pathNormalization: { normalization: BASE, escapedSlashes: REJECT }";
    bypass_with_sample(SEED_POLICY, extra, &reject_attempts()).await;
    bypass_with_recording_authz(SEED_POLICY, extra, &reject_attempts()).await;
}

#[tokio::test]
async fn bypass_host_case_and_trailing_dot() {
    use Expect::*;
    let policy = r#"  - name: ext-authz
    action: CUSTOM
    provider: { name: ext-authz-grpc }
    rules: [{ to: [{ operation: { hosts: ["bookinfo.example.com"], paths: ["/productpage"] } }] }]"#;
    let attempts = [
        at_host("/productpage", "bookinfo.example.com", Checked("/productpage")),
        at_host("/productpage", "BOOKINFO.example.com.", Checked("/productpage")),
        at_host("/productpage", "BOOKINFO.EXAMPLE.COM", Checked("/productpage")),
        at_host("/productpage", "bookinfo.example.com.", Checked("/productpage")),
        at_host(
            "http://BOOKINFO.example.com./productpage",
            "other.example.com",
            Checked("/productpage"),
        ),
        at_host("//productpage", "BOOKINFO.example.com.", Checked("//productpage")),
        // The rule is host-specific: another host is not checked (a control showing the host
        // condition is live).
        at_host("/productpage", "other.example.com", Unchecked("/productpage")),
    ];
    bypass_with_sample(policy, "", &attempts).await;
    bypass_with_recording_authz(policy, "", &attempts).await;
}

/// A GET whose request target is not a path (authority-form, a bare word, asterisk-form) is
/// refused with 400 (docs/policy.md: "a target that does not start with `/`"), not routed as
/// `/` with the target taken as the authority.
#[tokio::test]
async fn non_origin_form_targets_are_refused() {
    let sample = start_sample().await;
    let backend = recorder().await;
    let gw = start(&sample, backend.addr, "", SEED_POLICY).await;
    let gw_at = gw_addr(&gw);
    let mut wrong = Vec::new();
    for target in ["productpage", "bookinfo.example.com:80", "*"] {
        let a = at(target, Expect::Refused);
        let r = raw_request(gw_at, &raw_get(&a, "deny")).await;
        if r.status != 400 {
            wrong.push(format!("GET {target} → {} {:?}", r.status, r.text()));
        }
    }
    assert!(
        wrong.is_empty(),
        "not refused: {wrong:?}; backend saw {:?}",
        backend.paths()
    );
    assert!(backend.paths().is_empty(), "{:?}", backend.paths());
    assert_eq!(checks(&sample), (0, 0));
    gw.shutdown(std::time::Duration::from_secs(1)).await;
}
