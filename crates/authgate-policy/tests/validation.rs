//! Configurations Istio's webhook rejects (R-C5, R-C7, R-C12, R-C19, `ValidateAttribute`) are
//! rejected with the policy, its origin and the field; valid ones are accepted.

mod common;

use common::engine;

/// (rule, inline policies, expected error fragments — all must appear).
const INVALID: &[(&str, &str, &[&str])] = &[
    (
        "R-C5 CUSTOM without rules",
        "- name: c\n  action: CUSTOM\n  provider: {name: ext-authz-grpc}",
        &[
            "policy \"c\" (test.yaml:",
            "rules: CUSTOM action without `rules` is meaningless",
            "add an empty rule `{}`",
        ],
    ),
    (
        "R-C5 CUSTOM with rules: []",
        "- name: c\n  action: CUSTOM\n  provider: {name: ext-authz-grpc}\n  rules: []",
        &["rules: CUSTOM action without `rules`"],
    ),
    (
        "R-C5 CUSTOM without provider",
        "- name: c\n  action: CUSTOM\n  rules: [{}]",
        &["provider.name: must not be empty in a CUSTOM policy"],
    ),
    (
        "R-C5 CUSTOM with principals",
        "- name: ext-authz\n  action: CUSTOM\n  provider: {name: ext-authz-grpc}\n  rules: [{from: [{source: {principals: [\"a\"]}}]}]",
        &["rules[0].from[0].source.principals: not allowed in a CUSTOM policy"],
    ),
    (
        "R-C5 CUSTOM with notNamespaces",
        "- name: c\n  action: CUSTOM\n  provider: {name: ext-authz-grpc}\n  rules: [{from: [{source: {notNamespaces: [\"a\"]}}]}]",
        &["rules[0].from[0].source.notNamespaces: not allowed in a CUSTOM policy"],
    ),
    (
        "R-C5 CUSTOM with requestPrincipals",
        "- name: c\n  action: CUSTOM\n  provider: {name: ext-authz-grpc}\n  rules: [{from: [{source: {requestPrincipals: [\"*\"]}}]}]",
        &["source.requestPrincipals: not allowed in a CUSTOM policy"],
    ),
    (
        "R-C5 CUSTOM with serviceAccounts",
        "- name: c\n  action: CUSTOM\n  provider: {name: ext-authz-grpc}\n  rules: [{from: [{source: {serviceAccounts: [\"a\"]}}]}]",
        &["source.serviceAccounts: not allowed in a CUSTOM policy"],
    ),
    (
        "R-C5 CUSTOM with when source.principal",
        "- name: c\n  action: CUSTOM\n  provider: {name: ext-authz-grpc}\n  rules: [{when: [{key: source.principal, values: [\"a\"]}]}]",
        &["rules[0].when[0].key: source.principal is not allowed in a CUSTOM policy"],
    ),
    (
        "R-C5 CUSTOM with when source.namespace",
        "- name: c\n  action: CUSTOM\n  provider: {name: ext-authz-grpc}\n  rules: [{when: [{key: source.namespace, values: [\"a\"]}]}]",
        &["source.namespace is not allowed in a CUSTOM policy"],
    ),
    (
        "R-C5 CUSTOM with when request.auth.*",
        "- name: c\n  action: CUSTOM\n  provider: {name: ext-authz-grpc}\n  rules: [{when: [{key: \"request.auth.claims[iss]\", values: [\"a\"]}]}]",
        &["request.auth.claims[iss] is not allowed in a CUSTOM policy"],
    ),
    (
        "R-C5 provider on a non-CUSTOM action",
        "- name: a\n  action: ALLOW\n  provider: {name: ext-authz-grpc}\n  rules: [{}]",
        &["provider: `provider` must not be set with a non-CUSTOM action"],
    ),
    (
        "R-C7 DENY without rules",
        "- name: d\n  action: DENY",
        &["rules: DENY action without `rules` is meaningless"],
    ),
    (
        "R-C12 from: []",
        "- name: d\n  action: DENY\n  rules: [{from: []}]",
        &["rules[0].from: `from` must not be empty"],
    ),
    (
        "R-C12 to: []",
        "- name: d\n  action: DENY\n  rules: [{to: []}]",
        &["rules[0].to: `to` must not be empty"],
    ),
    (
        "R-C12 from without source",
        "- name: d\n  action: DENY\n  rules: [{from: [{}]}]",
        &["rules[0].from[0].source: `from.source` must not be nil"],
    ),
    (
        "R-C12 empty source",
        "- name: d\n  action: DENY\n  rules: [{from: [{source: {}}]}]",
        &["rules[0].from[0].source: `from.source` must not be empty"],
    ),
    (
        "R-C12 source with only empty lists",
        "- name: d\n  action: DENY\n  rules: [{from: [{source: {ipBlocks: []}}]}]",
        &["`from.source` must not be empty"],
    ),
    (
        "R-C12 to without operation",
        "- name: d\n  action: DENY\n  rules: [{to: [{}]}]",
        &["rules[0].to[0].operation: `to.operation` must not be nil"],
    ),
    (
        "R-C12 empty operation",
        "- name: d\n  action: DENY\n  rules: [{to: [{operation: {}}]}]",
        &["rules[0].to[0].operation: `to.operation` must not be empty"],
    ),
    (
        "R-C12 when without values",
        "- name: d\n  action: DENY\n  rules: [{when: [{key: source.ip}]}]",
        &["rules[0].when[0]: at least one of `values` or `notValues` must be set for key source.ip"],
    ),
    (
        "R-C12 when with empty key",
        "- name: d\n  action: DENY\n  rules: [{when: [{values: [\"a\"]}]}]",
        &["rules[0].when[0].key: `key` must not be empty"],
    ),
    (
        "R-C12 empty string in paths",
        "- name: d\n  action: DENY\n  rules: [{to: [{operation: {paths: [\"/a\", \"\"]}}]}]",
        &["rules[0].to[0].operation.paths[1]: empty value not allowed"],
    ),
    (
        "R-C12 empty string in notValues",
        "- name: d\n  action: DENY\n  rules: [{when: [{key: \"request.headers[x]\", notValues: [\"\"]}]}]",
        &["rules[0].when[0].notValues[0]: empty value not allowed"],
    ),
    (
        "ValidateIPs bad IP",
        "- name: d\n  action: DENY\n  rules: [{from: [{source: {ipBlocks: [\"10.0.0.256\"]}}]}]",
        &["rules[0].from[0].source.ipBlocks[0]: bad IP address (10.0.0.256)"],
    ),
    (
        "ValidateIPs bad CIDR",
        "- name: d\n  action: DENY\n  rules: [{from: [{source: {notRemoteIpBlocks: [\"10.0.0.0/40\"]}}]}]",
        &["source.notRemoteIpBlocks[0]: bad CIDR range (10.0.0.0/40)"],
    ),
    (
        "ValidateIPs in when",
        "- name: d\n  action: DENY\n  rules: [{when: [{key: remote.ip, values: [\"nope\"]}]}]",
        &["rules[0].when[0].values[0]: bad IP address (nope)"],
    ),
    (
        "ValidatePorts",
        "- name: d\n  action: DENY\n  rules: [{to: [{operation: {ports: [\"80\", \"http\", \"70000\"]}}]}]",
        &[
            "operation.ports[1]: bad port (http)",
            "operation.ports[2]: bad port (70000)",
        ],
    ),
    (
        "ValidatePorts in destination.port",
        "- name: d\n  action: DENY\n  rules: [{when: [{key: destination.port, values: [\"-1\"]}]}]",
        &["when[0].values[0]: bad port (-1)"],
    ),
    (
        "R-C22 unknown when key",
        "- name: d\n  action: DENY\n  rules: [{when: [{key: request.method, values: [\"GET\"]}]}]",
        &["rules[0].when[0].key: unknown attribute: request.method"],
    ),
    (
        "ValidateAttribute destination.labels",
        "- name: d\n  action: DENY\n  rules: [{when: [{key: \"destination.labels[app]\", values: [\"x\"]}]}]",
        &["is replaced by the workload selector"],
    ),
    (
        "ValidateAttribute destination.namespace",
        "- name: d\n  action: DENY\n  rules: [{when: [{key: destination.namespace, values: [\"x\"]}]}]",
        &["is replaced by the metadata.namespace"],
    ),
    (
        "ValidateAttribute request.headers without a name",
        "- name: d\n  action: DENY\n  rules: [{when: [{key: \"request.headers[]\", values: [\"x\"]}]}]",
        &["bad key (request.headers[]): should have format a[b]"],
    ),
    (
        "request.headers with an invalid header name",
        "- name: d\n  action: DENY\n  rules: [{when: [{key: \"request.headers[a b]\", values: [\"x\"]}]}]",
        &["\"a b\" is not a valid HTTP header name"],
    ),
    (
        "R-C19 `*` outside an operator",
        "- name: d\n  action: DENY\n  rules: [{to: [{operation: {paths: [\"/*/baz/{*}\"]}}]}]",
        &["operation.paths[0]: invalid or unsupported path template"],
    ),
    (
        "R-C19 {**} not last",
        "- name: d\n  action: DENY\n  rules: [{to: [{operation: {paths: [\"/{**}/foo/{*}\"]}}]}]",
        &["{**} must be the last operator"],
    ),
    (
        "R-C19 operator not filling its segment",
        "- name: d\n  action: DENY\n  rules: [{to: [{operation: {notPaths: [\"/foo/{*}.txt\"]}}]}]",
        &["operation.notPaths[0]: invalid or unsupported path template"],
    ),
    (
        "R-C19 named variables are unsupported",
        "- name: d\n  action: DENY\n  rules: [{to: [{operation: {paths: [\"/foo/{id}/{*}\"]}}]}]",
        &["invalid or unsupported path template"],
    ),
    (
        "serviceAccounts with principals",
        "- name: d\n  action: DENY\n  rules: [{from: [{source: {serviceAccounts: [\"a\"], principals: [\"b\"]}}]}]",
        &["cannot set serviceAccounts with namespaces or principals"],
    ),
    (
        "serviceAccounts wildcard",
        "- name: d\n  action: DENY\n  rules: [{from: [{source: {serviceAccounts: [\"ns/*\"]}}]}]",
        &["serviceAccounts[0]: \"ns/*\" must be <name> or <namespace>/<name>"],
    ),
    (
        "R-C1 selector and targetRefs together",
        "- name: d\n  action: DENY\n  selector: {matchLabels: {istio: ingressgateway}}\n  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]\n  rules: [{}]",
        &["selector: only one of targetRefs or workloadSelector can be set"],
    ),
    (
        "targetRef without a kind",
        "- name: d\n  action: DENY\n  targetRefs: [{name: gw}]\n  rules: [{}]",
        &["targetRefs[0].kind: must be set"],
    ),
    (
        "duplicate policy names in one namespace",
        "- name: same\n  action: DENY\n  rules: [{}]\n- name: same\n  action: ALLOW\n  rules: [{}]",
        &[
            "metadata.name: a policy named \"same\" in namespace \"istio-system\" is already defined at test.yaml:",
        ],
    ),
];

#[test]
fn webhook_rejections() {
    let mut failures = Vec::new();
    for (id, policies, wanted) in INVALID {
        match engine(None, policies, "") {
            Ok(_) => failures.push(format!("{id}: accepted")),
            Err(errs) => {
                let text = errs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n");
                for w in *wanted {
                    if !text.contains(w) {
                        failures.push(format!("{id}: missing {w:?} in\n{text}"));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn all_errors_are_returned_with_origin() {
    let errs = match engine(
        None,
        "- name: one\n  action: CUSTOM\n  provider: {name: ext-authz-grpc}\n  rules: [{from: [{source: {principals: [\"a\"], namespaces: [\"b\"]}}]}]\n- name: two\n  action: DENY\n  rules: [{from: [{source: {ipBlocks: [\"x\"]}}], to: [{operation: {ports: [\"y\"]}}]}]",
        "",
    ) {
        Ok(_) => panic!("accepted"),
        Err(e) => e,
    };
    let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert_eq!(errs.len(), 4, "{text:#?}");
    assert!(text[0].starts_with("policy \"one\" (test.yaml:"), "{text:#?}");
    assert!(
        errs.iter()
            .all(|e| e.origin.as_deref().is_some_and(|o| o.starts_with("test.yaml:")))
    );
    assert!(
        text.iter()
            .any(|t| t.starts_with("policy \"two\"") && t.contains("ports[0]: bad port (y)"))
    );
}

#[test]
fn istio_manifest_errors_name_their_file() {
    let errs = match engine(
        None,
        "",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: foo}\nspec:\n  action: DENY\n",
    ) {
        Ok(_) => panic!("accepted"),
        Err(e) => e,
    };
    let text = errs[0].to_string();
    assert_eq!(
        text,
        "policy \"p\" (istio.yaml:1): rules: DENY action without `rules` is meaningless as it will never be \
         triggered, add an empty rule `{}` if you want it be triggered for every request"
    );
}

#[test]
fn valid_configs_are_accepted() {
    for policies in [
        // Every Source/Operation field and when key in one ALLOW policy.
        r#"
- name: everything
  namespace: istio-ingress
  action: ALLOW
  rules:
    - from:
        - source:
            principals: ["cluster.local/ns/a/sa/b", "x*", "*y", "*"]
            notPrincipals: ["cluster.local/ns/bad/sa/x"]
            requestPrincipals: ["iss/sub"]
            notRequestPrincipals: ["*"]
            namespaces: ["a", "t*am"]
            notNamespaces: ["bad"]
            ipBlocks: ["10.0.0.0/8", "2001:db8::/32", "1.2.3.4"]
            notIpBlocks: ["10.9.0.0/16"]
            remoteIpBlocks: ["0.0.0.0/0"]
            notRemoteIpBlocks: ["192.0.2.1"]
      to:
        - operation:
            hosts: ["a.example.com", "*.b.example.com", "c.example.com:*"]
            notHosts: ["evil.example.com"]
            ports: ["8080", "0", "65535"]
            notPorts: ["15021"]
            methods: ["GET", "P*"]
            notMethods: ["DELETE"]
            paths: ["/a", "/b/*", "*.png", "/c/{*}/d", "/e/{**}"]
            notPaths: ["/health"]
      when:
        - {key: "request.headers[x-a]", values: ["v", "*"], notValues: ["w"]}
        - {key: "request.headers[:authority]", values: ["a*"]}
        - {key: source.ip, values: ["10.0.0.1"]}
        - {key: remote.ip, notValues: ["10.0.0.0/24"]}
        - {key: destination.ip, values: ["10.1.0.0/16"]}
        - {key: destination.port, values: ["8443"]}
        - {key: connection.sni, values: ["*.example.com"]}
        - {key: source.principal, values: ["*"]}
        - {key: source.namespace, values: ["a"]}
        - {key: source.serviceAccount, values: ["a/b"]}
        - {key: request.auth.principal, values: ["iss/sub"]}
        - {key: request.auth.audiences, values: ["aud"]}
        - {key: request.auth.presenter, values: ["p"]}
        - {key: "request.auth.claims[groups]", values: ["g"]}
        - {key: "experimental.envoy.filters.http.rbac[k]", values: ["[v]"]}
"#,
        // The CUSTOM-allowed subset (R-C5 "Net").
        r#"
- name: custom-everything
  action: CUSTOM
  provider: {name: ext-authz-http}
  rules:
    - from: [{source: {ipBlocks: ["1.2.3.4"], notIpBlocks: ["1.2.3.5"], remoteIpBlocks: ["10.0.0.0/8"], notRemoteIpBlocks: ["10.1.0.0/16"]}}]
      to: [{operation: {hosts: ["a"], notHosts: ["b"], ports: ["1"], notPorts: ["2"], methods: ["GET"], notMethods: ["PUT"], paths: ["/x"], notPaths: ["/y"]}}]
      when:
        - {key: "request.headers[x]", values: ["1"]}
        - {key: source.ip, values: ["1.2.3.4"]}
        - {key: remote.ip, values: ["1.2.3.4"]}
        - {key: destination.ip, values: ["1.2.3.4"]}
        - {key: destination.port, values: ["80"]}
        - {key: connection.sni, values: ["a"]}
"#,
        // ALLOW with no rules, AUDIT with no rules, the spec `{}` (deny all).
        "- name: a\n  action: ALLOW\n- name: b\n  action: AUDIT\n- metadata: {name: c}\n  spec: {}",
    ] {
        if let Err(errs) = engine(None, policies, "") {
            panic!(
                "rejected:\n{}\n{policies}",
                errs.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
}

#[test]
fn too_many_providers() {
    let mut src = String::from("extensionProviders:\n");
    for i in 0..65 {
        src.push_str(&format!(
            "  - name: p{i}\n    envoyExtAuthzGrpc: {{service: s.default.svc.cluster.local, port: 9000}}\n"
        ));
    }
    let config = authgate_config::parse(&src, "many.yaml", std::path::Path::new("."), &[])
        .unwrap_or_else(|e| panic!("{e}"));
    let errs = authgate_policy::PolicyEngine::compile(&config)
        .err()
        .unwrap_or_default();
    assert!(
        errs.iter()
            .any(|e| e.to_string().contains("at most 64 are supported")),
        "{errs:?}"
    );
}
