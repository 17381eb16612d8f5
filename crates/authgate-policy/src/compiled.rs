//! The compiled form of an AuthorizationPolicy: fields turned into matchers, and how one
//! rule is evaluated against a request.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

use authgate_config::Action;
use http::HeaderName;

use crate::RequestAttributes;
use crate::matcher::{
    Authority, IpList, NamespaceGlob, PathPattern, PrincipalPattern, ServiceAccount, StrPattern,
};

/// The request as the matchers look at it (IP addresses canonical, authority split).
pub(crate) struct Req<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub path_and_query: &'a str,
    pub raw_authority: &'a str,
    pub authority: Authority<'a>,
    pub port: u16,
    pub source_ip: IpAddr,
    pub remote_ip: IpAddr,
    pub destination_ip: IpAddr,
    pub headers: &'a http::HeaderMap,
    pub sni: Option<&'a str>,
    pub principal: Option<&'a str>,
}

impl<'a> Req<'a> {
    pub(crate) fn new(r: &RequestAttributes<'a>) -> Self {
        Self {
            method: r.method,
            path: r.path,
            path_and_query: r.path_and_query,
            raw_authority: r.authority,
            authority: Authority::new(r.authority),
            port: r.port,
            source_ip: r.source_ip.to_canonical(),
            remote_ip: r.remote_ip.to_canonical(),
            destination_ip: r.destination_ip.to_canonical(),
            headers: r.headers,
            sni: r.sni.filter(|s| !s.is_empty()),
            principal: r.principal.filter(|p| !p.is_empty()),
        }
    }
}

/// Where a `request.headers[...]` condition looks.
#[derive(Debug, Clone)]
pub(crate) enum HeaderSource {
    Name(HeaderName),
    /// `:method`
    Method,
    /// `:path` (the normalized path, without query)
    Path,
    /// `:authority`, and `host` (HTTP/1 `Host` is the authority)
    Authority,
}

/// One request attribute and the values a field compares it with.
#[derive(Debug, Clone)]
pub(crate) enum Attr {
    SourceIp(IpList),
    RemoteIp(IpList),
    DestinationIp(IpList),
    Port(Vec<u16>),
    Host(Vec<StrPattern>),
    Method(Vec<StrPattern>),
    Path(Vec<PathPattern>),
    Principal(Vec<PrincipalPattern>),
    Namespace(Vec<NamespaceGlob>),
    ServiceAccount(Vec<ServiceAccount>),
    Header(HeaderSource, Vec<StrPattern>),
    Sni(Vec<StrPattern>),
    /// An attribute authgate never has at this point (JWT data, dynamic metadata): its
    /// values never match, so `notValues` always do (R-C6).
    Absent(&'static str),
}

impl Attr {
    /// True if any value matches the request.
    fn any(&self, r: &Req<'_>) -> bool {
        match self {
            Self::SourceIp(l) => l.contains(r.source_ip),
            Self::RemoteIp(l) => l.contains(r.remote_ip),
            Self::DestinationIp(l) => l.contains(r.destination_ip),
            Self::Port(ports) => ports.contains(&r.port),
            Self::Host(ps) => ps.iter().any(|p| r.authority.matches(p)),
            // `:method` is a header matcher: `*` is "present", which it always is.
            Self::Method(ps) => ps
                .iter()
                .any(|p| matches!(p, StrPattern::Any) || p.matches(r.method.as_bytes())),
            Self::Path(ps) => ps.iter().any(|p| p.matches(r.path)),
            Self::Principal(ps) => r.principal.is_some_and(|pr| ps.iter().any(|p| p.matches(pr))),
            Self::Namespace(gs) => r.principal.is_some_and(|pr| gs.iter().any(|g| g.matches(pr))),
            Self::ServiceAccount(sas) => r.principal.is_some_and(|pr| sas.iter().any(|s| s.matches(pr))),
            Self::Header(src, ps) => {
                // Each value of a repeated header is checked on its own (CVE-2026-26308): a
                // pattern matches if it matches any one of them.
                let one = |v: &[u8]| ps.iter().any(|p| matches!(p, StrPattern::Any) || p.matches(v));
                match src {
                    HeaderSource::Name(n) => r.headers.get_all(n).iter().any(|v| one(v.as_bytes())),
                    HeaderSource::Method => one(r.method.as_bytes()),
                    HeaderSource::Path => !r.path_and_query.is_empty() && one(r.path_and_query.as_bytes()),
                    HeaderSource::Authority => !r.raw_authority.is_empty() && one(r.raw_authority.as_bytes()),
                }
            }
            Self::Sni(ps) => r
                .sni
                .is_some_and(|s| ps.iter().any(|p| p.matches_ignore_case(s.as_bytes()))),
            Self::Absent(_) => false,
        }
    }

    /// The request's value of this attribute, for `explain`.
    fn observed(&self, r: &Req<'_>) -> String {
        let principal = || match r.principal {
            Some(p) => format!("principal {p:?}"),
            None => "no principal (no client certificate)".to_owned(),
        };
        match self {
            Self::SourceIp(_) => format!("source.ip {}", r.source_ip),
            Self::RemoteIp(_) => format!("remote.ip {}", r.remote_ip),
            Self::DestinationIp(_) => format!("destination.ip {}", r.destination_ip),
            Self::Port(_) => format!("port {}", r.port),
            Self::Host(_) => format!("host {:?}", r.authority.to_string()),
            Self::Method(_) => format!("method {:?}", r.method),
            Self::Path(_) => format!("path {:?}", r.path),
            Self::Principal(_) | Self::Namespace(_) | Self::ServiceAccount(_) => principal(),
            Self::Header(src, _) => match src {
                HeaderSource::Name(n) => {
                    let vals: Vec<String> = r
                        .headers
                        .get_all(n)
                        .iter()
                        .map(|v| format!("{:?}", String::from_utf8_lossy(v.as_bytes())))
                        .collect();
                    if vals.is_empty() {
                        format!("header {n} absent")
                    } else {
                        format!("header {n} = [{}]", vals.join(", "))
                    }
                }
                HeaderSource::Method => format!(":method {:?}", r.method),
                HeaderSource::Path => format!(":path {:?}", r.path_and_query),
                HeaderSource::Authority => format!(":authority {:?}", r.raw_authority),
            },
            Self::Sni(_) => match r.sni {
                Some(s) => format!("sni {s:?}"),
                None => "no SNI".to_owned(),
            },
            Self::Absent(what) => format!("{what} (never available in authgate)"),
        }
    }
}

/// One `X` or `notX` list (or a `when` condition's `values` / `notValues`).
#[derive(Debug, Clone)]
pub(crate) struct Field {
    /// Path inside the rule, e.g. `to[0].operation.paths`.
    pub path: Box<str>,
    pub negate: bool,
    pub attr: Attr,
    /// The values as written, for `explain`.
    pub shown: Box<str>,
}

impl Field {
    pub(crate) fn new(path: String, negate: bool, attr: Attr, values: &[String]) -> Self {
        let mut shown = String::from("[");
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                shown.push_str(", ");
            }
            let _ = write!(shown, "{v:?}");
        }
        shown.push(']');
        Self {
            path: path.into(),
            negate,
            attr,
            shown: shown.into(),
        }
    }

    pub(crate) fn matches(&self, r: &Req<'_>) -> bool {
        self.attr.any(r) != self.negate
    }
}

/// Receives every field check made while evaluating a rule (for `explain`).
pub(crate) trait Tracer {
    fn check(&mut self, field: &Field, r: &Req<'_>, ok: bool);
}

/// The tracer of the hot path: does nothing, compiles away.
pub(crate) struct NoTrace;

impl Tracer for NoTrace {
    #[inline(always)]
    fn check(&mut self, _: &Field, _: &Req<'_>, _: bool) {}
}

/// A field check as `explain` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Field path inside the rule, e.g. `to[0].operation.paths`.
    pub field: String,
    /// Whether this condition held (for a `notX` field: whether none of the values matched).
    pub ok: bool,
    /// What was compared: values as written and the request's value.
    pub detail: String,
}

/// Records checks for `explain`.
#[derive(Default)]
pub(crate) struct Recorder {
    pub checks: Vec<Check>,
}

impl Tracer for Recorder {
    fn check(&mut self, f: &Field, r: &Req<'_>, ok: bool) {
        let any = f.attr.any(r);
        let verb = match (f.negate, any) {
            (false, true) => "matches one of",
            (false, false) => "matches none of",
            (true, true) => "matches one of (excluded)",
            (true, false) => "matches none of (not excluded)",
        };
        self.checks.push(Check {
            field: f.path.to_string(),
            ok,
            detail: format!("{} {verb} {}", f.attr.observed(r), f.shown),
        });
    }
}

fn all<T: Tracer>(fields: &[Field], r: &Req<'_>, t: &mut T) -> bool {
    for f in fields {
        let ok = f.matches(r);
        t.check(f, r, ok);
        if !ok {
            return false;
        }
    }
    true
}

/// A rule: (any `from`) AND (any `to`) AND (every `when`) (R-C11). An absent `from`/`to` is
/// an empty list here and matches anything (R-C12).
#[derive(Debug, Clone, Default)]
pub(crate) struct Rule {
    pub from: Vec<Vec<Field>>,
    pub to: Vec<Vec<Field>>,
    pub when: Vec<Field>,
}

impl Rule {
    pub(crate) fn matches<T: Tracer>(&self, r: &Req<'_>, t: &mut T) -> bool {
        (self.from.is_empty() || self.from.iter().any(|alt| all(alt, r, t)))
            && (self.to.is_empty() || self.to.iter().any(|alt| all(alt, r, t)))
            && all(&self.when, r, t)
    }
}

/// What a policy does in authgate's evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Role {
    /// CUSTOM with a known provider: a match means "call the provider of this rank".
    Custom(usize),
    /// CUSTOM with an unknown provider: its rules deny, under this name (R-C9).
    BadCustom(Arc<str>),
    Deny,
    Allow,
    Audit,
    DryRunDeny,
    DryRunAllow,
    /// Never evaluated (dry-run CUSTOM or AUDIT), with the reason.
    Inert(&'static str),
}

#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub name: Arc<str>,
    pub namespace: String,
    pub origin: String,
    pub action: Action,
    pub provider: Option<String>,
    pub dry_run: bool,
    pub role: Role,
    /// `false` when `rules` is absent or empty: the policy matches nothing.
    pub has_rules: bool,
    pub rules: Vec<Rule>,
}

impl Policy {
    pub(crate) fn matches<T: Tracer>(&self, r: &Req<'_>, t: &mut T) -> bool {
        self.rules.iter().any(|rule| rule.matches(r, t))
    }
}
