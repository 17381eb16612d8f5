//! The scripted raw-TCP authz service shared by the HTTP transport tests
//! (`http_transport.rs`, `http_transport_adversarial.rs`): each connection's answer is written
//! byte for byte by a test script, and every request it reads is logged with the connection it
//! came on. Plus the client-side helpers those tests share.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use authgate_authz::{CheckError, Decision, LocalResponse, ProviderClient};
use authgate_config::{HostPort, HttpProviderSettings, Provider};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{sleep, timeout};

use super::{ClientRequest, http_provider};

/// Upper bound for anything the tests wait for.
pub const WAIT: Duration = Duration::from_secs(5);

/// A request head larger than this is not a check request.
pub const MAX_HEAD: usize = 64 * 1024;

pub const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";

// ---------------------------------------------------------------------------------------------
// The scripted server
// ---------------------------------------------------------------------------------------------

/// One request as the server read it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Index of the accepted connection it came on (0-based, in accept order).
    pub conn: usize,
    /// Index of the request over the whole server (0-based, in arrival order).
    pub n: usize,
    /// Request line and headers, up to and including the blank line.
    pub head: String,
    pub body: Vec<u8>,
}

/// One accepted connection, driven by a test script.
pub struct Conn {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
    pub index: usize,
    pub log: Arc<Mutex<Vec<Seen>>>,
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The request's `content-length` (0 when absent or unreadable).
pub fn content_length(head: &str) -> usize {
    head.split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

impl Conn {
    /// Reads one whole request (head, then a `content-length` body). `None` when the client
    /// closed the connection, on an I/O error, or when no request came within [`WAIT`].
    pub async fn request(&mut self) -> Option<Seen> {
        timeout(WAIT, self.read_request()).await.ok().flatten()
    }

    pub async fn fill(&mut self) -> Option<()> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Some(())
    }

    pub async fn read_request(&mut self) -> Option<Seen> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if self.buf.len() > MAX_HEAD {
                return None;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let end = head_end + content_length(&head);
        while self.buf.len() < end {
            self.fill().await?;
        }
        let body = self.buf[head_end..end].to_vec();
        self.buf.drain(..end);
        let mut log = self.log.lock().expect("log");
        let seen = Seen {
            conn: self.index,
            n: log.len(),
            head,
            body,
        };
        log.push(seen.clone());
        Some(seen)
    }

    /// Writes `bytes` in one write; errors (the client went away) are ignored.
    pub async fn send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// Writes `bytes` one byte per write, pausing `pause` after each.
    pub async fn send_slowly(&mut self, bytes: &[u8], pause: Duration) {
        for b in bytes {
            if self.stream.write_all(&[*b]).await.is_err() {
                return;
            }
            sleep(pause).await;
        }
    }

    /// Waits (at most [`WAIT`]) for the client to close its side; `true` if it did. Anything
    /// the client sends meanwhile is read and discarded.
    pub async fn wait_for_close(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        timeout(WAIT, async {
            loop {
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    }

    /// Answers every request on this connection with `answer(request)`, until the client closes
    /// it (or [`WAIT`] passes without a request).
    pub async fn serve(&mut self, answer: impl Fn(&Seen) -> Vec<u8>) {
        for _ in 0..1000 {
            let Some(req) = self.request().await else { return };
            self.send(&answer(&req)).await;
        }
    }
}

/// A raw TCP server on 127.0.0.1:0 running `script` on each accepted connection. Dropping it
/// stops the accept loop and every connection task.
pub struct Server {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    pub log: Arc<Mutex<Vec<Seen>>>,
    pub task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    pub async fn start<F, Fut>(script: F) -> Self
    where
        F: Fn(Conn) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (count, requests) = (connections.clone(), log.clone());
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let _ = stream.set_nodelay(true);
                        let index = count.fetch_add(1, Ordering::SeqCst);
                        conns.spawn(script(Conn {
                            stream,
                            buf: Vec::new(),
                            index,
                            log: requests.clone(),
                        }));
                    }
                    Some(_) = conns.join_next() => {}
                }
            }
        });
        Self {
            addr,
            connections,
            log,
            task,
        }
    }

    /// A keep-alive server answering each request with `answer(request)` on every connection.
    pub async fn answering<A>(answer: A) -> Self
    where
        A: Fn(&Seen) -> Vec<u8> + Send + Sync + 'static,
    {
        let answer = Arc::new(answer);
        Self::start(move |mut conn| {
            let answer = answer.clone();
            async move { conn.serve(|r| answer(r)).await }
        })
        .await
    }

    /// Connection 0 gets `first` (see [`Server::start`]); every later connection answers each
    /// request with a plain 200.
    pub async fn first_then_ok<F, Fut>(first: F) -> Self
    where
        F: Fn(Conn) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let first = Arc::new(first);
        Self::start(move |mut conn| {
            let first = first.clone();
            async move {
                if conn.index == 0 {
                    first(conn).await;
                } else {
                    conn.serve(|_| OK.to_vec()).await;
                }
            }
        })
        .await
    }

    pub fn target(&self) -> HostPort {
        HostPort {
            host: self.addr.ip().to_string(),
            port: self.addr.port(),
        }
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.log.lock().expect("log").clone()
    }

    /// The connection index of each request, in arrival order.
    pub fn conns_used(&self) -> Vec<usize> {
        self.seen().iter().map(|s| s.conn).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Client helpers
// ---------------------------------------------------------------------------------------------

pub fn provider() -> Provider {
    http_provider(HttpProviderSettings::default())
}

pub fn client_with(config: &Provider, server: &Server) -> ProviderClient {
    ProviderClient::new(config, server.target()).expect("provider builds")
}

pub fn client(server: &Server) -> ProviderClient {
    client_with(&provider(), server)
}

/// One check, which must finish within twice [`WAIT`] (the provider's own timeout is 5 s).
pub async fn check_req(c: &ProviderClient, req: &ClientRequest) -> Decision {
    timeout(2 * WAIT, c.check(&req.parts()))
        .await
        .expect("the check hung")
}

pub async fn check(c: &ProviderClient) -> Decision {
    check_req(c, &ClientRequest::get("/")).await
}

pub fn allowed() -> Decision {
    Decision::Allow(Default::default())
}

#[track_caller]
pub fn expect_deny(d: Decision) -> LocalResponse {
    match d {
        Decision::Deny(r) => r,
        other => panic!("expected a deny, got {other:?}"),
    }
}

#[track_caller]
pub fn expect_transport(d: Decision) -> String {
    match d {
        Decision::Error(CheckError::Transport(msg)) => msg,
        other => panic!("expected a transport error, got {other:?}"),
    }
}

pub fn header_pairs(r: &LocalResponse) -> Vec<(String, String)> {
    r.headers
        .iter()
        .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect()
}

pub fn pair(n: &str, v: &str) -> (String, String) {
    (n.to_owned(), v.to_owned())
}

/// A 403 with a `content-length` body.
pub fn deny_with(body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 403 Forbidden\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
    out.extend_from_slice(body);
    out
}

/// The next check on `c` is allowed, and made on a second, new connection: the first one was
/// not reused. `case` names the scenario in failure messages.
pub async fn next_check_on_a_new_connection(c: &ProviderClient, server: &Server, case: &str) {
    assert_eq!(check(c).await, allowed(), "{case}: the next check");
    assert_eq!(server.connections(), 2, "{case}");
    assert_eq!(server.conns_used(), [0, 1], "{case}");
}
