//! Upstream clusters: pooled keep-alive connections to a backend's endpoints, balanced round
//! robin.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use authgate_config::{Backend, HostPort, UpstreamProtocol};
use http::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::body::ProxyBody;

pub struct Upstream {
    pub name: String,
    endpoints: Vec<Endpoint>,
    next: AtomicUsize,
    pub client: Client<HttpConnector, ProxyBody>,
    pub protocol: UpstreamProtocol,
}

struct Endpoint {
    /// `http://host:port` with nothing after it: the request path is appended per request.
    base: String,
}

impl Upstream {
    pub fn new(
        backend: &Backend,
        static_hosts: &std::collections::BTreeMap<String, std::net::IpAddr>,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(backend.connect_timeout));
        connector.enforce_http(true);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(1024);
        // The client's Host header goes upstream untouched; the URI only picks the endpoint.
        builder.set_host(false);
        if backend.protocol == UpstreamProtocol::Http2 {
            builder.http2_only(true);
        }
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
                Endpoint {
                    base: format!("http://{hp}"),
                }
            })
            .collect();
        Self {
            name: backend.name.clone(),
            endpoints,
            next: AtomicUsize::new(0),
            client: builder.build(connector),
            protocol: backend.protocol,
        }
    }

    /// The URI for `path_and_query` on the next endpoint in round-robin order.
    pub fn uri_for(&self, path_and_query: &str) -> Result<Uri, http::uri::InvalidUri> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len().max(1);
        let base = self
            .endpoints
            .get(i)
            .map_or("http://invalid", |e| e.base.as_str());
        let mut s = String::with_capacity(base.len() + path_and_query.len());
        s.push_str(base);
        s.push_str(path_and_query);
        s.parse()
    }
}
