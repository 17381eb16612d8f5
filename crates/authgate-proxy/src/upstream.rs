//! Upstream clusters: pooled keep-alive connections (HTTP/1.1 or HTTP/2, plain or TLS) to a
//! backend's endpoints, balanced round robin or least request, with passive ejection of
//! endpoints that refuse connections.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use authgate_config::{Backend, HostPort, LbPolicy, UpstreamProtocol};
use authgate_pool::{Pool, Protocol};
use http::Uri;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

use crate::body::ProxyBody;

/// First ejection lasts this long; each further consecutive failure doubles it.
const BASE_EJECTION: Duration = Duration::from_secs(1);
const MAX_EJECTION: Duration = Duration::from_secs(30);

pub type Connector = HttpsConnector<HttpConnector>;
/// Keep-alive connections to one endpoint.
pub type EndpointPool = Pool<Connector, ProxyBody>;

pub struct Upstream {
    pub name: String,
    endpoints: Vec<Endpoint>,
    next: AtomicUsize,
    lb: LbPolicy,
    epoch: Instant,
    pub protocol: UpstreamProtocol,
}

struct Endpoint {
    /// `http://host:port` or `https://host:port`: the request path is appended per request.
    base: String,
    /// `base` parses as a URI (otherwise every request's URI fails to build, as it always has).
    base_is_uri: bool,
    pool: EndpointPool,
    active: AtomicUsize,
    consecutive_failures: AtomicU32,
    /// Milliseconds since `Upstream::epoch` until which the endpoint is skipped.
    ejected_until_ms: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("backend {backend}: {message}")]
    Tls { backend: String, message: String },
}

/// An endpoint chosen for one request; counts it as in flight until dropped.
pub struct Pick<'a> {
    upstream: &'a Upstream,
    index: usize,
}

impl Drop for Pick<'_> {
    fn drop(&mut self) {
        if let Some(e) = self.upstream.endpoints.get(self.index) {
            e.active.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl<'a> Pick<'a> {
    /// The connections to this endpoint (`None` only for a backend without endpoints).
    pub fn pool(&self) -> Option<&'a EndpointPool> {
        let upstream: &'a Upstream = self.upstream;
        upstream.endpoints.get(self.index).map(|e| &e.pool)
    }

    /// The request URI for this endpoint: origin form for HTTP/1 (what goes on the wire),
    /// absolute (`:scheme` and `:authority` from the endpoint) for HTTP/2.
    pub fn uri(&self, path_and_query: &str) -> Result<Uri, http::uri::InvalidUri> {
        let endpoint = self.upstream.endpoints.get(self.index);
        if endpoint.is_some_and(|e| e.base_is_uri)
            && self.upstream.protocol == UpstreamProtocol::Http1
            && path_and_query.starts_with('/')
        {
            return path_and_query.parse();
        }
        let base = endpoint.map_or("http://invalid", |e| e.base.as_str());
        let mut s = String::with_capacity(base.len() + path_and_query.len());
        s.push_str(base);
        s.push_str(path_and_query);
        s.parse()
    }

    /// [`Pick::uri`] for a path already parsed (the request's own, forwarded unchanged): the
    /// origin form shares its bytes. `None` where the endpoint needs the absolute form.
    pub fn origin_form(&self, path_and_query: &http::uri::PathAndQuery) -> Option<Uri> {
        let endpoint = self.upstream.endpoints.get(self.index)?;
        (endpoint.base_is_uri
            && self.upstream.protocol == UpstreamProtocol::Http1
            && path_and_query.as_str().starts_with('/'))
        .then(|| Uri::from(path_and_query.clone()))
    }

    /// Passive health: a refused connection ejects the endpoint for a while; a success clears
    /// its failure count.
    pub fn report(&self, connect_failed: bool) {
        let Some(e) = self.upstream.endpoints.get(self.index) else {
            return;
        };
        if connect_failed {
            let n = e.consecutive_failures.fetch_add(1, Ordering::Relaxed).min(16);
            let ejection = BASE_EJECTION.saturating_mul(1 << n).min(MAX_EJECTION);
            let until = self.upstream.now_ms() + ejection.as_millis() as u64;
            e.ejected_until_ms.store(until, Ordering::Relaxed);
        } else if e.consecutive_failures.load(Ordering::Relaxed) != 0 {
            e.consecutive_failures.store(0, Ordering::Relaxed);
            e.ejected_until_ms.store(0, Ordering::Relaxed);
        }
    }
}

impl Upstream {
    pub fn new(backend: &Backend, static_hosts: &BTreeMap<String, IpAddr>) -> Result<Self, UpstreamError> {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(backend.connect_timeout));
        http.enforce_http(false);
        let connector = https_connector(backend, http)?;
        // The request's Host header goes upstream untouched (the pool adds none).
        let pool_config = authgate_pool::Config {
            protocol: match backend.protocol {
                UpstreamProtocol::Http1 => Protocol::Http1,
                UpstreamProtocol::Http2 => Protocol::Http2,
            },
            idle_timeout: Duration::from_secs(60),
            max_idle: 1024,
        };
        let scheme = if backend.tls.is_some() { "https" } else { "http" };
        let endpoints = backend
            .endpoints
            .iter()
            .map(|e| {
                let hp = static_hosts.get(&e.host).map_or_else(
                    || e.clone(),
                    |ip| HostPort {
                        host: ip.to_string(),
                        port: e.port,
                    },
                );
                let base = format!("{scheme}://{hp}");
                // An endpoint that is no URI fails each request when its URI is built.
                let dst = base.parse::<Uri>();
                Endpoint {
                    base_is_uri: dst.is_ok(),
                    pool: Pool::new(
                        connector.clone(),
                        dst.unwrap_or_else(|_| Uri::from_static("http://invalid")),
                        &pool_config,
                    ),
                    base,
                    active: AtomicUsize::new(0),
                    consecutive_failures: AtomicU32::new(0),
                    ejected_until_ms: AtomicU64::new(0),
                }
            })
            .collect();
        Ok(Self {
            name: backend.name.clone(),
            endpoints,
            next: AtomicUsize::new(0),
            lb: backend.lb_policy,
            epoch: Instant::now(),
            protocol: backend.protocol,
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn healthy(&self, i: usize, now: u64) -> bool {
        self.endpoints
            .get(i)
            .is_some_and(|e| e.ejected_until_ms.load(Ordering::Relaxed) <= now)
    }

    /// Chooses an endpoint. Ejected endpoints are skipped unless every endpoint is ejected
    /// (then all are tried, as Envoy's panic mode does).
    pub fn pick(&self) -> Pick<'_> {
        let n = self.endpoints.len().max(1);
        let now = self.now_ms();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let index = match self.lb {
            LbPolicy::RoundRobin => (0..n)
                .map(|k| (start + k) % n)
                .find(|&i| self.healthy(i, now))
                .unwrap_or(start % n),
            LbPolicy::LeastRequest => {
                // Power of two choices among healthy endpoints.
                let a = (0..n).map(|k| (start + k) % n).find(|&i| self.healthy(i, now));
                let b = (0..n)
                    .map(|k| (start.wrapping_mul(7) + 3 + k) % n)
                    .find(|&i| self.healthy(i, now) && Some(i) != a);
                match (a, b) {
                    (Some(a), Some(b)) => {
                        let load = |i: usize| {
                            self.endpoints
                                .get(i)
                                .map_or(usize::MAX, |e| e.active.load(Ordering::Relaxed))
                        };
                        if load(b) < load(a) { b } else { a }
                    }
                    (Some(a), None) => a,
                    _ => start % n,
                }
            }
        };
        if let Some(e) = self.endpoints.get(index) {
            e.active.fetch_add(1, Ordering::Relaxed);
        }
        Pick {
            upstream: self,
            index,
        }
    }
}

fn https_connector(backend: &Backend, http: HttpConnector) -> Result<Connector, UpstreamError> {
    let err = |message: String| UpstreamError::Tls {
        backend: backend.name.clone(),
        message,
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    match backend.tls.as_ref().and_then(|t| t.ca_file.as_ref()) {
        Some(ca) => {
            let certs =
                CertificateDer::pem_file_iter(ca).map_err(|e| err(format!("{}: {e}", ca.display())))?;
            for c in certs {
                let c = c.map_err(|e| err(format!("{}: {e}", ca.display())))?;
                roots.add(c).map_err(|e| err(format!("{}: {e}", ca.display())))?;
            }
        }
        // Plain-HTTP backends never use the roots.
        None if backend.tls.is_some() => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        None => {}
    }
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let builder = match backend.tls.as_ref().and_then(|t| t.server_name.clone()) {
        Some(name) => {
            let name =
                ServerName::try_from(name.clone()).map_err(|e| err(format!("serverName {name:?}: {e}")))?;
            builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
        }
        None => builder,
    };
    Ok(match backend.protocol {
        UpstreamProtocol::Http2 => builder.enable_http2().wrap_connector(http),
        UpstreamProtocol::Http1 => builder.enable_http1().wrap_connector(http),
    })
}
