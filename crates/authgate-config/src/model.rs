//! The serde model of authgate's YAML, field names verbatim from Istio where Istio has them.
//!
//! These types mirror the file as written (strings, options); `validate` turns them into the
//! typed values in `crate::typed`. Every list element is `Spanned` so validation errors can name
//! the line they come from.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_saphyr::Spanned;

/// The whole gateway configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayFile {
    #[serde(default)]
    pub listeners: Vec<Spanned<ListenerSpec>>,
    #[serde(default)]
    pub routes: Vec<Spanned<RouteSpec>>,
    #[serde(default)]
    pub backends: Vec<Spanned<BackendSpec>>,
    /// Istio `MeshConfig.extensionProviders`, verbatim.
    #[serde(default)]
    pub extension_providers: Vec<Spanned<ExtensionProviderSpec>>,
    /// Istio `AuthorizationPolicy` objects, either inline (`name` + spec fields) or as
    /// Kubernetes objects (`metadata` + `spec`).
    #[serde(default)]
    pub authorization_policies: Vec<Spanned<InlinePolicy>>,
    /// Name → IP overrides for provider `service` and backend hostnames, like a ServiceEntry
    /// with STATIC resolution (`ext-authz.default.svc.cluster.local: 127.0.0.1`).
    #[serde(default)]
    pub static_hosts: BTreeMap<String, Spanned<String>>,
    /// Istio `meshConfig.pathNormalization`.
    #[serde(default)]
    pub path_normalization: Option<Spanned<PathNormalizationSpec>>,
    /// Who this gateway is, for policy selection and client-IP derivation.
    #[serde(default)]
    pub gateway: Option<Spanned<GatewayIdentitySpec>>,
    /// Further files or directories of Istio YAML (AuthorizationPolicy, the `istio` ConfigMap,
    /// MeshConfig) to load, relative to this file.
    #[serde(default)]
    pub include: Vec<Spanned<String>>,
    #[serde(default)]
    pub admin: Option<Spanned<AdminSpec>>,
    #[serde(default)]
    pub access_log: Option<Spanned<AccessLogSpec>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerSpec {
    #[serde(default)]
    pub name: Option<String>,
    /// `ip:port`, e.g. `0.0.0.0:8080`.
    pub address: String,
    #[serde(default)]
    pub tls: Option<ListenerTlsSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerTlsSpec {
    #[serde(default)]
    pub certificates: Vec<CertificateSpec>,
    /// PEM bundle of CAs that client certificates must chain to.
    #[serde(default)]
    pub client_ca_file: Option<String>,
    /// With a CA: reject clients without a certificate (default true).
    #[serde(default)]
    pub require_client_certificate: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertificateSpec {
    pub cert_file: String,
    pub key_file: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteSpec {
    #[serde(default)]
    pub name: Option<String>,
    /// Host patterns (`example.com`, `*.example.com`, `*`); absent means any host.
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default, rename = "match")]
    pub match_: Option<RouteMatchSpec>,
    pub backend: String,
    /// Per-route request timeout (whole upstream exchange), e.g. `15s`.
    #[serde(default)]
    pub timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteMatchSpec {
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub exact: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendSpec {
    pub name: String,
    /// `host:port` endpoints.
    pub endpoints: Vec<String>,
    /// `http1` (default) or `http2` (h2c prior knowledge; gRPC backends).
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub connect_timeout: Option<String>,
    /// `ROUND_ROBIN` (default) or `LEAST_REQUEST` (Envoy's names).
    #[serde(default)]
    pub lb_policy: Option<String>,
    /// TLS to the backend's endpoints.
    #[serde(default)]
    pub tls: Option<UpstreamTlsSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpstreamTlsSpec {
    /// PEM CA bundle to verify the backend with (default: the public web PKI roots).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Name to send as SNI and to verify the certificate against (default: the endpoint host).
    #[serde(default)]
    pub server_name: Option<String>,
}

/// Istio `MeshConfig.ExtensionProvider`. Only the two ext_authz kinds are used; the other
/// kinds Istio knows are accepted and ignored, as istiod does.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtensionProviderSpec {
    pub name: String,
    #[serde(default)]
    pub envoy_ext_authz_http: Option<HttpProviderSpec>,
    #[serde(default)]
    pub envoy_ext_authz_grpc: Option<GrpcProviderSpec>,
    // Kinds that exist in Istio but are irrelevant to authorization.
    #[serde(default)]
    pub zipkin: Option<IgnoredAny>,
    #[serde(default)]
    pub lightstep: Option<IgnoredAny>,
    #[serde(default)]
    pub datadog: Option<IgnoredAny>,
    #[serde(default)]
    pub stackdriver: Option<IgnoredAny>,
    #[serde(default)]
    pub opencensus: Option<IgnoredAny>,
    #[serde(default)]
    pub skywalking: Option<IgnoredAny>,
    #[serde(default)]
    pub opentelemetry: Option<IgnoredAny>,
    #[serde(default)]
    pub prometheus: Option<IgnoredAny>,
    #[serde(default)]
    pub envoy_file_access_log: Option<IgnoredAny>,
    #[serde(default)]
    pub envoy_http_als: Option<IgnoredAny>,
    #[serde(default)]
    pub envoy_tcp_als: Option<IgnoredAny>,
    #[serde(default)]
    pub envoy_otel_als: Option<IgnoredAny>,
    #[serde(default)]
    pub sds: Option<IgnoredAny>,
}

/// Istio `EnvoyExternalAuthorizationHttpProvider`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpProviderSpec {
    pub service: String,
    pub port: u32,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub fail_open: Option<bool>,
    #[serde(default)]
    pub clear_route_cache: Option<bool>,
    #[serde(default)]
    pub status_on_error: Option<StringOrInt>,
    #[serde(default)]
    pub include_headers_in_check: Vec<String>,
    #[serde(default)]
    pub include_request_headers_in_check: Vec<String>,
    #[serde(default)]
    pub include_additional_headers_in_check: BTreeMap<String, String>,
    #[serde(default)]
    pub include_request_body_in_check: Option<BodySpec>,
    #[serde(default)]
    pub headers_to_upstream_on_allow: Vec<String>,
    #[serde(default)]
    pub headers_to_downstream_on_deny: Vec<String>,
    #[serde(default)]
    pub headers_to_downstream_on_allow: Vec<String>,
}

/// Istio `EnvoyExternalAuthorizationGrpcProvider`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcProviderSpec {
    pub service: String,
    pub port: u32,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub fail_open: Option<bool>,
    #[serde(default)]
    pub clear_route_cache: Option<bool>,
    #[serde(default)]
    pub status_on_error: Option<StringOrInt>,
    #[serde(default)]
    pub include_request_body_in_check: Option<BodySpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BodySpec {
    #[serde(default)]
    pub max_request_bytes: Option<u32>,
    #[serde(default)]
    pub allow_partial_message: Option<bool>,
    #[serde(default)]
    pub pack_as_bytes: Option<bool>,
}

/// Istio writes `statusOnError` as a string holding an integer; accept a bare integer too.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StringOrInt {
    Int(i64),
    Str(String),
}

/// An `AuthorizationPolicy` in the gateway file: either flat (`name`, `namespace` and the spec
/// fields side by side) or as a Kubernetes object (`metadata`, `spec`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InlinePolicy {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub metadata: Option<ObjectMeta>,
    #[serde(default)]
    pub spec: Option<AuthorizationPolicySpec>,
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub target_ref: Option<PolicyTargetReference>,
    #[serde(default)]
    pub target_refs: Option<Vec<PolicyTargetReference>>,
    #[serde(default)]
    pub action: Option<Action>,
    #[serde(default)]
    pub provider: Option<ExtensionProviderRef>,
    #[serde(default)]
    pub rules: Option<Vec<Rule>>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    // Everything else Kubernetes writes into metadata (uid, resourceVersion, ...) is ignored.
    #[serde(flatten)]
    pub other: BTreeMap<String, IgnoredAny>,
}

/// Istio `security.istio.io/v1` `AuthorizationPolicy.spec`, field names verbatim.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicySpec {
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub target_ref: Option<PolicyTargetReference>,
    #[serde(default)]
    pub target_refs: Option<Vec<PolicyTargetReference>>,
    #[serde(default)]
    pub action: Option<Action>,
    #[serde(default)]
    pub provider: Option<ExtensionProviderRef>,
    /// `None` (absent) and `Some(vec![])` differ in Istio: absent matches nothing.
    #[serde(default)]
    pub rules: Option<Vec<Rule>>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTargetReference {
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Action {
    Allow,
    Deny,
    Audit,
    Custom,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtensionProviderRef {
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    #[serde(default)]
    pub from: Option<Vec<RuleFrom>>,
    #[serde(default)]
    pub to: Option<Vec<RuleTo>>,
    #[serde(default)]
    pub when: Option<Vec<Condition>>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleFrom {
    #[serde(default)]
    pub source: Option<Source>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleTo {
    #[serde(default)]
    pub operation: Option<Operation>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Source {
    #[serde(default)]
    pub principals: Option<Vec<String>>,
    #[serde(default)]
    pub not_principals: Option<Vec<String>>,
    #[serde(default)]
    pub request_principals: Option<Vec<String>>,
    #[serde(default)]
    pub not_request_principals: Option<Vec<String>>,
    #[serde(default)]
    pub namespaces: Option<Vec<String>>,
    #[serde(default)]
    pub not_namespaces: Option<Vec<String>>,
    #[serde(default)]
    pub ip_blocks: Option<Vec<String>>,
    #[serde(default)]
    pub not_ip_blocks: Option<Vec<String>>,
    #[serde(default)]
    pub remote_ip_blocks: Option<Vec<String>>,
    #[serde(default)]
    pub not_remote_ip_blocks: Option<Vec<String>>,
    #[serde(default)]
    pub service_accounts: Option<Vec<String>>,
    #[serde(default)]
    pub not_service_accounts: Option<Vec<String>>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Operation {
    #[serde(default)]
    pub hosts: Option<Vec<String>>,
    #[serde(default)]
    pub not_hosts: Option<Vec<String>>,
    #[serde(default)]
    pub ports: Option<Vec<String>>,
    #[serde(default)]
    pub not_ports: Option<Vec<String>>,
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    #[serde(default)]
    pub not_methods: Option<Vec<String>>,
    #[serde(default)]
    pub paths: Option<Vec<String>>,
    #[serde(default)]
    pub not_paths: Option<Vec<String>>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub values: Option<Vec<String>>,
    #[serde(default)]
    pub not_values: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathNormalizationSpec {
    /// `NONE`, `BASE` (default), `MERGE_SLASHES`, `DECODE_AND_MERGE_SLASHES` (Istio's names;
    /// `DEFAULT` is accepted as BASE).
    #[serde(default)]
    pub normalization: Option<String>,
    /// What to do with `%2F`/`%5C` in the path: `KEEP` (default, Envoy's), `REJECT` (400),
    /// `UNESCAPE`.
    #[serde(default)]
    pub escaped_slashes: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayIdentitySpec {
    /// Pod labels policies select on (default `istio: ingressgateway`).
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    /// The gateway's namespace (default `istio-system`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Istio `meshConfig.rootNamespace` (default `istio-system`).
    #[serde(default)]
    pub root_namespace: Option<String>,
    /// Gateway API name, for `targetRefs` (kind Gateway).
    #[serde(default)]
    pub name: Option<String>,
    /// Istio `gatewayTopology.numTrustedProxies`: how many `X-Forwarded-For` hops to trust.
    #[serde(default)]
    pub num_trusted_proxies: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminSpec {
    /// `ip:port` of the admin listener (default `127.0.0.1:15000`); `disabled` turns it off.
    #[serde(default)]
    pub address: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogSpec {
    /// `text` (Envoy-like, default), `json`, or `off`.
    #[serde(default)]
    pub format: Option<String>,
}
