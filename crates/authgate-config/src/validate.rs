//! Turns the serde model into a typed `Config`, collecting every problem with file, line and
//! field instead of stopping at the first.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_saphyr::Spanned;

use crate::duration::parse_duration;
use crate::error::Issues;
use crate::istio::IstioBundle;
use crate::model::{self, ExtensionProviderSpec, GatewayFile, InlinePolicy};
use crate::typed::*;

/// Default ext_authz call timeout. Istio defaults to 600s; authgate uses 10s so a hung authz
/// service turns into `statusOnError` quickly instead of parking client connections for ten
/// minutes. Set `timeout` explicitly to get Istio's value.
pub const DEFAULT_PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_LISTENER: &str = "0.0.0.0:8080";
pub const DEFAULT_ADMIN: &str = "127.0.0.1:15000";
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

fn line<T>(s: &Spanned<T>) -> Option<u64> {
    let l = s.referenced.line();
    (l > 0).then_some(l)
}

pub(crate) fn build(
    file: &str,
    base_dir: &Path,
    raw: GatewayFile,
    istio: IstioBundle,
    issues: &mut Issues<'_>,
) -> Config {
    let mut notes = istio.notes;

    let static_hosts: BTreeMap<String, IpAddr> = raw
        .static_hosts
        .iter()
        .filter_map(|(name, ip)| match ip.value.trim().parse::<IpAddr>() {
            Ok(addr) => Some((name.to_ascii_lowercase(), addr)),
            Err(_) => {
                issues.push(
                    line(ip),
                    format!("staticHosts.{name}"),
                    format!("{:?} is not an IP address", ip.value),
                );
                None
            }
        })
        .collect();

    let listeners = listeners(&raw.listeners, base_dir, issues);
    let backends = backends(&raw.backends, base_dir, issues);
    let routes = routes(&raw.routes, &backends, issues);

    let mut providers = Vec::new();
    let mut seen = HashSet::new();
    for (i, p) in raw.extension_providers.iter().enumerate() {
        let field = format!("extensionProviders[{i}]");
        if let Some(p) = provider(&p.value, line(p), &field, issues, &mut notes) {
            if !seen.insert(p.name.clone()) {
                issues.push(
                    line(&raw.extension_providers[i]),
                    format!("{field}.name"),
                    format!("duplicate provider name {:?}", p.name),
                );
            }
            providers.push(p);
        }
    }
    for (spec, origin, field) in &istio.providers {
        let mut sub = Issues::new(&origin.file);
        if let Some(p) = provider(spec, origin.line, field, &mut sub, &mut notes) {
            if !seen.insert(p.name.clone()) {
                sub.push(
                    origin.line,
                    format!("{field}.name"),
                    format!("duplicate provider name {:?}", p.name),
                );
            }
            providers.push(p);
        }
        issues.errors.extend(sub.errors);
    }

    let mut policies = Vec::new();
    for (i, p) in raw.authorization_policies.iter().enumerate() {
        if let Some(policy) = inline_policy(&p.value, file, line(p), i, issues) {
            policies.push(policy);
        }
    }
    policies.extend(istio.policies);

    let path_normalization = raw
        .path_normalization
        .as_ref()
        .map(|pn| path_normalization(pn, issues))
        .unwrap_or_default();
    // The gateway file's own rootNamespace wins over the one in Istio's MeshConfig.
    let mesh_root_namespace = istio.root_namespace.clone();
    let gateway = raw
        .gateway
        .as_ref()
        .map(|g| {
            let mut d = GatewayIdentity::default();
            if let Some(rn) = &mesh_root_namespace {
                d.root_namespace.clone_from(rn);
            }
            GatewayIdentity {
                labels: g.value.labels.clone().unwrap_or(d.labels),
                namespace: g.value.namespace.clone().unwrap_or(d.namespace),
                root_namespace: g.value.root_namespace.clone().unwrap_or(d.root_namespace),
                name: g.value.name.clone(),
                num_trusted_proxies: g.value.num_trusted_proxies.unwrap_or(0),
            }
        })
        .unwrap_or_else(|| GatewayIdentity {
            root_namespace: mesh_root_namespace.unwrap_or_else(|| GatewayIdentity::default().root_namespace),
            ..GatewayIdentity::default()
        });

    let admin = match raw
        .admin
        .as_ref()
        .and_then(|a| a.value.address.as_deref().map(|s| (a, s)))
    {
        None => DEFAULT_ADMIN.parse().ok(),
        Some((_, "disabled")) => None,
        Some((a, s)) => match s.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                issues.push(
                    line(a),
                    "admin.address",
                    format!("{s:?} is not ip:port (or \"disabled\")"),
                );
                None
            }
        },
    };
    let access_log = match raw
        .access_log
        .as_ref()
        .and_then(|a| a.value.format.as_deref().map(|f| (a, f)))
    {
        None | Some((_, "text")) => AccessLogFormat::Text,
        Some((_, "json")) => AccessLogFormat::Json,
        Some((_, "off")) => AccessLogFormat::Off,
        Some((a, other)) => {
            issues.push(
                line(a),
                "accessLog.format",
                format!("{other:?} is not one of text, json, off"),
            );
            AccessLogFormat::Text
        }
    };

    Config {
        files: Vec::new(),
        listeners,
        routes,
        backends,
        providers,
        policies,
        static_hosts,
        path_normalization,
        gateway,
        admin,
        access_log,
        notes,
    }
}

fn listeners(
    raw: &[Spanned<model::ListenerSpec>],
    base_dir: &Path,
    issues: &mut Issues<'_>,
) -> Vec<Listener> {
    if raw.is_empty() {
        return DEFAULT_LISTENER
            .parse()
            .map(|address| Listener {
                name: "http".into(),
                address,
                tls: None,
            })
            .into_iter()
            .collect();
    }
    let mut out: Vec<Listener> = Vec::new();
    for (i, l) in raw.iter().enumerate() {
        let field = format!("listeners[{i}]");
        let Ok(address) = l.value.address.parse::<SocketAddr>() else {
            issues.push(
                line(l),
                format!("{field}.address"),
                format!("{:?} is not ip:port", l.value.address),
            );
            continue;
        };
        // Port 0 asks the kernel for a free port: never a clash.
        if address.port() != 0 && out.iter().any(|o| o.address == address) {
            issues.push(
                line(l),
                format!("{field}.address"),
                format!("{address} is used by another listener"),
            );
        }
        let tls = l.value.tls.as_ref().map(|t| {
            if t.certificates.is_empty() {
                issues.push(
                    line(l),
                    format!("{field}.tls.certificates"),
                    "at least one certificate is required",
                );
            }
            ListenerTls {
                certificates: t
                    .certificates
                    .iter()
                    .map(|c| CertificateFiles {
                        cert_file: base_dir.join(&c.cert_file),
                        key_file: base_dir.join(&c.key_file),
                    })
                    .collect(),
                client_ca_file: t.client_ca_file.as_ref().map(|f| base_dir.join(f)),
                require_client_certificate: t.require_client_certificate.unwrap_or(true),
            }
        });
        out.push(Listener {
            name: l
                .value
                .name
                .clone()
                .unwrap_or_else(|| format!("listener-{}", address.port())),
            address,
            tls,
        });
    }
    out
}

/// Parses `host:port` or `[v6]:port`.
pub fn parse_host_port(s: &str) -> Result<HostPort, String> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok(HostPort {
            host: sa.ip().to_string(),
            port: sa.port(),
        });
    }
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not host:port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{s:?}: port {port:?} is not a number in 1..65535"))?;
    if port == 0 {
        return Err(format!("{s:?}: port 0 is not allowed"));
    }
    if host.is_empty() || host.contains(['/', ' ', '[', ']']) {
        return Err(format!("{s:?}: bad host"));
    }
    Ok(HostPort {
        host: host.to_ascii_lowercase(),
        port,
    })
}

fn backends(raw: &[Spanned<model::BackendSpec>], base_dir: &Path, issues: &mut Issues<'_>) -> Vec<Backend> {
    let mut out: Vec<Backend> = Vec::new();
    for (i, b) in raw.iter().enumerate() {
        let field = format!("backends[{i}]");
        if b.value.name.is_empty() {
            issues.push(line(b), format!("{field}.name"), "must not be empty");
        }
        if out.iter().any(|o| o.name == b.value.name) {
            issues.push(
                line(b),
                format!("{field}.name"),
                format!("duplicate backend name {:?}", b.value.name),
            );
        }
        if b.value.endpoints.is_empty() {
            issues.push(
                line(b),
                format!("{field}.endpoints"),
                "at least one host:port endpoint is required",
            );
        }
        let endpoints = b
            .value
            .endpoints
            .iter()
            .enumerate()
            .filter_map(|(j, e)| {
                parse_host_port(e)
                    .map_err(|m| issues.push(line(b), format!("{field}.endpoints[{j}]"), m))
                    .ok()
            })
            .collect();
        let protocol = match b.value.protocol.as_deref() {
            None | Some("http1") | Some("HTTP") | Some("http") => UpstreamProtocol::Http1,
            Some("http2") | Some("h2c") | Some("grpc") | Some("GRPC") | Some("HTTP2") => {
                UpstreamProtocol::Http2
            }
            Some(other) => {
                issues.push(
                    line(b),
                    format!("{field}.protocol"),
                    format!("{other:?} is not http1 or http2"),
                );
                UpstreamProtocol::Http1
            }
        };
        let connect_timeout = match b.value.connect_timeout.as_deref() {
            None => DEFAULT_CONNECT_TIMEOUT,
            Some(s) => parse_duration(s).unwrap_or_else(|m| {
                issues.push(line(b), format!("{field}.connectTimeout"), m);
                DEFAULT_CONNECT_TIMEOUT
            }),
        };
        let lb_policy = match b.value.lb_policy.as_deref() {
            None | Some("ROUND_ROBIN") => LbPolicy::RoundRobin,
            Some("LEAST_REQUEST") => LbPolicy::LeastRequest,
            Some(other) => {
                issues.push(
                    line(b),
                    format!("{field}.lbPolicy"),
                    format!("{other:?} is not ROUND_ROBIN or LEAST_REQUEST"),
                );
                LbPolicy::RoundRobin
            }
        };
        let tls = b.value.tls.as_ref().map(|t| UpstreamTls {
            ca_file: t.ca_file.as_ref().map(|f| base_dir.join(f)),
            server_name: t.server_name.clone(),
        });
        out.push(Backend {
            name: b.value.name.clone(),
            endpoints,
            protocol,
            connect_timeout,
            lb_policy,
            tls,
        });
    }
    out
}

fn routes(raw: &[Spanned<model::RouteSpec>], backends: &[Backend], issues: &mut Issues<'_>) -> Vec<Route> {
    let mut out = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let field = format!("routes[{i}]");
        let Some(backend) = backends.iter().position(|b| b.name == r.value.backend) else {
            issues.push(
                line(r),
                format!("{field}.backend"),
                format!("no backend named {:?}", r.value.backend),
            );
            continue;
        };
        let path = match r.value.match_.as_ref() {
            None => PathMatch::Prefix("/".into()),
            Some(m) => match (&m.prefix, &m.exact) {
                (Some(p), None) => PathMatch::Prefix(p.clone()),
                (None, Some(e)) => PathMatch::Exact(e.clone()),
                _ => {
                    issues.push(
                        line(r),
                        format!("{field}.match"),
                        "set exactly one of prefix, exact",
                    );
                    continue;
                }
            },
        };
        if let PathMatch::Prefix(p) | PathMatch::Exact(p) = &path
            && !p.starts_with('/')
        {
            issues.push(
                line(r),
                format!("{field}.match"),
                format!("path {p:?} must start with /"),
            );
        }
        let hosts = r
            .value
            .hosts
            .iter()
            .map(|h| {
                let h = h.trim_end_matches('.').to_ascii_lowercase();
                if h == "*" {
                    HostPattern::Any
                } else if let Some(s) = h.strip_prefix('*') {
                    HostPattern::WildcardSuffix(s.to_owned())
                } else {
                    HostPattern::Exact(h)
                }
            })
            .collect();
        let timeout = r.value.timeout.as_deref().and_then(|s| {
            parse_duration(s)
                .map_err(|m| issues.push(line(r), format!("{field}.timeout"), m))
                .ok()
        });
        out.push(Route {
            name: r.value.name.clone().unwrap_or_else(|| format!("route-{i}")),
            hosts,
            path,
            backend,
            timeout,
        });
    }
    out
}

/// Istio ≥1.30 provider-name rule: a lower-case DNS-1123 label.
fn valid_provider_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Envoy's `status_on_error`: codes outside 200..=599 fall back to 403 (Forbidden).
fn status_on_error(
    raw: Option<&model::StringOrInt>,
    field: &str,
    at: Option<u64>,
    issues: &mut Issues<'_>,
    notes: &mut Vec<String>,
) -> u16 {
    let code = match raw {
        None => return 403,
        Some(model::StringOrInt::Int(i)) => *i,
        Some(model::StringOrInt::Str(s)) => match s.trim().parse::<i64>() {
            Ok(i) => i,
            Err(_) => {
                issues.push(
                    at,
                    field.to_owned(),
                    format!("{s:?} is not an integer HTTP status"),
                );
                return 403;
            }
        },
    };
    if (200..=599).contains(&code) {
        code as u16
    } else {
        notes.push(format!(
            "{field}: status {code} is outside 200..599; using 403 as Envoy does"
        ));
        403
    }
}

fn patterns(list: &[String], field: &str, at: Option<u64>, issues: &mut Issues<'_>) -> Vec<HeaderPattern> {
    list.iter()
        .enumerate()
        .filter_map(|(i, p)| {
            HeaderPattern::parse(p)
                .map_err(|m| issues.push(at, format!("{field}[{i}]"), m))
                .ok()
        })
        .collect()
}

pub(crate) fn provider(
    spec: &ExtensionProviderSpec,
    at: Option<u64>,
    field: &str,
    issues: &mut Issues<'_>,
    notes: &mut Vec<String>,
) -> Option<Provider> {
    if !valid_provider_name(&spec.name) {
        issues.push(
            at,
            format!("{field}.name"),
            format!(
                "{:?} must be a lower-case DNS-1123 label (a-z, 0-9, '-', at most 63)",
                spec.name
            ),
        );
    }
    let (kind_field, service, port, timeout, fail_open, soe, body, crc) =
        match (&spec.envoy_ext_authz_http, &spec.envoy_ext_authz_grpc) {
            (Some(h), None) => (
                "envoyExtAuthzHttp",
                &h.service,
                h.port,
                &h.timeout,
                h.fail_open,
                &h.status_on_error,
                &h.include_request_body_in_check,
                h.clear_route_cache,
            ),
            (None, Some(g)) => (
                "envoyExtAuthzGrpc",
                &g.service,
                g.port,
                &g.timeout,
                g.fail_open,
                &g.status_on_error,
                &g.include_request_body_in_check,
                g.clear_route_cache,
            ),
            (Some(_), Some(_)) => {
                issues.push(
                    at,
                    field.to_owned(),
                    "set only one of envoyExtAuthzHttp, envoyExtAuthzGrpc",
                );
                return None;
            }
            (None, None) => {
                notes.push(format!(
                    "{field}: provider {:?} is not an ext_authz provider; skipped",
                    spec.name
                ));
                return None;
            }
        };
    let f = |name: &str| format!("{field}.{kind_field}.{name}");
    // Istio accepts `namespace/hostname`; the namespace only disambiguates the registry lookup.
    let service = service
        .rsplit_once('/')
        .map_or(service.as_str(), |(_, h)| h)
        .trim()
        .to_ascii_lowercase();
    if service.is_empty() {
        issues.push(at, f("service"), "must name the authorization service host");
    }
    let port = match u16::try_from(port) {
        Ok(p) if p > 0 => p,
        _ => {
            issues.push(at, f("port"), format!("{port} is not a port in 1..65535"));
            0
        }
    };
    let timeout = match timeout {
        None => DEFAULT_PROVIDER_TIMEOUT,
        Some(s) => parse_duration(s).unwrap_or_else(|m| {
            issues.push(at, f("timeout"), m);
            DEFAULT_PROVIDER_TIMEOUT
        }),
    };
    let status_on_error = status_on_error(soe.as_ref(), &f("statusOnError"), at, issues, notes);
    let body = body.as_ref().map(|b| {
        let max = b.max_request_bytes.unwrap_or(0);
        if max == 0 {
            issues.push(
                at,
                f("includeRequestBodyInCheck.maxRequestBytes"),
                "must be greater than 0",
            );
        }
        BodySettings {
            max_request_bytes: max,
            allow_partial_message: b.allow_partial_message.unwrap_or(false),
            pack_as_bytes: b.pack_as_bytes.unwrap_or(false),
        }
    });
    let kind = match &spec.envoy_ext_authz_http {
        Some(h) => {
            let path_prefix = h.path_prefix.clone().unwrap_or_default();
            if !path_prefix.is_empty()
                && (!path_prefix.starts_with('/') || path_prefix.contains(['?', '#', ' ']))
            {
                issues.push(
                    at,
                    f("pathPrefix"),
                    format!("{path_prefix:?} must start with / and be a plain path"),
                );
            }
            // Istio uses the deprecated list only when the new one is empty.
            let include = if h.include_request_headers_in_check.is_empty() {
                &h.include_headers_in_check
            } else {
                &h.include_request_headers_in_check
            };
            let mut additional_headers = Vec::new();
            for (k, v) in &h.include_additional_headers_in_check {
                if http_token(k) {
                    additional_headers.push((k.to_ascii_lowercase(), v.clone()));
                } else {
                    issues.push(
                        at,
                        f(&format!("includeAdditionalHeadersInCheck.{k}")),
                        "is not a valid header name",
                    );
                }
            }
            ProviderKind::Http(HttpProviderSettings {
                path_prefix,
                include_request_headers: patterns(include, &f("includeRequestHeadersInCheck"), at, issues),
                additional_headers,
                headers_to_upstream_on_allow: patterns(
                    &h.headers_to_upstream_on_allow,
                    &f("headersToUpstreamOnAllow"),
                    at,
                    issues,
                ),
                headers_to_downstream_on_deny: patterns(
                    &h.headers_to_downstream_on_deny,
                    &f("headersToDownstreamOnDeny"),
                    at,
                    issues,
                ),
                headers_to_downstream_on_allow: patterns(
                    &h.headers_to_downstream_on_allow,
                    &f("headersToDownstreamOnAllow"),
                    at,
                    issues,
                ),
            })
        }
        None => ProviderKind::Grpc,
    };
    Some(Provider {
        name: spec.name.clone(),
        service,
        port,
        timeout,
        fail_open: fail_open.unwrap_or(false),
        status_on_error,
        body,
        clear_route_cache: crc.unwrap_or(false),
        kind,
    })
}

fn http_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn inline_policy(
    p: &InlinePolicy,
    file: &str,
    at: Option<u64>,
    i: usize,
    issues: &mut Issues<'_>,
) -> Option<Policy> {
    let field = format!("authorizationPolicies[{i}]");
    let flat_used = p.selector.is_some()
        || p.target_ref.is_some()
        || p.target_refs.is_some()
        || p.action.is_some()
        || p.provider.is_some()
        || p.rules.is_some();
    let (name, namespace, labels, annotations, spec) = match (&p.spec, flat_used) {
        (Some(_), true) => {
            issues.push(
                at,
                field,
                "write the policy either flat (name, action, rules) or as metadata + spec, not both",
            );
            return None;
        }
        (Some(spec), false) => {
            let meta = p.metadata.clone().unwrap_or_default();
            (
                meta.name.or(p.name.clone()),
                meta.namespace.or(p.namespace.clone()),
                meta.labels,
                meta.annotations,
                spec.clone(),
            )
        }
        (None, _) => (
            p.name.clone(),
            p.namespace.clone(),
            BTreeMap::new(),
            BTreeMap::new(),
            model::AuthorizationPolicySpec {
                selector: p.selector.clone(),
                target_ref: p.target_ref.clone(),
                target_refs: p.target_refs.clone(),
                action: p.action,
                provider: p.provider.clone(),
                rules: p.rules.clone(),
            },
        ),
    };
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        issues.push(at, format!("{field}.name"), "every policy needs a name");
        return None;
    };
    Some(Policy {
        name,
        namespace: namespace.unwrap_or_else(|| "istio-system".into()),
        labels,
        annotations,
        spec,
        origin: Origin {
            file: file.to_owned(),
            line: at,
        },
        inline: true,
    })
}

fn path_normalization(
    pn: &Spanned<model::PathNormalizationSpec>,
    issues: &mut Issues<'_>,
) -> PathNormalization {
    let mode = match pn.value.normalization.as_deref() {
        None | Some("BASE") | Some("DEFAULT") => NormalizationMode::Base,
        Some("NONE") => NormalizationMode::None,
        Some("MERGE_SLASHES") => NormalizationMode::MergeSlashes,
        Some("DECODE_AND_MERGE_SLASHES") => NormalizationMode::DecodeAndMergeSlashes,
        Some(other) => {
            issues.push(
                line(pn),
                "pathNormalization.normalization",
                format!("{other:?} is not one of NONE, BASE, MERGE_SLASHES, DECODE_AND_MERGE_SLASHES"),
            );
            NormalizationMode::Base
        }
    };
    let escaped_slashes = match pn.value.escaped_slashes.as_deref() {
        None | Some("KEEP") => EscapedSlashes::Keep,
        Some("REJECT") => EscapedSlashes::Reject,
        Some("UNESCAPE") => EscapedSlashes::Unescape,
        Some(other) => {
            issues.push(
                line(pn),
                "pathNormalization.escapedSlashes",
                format!("{other:?} is not one of KEEP, REJECT, UNESCAPE"),
            );
            EscapedSlashes::Keep
        }
    };
    PathNormalization {
        mode,
        escaped_slashes,
    }
}

pub(crate) fn include_paths(raw: &GatewayFile, base_dir: &Path) -> Vec<(PathBuf, Option<u64>)> {
    raw.include
        .iter()
        .map(|s| (base_dir.join(&s.value), line(s)))
        .collect()
}
