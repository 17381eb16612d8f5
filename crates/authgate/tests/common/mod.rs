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

/// An address nothing listens on, and that nothing else in this test process can take: the
/// port stays bound (never listening, so connections are refused) until the process exits. A
/// port merely bound and released could be handed to the next listener a concurrent test binds
/// (a backend answering 200), turning "nothing listening" into something answering.
pub async fn closed_port() -> SocketAddr {
    static RESERVED: std::sync::Mutex<Vec<tokio::net::TcpSocket>> = std::sync::Mutex::new(Vec::new());
    let socket = tokio::net::TcpSocket::new_v4().unwrap_or_else(|e| panic!("socket: {e}"));
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = socket.local_addr().unwrap_or_else(|e| panic!("local_addr: {e}"));
    RESERVED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(socket);
    addr
}

// ---------------------------------------------------------------------------------------------
// Helpers for the proxy-core suite (tests/proxy_core*.rs). Everything listens on 127.0.0.1 with
// ephemeral ports; every wait is bounded.
// ---------------------------------------------------------------------------------------------

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A generous bound for anything that should happen promptly; reaching it fails the test (it
/// is a hang guard, not a timing assertion).
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Awaits `f` for at most [`PATIENCE`], panicking with `what` otherwise.
pub async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(PATIENCE, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: nothing within {PATIENCE:?}"),
    }
}

/// Like [`send`], but errors are returned instead of panicking (for load loops).
pub async fn try_send(
    to: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Reply, String> {
    let stream = tokio::net::TcpStream::connect(to)
        .await
        .map_err(|e| format!("connect {to}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    let req = build_request(method, path, headers, body)?;
    exchange_h1(&mut sender, req).await
}

fn build_request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Request<Full<Bytes>>, String> {
    let mut req = Request::builder().method(method).uri(path);
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req = req.header("host", "bookinfo.example.com");
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(Full::new(Bytes::copy_from_slice(body)))
        .map_err(|e| format!("request: {e}"))
}

/// One request on an existing HTTP/1.1 connection, errors returned.
pub async fn exchange_h1(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Result<Reply, String> {
    sender
        .ready()
        .await
        .map_err(|e| format!("connection not ready: {e}"))?;
    let resp = tokio::time::timeout(PATIENCE, sender.send_request(req))
        .await
        .map_err(|_| "no response in time".to_owned())?
        .map_err(|e| format!("send: {e}"))?;
    collect_reply(resp).await
}

pub async fn collect_reply(resp: http::Response<hyper::body::Incoming>) -> Result<Reply, String> {
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(PATIENCE, body.collect())
        .await
        .map_err(|_| "body not complete in time".to_owned())?
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// A keep-alive HTTP/1.1 client connection to `to`.
pub async fn h1_connect(to: SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = within("connect", tokio::net::TcpStream::connect(to))
        .await
        .unwrap_or_else(|e| panic!("connect {to}: {e}"));
    h1_handshake(stream).await
}

/// HTTP/1.1 over any stream (plain TCP or TLS).
pub async fn h1_handshake<IO>(io: IO) -> hyper::client::conn::http1::SendRequest<Full<Bytes>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = within(
        "h1 handshake",
        hyper::client::conn::http1::handshake(TokioIo::new(io)),
    )
    .await
    .unwrap_or_else(|e| panic!("h1 handshake: {e}"));
    tokio::spawn(conn);
    sender
}

/// HTTP/2 over any stream: prior knowledge on plain TCP (h2c), or after ALPN `h2` on TLS.
pub async fn h2_handshake<IO>(io: IO) -> hyper::client::conn::http2::SendRequest<Full<Bytes>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = within(
        "h2 handshake",
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(io)),
    )
    .await
    .unwrap_or_else(|e| panic!("h2 handshake: {e}"));
    tokio::spawn(conn);
    sender
}

/// One request on an HTTP/2 connection. `uri` must be absolute (`http://host/path`).
pub async fn h2_request(
    sender: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .version(http::Version::HTTP_2);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::new()))
        .unwrap_or_else(|e| panic!("request: {e}"));
    within("h2 ready", sender.ready())
        .await
        .unwrap_or_else(|e| panic!("h2 not ready: {e}"));
    let resp = within("h2 response", sender.send_request(req))
        .await
        .unwrap_or_else(|e| panic!("h2 send: {e}"));
    assert_eq!(resp.version(), http::Version::HTTP_2, "response over HTTP/2");
    collect_reply(resp).await.unwrap_or_else(|e| panic!("{e}"))
}

/// GET on an admin endpoint of `g`.
pub async fn admin(g: &Gateway, path: &str) -> Reply {
    let Some(a) = g.admin_addr() else {
        panic!("admin listener disabled")
    };
    get(a, path, &[("host", "localhost")]).await
}

/// The value of one series in Prometheus/OpenMetrics text, e.g.
/// `metric(&text, "authgate_ext_authz_ok_total{provider=\"g\"}")`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        let value = rest.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// Every value the echo backend received for `name`, from the /echo endpoint's JSON.
pub fn echoed_header(r: &Reply, name: &str) -> Vec<String> {
    let v = r.json();
    let Some(headers) = v.get("headers").and_then(|h| h.as_array()) else {
        panic!("echo without headers: {v}");
    };
    headers
        .iter()
        .filter_map(|pair| {
            let pair = pair.as_array()?;
            (pair.first()?.as_str()?.eq_ignore_ascii_case(name))
                .then(|| pair.get(1)?.as_str().map(str::to_owned))?
        })
        .collect()
}

/// Substitutes `{{name}}` placeholders, as [`gateway`] does.
pub fn render(yaml: &str, vars: &[(&str, String)]) -> String {
    let mut src = yaml.to_owned();
    for (k, v) in vars {
        src = src.replace(&format!("{{{{{k}}}}}"), v);
    }
    src
}

// --- A recording backend ---------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body_len: usize,
}

/// A tiny hyper backend (HTTP/1.1 and h2c) that records every request it receives and counts
/// its TCP connections. Paths under `/hold` are answered only once the test calls
/// [`Recorder::release`]; every arrival is also announced on [`Recorder::arrivals`].
pub struct Recorder {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    pub connections: Arc<AtomicUsize>,
    pub arrivals: tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<String>>,
    release: Arc<tokio::sync::Semaphore>,
}

impl Recorder {
    pub fn paths(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|r| r.path.clone())
            .collect()
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        self.requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Lets `n` held requests answer.
    pub fn release(&self, n: usize) {
        self.release.add_permits(n);
    }

    /// Waits (bounded) for the next request to arrive; returns its path.
    pub async fn next_arrival(&self) -> String {
        let mut rx = self.arrivals.lock().await;
        within("backend arrival", rx.recv())
            .await
            .unwrap_or_else(|| panic!("recorder stopped"))
    }
}

pub async fn recorder() -> Recorder {
    let listener = bind().await;
    let a = addr(&listener);
    let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
    let connections = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (reqs, conns, rel) = (requests.clone(), connections.clone(), release.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            conns.fetch_add(1, Ordering::SeqCst);
            let (reqs, rel, tx) = (reqs.clone(), rel.clone(), tx.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (reqs, rel, tx) = (reqs.clone(), rel.clone(), tx.clone());
                    async move {
                        let (parts, body) = req.into_parts();
                        let path = parts
                            .uri
                            .path_and_query()
                            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
                        let body_len = body.collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
                        reqs.lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push(Recorded {
                                method: parts.method.to_string(),
                                path: path.clone(),
                                version: parts.version,
                                headers: parts.headers.clone(),
                                body_len,
                            });
                        let _ = tx.send(path.clone());
                        if path.starts_with("/hold")
                            && let Ok(p) = rel.acquire().await
                        {
                            p.forget();
                        }
                        let mut resp = http::Response::new(Full::new(Bytes::from(format!("ok {path}"))));
                        resp.headers_mut()
                            .insert("content-type", http::HeaderValue::from_static("text/plain"));
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Recorder {
        addr: a,
        requests,
        connections,
        arrivals: tokio::sync::Mutex::new(rx),
        release,
    }
}

// --- A counting TCP forwarder ----------------------------------------------------------------

/// Accepts on an ephemeral port, counts connections, and splices each to `target`.
pub async fn counting_forwarder(target: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = bind().await;
    let a = addr(&listener);
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        while let Ok((mut down, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let _ = down.set_nodelay(true);
                if let Ok(mut up) = tokio::net::TcpStream::connect(target).await {
                    let _ = up.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                }
            });
        }
    });
    (a, count)
}

// --- Raw TCP ---------------------------------------------------------------------------------

/// What came back on a raw TCP connection after writing some bytes.
pub struct RawOutcome {
    pub data: Vec<u8>,
    /// The gateway closed the connection (EOF or reset) within [`PATIENCE`].
    pub closed: bool,
}

impl RawOutcome {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }

    /// Status codes of every HTTP/1.x response in the stream, in order.
    pub fn statuses(&self) -> Vec<u16> {
        self.responses().iter().map(|r| r.0).collect()
    }

    /// Every HTTP/1.x response in the stream: (status, head, body). Bodies are delimited by
    /// Content-Length or chunked framing (else they run to the end of the stream).
    pub fn responses(&self) -> Vec<(u16, String, Vec<u8>)> {
        let data = &self.data;
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < data.len() {
            let Some(end) = find(&data[pos..], b"\r\n\r\n") else {
                break;
            };
            let head = String::from_utf8_lossy(&data[pos..pos + end]).into_owned();
            let Some(status) = head
                .strip_prefix("HTTP/1.")
                .and_then(|r| r.get(2..5))
                .and_then(|c| c.parse::<u16>().ok())
            else {
                break;
            };
            let mut body_start = pos + end + 4;
            let header = |name: &str| {
                head.lines().skip(1).find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                })
            };
            let chunked = header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
            let mut body = Vec::new();
            if chunked {
                loop {
                    let Some(line_end) = find(&data[body_start..], b"\r\n") else {
                        body_start = data.len();
                        break;
                    };
                    let size_text =
                        String::from_utf8_lossy(&data[body_start..body_start + line_end]).into_owned();
                    let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                        .unwrap_or(0);
                    body_start += line_end + 2;
                    if size == 0 {
                        // Trailers (none expected) then CRLF.
                        body_start = match find(&data[body_start..], b"\r\n") {
                            Some(i) => body_start + i + 2,
                            None => data.len(),
                        };
                        break;
                    }
                    let stop = (body_start + size).min(data.len());
                    body.extend_from_slice(&data[body_start..stop]);
                    body_start = (stop + 2).min(data.len());
                }
            } else if let Some(n) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
                let stop = (body_start + n).min(data.len());
                body.extend_from_slice(&data[body_start..stop]);
                body_start = stop;
            } else if !(status < 200 || status == 204 || status == 304) {
                body.extend_from_slice(&data[body_start..]);
                body_start = data.len();
            }
            out.push((status, head, body));
            pos = body_start;
        }
        out
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Writes `bytes` on a fresh connection (from a separate task, ignoring write errors: the
/// server may close early) and reads until the server closes or [`PATIENCE`] passes.
pub async fn raw_exchange(to: SocketAddr, bytes: Vec<u8>) -> RawOutcome {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = within("raw connect", tokio::net::TcpStream::connect(to))
        .await
        .unwrap_or_else(|e| panic!("connect {to}: {e}"));
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&bytes).await;
        let _ = wr.flush().await;
        // Keep the write half open: a half-close must not be what ends the connection.
        wr
    });
    let mut data = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let closed = loop {
        match tokio::time::timeout_at(deadline, rd.read(&mut buf)).await {
            Err(_) => break false,
            Ok(Ok(0)) => break true,
            Ok(Ok(n)) => data.extend_from_slice(&buf[..n]),
            Ok(Err(_)) => break true,
        }
    };
    drop(writer.await);
    RawOutcome { data, closed }
}

// --- TLS test PKI ------------------------------------------------------------------------------

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let p = std::env::temp_dir().join(format!(
            "authgate-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        Self(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, contents).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A test CA (rcgen) issuing server and client certificates, written as PEM into a temp dir.
pub struct Pki {
    pub dir: TempDir,
    pub ca_file: PathBuf,
    pub ca_der: rustls_pki_types::CertificateDer<'static>,
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

fn rc<T>(r: Result<T, rcgen::Error>) -> T {
    r.unwrap_or_else(|e| panic!("rcgen: {e}"))
}

impl Pki {
    pub fn new(tag: &str) -> Self {
        Self::with_ca_name(tag, "authgate test CA")
    }

    pub fn with_ca_name(tag: &str, cn: &str) -> Self {
        let dir = TempDir::new(tag);
        let mut params = rc(rcgen::CertificateParams::new(Vec::<String>::new()));
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rc(rcgen::KeyPair::generate());
        let ca = rc(rcgen::CertifiedIssuer::self_signed(params, key));
        let ca_file = dir.write("ca.pem", &ca.pem());
        let ca_der = ca.der().clone();
        Self {
            dir,
            ca_file,
            ca_der,
            ca,
        }
    }

    /// A server certificate for `dns` names, written as `<file>.pem`/`<file>.key`; returns
    /// (cert path, key path, DER of the leaf).
    pub fn server_cert(
        &self,
        file: &str,
        dns: &[&str],
    ) -> (PathBuf, PathBuf, rustls_pki_types::CertificateDer<'static>) {
        let mut params = rc(rcgen::CertificateParams::new(
            dns.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
        ));
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            dns.first().copied().unwrap_or("server"),
        );
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rc(rcgen::KeyPair::generate());
        let cert = rc(params.signed_by(&key, &self.ca));
        let cert_file = self.dir.write(&format!("{file}.pem"), &cert.pem());
        let key_file = self.dir.write(&format!("{file}.key"), &key.serialize_pem());
        (cert_file, key_file, cert.der().clone())
    }

    /// A client certificate whose only SAN is the URI `uri` (a SPIFFE id).
    pub fn client_cert(
        &self,
        uri: &str,
    ) -> (
        Vec<rustls_pki_types::CertificateDer<'static>>,
        rustls_pki_types::PrivateKeyDer<'static>,
    ) {
        let mut params = rc(rcgen::CertificateParams::new(Vec::<String>::new()));
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "workload");
        let ia5 = rc(rcgen::string::Ia5String::try_from(uri.to_owned()));
        params.subject_alt_names = vec![rcgen::SanType::URI(ia5)];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rc(rcgen::KeyPair::generate());
        let cert = rc(params.signed_by(&key, &self.ca));
        let key_der = rustls_pki_types::PrivateKeyDer::Pkcs8(rustls_pki_types::PrivatePkcs8KeyDer::from(
            key.serialize_der(),
        ));
        (vec![cert.der().clone()], key_der)
    }

    /// Roots holding only this CA.
    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.ca_der.clone())
            .unwrap_or_else(|e| panic!("add CA: {e}"));
        roots
    }
}

/// A TLS client connection: SNI `sni`, trusting only `roots`, offering `alpn`, with an
/// optional client certificate. Panics if the handshake fails.
pub async fn tls_connect(
    to: SocketAddr,
    sni: &str,
    roots: rustls::RootCertStore,
    alpn: &[&[u8]],
    client_cert: Option<(
        Vec<rustls_pki_types::CertificateDer<'static>>,
        rustls_pki_types::PrivateKeyDer<'static>,
    )>,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    match try_tls_connect(to, sni, roots, alpn, client_cert).await {
        Ok(s) => s,
        Err(e) => panic!("TLS to {to} as {sni}: {e}"),
    }
}

pub async fn try_tls_connect(
    to: SocketAddr,
    sni: &str,
    roots: rustls::RootCertStore,
    alpn: &[&[u8]],
    client_cert: Option<(
        Vec<rustls_pki_types::CertificateDer<'static>>,
        rustls_pki_types::PrivateKeyDer<'static>,
    )>,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let mut config = match client_cert {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| e.to_string())?,
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls_pki_types::ServerName::try_from(sni.to_owned()).map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect(to)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tokio::time::timeout(PATIENCE, connector.connect(name, tcp))
        .await
        .map_err(|_| "handshake timed out".to_owned())?
        .map_err(|e| format!("handshake: {e}"))
}

// --- The binary --------------------------------------------------------------------------------

/// `authgate run --config FILE` as a child process, killed on drop. Stdout/stderr are drained
/// by threads; stderr lines are scanned for the bound addresses.
pub struct Child {
    pub child: std::process::Child,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl Child {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap_or_else(|e| panic!("kill -{sig}: {e}"));
        assert!(status.success(), "kill -{sig} {} failed", self.child.id());
    }

    /// Panics with the exit status and stderr if the process has exited.
    pub fn assert_alive(&mut self, when: &str) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "authgate exited {when}: {status:?}; stderr:\n{}",
                self.stderr_text()
            );
        }
    }

    /// GET on the admin listener; on failure, reports whether (and how) the process exited.
    pub async fn admin_get(&mut self, path: &str) -> Reply {
        match try_send(self.admin, "GET", path, &[("host", "localhost")], b"").await {
            Ok(r) => r,
            Err(e) => {
                let mut status = None;
                for _ in 0..20 {
                    if let Ok(Some(s)) = self.child.try_wait() {
                        status = Some(s);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                panic!(
                    "admin GET {path}: {e}; authgate exit status: {status:?}; stderr:\n{}",
                    self.stderr_text()
                )
            }
        }
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn stderr_text(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .join("\n")
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Parses `... <marker> ... <key>=IP:PORT` from a log line.
fn addr_after(line: &str, marker: &str, key: &str) -> Option<SocketAddr> {
    if !line.contains(marker) {
        return None;
    }
    let at = line.find(&format!("{key}="))?;
    line[at + key.len() + 1..].split_whitespace().next()?.parse().ok()
}

/// Starts `authgate run --config <config>` (the config must use `127.0.0.1:0` listeners and
/// admin) and waits (bounded) until it logged both addresses.
pub fn spawn_binary(config: &Path, extra: &[&str]) -> Child {
    use std::io::BufRead;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_authgate"));
    cmd.arg("run")
        .arg("--config")
        .arg(config)
        .args(extra)
        .env("NO_COLOR", "1")
        .env("AUTHGATE_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn authgate: {e}"));
    let stdout: Arc<Mutex<Vec<String>>> = Arc::default();
    let stderr: Arc<Mutex<Vec<String>>> = Arc::default();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    if let Some(out) = child.stdout.take() {
        let sink = stdout.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(line);
            }
        });
    }
    if let Some(err) = child.stderr.take() {
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                let line = strip_ansi(&line);
                let _ = tx.send(line.clone());
                sink.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(line);
            }
        });
    }
    let mut child = Child {
        child,
        listen: SocketAddr::from(([0, 0, 0, 0], 0)),
        admin: SocketAddr::from(([0, 0, 0, 0], 0)),
        stdout,
        stderr,
    };
    let (mut listen, mut admin) = (None, None);
    let deadline = std::time::Instant::now() + PATIENCE;
    while listen.is_none() || admin.is_none() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                listen = listen.or_else(|| addr_after(&line, "authgate listening", "addr"));
                admin = admin.or_else(|| addr_after(&line, "admin listening", "admin"));
            }
            Err(_) => panic!(
                "authgate did not log its addresses in time; stderr:\n{}",
                child.stderr_text()
            ),
        }
    }
    child.listen = listen.unwrap_or(child.listen);
    child.admin = admin.unwrap_or(child.admin);
    child
}

// --- Raw HTTP/1.1 requests (policy_e2e) --------------------------------------------------------

/// A response read off a raw connection by [`raw_request`].
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Header names lower-cased, in order, values as text.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Writes `bytes` (one complete HTTP/1.1 request, sent byte for byte: the request target is
/// never normalized by a client library) on a fresh connection and parses the one response.
/// The request should carry `Connection: close`; the body is read by Content-Length, chunked
/// framing, or until the server closes.
pub async fn raw_request(to: SocketAddr, bytes: &[u8]) -> RawResponse {
    let out = raw_exchange(to, bytes.to_vec()).await;
    let data = out.data;
    let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
        panic!(
            "no complete response head from {to} (closed: {}): {:?}",
            out.closed,
            String::from_utf8_lossy(&data)
        );
    };
    let head = String::from_utf8_lossy(&data[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &data[end + 4..];
    let find = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let body = if let Some(len) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
        rest[..len.min(rest.len())].to_vec()
    } else if find("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        let mut body = Vec::new();
        let mut at = 0;
        while let Some(nl) = rest[at..].windows(2).position(|w| w == b"\r\n") {
            let size_text = String::from_utf8_lossy(&rest[at..at + nl]).into_owned();
            let size =
                usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16).unwrap_or(0);
            at += nl + 2;
            if size == 0 || at + size > rest.len() {
                break;
            }
            body.extend_from_slice(&rest[at..at + size]);
            at += size + 2;
        }
        body
    } else {
        rest.to_vec()
    };
    RawResponse {
        status,
        headers,
        body,
    }
}

// --- Adversarial suite helpers (tests/adversarial.rs) ---------------------------------------

/// One check request received by [`scripted_http_authz`].
#[derive(Debug, Clone)]
pub struct SeenCheck {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// An HTTP authorization service whose answer to each check is `answer(&check)`; every check
/// is recorded.
pub async fn scripted_http_authz<F>(answer: F) -> (SocketAddr, Arc<Mutex<Vec<SeenCheck>>>)
where
    F: Fn(&SeenCheck) -> http::Response<Full<Bytes>> + Send + Sync + 'static,
{
    let listener = bind().await;
    let a = addr(&listener);
    let seen: Arc<Mutex<Vec<SeenCheck>>> = Arc::default();
    let answer = Arc::new(answer);
    let rec = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (rec, answer) = (rec.clone(), answer.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (rec, answer) = (rec.clone(), answer.clone());
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let check = SeenCheck {
                            method: parts.method.to_string(),
                            path: parts
                                .uri
                                .path_and_query()
                                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
                            headers: parts.headers,
                            body,
                        };
                        let resp = answer(&check);
                        rec.lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push(check);
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (a, seen)
}

/// A TCP server that, for every connection, reads one request head (and a `content-length`
/// body), writes `reply` verbatim, then closes (`close`) or holds the connection open. Counts
/// the connections that sent a request.
pub async fn raw_reply_server(reply: Vec<u8>, close: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = bind().await;
    let a = addr(&listener);
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let reply = Arc::new(reply);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (c, reply) = (c.clone(), reply.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let head_end = loop {
                    if let Some(i) = find(&buf, b"\r\n\r\n") {
                        break i + 4;
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                let want = head
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                while buf.len() < head_end + want {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                c.fetch_add(1, Ordering::SeqCst);
                let _ = s.write_all(&reply).await;
                let _ = s.flush().await;
                if close {
                    let _ = s.shutdown().await;
                } else {
                    tokio::time::sleep(PATIENCE).await;
                }
            });
        }
    });
    (a, count)
}

/// A backend that answers `101 Switching Protocols` to any request carrying `Upgrade`, and then
/// keeps reading HTTP/1.1 request heads on the same connection and answering each with 200
/// `backend served <target>` (then closing): an h2c-capable (or otherwise upgrade-capable)
/// application server, reduced to what matters. Records every request line it parses.
pub async fn upgrade_backend() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = bind().await;
    let a = addr(&listener);
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let rec = lines.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let rec = rec.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    while let Some(i) = find(&buf, b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).into_owned();
                        buf.drain(..i + 4);
                        let line = head.lines().next().unwrap_or_default().to_owned();
                        rec.lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push(line.clone());
                        let reply = if head.to_ascii_lowercase().contains("\nupgrade:") {
                            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
                                .to_vec()
                        } else {
                            let target = line.split(' ').nth(1).unwrap_or("?");
                            let body = format!("backend served {target}");
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            )
                            .into_bytes()
                        };
                        let upgraded = reply.starts_with(b"HTTP/1.1 101");
                        if s.write_all(&reply).await.is_err() {
                            return;
                        }
                        if !upgraded {
                            let _ = s.shutdown().await;
                            return;
                        }
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (a, lines)
}

/// A gRPC `envoy.service.auth.v3.Authorization` service whose answer to each `CheckRequest`
/// is `answer(&request)`; every request is recorded.
pub async fn scripted_grpc_authz<F>(
    answer: F,
) -> (SocketAddr, Arc<Mutex<Vec<authgate_proto::auth::CheckRequest>>>)
where
    F: Fn(
            &authgate_proto::auth::CheckRequest,
        ) -> Result<authgate_proto::auth::CheckResponse, authgate_proto::tonic::Status>
        + Send
        + Sync
        + 'static,
{
    let listener = bind().await;
    let a = addr(&listener);
    let seen: Arc<Mutex<Vec<authgate_proto::auth::CheckRequest>>> = Arc::default();
    let svc = authgate_proto::auth::authorization_server::AuthorizationServer::new(ScriptedGrpc {
        answer: Arc::new(answer),
        seen: seen.clone(),
    });
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let svc = hyper_util::service::TowerToHyperService::new(svc.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (a, seen)
}

type GrpcAnswer = dyn Fn(
        &authgate_proto::auth::CheckRequest,
    ) -> Result<authgate_proto::auth::CheckResponse, authgate_proto::tonic::Status>
    + Send
    + Sync;

struct ScriptedGrpc {
    answer: Arc<GrpcAnswer>,
    seen: Arc<Mutex<Vec<authgate_proto::auth::CheckRequest>>>,
}

#[authgate_proto::tonic::async_trait]
impl authgate_proto::auth::authorization_server::Authorization for ScriptedGrpc {
    async fn check(
        &self,
        request: authgate_proto::tonic::Request<authgate_proto::auth::CheckRequest>,
    ) -> Result<
        authgate_proto::tonic::Response<authgate_proto::auth::CheckResponse>,
        authgate_proto::tonic::Status,
    > {
        let req = request.into_inner();
        let out = (self.answer)(&req);
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(req);
        out.map(authgate_proto::tonic::Response::new)
    }
}

/// What came back on a hand-rolled HTTP/2 connection for stream 1.
#[derive(Debug, Default)]
pub struct H2Outcome {
    /// Frame type names seen for stream 1 (and connection-level GOAWAY), in order.
    pub frames: Vec<&'static str>,
    /// Concatenated DATA payload of stream 1.
    pub data: Vec<u8>,
    /// First bytes of the stream-1 HEADERS block (HPACK): `0x88` is `:status: 200`.
    pub first_header_byte: Option<u8>,
}

impl H2Outcome {
    pub fn refused(&self) -> bool {
        self.frames.iter().any(|f| *f == "RST_STREAM" || *f == "GOAWAY")
            || self.first_header_byte != Some(0x88)
    }
}

fn hpack_int(mut n: usize, prefix_bits: u8, first: u8, out: &mut Vec<u8>) {
    let max = (1usize << prefix_bits) - 1;
    if n < max {
        out.push(first | n as u8);
        return;
    }
    out.push(first | max as u8);
    n -= max;
    while n >= 128 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Sends one request on stream 1 of a fresh h2c (prior knowledge) connection with the header
/// list written byte for byte (HPACK literals without indexing: nothing is validated or
/// normalized client-side), and an optional body; reads what comes back for a short while.
pub async fn h2_raw(to: SocketAddr, headers: &[(&[u8], &[u8])], body: Option<&[u8]>) -> H2Outcome {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut block = Vec::new();
    for (k, v) in headers {
        block.push(0);
        hpack_int(k.len(), 7, 0, &mut block);
        block.extend_from_slice(k);
        hpack_int(v.len(), 7, 0, &mut block);
        block.extend_from_slice(v);
    }
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(h2_frame(4, 0, 0, b""));
    out.extend(h2_frame(1, 0x4 | u8::from(body.is_none()), 1, &block));
    if let Some(b) = body {
        out.extend(h2_frame(0, 0x1, 1, b));
    }
    let mut s = within("h2 connect", tokio::net::TcpStream::connect(to))
        .await
        .unwrap_or_else(|e| panic!("connect {to}: {e}"));
    let _ = s.write_all(&out).await;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => break,
        }
        // Stop early once stream 1 ended or the connection was refused.
        let o = parse_h2(&buf);
        if o.frames
            .iter()
            .any(|f| *f == "GOAWAY" || *f == "RST_STREAM" || *f == "END")
        {
            break;
        }
    }
    let mut o = parse_h2(&buf);
    o.frames.retain(|f| *f != "END");
    o
}

fn parse_h2(buf: &[u8]) -> H2Outcome {
    let mut o = H2Outcome::default();
    let mut i = 0;
    while i + 9 <= buf.len() {
        let len = (usize::from(buf[i]) << 16) | (usize::from(buf[i + 1]) << 8) | usize::from(buf[i + 2]);
        let (kind, flags) = (buf[i + 3], buf[i + 4]);
        let stream = u32::from_be_bytes([buf[i + 5], buf[i + 6], buf[i + 7], buf[i + 8]]) & 0x7fff_ffff;
        if i + 9 + len > buf.len() {
            break;
        }
        let payload = &buf[i + 9..i + 9 + len];
        if stream == 1 {
            match kind {
                0 => {
                    o.frames.push("DATA");
                    o.data.extend_from_slice(payload);
                }
                1 => {
                    o.frames.push("HEADERS");
                    if o.first_header_byte.is_none() {
                        o.first_header_byte = payload.first().copied();
                    }
                }
                3 => o.frames.push("RST_STREAM"),
                _ => {}
            }
            if flags & 0x1 != 0 && (kind == 0 || kind == 1) {
                o.frames.push("END");
            }
        } else if kind == 7 {
            o.frames.push("GOAWAY");
        }
        i += 9 + len;
    }
    o
}

// --- The running binary's configuration, through its admin API -------------------------------

/// (successful, failed) reloads so far.
pub async fn reload_counts(gw: &mut Child) -> (f64, f64) {
    let text = gw.admin_get("/stats/prometheus").await.text();
    (
        metric(&text, "authgate_config_reload_ok_total").unwrap_or(0.0),
        metric(&text, "authgate_config_reload_failed_total").unwrap_or(0.0),
    )
}

pub async fn route_name(gw: &mut Child) -> String {
    let dump = gw.admin_get("/config_dump").await.json();
    dump["routes"][0]["name"]
        .as_str()
        .unwrap_or_else(|| panic!("no route name in {dump}"))
        .to_owned()
}

/// Polls (bounded, ~`secs`) until the route is named `want`; returns the last name seen.
pub async fn wait_route(gw: &mut Child, want: &str, secs: u64) -> String {
    let mut seen = String::new();
    for _ in 0..secs * 10 {
        seen = route_name(gw).await;
        if seen == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen
}

/// Polls (bounded) until ok+failed reloads reach `want`.
pub async fn wait_reloads(gw: &mut Child, want: f64, secs: u64) -> (f64, f64) {
    let mut seen = (0.0, 0.0);
    for _ in 0..secs * 10 {
        seen = reload_counts(gw).await;
        if seen.0 + seen.1 >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen
}
