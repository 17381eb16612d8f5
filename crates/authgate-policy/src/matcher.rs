//! Compiled matchers for one AuthorizationPolicy value each. No allocation when matching.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// Istio's string value syntax (R-C13): `abc` exact, `abc*` prefix, `*abc` suffix (a leading
/// `*` is checked first), `*` alone = non-empty (or "present" for header-based fields). A `*`
/// anywhere else is literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StrPattern {
    Exact(Box<str>),
    Prefix(Box<str>),
    Suffix(Box<str>),
    Any,
}

impl StrPattern {
    pub(crate) fn parse(v: &str) -> Self {
        if v == "*" {
            Self::Any
        } else if let Some(s) = v.strip_prefix('*') {
            Self::Suffix(s.into())
        } else if let Some(p) = v.strip_suffix('*') {
            Self::Prefix(p.into())
        } else {
            Self::Exact(v.into())
        }
    }

    /// Case-sensitive; `Any` requires a non-empty value (Istio's `.+`).
    pub(crate) fn matches(&self, s: &[u8]) -> bool {
        match self {
            Self::Exact(e) => s == e.as_bytes(),
            Self::Prefix(p) => s.starts_with(p.as_bytes()),
            Self::Suffix(x) => s.ends_with(x.as_bytes()),
            Self::Any => !s.is_empty(),
        }
    }

    /// ASCII case-insensitive variant.
    pub(crate) fn matches_ignore_case(&self, s: &[u8]) -> bool {
        match self {
            Self::Exact(e) => s.eq_ignore_ascii_case(e.as_bytes()),
            Self::Prefix(p) => s.len() >= p.len() && s[..p.len()].eq_ignore_ascii_case(p.as_bytes()),
            Self::Suffix(x) => {
                s.len() >= x.len() && s[s.len() - x.len()..].eq_ignore_ascii_case(x.as_bytes())
            }
            Self::Any => !s.is_empty(),
        }
    }
}

/// A host value compared with the request authority as two pieces (host without its trailing
/// dot, then `:port` if any), so no string is built per request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Authority<'a> {
    pub host: &'a str,
    pub rest: &'a str,
}

impl<'a> Authority<'a> {
    pub(crate) fn new(authority: &'a str) -> Self {
        let (host, port) = crate::normalize::split_authority(authority);
        let host = host.strip_suffix('.').unwrap_or(host);
        let rest = match port {
            Some(p) => &authority[authority.len() - p.len() - 1..],
            None => "",
        };
        Self { host, rest }
    }

    fn len(&self) -> usize {
        self.host.len() + self.rest.len()
    }

    fn byte(&self, i: usize) -> u8 {
        if i < self.host.len() {
            self.host.as_bytes()[i]
        } else {
            self.rest.as_bytes()[i - self.host.len()]
        }
    }

    fn eq_range_ignore_case(&self, start: usize, v: &[u8]) -> bool {
        v.iter()
            .enumerate()
            .all(|(k, b)| self.byte(start + k).eq_ignore_ascii_case(b))
    }

    /// Hosts compare case-insensitively, port included (R-C16).
    pub(crate) fn matches(&self, p: &StrPattern) -> bool {
        let n = self.len();
        match p {
            StrPattern::Exact(e) => n == e.len() && self.eq_range_ignore_case(0, e.as_bytes()),
            StrPattern::Prefix(x) => n >= x.len() && self.eq_range_ignore_case(0, x.as_bytes()),
            StrPattern::Suffix(x) => n >= x.len() && self.eq_range_ignore_case(n - x.len(), x.as_bytes()),
            StrPattern::Any => n > 0,
        }
    }
}

impl fmt::Display for Authority<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.host, self.rest)
    }
}

/// RFC 3986 pchar minus `*` and `=`-less sub-delims, as Envoy's URI template literal class.
fn template_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~%!$&'()+,;:@=".contains(&b)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TplPart {
    /// Literal text including its slashes.
    Lit(Box<str>),
    /// `{*}`: one or more template characters (one segment).
    One,
    /// `{**}`: zero or more template characters or `/`.
    Many,
}

/// A path value: Istio string syntax, or a `{*}`/`{**}` URI template (R-C19).
///
/// Literal (non-template) path values are matched "slash-tolerant": a run of `/` in the
/// request path compares equal to one `/`, and an exact value also matches the same path with
/// one trailing `/`. `//admin` and `/admin/` therefore cannot slip past a rule on `/admin`
/// even under BASE normalization, while the path itself is forwarded unchanged (see
/// `docs/policy.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PathPattern {
    Str(StrPattern),
    Template(Vec<TplPart>),
}

/// Iterates a path's bytes with every run of `/` collapsed into one.
fn collapsed(path: &[u8]) -> impl DoubleEndedIterator<Item = u8> + '_ {
    path.iter()
        .enumerate()
        .filter(move |(i, b)| !(**b == b'/' && *i > 0 && path[i - 1] == b'/'))
        .map(|(_, b)| *b)
}

fn collapse_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev = false;
    for c in s.chars() {
        if c == '/' && prev {
            continue;
        }
        prev = c == '/';
        out.push(c);
    }
    out
}

impl PathPattern {
    /// Parses one `paths`/`notPaths` value, validating templates as Istio's webhook does.
    pub(crate) fn parse(v: &str) -> Result<Self, String> {
        if v.contains("{*}") || v.contains("{**}") {
            return parse_template(v).map(Self::Template);
        }
        Ok(Self::Str(match StrPattern::parse(v) {
            StrPattern::Exact(e) => StrPattern::Exact(collapse_str(&e).into()),
            StrPattern::Prefix(p) => StrPattern::Prefix(collapse_str(&p).into()),
            StrPattern::Suffix(s) => StrPattern::Suffix(collapse_str(&s).into()),
            StrPattern::Any => StrPattern::Any,
        }))
    }

    pub(crate) fn matches(&self, path: &str) -> bool {
        let p = path.as_bytes();
        match self {
            Self::Str(StrPattern::Any) => !p.is_empty(),
            Self::Str(StrPattern::Exact(e)) => {
                let e = e.as_bytes();
                let mut it = collapsed(p);
                for b in e {
                    if it.next() != Some(*b) {
                        return false;
                    }
                }
                match it.next() {
                    None => true,
                    // One trailing slash after a value that does not end in one.
                    Some(b'/') => it.next().is_none() && e.last() != Some(&b'/'),
                    Some(_) => false,
                }
            }
            Self::Str(StrPattern::Prefix(x)) => {
                let mut it = collapsed(p);
                x.as_bytes().iter().all(|b| it.next() == Some(*b))
            }
            Self::Str(StrPattern::Suffix(x)) => {
                let mut it = collapsed(p).rev();
                x.as_bytes().iter().rev().all(|b| it.next() == Some(*b))
            }
            Self::Template(parts) => {
                template_matches(parts, p)
                    || (path.contains("//") && template_matches(parts, collapse_str(path).as_bytes()))
            }
        }
    }
}

fn parse_template(v: &str) -> Result<Vec<TplPart>, String> {
    let bad = |why: &str| Err(format!("invalid or unsupported path template {v:?}: {why}"));
    let Some(body) = v.strip_prefix('/') else {
        return bad("it must start with '/'");
    };
    let segments: Vec<&str> = body.split('/').collect();
    let last = segments.len() - 1;
    let mut parts: Vec<TplPart> = Vec::new();
    let mut lit = String::from("/");
    let mut seen_many = false;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "{*}" | "{**}" => {
                if seen_many {
                    return bad("{**} must be the last operator");
                }
                parts.push(TplPart::Lit(std::mem::take(&mut lit).into()));
                if *seg == "{**}" {
                    seen_many = true;
                    parts.push(TplPart::Many);
                } else {
                    parts.push(TplPart::One);
                }
            }
            "" if i == last => {}
            "" => return bad("empty segments (//) are not allowed"),
            s if s.contains(['*', '{', '}']) => {
                return bad("'*', '{' and '}' are only allowed as a whole {*} or {**} segment");
            }
            s if !s.bytes().all(template_char) => {
                return bad("a literal segment has a character outside [a-zA-Z0-9-._~%!$&'()+,;:@=]");
            }
            s => lit.push_str(s),
        }
        if i != last {
            lit.push('/');
        }
    }
    if !lit.is_empty() {
        parts.push(TplPart::Lit(lit.into()));
    }
    Ok(parts)
}

fn template_matches(parts: &[TplPart], mut p: &[u8]) -> bool {
    let mut i = 0;
    while i < parts.len() {
        match &parts[i] {
            TplPart::Lit(l) => match p.strip_prefix(l.as_bytes()) {
                Some(rest) => p = rest,
                None => return false,
            },
            TplPart::One => {
                let n = p.iter().take_while(|b| template_char(**b)).count();
                if n == 0 {
                    return false;
                }
                p = &p[n..];
            }
            TplPart::Many => {
                // `{**}` is the last operator: the rest of the template is one literal (or
                // nothing), which must end the path; what lies between is `[lit/]*`.
                let tail: &[u8] = match parts.get(i + 1) {
                    Some(TplPart::Lit(l)) => l.as_bytes(),
                    _ => b"",
                };
                let Some(mid) = p.strip_suffix(tail) else {
                    return false;
                };
                return mid.iter().all(|b| *b == b'/' || template_char(*b));
            }
        }
        i += 1;
    }
    p.is_empty()
}

/// A set of IP ranges (single IPs are /32 or /128).
#[derive(Debug, Clone)]
pub(crate) struct IpList(pub Vec<IpNet>);

impl IpList {
    /// Parses Istio's IP syntax strictly: `a.b.c.d`, `a.b.c.d/n`, IPv6 forms likewise.
    pub(crate) fn parse_one(v: &str) -> Result<IpNet, String> {
        if v.contains('/') {
            v.parse::<IpNet>()
                .map_err(|e| format!("bad CIDR range ({v}): {e}"))
        } else {
            v.parse::<IpAddr>()
                .map(IpNet::from)
                .map_err(|_| format!("bad IP address ({v})"))
        }
    }

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| match (n, ip) {
            (IpNet::V4(n), IpAddr::V4(a)) => n.contains(&a),
            (IpNet::V6(n), IpAddr::V6(a)) => n.contains(&a),
            // IPv4 values also match the IPv4-mapped form, and the reverse.
            (IpNet::V6(n), IpAddr::V4(a)) => n.contains(&a.to_ipv6_mapped()),
            (IpNet::V4(n), IpAddr::V6(a)) => a.to_ipv4_mapped().is_some_and(|a| n.contains(&a)),
        })
    }
}

/// `principals` / `source.principal`: the value with `spiffe://` prepended (Istio's
/// `StringMatcherWithPrefix`). `*` = any (non-empty) principal.
#[derive(Debug, Clone)]
pub(crate) enum PrincipalPattern {
    Exact(Box<str>),
    Prefix(Box<str>),
    /// Istio builds regex `spiffe://.*<suffix>`; authgate compares literally.
    SpiffeSuffix(Box<str>),
    Any,
}

pub(crate) const SPIFFE: &str = "spiffe://";

impl PrincipalPattern {
    pub(crate) fn parse(v: &str) -> Self {
        match StrPattern::parse(v) {
            StrPattern::Any => Self::Any,
            StrPattern::Suffix(s) => Self::SpiffeSuffix(s),
            StrPattern::Prefix(p) => Self::Prefix(format!("{SPIFFE}{p}").into()),
            StrPattern::Exact(e) => Self::Exact(format!("{SPIFFE}{e}").into()),
        }
    }

    pub(crate) fn matches(&self, principal: &str) -> bool {
        match self {
            Self::Exact(e) => principal == &**e,
            Self::Prefix(p) => principal.starts_with(&**p),
            Self::SpiffeSuffix(s) => {
                principal.len() >= SPIFFE.len() + s.len()
                    && principal.starts_with(SPIFFE)
                    && principal.ends_with(&**s)
            }
            Self::Any => !principal.is_empty(),
        }
    }
}

/// `namespaces` / `source.namespace`: Istio's regex `.*/ns/<value>/.*` with every `*` in the
/// value meaning "anything" (a glob anywhere, unlike other fields).
#[derive(Debug, Clone)]
pub(crate) struct NamespaceGlob(Box<str>);

impl NamespaceGlob {
    pub(crate) fn new(v: &str) -> Self {
        Self(format!("*/ns/{v}/*").into())
    }

    pub(crate) fn matches(&self, principal: &str) -> bool {
        glob(self.0.as_bytes(), principal.as_bytes())
    }
}

/// Full-string match where `*` in the pattern matches any run of bytes (also empty).
fn glob(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() && pat[p] == b'*' {
            star = Some((p, i));
            p += 1;
        } else if p < pat.len() && pat[p] == s[i] {
            p += 1;
            i += 1;
        } else if let Some((sp, si)) = star {
            p = sp + 1;
            i = si + 1;
            star = Some((sp, si + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|b| *b == b'*')
}

/// `serviceAccounts` / `source.serviceAccount`: Istio's regex
/// `spiffe://.+/ns/<ns>/(.+/|)sa/<sa>(/.+)?`, literal ns and sa.
#[derive(Debug, Clone)]
pub(crate) struct ServiceAccount {
    ns_part: Box<str>,
    sa_part: Box<str>,
}

impl ServiceAccount {
    /// `name` (in the policy's namespace) or `namespace/name`.
    pub(crate) fn new(v: &str, policy_ns: &str) -> Self {
        let (ns, sa) = v.split_once('/').unwrap_or((policy_ns, v));
        Self {
            ns_part: format!("/ns/{ns}/").into(),
            sa_part: format!("sa/{sa}").into(),
        }
    }

    pub(crate) fn matches(&self, principal: &str) -> bool {
        let Some(rest) = principal.strip_prefix(SPIFFE) else {
            return false;
        };
        rest.match_indices(&*self.ns_part)
            .filter(|(i, _)| *i >= 1)
            .any(|(i, _)| {
                let after = &rest[i + self.ns_part.len()..];
                after.match_indices(&*self.sa_part).any(|(j, _)| {
                    let prefix_ok = j == 0 || (j >= 2 && after.as_bytes()[j - 1] == b'/');
                    let tail = &after[j + self.sa_part.len()..];
                    prefix_ok && (tail.is_empty() || (tail.len() >= 2 && tail.starts_with('/')))
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(v: &str) -> PathPattern {
        PathPattern::parse(v).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn strings() {
        assert!(StrPattern::parse("abc*").matches(b"abc"));
        assert!(StrPattern::parse("abc*").matches(b"abcd"));
        assert!(StrPattern::parse("*abc").matches(b"xabc"));
        assert!(StrPattern::parse("*abc*").matches(b"xabc*"));
        assert!(!StrPattern::parse("*abc*").matches(b"xabcd"));
        assert!(StrPattern::parse("a*b").matches(b"a*b"));
        assert!(!StrPattern::parse("a*b").matches(b"axb"));
        assert!(!StrPattern::parse("*").matches(b""));
        assert!(StrPattern::parse("*").matches(b"x"));
        assert!(StrPattern::parse("ABC").matches_ignore_case(b"abc"));
    }

    #[test]
    fn authority_pieces() {
        let a = Authority::new("BookInfo.Example.com.:8080");
        assert_eq!(a.to_string(), "BookInfo.Example.com:8080");
        assert!(a.matches(&StrPattern::parse("bookinfo.example.com:8080")));
        assert!(a.matches(&StrPattern::parse("bookinfo.example.com:*")));
        assert!(a.matches(&StrPattern::parse("*.example.com:8080")));
        assert!(!a.matches(&StrPattern::parse("bookinfo.example.com")));
        let b = Authority::new("BOOKINFO.example.com.");
        assert!(b.matches(&StrPattern::parse("bookinfo.example.com")));
        assert!(b.matches(&StrPattern::parse("*.EXAMPLE.com")));
        assert!(!Authority::new("").matches(&StrPattern::Any));
    }

    #[test]
    fn slash_tolerant_paths() {
        let p = path("/productpage");
        for ok in [
            "/productpage",
            "//productpage",
            "/productpage/",
            "///productpage//",
        ] {
            assert!(p.matches(ok), "{ok}");
        }
        for no in ["/productpage/x", "/productpagex", "/product", "/Productpage"] {
            assert!(!p.matches(no), "{no}");
        }
        assert!(path("/api/*").matches("//api//v1"));
        assert!(path("*.json").matches("/x.json"));
        assert!(!path("*.json").matches("/x.json/"));
        assert!(path("/a/").matches("/a/"));
        assert!(!path("/a/").matches("/a"));
    }

    #[test]
    fn templates() {
        let t = path("/foo/{*}");
        assert!(t.matches("/foo/bar"));
        assert!(!t.matches("/foo/bar/baz"));
        assert!(!t.matches("/foo/"));
        assert!(!t.matches("/foo/a*b"));
        let t = path("/foo/{**}/");
        assert!(t.matches("/foo/bar/"));
        assert!(t.matches("/foo//"));
        assert!(t.matches("/foo/bar/baz/"));
        assert!(!t.matches("/foo/bar"));
        let t = path("/foo/{*}/bar/{**}");
        assert!(t.matches("/foo/buzz/bar/"));
        assert!(t.matches("/foo/buzz/bar/baz"));
        assert!(t.matches("/foo/buzz/bar/baz/qux"));
        assert!(!t.matches("/foo/buzz/bar"));
        let t = path("/{**}");
        assert!(t.matches("/"));
        assert!(t.matches("/a/b"));
        for bad in [
            "/*/baz/{*}",
            "/**/baz/{*}",
            "/{**}/foo/{*}",
            "/foo/{*}.txt",
            "/foo//{*}",
            "/foo/{bar}/{*}",
            "foo/{*}",
            "/foo/b\"r/{*}",
        ] {
            assert!(PathPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ips() {
        let l = IpList(vec![
            IpList::parse_one("10.0.0.0/8").unwrap_or_else(|e| panic!("{e}")),
            IpList::parse_one("2001:db8::1").unwrap_or_else(|e| panic!("{e}")),
        ]);
        assert!(l.contains("10.1.2.3".parse().unwrap_or_else(|e| panic!("{e}"))));
        assert!(l.contains("::ffff:10.1.2.3".parse().unwrap_or_else(|e| panic!("{e}"))));
        assert!(!l.contains("11.0.0.1".parse().unwrap_or_else(|e| panic!("{e}"))));
        assert!(l.contains("2001:db8::1".parse().unwrap_or_else(|e| panic!("{e}"))));
        assert!(!l.contains("2001:db8::2".parse().unwrap_or_else(|e| panic!("{e}"))));
        assert!(IpList::parse_one("10.0.0.256").is_err());
        assert!(IpList::parse_one("10.0.0.0/33").is_err());
        assert!(IpList::parse_one("10.0.0.1/24").is_ok());
    }

    #[test]
    fn identities() {
        let sp = "spiffe://cluster.local/ns/foo/sa/bar";
        assert!(PrincipalPattern::parse("cluster.local/ns/foo/sa/bar").matches(sp));
        assert!(PrincipalPattern::parse("cluster.local/ns/foo/*").matches(sp));
        assert!(PrincipalPattern::parse("*/sa/bar").matches(sp));
        assert!(PrincipalPattern::parse("*").matches(sp));
        assert!(!PrincipalPattern::parse("*/sa/bar").matches("https://x/sa/bar"));
        assert!(NamespaceGlob::new("foo").matches(sp));
        assert!(NamespaceGlob::new("f*").matches(sp));
        assert!(NamespaceGlob::new("*o").matches(sp));
        assert!(!NamespaceGlob::new("fo").matches(sp));
        assert!(ServiceAccount::new("bar", "foo").matches(sp));
        assert!(ServiceAccount::new("foo/bar", "x").matches(sp));
        assert!(!ServiceAccount::new("ba", "foo").matches(sp));
        assert!(!ServiceAccount::new("bar", "other").matches(sp));
        assert!(!ServiceAccount::new("bar", "foo").matches("spiffe://cluster.local/ns/foo/sa/bar-x"));
        assert!(ServiceAccount::new("bar", "foo").matches("spiffe://td/ns/foo/k/v/sa/bar/extra"));
        assert!(!ServiceAccount::new("bar", "foo").matches("spiffe:///ns/foo/sa/bar"));
    }
}
