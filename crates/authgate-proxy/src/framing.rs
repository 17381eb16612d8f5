//! A read-side guard for HTTP/1 framing that hyper resolves silently: when a request carries
//! both `Content-Length` and `Transfer-Encoding`, hyper drops the length (as RFC 9112 allows)
//! and the handler never sees it. An edge gateway refuses such requests outright (Envoy does,
//! with 400), because some hop behind it may pick the other header.
//!
//! The guard watches the bytes hyper reads and raises a per-connection flag when one header
//! block names both fields; the request pipeline then answers 400 and closes the connection.
//! It does not parse messages, so a body that itself contains such a block can raise the flag
//! too: the cost of that rare false positive is one refused connection, never a smuggled
//! request.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const CONTENT_LENGTH: &[u8] = b"content-length";
const TRANSFER_ENCODING: &[u8] = b"transfer-encoding";

#[derive(Default)]
struct Scanner {
    at_line_start: bool,
    /// Lower-cased start of the current line's field name.
    name: [u8; 18],
    name_len: usize,
    in_name: bool,
    seen_cl: bool,
    seen_te: bool,
}

impl Scanner {
    fn new() -> Self {
        Self {
            at_line_start: true,
            ..Self::default()
        }
    }

    /// Returns true when a header block that names both fields has just ended.
    fn feed(&mut self, bytes: &[u8]) -> bool {
        let mut violation = false;
        let mut i = 0;
        while i < bytes.len() {
            if !self.at_line_start && !self.in_name {
                // The rest of a line (request line, field value, body bytes) matters only for
                // where it ends: skip to the next LF at memchr speed, not byte by byte.
                match memchr::memchr(b'\n', &bytes[i..]) {
                    Some(k) => i += k,
                    None => break,
                }
            }
            let b = bytes[i];
            i += 1;
            if self.at_line_start {
                match b {
                    b'\r' => continue,
                    b'\n' => {
                        // Blank line: the header block ends here.
                        violation |= self.seen_cl && self.seen_te;
                        self.seen_cl = false;
                        self.seen_te = false;
                        continue;
                    }
                    _ => {
                        self.at_line_start = false;
                        // The usual case, a whole line in this read: find the name's end and
                        // compare it only when its length can match, then skip to the LF.
                        let line_start = i - 1;
                        if let Some(lf) = memchr::memchr(b'\n', &bytes[line_start..]) {
                            let line = &bytes[line_start..line_start + lf];
                            if let Some(end) = memchr::memchr3(b':', b' ', b'\t', line) {
                                let name = &line[..end];
                                self.seen_cl |= name.eq_ignore_ascii_case(CONTENT_LENGTH);
                                self.seen_te |= name.eq_ignore_ascii_case(TRANSFER_ENCODING);
                            }
                            self.in_name = false;
                            i = line_start + lf;
                            continue;
                        }
                        self.in_name = true;
                        self.name_len = 0;
                    }
                }
            }
            if b == b'\n' {
                self.at_line_start = true;
                self.in_name = false;
                continue;
            }
            if self.in_name {
                if b == b':' || b == b' ' || b == b'\t' {
                    let name = &self.name[..self.name_len];
                    self.seen_cl |= name == CONTENT_LENGTH;
                    self.seen_te |= name == TRANSFER_ENCODING;
                    self.in_name = false;
                } else if self.name_len < self.name.len() {
                    self.name[self.name_len] = b.to_ascii_lowercase();
                    self.name_len += 1;
                } else {
                    self.in_name = false;
                }
            }
        }
        violation
    }
}

/// The connection's IO, with its reads watched.
pub struct Guarded<IO> {
    inner: IO,
    scanner: Scanner,
    flag: Arc<AtomicBool>,
}

impl<IO> Guarded<IO> {
    pub fn new(inner: IO, flag: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            scanner: Scanner::new(),
            flag,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            let this = &mut *self;
            if this.scanner.feed(&buf.filled()[before..]) {
                this.flag.store(true, Ordering::Relaxed);
            }
        }
        result
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::Scanner;

    #[test]
    fn flags_both_fields_in_one_block_across_reads() {
        let mut s = Scanner::new();
        assert!(!s.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Le"));
        assert!(!s.feed(b"ngth: 5\r\nTransfer-Encoding: chunked\r\n"));
        assert!(s.feed(b"\r\n0\r\n\r\n"));
    }

    /// The byte-at-a-time state machine the LF skipping replaced, as the reference.
    fn reference(chunks: &[&[u8]]) -> Vec<bool> {
        let (mut start, mut in_name, mut cl, mut te) = (true, false, false, false);
        let mut name = Vec::new();
        let mut out = Vec::new();
        for chunk in chunks {
            let mut violation = false;
            for &b in *chunk {
                if start {
                    match b {
                        b'\r' => continue,
                        b'\n' => {
                            violation |= cl && te;
                            (cl, te) = (false, false);
                            continue;
                        }
                        _ => {
                            (start, in_name) = (false, true);
                            name.clear();
                        }
                    }
                }
                if b == b'\n' {
                    (start, in_name) = (true, false);
                    continue;
                }
                if in_name {
                    if b == b':' || b == b' ' || b == b'\t' {
                        cl |= name == b"content-length";
                        te |= name == b"transfer-encoding";
                        in_name = false;
                    } else if name.len() < 18 {
                        name.push(b.to_ascii_lowercase());
                    } else {
                        in_name = false;
                    }
                }
            }
            out.push(violation);
        }
        out
    }

    #[test]
    fn same_verdicts_as_the_byte_at_a_time_scanner() {
        let pieces: [&[u8]; 15] = [
            b"POST / HTTP/1.1\r\n",
            b"Content-Length: 5\r\n",
            b"transfer-encoding: chunked\r\n",
            b"\r\n",
            b"\n",
            b"Host: x\r\n",
            b"hello",
            b"X-Long-Header-Name-Here: v\r\n",
            b"CONTENT-LENGTH :1\n",
            b"\r",
            b"Transfer-Encoding\t: chunked\r\n",
            b"Content-Length\r: 1\r\n",
            b"content-lengthx: 1\r\n",
            b"NoColonLine\r\n",
            b"Transfer-Encodin",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..5000 {
            let mut stream = Vec::new();
            for _ in 0..(1 + next(12)) {
                stream.extend_from_slice(pieces[next(pieces.len() as u64) as usize]);
            }
            let mut chunks = Vec::new();
            let mut rest: &[u8] = &stream;
            while !rest.is_empty() {
                let k = (1 + next(rest.len() as u64)) as usize;
                chunks.push(&rest[..k]);
                rest = &rest[k..];
            }
            let mut s = Scanner::new();
            let got: Vec<bool> = chunks.iter().map(|c| s.feed(c)).collect();
            assert_eq!(got, reference(&chunks), "{:?}", String::from_utf8_lossy(&stream));
        }
    }

    #[test]
    fn separate_blocks_do_not_combine() {
        let mut s = Scanner::new();
        assert!(!s.feed(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\nPOST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"));
        let mut s = Scanner::new();
        assert!(!s.feed(b"GET / HTTP/1.1\r\nX-Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"));
    }
}
