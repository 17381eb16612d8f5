//! Request-target, host and client-address normalization: the one place that decides what
//! string the policy engine, the ext_authz check and the upstream request all see.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

use authgate_config::{EscapedSlashes, NormalizationMode, PathNormalization};

/// A request target after normalization: the path every decision is made on, and the query
/// forwarded untouched. The fragment is always gone. Borrowed from the request target where
/// normalization changed nothing (the common case: no copy).
#[derive(Debug, Clone)]
pub struct NormalizedTarget<'a> {
    /// Normalized path, starting with `/`, without query or fragment. Policy paths match this.
    pub path: Cow<'a, str>,
    /// Raw query without the `?` (`Some("")` for a bare `?`); never normalized.
    pub query: Option<&'a str>,
    /// The target as received, without its fragment, when the path needed no change.
    unchanged: Option<&'a str>,
}

/// Equal when path and query are: whether either was borrowed does not matter.
impl PartialEq for NormalizedTarget<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.query == other.query
    }
}

impl Eq for NormalizedTarget<'_> {}

impl NormalizedTarget<'_> {
    /// `path?query`: what the ext_authz check and the upstream request carry.
    pub fn path_and_query(&self) -> Cow<'_, str> {
        match (self.unchanged, self.query) {
            (Some(raw), _) => Cow::Borrowed(raw),
            (None, None) => Cow::Borrowed(&self.path),
            (None, Some(q)) => Cow::Owned(format!("{}?{q}", self.path)),
        }
    }
}

/// Why a request target was refused. Every variant is a client error: reply 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the request target must be a path starting with '/'")]
    NotAbsolutePath,
    #[error("the path contains an encoded NUL byte (%00)")]
    EncodedNul,
    #[error("the path contains an escaped slash ({0}) and pathNormalization.escapedSlashes is REJECT")]
    EscapedSlash(String),
    #[error("the path contains a malformed percent-encoding at byte {0}")]
    BadPercentEncoding(usize),
    #[error("the request target contains a byte that is not allowed (0x{0:02x})")]
    InvalidCharacter(u8),
    #[error(
        "the path contains ';' parameters, which pathNormalization NONE cannot match safely \
         (use BASE or stricter, where they are removed)"
    )]
    PathParameters,
}

impl PathError {
    /// The HTTP status to answer with (always 400).
    pub fn status(&self) -> u16 {
        400
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 unreserved: decoded once by BASE normalization.
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Normalizes a request target (origin form: `/path?query#fragment`) as Istio's
/// `pathNormalization` does at the gateway, plus authgate's escaped-slash action.
///
/// In every mode: the fragment is dropped; control characters, space, non-ASCII bytes, a
/// malformed `%XX` and `%00` are refused; `%2F`/`%5C` are refused under `escapedSlashes: REJECT`.
///
/// - `NONE`: the path is otherwise kept byte for byte (and `;` parameters are refused, since
///   they could not be matched safely).
/// - `BASE` (default): `%XX` of unreserved characters decoded once, `\` → `/`, `;params`
///   removed from every segment, then RFC 3986 dot-segment removal.
/// - `MERGE_SLASHES`: BASE, then runs of `/` become one.
/// - `DECODE_AND_MERGE_SLASHES`: `%2F`/`%5C` decoded first, then MERGE_SLASHES.
///
/// `escapedSlashes: UNESCAPE` decodes `%2F`/`%5C` in any mode; `KEEP` leaves them encoded.
pub fn normalize_path(raw_target: &str, cfg: PathNormalization) -> Result<NormalizedTarget<'_>, PathError> {
    let without_fragment = raw_target.split_once('#').map_or(raw_target, |(t, _)| t);
    let (raw_path, query) = match without_fragment.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (without_fragment, None),
    };
    if !raw_path.starts_with('/') {
        return Err(PathError::NotAbsolutePath);
    }
    for &b in raw_target.as_bytes() {
        if b <= 0x20 || b >= 0x7f {
            return Err(PathError::InvalidCharacter(b));
        }
    }
    // Fast path: nothing to decode, no separators to rewrite, no parameters, no dot segments
    // and no empty segments: the path is already normal in every mode.
    if !raw_path.bytes().any(|b| matches!(b, b'%' | b'\\' | b';' | b'.')) && !raw_path.contains("//") {
        return Ok(NormalizedTarget {
            path: Cow::Borrowed(raw_path),
            query,
            unchanged: Some(without_fragment),
        });
    }
    let mode = cfg.mode;
    let normalize = mode != NormalizationMode::None;
    let decode_slashes =
        cfg.escaped_slashes == EscapedSlashes::Unescape || mode == NormalizationMode::DecodeAndMergeSlashes;

    // 1. Percent-decoding (a single pass, so `%252e` stays `%2e`).
    let bytes = raw_path.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            out.push(b);
            i += 1;
            continue;
        }
        let (Some(h), Some(l)) = (
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) else {
            return Err(PathError::BadPercentEncoding(i));
        };
        let v = h * 16 + l;
        let escaped = &raw_path[i..i + 3];
        if v == 0 {
            return Err(PathError::EncodedNul);
        }
        if v == b'/' || v == b'\\' {
            if cfg.escaped_slashes == EscapedSlashes::Reject {
                return Err(PathError::EscapedSlash(escaped.to_owned()));
            }
            if decode_slashes {
                out.push(v);
            } else {
                out.extend_from_slice(escaped.as_bytes());
            }
        } else if normalize && unreserved(v) {
            out.push(v);
        } else {
            out.extend_from_slice(escaped.as_bytes());
        }
        i += 3;
    }

    if !normalize {
        if out.contains(&b';') {
            return Err(PathError::PathParameters);
        }
        return Ok(NormalizedTarget {
            path: Cow::Owned(bytes_to_string(out)),
            query,
            unchanged: None,
        });
    }

    // 2. Backslash is a separator (as browsers and Envoy's canonicalizer treat it).
    for b in &mut out {
        if *b == b'\\' {
            *b = b'/';
        }
    }
    // 3. `;params` removed from every segment (RFC 3986 §3.3; what servlet containers do
    //    before routing, unlike Envoy 1.40, which keeps them), before dot segments so
    //    that `..;x` is resolved like `..`.
    let path = strip_segment_params(&out);
    // 4. Dot segments.
    let mut path = remove_dot_segments(&path);
    // 5. Slashes.
    if matches!(
        mode,
        NormalizationMode::MergeSlashes | NormalizationMode::DecodeAndMergeSlashes
    ) {
        path = merge_slashes(&path);
    }
    Ok(NormalizedTarget {
        path: Cow::Owned(path),
        query,
        unchanged: None,
    })
}

fn bytes_to_string(v: Vec<u8>) -> String {
    // Only ASCII bytes were let through, and decoding only produces ASCII.
    String::from_utf8(v).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn strip_segment_params(path: &[u8]) -> String {
    let mut out = Vec::with_capacity(path.len());
    let mut in_params = false;
    for &b in path {
        match b {
            b'/' => {
                in_params = false;
                out.push(b);
            }
            b';' => in_params = true,
            _ if in_params => {}
            _ => out.push(b),
        }
    }
    bytes_to_string(out)
}

/// RFC 3986 §5.2.4 for an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let body = path.strip_prefix('/').unwrap_or(path);
    let segments: Vec<&str> = body.split('/').collect();
    let last = segments.len().saturating_sub(1);
    let mut stack: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => {
                if i == last {
                    stack.push("");
                }
            }
            ".." => {
                stack.pop();
                if i == last {
                    stack.push("");
                }
            }
            s => stack.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    out.push('/');
    out.push_str(&stack.join("/"));
    out
}

fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut prev_slash = false;
    for c in path.chars() {
        if c == '/' {
            if !prev_slash {
                out.push(c);
            }
            prev_slash = true;
        } else {
            out.push(c);
            prev_slash = false;
        }
    }
    out
}

/// Splits an authority into a lower-case host without one trailing dot, and its port.
///
/// `Example.COM.:8080` → (`example.com`, Some(8080)); `[::1]:443` → (`[::1]`, Some(443)); a
/// bare IPv6 address or a malformed port yields `None` for the port and the host as given
/// (lower-cased, trailing dot removed).
pub fn normalize_host(authority: &str) -> (Cow<'_, str>, Option<u16>) {
    let (host, port) = split_authority(authority);
    let port = port.and_then(|p| p.parse::<u16>().ok());
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        (Cow::Owned(host.to_ascii_lowercase()), port)
    } else {
        (Cow::Borrowed(host), port)
    }
}

/// `host[:port]` → (host, Some(port digits)) without allocating. The port part is only split
/// off when it is all digits; `[v6]:p` keeps the brackets on the host.
pub(crate) fn split_authority(authority: &str) -> (&str, Option<&str>) {
    if authority.starts_with('[') {
        if let Some(end) = authority.find(']') {
            let (h, rest) = authority.split_at(end + 1);
            if let Some(p) = rest.strip_prefix(':')
                && !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
            {
                return (h, Some(p));
            }
            return (h, None);
        }
        return (authority, None);
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            (h, Some(p))
        }
        _ => (authority, None),
    }
}

/// The client address Istio calls `remote.ip`, from every `X-Forwarded-For` line of a request
/// read as one list (as Envoy does: a client can add a line of its own), with Envoy's
/// `xff_num_trusted_hops` semantics (Istio `gatewayTopology.numTrustedProxies`).
///
/// With `num_trusted_proxies` = N > 0 the client is the N-th address from the right of XFF
/// (each trusted proxy appended the address it received the request from). With N = 0, an XFF
/// that has fewer than N entries, or an entry that is not an IP address, the direct peer is
/// the client. IPv4-mapped IPv6 addresses are returned as IPv4.
pub fn client_ip_from_headers(headers: &http::HeaderMap, peer: IpAddr, num_trusted_proxies: u32) -> IpAddr {
    if num_trusted_proxies == 0 {
        return peer.to_canonical();
    }
    nth_from_right(headers.get_all(X_FORWARDED_FOR), peer, num_trusted_proxies)
}

const X_FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");

fn nth_from_right<'a, I>(values: I, peer: IpAddr, n: u32) -> IpAddr
where
    I: IntoIterator<Item = &'a http::HeaderValue>,
    I::IntoIter: DoubleEndedIterator,
{
    let peer = peer.to_canonical();
    if n == 0 {
        return peer;
    }
    let mut seen = 0u32;
    for value in values.into_iter().rev() {
        for entry in value.as_bytes().rsplit(|b| *b == b',') {
            seen += 1;
            if seen == n {
                return std::str::from_utf8(entry)
                    .ok()
                    .and_then(parse_xff_entry)
                    .map_or(peer, |ip| ip.to_canonical());
            }
        }
    }
    peer
}

fn parse_xff_entry(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    s.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse::<IpAddr>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One X-Forwarded-For line.
    fn client_ip(xff: Option<&http::HeaderValue>, peer: IpAddr, n: u32) -> IpAddr {
        nth_from_right(xff, peer, n)
    }

    fn cfg(mode: NormalizationMode, escaped_slashes: EscapedSlashes) -> PathNormalization {
        PathNormalization {
            mode,
            escaped_slashes,
        }
    }

    fn base() -> PathNormalization {
        PathNormalization::default()
    }

    fn norm(t: &str, c: PathNormalization) -> Result<String, PathError> {
        normalize_path(t, c).map(|n| n.path_and_query().into_owned())
    }

    #[test]
    fn bypass_list_base() {
        let c = base();
        assert_eq!(norm("/public/../productpage", c), Ok("/productpage".into()));
        assert_eq!(norm("/public/%2e%2e/productpage", c), Ok("/productpage".into()));
        assert_eq!(norm("/public/%2E%2E/productpage", c), Ok("/productpage".into()));
        assert_eq!(norm("/public/.%2e/productpage", c), Ok("/productpage".into()));
        assert_eq!(norm("//productpage", c), Ok("//productpage".into()));
        assert_eq!(norm("/productpage/.", c), Ok("/productpage/".into()));
        assert_eq!(norm("/productpage%2Fx", c), Ok("/productpage%2Fx".into()));
        assert_eq!(norm("/productpage;x=1", c), Ok("/productpage".into()));
        assert_eq!(norm("/productpage#frag", c), Ok("/productpage".into()));
        assert_eq!(norm("/productpage?a=1#frag", c), Ok("/productpage?a=1".into()));
    }

    #[test]
    fn bypass_list_per_mode() {
        let merge = cfg(NormalizationMode::MergeSlashes, EscapedSlashes::Keep);
        assert_eq!(norm("//productpage", merge), Ok("/productpage".into()));
        assert_eq!(norm("/productpage/.", merge), Ok("/productpage/".into()));
        let decode = cfg(NormalizationMode::DecodeAndMergeSlashes, EscapedSlashes::Keep);
        assert_eq!(norm("/productpage%2Fx", decode), Ok("/productpage/x".into()));
        assert_eq!(norm("/a%2F%2Fb", decode), Ok("/a/b".into()));
        assert_eq!(norm("/a%5c..%5Cb", decode), Ok("/b".into()));
        let none = cfg(NormalizationMode::None, EscapedSlashes::Keep);
        assert_eq!(
            norm("/public/../productpage", none),
            Ok("/public/../productpage".into())
        );
        assert_eq!(norm("/productpage/.", none), Ok("/productpage/.".into()));
        assert_eq!(norm("/a%2e", none), Ok("/a%2e".into()));
        assert_eq!(norm("/productpage;x=1", none), Err(PathError::PathParameters));
        assert_eq!(norm("/productpage#f", none), Ok("/productpage".into()));
    }

    #[test]
    fn escaped_slash_actions() {
        for mode in [
            NormalizationMode::None,
            NormalizationMode::Base,
            NormalizationMode::MergeSlashes,
            NormalizationMode::DecodeAndMergeSlashes,
        ] {
            let reject = cfg(mode, EscapedSlashes::Reject);
            assert_eq!(
                norm("/productpage%2Fx", reject),
                Err(PathError::EscapedSlash("%2F".into()))
            );
            assert_eq!(norm("/a%5cb", reject), Err(PathError::EscapedSlash("%5c".into())));
            assert_eq!(
                norm("/a%2Fb?x=%2F", reject),
                Err(PathError::EscapedSlash("%2F".into()))
            );
            assert!(norm("/a/b?x=%2F", reject).is_ok(), "the query is not the path");
        }
        let unescape = cfg(NormalizationMode::Base, EscapedSlashes::Unescape);
        assert_eq!(norm("/productpage%2Fx", unescape), Ok("/productpage/x".into()));
        assert_eq!(
            norm("/public%2F..%2Fproductpage", unescape),
            Ok("/productpage".into())
        );
        assert_eq!(norm("/a%5Cb", unescape), Ok("/a/b".into()));
        let keep = cfg(NormalizationMode::Base, EscapedSlashes::Keep);
        assert_eq!(norm("/a%2f..%2fb", keep), Ok("/a%2f..%2fb".into()));
    }

    #[test]
    fn rfc3986_dot_segments() {
        let c = base();
        for (i, o) in [
            ("/", "/"),
            ("/a/b/c/./../../g", "/a/g"),
            ("/mid/content=5/../6", "/mid/6"),
            ("/..", "/"),
            ("/../..", "/"),
            ("/a/..", "/"),
            ("/a/.", "/a/"),
            ("/a/./b/", "/a/b/"),
            ("/a//../b", "/a/b"),
            ("/.../a", "/.../a"),
            ("/a/..b", "/a/..b"),
            ("/a\\..\\b", "/b"),
            ("/admin/..;/secret", "/secret"),
            ("/a;p/b;q=1/c", "/a/b/c"),
        ] {
            assert_eq!(norm(i, c), Ok(o.into()), "{i}");
        }
    }

    #[test]
    fn decodes_unreserved_once_only() {
        let c = base();
        assert_eq!(norm("/%41%62%7e%2D%5f", c), Ok("/Ab~-_".into()));
        assert_eq!(norm("/%252e%252e/x", c), Ok("/%252e%252e/x".into()));
        assert_eq!(norm("/a%20b", c), Ok("/a%20b".into()));
        assert_eq!(norm("/a%3Bb", c), Ok("/a%3Bb".into()), "an encoded ; is data");
        assert_eq!(norm("/a%3fb?q", c), Ok("/a%3fb?q".into()));
    }

    #[test]
    fn refusals() {
        let c = base();
        assert_eq!(norm("/a%00b", c), Err(PathError::EncodedNul));
        assert_eq!(norm("/a%0", c), Err(PathError::BadPercentEncoding(2)));
        assert_eq!(norm("/a%zz", c), Err(PathError::BadPercentEncoding(2)));
        assert_eq!(norm("productpage", c), Err(PathError::NotAbsolutePath));
        assert_eq!(norm("*", c), Err(PathError::NotAbsolutePath));
        assert_eq!(norm("http://h/x", c), Err(PathError::NotAbsolutePath));
        assert_eq!(norm("", c), Err(PathError::NotAbsolutePath));
        assert_eq!(norm("/a b", c), Err(PathError::InvalidCharacter(b' ')));
        assert_eq!(norm("/a\tb", c), Err(PathError::InvalidCharacter(b'\t')));
        assert_eq!(norm("/a?b\u{7f}", c), Err(PathError::InvalidCharacter(0x7f)));
        assert_eq!(norm("/é", c), Err(PathError::InvalidCharacter(0xc3)));
        for e in [PathError::EncodedNul, PathError::NotAbsolutePath] {
            assert_eq!(e.status(), 400);
            assert!(!e.to_string().is_empty());
        }
    }

    /// A path that needs no change is not copied: path and `path?query` borrow the target.
    #[test]
    fn normal_paths_are_borrowed() {
        let t = normalize_path("/productpage?id=1#top", base()).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(t.path, Cow::Borrowed("/productpage")), "{t:?}");
        assert!(matches!(t.path_and_query(), Cow::Borrowed("/productpage?id=1")));
        let t = normalize_path("/a/./b?id=1", base()).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(t.path, Cow::Owned(_)), "{t:?}");
        assert_eq!(t.path_and_query(), "/a/b?id=1");
        assert!(matches!(
            normalize_host("example.com:80").0,
            Cow::Borrowed("example.com")
        ));
        assert!(matches!(normalize_host("Example.com.").0, Cow::Owned(ref h) if h == "example.com"));
    }

    #[test]
    fn query_kept_verbatim() {
        let t = normalize_path("/a/../b?x=/../%2e&y#z", base()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.path, "/b");
        assert_eq!(t.query, Some("x=/../%2e&y"));
        assert_eq!(t.path_and_query(), "/b?x=/../%2e&y");
        let t = normalize_path("/b?", base()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.path_and_query(), "/b?");
        let t = normalize_path("/b", base()).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(t.path_and_query(), Cow::Borrowed("/b")));
    }

    #[test]
    fn normalization_is_idempotent() {
        for mode in [
            NormalizationMode::Base,
            NormalizationMode::MergeSlashes,
            NormalizationMode::DecodeAndMergeSlashes,
        ] {
            for t in [
                "/a/%2e%2e/b",
                "//x//y/./z/..",
                "/a;b/c%2Fd",
                "/%252e/..",
                "/x/..;/y",
                "/a\\b/../c",
            ] {
                let c = cfg(mode, EscapedSlashes::Unescape);
                let once = norm(t, c).unwrap_or_else(|e| panic!("{t}: {e}"));
                assert_eq!(norm(&once, c), Ok(once.clone()), "{mode:?} {t}");
            }
        }
    }

    #[test]
    fn hosts() {
        assert_eq!(
            normalize_host("BOOKINFO.example.com."),
            ("bookinfo.example.com".into(), None)
        );
        assert_eq!(
            normalize_host("Bookinfo.Example.com.:8080"),
            ("bookinfo.example.com".into(), Some(8080))
        );
        assert_eq!(normalize_host("[::1]:443"), ("[::1]".into(), Some(443)));
        assert_eq!(normalize_host("[::1]"), ("[::1]".into(), None));
        assert_eq!(normalize_host("::1"), ("::1".into(), None));
        assert_eq!(normalize_host("h:99999"), ("h".into(), None));
        assert_eq!(normalize_host("h:x"), ("h:x".into(), None));
        assert_eq!(normalize_host(""), ("".into(), None));
    }

    fn hv(s: &str) -> http::HeaderValue {
        http::HeaderValue::from_str(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn xff_trusted_hops() {
        let peer = ip("10.0.0.1");
        let x = hv("1.1.1.1, 2.2.2.2,3.3.3.3");
        assert_eq!(client_ip(Some(&x), peer, 0), peer, "no trusted hops: the peer");
        assert_eq!(client_ip(Some(&x), peer, 1), ip("3.3.3.3"));
        assert_eq!(client_ip(Some(&x), peer, 2), ip("2.2.2.2"));
        assert_eq!(client_ip(Some(&x), peer, 3), ip("1.1.1.1"));
        assert_eq!(
            client_ip(Some(&x), peer, 4),
            peer,
            "fewer entries than hops: the peer"
        );
        assert_eq!(client_ip(None, peer, 1), peer);
        assert_eq!(client_ip(Some(&hv("garbage, 2.2.2.2")), peer, 2), peer);
        assert_eq!(client_ip(Some(&hv("1.1.1.1:1234")), peer, 1), ip("1.1.1.1"));
        assert_eq!(
            client_ip(Some(&hv("[2001:db8::1]:80")), peer, 1),
            ip("2001:db8::1")
        );
        assert_eq!(client_ip(Some(&hv("[2001:db8::1]")), peer, 1), ip("2001:db8::1"));
        assert_eq!(client_ip(Some(&hv("::ffff:9.9.9.9")), peer, 1), ip("9.9.9.9"));
        assert_eq!(client_ip(None, ip("::ffff:10.0.0.9"), 0), ip("10.0.0.9"));
    }

    #[test]
    fn xff_across_header_lines() {
        let peer = ip("10.0.0.1");
        let mut h = http::HeaderMap::new();
        h.append("x-forwarded-for", hv("6.6.6.6"));
        h.append("x-forwarded-for", hv("1.1.1.1, 2.2.2.2"));
        assert_eq!(client_ip_from_headers(&h, peer, 1), ip("2.2.2.2"));
        assert_eq!(client_ip_from_headers(&h, peer, 3), ip("6.6.6.6"));
        assert_eq!(client_ip_from_headers(&h, peer, 4), peer);
        assert_eq!(client_ip_from_headers(&http::HeaderMap::new(), peer, 1), peer);
    }
}
