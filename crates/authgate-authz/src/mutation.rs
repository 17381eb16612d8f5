//! What an allowing authz answer does to the upstream request and to the client response.
//!
//! Both mutation kinds are plain ordered lists decided when the answer is decoded (the providers
//! put the operations in the order Envoy applies them), so applying them is a straight loop.

use std::collections::BTreeMap;

use http::header::{HOST, HeaderMap, HeaderName, HeaderValue};

/// How one header operation treats an existing header of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderAction {
    /// Replace every existing entry with one (Envoy `setCopy`).
    Set,
    /// Add one more entry, keeping the existing ones (Envoy `addCopy`).
    Add,
    /// Append `,value` to the first existing entry; dropped when the header is absent
    /// (Envoy `appendCopy`, only ever done on present headers by ext_authz).
    AppendIfExists,
    /// Add only when no entry of that name exists.
    AddIfAbsent,
    /// Replace only when an entry of that name exists.
    OverwriteIfExists,
}

/// One header operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMutation {
    pub name: HeaderName,
    pub value: HeaderValue,
    pub action: HeaderAction,
}

impl HeaderMutation {
    pub fn new(name: HeaderName, value: HeaderValue, action: HeaderAction) -> Self {
        Self { name, value, action }
    }

    /// Consumes the operation: its name and value move into the map (a clone of a freshly
    /// parsed name or value would allocate, to share its bytes).
    fn apply(self, headers: &mut HeaderMap) {
        let Self { name, value, action } = self;
        match action {
            HeaderAction::Set => {
                headers.insert(name, value);
            }
            HeaderAction::Add => {
                headers.append(name, value);
            }
            HeaderAction::AddIfAbsent => {
                if !headers.contains_key(&name) {
                    headers.append(name, value);
                }
            }
            HeaderAction::OverwriteIfExists => {
                if headers.contains_key(&name) {
                    headers.insert(name, value);
                }
            }
            HeaderAction::AppendIfExists => append_to_first(headers, &name, &value),
        }
    }
}

/// Envoy's `appendCopy`: the value is folded into the *first* entry as `first,value`; later
/// entries of the same name stay as they are.
fn append_to_first(headers: &mut HeaderMap, name: &HeaderName, value: &HeaderValue) {
    let mut values: Vec<HeaderValue> = headers.get_all(name).iter().cloned().collect();
    let Some(first) = values.first_mut() else {
        return;
    };
    let mut joined = Vec::with_capacity(first.len() + 1 + value.len());
    joined.extend_from_slice(first.as_bytes());
    joined.push(b',');
    joined.extend_from_slice(value.as_bytes());
    // Both parts are valid field values and `,` is a valid field byte.
    match HeaderValue::from_bytes(&joined) {
        Ok(v) => *first = v,
        Err(_) => return,
    }
    headers.remove(name);
    for v in values {
        headers.append(name.clone(), v);
    }
}

/// Mutations of the request that goes upstream (Envoy OK-3..OK-9).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestMutation {
    /// Header operations, in the order they are applied.
    pub headers: Vec<HeaderMutation>,
    /// A replacement for the whole `:path` (path and query), when the authz service set it
    /// (applied by [`RequestMutation::apply`], before the query parameters).
    pub path: Option<String>,
    /// A replacement `:method` (gRPC `ok_response.headers` may set it, and Envoy applies it).
    /// [`RequestMutation::apply`] cannot change the method: the proxy applies this one.
    pub method: Option<http::Method>,
    /// Headers to remove after the operations above. Never `host` (nor pseudo-headers, which a
    /// `HeaderName` cannot name).
    pub remove: Vec<HeaderName>,
    /// `query_parameters_to_set`, in order: each replaces every value of its key.
    pub query_set: Vec<(String, String)>,
    /// `query_parameters_to_remove`: every value of each key is dropped.
    pub query_remove: Vec<String>,
}

impl RequestMutation {
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
            && self.path.is_none()
            && self.method.is_none()
            && self.remove.is_empty()
            && self.query_set.is_empty()
            && self.query_remove.is_empty()
    }

    /// Whether [`RequestMutation::apply`] writes the path (a new path or query parameters).
    pub fn rewrites_path(&self) -> bool {
        self.path.is_some() || !self.query_set.is_empty() || !self.query_remove.is_empty()
    }

    /// Envoy's OK-path order (envoy-ext-authz.md §6 OK-3..OK-9): header operations in their
    /// decided order (set, add, append-if-exists), removals (never pseudo-headers or host), then
    /// the query parameters, which rebuild the path with its parameters sorted by key.
    ///
    /// [`RequestMutation::method`] is not applied: take it out first.
    pub fn apply(self, headers: &mut HeaderMap, path_and_query: &mut String) {
        for op in self.headers {
            op.apply(headers);
        }
        if let Some(path) = self.path {
            *path_and_query = path;
        }
        for name in &self.remove {
            if name != HOST {
                headers.remove(name);
            }
        }
        if !self.query_set.is_empty() || !self.query_remove.is_empty() {
            *path_and_query = rewrite_query(path_and_query, &self.query_set, &self.query_remove);
        }
    }
}

/// Envoy's `QueryParamsMulti` round trip: the query is parsed (without percent-decoding) into a
/// map sorted by key, keys are overwritten or removed, and the path is rebuilt as
/// `path?k=v&k2=v2` in key order (a parameter without `=` comes back as `k=`). No `?` when no
/// parameter is left.
pub fn rewrite_query(path_and_query: &str, set: &[(String, String)], remove: &[String]) -> String {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let mut params: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Some(query) = query {
        for param in query.split('&') {
            let (k, v) = param.split_once('=').unwrap_or((param, ""));
            params.entry(k.to_owned()).or_default().push(v.to_owned());
        }
    }
    for (k, v) in set {
        params.insert(k.clone(), vec![v.clone()]);
    }
    for k in remove {
        params.remove(k);
    }
    let mut out = String::with_capacity(path_and_query.len() + 16);
    out.push_str(path);
    let mut delim = '?';
    for (k, values) in &params {
        for v in values {
            out.push(delim);
            out.push_str(k);
            out.push('=');
            out.push_str(v);
            delim = '&';
        }
    }
    out
}

/// Mutations of the response that goes back to the client after an allow (Envoy OK-11).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseMutation {
    /// Header operations, in the order they are applied.
    pub headers: Vec<HeaderMutation>,
}

impl ResponseMutation {
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
    }

    /// Applies the operations in order (the providers store them in Envoy's OK-11 order: add,
    /// set, add-if-absent, overwrite-if-exists). The HTTP provider's
    /// `headersToDownstreamOnAllow` are all `Add` (Envoy `addCopy`).
    pub fn apply(self, headers: &mut HeaderMap) {
        for op in self.headers {
            op.apply(headers);
        }
    }
}

/// Everything an allow does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowMutations {
    pub request: RequestMutation,
    pub response: ResponseMutation,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
    }

    fn op(name: &'static str, value: &str, action: HeaderAction) -> HeaderMutation {
        HeaderMutation::new(HeaderName::from_static(name), hv(value), action)
    }

    fn values(h: &HeaderMap, name: &str) -> Vec<String> {
        h.get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    #[test]
    fn query_rewrite_matches_envoy_examples() {
        // envoy-ext-authz.md OK-9 [T]
        assert_eq!(
            rewrite_query(
                "/users?remove-me=1&overwrite-me=2&leave-me=3",
                &[
                    ("add-me".into(), "9".into()),
                    ("overwrite-me".into(), "new".into())
                ],
                &["remove-me".into()],
            ),
            "/users?add-me=9&leave-me=3&overwrite-me=new"
        );
        assert_eq!(
            rewrite_query("/users?leave-me=alone&leave-me=in-peace", &[], &["absent".into()]),
            "/users?leave-me=alone&leave-me=in-peace"
        );
        assert_eq!(
            rewrite_query("/users?remove-me=definitely", &[], &["remove-me".into()]),
            "/users"
        );
        assert_eq!(rewrite_query("/p", &[("a".into(), "1".into())], &[]), "/p?a=1");
        // No decoding, no re-encoding; a bare key gets `=`.
        assert_eq!(
            rewrite_query("/p?b=%2F&flag&a=1", &[], &["zz".into()]),
            "/p?a=1&b=%2F&flag="
        );
    }

    #[test]
    fn request_mutation_order_and_actions() {
        let mut h = HeaderMap::new();
        h.append("x-set", hv("client"));
        h.append("x-set", hv("client2"));
        h.append("x-app", hv("a"));
        h.append("x-app", hv("b"));
        h.append("x-rm", hv("1"));
        h.insert(HOST, hv("example.com"));
        let m = RequestMutation {
            headers: vec![
                op("x-set", "authz", HeaderAction::Set),
                op("x-add", "1", HeaderAction::Add),
                op("x-add", "2", HeaderAction::Add),
                op("x-app", "c", HeaderAction::AppendIfExists),
                op("x-missing", "c", HeaderAction::AppendIfExists),
                op("x-set", "never", HeaderAction::AddIfAbsent),
                op("x-absent", "new", HeaderAction::AddIfAbsent),
                op("x-absent2", "no", HeaderAction::OverwriteIfExists),
                op("x-add", "over", HeaderAction::OverwriteIfExists),
            ],
            path: None,
            method: None,
            remove: vec![HeaderName::from_static("x-rm"), HOST],
            query_set: vec![],
            query_remove: vec![],
        };
        let mut path = "/a?z=1".to_owned();
        m.apply(&mut h, &mut path);
        assert_eq!(values(&h, "x-set"), ["authz"]);
        assert_eq!(values(&h, "x-add"), ["over"]);
        assert_eq!(values(&h, "x-app"), ["a,c", "b"]);
        assert!(h.get("x-missing").is_none());
        assert_eq!(values(&h, "x-absent"), ["new"]);
        assert!(h.get("x-absent2").is_none());
        assert!(h.get("x-rm").is_none());
        assert_eq!(values(&h, "host"), ["example.com"]);
        assert_eq!(path, "/a?z=1");
    }
}
