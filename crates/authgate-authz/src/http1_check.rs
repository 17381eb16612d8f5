//! The HTTP authz provider's transport: keep-alive HTTP/1.1 connections to the authz service,
//! one check exchange at a time on each, driven by the check's own task.
//!
//! A check is one request and one answer. hyper's client connection (a task per connection,
//! a dispatch channel and a oneshot per request, the answer's head parsed in the connection
//! task and handed over) was most of the 30 k instructions the HTTP check added to a proxied
//! request; this client saved 8 k of them (BENCHMARKS.md, row 22). The request is written in
//! one `write`, the answer is parsed with `httparse` from the connection's read buffer on the
//! check's own task, and header values are slices of that buffer.
//!
//! What is accepted is strict, and anything else fails the check (the caller fails closed or
//! applies `failOpen`), with the connection dropped:
//! - a status line and at most [`MAX_HEADERS`] header lines within [`MAX_HEAD`] bytes, no
//!   obs-fold; interim 1xx answers are skipped (at most [`MAX_INTERIM`]), a 101 is an error;
//! - the body framed by `Content-Length` (repeated values must agree), by `Transfer-Encoding:
//!   chunked` (the only coding accepted; with a `Content-Length` too it is an error, as Envoy
//!   rejects it), or by the connection's close; no body after HEAD, 204, 304;
//! - at most [`MAX_BODY`] bytes of body.
//!
//! A connection is kept for the next check only when the answer was HTTP/1.1 without
//! `Connection: close` (or HTTP/1.0 with `Connection: keep-alive`), was framed by length or
//! chunks (or had no body), and nothing followed it. Before reuse the kernel is asked whether
//! the service closed the idle connection or sent anything on it (a non-blocking peek); if so
//! it is dropped. A request is never retried once written.

use std::future::poll_fn;
use std::mem::MaybeUninit;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower_service::Service;

use crate::http_provider::error_chain;
use crate::resolve::TokioResolver;

/// An answer's head (status line and headers) larger than this is refused (Envoy's default
/// `max_response_headers_kb` is 60).
pub(crate) const MAX_HEAD: usize = 64 << 10;
/// Header lines in one answer (hyper's and Envoy's default limit).
pub(crate) const MAX_HEADERS: usize = 100;
/// Deny bodies are buffered whole (as Envoy's async client does); past this the answer is a
/// transport error rather than held in memory.
pub(crate) const MAX_BODY: usize = 4 << 20;
/// A chunk-size line or a trailer section longer than this is refused.
const MAX_CHUNK_LINE: usize = 4 << 10;
const MAX_TRAILERS: usize = 16 << 10;
/// Idle connections kept; one finishing beyond this is closed.
const MAX_IDLE: usize = 1024;
/// Chunk extensions (ignored) in one body.
const MAX_CHUNK_EXTENSIONS: usize = 16 << 10;
/// Interim (1xx) answers skipped before the final one.
const MAX_INTERIM: usize = 16;
/// Room reserved before each read.
const READ_RESERVE: usize = 8 << 10;

/// The authz service's answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// Keep-alive connections to one authz service.
pub(crate) struct CheckConnections {
    connector: HttpConnector<TokioResolver>,
    /// `http://host:port` of the service.
    dst: Uri,
    idle_timeout: Duration,
    /// Most recently used last.
    idle: Mutex<Vec<Idle>>,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet consumed; empty between exchanges.
    buf: BytesMut,
    /// The request being written (its allocation reused by the next one).
    out: Vec<u8>,
    /// The header lines of the answer being read (reused likewise).
    lines: Vec<Line>,
}

impl CheckConnections {
    pub(crate) fn new(connector: HttpConnector<TokioResolver>, dst: Uri, idle_timeout: Duration) -> Self {
        Self {
            connector,
            dst,
            idle_timeout,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Sends `request` (origin-form target, headers as given, body after them) and reads the
    /// whole answer. Errors are the text of a `CheckError::Transport`.
    pub(crate) async fn exchange(&self, request: &Request<Bytes>) -> Result<Answer, String> {
        let mut conn = match self.take_idle() {
            Some(conn) => conn,
            None => self.connect().await?,
        };
        let mut out = std::mem::take(&mut conn.out);
        out.clear();
        encode_request(request, &mut out);
        conn.stream
            .write_all(&out)
            .await
            .map_err(|e| format!("sending the check request: {e}"))?;
        // Kept for the next request on this connection, unless a large body grew it.
        if out.capacity() <= READ_RESERVE {
            conn.out = out;
        }
        let head_only = request.method() == Method::HEAD;
        let (answer, reusable) = read_answer(&mut conn, head_only).await?;
        if reusable {
            self.put_idle(conn);
        }
        Ok(answer)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // A panic while holding the lock leaves only a Vec of connections behind: still valid.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The most recently used idle connection that is still fresh and that the service has
    /// neither closed nor written on. The peek is made outside the lock; a connection that
    /// fails it is dropped and the next one tried.
    fn take_idle(&self) -> Option<Conn> {
        let now = Instant::now();
        loop {
            let entry = {
                let mut idle = self.lock();
                let entry = idle.pop()?;
                if now.saturating_duration_since(entry.since) >= self.idle_timeout {
                    // Everything below is older still.
                    idle.clear();
                    return None;
                }
                entry
            };
            if is_quiet(&entry.conn.stream) {
                return Some(entry.conn);
            }
        }
    }

    fn put_idle(&self, conn: Conn) {
        let now = Instant::now();
        let mut idle = self.lock();
        // Expired connections sit at the bottom of the stack: drop them here, so a burst's
        // extra connections do not stay open forever once the load is gone.
        let expired = idle
            .iter()
            .take_while(|e| now.saturating_duration_since(e.since) >= self.idle_timeout)
            .count();
        if expired > 0 {
            idle.drain(..expired);
        }
        if idle.len() < MAX_IDLE {
            idle.push(Idle { conn, since: now });
        }
    }

    async fn connect(&self) -> Result<Conn, String> {
        let mut connector = self.connector.clone();
        poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(|e| format!("connecting to the authz service: {}", error_chain(&e)))?;
        let io = connector
            .call(self.dst.clone())
            .await
            .map_err(|e| format!("connecting to the authz service: {}", error_chain(&e)))?;
        Ok(Conn {
            stream: io.into_inner(),
            buf: BytesMut::new(),
            out: Vec::new(),
            lines: Vec::new(),
        })
    }
}

/// The peer has neither closed the connection nor sent anything since the last answer was
/// read: a non-blocking `MSG_PEEK` of one byte would block. Asked of the kernel, not of tokio's
/// cached readiness: that can lag behind bytes the I/O driver has not polled yet, and reads
/// `Pending` when the task's cooperative budget is spent, either of which would let a stale
/// answer left on the connection be read as the next check's. One syscall per reuse.
fn is_quiet(stream: &TcpStream) -> bool {
    let mut byte = [MaybeUninit::<u8>::uninit(); 1];
    matches!(
        socket2::SockRef::from(stream).peek(&mut byte),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
    )
}

/// `METHOD target HTTP/1.1`, the headers in map order, the body. Every piece is already valid:
/// the method and the `PathAndQuery` were parsed, header names and values came through
/// `http`'s validating constructors.
fn encode_request(request: &Request<Bytes>, out: &mut Vec<u8>) {
    let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(request.method().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in request.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(request.body());
}

/// Reads more bytes into the connection's buffer; `Ok(false)` at the end of the stream.
async fn fill(conn: &mut Conn) -> Result<bool, String> {
    if conn.buf.capacity() - conn.buf.len() < READ_RESERVE / 2 {
        conn.buf.reserve(READ_RESERVE);
    }
    match conn.stream.read_buf(&mut conn.buf).await {
        Ok(0) => Ok(false),
        Ok(_) => Ok(true),
        Err(e) => Err(format!("reading the authz answer: {e}")),
    }
}

enum Framing {
    None,
    Length(usize),
    Chunked,
    Close,
}

/// A parsed head; its header lines are in the connection's `lines`.
struct Head {
    status: StatusCode,
    http11: bool,
    len: usize,
}

/// A header line as offsets into its head: name start and end, value start and end.
type Line = (usize, usize, usize, usize);

/// Reads one whole answer; `true` when the connection can carry another exchange.
async fn read_answer(conn: &mut Conn, head_only: bool) -> Result<(Answer, bool), String> {
    let mut interim = 0;
    let head = loop {
        match parse_head(&conn.buf, &mut conn.lines)? {
            Some(head) if head.status.is_informational() => {
                if head.status == StatusCode::SWITCHING_PROTOCOLS {
                    return Err(format!("authz service answered {}", head.status));
                }
                // 100 Continue, 103 Early Hints…: the final answer follows.
                interim += 1;
                if interim > MAX_INTERIM {
                    return Err(format!(
                        "the authz service sent over {MAX_INTERIM} interim answers"
                    ));
                }
                conn.buf.advance(head.len);
            }
            Some(head) => break head,
            None => {
                if conn.buf.len() > MAX_HEAD {
                    return Err(format!("the authz answer's head is over {MAX_HEAD} bytes"));
                }
                if !fill(conn).await? {
                    return Err(if conn.buf.is_empty() {
                        "the authz service closed the connection before answering".into()
                    } else {
                        "the authz service closed the connection within the answer's head".into()
                    });
                }
            }
        }
    };

    let bytes = conn.buf.split_to(head.len).freeze();
    let mut headers = HeaderMap::with_capacity(conn.lines.len());
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    // HTTP/1.1 keeps the connection unless told `close`; HTTP/1.0 only when told
    // `keep-alive`.
    let mut close_token = false;
    let mut keep_alive_token = false;
    for &(ns, ne, vs, ve) in &conn.lines {
        let name = HeaderName::from_bytes(&bytes[ns..ne])
            .map_err(|_| "the authz answer has an invalid header name".to_owned())?;
        let value = HeaderValue::from_maybe_shared(bytes.slice(vs..ve))
            .map_err(|_| format!("the authz answer's {name} header has an invalid value"))?;
        if name == http::header::CONTENT_LENGTH {
            content_length = Some(merge_content_length(content_length, value.as_bytes())?);
        } else if name == http::header::TRANSFER_ENCODING {
            for coding in value.as_bytes().split(|b| *b == b',') {
                let coding = coding.trim_ascii();
                if coding.is_empty() {
                    continue;
                }
                if chunked || !coding.eq_ignore_ascii_case(b"chunked") {
                    return Err("the authz answer has a transfer coding other than one chunked".into());
                }
                chunked = true;
            }
        } else if name == http::header::CONNECTION {
            for token in value.as_bytes().split(|b| *b == b',') {
                let token = token.trim_ascii();
                close_token |= token.eq_ignore_ascii_case(b"close");
                keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
        headers.append(name, value);
    }

    let mut close = close_token || (!head.http11 && !keep_alive_token);
    let no_body =
        head_only || head.status == StatusCode::NO_CONTENT || head.status == StatusCode::NOT_MODIFIED;
    let framing = if no_body {
        Framing::None
    } else if chunked {
        if content_length.is_some() {
            return Err("the authz answer has both Transfer-Encoding and Content-Length".into());
        }
        Framing::Chunked
    } else if let Some(n) = content_length {
        Framing::Length(n)
    } else {
        Framing::Close
    };

    let body = match framing {
        Framing::None => Bytes::new(),
        Framing::Length(n) => read_length(conn, n).await?,
        Framing::Chunked => read_chunked(conn).await?,
        Framing::Close => {
            close = true;
            read_to_close(conn).await?
        }
    };
    // Bytes after a complete answer were never asked for: the connection is out of step.
    let reusable = !close && conn.buf.is_empty();
    Ok((
        Answer {
            status: head.status,
            headers,
            body,
        },
        reusable,
    ))
}

/// The head at the start of `buf`, or `None` if it is not complete yet; its header lines
/// replace the contents of `lines`.
fn parse_head(buf: &[u8], lines: &mut Vec<Line>) -> Result<Option<Head>, String> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(format!("the authz answer has more than {MAX_HEADERS} headers"));
        }
        Err(e) => return Err(format!("the authz answer is not valid HTTP/1.1: {e}")),
    };
    if len > MAX_HEAD {
        return Err(format!("the authz answer's head is over {MAX_HEAD} bytes"));
    }
    let code = response.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| format!("the authz answer has status {code}"))?;
    // Every piece httparse returns is a slice of `buf`.
    let base = buf.as_ptr() as usize;
    let offset = |s: &[u8]| s.as_ptr() as usize - base;
    lines.clear();
    lines.extend(response.headers.iter().map(|h| {
        let (ns, vs) = (offset(h.name.as_bytes()), offset(h.value));
        (ns, ns + h.name.len(), vs, vs + h.value.len())
    }));
    Ok(Some(Head {
        status,
        http11: response.version == Some(1),
        len,
    }))
}

/// One `Content-Length` value (a comma-separated list allowed) folded into what was seen:
/// every value must be the same decimal number.
fn merge_content_length(seen: Option<usize>, value: &[u8]) -> Result<usize, String> {
    let mut current = seen;
    for item in value.split(|b| *b == b',') {
        let item = item.trim_ascii();
        if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
            return Err("the authz answer has an invalid Content-Length".into());
        }
        let n = item
            .iter()
            .try_fold(0u64, |n, d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| "the authz answer's Content-Length is too large".to_owned())?;
        if current.is_some_and(|c| c != n) {
            return Err("the authz answer has conflicting Content-Length values".into());
        }
        current = Some(n);
    }
    current.ok_or_else(|| "the authz answer has an empty Content-Length".into())
}

fn too_large() -> String {
    format!("the authz answer's body is over {MAX_BODY} bytes")
}

async fn read_length(conn: &mut Conn, n: usize) -> Result<Bytes, String> {
    if n > MAX_BODY {
        return Err(too_large());
    }
    while conn.buf.len() < n {
        // Grown as bytes arrive, not on the strength of the declared length alone.
        conn.buf.reserve((n - conn.buf.len()).min(64 << 10));
        if !fill(conn).await? {
            return Err("the authz service closed the connection within the answer's body".into());
        }
    }
    Ok(conn.buf.split_to(n).freeze())
}

async fn read_to_close(conn: &mut Conn) -> Result<Bytes, String> {
    while fill(conn).await? {
        if conn.buf.len() > MAX_BODY {
            return Err(too_large());
        }
    }
    Ok(conn.buf.split().freeze())
}

async fn read_chunked(conn: &mut Conn) -> Result<Bytes, String> {
    let mut body = BytesMut::new();
    let mut extensions = 0usize;
    loop {
        let (consumed, size) = loop {
            match httparse::parse_chunk_size(&conn.buf) {
                Ok(httparse::Status::Complete(v)) => break v,
                Ok(httparse::Status::Partial) if conn.buf.len() <= MAX_CHUNK_LINE => {
                    if !fill(conn).await? {
                        return Err("the authz service closed the connection within a chunked body".into());
                    }
                }
                _ => return Err("the authz answer has an invalid chunk size line".into()),
            }
        };
        // httparse is lenient where hyper was not: a size line must start with a hex digit
        // (an empty line is no last chunk) and hold no bare LF; it, and the extensions of the
        // whole body, are bounded however the bytes arrived.
        let line = &conn.buf[..consumed];
        let bare_lf = line[..consumed.saturating_sub(2)].contains(&b'\n');
        if consumed > MAX_CHUNK_LINE || !line.first().is_some_and(u8::is_ascii_hexdigit) || bare_lf {
            return Err("the authz answer has an invalid chunk size line".into());
        }
        if let Some(at) = line.iter().position(|b| *b == b';') {
            extensions += consumed - at;
            if extensions > MAX_CHUNK_EXTENSIONS {
                return Err("the authz answer's chunk extensions are too long".into());
            }
        }
        conn.buf.advance(consumed);
        if size == 0 {
            read_trailers(conn).await?;
            return Ok(body.freeze());
        }
        let size = usize::try_from(size)
            .ok()
            .filter(|s| body.len().saturating_add(*s) <= MAX_BODY)
            .ok_or_else(too_large)?;
        while conn.buf.len() < size + 2 {
            conn.buf.reserve(size + 2 - conn.buf.len());
            if !fill(conn).await? {
                return Err("the authz service closed the connection within a chunked body".into());
            }
        }
        if &conn.buf[size..size + 2] != b"\r\n" {
            return Err("the authz answer has a chunk not followed by CRLF".into());
        }
        body.extend_from_slice(&conn.buf[..size]);
        conn.buf.advance(size + 2);
    }
}

/// The trailer section after the last chunk: read and discarded (Envoy's HTTP authz client
/// does not use trailers either).
async fn read_trailers(conn: &mut Conn) -> Result<(), String> {
    loop {
        if conn.buf.starts_with(b"\r\n") {
            conn.buf.advance(2);
            return Ok(());
        }
        let mut slots = [httparse::EMPTY_HEADER; 32];
        match httparse::parse_headers(&conn.buf, &mut slots) {
            Ok(httparse::Status::Complete((len, _))) if len <= MAX_TRAILERS => {
                conn.buf.advance(len);
                return Ok(());
            }
            Ok(httparse::Status::Partial) if conn.buf.len() <= MAX_TRAILERS => {
                if !fill(conn).await? {
                    return Err("the authz service closed the connection within the trailers".into());
                }
            }
            _ => return Err("the authz answer has invalid trailers".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_values_must_agree() {
        assert_eq!(merge_content_length(None, b"12"), Ok(12));
        assert_eq!(merge_content_length(None, b"12, 12"), Ok(12));
        assert_eq!(merge_content_length(Some(12), b"12"), Ok(12));
        assert!(merge_content_length(Some(12), b"13").is_err());
        assert!(merge_content_length(None, b"12, 13").is_err());
        for bad in [
            &b""[..],
            b",",
            b"+1",
            b"-1",
            b"1x",
            b"0x10",
            b" ",
            b"99999999999999999999",
        ] {
            assert!(merge_content_length(None, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn heads_parse_to_offsets() {
        let buf = b"HTTP/1.1 403 Forbidden\r\nX-A: 1\r\nx-b:  two \r\n\r\nbody";
        let mut lines = Vec::new();
        let head = parse_head(buf, &mut lines).expect("valid").expect("complete");
        assert_eq!(head.status, StatusCode::FORBIDDEN);
        assert!(head.http11);
        assert_eq!(&buf[head.len..], b"body");
        let lines: Vec<_> = lines
            .iter()
            .map(|&(ns, ne, vs, ve)| (&buf[ns..ne], &buf[vs..ve]))
            .collect();
        assert_eq!(lines, [(&b"X-A"[..], &b"1"[..]), (&b"x-b"[..], &b"two"[..])]);
        let mut lines = Vec::new();
        let partial = parse_head(b"HTTP/1.1 200 OK\r\nx: y\r\n", &mut lines);
        assert!(partial.expect("valid").is_none());
        assert!(parse_head(b"HTTP/1.1 2000 OK\r\n\r\n", &mut lines).is_err());
        assert!(parse_head(b"garbage\r\n\r\n", &mut lines).is_err());
    }
}
