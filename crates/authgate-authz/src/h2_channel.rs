//! A lean unary gRPC client over one multiplexed HTTP/2 connection: the check is a single
//! request/response, so the general machinery of a gRPC channel (request buffer task, tower
//! layers, streaming codecs) is cost without benefit on the hot path. The connection is made
//! lazily, shared by every check, and re-made when it closes.

use std::sync::Mutex;
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::{HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prost::Message;

use crate::CheckError;

/// Largest response message accepted (deny bodies can be whole HTML pages).
const MAX_RESPONSE: usize = 16 << 20;

pub(crate) struct H2Channel {
    /// `host:port` to connect to.
    target: String,
    /// The request URI: `http://<authority><path>` (the authority is the provider's service).
    uri: Uri,
    current: Mutex<Option<SendRequest<Full<Bytes>>>>,
    connecting: tokio::sync::Mutex<()>,
}

impl H2Channel {
    pub(crate) fn new(target: String, uri: Uri) -> Self {
        Self {
            target,
            uri,
            current: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    fn cached(&self) -> Option<SendRequest<Full<Bytes>>> {
        let guard = self.current.lock().ok()?;
        guard.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    async fn sender(&self) -> Result<SendRequest<Full<Bytes>>, CheckError> {
        if let Some(s) = self.cached() {
            return Ok(s);
        }
        // One connection attempt at a time; the others wait for it and reuse it.
        let _one = self.connecting.lock().await;
        if let Some(s) = self.cached() {
            return Ok(s);
        }
        let stream = tokio::net::TcpStream::connect(&self.target).await.map_err(|e| {
            CheckError::Rpc(tonic::Code::Unavailable, format!("connect {}: {e}", self.target))
        })?;
        let _ = stream.set_nodelay(true);
        let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .adaptive_window(true);
        let (sender, conn) = builder.handshake(TokioIo::new(stream)).await.map_err(|e| {
            CheckError::Rpc(
                tonic::Code::Unavailable,
                format!("HTTP/2 handshake with {}: {e}", self.target),
            )
        })?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "ext_authz gRPC connection closed");
            }
        });
        if let Ok(mut guard) = self.current.lock() {
            *guard = Some(sender.clone());
        }
        Ok(sender)
    }

    /// One unary call: `message` in (one gRPC length-prefixed message, uncompressed: the
    /// 5-byte prefix then the protobuf bytes, as
    /// [`encode_grpc_check_request`](crate::check_encode::encode_grpc_check_request) writes it),
    /// the decoded response out, or the error as Envoy counts it. The bytes are the request
    /// body as is: no copy.
    pub(crate) async fn unary<Resp: Message + Default>(
        &self,
        message: Bytes,
        timeout: Duration,
    ) -> Result<Resp, CheckError> {
        let mut req = Request::post(self.uri.clone())
            .header(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"))
            .header(header::TE, HeaderValue::from_static("trailers"));
        if !timeout.is_zero() {
            // `grpc-timeout` as Envoy sends it; the caller enforces the deadline locally too.
            req = req.header("grpc-timeout", grpc_timeout(timeout));
        }
        let req = req
            .body(Full::new(message))
            .map_err(|e| CheckError::Request(e.to_string()))?;

        let mut sender = self.sender().await?;
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                // The connection is unusable; the next check makes a new one.
                if let Ok(mut guard) = self.current.lock() {
                    *guard = None;
                }
                return Err(CheckError::Rpc(tonic::Code::Unavailable, e.to_string()));
            }
        };
        let (parts, body) = resp.into_parts();
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
        let collected = body
            .collect()
            .await
            .map_err(|e| CheckError::Rpc(tonic::Code::Unavailable, format!("reading the response: {e}")))?;
        let trailers = collected.trailers().cloned();
        let data = collected.to_bytes();
        match trailers.as_ref().and_then(grpc_status) {
            Some(status) => return Err(status),
            None if trailers.is_none() => {
                return Err(CheckError::Rpc(
                    tonic::Code::Internal,
                    "response without grpc-status".into(),
                ));
            }
            None => {}
        }
        decode_message(data)
    }
}

/// `Some(error)` when the headers carry a non-zero `grpc-status`.
fn grpc_status(headers: &http::HeaderMap) -> Option<CheckError> {
    let code = headers.get("grpc-status")?;
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
