//! One immutable view of the configuration, compiled for the hot path. A request holds the
//! snapshot it started with until it ends; reload swaps in a new one atomically.

use std::sync::Arc;

use authgate_authz::ProviderClient;
use authgate_config::Config;
use authgate_policy::PolicyEngine;

use crate::metrics::{Metrics, SnapshotMetrics};
use crate::upstream::Upstream;

pub struct Snapshot {
    pub config: Arc<Config>,
    pub policy: PolicyEngine,
    /// Index-aligned with `config.providers`.
    pub providers: Vec<Arc<ProviderClient>>,
    /// Index-aligned with `config.backends`.
    pub upstreams: Vec<Arc<Upstream>>,
    /// TLS acceptors, index-aligned with `config.listeners` (`None`: plain TCP). Built here so
    /// a reload rotates certificates without touching the listening sockets.
    pub tls: Vec<Option<tokio_rustls::TlsAcceptor>>,
    /// Metric handles, resolved when the snapshot is installed.
    pub metrics: SnapshotMetrics,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Policy(Vec<authgate_policy::PolicyError>),
    #[error("listener {listener}: {source}")]
    Tls {
        listener: String,
        source: crate::tls::TlsError,
    },
    #[error(transparent)]
    Upstream(#[from] crate::upstream::UpstreamError),
    #[error("provider {name:?}: {message}")]
    Provider { name: String, message: String },
}

impl Snapshot {
    pub fn build(config: Config) -> Result<Self, SnapshotError> {
        let policy = PolicyEngine::compile(&config).map_err(SnapshotError::Policy)?;
        let providers = config
            .providers
            .iter()
            .map(|p| {
                ProviderClient::new(p, p.target(&config.static_hosts))
                    .map(Arc::new)
                    .map_err(|e| SnapshotError::Provider {
                        name: p.name.clone(),
                        message: e.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let upstreams = config
            .backends
            .iter()
            .map(|b| Upstream::new(b, &config.static_hosts).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let tls = config
            .listeners
            .iter()
            .map(|l| {
                l.tls
                    .as_ref()
                    .map(|t| crate::tls::server_config(t).map(tokio_rustls::TlsAcceptor::from))
                    .transpose()
                    .map_err(|source| SnapshotError::Tls {
                        listener: l.name.clone(),
                        source,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            tls,
            config: Arc::new(config),
            policy,
            providers,
            upstreams,
            metrics: SnapshotMetrics::default(),
        })
    }

    /// First route whose host and path match, in configuration order, with its index.
    pub fn route(&self, host: &str, path: &str) -> Option<(usize, &authgate_config::Route)> {
        self.config.routes.iter().enumerate().find(|(_, r)| {
            (r.hosts.is_empty() || r.hosts.iter().any(|h| h.matches(host))) && r.path.matches(path)
        })
    }

    pub(crate) fn attach_metrics(&mut self, m: &Metrics) {
        self.metrics = SnapshotMetrics {
            providers: self
                .config
                .providers
                .iter()
                .map(|p| m.provider(&p.name))
                .collect(),
            routes: self.config.routes.iter().map(|r| m.route(&r.name)).collect(),
            no_route: Some(m.route("-")),
            backend_connect_fail: self
                .config
                .backends
                .iter()
                .map(|b| m.backend_connect_fail(&b.name))
                .collect(),
        };
    }
}
