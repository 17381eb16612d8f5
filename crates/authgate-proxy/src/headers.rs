//! Request hygiene applied on receipt, before routing, policy or authorization see anything.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::error::ProxyError;

/// Hop-by-hop headers (RFC 9110 §7.6.1 plus the legacy ones proxies know). `te` is handled
/// apart: `te: trailers` passes, as Envoy lets it (gRPC needs it end to end).
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "trailer",
];

/// Header names the pipeline sets or reads on every request: constants, so lookups skip
/// parsing the name.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// Whether `name` is one of the names `strip_hop_by_hop` removes unconditionally, or `te`
/// (kept only as `te: trailers`): one pass over the request's names decides whether the
/// removals are needed at all.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    let n = name.as_str();
    HOP_BY_HOP.contains(&n) || n == "http2-settings" || name == header::TE
}

/// What one pass over a request's header names found: which of the receive steps have work to
/// do. Most requests carry none of these names, and each step skipped saves a hash lookup.
#[derive(Debug, Default, Clone, Copy)]
pub struct Present {
    /// A name [`strip_hop_by_hop`] removes, or `te`.
    pub hop_by_hop: bool,
    /// An `x-envoy-*` name ([`strip_internal`]).
    pub envoy_internal: bool,
    /// `content-length` or `transfer-encoding` ([`check_framing`]).
    pub framing: bool,
    pub upgrade: bool,
    pub forwarded_for: bool,
    pub forwarded_host: bool,
    pub forwarded_client_cert: bool,
}

/// One pass over the names. A flag may stay set after a later step removed the header (the
/// `Connection` header can nominate any name): a flag only ever saves work, so a stale one
/// costs a lookup that finds nothing, never a header left behind.
pub fn survey(headers: &HeaderMap) -> Present {
    let mut p = Present::default();
    for name in headers.keys() {
        p.hop_by_hop |= is_hop_by_hop(name);
        p.framing |= name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING;
        p.upgrade |= name == header::UPGRADE;
        let n = name.as_str();
        if n.starts_with("x-") {
            p.envoy_internal |= n.starts_with("x-envoy-");
            p.forwarded_for |= name == X_FORWARDED_FOR;
            p.forwarded_host |= name == X_FORWARDED_HOST;
            p.forwarded_client_cert |= name == X_FORWARDED_CLIENT_CERT;
        }
    }
    p
}

/// Rejects the framing ambiguities request smuggling relies on. hyper already refuses most
/// malformed framing; these are the ones it tolerates by the RFC's letter but a gateway must not.
pub fn check_framing(headers: &HeaderMap) -> Result<(), ProxyError> {
    let bad = |reason: &str| {
        Err(ProxyError::BadRequest {
            reason: reason.to_owned(),
            close: true,
        })
    };
    let te: Vec<&HeaderValue> = headers.get_all(header::TRANSFER_ENCODING).iter().collect();
    let mut cls = headers.get_all(header::CONTENT_LENGTH).iter();
    if !te.is_empty() {
        if headers.contains_key(header::CONTENT_LENGTH) {
            return bad("both content-length and transfer-encoding");
        }
        if te.len() != 1 || !te[0].as_bytes().eq_ignore_ascii_case(b"chunked") {
            return bad("transfer-encoding other than exactly chunked");
        }
    }
    if let Some(first) = cls.next()
        && (cls.any(|v| v != first) || first.as_bytes().contains(&b','))
    {
        return bad("conflicting content-length values");
    }
    Ok(())
}

/// Removes hop-by-hop headers and every header the `Connection` header nominates. A client can
/// thereby drop only headers it sent itself: the gateway adds its own and the authz service's
/// headers after this runs.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of these: one pass over the names, not a lookup per name.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let nominated: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in nominated {
        headers.remove(name);
    }
    headers.remove("http2-settings");
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    let te_trailers_only = {
        let mut te = headers.get_all(header::TE).iter();
        matches!((te.next(), te.next()), (Some(v), None) if v.as_bytes().eq_ignore_ascii_case(b"trailers"))
    };
    if !te_trailers_only {
        headers.remove(header::TE);
    }
}

/// Envoy's own request headers, which it removes from external requests on receipt
/// (`cleanInternalRequestHeaders`), so a client can neither steer retries and timeouts nor pose
/// as an internal caller or another service.
const ENVOY_INTERNAL: [&str; 18] = [
    "x-envoy-decorator-operation",
    "x-envoy-downstream-service-cluster",
    "x-envoy-downstream-service-node",
    "x-envoy-expected-rq-timeout-ms",
    "x-envoy-external-address",
    "x-envoy-force-trace",
    "x-envoy-hedge-on-per-try-timeout",
    "x-envoy-internal",
    "x-envoy-ip-tags",
    "x-envoy-max-retries",
    "x-envoy-original-path",
    "x-envoy-retriable-header-names",
    "x-envoy-retriable-status-codes",
    "x-envoy-retry-grpc-on",
    "x-envoy-retry-on",
    "x-envoy-upstream-alt-stat-name",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-upstream-rq-timeout-ms",
];

pub fn strip_internal(headers: &mut HeaderMap) {
    if !headers.keys().any(|k| k.as_str().starts_with("x-envoy-")) {
        return;
    }
    for name in ENVOY_INTERNAL {
        headers.remove(name);
    }
}

/// Several `cookie` fields (HTTP/2 splits them, RFC 9113 §8.2.3) become one, joined with `; `,
/// so cookie parsers downstream read every cookie.
pub fn join_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::COOKIE).iter();
    let (Some(first), Some(_)) = (values.next(), values.next()) else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for v in headers.get_all(header::COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(v.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

pub fn is_websocket(proto: &HeaderValue) -> bool {
    proto.as_bytes().eq_ignore_ascii_case(b"websocket")
}

/// The client is a gRPC client when its content-type says so; local replies then use
/// grpc-status instead of an HTTP body.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// For an HTTP/1.1 Upgrade (WebSocket) request: the `Connection` value to keep (the client's
/// own spelling of the `upgrade` token) and the `Upgrade` header.
pub fn upgrade_tokens(headers: &HeaderMap) -> Option<(HeaderValue, HeaderValue)> {
    let proto = headers.get(header::UPGRADE)?.clone();
    let token = headers
        .get(header::CONNECTION)?
        .to_str()
        .ok()?
        .split(',')
        .map(str::trim)
        .find(|t| t.eq_ignore_ascii_case("upgrade"))?;
    Some((HeaderValue::from_str(token).ok()?, proto))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn connection_nominated_headers_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("x-keep", "2"),
        ]);
        strip_hop_by_hop(&mut h);
        assert!(h.get("x-secret").is_none());
        assert!(h.get("connection").is_none());
        assert_eq!(h.get("x-keep").map(HeaderValue::as_bytes), Some(&b"2"[..]));
    }

    #[test]
    fn te_trailers_survives_other_te_does_not() {
        let mut h = map(&[("te", "trailers")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.get("te").map(HeaderValue::as_bytes), Some(&b"trailers"[..]));
        let mut h = map(&[("te", "gzip, trailers")]);
        strip_hop_by_hop(&mut h);
        assert!(h.get("te").is_none());
    }

    #[test]
    fn survey_finds_each_name_whatever_else_is_there() {
        let p = survey(&map(&[("host", "x"), ("user-agent", "u"), ("x-custom", "1")]));
        assert!(
            !(p.hop_by_hop
                || p.envoy_internal
                || p.framing
                || p.upgrade
                || p.forwarded_for
                || p.forwarded_host
                || p.forwarded_client_cert)
        );
        let flag = |name: &'static str| {
            let p = survey(&map(&[("host", "x"), (name, "v"), ("accept", "*/*")]));
            [
                p.hop_by_hop,
                p.envoy_internal,
                p.framing,
                p.upgrade,
                p.forwarded_for,
                p.forwarded_host,
                p.forwarded_client_cert,
            ]
        };
        let t = true;
        let f = false;
        assert_eq!(flag("connection"), [t, f, f, f, f, f, f]);
        assert_eq!(flag("keep-alive"), [t, f, f, f, f, f, f]);
        assert_eq!(flag("te"), [t, f, f, f, f, f, f]);
        assert_eq!(flag("http2-settings"), [t, f, f, f, f, f, f]);
        assert_eq!(flag("x-envoy-internal"), [f, t, f, f, f, f, f]);
        assert_eq!(flag("content-length"), [f, f, t, f, f, f, f]);
        assert_eq!(flag("transfer-encoding"), [t, f, t, f, f, f, f]);
        assert_eq!(flag("upgrade"), [t, f, f, t, f, f, f]);
        assert_eq!(flag("x-forwarded-for"), [f, f, f, f, t, f, f]);
        assert_eq!(flag("x-forwarded-host"), [f, f, f, f, f, t, f]);
        assert_eq!(flag("x-forwarded-client-cert"), [f, f, f, f, f, f, t]);
    }

    #[test]
    fn framing_ambiguities_are_rejected() {
        assert!(check_framing(&map(&[("content-length", "3"), ("transfer-encoding", "chunked")])).is_err());
        assert!(check_framing(&map(&[("transfer-encoding", "gzip, chunked")])).is_err());
        assert!(
            check_framing(&map(&[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked")
            ]))
            .is_err()
        );
        assert!(check_framing(&map(&[("content-length", "3"), ("content-length", "4")])).is_err());
        assert!(check_framing(&map(&[("content-length", "3, 3")])).is_err());
        assert!(check_framing(&map(&[("transfer-encoding", "Chunked")])).is_ok());
        assert!(check_framing(&map(&[("content-length", "3")])).is_ok());
    }

    /// The survey-gated receive steps (as the pipeline runs them) leave the
    /// same headers, the same framing verdict and the same upgrade as running every step, on
    /// random requests heavy in hop-by-hop names and `Connection` nominations; and a flag that
    /// says a forwarding header is absent is never wrong after the strips (a stale `true`,
    /// left by a nomination, only costs a lookup).
    #[test]
    fn survey_gated_steps_match_the_ungated_ones() {
        const NAMES: [&str; 16] = [
            "connection",
            "te",
            "upgrade",
            "transfer-encoding",
            "content-length",
            "keep-alive",
            "proxy-connection",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-client-cert",
            "x-envoy-internal",
            "x-envoy-custom",
            "x-other",
            "host",
            "trailer",
            "http2-settings",
        ];
        const VALUES: [&str; 12] = [
            "chunked",
            "3",
            "websocket",
            "trailers",
            "Upgrade",
            "keep-alive, Upgrade",
            "x-forwarded-for",
            "X-Forwarded-Host, x-envoy-internal",
            "x-forwarded-client-cert,x-other",
            "te, close",
            "h2c",
            "",
        ];
        let mut state = 0x853c_49e6_748f_ea9bu64;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        for _ in 0..20_000 {
            let mut h = HeaderMap::new();
            for _ in 0..next(7) {
                h.append(
                    NAMES[next(NAMES.len())],
                    HeaderValue::from_static(VALUES[next(VALUES.len())]),
                );
            }
            // Every step, unconditionally.
            let mut old = h.clone();
            let old_framing = check_framing(&old).is_ok();
            let old_upgrade = upgrade_tokens(&old).filter(|(_, p)| is_websocket(p));
            strip_hop_by_hop(&mut old);
            strip_internal(&mut old);
            // Gated by the survey.
            let mut new = h.clone();
            let present = survey(&new);
            let new_framing = !present.framing || check_framing(&new).is_ok();
            let new_upgrade = present
                .upgrade
                .then(|| upgrade_tokens(&new))
                .flatten()
                .filter(|(_, p)| is_websocket(p));
            if present.hop_by_hop {
                strip_hop_by_hop(&mut new);
            }
            if present.envoy_internal {
                strip_internal(&mut new);
            }
            assert_eq!(old_framing, new_framing, "{h:?}");
            assert_eq!(old_upgrade, new_upgrade, "{h:?}");
            assert_eq!(old, new, "{h:?}");
            for (flag, name) in [
                (present.forwarded_for, X_FORWARDED_FOR),
                (present.forwarded_host, X_FORWARDED_HOST),
                (present.forwarded_client_cert, X_FORWARDED_CLIENT_CERT),
            ] {
                assert!(flag || !new.contains_key(&name), "{name} missed in {h:?}");
            }
        }
    }
}
