//! Keep-alive connections to one origin endpoint, on hyper's connection API
//! (`hyper::client::conn::{http1, http2}`), without the general client's per-request machinery.
//!
//! - HTTP/1.1: a stack of idle connections. A request takes the most recently used one that is
//!   ready (or makes a new one); the connection goes back when the response body has been read
//!   to its end ([`PooledBody`]) and the request body has been sent whole. A body dropped
//!   before its end takes the connection with it: it is closed, never reused mid-body. A
//!   response that ends before its request body was sent (an early 200 or 413 to an upload)
//!   closes the connection and stops the upload there ([`GuardedBody`]): the rest of the body
//!   would otherwise reach the server as bytes after a complete exchange, which it reads as
//!   the next request (smuggling). An upgraded connection (101) is never reused.
//! - HTTP/2: one connection shared by every request (multiplexed), made again when it closes.
//!
//! A request is retried on another connection only when hyper hands it back unsent (the pooled
//! connection had closed before the request was written) and the connection was a reused one,
//! as hyper-util's legacy client does with `retry_canceled_requests`: a request that may have
//! reached the server is never sent twice.
//!
//! Idle connections expire after [`Config::idle_timeout`]: checked when a request takes one,
//! and by one sweep per half timeout (a single task per pool, started with its first
//! connection; it ends when the pool is dropped). No per-request task, timer or allocation
//! beyond hyper's own.

use std::error::Error as StdError;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use atomic_waker::AtomicWaker;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Parts;
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::rt::{Read, Write};
use hyper_util::rt::TokioExecutor;

pub type BoxError = Box<dyn StdError + Send + Sync>;

/// The protocol spoken on every connection of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    /// Prior knowledge (h2c) or ALPN `h2` negotiated by the connector.
    Http2,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub protocol: Protocol,
    /// An idle HTTP/1 connection older than this is closed instead of reused.
    pub idle_timeout: Duration,
    /// Idle HTTP/1 connections kept; a connection finishing beyond this is closed.
    pub max_idle: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            protocol: Protocol::Http1,
            idle_timeout: Duration::from_secs(60),
            max_idle: 1024,
        }
    }
}

/// What went wrong, with the distinction a proxy needs: [`Error::is_connect`] means no
/// connection could be made (the request never left); otherwise the connection failed around
/// the request.
pub struct Error {
    kind: Kind,
    source: BoxError,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The connector failed (DNS, TCP, TLS, connect timeout).
    Connect,
    /// Connected, but the HTTP connection could not be set up on it.
    Handshake,
    /// A fresh connection closed before the request was written.
    Canceled,
    /// The request was (or may have been) sent, and no response head came back.
    Send,
    /// The server's response could not be parsed (bad status line, bad or conflicting
    /// `Content-Length`, not HTTP).
    Protocol,
}

impl Error {
    fn new(kind: Kind, source: impl Into<BoxError>) -> Self {
        Self {
            kind,
            source: source.into(),
        }
    }

    /// The connector failed: no connection was made, nothing was sent.
    pub fn is_connect(&self) -> bool {
        self.kind == Kind::Connect
    }

    /// The server answered with something that is not valid HTTP (a proxy's 502, Envoy's
    /// UPE), as opposed to closing or resetting the connection.
    pub fn is_protocol(&self) -> bool {
        self.kind == Kind::Protocol
    }

    /// The request was provably never written to a connection.
    pub fn is_unsent(&self) -> bool {
        matches!(self.kind, Kind::Connect | Kind::Handshake | Kind::Canceled)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            Kind::Connect => "upstream connect error",
            Kind::Handshake => "upstream connection setup failed",
            Kind::Canceled => "upstream connection closed before the request was sent",
            Kind::Send => "upstream request failed",
            Kind::Protocol => "upstream protocol error",
        })
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

/// Connections to one endpoint. `C` is a tower `Service<Uri>` connector (hyper-util's
/// `HttpConnector`, hyper-rustls's `HttpsConnector`, ...), called with the endpoint's URI.
pub struct Pool<C, B> {
    connector: C,
    /// `scheme://host:port` of the endpoint: what the connector is asked for.
    dst: Uri,
    protocol: Protocol,
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
    shared: Arc<Shared<B>>,
    /// The shared HTTP/2 connection and its generation (to forget only the one that failed).
    h2_current: Mutex<Option<(u64, http2::SendRequest<B>)>>,
    h2_generation: AtomicU64,
    /// One HTTP/2 connection attempt at a time; the others wait for it and share it.
    h2_connecting: tokio::sync::Mutex<()>,
    sweeping: AtomicBool,
}

struct Shared<B> {
    idle: Mutex<Vec<Idle<B>>>,
    idle_timeout: Duration,
    max_idle: usize,
}

struct Idle<B> {
    tx: http1::SendRequest<GuardedBody<B>>,
    since: Instant,
}

impl<B> Shared<B> {
    fn lock(&self) -> MutexGuard<'_, Vec<Idle<B>>> {
        // A panic while holding the lock cannot leave the Vec inconsistent: keep using it.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn expired(&self, idle: &Idle<B>, now: Instant) -> bool {
        now.saturating_duration_since(idle.since) >= self.idle_timeout
    }

    /// The most recently returned connection, unless it has been idle too long (then all are,
    /// and all are closed).
    fn take(&self, now: Instant) -> Option<http1::SendRequest<GuardedBody<B>>> {
        let mut idle = self.lock();
        let top = idle.pop()?;
        if !self.expired(&top, now) {
            return Some(top.tx);
        }
        let stale = std::mem::take(&mut *idle);
        drop(idle);
        // Closing happens outside the lock.
        drop(stale);
        None
    }

    /// A connection whose exchange is complete goes back on top of the stack.
    fn put(&self, tx: http1::SendRequest<GuardedBody<B>>) {
        if tx.is_closed() {
            return;
        }
        let since = Instant::now();
        let rejected = {
            let mut idle = self.lock();
            if idle.len() < self.max_idle {
                idle.push(Idle { tx, since });
                None
            } else {
                Some(tx)
            }
        };
        drop(rejected);
    }

    /// A connection still busy (see `checkout_h1`) goes under the others, to be tried last.
    fn put_under(&self, tx: http1::SendRequest<GuardedBody<B>>) {
        if tx.is_closed() {
            return;
        }
        let since = Instant::now();
        let rejected = {
            let mut idle = self.lock();
            if idle.len() < self.max_idle {
                idle.insert(0, Idle { tx, since });
                None
            } else {
                Some(tx)
            }
        };
        drop(rejected);
    }

    /// Closes expired and closed idle connections.
    fn sweep(&self, now: Instant) {
        let stale: Vec<Idle<B>> = {
            let mut idle = self.lock();
            if !idle.iter().any(|i| self.expired(i, now) || i.tx.is_closed()) {
                return;
            }
            let (keep, stale) = std::mem::take(&mut *idle)
                .into_iter()
                .partition(|i| !self.expired(i, now) && !i.tx.is_closed());
            *idle = keep;
            stale
        };
        drop(stale);
    }
}

impl<C, B> Pool<C, B> {
    /// A pool for the endpoint `dst` (`http://host:port` or `https://host:port`). Nothing is
    /// connected until the first request; no runtime is needed until then.
    pub fn new(connector: C, dst: Uri, config: &Config) -> Self {
        Self {
            connector,
            dst,
            protocol: config.protocol,
            h1: http1::Builder::new(),
            h2: http2::Builder::new(TokioExecutor::new()),
            shared: Arc::new(Shared {
                idle: Mutex::new(Vec::new()),
                idle_timeout: config.idle_timeout,
                max_idle: config.max_idle,
            }),
            h2_current: Mutex::new(None),
            h2_generation: AtomicU64::new(0),
            h2_connecting: tokio::sync::Mutex::new(()),
            sweeping: AtomicBool::new(false),
        }
    }

    /// The endpoint this pool connects to.
    pub fn endpoint(&self) -> &Uri {
        &self.dst
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Idle HTTP/1 connections held right now (closed ones not yet noticed included).
    pub fn idle_count(&self) -> usize {
        self.shared.lock().len()
    }

    fn cached_h2(&self) -> Option<(u64, http2::SendRequest<B>)> {
        let guard = self.h2_current.lock().ok()?;
        guard
            .as_ref()
            .filter(|(_, s)| !s.is_closed())
            .map(|(g, s)| (*g, s.clone()))
    }

    /// Forgets the shared HTTP/2 connection if it is still generation `generation`.
    fn forget_h2(&self, generation: u64) {
        let old = match self.h2_current.lock() {
            Ok(mut guard) if guard.as_ref().is_some_and(|(g, _)| *g == generation) => guard.take(),
            _ => None,
        };
        drop(old);
    }
}

impl<C, B> Pool<C, B>
where
    C: tower_service::Service<Uri> + Clone + Send + Sync + 'static,
    C::Response: Read + Write + Unpin + Send + 'static,
    C::Error: Into<BoxError>,
    C::Future: Send,
    B: Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// Sends `req` on a pooled connection (or a new one) and returns the response head; the
    /// body streams from the connection, which is reused once the body has been read to its
    /// end.
    ///
    /// HTTP/1: an absolute-form URI is sent in origin form (authority form for CONNECT); the
    /// `Host` header is sent as the request has it (none is added). HTTP/2: the URI is sent
    /// as it is (`:scheme`/`:authority` come from it).
    pub async fn send(&self, mut req: Request<B>) -> Result<Response<PooledBody<B>>, Error> {
        match self.protocol {
            Protocol::Http1 => {
                request_target_h1(&mut req);
                self.send_h1(req.map(GuardedBody::new)).await
            }
            Protocol::Http2 => self.send_h2(req).await,
        }
    }

    async fn send_h1(&self, mut req: Request<GuardedBody<B>>) -> Result<Response<PooledBody<B>>, Error> {
        loop {
            let (mut tx, reused) = match self.checkout_h1().await {
                Some(tx) => (tx, true),
                None => (Box::pin(self.connect_h1()).await?, false),
            };
            let exchange = req.body().exchange.clone();
            match tx.try_send_request(req).await {
                Ok(resp) => return Ok(self.h1_response(resp, tx, exchange)),
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => {
                        tracing::trace!(error = %e.error(), "pooled connection closed; request not sent, retrying");
                        req = unsent;
                    }
                    Some(_) => return Err(Error::new(Kind::Canceled, e.into_error())),
                    None => {
                        let kind = if e.error().is_parse() {
                            Kind::Protocol
                        } else {
                            Kind::Send
                        };
                        return Err(Error::new(kind, e.into_error()));
                    }
                },
            }
        }
    }

    /// An idle connection ready for a request, or `None` (then a new one is made).
    async fn checkout_h1(&self) -> Option<http1::SendRequest<GuardedBody<B>>> {
        let now = Instant::now();
        let mut busy = None;
        let found = loop {
            let Some(mut tx) = self.shared.take(now) else {
                break None;
            };
            match poll_ready_now(&mut tx).await {
                Poll::Ready(Ok(())) => break Some(tx),
                Poll::Ready(Err(_)) => continue,
                Poll::Pending => {}
            }
            // Returned at the end of its response body, but its connection has not polled
            // for the next request yet: usually a moment away, so let it run once.
            tokio::task::yield_now().await;
            match poll_ready_now(&mut tx).await {
                Poll::Ready(Ok(())) => break Some(tx),
                Poll::Ready(Err(_)) => continue,
                // Still busy: its last request bytes are still being flushed (a connection is
                // pooled only once its request body has been read whole). Set aside (a
                // second such one is let go) and tried again later.
                Poll::Pending if busy.is_none() => busy = Some(tx),
                Poll::Pending => {}
            }
        };
        if let Some(tx) = busy {
            self.shared.put_under(tx);
        }
        found
    }

    async fn connect(&self) -> Result<C::Response, Error> {
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(|e| Error::new(Kind::Connect, e))?;
        connector
            .call(self.dst.clone())
            .await
            .map_err(|e| Error::new(Kind::Connect, e))
    }

    async fn connect_h1(&self) -> Result<http1::SendRequest<GuardedBody<B>>, Error> {
        let io = self.connect().await?;
        let (mut tx, conn) = self
            .h1
            .handshake(io)
            .await
            .map_err(|e| Error::new(Kind::Handshake, e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream HTTP/1 connection closed with an error");
            }
        });
        self.start_sweeper();
        tx.ready().await.map_err(|e| Error::new(Kind::Handshake, e))?;
        Ok(tx)
    }

    fn h1_response(
        &self,
        resp: Response<Incoming>,
        tx: http1::SendRequest<GuardedBody<B>>,
        exchange: Option<Arc<Exchange>>,
    ) -> Response<PooledBody<B>> {
        let (parts, inner) = resp.into_parts();
        let early = exchange
            .as_ref()
            .is_some_and(|e| !e.request_done.load(Ordering::Acquire));
        let conn = Return {
            tx,
            shared: Arc::clone(&self.shared),
            exchange,
        };
        let conn = if parts.status == StatusCode::SWITCHING_PROTOCOLS {
            // The connection now belongs to the upgrade (the request body, if any, with it).
            drop(conn);
            None
        } else if inner.is_end_stream() {
            // No body to wait for (HEAD, 204, 304, `content-length: 0`).
            conn.finish();
            None
        } else {
            Some(conn)
        };
        Response::from_parts(parts, PooledBody { inner, conn, early })
    }

    fn start_sweeper(&self) {
        if self.sweeping.swap(true, Ordering::Relaxed) {
            return;
        }
        let shared = Arc::downgrade(&self.shared);
        let period = (self.shared.idle_timeout / 2).max(Duration::from_secs(1));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(shared) = shared.upgrade() else { break };
                shared.sweep(Instant::now());
            }
        });
    }

    async fn send_h2(&self, mut req: Request<B>) -> Result<Response<PooledBody<B>>, Error> {
        loop {
            let (generation, mut tx, reused) = match self.cached_h2() {
                Some((g, tx)) => (g, tx, true),
                None => Box::pin(self.connect_h2()).await?,
            };
            match tx.try_send_request(req).await {
                Ok(resp) => {
                    return Ok(resp.map(|inner| PooledBody {
                        inner,
                        conn: None,
                        early: false,
                    }));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => {
                        tracing::trace!(error = %e.error(), "HTTP/2 connection unusable; request not sent, retrying");
                        // The next attempt makes a new connection (and is not retried).
                        self.forget_h2(generation);
                        req = unsent;
                    }
                    Some(_) => {
                        self.forget_h2(generation);
                        return Err(Error::new(Kind::Canceled, e.into_error()));
                    }
                    None => return Err(Error::new(Kind::Send, e.into_error())),
                },
            }
        }
    }

    /// The shared connection: made here, or by a concurrent request this one waited for.
    async fn connect_h2(&self) -> Result<(u64, http2::SendRequest<B>, bool), Error> {
        let _one = self.h2_connecting.lock().await;
        if let Some((g, tx)) = self.cached_h2() {
            return Ok((g, tx, true));
        }
        let io = self.connect().await?;
        let (mut tx, conn) = self
            .h2
            .handshake(io)
            .await
            .map_err(|e| Error::new(Kind::Handshake, e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream HTTP/2 connection closed with an error");
            }
        });
        tx.ready().await.map_err(|e| Error::new(Kind::Handshake, e))?;
        let generation = self.h2_generation.fetch_add(1, Ordering::Relaxed);
        let old = self
            .h2_current
            .lock()
            .ok()
            .and_then(|mut guard| guard.replace((generation, tx.clone())));
        drop(old);
        Ok((generation, tx, false))
    }
}

/// One poll of the connection's readiness, with this task's context.
async fn poll_ready_now<B>(tx: &mut http1::SendRequest<B>) -> Poll<hyper::Result<()>> {
    std::future::poll_fn(|cx| Poll::Ready(tx.poll_ready(cx))).await
}

/// HTTP/1 request target: origin form (`/path?query`), authority form for CONNECT, as
/// hyper-util's client sends them to a non-proxy.
fn request_target_h1<B>(req: &mut Request<B>) {
    let connect = req.method() == Method::CONNECT;
    let uri = req.uri_mut();
    if uri.scheme().is_none() && uri.authority().is_none() {
        return;
    }
    let parts = std::mem::take(uri).into_parts();
    let mut target = Parts::default();
    if connect {
        target.authority = parts.authority;
    } else {
        match parts.path_and_query {
            Some(pq) if pq.as_str() != "/" => target.path_and_query = Some(pq),
            // `Uri::default()` is "/".
            _ => return,
        }
    }
    *uri = Uri::from_parts(target).unwrap_or_default();
}

/// A response body. For HTTP/1 it holds the connection's sender and returns it to the pool
/// when the body has been read to its end; dropped before that, the connection is closed.
pub struct PooledBody<B> {
    inner: Incoming,
    conn: Option<Return<B>>,
    /// The head came before the request body was sent whole.
    early: bool,
}

/// An HTTP/1 connection in the middle of an exchange.
struct Return<B> {
    tx: http1::SendRequest<GuardedBody<B>>,
    shared: Arc<Shared<B>>,
    /// Shared with the request body while it may still be streaming.
    exchange: Option<Arc<Exchange>>,
}

impl<B> Return<B> {
    /// The response is complete: the connection goes back to the pool if the request body
    /// was sent whole; otherwise the upload is cut off and the connection closed.
    fn finish(self) {
        match self.exchange {
            Some(exchange) if !exchange.request_done.load(Ordering::Acquire) => exchange.abandon(),
            _ => self.shared.put(self.tx),
        }
    }
}

impl<B> Drop for PooledBody<B> {
    /// Dropped before the response ended: the connection closes with the sender, and a request
    /// body still streaming into it stops.
    fn drop(&mut self) {
        if let Some(exchange) = self.conn.as_ref().and_then(|c| c.exchange.as_ref()) {
            exchange.abandon();
        }
    }
}

impl<B> PooledBody<B> {
    /// HTTP/1: the response head arrived before the request body was sent whole (an early
    /// answer to an upload). The rest of the upload will not be forwarded, so the client's
    /// connection should close after this response (Envoy adds `connection: close`).
    pub fn request_unfinished(&self) -> bool {
        self.early
    }

    fn release(&mut self) {
        if let Some(r) = self.conn.take() {
            r.finish();
        }
    }
}

/// The state one HTTP/1 request body shares with its response.
struct Exchange {
    /// The request body has yielded its last frame.
    request_done: AtomicBool,
    /// The response ended (or was dropped) first: the body must stop.
    abandoned: AtomicBool,
    /// The connection task polling the request body, to wake it when abandoned.
    waker: AtomicWaker,
}

impl Exchange {
    fn abandon(&self) {
        self.abandoned.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// A request body on its way to an HTTP/1 server. It records when it has been read whole, and
/// fails (which makes hyper close the connection) once the response has ended without it: the
/// rest of the body is then never written to a connection whose exchange is over.
pub struct GuardedBody<B> {
    inner: B,
    /// `None` for a body that was empty from the start (nothing can follow the response).
    exchange: Option<Arc<Exchange>>,
}

impl<B: Body> GuardedBody<B> {
    fn new(inner: B) -> Self {
        let exchange = (!inner.is_end_stream()).then(|| {
            Arc::new(Exchange {
                request_done: AtomicBool::new(false),
                abandoned: AtomicBool::new(false),
                waker: AtomicWaker::new(),
            })
        });
        Self { inner, exchange }
    }
}

impl<B> Drop for GuardedBody<B> {
    /// hyper drops a request body once it has written all of it (all `Content-Length` bytes,
    /// or the trailers), even when the body itself has not yet seen its end (an HTTP/2
    /// client's END_STREAM arriving in a later, empty frame). A body dropped after it was cut
    /// off, or with its connection failing, leaves nothing to reuse either way: `put` skips
    /// closed connections and a failed one is never ready again.
    fn drop(&mut self) {
        if let Some(exchange) = &self.exchange
            && !exchange.abandoned.load(Ordering::Acquire)
        {
            exchange.request_done.store(true, Ordering::Release);
        }
    }
}

/// The response ended before the request body was sent whole.
#[derive(Debug)]
struct ResponseCompletedFirst;

impl fmt::Display for ResponseCompletedFirst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the response ended before the request body was sent; connection closed")
    }
}

impl StdError for ResponseCompletedFirst {}

impl<B> Body for GuardedBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let this = &mut *self;
        let Some(exchange) = &this.exchange else {
            return Pin::new(&mut this.inner).poll_frame(cx).map_err(Into::into);
        };
        // Registered before the check, so an `abandon` in between still wakes this task.
        exchange.waker.register(cx.waker());
        if exchange.abandoned.load(Ordering::Acquire) {
            return Poll::Ready(Some(Err(Box::new(ResponseCompletedFirst))));
        }
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        let last = match &frame {
            None => true,
            // Trailers end a body; hyper drops it after writing them, without polling again.
            Some(Ok(f)) => f.is_trailers() || this.inner.is_end_stream(),
            Some(Err(_)) => false,
        };
        if last {
            exchange.request_done.store(true, Ordering::Release);
        } else if let Some(Err(_)) = &frame {
            // The upload failed: hyper closes the connection; nothing may reuse it.
            exchange.abandoned.store(true, Ordering::Release);
        }
        Poll::Ready(frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> fmt::Debug for PooledBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledBody")
            .field("inner", &self.inner)
            .field("pooled", &self.conn.is_some())
            .finish()
    }
}

impl<B> Body for PooledBody<B> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            None => this.release(),
            // Callers may stop at `is_end_stream` without polling for the end.
            Some(Ok(_)) if this.inner.is_end_stream() => this.release(),
            Some(Ok(_)) => {}
            Some(Err(_)) => this.conn = None,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
