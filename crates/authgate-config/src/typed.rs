//! Validated, typed configuration: what the rest of authgate is built from.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub use crate::model::{Action, AuthorizationPolicySpec};

/// A whole validated configuration (the gateway file plus everything it includes).
#[derive(Debug, Clone)]
pub struct Config {
    /// The files this configuration was read from, main file first (for reload watching).
    pub files: Vec<PathBuf>,
    pub listeners: Vec<Listener>,
    pub routes: Vec<Route>,
    pub backends: Vec<Backend>,
    pub providers: Vec<Provider>,
    pub policies: Vec<Policy>,
    pub static_hosts: BTreeMap<String, IpAddr>,
    pub path_normalization: PathNormalization,
    pub gateway: GatewayIdentity,
    /// `None` when the admin listener is disabled.
    pub admin: Option<SocketAddr>,
    pub access_log: AccessLogFormat,
    /// Non-fatal notes produced while loading (skipped kinds, ignored fields).
    pub notes: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub name: String,
    pub address: SocketAddr,
    pub tls: Option<ListenerTls>,
}

#[derive(Debug, Clone)]
pub struct ListenerTls {
    pub certificates: Vec<CertificateFiles>,
    pub client_ca_file: Option<PathBuf>,
    pub require_client_certificate: bool,
}

#[derive(Debug, Clone)]
pub struct CertificateFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    /// Lower-case host patterns; empty means any host.
    pub hosts: Vec<HostPattern>,
    pub path: PathMatch,
    /// Index into `Config::backends`.
    pub backend: usize,
    pub timeout: Option<Duration>,
}

/// Route host pattern, compared with the request authority lower-cased and without port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Any,
    Exact(String),
    /// `*.example.com` stored as `.example.com`.
    WildcardSuffix(String),
}

impl HostPattern {
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(h) => h == host,
            Self::WildcardSuffix(sfx) => host.len() > sfx.len() && host.ends_with(sfx.as_str()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// Segment-unaware prefix, as Envoy's `prefix` route match.
    Prefix(String),
    Exact(String),
}

impl PathMatch {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Prefix(p) => path.starts_with(p.as_str()),
            Self::Exact(p) => path == p,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Backend {
    pub name: String,
    pub endpoints: Vec<HostPort>,
    pub protocol: UpstreamProtocol,
    pub connect_timeout: Duration,
    pub lb_policy: LbPolicy,
    pub tls: Option<UpstreamTls>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LbPolicy {
    #[default]
    RoundRobin,
    /// Power of two choices on in-flight requests, as Envoy's LEAST_REQUEST.
    LeastRequest,
}

#[derive(Debug, Clone)]
pub struct UpstreamTls {
    pub ca_file: Option<PathBuf>,
    pub server_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    Http1,
    Http2,
}

/// A validated ext_authz extension provider.
#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    /// Hostname (possibly `ns/host` stripped to host) or IP of the authz service.
    pub service: String,
    pub port: u16,
    pub timeout: Duration,
    pub fail_open: bool,
    /// HTTP status for errors when not failing open (Envoy default 403).
    pub status_on_error: u16,
    pub body: Option<BodySettings>,
    pub clear_route_cache: bool,
    pub kind: ProviderKind,
}

impl Provider {
    /// `host:port` to connect to, after applying `staticHosts`.
    pub fn target(&self, static_hosts: &BTreeMap<String, IpAddr>) -> HostPort {
        let host = static_hosts
            .get(&self.service)
            .map_or_else(|| self.service.clone(), ToString::to_string);
        HostPort {
            host,
            port: self.port,
        }
    }
}

#[derive(Debug, Clone)]
pub enum ProviderKind {
    Http(HttpProviderSettings),
    Grpc,
}

#[derive(Debug, Clone, Default)]
pub struct HttpProviderSettings {
    pub path_prefix: String,
    pub include_request_headers: Vec<HeaderPattern>,
    /// `includeAdditionalHeadersInCheck`, sorted by name; values may use `%REQ(name)%`.
    pub additional_headers: Vec<(String, String)>,
    pub headers_to_upstream_on_allow: Vec<HeaderPattern>,
    pub headers_to_downstream_on_deny: Vec<HeaderPattern>,
    pub headers_to_downstream_on_allow: Vec<HeaderPattern>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodySettings {
    pub max_request_bytes: u32,
    pub allow_partial_message: bool,
    pub pack_as_bytes: bool,
}

/// Istio header-name pattern (`exact`, `prefix*`, `*suffix`), always case-insensitive.
/// Stored lower-case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderPattern {
    Exact(String),
    Prefix(String),
    Suffix(String),
}

impl HeaderPattern {
    /// Istio's `generateHeaders`: a leading `*` is checked first, then a trailing one.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s == "*" {
            return Err(
                "a single wildcard is not supported, change it to either prefix or suffix match".into(),
            );
        }
        if s.is_empty() {
            return Err("empty header pattern".into());
        }
        let lower = s.to_ascii_lowercase();
        Ok(if let Some(rest) = lower.strip_prefix('*') {
            Self::Suffix(rest.to_owned())
        } else if let Some(rest) = lower.strip_suffix('*') {
            Self::Prefix(rest.to_owned())
        } else {
            Self::Exact(lower)
        })
    }

    /// `name` must already be lower-case (as `http::HeaderName`s are).
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Self::Exact(e) => name.eq_ignore_ascii_case(e),
            Self::Prefix(p) => {
                name.len() >= p.len() && name.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
            }
            Self::Suffix(s) => {
                name.len() >= s.len()
                    && name.as_bytes()[name.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
            }
        }
    }
}

/// True if any pattern in the list matches `name`.
pub fn any_matches(patterns: &[HeaderPattern], name: &str) -> bool {
    patterns.iter().any(|p| p.matches(name))
}

/// An AuthorizationPolicy with where it came from.
#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub spec: AuthorizationPolicySpec,
    pub origin: Origin,
    /// Written inline in the gateway file: applies to this gateway without selection.
    pub inline: bool,
}

impl Policy {
    pub fn action(&self) -> Action {
        self.spec.action.unwrap_or(Action::Allow)
    }

    /// `istio.io/dry-run` parsed as Go's `strconv.ParseBool`; a bad value is false.
    pub fn dry_run(&self) -> bool {
        matches!(
            self.annotations.get("istio.io/dry-run").map(String::as_str),
            Some("1" | "t" | "T" | "TRUE" | "true" | "True")
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    pub line: Option<u64>,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}", self.file, l),
            None => f.write_str(&self.file),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PathNormalization {
    pub mode: NormalizationMode,
    pub escaped_slashes: EscapedSlashes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NormalizationMode {
    None,
    #[default]
    Base,
    MergeSlashes,
    DecodeAndMergeSlashes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EscapedSlashes {
    #[default]
    Keep,
    Reject,
    Unescape,
}

#[derive(Debug, Clone)]
pub struct GatewayIdentity {
    pub labels: BTreeMap<String, String>,
    pub namespace: String,
    pub root_namespace: String,
    pub name: Option<String>,
    pub num_trusted_proxies: u32,
}

impl Default for GatewayIdentity {
    fn default() -> Self {
        Self {
            labels: BTreeMap::from([("istio".to_owned(), "ingressgateway".to_owned())]),
            namespace: "istio-system".into(),
            root_namespace: "istio-system".into(),
            name: None,
            num_trusted_proxies: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessLogFormat {
    #[default]
    Text,
    Json,
    Off,
}
