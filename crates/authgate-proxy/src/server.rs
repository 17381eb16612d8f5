//! Listeners and connections: accept, serve HTTP/1.1 and h2c with hyper, drain on shutdown.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use authgate_config::AccessLogFormat;
use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::access_log::LogEntry;
use crate::metrics::Metrics;
use crate::pipeline::{ConnInfo, handle};
use crate::snapshot::Snapshot;

/// Limits applied to every downstream connection.
const MAX_REQUEST_HEADER_BYTES: usize = 60 * 1024;
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Period of the timer kept pending by [`timer_anchor`]; deadlines longer than this register
/// without waking the runtime's I/O driver.
const TIMER_ANCHOR_PERIOD: Duration = Duration::from_secs(1);

/// State shared by every connection of a gateway.
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    pub metrics: Metrics,
    /// Set once shutdown starts: `/ready` then answers 503.
    pub draining: std::sync::atomic::AtomicBool,
    access_log: crate::access_log::LogSink,
    stream_ids: AtomicU64,
    request_id_seed: u64,
}

impl Shared {
    pub fn next_stream_id(&self) -> u64 {
        self.stream_ids.fetch_add(1, Ordering::Relaxed)
    }

    /// A UUID-v4-shaped request id, unique per process (seeded at start, then a counter mixed
    /// through splitmix64 so ids are not guessable from one another at a glance).
    pub fn request_id(&self) -> HeaderValue {
        let n = self.stream_ids.load(Ordering::Relaxed);
        let a = splitmix64(self.request_id_seed ^ n);
        let b = splitmix64(a ^ 0x9e37_79b9_7f4a_7c15);
        // xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx written straight into a stack buffer.
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 36];
        let mut put = |range: std::ops::Range<usize>, mut v: u64| {
            for i in range.rev() {
                out[i] = HEX[(v & 0xf) as usize];
                v >>= 4;
            }
        };
        put(0..8, a >> 32);
        put(9..13, (a >> 16) & 0xffff);
        put(15..18, a & 0x0fff);
        put(19..23, (b >> 48) & 0x3fff | 0x8000);
        put(24..36, b & 0xffff_ffff_ffff);
        out[8] = b'-';
        out[13] = b'-';
        out[14] = b'4';
        out[18] = b'-';
        out[23] = b'-';
        HeaderValue::from_bytes(&out).unwrap_or(HeaderValue::from_static("-"))
    }

    pub fn log(&self, entry: &LogEntry, snap: &Snapshot) {
        snap.metrics.record(entry, snap);
        let line = match snap.config.access_log {
            AccessLogFormat::Off => return,
            AccessLogFormat::Text => entry.text(snap),
            AccessLogFormat::Json => entry.json(snap),
        };
        self.access_log.write(line);
    }
}

/// Keeps one timer of at most [`TIMER_ANCHOR_PERIOD`] pending for the gateway's lifetime.
///
/// Tokio's time driver wakes the I/O driver (an 8-byte `write` to its eventfd, then an extra
/// `epoll_wait` round) whenever a timer is registered that expires before the wake-up recorded
/// when the driver last parked — and with no timer pending, that is every timer. On a quiet
/// connection each request's deadlines (route timeout, check timeout) would pay those two
/// syscalls; `strace` showed the `write` on every request. With the anchor pending, the
/// recorded wake-up is at most one period away, so longer deadlines register silently.
async fn timer_anchor(shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(TIMER_ANCHOR_PERIOD) => {}
        }
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A running gateway: its listeners, its current snapshot, and how to stop it.
pub struct Gateway {
    shared: Arc<Shared>,
    addrs: Vec<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

impl Gateway {
    /// Binds every listener of the snapshot's config and starts serving.
    pub async fn start(mut snapshot: Snapshot) -> io::Result<Self> {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32);
        let listeners = snapshot.config.listeners.clone();
        let admin = snapshot.config.admin;
        let metrics = Metrics::default();
        snapshot.attach_metrics(&metrics);
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            metrics,
            draining: std::sync::atomic::AtomicBool::new(false),
            access_log: crate::access_log::LogSink::stdout(),
            stream_ids: AtomicU64::new(1),
            request_id_seed: seed,
        });
        let shutdown = CancellationToken::new();
        tokio::spawn(timer_anchor(shutdown.clone()));
        let mut tasks = JoinSet::new();
        let mut addrs = Vec::new();
        for (index, l) in listeners.iter().enumerate() {
            let listener = TcpListener::bind(l.address)
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("listener {} ({}): {e}", l.name, l.address)))?;
            addrs.push(listener.local_addr()?);
            tasks.spawn(accept_loop(listener, index, shared.clone(), shutdown.clone()));
        }
        let admin_addr = match admin {
            Some(a) => {
                let listener = TcpListener::bind(a)
                    .await
                    .map_err(|e| io::Error::new(e.kind(), format!("admin listener ({a}): {e}")))?;
                let bound = listener.local_addr()?;
                tokio::spawn(crate::admin::serve(listener, shared.clone(), shutdown.clone()));
                Some(bound)
            }
            None => None,
        };
        Ok(Self {
            shared,
            addrs,
            admin_addr,
            shutdown,
            tasks,
        })
    }

    /// The admin listener's bound address, if enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Counts a reload that was refused (the old snapshot keeps serving).
    pub fn reload_rejected(&self) {
        self.shared.metrics.reload_failed.inc();
    }

    /// Bound addresses, in config order (ports resolved when the config said `:0`).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Swaps in a new snapshot; requests in flight finish on the one they started with.
    pub fn reload(&self, mut snapshot: Snapshot) {
        let current = self.shared.snapshot.load();
        let bound = |c: &authgate_config::Config| {
            c.listeners
                .iter()
                .map(|l| (l.name.clone(), l.address, l.tls.is_some()))
                .collect::<Vec<_>>()
        };
        if bound(&current.config) != bound(&snapshot.config) || current.config.admin != snapshot.config.admin
        {
            // Sockets stay as bound at start; everything else (routes, policies, providers,
            // backends, TLS-free settings) takes effect now.
            tracing::warn!("listener or admin address changes take effect only after a restart");
        }
        snapshot.attach_metrics(&self.shared.metrics);
        self.shared.snapshot.store(Arc::new(snapshot));
        self.shared.metrics.reload_ok.inc();
    }

    /// Stops accepting, lets in-flight requests finish for at most `drain`, then returns.
    pub async fn shutdown(mut self, drain: Duration) {
        self.shared.draining.store(true, Ordering::Relaxed);
        self.shutdown.cancel();
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(drain, all).await.is_err() {
            tracing::warn!("drain deadline reached; closing remaining connections");
            self.tasks.abort_all();
        }
        // The last requests' log lines reach stdout before the process exits.
        let shared = self.shared.clone();
        let _ = tokio::task::spawn_blocking(move || shared.access_log.flush(Duration::from_secs(1))).await;
    }

    /// Resolves when shutdown was requested.
    pub fn cancelled(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.shutdown.cancelled()
    }
}

async fn accept_loop(listener: TcpListener, index: usize, shared: Arc<Shared>, shutdown: CancellationToken) {
    let connections = tokio_util::task::TaskTracker::new();
    // What this socket was bound as; reloads are matched to it by name and address, never by
    // position in the listener list.
    let (spec, initial_tls) = {
        let snap = shared.snapshot.load();
        let spec = snap
            .config
            .listeners
            .get(index)
            .map(|l| (l.name.clone(), l.address));
        (spec, snap.tls.get(index).cloned().flatten())
    };
    let local = listener.local_addr().ok();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().ok().or(local).unwrap_or(peer);
        let shared = shared.clone();
        let tls = current_tls(&shared, &spec, &initial_tls);
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            shared.metrics.cx_total.inc();
            shared.metrics.cx_active.inc();
            match tls {
                None => {
                    let flag = Arc::default();
                    let conn = ConnInfo {
                        framing_violation: Arc::clone(&flag),
                        peer_ip: peer_ip_header(peer),
                        peer,
                        local,
                        scheme: "http",
                        tls: None,
                    };
                    serve_connection(
                        crate::framing::Guarded::new(stream, flag),
                        conn,
                        &shared,
                        &shutdown,
                    )
                    .await;
                }
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            let info = crate::tls::session_info(tls_stream.get_ref().1);
                            let flag = Arc::default();
                            let conn = ConnInfo {
                                framing_violation: Arc::clone(&flag),
                                peer_ip: peer_ip_header(peer),
                                peer,
                                local,
                                scheme: "https",
                                tls: Some(info),
                            };
                            let io = crate::framing::Guarded::new(tls_stream, flag);
                            serve_connection(io, conn, &shared, &shutdown).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
            shared.metrics.cx_active.dec();
        });
    }
    // Stop accepting; connections finish their in-flight requests and close (h2: GOAWAY).
    drop(listener);
    connections.close();
    connections.wait().await;
}

async fn serve_connection<IO>(io: IO, conn: ConnInfo, shared: &Arc<Shared>, shutdown: &CancellationToken)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(conn);
    let shared = shared.clone();
    let service = service_fn(move |req| handle(req, conn.clone(), shared.clone()));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_REQUEST_HEADER_BYTES.max(8192));
    builder
        .http2()
        .max_header_list_size(MAX_REQUEST_HEADER_BYTES as u32)
        .timer(hyper_util::rt::TokioTimer::new());
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        r = connection.as_mut() => r,
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with error");
    }
}

/// The TLS acceptor for a new connection on the listener bound as `spec`: the current
/// snapshot's (so reloads rotate certificates), found by listener name and address. A socket
/// that started with TLS never falls back to plaintext, whatever a reload says.
fn current_tls(
    shared: &Shared,
    spec: &Option<(String, SocketAddr)>,
    initial: &Option<tokio_rustls::TlsAcceptor>,
) -> Option<tokio_rustls::TlsAcceptor> {
    let snap = shared.snapshot.load();
    let found = spec.as_ref().and_then(|(name, addr)| {
        snap.config
            .listeners
            .iter()
            .position(|l| &l.name == name && &l.address == addr)
    });
    match found.and_then(|i| snap.tls.get(i).cloned().flatten()) {
        Some(acceptor) => Some(acceptor),
        None => initial.clone(),
    }
}

fn peer_ip_header(peer: SocketAddr) -> HeaderValue {
    HeaderValue::from_str(&peer.ip().to_string()).unwrap_or(HeaderValue::from_static("-"))
}
