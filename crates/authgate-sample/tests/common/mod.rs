//! Helpers shared by the integration tests: servers on 127.0.0.1:0 and a raw HTTP/1.1 client that
//! shows the exact bytes on the wire.
#![allow(dead_code)] // each test binary uses a different subset

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use authgate_sample::{CheckCounters, SampleConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const TIMEOUT: Duration = Duration::from_secs(10);

pub struct Authz {
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub counters: Arc<CheckCounters>,
}

pub async fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    (listener, addr)
}

/// Starts both check servers; they stop with the test's runtime.
pub async fn start_authz(cfg: SampleConfig) -> Authz {
    let ((http_listener, http), (grpc_listener, grpc)) = (listener().await, listener().await);
    let (cfg, counters) = (Arc::new(cfg), Arc::new(CheckCounters::default()));
    tokio::spawn(authgate_sample::serve_ext_authz_http(
        http_listener,
        cfg.clone(),
        counters.clone(),
    ));
    tokio::spawn(authgate_sample::serve_ext_authz_grpc(
        grpc_listener,
        cfg,
        counters.clone(),
    ));
    Authz { http, grpc, counters }
}

pub async fn start_backend() -> SocketAddr {
    let (listener, addr) = listener().await;
    tokio::spawn(authgate_sample::serve_backend(listener));
    addr
}

/// A response as it came off the wire.
pub struct RawResponse {
    /// Status line and header lines, exactly as sent.
    pub head: String,
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        let mut values = self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name));
        values.next().map(|(_, value)| value.as_slice())
    }

    pub fn header_str(&self, name: &str) -> Option<String> {
        self.header(name)
            .map(|value| String::from_utf8_lossy(value).into_owned())
    }
}

/// Sends `request` (which must say `Connection: close`) and reads the response to EOF.
pub async fn raw_http(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write request");
    let mut bytes = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut bytes))
        .await
        .expect("response in time")
        .expect("read response");
    parse(&bytes)
}

fn parse(bytes: &[u8]) -> RawResponse {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of head");
    let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
    let mut lines = bytes[..end].split(|&b| b == b'\n');
    let status_line = String::from_utf8_lossy(lines.next().expect("status line")).into_owned();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("status code");
    let headers = lines
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .map(|line| {
            let colon = line.iter().position(|&b| b == b':').expect("header colon");
            let name = String::from_utf8_lossy(&line[..colon]).into_owned();
            let value = line[colon + 1..].trim_ascii_start().to_vec();
            (name, value)
        })
        .collect();
    RawResponse {
        head,
        status,
        headers,
        body: bytes[end + 4..].to_vec(),
    }
}

/// Sends bytes and returns whatever comes back before EOF or the timeout, unparsed.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let _ = stream.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut out)).await;
    out
}
