use std::path::Path;

use super::*;

fn parse_ok(src: &str) -> Config {
    match parse(src, "test.yaml", Path::new("."), &[]) {
        Ok(c) => c,
        Err(e) => panic!("unexpected errors:\n{e}"),
    }
}

fn parse_err(src: &str) -> ConfigErrors {
    match parse(src, "test.yaml", Path::new("."), &[]) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

const SEED: &str = r#"
listeners:
  - address: 127.0.0.1:8080
backends:
  - name: bookinfo
    endpoints: ["127.0.0.1:9080"]
routes:
  - backend: bookinfo
extensionProviders:
  - name: ext-authz-grpc
    envoyExtAuthzGrpc:
      service: ext-authz.default.svc.cluster.local
      port: 9000
      timeout: 5s
  - name: ext-authz-http
    envoyExtAuthzHttp:
      service: foo/ext-authz.default.svc.cluster.local
      port: "8000"
      statusOnError: "503"
      includeRequestHeadersInCheck: ["x-ext-authz", "X-Prefix-*", "*-suffix"]
      headersToUpstreamOnAllow: ["x-ext-authz-check-result"]
  - name: tracing
    zipkin: {service: zipkin.istio-system, port: 9411}
authorizationPolicies:
  - name: ext-authz
    action: CUSTOM
    provider:
      name: ext-authz-grpc
    rules:
      - to:
          - operation:
              paths: ["/productpage"]
staticHosts:
  ext-authz.default.svc.cluster.local: 127.0.0.1
"#;

#[test]
fn seed_config_parses() {
    let c = parse_ok(SEED);
    assert_eq!(c.providers.len(), 2);
    assert_eq!(c.providers[0].timeout, std::time::Duration::from_secs(5));
    assert_eq!(c.providers[1].service, "ext-authz.default.svc.cluster.local");
    assert_eq!(c.providers[1].status_on_error, 503);
    let ProviderKind::Http(h) = &c.providers[1].kind else {
        panic!("http provider expected")
    };
    assert_eq!(
        h.include_request_headers,
        vec![
            HeaderPattern::Exact("x-ext-authz".into()),
            HeaderPattern::Prefix("x-prefix-".into()),
            HeaderPattern::Suffix("-suffix".into()),
        ]
    );
    assert_eq!(c.policies.len(), 1);
    assert_eq!(c.policies[0].action(), Action::Custom);
    assert_eq!(c.policies[0].origin.line, Some(25));
    assert_eq!(
        c.providers[0].target(&c.static_hosts).to_string(),
        "127.0.0.1:9000"
    );
    assert!(c.notes.iter().any(|n| n.contains("tracing")));
}

#[test]
fn unknown_field_names_line_and_field() {
    let e = parse_err(
        "extensionProviders:\n  - name: a\n    envoyExtAuthzGrpc:\n      service: x\n      port: 9000\n      failopen: true\n",
    );
    let e = &e.0[0];
    assert_eq!(e.line, Some(6), "{e}");
    assert_eq!(e.field, "failopen", "{e}");
}

#[test]
fn bad_values_name_field_and_line() {
    let e = parse_err(
        "backends:\n  - name: b\n    endpoints: [\"nope\"]\nextensionProviders:\n  - name: Bad_Name\n    envoyExtAuthzHttp:\n      service: x\n      port: 70000\n      statusOnError: abc\n      includeRequestHeadersInCheck: [\"*\"]\n",
    );
    let text = e.to_string();
    assert!(text.contains("test.yaml:2: backends[0].endpoints[0]"), "{text}");
    assert!(text.contains("test.yaml:5: extensionProviders[0].name"), "{text}");
    assert!(
        text.contains("extensionProviders[0].envoyExtAuthzHttp.port"),
        "{text}"
    );
    assert!(
        text.contains("extensionProviders[0].envoyExtAuthzHttp.statusOnError"),
        "{text}"
    );
    assert!(text.contains("includeRequestHeadersInCheck[0]"), "{text}");
}

#[test]
fn status_on_error_out_of_range_is_403() {
    let c = parse_ok(
        "extensionProviders:\n  - name: a\n    envoyExtAuthzGrpc: {service: x, port: 1, statusOnError: \"999\"}\n",
    );
    assert_eq!(c.providers[0].status_on_error, 403);
}

#[test]
fn header_patterns() {
    let p = HeaderPattern::parse("*abc*").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p, HeaderPattern::Suffix("abc*".into()));
    assert!(HeaderPattern::parse("X-Foo-*").is_ok_and(|p| p.matches("x-foo-bar") && p.matches("x-foo-")));
    assert!(HeaderPattern::parse("a*b").is_ok_and(|p| p.matches("a*b") && !p.matches("axb")));
}

#[test]
fn k8s_shaped_policy_is_accepted() {
    let c = parse_ok(
        "authorizationPolicies:\n  - apiVersion: security.istio.io/v1\n    kind: AuthorizationPolicy\n    metadata: {name: p, namespace: foo, annotations: {istio.io/dry-run: \"true\"}}\n    spec:\n      action: DENY\n      rules: [{}]\n",
    );
    assert_eq!(c.policies[0].name, "p");
    assert_eq!(c.policies[0].namespace, "foo");
    assert!(c.policies[0].dry_run());
}
