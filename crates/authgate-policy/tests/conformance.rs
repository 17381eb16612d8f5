//! Conformance with Istio's documented AuthorizationPolicy semantics at an ingress gateway.
//!
//! Each case: a small policy set (inline in the gateway file, or Istio manifests) and one
//! request → the ext_authz providers that are called and the local decision. Rule ids
//! (R-Cxx, R-Bxx) refer to `../shared/spec/istio-ext-authz.md`. Cases marked "authgate:" pin a
//! deliberate, documented difference (see `docs/policy.md`).

mod common;

use authgate_policy::{DenyReason, LocalDecision, Shadow};
use common::{Rq, engine, get, rq};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Local {
    Allow,
    /// Denied by this policy (DENY, or `<name>-deny-due-to-bad-CUSTOM-action`).
    Deny(&'static str),
    /// Denied because ALLOW policies exist and none matched.
    NoAllow,
}

struct Case {
    id: &'static str,
    gateway: Option<&'static str>,
    policies: &'static str,
    istio: &'static str,
    req: Rq,
    providers: &'static [&'static str],
    local: Local,
    audit: bool,
}

fn case(
    id: &'static str,
    policies: &'static str,
    req: Rq,
    providers: &'static [&'static str],
    local: Local,
) -> Case {
    Case {
        id,
        gateway: None,
        policies,
        istio: "",
        req,
        providers,
        local,
        audit: false,
    }
}

fn istio(id: &'static str, manifests: &'static str, req: Rq, local: Local) -> Case {
    Case {
        id,
        gateway: None,
        policies: "",
        istio: manifests,
        req,
        providers: &[],
        local,
        audit: false,
    }
}

impl Case {
    fn gw(mut self, g: &'static str) -> Self {
        self.gateway = Some(g);
        self
    }
    fn audited(mut self) -> Self {
        self.audit = true;
        self
    }
    fn with_istio(mut self, m: &'static str) -> Self {
        self.istio = m;
        self
    }
}

use Local::{Allow, Deny, NoAllow};

// Policy snippets reused across cases.
const SEED_CUSTOM: &str = r#"
- name: ext-authz
  action: CUSTOM
  provider: {name: ext-authz-grpc}
  rules: [{to: [{operation: {paths: ["/productpage"]}}]}]
"#;

const DENY_ALL: &str = r#"
- name: deny-all
  action: DENY
  rules: [{}]
"#;

const ALLOW_NOTHING: &str = r#"
- name: allow-nothing
  action: ALLOW
"#;

const ALLOW_ALL: &str = r#"
- name: allow-all
  action: ALLOW
  rules: [{}]
"#;

const TWO_PROVIDERS: &str = r#"
- name: z-on-b
  action: CUSTOM
  provider: {name: zeta}
  rules: [{to: [{operation: {paths: ["/b*"]}}]}]
- name: a-on-a
  action: CUSTOM
  provider: {name: alpha}
  rules: [{to: [{operation: {paths: ["/a*"]}}]}]
- name: both-on-ab
  action: CUSTOM
  provider: {name: zeta}
  rules: [{to: [{operation: {paths: ["/ab"]}}]}]
"#;

const BAD_PROVIDER: &str = r#"
- name: typo
  action: CUSTOM
  provider: {name: ext-authz-grcp}
  rules: [{to: [{operation: {paths: ["/admin*"]}}]}]
"#;

const IP_WHITELIST: &str = r#"
- name: whitelist
  action: ALLOW
  rules: [{from: [{source: {remoteIpBlocks: ["203.0.113.0/24", "198.51.100.7"]}}]}]
"#;

const IP_BLACKLIST: &str = r#"
- name: blacklist
  action: DENY
  rules: [{from: [{source: {ipBlocks: ["192.0.2.0/24"]}}]}]
"#;

const HEADER_DENY: &str = r#"
- name: no-admin-role
  action: DENY
  rules: [{when: [{key: "request.headers[X-Role]", values: ["admin"]}]}]
"#;

const MTLS_ALLOW: &str = r#"
- name: mtls
  action: ALLOW
  rules: [{from: [{source: {principals: ["cluster.local/ns/foo/sa/sleep"]}}]}]
"#;

const HOSTS_CUSTOM: &str = r#"
- name: host-trigger
  action: CUSTOM
  provider: {name: ext-authz-http}
  rules: [{to: [{operation: {hosts: ["bookinfo.example.com"]}}]}]
"#;

const SELECTED: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-sel, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  action: DENY
  rules: [{}]
"#;

fn cases() -> Vec<Case> {
    vec![
        // ---- R-C4: actions and evaluation order ----
        case("R-C4 no policy: allow, no ext_authz", "", get("/productpage"), &[], Allow),
        case("R-C4/R-B3 CUSTOM rule matches: provider called", SEED_CUSTOM, get("/productpage"), &["ext-authz-grpc"], Allow),
        case("R-C4/R-B3 CUSTOM rule does not match: no call", SEED_CUSTOM, get("/api/v1/products"), &[], Allow),
        case(
            "R-C5/R-C12 CUSTOM rules [{}] triggers on every request",
            "- name: all\n  action: CUSTOM\n  provider: {name: ext-authz-http}\n  rules: [{}]",
            rq("OPTIONS", "/whatever"),
            &["ext-authz-http"],
            Allow,
        ),
        case("R-C4 DENY rules [{}] denies everything", DENY_ALL, get("/"), &[], Deny("deny-all")),
        case("R-C7 ALLOW without rules allows nothing", ALLOW_NOTHING, get("/"), &[], NoAllow),
        case("R-C12 ALLOW rules [{}] allows everything", ALLOW_ALL, get("/anything"), &[], Allow),
        case(
            "R-C7 ALLOW with rules: [] is the same as absent",
            "- name: empty-list\n  action: ALLOW\n  rules: []",
            get("/"),
            &[],
            NoAllow,
        ),
        case(
            "R-C1 action defaults to ALLOW",
            "- name: default-action\n  rules: [{to: [{operation: {paths: [\"/ok\"]}}]}]",
            get("/no"),
            &[],
            NoAllow,
        ),
        case(
            "R-C4 ALLOW path prefix matches",
            "- name: public\n  action: ALLOW\n  rules: [{to: [{operation: {paths: [\"/public/*\"]}}]}]",
            get("/public/x"),
            &[],
            Allow,
        ),
        case(
            "R-C4 ALLOW present and none matches: 403",
            "- name: public\n  action: ALLOW\n  rules: [{to: [{operation: {paths: [\"/public/*\"]}}]}]",
            get("/private"),
            &[],
            NoAllow,
        ),
        case(
            "R-C4 DENY is evaluated before ALLOW",
            "- name: allow-all\n  action: ALLOW\n  rules: [{}]\n- name: deny-x\n  action: DENY\n  rules: [{to: [{operation: {paths: [\"/x\"]}}]}]",
            get("/x"),
            &[],
            Deny("deny-x"),
        ),
        case(
            "R-B1a(c) a CUSTOM trigger does not bypass DENY",
            "- name: ext-authz\n  action: CUSTOM\n  provider: {name: ext-authz-grpc}\n  rules: [{}]\n- name: deny-x\n  action: DENY\n  rules: [{to: [{operation: {paths: [\"/x\"]}}]}]",
            get("/x"),
            &["ext-authz-grpc"],
            Deny("deny-x"),
        ),
        case(
            "R-C4a CUSTOM-triggered request must still match an ALLOW policy",
            "- name: ext-authz\n  action: CUSTOM\n  provider: {name: ext-authz-grpc}\n  rules: [{}]\n- name: allow-public\n  action: ALLOW\n  rules: [{to: [{operation: {paths: [\"/public*\"]}}]}]",
            get("/productpage"),
            &["ext-authz-grpc"],
            NoAllow,
        ),
        case(
            "R-C4a CUSTOM + matching ALLOW",
            "- name: ext-authz\n  action: CUSTOM\n  provider: {name: ext-authz-grpc}\n  rules: [{}]\n- name: allow-all\n  action: ALLOW\n  rules: [{}]",
            get("/productpage"),
            &["ext-authz-grpc"],
            Allow,
        ),
        case(
            "R-C4 AUDIT only marks",
            "- name: audit-all\n  action: AUDIT\n  rules: [{}]",
            get("/"),
            &[],
            Allow,
        )
        .audited(),
        case(
            "R-C4 AUDIT marks a denied request too",
            "- name: audit-all\n  action: AUDIT\n  rules: [{}]\n- name: deny-all\n  action: DENY\n  rules: [{}]",
            get("/"),
            &[],
            Deny("deny-all"),
        )
        .audited(),
        case(
            "R-C4 AUDIT without rules marks nothing",
            "- name: audit-none\n  action: AUDIT",
            get("/"),
            &[],
            Allow,
        ),
        case(
            "R-C11 several ALLOW policies: any one suffices",
            "- name: a\n  action: ALLOW\n  rules: [{to: [{operation: {paths: [\"/a\"]}}]}]\n- name: b\n  action: ALLOW\n  rules: [{to: [{operation: {paths: [\"/b\"]}}]}]",
            get("/b"),
            &[],
            Allow,
        ),
        case(
            "R-C11 several DENY policies: the first matching is reported",
            "- name: d1\n  action: DENY\n  rules: [{to: [{operation: {paths: [\"/x\"]}}]}]\n- name: d2\n  action: DENY\n  rules: [{}]",
            get("/y"),
            &[],
            Deny("d2"),
        ),
        // ---- R-C8 / R-B3: several CUSTOM providers (≥1.30, flag on) ----
        case("R-C8 provider alpha only for /a", TWO_PROVIDERS, get("/a"), &["alpha"], Allow),
        case("R-C8 provider zeta only for /b", TWO_PROVIDERS, get("/b"), &["zeta"], Allow),
        case("R-C8 neither provider for /c", TWO_PROVIDERS, get("/c"), &[], Allow),
        case("R-C8/R-B3a both providers, in provider-name order", TWO_PROVIDERS, get("/ab"), &["alpha", "zeta"], Allow),
        case(
            "R-B3 CUSTOM rules of one provider are ORed across its policies",
            "- name: p1\n  action: CUSTOM\n  provider: {name: ext-authz-http}\n  rules: [{to: [{operation: {paths: [\"/x\"]}}]}]\n- name: p2\n  action: CUSTOM\n  provider: {name: ext-authz-http}\n  rules: [{to: [{operation: {paths: [\"/y\"]}}]}]",
            get("/y"),
            &["ext-authz-http"],
            Allow,
        ),
        case(
            "R-B3 one provider is called once even if two of its policies match",
            "- name: p1\n  action: CUSTOM\n  provider: {name: ext-authz-http}\n  rules: [{}]\n- name: p2\n  action: CUSTOM\n  provider: {name: ext-authz-http}\n  rules: [{}]",
            get("/y"),
            &["ext-authz-http"],
            Allow,
        ),
        case(
            "R-C8 gRPC and HTTP providers together",
            "- name: g\n  action: CUSTOM\n  provider: {name: ext-authz-grpc}\n  rules: [{}]\n- name: h\n  action: CUSTOM\n  provider: {name: ext-authz-http}\n  rules: [{to: [{operation: {methods: [\"POST\"]}}]}]",
            rq("POST", "/"),
            &["ext-authz-grpc", "ext-authz-http"],
            Allow,
        ),
        // ---- R-C9: CUSTOM naming an unknown provider ----
        case("R-C9 bad provider denies the requests its rules match", BAD_PROVIDER, get("/admin/x"), &[], Deny("typo-deny-due-to-bad-CUSTOM-action")),
        case("R-C9 bad provider leaves other requests alone (≥1.20)", BAD_PROVIDER, get("/public"), &[], Allow),
        case(
            "R-C9 a bad-provider deny wins over good providers (no call is made)",
            "- name: typo\n  action: CUSTOM\n  provider: {name: nope}\n  rules: [{}]\n- name: good\n  action: CUSTOM\n  provider: {name: ext-authz-grpc}\n  rules: [{}]",
            get("/"),
            &[],
            Deny("typo-deny-due-to-bad-CUSTOM-action"),
        ),
        case(
            "R-C10 provider names are matched exactly (case matters)",
            "- name: caps\n  action: CUSTOM\n  provider: {name: Ext-Authz-Grpc}\n  rules: [{}]",
            get("/"),
            &[],
            Deny("caps-deny-due-to-bad-CUSTOM-action"),
        ),
        // ---- R-C24: dry-run ----
        case(
            "R-C24 dry-run CUSTOM is a no-op",
            "- metadata: {name: dry, annotations: {istio.io/dry-run: \"true\"}}\n  spec: {action: CUSTOM, provider: {name: ext-authz-grpc}, rules: [{}]}",
            get("/"),
            &[],
            Allow,
        ),
        case(
            "R-C24 dry-run DENY never denies",
            "- apiVersion: security.istio.io/v1\n  kind: AuthorizationPolicy\n  metadata: {name: dry-deny, annotations: {istio.io/dry-run: \"true\"}}\n  spec: {action: DENY, rules: [{}]}",
            get("/"),
            &[],
            Allow,
        ),
        case(
            "R-C24 dry-run ALLOW does not make the gateway default-deny",
            "- apiVersion: security.istio.io/v1\n  kind: AuthorizationPolicy\n  metadata: {name: dry-allow, annotations: {istio.io/dry-run: \"true\"}}\n  spec: {action: ALLOW, rules: [{to: [{operation: {paths: [\"/x\"]}}]}]}",
            get("/y"),
            &[],
            Allow,
        ),
        case(
            "R-C24 istio.io/dry-run \"false\" is enforced",
            "- apiVersion: security.istio.io/v1\n  kind: AuthorizationPolicy\n  metadata: {name: not-dry, annotations: {istio.io/dry-run: \"false\"}}\n  spec: {action: DENY, rules: [{}]}",
            get("/"),
            &[],
            Deny("not-dry"),
        ),
        case(
            "R-C24 an unparsable dry-run value is false (enforced)",
            "- apiVersion: security.istio.io/v1\n  kind: AuthorizationPolicy\n  metadata: {name: bad-dry, annotations: {istio.io/dry-run: \"yes\"}}\n  spec: {action: DENY, rules: [{}]}",
            get("/"),
            &[],
            Deny("bad-dry"),
        ),
        // ---- R-C11: combination logic ----
        case(
            "R-C11 from[] entries are ORed",
            "- name: two-sources\n  action: DENY\n  rules: [{from: [{source: {ipBlocks: [\"1.1.1.1\"]}}, {source: {ipBlocks: [\"2.2.2.2\"]}}]}]",
            get("/").src("2.2.2.2"),
            &[],
            Deny("two-sources"),
        ),
        case(
            "R-C11 to[] entries are ORed",
            "- name: two-ops\n  action: DENY\n  rules: [{to: [{operation: {methods: [\"DELETE\"]}}, {operation: {paths: [\"/admin\"]}}]}]",
            get("/admin"),
            &[],
            Deny("two-ops"),
        ),
        case(
            "R-C11 fields inside one operation are ANDed",
            "- name: get-x\n  action: DENY\n  rules: [{to: [{operation: {methods: [\"GET\"], paths: [\"/x\"]}}]}]",
            rq("POST", "/x"),
            &[],
            Allow,
        ),
        case(
            "R-C11 X and notX both apply (X matches, notX excludes)",
            "- name: api-but-health\n  action: DENY\n  rules: [{to: [{operation: {paths: [\"/api/*\"], notPaths: [\"/api/health\"]}}]}]",
            get("/api/health"),
            &[],
            Allow,
        ),
        case(
            "R-C11 X and notX both apply (X matches, notX does not)",
            "- name: api-but-health\n  action: DENY\n  rules: [{to: [{operation: {paths: [\"/api/*\"], notPaths: [\"/api/health\"]}}]}]",
            get("/api/users"),
            &[],
            Deny("api-but-health"),
        ),
        case(
            "R-C11 when conditions are ANDed (one fails)",
            "- name: two-when\n  action: DENY\n  rules: [{when: [{key: \"request.headers[x-a]\", values: [\"1\"]}, {key: \"request.headers[x-b]\", values: [\"2\"]}]}]",
            get("/").header("x-a", "1"),
            &[],
            Allow,
        ),
        case(
            "R-C11 when conditions are ANDed (both hold)",
            "- name: two-when\n  action: DENY\n  rules: [{when: [{key: \"request.headers[x-a]\", values: [\"1\"]}, {key: \"request.headers[x-b]\", values: [\"2\"]}]}]",
            get("/").header("x-a", "1").header("x-b", "2"),
            &[],
            Deny("two-when"),
        ),
        case(
            "R-C11 rules are ORed",
            "- name: r\n  action: DENY\n  rules: [{to: [{operation: {paths: [\"/1\"]}}]}, {to: [{operation: {paths: [\"/2\"]}}]}]",
            get("/2"),
            &[],
            Deny("r"),
        ),
        case(
            "R-C11 from AND to: source matches but operation does not",
            "- name: ft\n  action: DENY\n  rules: [{from: [{source: {ipBlocks: [\"10.0.0.0/8\"]}}], to: [{operation: {paths: [\"/admin\"]}}]}]",
            get("/public"),
            &[],
            Allow,
        ),
        case(
            "R-C11 values and notValues of one condition both apply",
            "- name: vn\n  action: DENY\n  rules: [{when: [{key: \"request.headers[x-env]\", values: [\"prod*\"], notValues: [\"prod-canary\"]}]}]",
            get("/").header("x-env", "prod-canary"),
            &[],
            Allow,
        ),
        // ---- R-C13: string syntax ----
        case("R-C13 exact path", SEED_CUSTOM, get("/productpage/x"), &[], Allow),
        case(
            "R-C13 prefix `abc*` also matches `abc`",
            "- name: pre\n  action: DENY\n  rules: [{to: [{operation: {paths: [\"/api*\"]}}]}]",
            get("/api"),
            &[],
            Deny("pre"),
        ),
        case(
            "R-C13 prefix is not segment-aware",
            "- name: pre\n  action: DENY\n  rules: [{to: [{operation: {paths: [\"/api*\"]}}]}]",
            get("/apiary"),
            &[],
            Deny("pre"),
        ),
        case(
            "R-C13 suffix",
            "- name: png\n  action: DENY\n  rules: [{to: [{operation: {paths: [\"*.png\"]}}]}]",
            get("/img/a.png"),
            &[],
            Deny("png"),
        ),
        case(
            "R-C13 `*` matches every path",
            "- name: star\n  action: DENY\n  rules: [{to: [{operation: {paths: [\"*\"]}}]}]",
            get("/"),
            &[],
            Deny("star"),
        ),
        case(
            "R-C13 a `*` in the middle is literal (#46910)",
            "- name: mid\n  action: DENY\n  rules: [{to: [{operation: {paths: [\"/service/*health\"]}}]}]",
            get("/service/xhealth"),
            &[],
            Allow,
        ),
        case(
            "R-C13 a `*` in the middle matches itself",
            "- name: mid\n  action: DENY\n  rules: [{to: [{operation: {paths: [\"/service/*health\"]}}]}]",
            get("/service/*health"),
            &[],
            Deny("mid"),
        ),
        case("R-C13 paths are case-sensitive", SEED_CUSTOM, get("/ProductPage"), &[], Allow),
        case(
            "R-C13 methods are case-sensitive",
            "- name: m\n  action: DENY\n  rules: [{to: [{operation: {methods: [\"GET\"]}}]}]",
            rq("get", "/"),
            &[],
            Allow,
        ),
        case(
            "R-C13 method prefix",
            "- name: m\n  action: DENY\n  rules: [{to: [{operation: {methods: [\"P*\"]}}]}]",
            rq("PUT", "/"),
            &[],
            Deny("m"),
        ),
        case(
            "R-C13 notMethods in DENY (deny all but GET)",
            "- name: ro\n  action: DENY\n  rules: [{to: [{operation: {notMethods: [\"GET\", \"HEAD\"]}}]}]",
            rq("POST", "/"),
            &[],
            Deny("ro"),
        ),
        case(
            "R-C13 notMethods in DENY lets the listed method through",
            "- name: ro\n  action: DENY\n  rules: [{to: [{operation: {notMethods: [\"GET\", \"HEAD\"]}}]}]",
            rq("HEAD", "/"),
            &[],
            Allow,
        ),
        case(
            "R-C13 methods `*` is presence (always)",
            "- name: any-method\n  action: DENY\n  rules: [{to: [{operation: {methods: [\"*\"]}}]}]",
            rq("PATCH", "/"),
            &[],
            Deny("any-method"),
        ),
        // ---- R-C16: hosts ----
        case("R-C16 hosts compare case-insensitively", HOSTS_CUSTOM, get("/").host("BOOKINFO.Example.COM"), &["ext-authz-http"], Allow),
        case("R-C16/authgate one trailing dot is ignored", HOSTS_CUSTOM, get("/").host("BOOKINFO.example.com."), &["ext-authz-http"], Allow),
        case("R-C16 an exact host does not match host:port", HOSTS_CUSTOM, get("/").host("bookinfo.example.com:8080"), &[], Allow),
        case("R-C16 a different host does not match", HOSTS_CUSTOM, get("/").host("reviews.example.com"), &[], Allow),
        case(
            "R-C16 `host:*` matches any port",
            "- name: h\n  action: DENY\n  rules: [{to: [{operation: {hosts: [\"bookinfo.example.com\", \"bookinfo.example.com:*\"]}}]}]",
            get("/").host("Bookinfo.Example.com:8443"),
            &[],
            Deny("h"),
        ),
        case(
            "R-C16 `*.example.com` suffix",
            "- name: h\n  action: DENY\n  rules: [{to: [{operation: {hosts: [\"*.example.com\"]}}]}]",
            get("/").host("A.B.EXAMPLE.com"),
            &[],
            Deny("h"),
        ),
        case(
            "R-C16 `*.example.com` does not match the apex",
            "- name: h\n  action: DENY\n  rules: [{to: [{operation: {hosts: [\"*.example.com\"]}}]}]",
            get("/").host("example.com"),
            &[],
            Allow,
        ),
        case(
            "R-C16 hosts `*` is presence",
            "- name: h\n  action: DENY\n  rules: [{to: [{operation: {hosts: [\"*\"]}}]}]",
            get("/").host("anything"),
            &[],
            Deny("h"),
        ),
        case(
            "R-C21 DENY notHosts (deny all but listed hosts)",
            "- name: only-bookinfo\n  action: DENY\n  rules: [{to: [{operation: {notHosts: [\"bookinfo.example.com\", \"bookinfo.example.com:*\"]}}]}]",
            get("/").host("evil.example.com"),
            &[],
            Deny("only-bookinfo"),
        ),
        case(
            "R-C21 DENY notHosts lets a listed host (any case, with port) through",
            "- name: only-bookinfo\n  action: DENY\n  rules: [{to: [{operation: {notHosts: [\"bookinfo.example.com\", \"bookinfo.example.com:*\"]}}]}]",
            get("/").host("BOOKINFO.example.com.:8080"),
            &[],
            Allow,
        ),
        // ---- ports (listener port) ----
        case(
            "R-C6 ports compare with the listener port",
            "- name: p\n  action: DENY\n  rules: [{to: [{operation: {ports: [\"8443\"]}}]}]",
            get("/").port(8443),
            &[],
            Deny("p"),
        ),
        case(
            "R-C6 ports: other listener port",
            "- name: p\n  action: DENY\n  rules: [{to: [{operation: {ports: [\"8443\"]}}]}]",
            get("/").port(8080),
            &[],
            Allow,
        ),
        case(
            "R-C6 notPorts",
            "- name: p\n  action: DENY\n  rules: [{to: [{operation: {notPorts: [\"8443\"]}}]}]",
            get("/").port(8080),
            &[],
            Deny("p"),
        ),
        case(
            "R-C6 when destination.port",
            "- name: p\n  action: ALLOW\n  rules: [{when: [{key: destination.port, values: [\"8080\"]}]}]",
            get("/").port(8080),
            &[],
            Allow,
        ),
        case(
            "R-C6 ports written as YAML integers",
            "- name: p\n  action: DENY\n  rules: [{to: [{operation: {ports: [8080]}}]}]",
            get("/").port(8080),
            &[],
            Deny("p"),
        ),
        // ---- IP blocks ----
        case("R-C6 ipBlocks blacklist (direct peer)", IP_BLACKLIST, get("/").src("192.0.2.55"), &[], Deny("blacklist")),
        case("R-C6 ipBlocks blacklist: other peers pass", IP_BLACKLIST, get("/").src("10.9.9.9"), &[], Allow),
        case(
            "R-C6 ipBlocks look at the peer, not X-Forwarded-For",
            IP_BLACKLIST,
            get("/").src("10.0.0.1").remote("192.0.2.55"),
            &[],
            Allow,
        ),
        case("R-C6 remoteIpBlocks whitelist (client from XFF)", IP_WHITELIST, get("/").src("10.0.0.1").remote("203.0.113.9"), &[], Allow),
        case("R-C6 remoteIpBlocks whitelist: single IP is /32", IP_WHITELIST, get("/").remote("198.51.100.7"), &[], Allow),
        case("R-C6 remoteIpBlocks whitelist: neighbour of a single IP", IP_WHITELIST, get("/").remote("198.51.100.8"), &[], NoAllow),
        case(
            "R-C6 remoteIpBlocks ignore the direct peer",
            IP_WHITELIST,
            get("/").src("203.0.113.9").remote("10.0.0.1"),
            &[],
            NoAllow,
        ),
        case(
            "R-C21 DENY notRemoteIpBlocks (whitelist as a deny)",
            "- name: only-office\n  action: DENY\n  rules: [{from: [{source: {notRemoteIpBlocks: [\"203.0.113.0/24\"]}}]}]",
            get("/").remote("8.8.8.8"),
            &[],
            Deny("only-office"),
        ),
        case(
            "R-C6 IPv6 CIDR",
            "- name: v6\n  action: DENY\n  rules: [{from: [{source: {ipBlocks: [\"2001:db8::/32\"]}}]}]",
            get("/").src("2001:db8:1::5"),
            &[],
            Deny("v6"),
        ),
        case(
            "R-C6 an IPv4-mapped IPv6 peer matches an IPv4 block",
            IP_BLACKLIST,
            get("/").src("::ffff:192.0.2.1"),
            &[],
            Deny("blacklist"),
        ),
        case(
            "R-C6 CIDR with host bits set is the network",
            "- name: c\n  action: DENY\n  rules: [{from: [{source: {ipBlocks: [\"10.1.2.3/16\"]}}]}]",
            get("/").src("10.1.200.200"),
            &[],
            Deny("c"),
        ),
        case(
            "R-C6 when source.ip",
            "- name: w\n  action: DENY\n  rules: [{when: [{key: source.ip, values: [\"10.0.0.0/24\"]}]}]",
            get("/").src("10.0.0.77"),
            &[],
            Deny("w"),
        ),
        case(
            "R-C6 when remote.ip notValues",
            "- name: w\n  action: DENY\n  rules: [{when: [{key: remote.ip, notValues: [\"203.0.113.0/24\"]}]}]",
            get("/").remote("203.0.113.1"),
            &[],
            Allow,
        ),
        case(
            "R-C6 when destination.ip",
            "- name: w\n  action: DENY\n  rules: [{when: [{key: destination.ip, values: [\"10.1.0.2\"]}]}]",
            get("/"),
            &[],
            Deny("w"),
        ),
        case(
            "R-C5 CUSTOM with ipBlocks is accepted and triggers",
            "- name: c\n  action: CUSTOM\n  provider: {name: ext-authz-grpc}\n  rules: [{from: [{source: {notIpBlocks: [\"10.0.0.0/8\"]}}]}]",
            get("/").src("8.8.4.4"),
            &["ext-authz-grpc"],
            Allow,
        ),
        // ---- identities (mTLS client certificate) ----
        case("R-C6 principals match the URI SAN with spiffe:// prepended", MTLS_ALLOW, get("/").principal("spiffe://cluster.local/ns/foo/sa/sleep"), &[], Allow),
        case("R-C6 principals never match without a client certificate", MTLS_ALLOW, get("/"), &[], NoAllow),
        case("R-C6 principals: another identity", MTLS_ALLOW, get("/").principal("spiffe://cluster.local/ns/foo/sa/other"), &[], NoAllow),
        case(
            "R-C6 notPrincipals matches a request without a certificate",
            "- name: np\n  action: DENY\n  rules: [{from: [{source: {notPrincipals: [\"cluster.local/ns/foo/sa/sleep\"]}}]}]",
            get("/"),
            &[],
            Deny("np"),
        ),
        case(
            "R-C6 principals `*`: any authenticated client",
            "- name: any-cert\n  action: ALLOW\n  rules: [{from: [{source: {principals: [\"*\"]}}]}]",
            get("/").principal("spiffe://x/ns/y/sa/z"),
            &[],
            Allow,
        ),
        case(
            "R-C6 principal prefix",
            "- name: pp\n  action: ALLOW\n  rules: [{from: [{source: {principals: [\"cluster.local/ns/foo/*\"]}}]}]",
            get("/").principal("spiffe://cluster.local/ns/foo/sa/a"),
            &[],
            Allow,
        ),
        case(
            "R-C6 principal suffix",
            "- name: ps\n  action: ALLOW\n  rules: [{from: [{source: {principals: [\"*/sa/admin\"]}}]}]",
            get("/").principal("spiffe://td/ns/x/sa/admin"),
            &[],
            Allow,
        ),
        case(
            "R-C6 namespaces",
            "- name: ns\n  action: ALLOW\n  rules: [{from: [{source: {namespaces: [\"foo\"]}}]}]",
            get("/").principal("spiffe://cluster.local/ns/foo/sa/a"),
            &[],
            Allow,
        ),
        case(
            "R-C6 namespaces glob anywhere",
            "- name: ns\n  action: ALLOW\n  rules: [{from: [{source: {namespaces: [\"t*am-*\"]}}]}]",
            get("/").principal("spiffe://cluster.local/ns/team-a/sa/a"),
            &[],
            Allow,
        ),
        case(
            "R-C6 namespaces without a certificate",
            "- name: ns\n  action: ALLOW\n  rules: [{from: [{source: {namespaces: [\"*\"]}}]}]",
            get("/"),
            &[],
            NoAllow,
        ),
        case(
            "R-C6 serviceAccounts (policy namespace by default)",
            "- name: sa\n  namespace: istio-ingress\n  action: ALLOW\n  rules: [{from: [{source: {serviceAccounts: [\"sleep\", \"foo/curl\"]}}]}]",
            get("/").principal("spiffe://cluster.local/ns/foo/sa/curl"),
            &[],
            Allow,
        ),
        case(
            "R-C6/CVE-2026-39350 serviceAccounts dots are literal",
            "- name: sa\n  action: ALLOW\n  rules: [{from: [{source: {serviceAccounts: [\"foo/a.b\"]}}]}]",
            get("/").principal("spiffe://cluster.local/ns/foo/sa/aXb"),
            &[],
            NoAllow,
        ),
        case(
            "R-C6 when source.principal",
            "- name: w\n  action: DENY\n  rules: [{when: [{key: source.principal, values: [\"cluster.local/ns/bad/sa/x\"]}]}]",
            get("/").principal("spiffe://cluster.local/ns/bad/sa/x"),
            &[],
            Deny("w"),
        ),
        case(
            "R-C6 when source.namespace notValues",
            "- name: w\n  action: DENY\n  rules: [{when: [{key: source.namespace, notValues: [\"good\"]}]}]",
            get("/").principal("spiffe://cluster.local/ns/good/sa/x"),
            &[],
            Allow,
        ),
        case(
            "R-C6 requestPrincipals never match (no JWT at the gateway)",
            "- name: jwt\n  action: ALLOW\n  rules: [{from: [{source: {requestPrincipals: [\"*\"]}}]}]",
            get("/").header("authorization", "Bearer x"),
            &[],
            NoAllow,
        ),
        case(
            "R-C6 notRequestPrincipals always match",
            "- name: need-jwt\n  action: DENY\n  rules: [{from: [{source: {notRequestPrincipals: [\"*\"]}}]}]",
            get("/"),
            &[],
            Deny("need-jwt"),
        ),
        case(
            "R-C6 request.auth.claims values never match",
            "- name: claims\n  action: ALLOW\n  rules: [{when: [{key: \"request.auth.claims[groups]\", values: [\"admin\"]}]}]",
            get("/"),
            &[],
            NoAllow,
        ),
        // ---- request.headers ----
        case(
            "R-C6 request.headers exact (the seed's deny header)",
            HEADER_DENY,
            get("/").header("x-role", "admin"),
            &[],
            Deny("no-admin-role"),
        ),
        case("R-C6 header names are case-insensitive", HEADER_DENY, get("/").header("X-ROLE", "admin"), &[], Deny("no-admin-role")),
        case("R-C6 header values are case-sensitive", HEADER_DENY, get("/").header("x-role", "Admin"), &[], Allow),
        case(
            "CVE-2026-26308 each value of a repeated header is checked (DENY)",
            HEADER_DENY,
            get("/").header("x-role", "user").header("x-role", "admin"),
            &[],
            Deny("no-admin-role"),
        ),
        case(
            "CVE-2026-26308 a comma-joined single value is one value",
            HEADER_DENY,
            get("/").header("x-role", "user,admin"),
            &[],
            Allow,
        ),
        case(
            "R-C13 header `*` is presence, even with an empty value",
            "- name: hp\n  action: DENY\n  rules: [{when: [{key: \"request.headers[x-debug]\", values: [\"*\"]}]}]",
            get("/").header("x-debug", ""),
            &[],
            Deny("hp"),
        ),
        case(
            "R-C13 header `*`: absent header",
            "- name: hp\n  action: DENY\n  rules: [{when: [{key: \"request.headers[x-debug]\", values: [\"*\"]}]}]",
            get("/"),
            &[],
            Allow,
        ),
        case(
            "R-C11 notValues on an absent header match",
            "- name: need-token\n  action: DENY\n  rules: [{when: [{key: \"request.headers[x-token]\", notValues: [\"*\"]}]}]",
            get("/"),
            &[],
            Deny("need-token"),
        ),
        case(
            "R-C13 header value prefix",
            "- name: ua\n  action: DENY\n  rules: [{when: [{key: \"request.headers[User-Agent]\", values: [\"curl/*\"]}]}]",
            get("/").header("user-agent", "curl/8.5.0"),
            &[],
            Deny("ua"),
        ),
        case(
            "R-C5 CUSTOM with a request.headers trigger (ASM: only check when a header is present)",
            "- name: c\n  action: CUSTOM\n  provider: {name: ext-authz-http}\n  rules: [{when: [{key: \"request.headers[authorization]\", values: [\"*\"]}]}]",
            get("/").header("authorization", "Bearer t"),
            &["ext-authz-http"],
            Allow,
        ),
        case(
            "request.headers[:authority] compares the authority as sent",
            "- name: a\n  action: DENY\n  rules: [{when: [{key: \"request.headers[:authority]\", values: [\"admin.*\"]}]}]",
            get("/").host("admin.example.com"),
            &[],
            Deny("a"),
        ),
        case(
            "request.headers[host] is the authority",
            "- name: a\n  action: DENY\n  rules: [{when: [{key: \"request.headers[Host]\", values: [\"*.internal\"]}]}]",
            get("/").host("db.internal"),
            &[],
            Deny("a"),
        ),
        // ---- connection.sni ----
        case(
            "R-C6 connection.sni",
            "- name: s\n  action: DENY\n  rules: [{when: [{key: connection.sni, values: [\"*.internal.example.com\"]}]}]",
            get("/").sni("db.internal.example.com"),
            &[],
            Deny("s"),
        ),
        case(
            "R-C6 connection.sni notValues without TLS",
            "- name: s\n  action: DENY\n  rules: [{when: [{key: connection.sni, notValues: [\"bookinfo.example.com\"]}]}]",
            get("/"),
            &[],
            Deny("s"),
        ),
        // ---- R-C19: path templates ----
        case(
            "R-C19 {*} matches one segment",
            "- name: t\n  action: DENY\n  rules: [{to: [{operation: {paths: [\"/foo/{*}\"]}}]}]",
            get("/foo/bar"),
            &[],
            Deny("t"),
        ),
        case(
            "R-C19 {*} does not match two segments",
            "- name: t\n  action: DENY\n  rules: [{to: [{operation: {paths: [\"/foo/{*}\"]}}]}]",
            get("/foo/bar/baz"),
            &[],
            Allow,
        ),
        case(
            "R-C19 {**} matches several segments",
            "- name: t\n  action: DENY\n  rules: [{to: [{operation: {paths: [\"/foo/{**}/\"]}}]}]",
            get("/foo/bar/baz/"),
            &[],
            Deny("t"),
        ),
        case(
            "R-C19 /foo/{**}/ does not match /foo/bar",
            "- name: t\n  action: DENY\n  rules: [{to: [{operation: {paths: [\"/foo/{**}/\"]}}]}]",
            get("/foo/bar"),
            &[],
            Allow,
        ),
        case(
            "R-C19 {*} then {**}",
            "- name: t\n  action: DENY\n  rules: [{to: [{operation: {paths: [\"/foo/{*}/bar/{**}\"]}}]}]",
            get("/foo/buzz/bar/baz"),
            &[],
            Deny("t"),
        ),
        case(
            "R-C19 template in notPaths",
            "- name: t\n  action: DENY\n  rules: [{to: [{operation: {notPaths: [\"/api/{*}/status\"]}}]}]",
            get("/api/v1/status"),
            &[],
            Allow,
        ),
        // ---- R-C21 and authgate's slash tolerance ----
        case("authgate: `//productpage` (BASE keeps it) still triggers a rule on /productpage", SEED_CUSTOM, get("//productpage"), &["ext-authz-grpc"], Allow),
        case("authgate: `/productpage/` (BASE of /productpage/.) still triggers", SEED_CUSTOM, get("/productpage/"), &["ext-authz-grpc"], Allow),
        case(
            "authgate: ALLOW notPaths cannot be skipped with //",
            "- name: all-but-admin\n  action: ALLOW\n  rules: [{to: [{operation: {notPaths: [\"/admin*\"]}}]}]",
            get("//admin/users"),
            &[],
            NoAllow,
        ),
        case(
            "authgate: DENY prefix cannot be skipped with //",
            "- name: no-admin\n  action: DENY\n  rules: [{to: [{operation: {paths: [\"/admin/*\"]}}]}]",
            get("//admin//users"),
            &[],
            Deny("no-admin"),
        ),
        case(
            "authgate: DENY suffix with repeated slashes",
            "- name: no-git\n  action: DENY\n  rules: [{to: [{operation: {paths: [\"*/.git/config\"]}}]}]",
            get("/repo//.git//config"),
            &[],
            Deny("no-git"),
        ),
        // ---- R-C3: which Istio policies apply ----
        istio("R-C3 selector matching the gateway labels applies", SELECTED, get("/"), Deny("deny-sel")),
        istio(
            "R-C3 selector for another workload does not apply",
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: httpbin, namespace: istio-system}\nspec:\n  selector: {matchLabels: {app: httpbin}}\n  action: DENY\n  rules: [{}]\n",
            get("/"),
            Allow,
        ),
        istio(
            "R-C3 selector must be a subset (one label differs)",
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: istio-system}\nspec:\n  selector: {matchLabels: {istio: ingressgateway, version: v2}}\n  action: DENY\n  rules: [{}]\n",
            get("/"),
            Allow,
        ),
        istio(
            "R-C3 root namespace without selector applies mesh-wide",
            "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata: {name: mesh-deny, namespace: istio-system}\nspec: {action: DENY, rules: [{}]}\n",
            get("/"),
            Deny("mesh-deny"),
        ),
        istio(
            "R-C3 gateway namespace without selector applies",
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: ns-deny, namespace: istio-ingress}\nspec: {action: DENY, rules: [{}]}\n",
            get("/"),
            Deny("ns-deny"),
        ),
        istio(
            "R-C3 another namespace does not apply",
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: foo-deny, namespace: foo}\nspec: {action: DENY, rules: [{}]}\n",
            get("/"),
            Allow,
        ),
        istio(
            "R-C3 another namespace does not apply even with a matching selector",
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: foo-deny, namespace: foo}\nspec:\n  selector: {matchLabels: {istio: ingressgateway}}\n  action: DENY\n  rules: [{}]\n",
            get("/"),
            Allow,
        ),
        istio(
            "R-C3 a classic gateway ignores targetRefs",
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: tr, namespace: istio-ingress}\nspec:\n  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: bookinfo-gateway}]\n  action: DENY\n  rules: [{}]\n",
            get("/"),
            Allow,
        ),
        istio(
            "R-C3 targetRefs naming this Gateway API gateway apply",
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: tr, namespace: istio-ingress}\nspec:\n  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: bookinfo-gateway}]\n  action: DENY\n  rules: [{}]\n",
            get("/"),
            Deny("tr"),
        )
        .gw("\ngateway:\n  labels: {istio: ingressgateway}\n  namespace: istio-ingress\n  name: bookinfo-gateway\n"),
        istio(
            "R-C3 targetRefs naming another Gateway do not apply",
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: tr, namespace: istio-ingress}\nspec:\n  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: other}]\n  action: DENY\n  rules: [{}]\n",
            get("/"),
            Allow,
        )
        .gw("\ngateway:\n  labels: {istio: ingressgateway}\n  namespace: istio-ingress\n  name: bookinfo-gateway\n"),
        istio(
            "R-C3 targetRefs from another namespace do not apply",
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: tr, namespace: istio-system}\nspec:\n  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: bookinfo-gateway}]\n  action: DENY\n  rules: [{}]\n",
            get("/"),
            Allow,
        )
        .gw("\ngateway:\n  labels: {istio: ingressgateway}\n  namespace: istio-ingress\n  name: bookinfo-gateway\n"),
        istio(
            "R-C3 a Gateway API gateway pod carries the gateway-name label for selectors",
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: by-label, namespace: istio-ingress}\nspec:\n  selector: {matchLabels: {gateway.networking.k8s.io/gateway-name: bookinfo-gateway}}\n  action: DENY\n  rules: [{}]\n",
            get("/"),
            Deny("by-label"),
        )
        .gw("\ngateway:\n  labels: {}\n  namespace: istio-ingress\n  name: bookinfo-gateway\n"),
        istio(
            "a manifest without metadata.namespace is in the gateway's namespace",
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: no-ns}\nspec: {action: DENY, rules: [{}]}\n",
            get("/"),
            Deny("no-ns"),
        ),
        istio(
            "R-C3 rootNamespace configurable",
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: mesh, namespace: my-root}\nspec: {action: DENY, rules: [{}]}\n",
            get("/"),
            Deny("mesh"),
        )
        .gw("\ngateway:\n  namespace: istio-ingress\n  rootNamespace: my-root\n"),
        istio(
            "R-C3 default gateway labels are istio: ingressgateway",
            SELECTED,
            get("/"),
            Deny("deny-sel"),
        )
        .gw("\ngateway:\n  namespace: istio-system\n"),
        case(
            "inline policies apply without selection",
            "- name: inline-deny\n  namespace: elsewhere\n  action: DENY\n  selector: {matchLabels: {app: not-us}}\n  rules: [{}]",
            get("/"),
            &[],
            Deny("inline-deny"),
        ),
        case(
            "R-C4 inline CUSTOM + Istio DENY manifest together",
            SEED_CUSTOM,
            get("/productpage"),
            &["ext-authz-grpc"],
            Deny("deny-sel"),
        )
        .with_istio(SELECTED),
        // ---- the seed scenario (ASM R-E4) ----
        case("R-E4 seed: /productpage without header still calls ext_authz", SEED_CUSTOM, get("/productpage").header("x-ext-authz", "deny"), &["ext-authz-grpc"], Allow),
        case("R-E4 seed: /api/v1/products is not checked", SEED_CUSTOM, get("/api/v1/products").header("x-ext-authz", "deny"), &[], Allow),
        case(
            "R-E6 ASM inverted match mode (notPaths) checks everything else",
            "- name: asm-inverse\n  action: CUSTOM\n  provider: {name: ext-authz-http}\n  rules: [{to: [{operation: {notPaths: [\"/health\", \"/static/*\"]}}]}]",
            get("/productpage"),
            &["ext-authz-http"],
            Allow,
        ),
        case(
            "R-E6 ASM inverted match mode: an exempt path",
            "- name: asm-inverse\n  action: CUSTOM\n  provider: {name: ext-authz-http}\n  rules: [{to: [{operation: {notPaths: [\"/health\", \"/static/*\"]}}]}]",
            get("/static/app.js"),
            &[],
            Allow,
        ),
    ]
}

#[test]
fn conformance_table() {
    let cases = cases();
    assert!(cases.len() >= 100, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let engine = match engine(c.gateway, c.policies, c.istio) {
            Ok(e) => e,
            Err(errs) => {
                failures.push(format!(
                    "{}: config rejected:\n  {}",
                    c.id,
                    errs.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("\n  ")
                ));
                continue;
            }
        };
        let config = common::config(c.gateway, c.policies, c.istio).unwrap_or_else(|e| panic!("{e}"));
        let v = engine.evaluate(&c.req.attrs());
        let called: Vec<&str> = v
            .providers
            .iter()
            .map(|i| config.providers.get(i).map_or("?", |p| p.name.as_str()))
            .collect();
        let local = match &v.local {
            LocalDecision::Allow => Allow,
            LocalDecision::Deny {
                reason: DenyReason::NoAllowPolicyMatched,
                policy: None,
            } => NoAllow,
            LocalDecision::Deny { policy: Some(p), .. } => {
                let name: &'static str = Box::leak(p.to_string().into_boxed_str());
                Deny(name)
            }
            other => {
                failures.push(format!("{}: unexpected local decision {other:?}", c.id));
                continue;
            }
        };
        if called != c.providers || local != c.local || v.audit != c.audit {
            failures.push(format!(
                "{}\n  expected providers {:?}, {:?}, audit {}\n  got      providers {:?}, {:?}, audit {}\n{}",
                c.id,
                c.providers,
                c.local,
                c.audit,
                called,
                local,
                v.audit,
                engine.explain(&c.req.attrs())
            ));
        }
        // explain must agree with evaluate.
        let e = engine.explain(&c.req.attrs());
        if e.verdict != v {
            failures.push(format!("{}: explain disagrees with evaluate", c.id));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

#[test]
fn dry_run_results_are_reported() {
    let e = engine(
        None,
        "- apiVersion: security.istio.io/v1\n  kind: AuthorizationPolicy\n  metadata: {name: dry-deny, annotations: {istio.io/dry-run: \"true\"}}\n  spec: {action: DENY, rules: [{to: [{operation: {paths: [\"/x\"]}}]}]}\n- apiVersion: security.istio.io/v1\n  kind: AuthorizationPolicy\n  metadata: {name: dry-allow, annotations: {istio.io/dry-run: \"true\"}}\n  spec: {action: ALLOW, rules: [{to: [{operation: {paths: [\"/y\"]}}]}]}",
        "",
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    let v = e.evaluate(&get("/x").attrs());
    assert!(v.local.is_allow());
    assert_eq!(v.dry_run.deny, Shadow::Matched("dry-deny".into()));
    assert_eq!(v.dry_run.allow, Shadow::NoMatch);
    assert!(v.dry_run.would_deny());
    let v = e.evaluate(&get("/y").attrs());
    assert_eq!(v.dry_run.deny, Shadow::NoMatch);
    assert_eq!(v.dry_run.allow, Shadow::Matched("dry-allow".into()));
    assert!(!v.dry_run.would_deny());
    let none = engine(None, "", "").unwrap_or_else(|e| panic!("{e:?}"));
    let v = none.evaluate(&get("/").attrs());
    assert_eq!(v.dry_run.allow, Shadow::NotConfigured);
    assert!(!v.dry_run.would_deny());
}

#[test]
fn notes_explain_ignored_and_bad_policies() {
    let e = engine(
        None,
        "- name: typo\n  action: CUSTOM\n  provider: {name: nope}\n  rules: [{}]\n- metadata: {name: dry, annotations: {istio.io/dry-run: \"true\"}}\n  spec: {action: CUSTOM, provider: {name: ext-authz-grpc}, rules: [{}]}",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: foo-deny, namespace: foo}\nspec: {action: DENY, rules: [{}]}\n",
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    let notes = e.notes().join("\n");
    assert!(
        notes.contains("extension provider \"nope\" is not defined"),
        "{notes}"
    );
    assert!(notes.contains("typo-deny-due-to-bad-CUSTOM-action"), "{notes}");
    assert!(notes.contains("dry-run is not supported for CUSTOM"), "{notes}");
    assert!(
        notes.contains("\"foo-deny\" (istio.yaml:1) does not apply"),
        "{notes}"
    );
}
