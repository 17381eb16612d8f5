//! `explain`: readable, complete, and consistent with `evaluate`.

mod common;

use common::{engine, get};

const POLICIES: &str = r#"
- name: ext-authz
  action: CUSTOM
  provider: {name: ext-authz-grpc}
  rules: [{to: [{operation: {paths: ["/productpage"]}}]}]
- name: blacklist
  action: DENY
  rules:
    - from: [{source: {remoteIpBlocks: ["192.0.2.0/24"]}}]
    - when: [{key: "request.headers[x-role]", values: ["admin"]}]
- name: allow-bookinfo
  action: ALLOW
  rules: [{to: [{operation: {hosts: ["bookinfo.example.com", "bookinfo.example.com:*"]}}]}]
"#;

#[test]
fn explain_names_the_deciding_fields() {
    let e = engine(None, POLICIES, "").unwrap_or_else(|e| panic!("{e:?}"));
    let req = get("/productpage")
        .host("BOOKINFO.example.com.")
        .remote("203.0.113.5")
        .header("x-role", "user");
    let x = e.explain(&req.attrs());
    let text = x.to_string();
    println!("{text}");
    assert_eq!(x.verdict, e.evaluate(&req.attrs()));
    assert_eq!(x.providers, vec!["ext-authz-grpc".to_owned()]);
    for needle in [
        "CUSTOM istio-system/ext-authz (test.yaml:",
        "provider=ext-authz-grpc: MATCH",
        "ok   to[0].operation.paths: path \"/productpage\" matches one of [\"/productpage\"]",
        "DENY istio-system/blacklist",
        "FAIL from[0].source.remoteIpBlocks: remote.ip 203.0.113.5 matches none of [\"192.0.2.0/24\", ]",
        "FAIL when[0].values: header x-role = [\"user\"] matches none of [\"admin\"]",
        "ALLOW istio-system/allow-bookinfo",
        "host \"BOOKINFO.example.com\" matches one of",
        "call ext_authz \"ext-authz-grpc\"",
        "ALLOW if every called provider allows",
    ] {
        let needle = needle.replace(", ]", "]");
        assert!(text.contains(&needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn explain_shows_denials_and_notes() {
    let e = engine(
        None,
        &format!("{POLICIES}- name: typo\n  action: CUSTOM\n  provider: {{name: nope}}\n  rules: [{{}}]\n"),
        "",
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    let req = get("/x").host("evil.example.com");
    let text = e.explain(&req.attrs()).to_string();
    println!("{text}");
    for needle in [
        "no ext_authz call: a CUSTOM policy with an undefined provider matched",
        "deny: a CUSTOM policy with an undefined provider matched (typo-deny-due-to-bad-CUSTOM-action)",
        "rbac_access_denied_matched_policy[typo-deny-due-to-bad-CUSTOM-action]",
        "notes",
        "extension provider \"nope\" is not defined",
        "(empty rule: matches every request)",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn explain_without_policies() {
    let e = engine(None, "", "").unwrap_or_else(|e| panic!("{e:?}"));
    let text = e.explain(&get("/").attrs()).to_string();
    assert!(text.contains("none apply to this gateway"), "{text}");
    assert!(text.contains("result  ALLOW"), "{text}");
}
