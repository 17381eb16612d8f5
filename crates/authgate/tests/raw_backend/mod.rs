//! A scripted raw HTTP/1.1 server (a backend or an authz service that misbehaves on purpose)
//! and the gateway/client plumbing the upstream-fault tests share (`pool_adversarial.rs`,
//! `breaker_upstream.rs`). Every server listens on an ephemeral 127.0.0.1 port; every wait is
//! bounded.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use authgate_proxy::Gateway;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::common::*;

pub const DRAIN: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------------
// A scripted raw HTTP/1.1 server (backend or authz service)
// ---------------------------------------------------------------------------------------------

/// What the server does after parsing one request head.
#[derive(Clone, Debug)]
pub enum Step {
    Write(Vec<u8>),
    Sleep(u64),
    /// FIN, then the socket is dropped.
    Close,
    /// RST (SO_LINGER 0).
    Reset,
    /// Keep the connection open, reading nothing more.
    Hold,
    /// From now on, echo every byte back (an upgraded tunnel).
    Echo,
}

pub struct Plan {
    /// Read the request body (Content-Length or chunked) before the steps. `false` is a naive
    /// server that answers early: the unread body is then parsed as the next request head.
    pub read_body: bool,
    pub steps: Vec<Step>,
}

#[derive(Clone, Debug)]
pub struct Seen {
    /// 1-based number of the TCP connection the request came on.
    pub conn: usize,
    pub line: String,
    pub head: String,
}

impl Seen {
    pub fn target(&self) -> &str {
        self.line.split(' ').nth(1).unwrap_or("?")
    }

    pub fn method(&self) -> &str {
        self.line.split(' ').next().unwrap_or("?")
    }

    pub fn header(&self, name: &str) -> Option<String> {
        header_in(&self.head, name)
    }
}

pub fn header_in(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

pub type Script = Arc<dyn Fn(&Seen) -> Plan + Send + Sync>;

pub struct RawServer {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub conns: Arc<AtomicUsize>,
    pub script: Script,
    pub task: Mutex<Option<JoinHandle<()>>>,
}

impl RawServer {
    pub async fn start(script: impl Fn(&Seen) -> Plan + Send + Sync + 'static) -> Self {
        let listener = bind().await;
        let server = Self {
            addr: addr(&listener),
            seen: Arc::default(),
            conns: Arc::default(),
            script: Arc::new(script),
            task: Mutex::new(None),
        };
        server.spawn(listener);
        server
    }

    pub fn spawn(&self, listener: TcpListener) {
        let task = tokio::spawn(serve(
            listener,
            self.script.clone(),
            self.seen.clone(),
            self.conns.clone(),
        ));
        if let Some(old) = self.lock_task().replace(task) {
            old.abort();
        }
    }

    pub fn lock_task(&self) -> std::sync::MutexGuard<'_, Option<JoinHandle<()>>> {
        self.task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stops listening and drops every connection (the process dies).
    pub fn kill(&self) {
        if let Some(t) = self.lock_task().take() {
            t.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&self) {
        for _ in 0..50 {
            if let Ok(l) = TcpListener::bind(self.addr).await {
                self.spawn(l);
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("could not listen on {} again", self.addr);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn targets(&self) -> Vec<String> {
        self.seen().iter().map(|s| s.target().to_owned()).collect()
    }

    pub fn conn_of(&self, target: &str) -> Option<usize> {
        self.seen().iter().find(|s| s.target() == target).map(|s| s.conn)
    }

    /// TCP connections accepted so far.
    pub fn conns(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }

    /// Every request head the server parsed that contains `marker` (a smuggled request).
    pub fn heads_with(&self, marker: &str) -> Vec<String> {
        self.seen()
            .iter()
            .filter(|s| s.head.contains(marker))
            .map(|s| s.head.clone())
            .collect()
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.kill();
    }
}

pub async fn serve(
    listener: TcpListener,
    script: Script,
    seen: Arc<Mutex<Vec<Seen>>>,
    conns: Arc<AtomicUsize>,
) {
    // Dropped (aborting every connection task) when this task is aborted.
    let mut set = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => {
                    let n = conns.fetch_add(1, Ordering::SeqCst) + 1;
                    set.spawn(serve_conn(s, n, script.clone(), seen.clone()));
                }
                Err(_) => break,
            },
            Some(_) = set.join_next(), if !set.is_empty() => {}
        }
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    match s.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

pub async fn read_body(s: &mut TcpStream, buf: &mut Vec<u8>, head: &str) -> bool {
    if let Some(len) = header_in(head, "content-length").and_then(|v| v.parse::<usize>().ok()) {
        while buf.len() < len {
            if !fill(s, buf).await {
                return false;
            }
        }
        buf.drain(..len);
        return true;
    }
    if !header_in(head, "transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        return true;
    }
    loop {
        let line_end = loop {
            if let Some(i) = find(buf, b"\r\n") {
                break i;
            }
            if !fill(s, buf).await {
                return false;
            }
        };
        let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if size == 0 {
            buf.drain(..line_end + 2);
            // Optional trailer fields, then an empty line.
            loop {
                if buf.starts_with(b"\r\n") {
                    buf.drain(..2);
                    return true;
                }
                if let Some(i) = find(buf, b"\r\n\r\n") {
                    buf.drain(..i + 4);
                    return true;
                }
                if !fill(s, buf).await {
                    return false;
                }
            }
        }
        let need = line_end + 2 + size + 2;
        while buf.len() < need {
            if !fill(s, buf).await {
                return false;
            }
        }
        buf.drain(..need);
    }
}

pub async fn serve_conn(mut s: TcpStream, conn: usize, script: Script, seen: Arc<Mutex<Vec<Seen>>>) {
    let _ = s.set_nodelay(true);
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if !fill(&mut s, &mut buf).await {
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let req = Seen {
            conn,
            line: head.lines().next().unwrap_or_default().to_owned(),
            head,
        };
        seen.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(req.clone());
        let plan = script(&req);
        if plan.read_body && !read_body(&mut s, &mut buf, &req.head).await {
            return;
        }
        for step in plan.steps {
            match step {
                Step::Write(bytes) => {
                    if s.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                Step::Sleep(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                Step::Close => {
                    let _ = s.shutdown().await;
                    return;
                }
                Step::Reset => {
                    // A zero linger never blocks: the close is an immediate RST.
                    #[allow(deprecated)]
                    let _ = s.set_linger(Some(Duration::ZERO));
                    return;
                }
                Step::Hold => {
                    tokio::time::sleep(PATIENCE * 3).await;
                    return;
                }
                Step::Echo => {
                    if !buf.is_empty() && s.write_all(&buf).await.is_err() {
                        return;
                    }
                    let mut chunk = [0u8; 16 * 1024];
                    loop {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if s.write_all(&chunk[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub fn ok(body: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

/// A well-behaved answer: the request target as the body.
pub fn echo_target(s: &Seen) -> Plan {
    Plan {
        read_body: true,
        steps: vec![Step::Write(ok(s.target()))],
    }
}

pub fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

// ---------------------------------------------------------------------------------------------
// Gateway and client plumbing
// ---------------------------------------------------------------------------------------------

pub const GW: &str = "listeners: [{ address: \"127.0.0.1:0\" }]\nbackends: [{ name: b, endpoints: [\"{{b}}\"] }]\nroutes: [{ name: r, backend: b, timeout: {{t}} }]\n";

pub const GW_AUTHZ: &str = r#"
listeners: [{ address: "127.0.0.1:0" }]
backends: [{ name: b, endpoints: ["{{b}}"] }]
routes: [{ name: r, backend: b, timeout: 5s }]
extensionProviders:
  - name: authz
    envoyExtAuthzHttp: { service: "127.0.0.1", port: {{ap}}, timeout: 1s, failOpen: false }
authorizationPolicies:
  - { name: all, action: CUSTOM, provider: { name: authz }, rules: [{}] }
"#;

pub async fn gw_for(backend: SocketAddr, timeout: &str) -> Gateway {
    gateway(GW, &[("b", backend.to_string()), ("t", timeout.to_owned())]).await
}

pub async fn gw_with_authz(backend: SocketAddr, authz: SocketAddr) -> Gateway {
    gateway(
        GW_AUTHZ,
        &[("b", backend.to_string()), ("ap", authz.port().to_string())],
    )
    .await
}

pub async fn stop(gw: Gateway) {
    within("gateway shutdown", gw.shutdown(DRAIN)).await;
}

/// One request on a fresh client connection; errors returned, bounded by [`PATIENCE`].
pub async fn fetch(gw: &Gateway, method: &str, path: &str) -> Result<Reply, String> {
    within(
        &format!("{method} {path}"),
        try_send(gw_addr(gw), method, path, &[], b""),
    )
    .await
}

/// GET `path` must come back 200 with `path` as its body (the backend's answer to *this*
/// request, not to another one).
pub async fn expect_own_answer(gw: &Gateway, path: &str, what: &str) {
    match fetch(gw, "GET", path).await {
        Ok(r) => assert!(
            r.status == 200 && r.text() == path,
            "{what}: GET {path} got {} {:?} (expected 200 {path:?})",
            r.status,
            r.text()
        ),
        Err(e) => panic!("{what}: GET {path} failed: {e}"),
    }
}

pub async fn raw_connect(to: SocketAddr) -> TcpStream {
    let s = within("connect", TcpStream::connect(to))
        .await
        .unwrap_or_else(|e| panic!("connect {to}: {e}"));
    let _ = s.set_nodelay(true);
    s
}

/// Reads until `needle` appears (bounded by `limit`); returns everything read, and whether the
/// needle was found.
pub async fn read_until(s: &mut TcpStream, needle: &[u8], limit: Duration) -> (Vec<u8>, bool) {
    let mut data = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if find(&data, needle).is_some() {
            return (data, true);
        }
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return (data, false),
            Ok(Ok(n)) => data.extend_from_slice(&chunk[..n]),
        }
    }
}

pub fn status_of(data: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(data);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}
