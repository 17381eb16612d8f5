//! Shared helpers for the policy tests: build a config from YAML, describe a request.

#![allow(dead_code)]

use std::net::IpAddr;
use std::path::Path;

use authgate_config::Config;
use authgate_policy::{PolicyEngine, PolicyError, RequestAttributes};

/// Providers every test config defines. Declared out of name order on purpose.
pub const PROVIDERS: &str = r#"
extensionProviders:
  - name: zeta
    envoyExtAuthzGrpc: {service: zeta.default.svc.cluster.local, port: 9000}
  - name: ext-authz-grpc
    envoyExtAuthzGrpc: {service: ext-authz.default.svc.cluster.local, port: 9000}
  - name: ext-authz-http
    envoyExtAuthzHttp: {service: ext-authz.default.svc.cluster.local, port: 8000}
  - name: alpha
    envoyExtAuthzGrpc: {service: alpha.default.svc.cluster.local, port: 9000}
"#;

/// The default gateway identity of the tests: a classic ingress gateway in `istio-ingress`,
/// root namespace `istio-system`.
pub const GATEWAY: &str = r#"
gateway:
  labels: {istio: ingressgateway, app: istio-ingressgateway}
  namespace: istio-ingress
  rootNamespace: istio-system
"#;

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}\n")).collect()
}

/// Builds a config: the test providers, `gateway` (or the default identity), the inline
/// `policies` (a YAML list, unindented), and Istio manifests `istio` (not inline).
pub fn config(gateway: Option<&str>, policies: &str, istio: &str) -> Result<Config, String> {
    let mut src = String::from(PROVIDERS);
    src.push_str(gateway.unwrap_or(GATEWAY));
    if !policies.trim().is_empty() {
        src.push_str("\nauthorizationPolicies:\n");
        src.push_str(&indent(policies.trim_matches('\n')));
    }
    let mut config = authgate_config::parse(&src, "test.yaml", Path::new("."), &[])
        .map_err(|e| format!("{e}\n---\n{src}"))?;
    if !istio.trim().is_empty() {
        let mut bundle = authgate_config::istio::IstioBundle::default();
        let mut errors = Vec::new();
        authgate_config::istio::load_istio_str(istio, "istio.yaml", &mut bundle, &mut errors);
        if !errors.is_empty() {
            return Err(errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"));
        }
        config.policies.extend(bundle.policies);
    }
    Ok(config)
}

pub fn engine(gateway: Option<&str>, policies: &str, istio: &str) -> Result<PolicyEngine, Vec<PolicyError>> {
    let config = config(gateway, policies, istio).map_err(|m| {
        vec![PolicyError {
            policy: None,
            origin: None,
            field: "(config)".into(),
            message: m,
        }]
    })?;
    PolicyEngine::compile(&config)
}

/// A request, with the defaults of an external client hitting the seed gateway.
#[derive(Debug, Clone)]
pub struct Rq {
    pub method: String,
    pub path: String,
    pub authority: String,
    pub port: u16,
    pub source_ip: IpAddr,
    pub remote_ip: IpAddr,
    pub destination_ip: IpAddr,
    pub headers: http::HeaderMap,
    pub sni: Option<String>,
    pub principal: Option<String>,
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

pub fn rq(method: &str, path: &str) -> Rq {
    Rq {
        method: method.into(),
        path: path.into(),
        authority: "bookinfo.example.com".into(),
        port: 8080,
        source_ip: ip("10.0.0.1"),
        remote_ip: ip("10.0.0.1"),
        destination_ip: ip("10.1.0.2"),
        headers: http::HeaderMap::new(),
        sni: None,
        principal: None,
    }
}

pub fn get(path: &str) -> Rq {
    rq("GET", path)
}

impl Rq {
    pub fn host(mut self, h: &str) -> Self {
        self.authority = h.into();
        self
    }
    pub fn port(mut self, p: u16) -> Self {
        self.port = p;
        self
    }
    /// The direct peer; also the remote address unless `remote` is set after.
    pub fn src(mut self, s: &str) -> Self {
        self.source_ip = ip(s);
        self.remote_ip = ip(s);
        self
    }
    pub fn remote(mut self, s: &str) -> Self {
        self.remote_ip = ip(s);
        self
    }
    pub fn dst(mut self, s: &str) -> Self {
        self.destination_ip = ip(s);
        self
    }
    pub fn header(mut self, k: &str, v: &str) -> Self {
        let name = http::HeaderName::from_bytes(k.as_bytes()).unwrap_or_else(|e| panic!("{k}: {e}"));
        let value = http::HeaderValue::from_str(v).unwrap_or_else(|e| panic!("{v}: {e}"));
        self.headers.append(name, value);
        self
    }
    pub fn sni(mut self, s: &str) -> Self {
        self.sni = Some(s.into());
        self
    }
    pub fn principal(mut self, p: &str) -> Self {
        self.principal = Some(p.into());
        self
    }
    pub fn attrs(&self) -> RequestAttributes<'_> {
        RequestAttributes {
            method: &self.method,
            path: &self.path,
            path_and_query: &self.path,
            authority: &self.authority,
            port: self.port,
            source_ip: self.source_ip,
            remote_ip: self.remote_ip,
            destination_ip: self.destination_ip,
            headers: &self.headers,
            sni: self.sni.as_deref(),
            principal: self.principal.as_deref(),
        }
    }
}
