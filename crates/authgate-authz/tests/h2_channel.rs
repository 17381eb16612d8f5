//! The gRPC check channel (`h2_channel.rs`) through real sockets on 127.0.0.1: connections that go
//! away between checks, peers that never speak HTTP/2, large and oversized responses, gRPC
//! endings Envoy counts as errors, and many concurrent checks on one connection.
//!
//! The servers are either the tonic `AuthorizationServer` of `support` or a raw `h2` server whose
//! every frame the test chooses (`RawServer`). Every await is bounded: a broken channel fails a
//! test, it never hangs it.

mod support;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use authgate_authz::{CheckError, Decision, ProviderClient};
use authgate_config::HostPort;
use authgate_proto::auth::{CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse, check_response};
use authgate_proto::core::{HeaderValue as ProtoHeader, HeaderValueOption};
use bytes::{BufMut, Bytes, BytesMut};
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::{HeaderMap, HeaderValue, StatusCode};
use prost::Message;
use support::{ClientRequest, grpc_authz, grpc_provider, path_of, rpc_status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

/// The bound on any single wait of a test.
const LIMIT: Duration = Duration::from_secs(30);
/// `MAX_RESPONSE` in h2_channel.rs.
const MAX_RESPONSE: usize = 16 << 20;

// ---------------------------------------------------------------------------------------------
// Helpers

async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(LIMIT, f).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: nothing within {LIMIT:?}"),
    }
}

async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not reached within {LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    (listener, addr)
}

fn client_for(addr: SocketAddr, timeout: Duration) -> ProviderClient {
    let mut config = grpc_provider();
    config.timeout = timeout;
    let target = HostPort {
        host: addr.ip().to_string(),
        port: addr.port(),
    };
    ProviderClient::new(&config, target).expect("provider builds")
}

async fn check(c: &ProviderClient, path: &str) -> Decision {
    within(path, c.check(&ClientRequest::get(path).parts())).await
}

/// A decision for a failure message, without megabytes of body.
fn brief(d: &Decision) -> String {
    let s = format!("{d:?}");
    if s.len() > 300 {
        format!("{}… ({} chars)", s.chars().take(300).collect::<String>(), s.len())
    } else {
        s
    }
}

fn is_rpc_error(d: &Decision) -> bool {
    matches!(d, Decision::Error(CheckError::Rpc(code, _)) if *code != tonic::Code::Ok)
}

fn deny(body: impl Into<String>) -> CheckResponse {
    CheckResponse {
        status: rpc_status(7),
        dynamic_metadata: None,
        http_response: Some(check_response::HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: None,
            headers: vec![],
            body: body.into(),
        })),
    }
}

/// An allow whose `x-echo` response header carries `echo` (which check got which answer).
fn allow_echo(echo: &str) -> CheckResponse {
    #[allow(deprecated)]
    let header = HeaderValueOption {
        header: Some(ProtoHeader {
            key: "x-echo".into(),
            value: echo.into(),
            raw_value: vec![],
        }),
        append: None,
        append_action: 0,
        keep_empty_value: false,
    };
    CheckResponse {
        status: rpc_status(0),
        dynamic_metadata: None,
        http_response: Some(check_response::HttpResponse::OkResponse(OkHttpResponse {
            response_headers_to_add: vec![header],
            ..Default::default()
        })),
    }
}

fn echoed(d: &Decision) -> Option<String> {
    let Decision::Allow(m) = d else { return None };
    m.response
        .headers
        .iter()
        .find(|h| h.name == "x-echo")
        .and_then(|h| h.value.to_str().ok())
        .map(str::to_owned)
}

fn denial_body(d: &Decision) -> String {
    match d {
        Decision::Deny(r) => {
            assert_eq!(r.status, StatusCode::FORBIDDEN);
            String::from_utf8(r.body.to_vec()).expect("utf-8 body")
        }
        other => panic!("expected a denial, got {}", brief(other)),
    }
}

/// `len` pseudo-random letters (one shared buffer): a misplaced or lost chunk shows.
fn letters(len: usize) -> &'static str {
    static BUF: OnceLock<String> = OnceLock::new();
    let buf = BUF.get_or_init(|| {
        let mut x: u32 = 0x2545_f491;
        (0..MAX_RESPONSE + (1 << 20))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                char::from(b'a' + u8::try_from(x % 26).expect("< 26"))
            })
            .collect()
    });
    &buf[..len]
}

/// A denial whose encoded `CheckResponse` is exactly `len` bytes.
fn deny_of_encoded_len(len: usize) -> CheckResponse {
    let mut body = len;
    for _ in 0..8 {
        let resp = deny(letters(body));
        let got = resp.encoded_len();
        if got == len {
            return resp;
        }
        body = body + len - got;
    }
    panic!("no body length encodes to {len} bytes")
}

fn denied_text(resp: &CheckResponse) -> &str {
    match &resp.http_response {
        Some(check_response::HttpResponse::DeniedResponse(d)) => &d.body,
        _ => "",
    }
}

/// One gRPC length-prefixed message.
fn grpc_frame(msg: &impl Message) -> Bytes {
    let len = msg.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0);
    buf.put_u32(u32::try_from(len).expect("fits"));
    msg.encode(&mut buf).expect("encodes");
    buf.freeze()
}

// ---------------------------------------------------------------------------------------------
// A raw HTTP/2 gRPC server: every frame of the answer is the test's choice.

/// One response as it goes on the wire.
#[derive(Debug, Clone)]
struct Wire {
    status: u16,
    headers: Vec<(&'static str, String)>,
    /// END_STREAM on the HEADERS frame (a trailers-only response).
    end_on_headers: bool,
    /// One DATA frame each, in order (empty ones included).
    data: Vec<Bytes>,
    /// `None`: END_STREAM on the last DATA frame, no trailers.
    trailers: Option<Vec<(&'static str, String)>>,
}

impl Wire {
    fn frames(data: Vec<Bytes>) -> Self {
        Self {
            status: 200,
            headers: vec![("content-type", "application/grpc".into())],
            end_on_headers: false,
            data,
            trailers: Some(vec![("grpc-status", "0".into())]),
        }
    }

    fn message(resp: &CheckResponse) -> Self {
        Self::frames(vec![grpc_frame(resp)])
    }

    fn trailers_only(headers: &[(&'static str, &str)]) -> Self {
        let mut wire = Self::frames(vec![]);
        wire.end_on_headers = true;
        wire.trailers = None;
        wire.headers
            .extend(headers.iter().map(|(n, v)| (*n, (*v).to_owned())));
        wire
    }

    fn trailers(mut self, trailers: &[(&'static str, &str)]) -> Self {
        self.trailers = Some(trailers.iter().map(|(n, v)| (*n, (*v).to_owned())).collect());
        self
    }

    fn no_trailers(mut self) -> Self {
        self.trailers = None;
        self
    }
}

type Custom = Box<dyn FnOnce(SendResponse<Bytes>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

enum Reply {
    Wire(Wire),
    /// Never answer (the stream stays open until the connection goes).
    Hold,
    /// The test writes the response itself.
    Custom(Custom),
}

enum Cmd {
    /// A graceful GOAWAY. With a sender, it fires once the client has processed the GOAWAY: two
    /// PING round trips later (the second PING leaves after the GOAWAY, and the client handles
    /// frames in order).
    GoAway(Option<oneshot::Sender<()>>),
    /// Drop the connection: TCP closes with no GOAWAY.
    Close,
}

struct Call {
    /// The connection's number, from 0 in accept order.
    conn: usize,
    check: CheckRequest,
    ctl: mpsc::UnboundedSender<Cmd>,
}

type Script = Arc<dyn Fn(Call) -> Pin<Box<dyn Future<Output = Reply> + Send>> + Send + Sync>;

fn script<F, Fut>(f: F) -> Script
where
    F: Fn(Call) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    Arc::new(move |call| Box::pin(f(call)))
}

/// Answers `conn <n> <path>` as a denial body: which connection carried which check.
fn echo_script() -> Script {
    script(|call| async move {
        let text = format!("conn {} {}", call.conn, path_of(&call.check));
        Reply::Wire(Wire::message(&deny(text)))
    })
}

/// (connection number, path) of every check request the server read.
type Calls = Arc<Mutex<Vec<(usize, String)>>>;

struct CountOnDrop(Arc<AtomicUsize>);

impl Drop for CountOnDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

struct RawServer {
    calls: Calls,
    accepted: Arc<AtomicUsize>,
    /// Connections whose server side has ended (TCP closed).
    ended: Arc<AtomicUsize>,
    ctls: Arc<Mutex<Vec<mpsc::UnboundedSender<Cmd>>>>,
    task: JoinHandle<()>,
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawServer {
    fn start(listener: TcpListener, max_streams: Option<u32>, script: Script) -> Self {
        let calls: Calls = Arc::default();
        let accepted = Arc::new(AtomicUsize::new(0));
        let ended = Arc::new(AtomicUsize::new(0));
        let ctls: Arc<Mutex<Vec<mpsc::UnboundedSender<Cmd>>>> = Arc::default();
        let (c, a, e, k) = (calls.clone(), accepted.clone(), ended.clone(), ctls.clone());
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    next = listener.accept() => {
                        let Ok((tcp, _)) = next else { continue };
                        let no = a.fetch_add(1, Ordering::SeqCst);
                        let (tx, rx) = mpsc::unbounded_channel();
                        k.lock().expect("lock").push(tx.clone());
                        let conn = RawConn {
                            no,
                            max_streams,
                            script: script.clone(),
                            calls: c.clone(),
                            ctl: tx,
                            _ended: CountOnDrop(e.clone()),
                        };
                        conns.spawn(conn.serve(tcp, rx));
                    }
                    Some(_) = conns.join_next() => {}
                }
            }
        });
        Self {
            calls,
            accepted,
            ended,
            ctls,
            task,
        }
    }

    fn calls(&self) -> Vec<(usize, String)> {
        self.calls.lock().expect("lock").clone()
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn ctl(&self, conn: usize, cmd: Cmd) {
        let ctls = self.ctls.lock().expect("lock");
        assert!(
            ctls[conn].send(cmd).is_ok(),
            "connection {conn} is no longer served"
        );
    }
}

struct RawConn {
    no: usize,
    max_streams: Option<u32>,
    script: Script,
    calls: Calls,
    ctl: mpsc::UnboundedSender<Cmd>,
    /// Counts when the connection task ends, after the connection (a parameter drops last).
    _ended: CountOnDrop,
}

impl RawConn {
    async fn serve(self, tcp: tokio::net::TcpStream, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        let mut builder = h2::server::Builder::new();
        if let Some(max) = self.max_streams {
            builder.max_concurrent_streams(max);
        }
        let Ok(mut conn) = builder.handshake::<_, Bytes>(tcp).await else {
            return;
        };
        let mut pings = conn.ping_pong();
        // Dropped before `conn` (declared after it): handlers never outlive the connection.
        let mut handlers = JoinSet::new();
        loop {
            tokio::select! {
                next = conn.accept() => {
                    let Some(Ok((req, respond))) = next else { break };
                    let (no, script, calls, ctl) =
                        (self.no, self.script.clone(), self.calls.clone(), self.ctl.clone());
                    handlers.spawn(async move {
                        let Ok(check) = read_check(req.into_body()).await else { return };
                        calls.lock().expect("lock").push((no, path_of(&check)));
                        match script(Call { conn: no, check, ctl }).await {
                            Reply::Wire(wire) => {
                                let _ = send_wire(respond, wire).await;
                            }
                            Reply::Hold => {
                                let _respond = respond;
                                std::future::pending::<()>().await;
                            }
                            Reply::Custom(f) => f(respond).await,
                        }
                    });
                }
                Some(cmd) = rx.recv() => match cmd {
                    Cmd::Close => return,
                    Cmd::GoAway(done) => {
                        conn.graceful_shutdown();
                        if let (Some(done), Some(mut pp)) = (done, pings.take()) {
                            handlers.spawn(async move {
                                for _ in 0..2 {
                                    if pp.ping(h2::Ping::opaque()).await.is_err() {
                                        return;
                                    }
                                }
                                let _ = done.send(());
                            });
                        }
                    }
                },
                Some(_) = handlers.join_next() => {}
            }
        }
    }
}

async fn read_check(mut body: RecvStream) -> Result<CheckRequest, String> {
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        let _ = body.flow_control().release_capacity(chunk.len());
        buf.extend_from_slice(&chunk);
    }
    if buf.len() < 5 || buf[0] != 0 {
        return Err("not one uncompressed gRPC message".into());
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    let msg = buf.get(5..5 + len).ok_or("truncated message")?;
    CheckRequest::decode(msg).map_err(|e| e.to_string())
}

/// Sends `chunk` as DATA as the peer's windows allow (nothing large is buffered); a chunk that
/// fits is one DATA frame.
async fn send_chunk(stream: &mut SendStream<Bytes>, mut chunk: Bytes, end: bool) -> Result<(), h2::Error> {
    if chunk.is_empty() {
        return stream.send_data(chunk, end);
    }
    while !chunk.is_empty() {
        stream.reserve_capacity(chunk.len());
        while stream.capacity() == 0 {
            match std::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Err(h2::Reason::CANCEL.into()),
            }
        }
        let piece = chunk.split_to(stream.capacity().min(chunk.len()));
        stream.send_data(piece, end && chunk.is_empty())?;
    }
    Ok(())
}

fn header_map(pairs: Vec<(&'static str, String)>) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(name, HeaderValue::from_str(&value).expect("valid value"));
    }
    map
}

async fn send_wire(mut respond: SendResponse<Bytes>, wire: Wire) -> Result<(), h2::Error> {
    let mut head = http::Response::new(());
    *head.status_mut() = StatusCode::from_u16(wire.status).expect("status");
    *head.headers_mut() = header_map(wire.headers);
    let mut stream = respond.send_response(head, wire.end_on_headers)?;
    if wire.end_on_headers {
        return Ok(());
    }
    let frames = wire.data.len();
    for (i, chunk) in wire.data.into_iter().enumerate() {
        let end = i + 1 == frames && wire.trailers.is_none();
        send_chunk(&mut stream, chunk, end).await?;
    }
    match wire.trailers {
        Some(trailers) => stream.send_trailers(header_map(trailers))?,
        None if frames == 0 => stream.send_data(Bytes::new(), true)?,
        None => {}
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 1. The service's connection goes away between checks.

/// An idle connection that the service ends (graceful GOAWAY; a plain TCP close; the whole
/// service restarted on the same port) is replaced by the next check, which is sent once.
#[tokio::test]
async fn a_connection_ended_between_checks_is_replaced() {
    for mode in ["goaway", "close", "restart"] {
        let (listener, addr) = bind().await;
        let mut server = RawServer::start(listener, None, echo_script());
        let first_calls = server.calls.clone();
        let first_ended = server.ended.clone();
        let c = client_for(addr, Duration::from_secs(5));
        assert_eq!(denial_body(&check(&c, "/first").await), "conn 0 /first", "{mode}");

        match mode {
            "goaway" => server.ctl(0, Cmd::GoAway(None)),
            "close" => server.ctl(0, Cmd::Close),
            _ => server.task.abort(),
        }
        wait_until(mode, || first_ended.load(Ordering::SeqCst) == 1).await;
        // The client's connection task sees the end (EOF, or the GOAWAY it answers by closing).
        tokio::time::sleep(Duration::from_millis(100)).await;
        let expected_conn = if mode == "restart" {
            // The old server (listener included) is gone: a new one on the same port.
            let listener = within("rebind", async {
                loop {
                    match TcpListener::bind(addr).await {
                        Ok(l) => break l,
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
            })
            .await;
            server = RawServer::start(listener, None, echo_script());
            0
        } else {
            1
        };

        let d = check(&c, "/second").await;
        assert_eq!(denial_body(&d), format!("conn {expected_conn} /second"), "{mode}");
        let mut all = first_calls.lock().expect("lock").clone();
        if mode == "restart" {
            assert_eq!(server.accepted(), 1, "{mode}");
            all.extend(server.calls());
        } else {
            assert_eq!(server.accepted(), 2, "{mode}");
        }
        assert_eq!(
            all,
            [(0, "/first".to_owned()), (expected_conn, "/second".to_owned())],
            "{mode}: each check sent exactly once"
        );
    }
}

/// The service starts a graceful shutdown (GOAWAY) while a slow check is in flight: the cached
/// connection is still open — the slow stream keeps it — but takes no new stream. The next check
/// must notice that before sending and go to a fresh connection (the retry in `ready_sender`),
/// sent exactly once; the slow check still completes on the old connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_going_away_under_a_slow_check_is_replaced_before_sending() {
    let (listener, addr) = bind().await;
    let release = Arc::new(Notify::new());
    let gate = release.clone();
    let server = RawServer::start(
        listener,
        None,
        script(move |call| {
            let gate = gate.clone();
            async move {
                let path = path_of(&call.check);
                if path == "/slow" {
                    gate.notified().await;
                }
                Reply::Wire(Wire::message(&deny(format!("conn {} {path}", call.conn))))
            }
        }),
    );
    let c = Arc::new(client_for(addr, Duration::from_secs(20)));
    let slow = tokio::spawn({
        let c = c.clone();
        async move { c.check(&ClientRequest::get("/slow").parts()).await }
    });
    wait_until("the slow check reached the server", || server.calls().len() == 1).await;

    let (done, processed) = oneshot::channel();
    server.ctl(0, Cmd::GoAway(Some(done)));
    within("the client processed the GOAWAY", processed)
        .await
        .expect("GOAWAY acknowledged");

    let d = check(&c, "/next").await;
    assert_eq!(denial_body(&d), "conn 1 /next", "{}", brief(&d));
    assert_eq!(
        server.calls(),
        [(0, "/slow".to_owned()), (1, "/next".to_owned())],
        "sent once, on the new connection"
    );

    release.notify_one();
    let d = within("the slow check", slow).await.expect("task");
    assert_eq!(denial_body(&d), "conn 0 /slow");

    // The new connection is the one kept.
    assert_eq!(denial_body(&check(&c, "/after").await), "conn 1 /after");
    assert_eq!(server.accepted(), 2);
    assert_eq!(server.calls().len(), 3);
}

/// A check whose connection dies after the request was sent is an error, and is not sent again
/// (the service may have acted on it); the next check gets a new connection.
#[tokio::test]
async fn a_check_lost_with_its_connection_is_not_sent_again() {
    let (listener, addr) = bind().await;
    let server = RawServer::start(
        listener,
        None,
        script(|call| async move {
            if call.conn == 0 {
                let _ = call.ctl.send(Cmd::Close);
                return Reply::Hold;
            }
            Reply::Wire(Wire::message(&deny(format!(
                "conn {} {}",
                call.conn,
                path_of(&call.check)
            ))))
        }),
    );
    let c = client_for(addr, Duration::from_secs(10));
    let started = Instant::now();
    let d = check(&c, "/lost").await;
    assert!(is_rpc_error(&d), "{}", brief(&d));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a transport error, not the timeout: {:?}",
        started.elapsed()
    );
    // A resend would reach connection 1 and be answered.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.calls(), [(0, "/lost".to_owned())]);
    assert_eq!(server.accepted(), 1);

    assert_eq!(denial_body(&check(&c, "/next").await), "conn 1 /next");
    assert_eq!(server.calls().len(), 2);
}

// ---------------------------------------------------------------------------------------------
// 2. Peers that do not speak HTTP/2.

/// A listener that accepts and reads but never writes: each check ends with the provider's
/// timeout as a timeout error, bounded, concurrent checks included (none waits behind another's
/// connection attempt). A client for a good service then checks normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_times_out_within_the_provider_timeout() {
    let (listener, addr) = bind().await;
    let accepted = Arc::new(AtomicUsize::new(0));
    let first_bytes = Arc::new(Mutex::new(Vec::<u8>::new()));
    let (a, fb) = (accepted.clone(), first_bytes.clone());
    let silent = tokio::spawn(async move {
        let mut held = JoinSet::new();
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                continue;
            };
            let first = a.fetch_add(1, Ordering::SeqCst) == 0;
            let fb = fb.clone();
            held.spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = tcp.read(&mut buf).await {
                    if first {
                        fb.lock().expect("lock").extend_from_slice(&buf[..n]);
                    }
                }
                // EOF: keep the socket anyway.
                std::future::pending::<()>().await;
            });
        }
    });

    let timeout = Duration::from_millis(300);
    let c = Arc::new(client_for(addr, timeout));
    let started = Instant::now();
    let d = check(&c, "/").await;
    let took = started.elapsed();
    assert!(
        matches!(&d, Decision::Error(e) if e.is_timeout()),
        "{}",
        brief(&d)
    );
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(
        accepted.load(Ordering::SeqCst) >= 1,
        "the TCP connection was made"
    );
    assert!(
        first_bytes
            .lock()
            .expect("lock")
            .starts_with(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        "the client spoke HTTP/2 with prior knowledge"
    );

    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..10 {
        let c = c.clone();
        tasks.spawn(async move { c.check(&ClientRequest::get(&format!("/{i}")).parts()).await });
    }
    let decisions = within("concurrent checks", tasks.join_all()).await;
    let took = started.elapsed();
    for d in &decisions {
        assert!(matches!(d, Decision::Error(e) if e.is_timeout()), "{}", brief(d));
    }
    assert!(took < Duration::from_secs(3), "not serialized: {took:?}");

    // The configuration changed to a good service: a new client checks normally.
    let good = grpc_authz(None, |_| Ok(CheckResponse::default())).await;
    let c = client_for(good.addr, timeout);
    assert_eq!(check(&c, "/").await, Decision::Allow(Default::default()));
    silent.abort();
}

/// A peer that answers in HTTP/1.1 and closes: an error at once, not the timeout; the broken
/// connection is not kept (the next check connects again).
#[tokio::test]
async fn a_peer_speaking_http1_fails_fast() {
    let (listener, addr) = bind().await;
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = accepted.clone();
    let peer = tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                continue;
            };
            a.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 1024];
            let _ = tcp.read(&mut buf).await;
            let _ = tcp
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
            let _ = tcp.shutdown().await;
        }
    });
    let c = client_for(addr, Duration::from_secs(10));
    for round in 1..=2 {
        let started = Instant::now();
        let d = check(&c, "/").await;
        assert!(is_rpc_error(&d), "{}", brief(&d));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(accepted.load(Ordering::SeqCst), round);
    }
    peer.abort();
}

// ---------------------------------------------------------------------------------------------
// 3. Large and oversized responses.

/// A denial with a body over 1 MiB (more than the receive windows: many DATA frames and
/// WINDOW_UPDATEs) decodes exactly, three times over one connection: the windows are given back.
#[tokio::test]
async fn a_large_denial_decodes_exactly_and_gives_the_windows_back() {
    let body_len = (1 << 20) + 54_321;
    let server = grpc_authz(None, move |req| {
        Ok(deny(format!("{}:{}", path_of(req), letters(body_len))))
    })
    .await;
    let c = client_for(server.addr, Duration::from_secs(20));
    for i in 0..3 {
        let path = format!("/big{i}");
        let d = check(&c, &path).await;
        let body = denial_body(&d);
        let expected = format!("{path}:{}", letters(body_len));
        assert_eq!(body.len(), expected.len());
        assert!(body == expected, "{path}: the body differs");
    }
    assert_eq!(server.count(), 3);
    assert_eq!(server.connections(), 1);
}

/// The same large message cut at awkward places: the 5-byte prefix over three DATA frames, empty
/// DATA frames, then odd-sized frames.
#[tokio::test]
async fn a_message_split_over_odd_data_frames_decodes_exactly() {
    let (listener, addr) = bind().await;
    let server = RawServer::start(
        listener,
        None,
        script(|call| async move {
            let path = path_of(&call.check);
            let frame = grpc_frame(&deny(format!("{path}:{}", letters(1 << 20))));
            let mut data = vec![
                frame.slice(0..2),
                Bytes::new(),
                frame.slice(2..4),
                frame.slice(4..5),
                frame.slice(5..6),
                Bytes::new(),
            ];
            let mut at = 6;
            while at < frame.len() {
                let end = (at + 7_001).min(frame.len());
                data.push(frame.slice(at..end));
                at = end;
            }
            Reply::Wire(Wire::frames(data))
        }),
    );
    let c = client_for(addr, Duration::from_secs(20));
    for path in ["/split1", "/split2"] {
        let body = denial_body(&check(&c, path).await);
        let expected = format!("{path}:{}", letters(1 << 20));
        assert_eq!(body.len(), expected.len());
        assert!(body == expected, "{path}: the body differs");
    }
    assert_eq!(server.accepted(), 1);
}

/// Messages up to the 16 MiB limit are accepted, the limit itself included (h2_channel.rs:
/// `MAX_RESPONSE`, "largest response message accepted"), over one connection.
#[tokio::test]
async fn messages_up_to_16_mib_are_accepted() {
    let cases: Arc<Vec<(String, CheckResponse)>> = Arc::new(
        [
            MAX_RESPONSE - 20_000,
            MAX_RESPONSE - 10_000,
            MAX_RESPONSE - 1,
            MAX_RESPONSE,
        ]
        .into_iter()
        .map(|len| (format!("/len{len}"), deny_of_encoded_len(len)))
        .collect(),
    );
    let table = cases.clone();
    let server = grpc_authz(None, move |req| {
        let path = path_of(req);
        Ok(table
            .iter()
            .find(|(p, _)| *p == path)
            .map_or_else(CheckResponse::default, |(_, r)| r.clone()))
    })
    .await;
    let c = client_for(server.addr, Duration::from_secs(25));
    let mut wrong = Vec::new();
    for (path, resp) in cases.iter() {
        let d = check(&c, path).await;
        match &d {
            Decision::Deny(r) if r.body.as_ref() == denied_text(resp).as_bytes() => {}
            _ => wrong.push(format!("{path} ({} bytes): {}", resp.encoded_len(), brief(&d))),
        }
    }
    assert!(wrong.is_empty(), "not accepted:\n{}", wrong.join("\n"));
    assert_eq!(server.connections(), 1);
}

/// One byte over 16 MiB is an error (not an OOM, not a hang), after which the same connection
/// still carries a large answer (the reset stream's unread data does not eat the window).
#[tokio::test]
async fn a_message_over_16_mib_is_an_error_and_the_connection_survives() {
    let over = Arc::new(deny_of_encoded_len(MAX_RESPONSE + 1));
    let o = over.clone();
    let server = grpc_authz(None, move |req| {
        Ok(match path_of(req).as_str() {
            "/over" => (*o).clone(),
            path => deny(format!("{path}:{}", letters(1 << 20))),
        })
    })
    .await;
    let c = client_for(server.addr, Duration::from_secs(25));

    let started = Instant::now();
    let d = check(&c, "/over").await;
    assert!(
        matches!(&d, Decision::Error(CheckError::Rpc(tonic::Code::Internal, _))),
        "{}",
        brief(&d)
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );

    for path in ["/after1", "/after2"] {
        let body = denial_body(&check(&c, path).await);
        assert!(
            body == format!("{path}:{}", letters(1 << 20)),
            "{path}: the body differs"
        );
    }
    assert_eq!(server.connections(), 1);
    assert_eq!(server.count(), 3);
}

/// A response that announces 64 MiB and keeps streaming: the check stops reading once past the
/// limit (an error well before the timeout) and resets the stream, so the service stops sending
/// at about the limit plus the receive window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_response_is_cut_at_the_limit() {
    let (listener, addr) = bind().await;
    let sent = Arc::new(AtomicUsize::new(0));
    let stopped = Arc::new(AtomicBool::new(false));
    let (s, st) = (sent.clone(), stopped.clone());
    let server = RawServer::start(
        listener,
        None,
        script(move |call| {
            let (sent, stopped) = (s.clone(), st.clone());
            async move {
                if path_of(&call.check) != "/endless" {
                    return Reply::Wire(Wire::message(&CheckResponse::default()));
                }
                Reply::Custom(Box::new(move |mut respond| {
                    Box::pin(async move {
                        let mut head = http::Response::new(());
                        head.headers_mut()
                            .insert("content-type", HeaderValue::from_static("application/grpc"));
                        let Ok(mut stream) = respond.send_response(head, false) else {
                            return;
                        };
                        let chunk = Bytes::from(vec![b'x'; 16 << 10]);
                        let prefix = Bytes::from_static(&[0, 4, 0, 0, 0]); // 64 MiB
                        let mut ok = send_chunk(&mut stream, prefix, false).await.is_ok();
                        while ok && sent.load(Ordering::SeqCst) < 64 << 20 {
                            ok = send_chunk(&mut stream, chunk.clone(), false).await.is_ok();
                            if ok {
                                sent.fetch_add(chunk.len(), Ordering::SeqCst);
                            }
                        }
                        stopped.store(true, Ordering::SeqCst);
                        if ok {
                            // All sent and the client still reading: never end the stream.
                            std::future::pending::<()>().await;
                        }
                    })
                }))
            }
        }),
    );
    let c = client_for(addr, Duration::from_secs(25));
    let started = Instant::now();
    let d = check(&c, "/endless").await;
    assert!(
        matches!(&d, Decision::Error(CheckError::Rpc(tonic::Code::Internal, _))),
        "{}",
        brief(&d)
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    wait_until("the server saw the stream reset", || {
        stopped.load(Ordering::SeqCst)
    })
    .await;
    let sent = sent.load(Ordering::SeqCst);
    assert!(
        (MAX_RESPONSE..=MAX_RESPONSE + (3 << 20)).contains(&sent),
        "{sent} bytes sent"
    );
    // The connection is still good.
    assert_eq!(check(&c, "/small").await, Decision::Allow(Default::default()));
    assert_eq!(server.accepted(), 1);
}

// ---------------------------------------------------------------------------------------------
// 4. How a gRPC call ends.

/// Every way a call can end without an OK status and a message is a check error, as Envoy's gRPC
/// client counts it (`ext_authz.error`; `failOpen` / `statusOnError` apply) — never an allow, a
/// denial or an invalid answer. Envoy's codes, from `Grpc::AsyncStreamImpl`: trailers without
/// grpc-status → Unknown; END_STREAM on DATA → Unknown; OK without a message → Internal; non-200
/// without grpc-status → the HTTP status mapped (503 → Unavailable); bad frames → Internal.
#[tokio::test]
async fn grpc_endings_that_are_errors() {
    let allow = CheckResponse {
        status: rpc_status(0),
        dynamic_metadata: None,
        http_response: Some(check_response::HttpResponse::OkResponse(OkHttpResponse::default())),
    };
    let allow_frame = grpc_frame(&allow);
    let mut compressed = allow_frame.to_vec();
    compressed[0] = 1;
    let mut truncated = vec![0, 0, 0, 0, 100];
    truncated.extend_from_slice(&allow_frame[5..]);
    let mut huge_prefix = vec![0, 0xff, 0xff, 0xff, 0xff];
    huge_prefix.extend_from_slice(&allow_frame[5..]);

    let message = Wire::frames(vec![allow_frame.clone()]);
    let mut http_503 = Wire::trailers_only(&[]);
    http_503.status = 503;
    let mut http_503_status = Wire::trailers_only(&[("grpc-status", "14"), ("grpc-message", "gone")]);
    http_503_status.status = 503;
    #[allow(clippy::type_complexity)]
    let cases: Vec<(&'static str, Wire, Option<(tonic::Code, &'static str)>)> = vec![
        (
            "/trailers-only-permission-denied",
            Wire::trailers_only(&[("grpc-status", "7"), ("grpc-message", "nope")]),
            Some((tonic::Code::PermissionDenied, "nope")),
        ),
        (
            "/trailers-only-unauthenticated",
            Wire::trailers_only(&[("grpc-status", "16")]),
            Some((tonic::Code::Unauthenticated, "")),
        ),
        (
            "/trailers-only-ok",
            Wire::trailers_only(&[("grpc-status", "0")]),
            None,
        ),
        ("/trailers-only-no-status", Wire::trailers_only(&[]), None),
        ("/http-503", http_503, None),
        ("/http-503-with-grpc-status", http_503_status, None),
        ("/end-stream-on-data", message.clone().no_trailers(), None),
        (
            "/trailers-without-grpc-status",
            message.clone().trailers(&[("x-other", "1")]),
            None,
        ),
        (
            "/unparsable-grpc-status",
            message.clone().trailers(&[("grpc-status", "abc")]),
            None,
        ),
        (
            "/message-then-error",
            message
                .clone()
                .trailers(&[("grpc-status", "13"), ("grpc-message", "oops")]),
            Some((tonic::Code::Internal, "oops")),
        ),
        ("/ok-without-message", Wire::frames(vec![]), None),
        (
            "/compressed-flag",
            Wire::frames(vec![Bytes::from(compressed)]),
            None,
        ),
        (
            "/truncated-message",
            Wire::frames(vec![Bytes::from(truncated)]),
            None,
        ),
        (
            "/huge-length-prefix",
            Wire::frames(vec![Bytes::from(huge_prefix)]),
            None,
        ),
    ];
    let table: Arc<Vec<(&'static str, Wire)>> =
        Arc::new(cases.iter().map(|(p, w, _)| (*p, w.clone())).collect());
    let (listener, addr) = bind().await;
    let t = table.clone();
    let _server = RawServer::start(
        listener,
        None,
        script(move |call| {
            let path = path_of(&call.check);
            let wire = t
                .iter()
                .find(|(p, _)| *p == path)
                .map_or_else(|| message.clone(), |(_, w)| w.clone());
            async move { Reply::Wire(wire) }
        }),
    );
    let c = client_for(addr, Duration::from_secs(10));

    // The control: the same message with grpc-status 0 in the trailers is an allow.
    assert_eq!(
        check(&c, "/good").await,
        Decision::Allow(Default::default()),
        "the raw server's gRPC is well formed"
    );

    let mut wrong = Vec::new();
    for (path, _, exact) in &cases {
        let d = check(&c, path).await;
        let right = match exact {
            Some((code, msg)) => d == Decision::Error(CheckError::Rpc(*code, (*msg).to_owned())),
            None => is_rpc_error(&d),
        };
        if !right {
            wrong.push(format!("{path}: {}", brief(&d)));
        }
    }
    assert!(wrong.is_empty(), "not counted as errors:\n{}", wrong.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// 5. Many concurrent checks.

/// 200 checks started at once on a fresh client: one connection attempt, every check answered
/// with its own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_checks_share_one_connection() {
    let server = grpc_authz(None, |req| Ok(allow_echo(&path_of(req)))).await;
    let c = Arc::new(client_for(server.addr, Duration::from_secs(20)));
    let mut tasks = JoinSet::new();
    for i in 0..200 {
        let c = c.clone();
        tasks.spawn(async move {
            let path = format!("/c{i}");
            let d = c.check(&ClientRequest::get(&path).parts()).await;
            (path, d)
        });
    }
    for (path, d) in within("200 checks", tasks.join_all()).await {
        assert_eq!(echoed(&d).as_deref(), Some(path.as_str()), "{}", brief(&d));
    }
    assert_eq!(server.count(), 200);
    assert!(server.connections() <= 2, "{} connections", server.connections());
}

/// A TCP proxy in front of `upstream` that delays everything the service sends back by `delay`
/// (a network round trip; on loopback the service's SETTINGS arrive before any burst).
async fn delaying_proxy(upstream: SocketAddr, delay: Duration) -> (SocketAddr, JoinHandle<()>) {
    let (listener, addr) = bind().await;
    let task = tokio::spawn(async move {
        let mut pipes = JoinSet::new();
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            let Ok(service) = tokio::net::TcpStream::connect(upstream).await else {
                continue;
            };
            let (mut client_rd, mut client_wr) = client.into_split();
            let (mut service_rd, mut service_wr) = service.into_split();
            pipes.spawn(async move {
                let _ = tokio::io::copy(&mut client_rd, &mut service_wr).await;
                let _ = service_wr.shutdown().await;
            });
            let (tx, mut rx) = mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
            pipes.spawn(async move {
                let mut buf = vec![0u8; 64 << 10];
                while let Ok(n @ 1..) = service_rd.read(&mut buf).await {
                    if tx
                        .send((tokio::time::Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            });
            pipes.spawn(async move {
                while let Some((at, bytes)) = rx.recv().await {
                    tokio::time::sleep_until(at).await;
                    if client_wr.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                let _ = client_wr.shutdown().await;
            });
        }
    });
    (addr, task)
}

/// A burst on a fresh connection larger than the service's stream limit (tonic over hyper:
/// SETTINGS_MAX_CONCURRENT_STREAMS 200), 20 ms away. The checks leave before the service's
/// SETTINGS arrive, so its limit is not known yet: the client must not open more streams than a
/// service may accept (hyper's client, which this channel replaced, opens at most 100 until
/// then, as nghttp2 does in Envoy), or must retry the streams refused (REFUSED_STREAM: never
/// processed, safe to resend). Every check must succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_burst_beyond_the_service_stream_limit_is_not_refused() {
    let server = grpc_authz(None, |req| Ok(allow_echo(&path_of(req)))).await;
    let (proxy, proxy_task) = delaying_proxy(server.addr, Duration::from_millis(20)).await;
    let c = Arc::new(client_for(proxy, Duration::from_secs(20)));
    let mut tasks = JoinSet::new();
    for i in 0..300 {
        let c = c.clone();
        tasks.spawn(async move {
            let path = format!("/b{i}");
            let d = c.check(&ClientRequest::get(&path).parts()).await;
            (path, d)
        });
    }
    let mut failed = Vec::new();
    for (path, d) in within("300 checks", tasks.join_all()).await {
        if echoed(&d).as_deref() != Some(path.as_str()) {
            failed.push(format!("{path}: {}", brief(&d)));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of 300 checks failed, e.g. {}",
        failed.len(),
        failed.first().map_or("", String::as_str)
    );
    assert_eq!(server.count(), 300);
    assert!(server.connections() <= 2, "{} connections", server.connections());
    proxy_task.abort();
}

/// Against a service allowing only 8 concurrent streams (known from its SETTINGS: one check has
/// been made), 200 concurrent checks wait for a stream — none is refused — over one connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checks_respect_the_peer_stream_limit() {
    let (listener, addr) = bind().await;
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (f, p) = (in_flight.clone(), peak.clone());
    let server = RawServer::start(
        listener,
        Some(8),
        script(move |call| {
            let (in_flight, peak) = (f.clone(), p.clone());
            async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(3)).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                Reply::Wire(Wire::message(&allow_echo(&path_of(&call.check))))
            }
        }),
    );
    let c = Arc::new(client_for(addr, Duration::from_secs(20)));
    assert_eq!(echoed(&check(&c, "/warm").await).as_deref(), Some("/warm"));
    peak.store(0, Ordering::SeqCst);
    let mut tasks = JoinSet::new();
    for i in 0..200 {
        let c = c.clone();
        tasks.spawn(async move {
            let path = format!("/s{i}");
            let d = c.check(&ClientRequest::get(&path).parts()).await;
            (path, d)
        });
    }
    for (path, d) in within("200 checks", tasks.join_all()).await {
        assert_eq!(echoed(&d).as_deref(), Some(path.as_str()), "{}", brief(&d));
    }
    assert_eq!(server.calls().len(), 201);
    assert!(server.accepted() <= 2, "{} connections", server.accepted());
    let peak = peak.load(Ordering::SeqCst);
    assert!((2..=8).contains(&peak), "peak of {peak} concurrent streams");
}
