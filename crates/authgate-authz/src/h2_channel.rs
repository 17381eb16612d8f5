//! A lean unary gRPC client over one multiplexed HTTP/2 connection: the check is a single
//! request/response, so the general machinery of a gRPC channel (request buffer task, tower
//! layers, streaming codecs) is cost without benefit on the hot path. The connection is made
//! lazily, shared by every check, and re-made when it closes.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use h2::client::SendRequest;
use http::{HeaderValue, Request, StatusCode, Uri, header};
use prost::Message;

use crate::CheckError;

/// Largest response message accepted (deny bodies can be whole HTML pages).
const MAX_RESPONSE: usize = 16 << 20;
/// A PING every this long on an idle-looking connection; no answer within the timeout closes it
/// (a half-open connection would otherwise turn every check into a timeout).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Receive windows (stream and connection): a large deny page arrives without a round trip of
/// WINDOW_UPDATEs.
const WINDOW: u32 = 1 << 20;
/// Streams opened on a new connection before the service's SETTINGS say how many it takes.
const INITIAL_MAX_STREAMS: usize = 100;

/// One HTTP/2 connection: the sender every check clones, and whether its task has ended.
#[derive(Clone)]
struct Conn {
    sender: SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
}

pub(crate) struct H2Channel {
    /// `host:port` to connect to.
    target: String,
    /// The request URI: `http://<authority><path>` (the authority is the provider's service).
    uri: Uri,
    /// `grpc-timeout` as Envoy sends it (fixed per provider); the caller enforces the deadline
    /// locally too.
    grpc_timeout: Option<HeaderValue>,
    current: Mutex<Option<Conn>>,
    connecting: tokio::sync::Mutex<()>,
}

impl H2Channel {
    pub(crate) fn new(target: String, uri: Uri, timeout: Duration) -> Self {
        Self {
            target,
            uri,
            grpc_timeout: (!timeout.is_zero()).then(|| grpc_timeout(timeout)),
            current: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    fn cached(&self) -> Option<Conn> {
        let guard = self.current.lock().ok()?;
        guard
            .as_ref()
            .filter(|c| !c.closed.load(Ordering::Acquire))
            .cloned()
    }

    /// Forgets `conn` if it is still the current connection: the next check makes a new one.
    fn forget(&self, conn: &Conn) {
        if let Ok(mut guard) = self.current.lock()
            && guard
                .as_ref()
                .is_some_and(|c| Arc::ptr_eq(&c.closed, &conn.closed))
        {
            *guard = None;
        }
    }

    async fn conn(&self) -> Result<Conn, CheckError> {
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        // One connection attempt at a time; the others wait for it and reuse it.
        let _one = self.connecting.lock().await;
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let stream = tokio::net::TcpStream::connect(&self.target).await.map_err(|e| {
            CheckError::Rpc(tonic::Code::Unavailable, format!("connect {}: {e}", self.target))
        })?;
        let _ = stream.set_nodelay(true);
        let (sender, mut connection) = h2::client::Builder::new()
            // Until the service's SETTINGS arrive, a burst on a new connection must not
            // exceed what any server accepts (h2's default is unlimited; nghttp2 in Envoy and
            // hyper use 100), or the excess is refused.
            .initial_max_send_streams(INITIAL_MAX_STREAMS)
            .initial_window_size(WINDOW)
            .initial_connection_window_size(WINDOW)
            .enable_push(false)
            .handshake::<_, Bytes>(stream)
            .await
            .map_err(|e| {
                CheckError::Rpc(
                    tonic::Code::Unavailable,
                    format!("HTTP/2 handshake with {}: {e}", self.target),
                )
            })?;
        let closed = Arc::new(AtomicBool::new(false));
        let ping_pong = connection.ping_pong();
        let task_closed = closed.clone();
        tokio::spawn(async move {
            let keepalive = async {
                let Some(mut ping_pong) = ping_pong else {
                    return std::future::pending::<()>().await;
                };
                loop {
                    tokio::time::sleep(KEEPALIVE_INTERVAL).await;
                    match tokio::time::timeout(KEEPALIVE_TIMEOUT, ping_pong.ping(h2::Ping::opaque())).await {
                        Ok(Ok(_)) => {}
                        _ => return,
                    }
                }
            };
            tokio::select! {
                r = &mut connection => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "ext_authz gRPC connection closed");
                    }
                }
                () = keepalive => tracing::debug!("ext_authz gRPC connection: keepalive PING unanswered; closing"),
            }
            task_closed.store(true, Ordering::Release);
        });
        let conn = Conn { sender, closed };
        if let Ok(mut guard) = self.current.lock() {
            *guard = Some(conn.clone());
        }
        Ok(conn)
    }

    /// A sender ready for one more stream. A connection that turns out to be gone (closed,
    /// GOAWAY) is replaced once: nothing was sent on it, so trying a fresh one is safe.
    async fn ready_sender(&self) -> Result<(Conn, SendRequest<Bytes>), CheckError> {
        let mut retried = false;
        loop {
            let conn = self.conn().await?;
            match conn.sender.clone().ready().await {
                Ok(sender) => return Ok((conn, sender)),
                Err(e) => {
                    self.forget(&conn);
                    if retried {
                        return Err(CheckError::Rpc(tonic::Code::Unavailable, e.to_string()));
                    }
                    retried = true;
                }
            }
        }
    }

    /// One unary call: `message` in (one gRPC length-prefixed message, uncompressed: the
    /// 5-byte prefix then the protobuf bytes, as
    /// [`encode_grpc_check_request`](crate::check_encode::encode_grpc_check_request) writes it),
    /// the decoded response out, or the error as Envoy counts it. The bytes are the request
    /// body as is: no copy.
    ///
    /// The HEADERS frame and the one DATA frame (with END_STREAM) are queued together before
    /// the connection task runs, so they leave in one write (hyper's client flushed them
    /// apart: two segments, two wake-ups of the service).
    pub(crate) async fn unary<Resp: Message + Default>(&self, message: Bytes) -> Result<Resp, CheckError> {
        let request = || {
            let mut req = Request::post(self.uri.clone())
                .header(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"))
                .header(header::TE, HeaderValue::from_static("trailers"));
            if let Some(t) = &self.grpc_timeout {
                req = req.header("grpc-timeout", t.clone());
            }
            req.body(()).map_err(|e| CheckError::Request(e.to_string()))
        };
        let unavailable = |e: h2::Error| CheckError::Rpc(tonic::Code::Unavailable, e.to_string());
        let mut attempts = 0;
        let resp = loop {
            attempts += 1;
            let (conn, mut sender) = self.ready_sender().await?;
            let (response, mut stream) = match sender.send_request(request()?, false) {
                Ok(r) => r,
                Err(e) => {
                    // The connection is unusable; the next check makes a new one.
                    self.forget(&conn);
                    return Err(unavailable(e));
                }
            };
            stream.send_data(message.clone(), true).map_err(unavailable)?;
            match response.await {
                Ok(r) => break r,
                // REFUSED_STREAM means the service did not process the stream at all
                // (RFC 9113 §8.7): sending it again is safe, once.
                Err(e) if e.reason() == Some(h2::Reason::REFUSED_STREAM) && attempts < 2 => {}
                Err(e) => {
                    if e.is_go_away() || e.is_io() {
                        self.forget(&conn);
                    }
                    return Err(unavailable(e));
                }
            }
        };
        let (parts, mut body) = resp.into_parts();
        if parts.status != StatusCode::OK {
            return Err(CheckError::Rpc(
                tonic::Code::Unavailable,
                format!("HTTP status {} from the gRPC service", parts.status),
            ));
        }
        // Trailers-only responses carry grpc-status in the headers.
        if let Some(status) = grpc_status(&parts.headers) {
            return Err(status);
        }
        let reading =
            |e: h2::Error| CheckError::Rpc(tonic::Code::Unavailable, format!("reading the response: {e}"));
        let mut data = Bytes::new();
        let mut more: Option<BytesMut> = None;
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(reading)?;
            let _ = body.flow_control().release_capacity(chunk.len());
            // `data` holds the first frame until a second arrives; from then on `more` holds all.
            let received = more.as_ref().map_or(data.len(), BytesMut::len);
            let total = received + chunk.len();
            if total > MAX_RESPONSE + 5 {
                return Err(CheckError::Rpc(
                    tonic::Code::Internal,
                    "response frame length is wrong or too large".into(),
                ));
            }
            // The usual answer is one DATA frame: kept as is, no copy.
            match &mut more {
                None if data.is_empty() => data = chunk,
                None => {
                    let mut buf = BytesMut::with_capacity(total);
                    buf.extend_from_slice(&data);
                    buf.extend_from_slice(&chunk);
                    more = Some(buf);
                }
                Some(buf) => buf.extend_from_slice(&chunk),
            }
        }
        if let Some(buf) = more {
            data = buf.freeze();
        }
        // A call succeeded only when its trailers say `grpc-status: 0`; no trailers, or
        // trailers without the status, is an error (Envoy: Unknown), never an allow.
        let trailers = body.trailers().await.map_err(reading)?;
        match trailers.as_ref() {
            Some(t) if t.contains_key(GRPC_STATUS) => {
                if let Some(status) = grpc_status(t) {
                    return Err(status);
                }
            }
            _ => {
                return Err(CheckError::Rpc(
                    tonic::Code::Unknown,
                    "response without grpc-status".into(),
                ));
            }
        }
        decode_message(data)
    }
}

/// `Some(error)` when the headers carry a non-zero `grpc-status`.
const GRPC_STATUS: &str = "grpc-status";

fn grpc_status(headers: &http::HeaderMap) -> Option<CheckError> {
    let code = headers.get(GRPC_STATUS)?;
    let code: i32 = code.to_str().ok().and_then(|c| c.parse().ok()).unwrap_or(2);
    if code == 0 {
        return None;
    }
    let message = headers
        .get("grpc-message")
        .map(|m| String::from_utf8_lossy(m.as_bytes()).into_owned())
        .unwrap_or_default();
    Some(CheckError::Rpc(tonic::Code::from(code), message))
}

fn decode_message<Resp: Message + Default>(mut data: Bytes) -> Result<Resp, CheckError> {
    let bad = |m: &str| CheckError::Rpc(tonic::Code::Internal, m.to_owned());
    if data.len() < 5 {
        return Err(bad("response shorter than a gRPC frame"));
    }
    if data.get_u8() != 0 {
        return Err(bad("compressed response (no grpc-encoding was offered)"));
    }
    let len = data.get_u32() as usize;
    if len > MAX_RESPONSE || len > data.len() {
        return Err(bad("response frame length is wrong or too large"));
    }
    Resp::decode(data.slice(..len)).map_err(|e| bad(&format!("decoding the response: {e}")))
}

/// gRPC's `TimeoutValue TimeoutUnit`: at most 8 digits.
fn grpc_timeout(t: Duration) -> HeaderValue {
    let ms = t.as_millis();
    let value = if ms < 100_000_000 {
        format!("{ms}m")
    } else {
        format!("{}S", t.as_secs().min(99_999_999))
    };
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("99999999S"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_header() {
        assert_eq!(grpc_timeout(Duration::from_millis(250)), "250m");
        assert_eq!(grpc_timeout(Duration::from_secs(600)), "600000m");
        assert_eq!(grpc_timeout(Duration::from_secs(1_000_000)), "1000000S");
    }

    #[test]
    fn frames() {
        let msg = authgate_proto::auth::CheckResponse::default();
        assert!(
            decode_message::<authgate_proto::auth::CheckResponse>(Bytes::from_static(&[0, 0, 0, 0, 0]))
                .is_ok_and(|m| m == msg)
        );
        assert!(
            decode_message::<authgate_proto::auth::CheckResponse>(Bytes::from_static(&[1, 0, 0, 0, 0]))
                .is_err()
        );
        assert!(
            decode_message::<authgate_proto::auth::CheckResponse>(Bytes::from_static(&[0, 0, 0, 0, 9, 1]))
                .is_err()
        );
        assert!(decode_message::<authgate_proto::auth::CheckResponse>(Bytes::from_static(&[0, 0])).is_err());
    }
}
