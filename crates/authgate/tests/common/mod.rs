//! Shared end-to-end test plumbing: real listeners on 127.0.0.1 with ephemeral ports.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use authgate_proxy::{Gateway, Snapshot};
use authgate_sample::{CheckCounters, SampleConfig};
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The sample ext-authz service (HTTP and gRPC) and the demo backend, on ephemeral ports.
pub struct Sample {
    pub authz_http: SocketAddr,
    pub authz_grpc: SocketAddr,
    pub backend: SocketAddr,
    pub counters: Arc<CheckCounters>,
}

pub async fn start_sample() -> Sample {
    let counters = Arc::new(CheckCounters::default());
    let cfg = Arc::new(SampleConfig {
        allow_service_account: "a".into(),
    });
    let h = bind().await;
    let g = bind().await;
    let b = bind().await;
    let sample = Sample {
        authz_http: addr(&h),
        authz_grpc: addr(&g),
        backend: addr(&b),
        counters: counters.clone(),
    };
    tokio::spawn(authgate_sample::serve_ext_authz_http(
        h,
        cfg.clone(),
        counters.clone(),
    ));
    tokio::spawn(authgate_sample::serve_ext_authz_grpc(g, cfg, counters));
    tokio::spawn(authgate_sample::serve_backend(b));
    sample
}

pub async fn bind() -> TcpListener {
    match TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => panic!("bind: {e}"),
    }
}

pub fn addr(l: &TcpListener) -> SocketAddr {
    match l.local_addr() {
        Ok(a) => a,
        Err(e) => panic!("local_addr: {e}"),
    }
}

/// A gateway from YAML; `{{name}}` placeholders are replaced from `vars` first.
pub async fn gateway(yaml: &str, vars: &[(&str, String)]) -> Gateway {
    let mut src = yaml.to_owned();
    for (k, v) in vars {
        src = src.replace(&format!("{{{{{k}}}}}"), v);
    }
    if !src.contains("admin:") {
        // Tests run in parallel: never the fixed default admin port.
        src.push_str("\nadmin: { address: \"127.0.0.1:0\" }\n");
    }
    let config = match authgate_config::parse(&src, "test.yaml", Path::new("."), &[]) {
        Ok(c) => c,
        Err(e) => panic!("config:\n{e}\n{src}"),
    };
    let snapshot = match Snapshot::build(config) {
        Ok(s) => s,
        Err(e) => panic!("snapshot: {e}"),
    };
    match Gateway::start(snapshot).await {
        Ok(g) => g,
        Err(e) => panic!("start: {e}"),
    }
}

pub fn gw_addr(g: &Gateway) -> SocketAddr {
    match g.local_addrs().first() {
        Some(a) => *a,
        None => panic!("gateway has no listener"),
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        match serde_json::from_slice(&self.body) {
            Ok(v) => v,
            Err(e) => panic!("not JSON ({e}): {}", self.text()),
        }
    }
}

/// One HTTP/1.1 request on a fresh connection.
pub async fn send(to: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let stream = match tokio::net::TcpStream::connect(to).await {
        Ok(s) => s,
        Err(e) => panic!("connect {to}: {e}"),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
        Ok(p) => p,
        Err(e) => panic!("handshake: {e}"),
    };
    tokio::spawn(conn);
    let mut req = Request::builder().method(method).uri(path);
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req = req.header("host", "bookinfo.example.com");
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = match req.body(Full::new(Bytes::copy_from_slice(body))) {
        Ok(r) => r,
        Err(e) => panic!("request: {e}"),
    };
    let resp = match tokio::time::timeout(Duration::from_secs(20), sender.send_request(req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => panic!("send: {e}"),
        Err(_) => panic!("no response within 20s"),
    };
    let (parts, body) = resp.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => panic!("body: {e}"),
    };
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub async fn get(to: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    send(to, "GET", path, headers, b"").await
}

/// A TCP listener that accepts connections and never answers: an authz service that hangs.
pub async fn black_hole() -> SocketAddr {
    let l = bind().await;
    let a = addr(&l);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    a
}

/// An address nothing listens on.
pub async fn closed_port() -> SocketAddr {
    let l = bind().await;
    addr(&l)
}
