//! Prometheus metrics with Envoy-like names. The registry lives as long as the gateway; each
//! snapshot resolves its per-provider, per-route and per-backend handles once, so the hot path
//! only increments atomics (no label hashing, no lock).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

fn latency_histogram() -> Histogram {
    // 100 µs .. ~13 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

pub struct Metrics {
    registry: Registry,
    authz_ok: Family<Labels, Counter>,
    authz_denied: Family<Labels, Counter>,
    authz_error: Family<Labels, Counter>,
    authz_timeout: Family<Labels, Counter>,
    authz_failure_mode_allowed: Family<Labels, Counter>,
    authz_latency: Family<Labels, Histogram, fn() -> Histogram>,
    rq: Family<Labels, Counter>,
    rq_latency: Family<Labels, Histogram, fn() -> Histogram>,
    upstream_connect_fail: Family<Labels, Counter>,
    pub cx_active: Gauge,
    pub cx_total: Counter,
    pub reload_ok: Counter,
    pub reload_failed: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("authgate");
        let m = Self {
            authz_ok: Family::default(),
            authz_denied: Family::default(),
            authz_error: Family::default(),
            authz_timeout: Family::default(),
            authz_failure_mode_allowed: Family::default(),
            authz_latency: Family::new_with_constructor(latency_histogram),
            rq: Family::default(),
            rq_latency: Family::new_with_constructor(latency_histogram),
            upstream_connect_fail: Family::default(),
            cx_active: Gauge::default(),
            cx_total: Counter::default(),
            reload_ok: Counter::default(),
            reload_failed: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "ext_authz_ok",
            "Checks that allowed the request",
            m.authz_ok.clone(),
        );
        registry.register(
            "ext_authz_denied",
            "Checks that denied the request",
            m.authz_denied.clone(),
        );
        registry.register(
            "ext_authz_error",
            "Checks that failed (transport, timeout, 5xx)",
            m.authz_error.clone(),
        );
        registry.register(
            "ext_authz_timeout",
            "Checks that timed out",
            m.authz_timeout.clone(),
        );
        registry.register(
            "ext_authz_failure_mode_allowed",
            "Failed checks let through because failOpen is set",
            m.authz_failure_mode_allowed.clone(),
        );
        registry.register(
            "ext_authz_duration_seconds",
            "Check latency",
            m.authz_latency.clone(),
        );
        registry.register(
            "downstream_rq",
            "Downstream requests by route and status class",
            m.rq.clone(),
        );
        registry.register(
            "downstream_rq_duration_seconds",
            "Downstream request latency by route",
            m.rq_latency.clone(),
        );
        registry.register(
            "upstream_cx_connect_fail",
            "Upstream connection failures by backend",
            m.upstream_connect_fail.clone(),
        );
        registry.register(
            "downstream_cx_active",
            "Open downstream connections",
            m.cx_active.clone(),
        );
        registry.register(
            "downstream_cx",
            "Accepted downstream connections",
            m.cx_total.clone(),
        );
        registry.register(
            "config_reload_ok",
            "Successful configuration reloads",
            m.reload_ok.clone(),
        );
        registry.register(
            "config_reload_failed",
            "Rejected configuration reloads",
            m.reload_failed.clone(),
        );
        Self { registry, ..m }
    }
}

impl Metrics {
    /// OpenMetrics text for `/stats/prometheus`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    pub fn provider(&self, name: &str) -> ProviderMetrics {
        let l: Labels = vec![("provider", name.to_owned())];
        ProviderMetrics {
            ok: self.authz_ok.get_or_create_owned(&l),
            denied: self.authz_denied.get_or_create_owned(&l),
            error: self.authz_error.get_or_create_owned(&l),
            timeout: self.authz_timeout.get_or_create_owned(&l),
            failure_mode_allowed: self.authz_failure_mode_allowed.get_or_create_owned(&l),
            latency: self.authz_latency.get_or_create_owned(&l),
        }
    }

    pub fn route(&self, name: &str) -> RouteMetrics {
        let class = |c: &str| {
            self.rq
                .get_or_create_owned(&vec![("route", name.to_owned()), ("class", c.to_owned())])
        };
        RouteMetrics {
            by_class: [
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
            ],
            latency: self
                .rq_latency
                .get_or_create_owned(&vec![("route", name.to_owned())]),
        }
    }

    pub fn backend_connect_fail(&self, name: &str) -> Counter {
        self.upstream_connect_fail
            .get_or_create_owned(&vec![("backend", name.to_owned())])
    }
}

#[derive(Clone)]
pub struct ProviderMetrics {
    pub ok: Counter,
    pub denied: Counter,
    pub error: Counter,
    pub timeout: Counter,
    pub failure_mode_allowed: Counter,
    pub latency: Histogram,
}

#[derive(Clone)]
pub struct RouteMetrics {
    by_class: [Counter; 5],
    latency: Histogram,
}

impl RouteMetrics {
    pub fn record(&self, status: u16, seconds: f64) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_class[class].inc();
        self.latency.observe(seconds);
    }
}

/// Handles resolved for one snapshot, index-aligned with its config.
#[derive(Clone, Default)]
pub struct SnapshotMetrics {
    pub providers: Vec<ProviderMetrics>,
    pub routes: Vec<RouteMetrics>,
    /// Requests that matched no route.
    pub no_route: Option<RouteMetrics>,
    pub backend_connect_fail: Vec<Counter>,
}

impl SnapshotMetrics {
    /// Counts one finished request.
    pub fn record(&self, entry: &crate::access_log::LogEntry, snap: &crate::snapshot::Snapshot) {
        let route = entry
            .route_index
            .and_then(|i| self.routes.get(i))
            .or(self.no_route.as_ref());
        if let Some(r) = route {
            r.record(entry.status(), entry.duration().as_secs_f64());
        }
        for (i, latency, outcome) in entry.authz_outcomes() {
            let Some(p) = self.providers.get(*i) else { continue };
            p.latency.observe(latency.as_secs_f64());
            match *outcome {
                "allowed" => {
                    p.ok.inc();
                }
                "denied" => {
                    p.denied.inc();
                }
                other => {
                    p.error.inc();
                    if other == "timeout" {
                        p.timeout.inc();
                    }
                    if other != "invalid" && snap.config.providers.get(*i).is_some_and(|c| c.fail_open) {
                        p.failure_mode_allowed.inc();
                    }
                }
            }
        }
        if entry.upstream_connect_failed()
            && let Some(c) = entry.backend_index.and_then(|b| self.backend_connect_fail.get(b))
        {
            c.inc();
        }
    }
}
