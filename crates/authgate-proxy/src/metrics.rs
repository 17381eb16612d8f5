//! Prometheus metrics with Envoy-like names. The registry lives as long as the gateway; each
//! snapshot resolves its per-provider, per-route and per-backend handles once, so the hot path
//! only increments atomics (no label hashing, no lock).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Finite buckets of [`Histogram`]: upper bounds 100 µs × 2^i, i = 0..18 (100 µs .. ~13 s).
const BUCKETS: usize = 18;
const FIRST_BOUND_NANOS: u64 = 100_000;

/// A latency histogram made of atomics: `observe` is a few relaxed atomic adds, with no lock
/// (prometheus-client's own histogram takes a mutex per observation, shared by every worker).
/// Buckets are fixed; they are cumulated only when scraped.
#[derive(Clone, Debug, Default)]
pub struct Histogram {
    inner: Arc<HistogramCells>,
}

#[derive(Debug, Default)]
struct HistogramCells {
    /// Non-cumulative counts; the last cell is the `+Inf` bucket.
    buckets: [AtomicU64; BUCKETS + 1],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let cells = &*self.inner;
        if let Some(b) = cells.buckets.get(bucket_index(nanos)) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        cells.count.fetch_add(1, Ordering::Relaxed);
        cells.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// The first bucket whose bound (100 µs × 2^i) is ≥ `nanos`; `BUCKETS` for `+Inf`.
fn bucket_index(nanos: u64) -> usize {
    let units = nanos.div_ceil(FIRST_BOUND_NANOS);
    if units <= 1 {
        return 0;
    }
    // ceil(log2(units))
    let i = (u64::BITS - (units - 1).leading_zeros()) as usize;
    i.min(BUCKETS)
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let cells = &*self.inner;
        let mut buckets = [(0.0f64, 0u64); BUCKETS + 1];
        for (i, (slot, cell)) in buckets.iter_mut().zip(&cells.buckets).enumerate() {
            let bound = if i < BUCKETS {
                (FIRST_BOUND_NANOS << i) as f64 / 1e9
            } else {
                f64::INFINITY
            };
            *slot = (bound, cell.load(Ordering::Relaxed));
        }
        // Count as the sum of the buckets read, so a scrape racing an observation stays
        // self-consistent (count == +Inf bucket).
        let count = buckets.iter().map(|b| b.1).sum();
        let sum = cells.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

fn latency_histogram() -> Histogram {
    Histogram::default()
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
    pub fn record(&self, status: u16, latency: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        if let Some(c) = self.by_class.get(class) {
            c.inc();
        }
        self.latency.observe(latency);
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
            r.record(entry.status(), entry.duration());
        }
        for (i, latency, outcome) in entry.authz_outcomes() {
            let Some(p) = self.providers.get(*i) else { continue };
            p.latency.observe(*latency);
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
                    // An unbuildable check fails closed even with failOpen (see the pipeline).
                    if other != "invalid"
                        && other != "unbuildable"
                        && snap.config.providers.get(*i).is_some_and(|c| c.fail_open)
                    {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_upper_bounds() {
        assert_eq!(bucket_index(0), 0);
        assert_eq!(bucket_index(100_000), 0);
        assert_eq!(bucket_index(100_001), 1);
        assert_eq!(bucket_index(200_000), 1);
        assert_eq!(bucket_index(200_001), 2);
        assert_eq!(bucket_index(FIRST_BOUND_NANOS << 17), 17);
        assert_eq!(bucket_index((FIRST_BOUND_NANOS << 17) + 1), BUCKETS);
        assert_eq!(bucket_index(u64::MAX), BUCKETS);
    }

    #[test]
    fn scrape_is_cumulative_with_inf() {
        let m = Metrics::default();
        let r = m.route("r");
        r.record(200, Duration::from_micros(50));
        r.record(200, Duration::from_micros(150));
        r.record(503, Duration::from_secs(60));
        let text = m.encode();
        assert!(
            text.contains("authgate_downstream_rq_duration_seconds_count{route=\"r\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("authgate_downstream_rq_duration_seconds_bucket{le=\"0.0001\",route=\"r\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("authgate_downstream_rq_duration_seconds_bucket{le=\"0.0002\",route=\"r\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("authgate_downstream_rq_duration_seconds_bucket{le=\"+Inf\",route=\"r\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("authgate_downstream_rq_duration_seconds_sum{route=\"r\"} 60.0002"),
            "{text}"
        );
    }
}
