//! The downstream client: one request on a fresh connection, HTTP/1.1 or h2c (prior knowledge).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Http1,
    H2c,
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Http1 => "HTTP/1.1",
            Self::H2c => "h2c",
        })
    }
}

/// What the client sends.
#[derive(Debug, Clone)]
pub struct ClientRequest {
    pub proto: Proto,
    pub method: String,
    /// Origin-form target, sent verbatim (it may hold dot segments, `//`, a query).
    pub target: String,
    /// `host` (HTTP/1.1) or `:authority` (h2).
    pub authority: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl ClientRequest {
    pub fn get(target: &str) -> Self {
        Self {
            proto: Proto::Http1,
            method: "GET".into(),
            target: target.into(),
            authority: "gw.example.com".into(),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }
}

/// What the client got back.
#[derive(Debug, Clone, Default)]
pub struct ClientResponse {
    pub status: u16,
    /// Lower-case names, in order.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub trailers: Vec<(String, String)>,
}

fn header_list(h: &http::HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// Sends `req` to `to` on a new connection and reads the whole response (20 s at most).
pub async fn send(to: SocketAddr, req: &ClientRequest) -> Result<ClientResponse, String> {
    tokio::time::timeout(Duration::from_secs(20), send_inner(to, req))
        .await
        .map_err(|_| "no response within 20s".to_owned())?
}

async fn send_inner(to: SocketAddr, req: &ClientRequest) -> Result<ClientResponse, String> {
    let stream = tokio::net::TcpStream::connect(to)
        .await
        .map_err(|e| format!("connect {to}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(stream);
    let mut builder = Request::builder().method(req.method.as_str());
    match req.proto {
        Proto::Http1 => {
            builder = builder
                .uri(req.target.as_str())
                .header("host", req.authority.as_str());
        }
        Proto::H2c => {
            let uri = format!("http://{}{}", req.authority, req.target);
            builder = builder.uri(uri).version(Version::HTTP_2);
        }
    }
    for (k, v) in &req.headers {
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("header {k}: {e}"))?;
        let value = HeaderValue::from_str(v).map_err(|e| format!("header {k}: {e}"))?;
        builder = builder.header(name, value);
    }
    let request = builder
        .body(Full::new(req.body.clone()))
        .map_err(|e| format!("request: {e}"))?;
    let response = match req.proto {
        Proto::Http1 => {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            tokio::spawn(conn);
            sender
                .send_request(request)
                .await
                .map_err(|e| format!("send: {e}"))?
        }
        Proto::H2c => {
            let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| format!("h2 handshake: {e}"))?;
            tokio::spawn(conn);
            sender
                .send_request(request)
                .await
                .map_err(|e| format!("send: {e}"))?
        }
    };
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.map_err(|e| format!("body: {e}"))?;
    let trailers = collected.trailers().map(header_list).unwrap_or_default();
    Ok(ClientResponse {
        status: parts.status.as_u16(),
        headers: header_list(&parts.headers),
        body: collected.to_bytes(),
        trailers,
    })
}

/// Builder-style edits, so corpus entries read as one expression.
impl ClientRequest {
    /// Adds a header line (repeat the call for repeated headers).
    #[must_use]
    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    #[must_use]
    pub fn h2(mut self) -> Self {
        self.proto = Proto::H2c;
        self
    }

    #[must_use]
    pub fn method(mut self, m: &str) -> Self {
        m.clone_into(&mut self.method);
        self
    }

    #[must_use]
    pub fn body(mut self, b: &[u8]) -> Self {
        self.body = Bytes::copy_from_slice(b);
        self
    }

    #[must_use]
    pub fn authority(mut self, a: &str) -> Self {
        a.clone_into(&mut self.authority);
        self
    }

    /// A unary gRPC call as a gRPC client sends it (h2c, POST, `application/grpc`, `te`).
    #[must_use]
    pub fn grpc_call(self) -> Self {
        self.h2()
            .method("POST")
            .with("content-type", "application/grpc")
            .with("te", "trailers")
            .body(b"\x00\x00\x00\x00\x00")
    }
}
