//! The accept loop shared by every server in this crate: hyper 1 over plain TCP, one task per
//! connection.

use std::error::Error as StdError;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::golog::golog;

type BoxError = Box<dyn StdError + Send + Sync>;

/// HTTP/1.1 and h2c (prior knowledge), keep-alive on.
pub(crate) fn http_builder() -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    // hyper enforces its header read timeout (against idle half-sent requests) only with a timer.
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    builder
}

/// h2c only: gRPC never speaks HTTP/1.
pub(crate) fn grpc_builder() -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new()).http2_only();
    // The gateway multiplexes every check onto few connections; hyper's default of 200 streams
    // would queue them at the client. (Go's gRPC server has no limit at all.)
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(4096);
    builder
}

/// Accepts connections until the returned future is dropped. The connection tasks live in a
/// `JoinSet` owned by this future, so dropping it closes them too: tests that stop a server
/// really stop it.
pub(crate) async fn serve<S, B>(
    listener: TcpListener,
    builder: Builder<TokioExecutor>,
    service: S,
) -> std::io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _peer)) => stream,
                    Err(err) => {
                        // Out of file descriptors or an aborted handshake: wait, don't spin.
                        golog!("http: Accept error: {err}; retrying in 50ms");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Small request/response exchanges: don't let Nagle delay them.
                let _ = stream.set_nodelay(true);
                let (builder, service) = (builder.clone(), service.clone());
                connections.spawn(async move {
                    // Errors (resets, garbage, timeouts) end only this connection.
                    let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                });
            }
            // Reap finished connections so the set doesn't grow without bound.
            Some(_) = connections.join_next() => {}
        }
    }
}
