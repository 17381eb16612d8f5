//! The corpus: one gateway configuration with a provider per behaviour under test, and the
//! requests (each with the scripts the recording servers answer it with).
//!
//! Every provider's CUSTOM policy triggers on `/<provider>/*`, so a case picks its provider by
//! its path. Provider names are never a prefix of one another (see `envoy::bootstrap`).

use authgate_proto::auth::OkHttpResponse;
use authgate_proto::core::header_value_option::HeaderAppendAction as Action;
use bytes::Bytes;
use std::time::Duration;
use tonic::Code;

use crate::client::ClientRequest;
use crate::grpc::{self, header, header_action, header_append, query};
use crate::recorder::{BackendScript, GrpcAuthzScript, HttpAuthzScript, Scripts};

/// The gateway configuration every case runs against. Placeholders: `{{http_port}}`,
/// `{{grpc_port}}`, `{{backend_port}}` (the recorders' ports).
pub const CONFIG: &str = r#"
listeners:
  - name: gateway
    address: "127.0.0.1:0"
backends:
  - name: recorder
    endpoints: ["backend.test.local:{{backend_port}}"]
  - name: recorder-h2
    endpoints: ["backend.test.local:{{backend_port}}"]
    protocol: http2
routes:
  - name: h2-upstream
    hosts: ["gw.example.com", "*.example.com"]
    match: { prefix: /grpc-upstream/ }
    backend: recorder-h2
  - name: main
    hosts: ["gw.example.com", "*.example.com"]
    match: { prefix: / }
    backend: recorder
staticHosts:
  authz-http.test.local: 127.0.0.1
  authz-grpc.test.local: 127.0.0.1
  backend.test.local: 127.0.0.1
extensionProviders:
  - name: g-basic
    envoyExtAuthzGrpc: { service: authz-grpc.test.local, port: {{grpc_port}}, timeout: 5s }
  - name: g-fail-open
    envoyExtAuthzGrpc: { service: authz-grpc.test.local, port: {{grpc_port}}, timeout: 5s, failOpen: true }
  - name: g-soe
    envoyExtAuthzGrpc: { service: authz-grpc.test.local, port: {{grpc_port}}, timeout: 5s, statusOnError: "503" }
  - name: g-timeout
    envoyExtAuthzGrpc: { service: authz-grpc.test.local, port: {{grpc_port}}, timeout: 300ms }
  - name: g-body
    envoyExtAuthzGrpc:
      service: authz-grpc.test.local
      port: {{grpc_port}}
      timeout: 5s
      includeRequestBodyInCheck: { maxRequestBytes: 16 }
  - name: g-partial
    envoyExtAuthzGrpc:
      service: authz-grpc.test.local
      port: {{grpc_port}}
      timeout: 5s
      includeRequestBodyInCheck: { maxRequestBytes: 16, allowPartialMessage: true }
  - name: g-bytes
    envoyExtAuthzGrpc:
      service: authz-grpc.test.local
      port: {{grpc_port}}
      timeout: 5s
      includeRequestBodyInCheck: { maxRequestBytes: 64, allowPartialMessage: true, packAsBytes: true }
  - name: h-basic
    envoyExtAuthzHttp: { service: authz-http.test.local, port: {{http_port}}, timeout: 5s }
  - name: h-lists
    envoyExtAuthzHttp:
      service: authz-http.test.local
      port: {{http_port}}
      timeout: 5s
      includeRequestHeadersInCheck: ["x-custom-id", "x-prefix-*", "*-suffix", "Cookie"]
      includeAdditionalHeadersInCheck:
        x-static: static-value
        x-from-req: "%REQ(x-source)%"
      headersToUpstreamOnAllow: ["x-auth-user", "x-up-*", "*-up"]
      headersToDownstreamOnDeny: ["x-deny-reason", "set-cookie", "x-dn-*"]
      headersToDownstreamOnAllow: ["x-allow-note", "set-cookie"]
  - name: h-prefix-a
    envoyExtAuthzHttp: { service: authz-http.test.local, port: {{http_port}}, timeout: 5s, pathPrefix: /check }
  - name: h-prefix-b
    envoyExtAuthzHttp: { service: authz-http.test.local, port: {{http_port}}, timeout: 5s, pathPrefix: /check/ }
  - name: h-fail-open
    envoyExtAuthzHttp: { service: authz-http.test.local, port: {{http_port}}, timeout: 5s, failOpen: true }
  - name: h-soe
    envoyExtAuthzHttp: { service: authz-http.test.local, port: {{http_port}}, timeout: 5s, statusOnError: "401" }
  - name: h-timeout
    envoyExtAuthzHttp: { service: authz-http.test.local, port: {{http_port}}, timeout: 300ms }
  - name: h-body
    envoyExtAuthzHttp:
      service: authz-http.test.local
      port: {{http_port}}
      timeout: 5s
      includeRequestBodyInCheck: { maxRequestBytes: 16 }
  - name: h-partial
    envoyExtAuthzHttp:
      service: authz-http.test.local
      port: {{http_port}}
      timeout: 5s
      includeRequestBodyInCheck: { maxRequestBytes: 16, allowPartialMessage: true }
authorizationPolicies:
  - name: g-basic
    action: CUSTOM
    provider: { name: g-basic }
    rules:
      - to: [{ operation: { paths: ["/g-basic/*", "/grpc-upstream/*", "/multi/*"], notPaths: ["/g-basic/public/*"] } }]
  - name: h-basic
    action: CUSTOM
    provider: { name: h-basic }
    rules:
      - to: [{ operation: { paths: ["/h-basic/*", "/multi/*"] } }]
      - to: [{ operation: { paths: ["/open/*"] } }]
        when: [{ key: "request.headers[x-force-check]", values: ["yes"] }]
      - to: [{ operation: { methods: ["DELETE"], paths: ["/open/*"] } }]
{{simple_policies}}"#;

/// Providers whose policy is just `paths: ["/<name>/*"]`.
const SIMPLE: [&str; 14] = [
    "g-fail-open",
    "g-soe",
    "g-timeout",
    "g-body",
    "g-partial",
    "g-bytes",
    "h-lists",
    "h-prefix-a",
    "h-prefix-b",
    "h-fail-open",
    "h-soe",
    "h-timeout",
    "h-body",
    "h-partial",
];

/// [`CONFIG`] with the recorders' ports filled in.
pub fn config_yaml(http_port: u16, grpc_port: u16, backend_port: u16) -> String {
    let simple: String = SIMPLE
        .iter()
        .map(|p| {
            format!(
                "  - name: {p}\n    action: CUSTOM\n    provider: {{ name: {p} }}\n    rules: [{{ to: [{{ operation: {{ paths: [\"/{p}/*\"] }} }}] }}]\n"
            )
        })
        .collect();
    CONFIG
        .replace("{{http_port}}", &http_port.to_string())
        .replace("{{grpc_port}}", &grpc_port.to_string())
        .replace("{{backend_port}}", &backend_port.to_string())
        .replace("{{simple_policies}}", &simple)
}

/// One request of the corpus with the scripts that answer it.
#[derive(Debug, Clone)]
pub struct Case {
    pub id: &'static str,
    pub about: &'static str,
    pub request: ClientRequest,
    pub scripts: Scripts,
}

impl Case {
    fn new(id: &'static str, about: &'static str, request: ClientRequest) -> Self {
        Self {
            id,
            about,
            request,
            scripts: Scripts::default(),
        }
    }

    fn grpc(mut self, r: authgate_proto::auth::CheckResponse) -> Self {
        self.scripts.grpc_authz = GrpcAuthzScript::Reply(Box::new(r));
        self
    }

    fn grpc_script(mut self, s: GrpcAuthzScript) -> Self {
        self.scripts.grpc_authz = s;
        self
    }

    fn http(mut self, s: HttpAuthzScript) -> Self {
        self.scripts.http_authz = s;
        self
    }

    fn backend(mut self, b: BackendScript) -> Self {
        self.scripts.backend = b;
        self
    }
}

fn get(path: &str) -> ClientRequest {
    ClientRequest::get(path)
}

fn ok(o: OkHttpResponse) -> authgate_proto::auth::CheckResponse {
    grpc::ok_with(o)
}

const SMALL: &[u8] = b"small=body&a=1";
/// 40 bytes: over the 16-byte limits.
const BIG: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCD";
/// Not UTF-8.
const BINARY: &[u8] = b"\xff\xfe\x00\x01binary\x80\xc3\x28 tail";

fn slow_http() -> HttpAuthzScript {
    HttpAuthzScript::Delay(Duration::from_millis(1500), Box::default())
}

fn slow_grpc() -> GrpcAuthzScript {
    GrpcAuthzScript::Delay(Duration::from_millis(1500), Box::default())
}

/// The corpus, in run order.
#[allow(clippy::too_many_lines)]
pub fn cases() -> Vec<Case> {
    let deny_cookies = || {
        HttpAuthzScript::reply(
            403,
            &[
                ("content-type", "application/json"),
                ("x-deny-reason", "no-token"),
                ("x-dn-trace", "t1"),
                ("x-other", "dropped-with-a-list"),
                ("set-cookie", "a=1; Path=/"),
                ("set-cookie", "b=2; Path=/; HttpOnly"),
            ],
            "{\"error\":\"denied\"}",
        )
    };
    vec![
        // ---------------- routing and policy selection ----------------
        Case::new(
            "open-no-check",
            "a path no CUSTOM rule matches goes straight to the backend",
            get("/open/page"),
        ),
        Case::new(
            "no-route-404",
            "an unrouted host is a 404 and never reaches the authz service",
            get("/h-basic/x").authority("other.test"),
        ),
        Case::new(
            "when-header-triggers",
            "a `when: request.headers[...]` rule triggers the check",
            get("/open/x").with("x-force-check", "yes"),
        )
        .http(HttpAuthzScript::reply(403, &[], "checked")),
        Case::new(
            "when-header-other-value",
            "the same rule with another header value does not trigger",
            get("/open/x").with("x-force-check", "no"),
        )
        .http(HttpAuthzScript::reply(403, &[], "checked")),
        Case::new(
            "method-rule-triggers",
            "a `methods: [DELETE]` rule triggers the check",
            get("/open/x").method("DELETE"),
        )
        .http(HttpAuthzScript::reply(403, &[], "checked")),
        Case::new(
            "not-paths-exempt",
            "`notPaths` exempts a sub-tree from the check",
            get("/g-basic/public/x"),
        )
        .grpc(grpc::denied(Code::PermissionDenied, None, vec![], "checked")),
        Case::new(
            "normalized-dot-segments",
            "dot segments are resolved before policy, authz and upstream see the path",
            get("/g-basic/a/./b/../c?q=1"),
        ),
        Case::new(
            "normalized-escape-into-policy",
            "`/open/../g-basic/x` is checked: it normalizes into a protected path",
            get("/open/../g-basic/x"),
        )
        .grpc(grpc::denied(Code::PermissionDenied, None, vec![], "caught")),
        Case::new(
            "normalized-unreserved-decoding",
            "%-encoded unreserved characters are decoded, %2F is kept",
            get("/g-basic/%61%62%2Fc%7E"),
        ),
        Case::new(
            "normalized-backslash",
            "a backslash is turned into a slash",
            get("/g-basic/a\\b"),
        ),
        Case::new(
            "double-slash-not-merged",
            "BASE normalization keeps `//`: the `/g-basic/*` rule does not match `//g-basic/x`",
            get("//g-basic/x"),
        )
        .grpc(grpc::denied(Code::PermissionDenied, None, vec![], "checked")),
        Case::new(
            "path-parameters",
            "`;` path parameters in a protected path",
            get("/g-basic/a;jsessionid=1/b"),
        ),
        Case::new(
            "path-parameters-dot-dot",
            "`/open/..;/g-basic/secret`: a servlet container serves /g-basic/secret",
            get("/open/..;/g-basic/secret"),
        )
        .grpc(grpc::denied(Code::PermissionDenied, None, vec![], "checked")),
        Case::new(
            "authority-trailing-dot",
            "a fully-qualified authority with a trailing dot",
            get("/g-basic/dot").authority("gw.example.com."),
        ),
        Case::new(
            "authority-with-port",
            "an authority with a port still routes and is checked as sent",
            get("/g-basic/port").authority("gw.example.com:8080"),
        ),
        Case::new(
            "authority-upper-case",
            "an upper-case authority routes case-insensitively",
            get("/g-basic/upper").authority("GW.Example.COM"),
        ),
        Case::new(
            "xfcc-from-client-dropped",
            "a client's x-forwarded-client-cert is sanitized on a plain-text listener",
            get("/g-basic/xfcc").with("x-forwarded-client-cert", "By=spiffe://evil;URI=spiffe://admin"),
        ),
        Case::new(
            "websocket-upgrade-not-buffered",
            "an upgrade request to a body-buffering provider is checked on its headers",
            get("/g-body/ws")
                .with("connection", "Upgrade")
                .with("upgrade", "websocket")
                .with("sec-websocket-version", "13")
                .with("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        )
        .grpc(grpc::denied(
            Code::PermissionDenied,
            Some(403),
            vec![],
            "no sockets",
        )),
        Case::new(
            "multi-provider-both-allow",
            "two providers match: both are called in name order; the second sees the first's mutations",
            get("/multi/x"),
        )
        .grpc(grpc::ok(vec![header("x-from-grpc", "g")]))
        .http(HttpAuthzScript::reply(200, &[], "")),
        Case::new(
            "multi-provider-second-denies",
            "the first provider allows, the second denies",
            get("/multi/y"),
        )
        .grpc(grpc::ok(vec![header("x-from-grpc", "g")]))
        .http(HttpAuthzScript::reply(
            403,
            &[("x-denied-by", "http")],
            "second says no",
        )),
        // ---------------- gRPC: what the service receives ----------------
        Case::new(
            "g-check-request-h1",
            "gRPC CheckRequest for an HTTP/1.1 GET with a query, repeated and mixed-case headers",
            get("/g-basic/check?b=2&a=1")
                .with("X-Multi", "one")
                .with("x-multi", "two")
                .with("authorization", "Bearer t0k3n")
                .with("cookie", "c=1")
                .with("user-agent", "differential/1"),
        ),
        Case::new(
            "g-check-request-h2",
            "gRPC CheckRequest for an h2 GET",
            get("/g-basic/check-h2?x=y")
                .h2()
                .with("x-multi", "one")
                .with("x-multi", "two"),
        ),
        Case::new(
            "g-check-post-unbuffered",
            "a POST body is not sent when the provider does not ask for it",
            get("/g-basic/post")
                .method("POST")
                .with("content-type", "text/plain")
                .body(SMALL),
        ),
        Case::new(
            "g-check-client-xff-and-request-id",
            "client X-Forwarded-For and X-Request-Id as the service and backend see them",
            get("/g-basic/xff")
                .with("x-forwarded-for", "203.0.113.7")
                .with("x-request-id", "client-chosen-id"),
        ),
        Case::new(
            "g-check-connection-nominated",
            "headers named in Connection are hop-by-hop: neither authz nor backend see them",
            get("/g-basic/conn")
                .with("connection", "x-hop")
                .with("x-hop", "1")
                .with("x-keep", "2"),
        ),
        // ---------------- gRPC: OK responses and every mutation kind ----------------
        Case::new(
            "g-allow-empty-ok",
            "status OK with an empty ok_response",
            get("/g-basic/ok"),
        )
        .grpc(grpc::ok(vec![])),
        Case::new(
            "g-allow-no-status",
            "a CheckResponse with no status is an allow",
            get("/g-basic/nostatus"),
        )
        .grpc(authgate_proto::auth::CheckResponse::default()),
        Case::new(
            "g-header-no-flags",
            "ok header without append/append_action, client already sent one",
            get("/g-basic/set").with("x-auth-user", "mallory"),
        )
        .grpc(grpc::ok(vec![
            header("x-auth-user", "alice"),
            header("x-new", "n"),
        ])),
        Case::new(
            "g-header-append-false",
            "ok header with append=false replaces the client's copies",
            get("/g-basic/append-false")
                .with("x-auth-user", "mallory")
                .with("x-auth-user", "eve"),
        )
        .grpc(grpc::ok(vec![header_append("x-auth-user", "alice", false)])),
        Case::new(
            "g-header-append-true-present",
            "ok header with append=true onto a header the client sent",
            get("/g-basic/append-true").with("x-tenant", "a"),
        )
        .grpc(grpc::ok(vec![header_append("x-tenant", "b", true)])),
        Case::new(
            "g-header-append-true-absent",
            "ok header with append=true for a header the request lacks",
            get("/g-basic/append-absent"),
        )
        .grpc(grpc::ok(vec![header_append("x-tenant", "b", true)])),
        Case::new(
            "g-header-action-add-if-absent",
            "append_action ADD_IF_ABSENT, once present and once absent",
            get("/g-basic/add-if-absent").with("x-present", "client"),
        )
        .grpc(grpc::ok(vec![
            header_action("x-present", "authz", Action::AddIfAbsent),
            header_action("x-absent", "authz", Action::AddIfAbsent),
        ])),
        Case::new(
            "g-header-action-overwrite-if-exists",
            "append_action OVERWRITE_IF_EXISTS, once present and once absent",
            get("/g-basic/overwrite-if-exists").with("x-present", "client"),
        )
        .grpc(grpc::ok(vec![
            header_action("x-present", "authz", Action::OverwriteIfExists),
            header_action("x-absent", "authz", Action::OverwriteIfExists),
        ])),
        Case::new(
            "g-header-action-overwrite-or-add",
            "append_action OVERWRITE_IF_EXISTS_OR_ADD, once present and once absent",
            get("/g-basic/overwrite-or-add").with("x-present", "client"),
        )
        .grpc(grpc::ok(vec![
            header_action("x-present", "authz", Action::OverwriteIfExistsOrAdd),
            header_action("x-absent", "authz", Action::OverwriteIfExistsOrAdd),
        ])),
        Case::new(
            "g-header-action-append-or-add",
            "append_action APPEND_IF_EXISTS_OR_ADD given explicitly, with append=true, present",
            get("/g-basic/append-or-add").with("x-present", "client"),
        )
        .grpc(grpc::ok(vec![{
            let mut h = header_append("x-present", "authz", true);
            h.append_action = Action::AppendIfExistsOrAdd.into();
            h
        }])),
        Case::new(
            "g-header-order",
            "set then append on the same name, in one response",
            get("/g-basic/order"),
        )
        .grpc(grpc::ok(vec![
            header("x-seq", "1"),
            header_append("x-seq", "2", true),
        ])),
        Case::new(
            "g-headers-to-remove",
            "headers_to_remove removes client headers but never pseudo-headers or host",
            get("/g-basic/remove")
                .with("x-remove-me", "1")
                .with("x-remove-me", "2")
                .with("x-keep", "k"),
        )
        .grpc(ok(OkHttpResponse {
            headers_to_remove: vec![
                "x-remove-me".into(),
                "host".into(),
                ":path".into(),
                ":method".into(),
            ],
            ..Default::default()
        })),
        Case::new(
            "g-query-set-and-remove",
            "query_parameters_to_set/_remove rebuild the path",
            get("/g-basic/q?remove-me=1&overwrite-me=2&leave-me=3"),
        )
        .grpc(ok(OkHttpResponse {
            query_parameters_to_set: vec![query("add-me", "9"), query("overwrite-me", "new")],
            query_parameters_to_remove: vec!["remove-me".into()],
            ..Default::default()
        })),
        Case::new(
            "g-query-remove-last",
            "removing the only parameter drops the `?`",
            get("/g-basic/q?remove-me=definitely"),
        )
        .grpc(ok(OkHttpResponse {
            query_parameters_to_remove: vec!["remove-me".into()],
            ..Default::default()
        })),
        Case::new(
            "g-query-remove-absent",
            "removing an absent key leaves a repeated parameter alone",
            get("/g-basic/q?leave-me=alone&leave-me=in-peace"),
        )
        .grpc(ok(OkHttpResponse {
            query_parameters_to_remove: vec!["nothing".into()],
            ..Default::default()
        })),
        Case::new(
            "g-query-set-no-query",
            "setting a parameter on a path without a query",
            get("/g-basic/q"),
        )
        .grpc(ok(OkHttpResponse {
            query_parameters_to_set: vec![query("k", "v")],
            ..Default::default()
        })),
        Case::new(
            "g-response-headers-no-flags",
            "response_headers_to_add without flags, the backend sends the same name",
            get("/g-basic/resp-add"),
        )
        .backend(BackendScript::with_headers(&[("x-resp", "backend")]))
        .grpc(ok(OkHttpResponse {
            response_headers_to_add: vec![header("x-resp", "authz"), header("x-resp-new", "authz")],
            ..Default::default()
        })),
        Case::new(
            "g-response-headers-append-false",
            "response_headers_to_add with append=false replaces the backend's",
            get("/g-basic/resp-set"),
        )
        .backend(BackendScript::with_headers(&[("x-resp", "backend")]))
        .grpc(ok(OkHttpResponse {
            response_headers_to_add: vec![header_append("x-resp", "authz", false)],
            ..Default::default()
        })),
        Case::new(
            "g-response-headers-actions",
            "response_headers_to_add with ADD_IF_ABSENT / OVERWRITE_IF_EXISTS, present and absent",
            get("/g-basic/resp-actions"),
        )
        .backend(BackendScript::with_headers(&[
            ("x-a", "backend"),
            ("x-b", "backend"),
        ]))
        .grpc(ok(OkHttpResponse {
            response_headers_to_add: vec![
                header_action("x-a", "authz", Action::AddIfAbsent),
                header_action("x-a2", "authz", Action::AddIfAbsent),
                header_action("x-b", "authz", Action::OverwriteIfExists),
                header_action("x-b2", "authz", Action::OverwriteIfExists),
                header_action("x-c", "authz", Action::OverwriteIfExistsOrAdd),
            ],
            ..Default::default()
        })),
        Case::new(
            "g-response-set-cookie",
            "two set-cookie in response_headers_to_add reach the client next to the backend's",
            get("/g-basic/resp-cookie"),
        )
        .backend(BackendScript::with_headers(&[("set-cookie", "backend=1")]))
        .grpc(ok(OkHttpResponse {
            response_headers_to_add: vec![
                header_append("set-cookie", "s1=a", true),
                header_append("set-cookie", "s2=b", true),
            ],
            ..Default::default()
        })),
        Case::new(
            "g-all-mutations",
            "every OK mutation kind at once",
            get("/g-basic/all?drop=1&keep=2")
                .with("x-remove-me", "r")
                .with("x-tenant", "t"),
        )
        .grpc(ok(OkHttpResponse {
            headers: vec![
                header("x-auth-user", "alice"),
                header_append("x-tenant", "t2", true),
            ],
            headers_to_remove: vec!["x-remove-me".into()],
            response_headers_to_add: vec![header("x-resp", "r")],
            query_parameters_to_set: vec![query("added", "1")],
            query_parameters_to_remove: vec!["drop".into()],
            ..Default::default()
        })),
        Case::new(
            "g-allow-h2-upstream-grpc-client",
            "a gRPC client allowed through to an h2 backend, with an added header",
            get("/grpc-upstream/pkg.Svc/Method").grpc_call(),
        )
        .grpc(grpc::ok(vec![header("x-auth-user", "alice")]))
        .backend(BackendScript {
            status: 200,
            headers: vec![
                ("content-type".into(), "application/grpc".into()),
                ("grpc-status".into(), "0".into()),
            ],
            body: Bytes::new(),
        }),
        Case::new(
            "g-header-upper-case-key",
            "an upper-case key in an OK header and in headers_to_remove",
            get("/g-basic/upper-key").with("x-remove-me", "1"),
        )
        .grpc(ok(OkHttpResponse {
            headers: vec![header("X-Auth-User", "alice")],
            headers_to_remove: vec!["X-Remove-Me".into()],
            ..Default::default()
        })),
        Case::new(
            "g-header-empty-value",
            "an OK header with an empty value over a client header",
            get("/g-basic/empty").with("x-empty", "client"),
        )
        .grpc(grpc::ok(vec![header("x-empty", "")])),
        Case::new(
            "g-header-set-authority",
            "an OK header setting :authority (no mutation rules, as Istio)",
            get("/g-basic/authority"),
        )
        .grpc(grpc::ok(vec![header(":authority", "internal.example.com")])),
        Case::new(
            "g-header-set-host",
            "an OK header setting host",
            get("/g-basic/host"),
        )
        .grpc(grpc::ok(vec![header("host", "internal.example.com")])),
        Case::new(
            "g-header-set-path",
            "an OK header setting :path",
            get("/g-basic/path?q=1"),
        )
        .grpc(grpc::ok(vec![header(":path", "/g-basic/rewritten")])),
        Case::new(
            "g-invalid-header-name",
            "an OK header whose name is not an HTTP token",
            get("/g-basic/invalid-name"),
        )
        .grpc(grpc::ok(vec![header("bad header", "x")])),
        Case::new(
            "g-invalid-header-value",
            "an OK header whose value holds CR LF (header injection attempt)",
            get("/g-fail-open/invalid-value"),
        )
        .grpc(grpc::ok(vec![header("x-injected", "a\r\nx-evil: 1")])),
        // ---------------- gRPC: denials ----------------
        Case::new(
            "g-deny-bare",
            "PERMISSION_DENIED with no http_response",
            get("/g-basic/deny-bare"),
        )
        .grpc(grpc::bare_status(Code::PermissionDenied)),
        Case::new(
            "g-deny-unauthenticated-code",
            "the gRPC code never becomes the HTTP status: UNAUTHENTICATED gives 403",
            get("/g-basic/deny-unauth"),
        )
        .grpc(grpc::denied(Code::Unauthenticated, None, vec![], "who are you")),
        Case::new(
            "g-deny-401-www-authenticate",
            "denied_response 401 with www-authenticate and a body",
            get("/g-basic/deny-401"),
        )
        .grpc(grpc::denied(
            Code::Unauthenticated,
            Some(401),
            vec![header("www-authenticate", "Bearer realm=\"gw\"")],
            "log in first",
        )),
        Case::new(
            "g-deny-302-location",
            "denied_response 302 with location",
            get("/g-basic/deny-302"),
        )
        .grpc(grpc::denied(
            Code::PermissionDenied,
            Some(302),
            vec![header("location", "https://login.example.com/?rd=%2Fg-basic")],
            "",
        )),
        Case::new(
            "g-deny-set-cookie-and-type",
            "two set-cookie (append=true) and a content-type in a denial",
            get("/g-basic/deny-cookie"),
        )
        .grpc(grpc::denied(
            Code::PermissionDenied,
            Some(403),
            vec![
                header("content-type", "application/json"),
                header_append("set-cookie", "a=1", true),
                header_append("set-cookie", "b=2", true),
                header("x-plain", "p"),
            ],
            "{\"denied\":true}",
        )),
        Case::new(
            "g-deny-500-is-not-error",
            "a denial carrying 500 is a denial, not an error, even with failOpen",
            get("/g-fail-open/deny-500"),
        )
        .grpc(grpc::denied(
            Code::PermissionDenied,
            Some(500),
            vec![],
            "still denied",
        )),
        Case::new(
            "g-deny-grpc-client",
            "a gRPC client denied gets grpc-status instead of an HTML body",
            get("/g-basic/pkg.Svc/Method").grpc_call(),
        )
        .grpc(grpc::denied(
            Code::PermissionDenied,
            Some(403),
            vec![header("x-reason", "r")],
            "not for you",
        )),
        Case::new(
            "g-deny-h2-client",
            "an h2 (non-gRPC) client denied",
            get("/g-basic/deny-h2").h2(),
        )
        .grpc(grpc::denied(
            Code::PermissionDenied,
            Some(403),
            vec![header("x-reason", "r")],
            "no",
        )),
        // ---------------- gRPC: errors ----------------
        Case::new(
            "g-error-unavailable",
            "the RPC fails: 403, empty body",
            get("/g-basic/error"),
        )
        .grpc_script(GrpcAuthzScript::Fail(Code::Unavailable, "down".into())),
        Case::new(
            "g-error-status-on-error",
            "the RPC fails: statusOnError 503",
            get("/g-soe/error"),
        )
        .grpc_script(GrpcAuthzScript::Fail(Code::Internal, "boom".into())),
        Case::new(
            "g-error-fail-open",
            "the RPC fails with failOpen: forwarded without mutations",
            get("/g-fail-open/error").with("x-auth-user", "client"),
        )
        .grpc_script(GrpcAuthzScript::Fail(Code::Unavailable, "down".into())),
        Case::new(
            "g-timeout",
            "the service answers after the 300ms timeout",
            get("/g-timeout/slow"),
        )
        .grpc_script(slow_grpc()),
        Case::new(
            "g-error-response",
            "error_response (Envoy 1.37+) with status, header and body",
            get("/g-basic/error-response"),
        )
        .grpc(grpc::error_response(
            Code::Internal,
            Some(502),
            vec![header("x-err", "e")],
            "custom error",
        )),
        Case::new(
            "g-error-grpc-client",
            "a gRPC client whose check fails",
            get("/g-basic/pkg.Svc/Fail").grpc_call(),
        )
        .grpc_script(GrpcAuthzScript::Fail(Code::Unavailable, "down".into())),
        // ---------------- gRPC: bodies ----------------
        Case::new(
            "g-body-small",
            "a small body goes in `body`",
            get("/g-body/post")
                .method("POST")
                .with("content-type", "text/plain")
                .body(SMALL),
        ),
        Case::new(
            "g-body-over-limit",
            "a body over maxRequestBytes without partial: 413, no check",
            get("/g-body/post").method("POST").body(BIG),
        ),
        Case::new(
            "g-body-get",
            "a header-only request is not buffered",
            get("/g-body/get"),
        ),
        Case::new(
            "g-body-non-utf8",
            "a non-UTF-8 body in `body` (packAsBytes false)",
            get("/g-body/bin").method("POST").body(b"\xff\xfeab\x80"),
        ),
        Case::new(
            "g-body-partial",
            "a body over the limit with allowPartialMessage: first 16 bytes + partial header",
            get("/g-partial/post").method("POST").body(BIG),
        ),
        Case::new(
            "g-body-partial-complete",
            "a body under the limit with allowPartialMessage: whole, partial header false",
            get("/g-partial/post").method("POST").body(b"tiny"),
        ),
        Case::new(
            "g-body-bytes",
            "packAsBytes: a binary body in `raw_body`",
            get("/g-bytes/post").method("POST").body(BINARY),
        ),
        Case::new(
            "g-body-spoofed-partial-header",
            "a client-sent x-envoy-auth-partial-body never reaches the service as the client's",
            get("/g-body/spoof")
                .method("POST")
                .with("x-envoy-auth-partial-body", "true")
                .body(b"whole"),
        ),
        Case::new(
            "g-body-h2",
            "an h2 POST body over the limit with allowPartialMessage",
            get("/g-partial/h2").h2().method("POST").body(BIG),
        ),
        // ---------------- HTTP: what the service receives ----------------
        Case::new(
            "h-check-request-default-headers",
            "no header list: only the default headers reach the service",
            get("/h-basic/x?a=1&b=%20")
                .with("authorization", "Bearer t")
                .with("cookie", "c=1")
                .with("x-custom-id", "42")
                .with("user-agent", "differential/1"),
        ),
        Case::new(
            "h-check-request-post",
            "method kept; the client body is not sent without body settings",
            get("/h-basic/post")
                .method("PUT")
                .with("content-type", "text/plain")
                .body(SMALL),
        ),
        Case::new(
            "h-check-request-h2",
            "an h2 client's check request",
            get("/h-basic/h2").h2().with("authorization", "Basic YTpi"),
        ),
        Case::new(
            "h-lists-check-headers",
            "includeRequestHeadersInCheck: exact, prefix, suffix and a mixed-case pattern",
            get("/h-lists/check")
                .with("x-custom-id", "42")
                .with("X-Prefix-One", "1")
                .with("x-two-suffix", "2")
                .with("cookie", "a=1")
                .with("cookie", "b=2")
                .with("x-other", "not-sent")
                .with("authorization", "Bearer t"),
        ),
        Case::new(
            "h-lists-additional-headers",
            "includeAdditionalHeadersInCheck overrides the client's value; %REQ()% is expanded",
            get("/h-lists/additional")
                .with("x-static", "from-client")
                .with("x-source", "abc"),
        ),
        Case::new(
            "h-lists-additional-missing-req",
            "%REQ(x-source)% when the request has no x-source",
            get("/h-lists/additional-missing"),
        ),
        Case::new(
            "h-prefix-no-slash",
            "pathPrefix /check + path and query",
            get("/h-prefix-a/x?y=1"),
        )
        .http(HttpAuthzScript::allow()),
        Case::new(
            "h-prefix-trailing-slash",
            "pathPrefix /check/ + path: no joining logic",
            get("/h-prefix-b/x"),
        )
        .http(HttpAuthzScript::allow()),
        // ---------------- HTTP: allow ----------------
        Case::new("h-allow", "200 allows", get("/h-basic/allow")).http(HttpAuthzScript::reply(
            200,
            &[("x-auth-user", "alice"), ("content-type", "text/plain")],
            "ignored body",
        )),
        Case::new(
            "h-allow-headers-to-remove",
            "x-envoy-auth-headers-to-remove on 200",
            get("/h-basic/remove")
                .with("x-remove-a", "1")
                .with("X-Remove-B", "2")
                .with("x-keep", "k"),
        )
        .http(HttpAuthzScript::reply(
            200,
            &[("x-envoy-auth-headers-to-remove", "x-remove-a, X-Remove-B,, host")],
            "",
        )),
        Case::new(
            "h-lists-upstream-on-allow",
            "headersToUpstreamOnAllow: exact/prefix/suffix set on the upstream request",
            get("/h-lists/upstream").with("x-auth-user", "mallory"),
        )
        .http(HttpAuthzScript::reply(
            200,
            &[
                ("x-auth-user", "alice"),
                ("x-up-one", "1"),
                ("two-up", "2"),
                ("x-not-allowed", "3"),
            ],
            "",
        )),
        Case::new(
            "h-lists-upstream-repeated",
            "a repeated allowed upstream header from the service",
            get("/h-lists/upstream-repeated"),
        )
        .http(HttpAuthzScript::reply(
            200,
            &[("x-auth-user", "first"), ("x-auth-user", "second")],
            "",
        )),
        Case::new(
            "h-lists-downstream-on-allow",
            "headersToDownstreamOnAllow adds to the backend's response, set-cookie kept apart",
            get("/h-lists/downstream"),
        )
        .backend(BackendScript::with_headers(&[
            ("set-cookie", "backend=1"),
            ("x-allow-note", "backend"),
        ]))
        .http(HttpAuthzScript::reply(
            200,
            &[
                ("x-allow-note", "authz"),
                ("set-cookie", "s1=a"),
                ("set-cookie", "s2=b"),
                ("x-not-listed", "n"),
            ],
            "",
        )),
        // ---------------- HTTP: deny ----------------
        Case::new(
            "h-deny-all-headers",
            "no deny list: every service header reaches the client, repeated set-cookie kept",
            get("/h-basic/deny"),
        )
        .http(deny_cookies()),
        Case::new(
            "h-lists-deny-filtered",
            "a deny list: only listed headers plus the always-allowed ones",
            get("/h-lists/deny"),
        )
        .http(HttpAuthzScript::reply(
            403,
            &[
                ("content-type", "application/json"),
                ("x-deny-reason", "no-token"),
                ("x-dn-trace", "t1"),
                ("x-other", "dropped"),
                ("set-cookie", "a=1; Path=/"),
                ("set-cookie", "b=2"),
                ("www-authenticate", "Bearer"),
                ("location", "/login"),
            ],
            "{\"error\":\"denied\"}",
        )),
        Case::new("h-deny-401", "401 + www-authenticate", get("/h-basic/deny-401")).http(
            HttpAuthzScript::reply(
                401,
                &[
                    ("www-authenticate", "Basic realm=\"gw\""),
                    ("content-type", "text/plain"),
                ],
                "unauthorized",
            ),
        ),
        Case::new("h-deny-302", "302 + location, no body", get("/h-basic/deny-302")).http(
            HttpAuthzScript::reply(302, &[("location", "https://login.example.com/?rd=%2F")], ""),
        ),
        Case::new(
            "h-lists-deny-302",
            "302 + location with a deny list that does not name location",
            get("/h-lists/deny-302"),
        )
        .http(HttpAuthzScript::reply(
            302,
            &[("location", "/login"), ("x-other", "o")],
            "",
        )),
        Case::new("h-deny-204", "204 is a denial", get("/h-basic/deny-204")).http(HttpAuthzScript::reply(
            204,
            &[("x-why", "no-content")],
            "",
        )),
        Case::new("h-deny-202", "202 is a denial too", get("/h-basic/deny-202"))
            .http(HttpAuthzScript::reply(202, &[], "accepted but denied")),
        Case::new(
            "h-deny-head",
            "a HEAD request denied with a body",
            get("/h-basic/head").method("HEAD"),
        )
        .http(HttpAuthzScript::reply(
            403,
            &[("content-type", "text/plain")],
            "no",
        )),
        Case::new(
            "h-deny-h2-client",
            "an h2 client denied",
            get("/h-basic/deny-h2").h2(),
        )
        .http(deny_cookies()),
        Case::new(
            "h-deny-grpc-client",
            "a gRPC client denied by an HTTP provider gets grpc-status",
            get("/h-basic/pkg.Svc/Method").grpc_call(),
        )
        .http(HttpAuthzScript::reply(
            403,
            &[("x-reason", "r")],
            "denied by http",
        )),
        // ---------------- HTTP: errors ----------------
        Case::new(
            "h-error-5xx",
            "503 from the service is an error: 403, body dropped",
            get("/h-basic/err"),
        )
        .http(HttpAuthzScript::reply(503, &[("x-err", "e")], "overloaded")),
        Case::new(
            "h-error-status-on-error",
            "500 with statusOnError 401",
            get("/h-soe/err"),
        )
        .http(HttpAuthzScript::reply(500, &[], "boom")),
        Case::new(
            "h-error-fail-open",
            "500 with failOpen: forwarded without the service's headers",
            get("/h-fail-open/err"),
        )
        .http(HttpAuthzScript::reply(500, &[("x-auth-user", "alice")], "boom")),
        Case::new(
            "h-error-hangup",
            "the service closes the connection",
            get("/h-basic/hangup"),
        )
        .http(HttpAuthzScript::Hangup),
        Case::new(
            "h-timeout",
            "the service answers after the 300ms timeout",
            get("/h-timeout/slow"),
        )
        .http(slow_http()),
        Case::new(
            "h-timeout-late-deny",
            "a deny after a timeout is still an error",
            get("/h-timeout/slow-deny"),
        )
        .http(HttpAuthzScript::Delay(
            Duration::from_millis(1500),
            Box::new(HttpAuthzScript::reply(403, &[], "late")),
        )),
        // ---------------- HTTP: bodies ----------------
        Case::new(
            "h-body-small",
            "a small body is sent with its content-length",
            get("/h-body/post")
                .method("POST")
                .with("content-type", "text/plain")
                .body(SMALL),
        ),
        Case::new(
            "h-body-over-limit",
            "a body over maxRequestBytes without partial: 413, no check",
            get("/h-body/post").method("POST").body(BIG),
        ),
        Case::new(
            "h-body-partial",
            "partial: the first 16 bytes + x-envoy-auth-partial-body: true; backend gets all",
            get("/h-partial/post").method("POST").body(BIG),
        ),
        Case::new(
            "h-body-partial-bytes",
            "binary bytes are sent verbatim",
            get("/h-partial/bin").method("POST").body(b"\xff\x00\x01\x80ok"),
        ),
        Case::new(
            "h-body-get",
            "a header-only request is not buffered",
            get("/h-body/get"),
        ),
        Case::new(
            "h-body-spoofed-partial-header",
            "a client-sent x-envoy-auth-partial-body is replaced, not forwarded",
            get("/h-partial/spoof")
                .method("POST")
                .with("x-envoy-auth-partial-body", "true")
                .body(b"whole"),
        ),
        Case::new(
            "h-error-fail-open-hangup",
            "the service hangs up, failOpen: forwarded",
            get("/h-fail-open/hangup"),
        )
        .http(HttpAuthzScript::Hangup),
        Case::new(
            "h-body-h2-partial",
            "an h2 POST over the limit with partial",
            get("/h-partial/h2").h2().method("POST").body(BIG),
        ),
    ]
}
