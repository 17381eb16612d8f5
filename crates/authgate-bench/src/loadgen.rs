//! An HTTP load generator for side-by-side proxy benchmarks.
//!
//! - **Open loop** (`rate > 0`): every connection owns an interleaved slice of one evenly spaced
//!   schedule (connection `k` sends requests `k, k+C, k+2C, …`), so the generator offers exactly
//!   `rate` requests per second whatever the proxy does. A request that could not be sent on
//!   time because its connection was still busy is charged from its *intended* send time
//!   ([`crate::schedule::latency_start`]): a proxy that stalls shows it in p99/p99.9.
//! - **Closed loop** (`rate == 0`): every connection keeps `streams` requests in flight (one for
//!   HTTP/1.1), back to back: saturation throughput.
//!
//! HTTP/1.1 keep-alive (one request in flight per connection, reconnecting when the server
//! closes), h2c prior knowledge (`streams` concurrent streams per connection), either over TLS
//! (`https://`, rustls, ALPN `http/1.1` or `h2`).
//!
//! The run is `warmup` then `duration`: only requests *intended* inside the measured window land
//! in the histogram and status counts; `completed_in_window` counts responses that *finished*
//! inside it, which is what CPU time sampled at the window's edges pays for. The caller is told
//! when the window opens and closes ([`Phase`]) so it can sample `/proc` exactly there.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::schedule::{intended_offset, latency_start};

/// What to send, how hard and for how long.
#[derive(Clone)]
pub struct Spec {
    pub uri: Uri,
    pub method: Method,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Requests per second over all connections; `0.0` means closed loop.
    pub rate: f64,
    pub connections: usize,
    /// Requests in flight per connection (h2 streams); HTTP/1.1 always uses 1.
    pub streams: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// h2c prior knowledge (or ALPN `h2` over TLS) instead of HTTP/1.1.
    pub http2: bool,
    /// Required for `https://` URIs.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// A request not answered within this is an error (and its connection is replaced).
    pub request_timeout: Duration,
    /// Closed loop only: stop after this many requests in all (split evenly over the
    /// connections) instead of at the end of the window. For profiling runs that need an exact
    /// request count (`bench/profile`).
    pub max_requests: Option<u64>,
}

/// The measured window opening and closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    MeasureStart,
    MeasureEnd,
}

/// The outcome of a run. Latencies in microseconds.
#[derive(Debug, Clone)]
pub struct Report {
    pub offered_rps: f64,
    pub measured_seconds: f64,
    /// Requests intended inside the window that got a response (any status).
    pub responses: u64,
    /// Responses (intended anywhere) that finished inside the window.
    pub completed_in_window: u64,
    pub statuses: BTreeMap<u16, u64>,
    /// Transport errors and timeouts of requests intended inside the window.
    pub errors: u64,
    pub timeouts: u64,
    pub connects: u64,
    pub latency_us: Percentiles,
}

#[derive(Debug, Clone, Default)]
pub struct Percentiles {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Report {
    /// Responses finished per second inside the window.
    pub fn achieved_rps(&self) -> f64 {
        if self.measured_seconds > 0.0 {
            self.completed_in_window as f64 / self.measured_seconds
        } else {
            0.0
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        let statuses: serde_json::Map<String, serde_json::Value> = self
            .statuses
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        serde_json::json!({
            "offered_rps": self.offered_rps,
            "achieved_rps": self.achieved_rps(),
            "measured_seconds": self.measured_seconds,
            "responses": self.responses,
            "completed_in_window": self.completed_in_window,
            "statuses": statuses,
            "errors": self.errors,
            "timeouts": self.timeouts,
            "connects": self.connects,
            "latency_us": {
                "mean": self.latency_us.mean,
                "p50": self.latency_us.p50,
                "p90": self.latency_us.p90,
                "p99": self.latency_us.p99,
                "p999": self.latency_us.p999,
                "max": self.latency_us.max,
            },
        })
    }
}

/// Per-connection tallies, merged at the end.
struct Tally {
    hist: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
    responses: u64,
    completed_in_window: u64,
    errors: u64,
    timeouts: u64,
    connects: u64,
}

impl Tally {
    fn new() -> Self {
        Self {
            // 1 ns .. 100 s at 3 significant digits.
            hist: Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds"),
            statuses: BTreeMap::new(),
            responses: 0,
            completed_in_window: 0,
            errors: 0,
            timeouts: 0,
            connects: 0,
        }
    }

    fn merge(&mut self, other: Tally) {
        let _ = self.hist.add(&other.hist);
        for (k, v) in other.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        self.responses += other.responses;
        self.completed_in_window += other.completed_in_window;
        self.errors += other.errors;
        self.timeouts += other.timeouts;
        self.connects += other.connects;
    }
}

/// The window every request is judged against.
#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

impl Window {
    fn contains(&self, t: Instant) -> bool {
        t >= self.start && t < self.end
    }
}

enum Outcome {
    Status(u16),
    Error,
    Timeout,
}

/// One finished exchange.
struct Done {
    intended: Instant,
    start: Instant,
    finished: Instant,
    outcome: Outcome,
    /// HTTP/1.1: the connection, handed back if still usable.
    h1: Option<http1::SendRequest<Empty<Bytes>>>,
    connected: bool,
}

impl Tally {
    fn record(&mut self, done: &Done, window: Window) {
        if done.connected {
            self.connects += 1;
        }
        if window.contains(done.finished) && matches!(done.outcome, Outcome::Status(_)) {
            self.completed_in_window += 1;
        }
        if !window.contains(done.intended) {
            return;
        }
        match done.outcome {
            Outcome::Status(s) => {
                self.responses += 1;
                *self.statuses.entry(s).or_default() += 1;
                let ns = done.finished.saturating_duration_since(done.start).as_nanos();
                let _ = self.hist.record(u64::try_from(ns).unwrap_or(u64::MAX).max(1));
            }
            Outcome::Error => self.errors += 1,
            Outcome::Timeout => self.timeouts += 1,
        }
    }
}

type BoxIo = Pin<Box<dyn IoStream>>;
trait IoStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send> IoStream for T {}

/// Where and how to connect, shared by every connection.
struct Target {
    host: String,
    port: u16,
    tls: Option<(tokio_rustls::TlsConnector, rustls_pki_types::ServerName<'static>)>,
}

impl Target {
    fn new(spec: &Spec) -> Result<Self> {
        let host = spec.uri.host().context("the URL has no host")?.to_owned();
        let https = match spec.uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            other => bail!("unsupported scheme {other:?}"),
        };
        let port = spec.uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let cfg = spec
                .tls
                .clone()
                .context("https:// needs a TLS client configuration")?;
            let name = rustls_pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
                .map_err(|e| anyhow!("bad TLS server name {host}: {e}"))?;
            Some((tokio_rustls::TlsConnector::from(cfg), name))
        } else {
            None
        };
        Ok(Self { host, port, tls })
    }

    async fn io(&self) -> Result<BoxIo> {
        let tcp = TcpStream::connect((self.host.trim_matches(['[', ']']), self.port)).await?;
        tcp.set_nodelay(true)?;
        Ok(match &self.tls {
            None => Box::pin(tcp),
            Some((connector, name)) => Box::pin(connector.connect(name.clone(), tcp).await?),
        })
    }

    async fn h1(&self) -> Result<http1::SendRequest<Empty<Bytes>>> {
        let io = TokioIo::new(self.io().await?);
        let (sender, conn) = http1::handshake(io).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    async fn h2(&self) -> Result<http2::SendRequest<Empty<Bytes>>> {
        let io = TokioIo::new(self.io().await?);
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(1 << 20)
            .initial_connection_window_size(1 << 22)
            .handshake(io)
            .await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }
}

/// The request to send, prebuilt once.
#[derive(Clone)]
struct Template {
    method: Method,
    uri: Uri,
    headers: http::HeaderMap,
}

impl Template {
    fn new(spec: &Spec) -> Result<Self> {
        let mut headers = http::HeaderMap::new();
        let uri = if spec.http2 {
            spec.uri.clone()
        } else {
            let authority = spec.uri.authority().context("the URL has no authority")?;
            headers.insert(http::header::HOST, HeaderValue::from_str(authority.as_str())?);
            let pq = spec.uri.path_and_query().map_or("/", |p| p.as_str());
            pq.parse()?
        };
        for (k, v) in &spec.headers {
            headers.append(k.clone(), v.clone());
        }
        Ok(Self {
            method: spec.method.clone(),
            uri,
            headers,
        })
    }

    fn build(&self) -> Request<Empty<Bytes>> {
        let mut req = Request::new(Empty::new());
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        if self.uri.scheme().is_some() {
            *req.version_mut() = http::Version::HTTP_2;
        }
        req
    }
}

async fn read_response(
    resp: std::result::Result<http::Response<hyper::body::Incoming>, hyper::Error>,
) -> Result<u16> {
    let resp = resp?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        frame?;
    }
    Ok(status)
}

type DoneFuture = Pin<Box<dyn Future<Output = Done> + Send>>;

/// One HTTP/1.1 exchange on `sender` (connecting first when there is none or it closed).
fn h1_exchange(
    target: Arc<Target>,
    template: Arc<Template>,
    mut sender: Option<http1::SendRequest<Empty<Bytes>>>,
    intended: Instant,
    start: Instant,
    timeout: Duration,
) -> DoneFuture {
    Box::pin(async move {
        let mut connected = false;
        let work = async {
            if let Some(s) = sender.as_mut()
                && s.ready().await.is_err()
            {
                sender = None;
            }
            let s = match sender.as_mut() {
                Some(s) => s,
                None => {
                    connected = true;
                    sender.insert(target.h1().await?)
                }
            };
            read_response(s.send_request(template.build()).await).await
        };
        let outcome = match tokio::time::timeout(timeout, work).await {
            Ok(Ok(status)) => Outcome::Status(status),
            Ok(Err(_)) => Outcome::Error,
            Err(_) => Outcome::Timeout,
        };
        let keep = matches!(outcome, Outcome::Status(_));
        Done {
            intended,
            start,
            finished: Instant::now(),
            outcome,
            h1: if keep { sender } else { None },
            connected,
        }
    })
}

/// One h2 stream on a clone of `sender`.
fn h2_exchange(
    mut sender: http2::SendRequest<Empty<Bytes>>,
    template: Arc<Template>,
    intended: Instant,
    start: Instant,
    timeout: Duration,
) -> DoneFuture {
    Box::pin(async move {
        let work = async {
            sender.ready().await?;
            read_response(sender.send_request(template.build()).await).await
        };
        let outcome = match tokio::time::timeout(timeout, work).await {
            Ok(Ok(status)) => Outcome::Status(status),
            Ok(Err(_)) => Outcome::Error,
            Err(_) => Outcome::Timeout,
        };
        Done {
            intended,
            start,
            finished: Instant::now(),
            outcome,
            h1: None,
            connected: false,
        }
    })
}

enum Conn {
    H1(Option<http1::SendRequest<Empty<Bytes>>>),
    H2(Option<http2::SendRequest<Empty<Bytes>>>),
}

#[allow(clippy::too_many_arguments)]
async fn connection(
    k: usize,
    spec: Arc<Spec>,
    target: Arc<Target>,
    template: Arc<Template>,
    mut conn: Conn,
    t0: Instant,
    window: Window,
) -> Tally {
    let mut tally = Tally::new();
    tally.connects += 1;
    // Everyone starts together, at t0 (the start of the warm-up).
    tokio::time::sleep_until(t0).await;
    let open = spec.rate > 0.0;
    let streams = if spec.http2 { spec.streams.max(1) } else { 1 };
    // This connection's share of `max_requests` (the first `rem` connections take one more).
    let quota = spec.max_requests.filter(|_| !open).map(|n| {
        let c = spec.connections as u64;
        n / c + u64::from((k as u64) < n % c)
    });
    let mut inflight: FuturesUnordered<DoneFuture> = FuturesUnordered::new();
    let mut i: u64 = 0;
    loop {
        if quota.is_some_and(|q| i >= q) {
            break;
        }
        let intended_at = if open {
            let t = t0 + intended_offset(spec.rate, spec.connections, k, i);
            if t >= window.end {
                break;
            }
            Some(t)
        } else {
            None
        };
        // Wait for the intended time (open loop) and for a free slot.
        let mut waited_for_timer = false;
        loop {
            let free = inflight.len() < streams;
            let due = waited_for_timer || intended_at.is_none_or(|t| Instant::now() >= t);
            if free && due {
                break;
            }
            let sleep_until = intended_at.unwrap_or(window.end);
            tokio::select! {
                biased;
                Some(mut done) = inflight.next(), if !inflight.is_empty() => {
                    if let (Conn::H1(slot), Some(s)) = (&mut conn, done.h1.take()) {
                        *slot = Some(s);
                    }
                    tally.record(&done, window);
                }
                () = tokio::time::sleep_until(sleep_until), if free => {
                    waited_for_timer = true;
                }
            }
        }
        let now = Instant::now();
        if !open && quota.is_none() && now >= window.end {
            break;
        }
        let intended = intended_at.unwrap_or(now);
        let start = latency_start(waited_for_timer, intended, now);
        let fut = match &mut conn {
            Conn::H1(slot) => h1_exchange(
                target.clone(),
                template.clone(),
                slot.take(),
                intended,
                start,
                spec.request_timeout,
            ),
            Conn::H2(slot) => {
                if slot.as_ref().is_none_or(|s| s.is_closed()) {
                    *slot = match target.h2().await {
                        Ok(s) => {
                            tally.connects += 1;
                            Some(s)
                        }
                        Err(_) => None,
                    };
                }
                match slot {
                    Some(s) => {
                        h2_exchange(s.clone(), template.clone(), intended, start, spec.request_timeout)
                    }
                    None => {
                        // Could not connect: count it and pace ourselves.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        Box::pin(std::future::ready(Done {
                            intended,
                            start,
                            finished: Instant::now(),
                            outcome: Outcome::Error,
                            h1: None,
                            connected: false,
                        }))
                    }
                }
            }
        };
        inflight.push(fut);
        i += 1;
    }
    // Drain what is still in flight (bounded by each request's own timeout).
    while let Some(done) = inflight.next().await {
        tally.record(&done, window);
    }
    tally
}

/// Runs the load; `on_phase` is called (from the runtime thread) when the window opens and
/// closes. Must run inside a tokio runtime (a current-thread one is enough and is what the
/// binary uses, so the generator takes exactly one CPU).
pub async fn run(spec: Spec, on_phase: impl Fn(Phase) + Send + 'static) -> Result<Report> {
    if spec.connections == 0 {
        bail!("--connections must be at least 1");
    }
    if !(spec.rate >= 0.0 && spec.rate.is_finite()) {
        bail!("--rate must be a non-negative number");
    }
    let target = Arc::new(Target::new(&spec)?);
    let template = Arc::new(Template::new(&spec)?);
    // Connect everything before the clock starts.
    let mut conns = Vec::with_capacity(spec.connections);
    for _ in 0..spec.connections {
        let conn = if spec.http2 {
            Conn::H2(Some(target.h2().await.context("connect (h2)")?))
        } else {
            Conn::H1(Some(target.h1().await.context("connect (HTTP/1.1)")?))
        };
        conns.push(conn);
    }
    let t0 = Instant::now() + Duration::from_millis(5);
    let window = Window {
        start: t0 + spec.warmup,
        end: t0 + spec.warmup + spec.duration,
    };
    let spec = Arc::new(spec);
    let marker = tokio::spawn(async move {
        tokio::time::sleep_until(window.start).await;
        on_phase(Phase::MeasureStart);
        tokio::time::sleep_until(window.end).await;
        on_phase(Phase::MeasureEnd);
    });
    let mut tasks = Vec::with_capacity(conns.len());
    for (k, conn) in conns.into_iter().enumerate() {
        tasks.push(tokio::spawn(connection(
            k,
            spec.clone(),
            target.clone(),
            template.clone(),
            conn,
            t0,
            window,
        )));
    }
    let mut total = Tally::new();
    total.connects = 0;
    for t in tasks {
        total.merge(t.await.context("connection task panicked")?);
    }
    if spec.max_requests.is_some() && spec.rate == 0.0 {
        // Done by count, not by the clock: the window markers are meaningless.
        marker.abort();
    } else {
        marker.await.context("marker task panicked")?;
    }
    let h = &total.hist;
    let us = |ns: u64| ns as f64 / 1000.0;
    let latency_us = if h.is_empty() {
        Percentiles::default()
    } else {
        Percentiles {
            mean: h.mean() / 1000.0,
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
        }
    };
    Ok(Report {
        offered_rps: spec.rate,
        measured_seconds: spec.duration.as_secs_f64(),
        responses: total.responses,
        completed_in_window: total.completed_in_window,
        statuses: total.statuses,
        errors: total.errors,
        timeouts: total.timeouts,
        connects: total.connects,
        latency_us,
    })
}
