//! What one gateway's run of a case produced, normalized, and the field-by-field differences
//! between two runs.

use std::collections::BTreeMap;

use crate::client::ClientResponse;
use crate::grpc::{escape_bytes, flatten, normalize_header_value};
use crate::recorder::{RecordedHttp, Recordings};

/// Everything observable about one request through one gateway.
#[derive(Debug, Clone)]
pub struct Observation {
    pub client: Result<ClientResponse, String>,
    pub seen: Recordings,
}

/// One field that differs: `None` means the field is absent on that side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub field: String,
    pub authgate: Option<String>,
    pub envoy: Option<String>,
}

/// Headers never compared on the client side: run-specific (`date`), the product name
/// (`server`), Envoy's own diagnostics (`x-envoy-*`), and message framing, which HTTP allows
/// each hop to choose (the body itself is compared).
fn ignored_client_header(name: &str) -> bool {
    matches!(
        name,
        "date" | "server" | "content-length" | "transfer-encoding" | "connection" | "keep-alive"
    ) || ignored_envoy_header(name)
}

/// `x-envoy-*` except the ext_authz protocol headers (`x-envoy-auth-*`), which carry meaning.
fn ignored_envoy_header(name: &str) -> bool {
    name.starts_with("x-envoy-") && !name.starts_with("x-envoy-auth-")
}

/// Header lines grouped by name (ordering across names is unspecified in both gateways);
/// values of one name keep their order.
fn group(headers: &[(String, String)], skip: impl Fn(&str) -> bool) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in headers {
        let k = k.to_ascii_lowercase();
        if skip(&k) {
            continue;
        }
        let v = normalize_header_value(&k, v);
        m.entry(k).or_default().push(v);
    }
    m.into_iter()
        .map(|(k, v)| {
            (
                k,
                v.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", "),
            )
        })
        .collect()
}

/// Bodies are shown in full when short, else by length, digest and a prefix (the digest keeps
/// two long bodies that differ after the prefix from comparing equal).
pub fn show_body(b: &[u8]) -> String {
    if b.len() <= 200 {
        format!("{:?}", escape_bytes(b))
    } else {
        format!(
            "{} bytes, fnv1a {:016x}: {:?}…",
            b.len(),
            fnv1a(b),
            escape_bytes(&b[..120])
        )
    }
}

fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &c| {
        (h ^ u64::from(c)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Flattens an observation into `field → value`.
pub fn fields(o: &Observation) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    match &o.client {
        Err(e) => {
            out.insert("client.error".to_owned(), e.clone());
        }
        Ok(r) => {
            out.insert("client.status".to_owned(), r.status.to_string());
            for (k, v) in group(&r.headers, ignored_client_header) {
                out.insert(format!("client.headers[{k}]"), v);
            }
            if !r.body.is_empty() {
                out.insert("client.body".to_owned(), show_body(&r.body));
            }
            for (k, v) in group(&r.trailers, ignored_client_header) {
                out.insert(format!("client.trailers[{k}]"), v);
            }
        }
    }
    http_fields(&mut out, "backend", &o.seen.backend);
    http_fields(&mut out, "authz.http", &o.seen.http_authz);
    out.insert("authz.grpc.count".to_owned(), o.seen.grpc_authz.len().to_string());
    for (i, c) in o.seen.grpc_authz.iter().enumerate() {
        for (k, v) in flatten(&c.request) {
            if let Some(name) = k
                .strip_prefix("attributes.request.http.headers[")
                .and_then(|n| n.strip_suffix(']'))
                && ignored_envoy_header(name)
            {
                continue;
            }
            out.insert(format!("authz.grpc[{i}].{k}"), v);
        }
    }
    out
}

fn http_fields(out: &mut BTreeMap<String, String>, prefix: &str, reqs: &[RecordedHttp]) {
    out.insert(format!("{prefix}.count"), reqs.len().to_string());
    for (i, r) in reqs.iter().enumerate() {
        out.insert(
            format!("{prefix}[{i}].line"),
            format!("{} {} {}", r.method, r.target, r.version),
        );
        for (k, v) in group(&r.headers, ignored_envoy_header) {
            out.insert(format!("{prefix}[{i}].headers[{k}]"), v);
        }
        if !r.body.is_empty() {
            out.insert(format!("{prefix}[{i}].body"), show_body(&r.body));
        }
    }
}

/// Every field whose value differs (or exists on one side only).
pub fn compare(authgate: &Observation, envoy: &Observation) -> Vec<Difference> {
    let a = fields(authgate);
    let e = fields(envoy);
    let mut keys: Vec<&String> = a.keys().chain(e.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != e.get(*k))
        .map(|k| Difference {
            field: k.clone(),
            authgate: a.get(k).cloned(),
            envoy: e.get(k).cloned(),
        })
        .collect()
}

/// `*` matches any run of characters (including none); everything else is literal.
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches() {
        assert!(glob("client.headers[*]", "client.headers[x-a]"));
        assert!(glob("*", ""));
        assert!(glob("g-*-x", "g-a-b-x"));
        assert!(!glob("g-*-x", "g-a-b-y"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
        assert!(glob("a*b*c", "abc"));
        assert!(!glob("ab*ba", "aba"));
    }

    #[test]
    fn long_bodies_differing_late_differ() {
        let a = vec![b'a'; 300];
        let mut b = a.clone();
        b[250] = b'b';
        assert_ne!(show_body(&a), show_body(&b));
        assert_eq!(show_body(&a), show_body(&a.clone()));
    }

    #[test]
    fn header_grouping_ignores_order_across_names_only() {
        let h = |l: &[(&str, &str)]| {
            l.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<Vec<_>>()
        };
        let a = group(&h(&[("a", "1"), ("b", "2"), ("a", "3")]), |_| false);
        let b = group(&h(&[("b", "2"), ("a", "1"), ("a", "3")]), |_| false);
        let c = group(&h(&[("a", "3"), ("b", "2"), ("a", "1")]), |_| false);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
