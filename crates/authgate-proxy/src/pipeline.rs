//! The request pipeline, as named phases: receive → route → authorize → forward → respond.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use authgate_authz::{AllowMutations, BufferedBody, CheckRequestParts, Decision, ResponseMutation};
use authgate_policy::{
    LocalDecision, RequestAttributes, client_ip_from_headers, normalize_host, normalize_path,
};
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::access_log::LogEntry;
use crate::authority;
use crate::body::{self, Deadline, ProxyBody, Replay};
use crate::error::ProxyError;
use crate::headers;
use crate::server::Shared;
use crate::snapshot::Snapshot;

/// Facts about the downstream connection a request arrived on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Raised by the read-side framing guard (HTTP/1 only): see `framing.rs`.
    pub framing_violation: Arc<std::sync::atomic::AtomicBool>,
    pub peer: SocketAddr,
    /// `peer`'s IP as a header value, for X-Forwarded-For.
    pub peer_ip: HeaderValue,
    pub local: SocketAddr,
    pub scheme: &'static str,
    pub tls: Option<TlsInfo>,
}

#[derive(Debug, Clone, Default)]
pub struct TlsInfo {
    pub sni: Option<String>,
    /// Verified client certificate identity (URI SAN, else DNS SAN, else subject).
    pub principal: Option<String>,
    /// The `x-forwarded-client-cert` value Envoy would set for this peer.
    pub xfcc: Option<HeaderValue>,
}

const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

/// Entry point for every request: never fails, turns errors into local replies, logs.
pub async fn handle(
    req: Request<Incoming>,
    conn: Arc<ConnInfo>,
    shared: Arc<Shared>,
) -> Result<Response<ProxyBody>, std::convert::Infallible> {
    let snap = shared.snapshot.load_full();
    let stream_id = shared.next_stream_id();
    let grpc_client = headers::is_grpc(req.headers());
    let logging = snap.config.access_log != authgate_config::AccessLogFormat::Off;
    let mut log = LogEntry::start(&req, &conn, stream_id, logging);
    let response = match proxy(req, &conn, &snap, &shared, stream_id, &mut log).await {
        Ok(resp) => resp,
        Err(err) => {
            log.fail(&err, &snap);
            let reply = err.into_reply();
            let resp = if grpc_client {
                reply.into_grpc_response()
            } else {
                reply.into_response()
            };
            let (mut parts, bytes) = resp.into_parts();
            parts
                .headers
                .insert(header::SERVER, HeaderValue::from_static("authgate"));
            Response::from_parts(parts, body::full(bytes))
        }
    };
    log.finish(&response);
    shared.log(&log, &snap);
    Ok(response)
}

async fn proxy(
    req: Request<Incoming>,
    conn: &ConnInfo,
    snap: &Snapshot,
    shared: &Shared,
    stream_id: u64,
    log: &mut LogEntry,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (mut parts, body) = req.into_parts();

    // Receive: framing guards, hop-by-hop hygiene, one authority, one normalized path.
    let present = headers::survey(&parts.headers);
    if present.framing {
        headers::check_framing(&parts.headers)?;
    }
    if parts.version < Version::HTTP_2 && conn.framing_violation.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(ProxyError::BadRequest {
            reason: "both content-length and transfer-encoding".into(),
            close: true,
        });
    }
    // Methods are case-sensitive tokens; a lower-case `get` must not slip past a `methods:
    // ["GET"]` rule while a lenient backend treats it as GET (Istio's normalization guidance).
    if parts.method.as_str().bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(ProxyError::BadRequest {
            reason: format!("method {:?} is not upper case", parts.method.as_str()),
            close: false,
        });
    }
    // Only WebSocket upgrades are tunnelled (Istio configures no other upgrade type); any
    // other `Upgrade` (h2c included) is stripped below and the request proxied as a plain one.
    let upgrade = present
        .upgrade
        .then(|| headers::upgrade_tokens(&parts.headers))
        .flatten()
        .filter(|(_, proto)| headers::is_websocket(proto));
    if present.hop_by_hop {
        headers::strip_hop_by_hop(&mut parts.headers);
    }
    if present.envoy_internal {
        headers::strip_internal(&mut parts.headers);
    }
    if parts.version == Version::HTTP_2 {
        // RFC 9113 §8.2.3: HTTP/2 may split `cookie`; it is one field again before anything
        // reads it (Envoy does the same; HTTP/1 requests are left as sent).
        headers::join_cookies(&mut parts.headers);
    }
    if let Some((connection, proto)) = &upgrade {
        // An upgrade keeps its Connection/Upgrade pair, for the check and the backend alike.
        parts.headers.insert(header::CONNECTION, connection.clone());
        parts.headers.insert(header::UPGRADE, proto.clone());
    }
    let authority_value = request_authority(&parts.uri, &parts.headers)?;
    // Validated above: authority characters only, so ASCII.
    let authority = std::str::from_utf8(authority_value.as_bytes()).map_err(|_| ProxyError::BadRequest {
        reason: "invalid authority".into(),
        close: false,
    })?;
    // From here on the authority lives only in `authority`: the check request carries it as
    // :authority / Host, and it is restored as Host just before forwarding.
    parts.headers.remove(header::HOST);
    // Only origin-form and absolute-form targets name a path; authority-form (CONNECT's) is
    // refused rather than read as "/".
    // The received URI is kept apart: the path and the authority borrow from it, and the
    // upstream URI replaces it.
    let uri = std::mem::take(&mut parts.uri);
    let raw_target = match uri.path_and_query() {
        Some(p) if parts.method != http::Method::CONNECT => p.as_str(),
        // `GET http://host HTTP/1.1`: absolute-form with an empty path means "/".
        None if uri.scheme().is_some() && parts.method != http::Method::CONNECT => "/",
        _ => {
            return Err(ProxyError::BadRequest {
                reason: "request target is not a path".into(),
                close: false,
            });
        }
    };
    let target =
        normalize_path(raw_target, snap.config.path_normalization).map_err(|e| ProxyError::BadRequest {
            reason: e.to_string(),
            close: false,
        })?;
    let (host, _) = normalize_host(authority);
    // An edge gateway does not let external clients pick the request id that logs, the
    // authorization service and backends correlate on (Envoy with Istio's settings regenerates
    // it); behind trusted proxies the front proxy's id is kept.
    if snap.config.gateway.num_trusted_proxies == 0 || !parts.headers.contains_key(headers::X_REQUEST_ID) {
        parts.headers.insert(headers::X_REQUEST_ID, shared.request_id());
    }
    // The connection manager's header mutations come before any filter, so the authorization
    // service sees them too (as with Envoy).
    // Trusted hops count on X-Forwarded-For as received, before our own append (Envoy's
    // xff_num_trusted_hops).
    let remote_ip = client_ip_from_headers(
        &parts.headers,
        conn.peer.ip(),
        snap.config.gateway.num_trusted_proxies,
    );
    forwarded_headers(
        &mut parts.headers,
        &present,
        conn,
        snap.config.gateway.num_trusted_proxies,
    );
    // Borrowed from the request line unless normalization or the authorization service
    // changes it.
    let mut path_and_query = target.path_and_query();
    log.set_request(authority, &path_and_query, &parts.headers);

    // Route: no route, no authorization call (Envoy skips ext_authz without a route).
    let (route_index, route) = snap.route(&host, &target.path).ok_or(ProxyError::NoRoute)?;
    log.route_index = Some(route_index);
    log.backend_index = Some(route.backend);

    // Authorize: CUSTOM providers in name order, then the local DENY/ALLOW decision.
    let tls = conn.tls.as_ref();
    let verdict = snap.policy.evaluate(&attributes(
        conn,
        &parts,
        &target.path,
        &path_and_query,
        authority,
        remote_ip,
    ));
    log.audit = verdict.audit;

    let mut mutated = false;
    let mut body: Option<ProxyBody> = Some(body::boxed(body));
    let mut buffered: Option<BufferedBody> = None;
    let mut response_mutations: Vec<ResponseMutation> = Vec::new();
    let request_time = SystemTime::now();
    for index in verdict.providers.iter() {
        let Some(provider) = snap.providers.get(index) else {
            continue;
        };
        let config = provider.config();
        if let (Some(settings), None, None) = (config.body, &buffered, &upgrade)
            && let Some(b) = body.take()
        {
            let (check_body, rest) = buffer_for_check(
                b,
                settings.max_request_bytes as usize,
                settings.allow_partial_message,
            )
            .await?;
            buffered = check_body;
            body = Some(rest);
        }
        let started = Instant::now();
        let decision = provider
            .check(&CheckRequestParts {
                method: &parts.method,
                path_and_query: &path_and_query,
                authority,
                scheme: conn.scheme,
                version: parts.version,
                headers: &parts.headers,
                source: conn.peer,
                destination: conn.local,
                stream_id,
                request_time,
                body: buffered.as_ref(),
                principal: tls.and_then(|t| t.principal.as_deref()),
                sni: tls.and_then(|t| t.sni.as_deref()),
                context_extensions: &[],
            })
            .await;
        log.authz(index, started.elapsed(), &decision);
        match decision {
            Decision::Allow(m) => {
                let AllowMutations {
                    mut request,
                    response,
                } = m;
                mutated |= !request.is_empty();
                if let Some(method) = request.method.take() {
                    parts.method = method;
                }
                if request.rewrites_path() {
                    request.apply(&mut parts.headers, path_and_query.to_mut());
                } else {
                    // Headers only: the path stays borrowed (nothing is written to it).
                    request.apply(&mut parts.headers, &mut String::new());
                }
                response_mutations.push(response);
            }
            Decision::Deny(reply) => {
                return Err(ProxyError::AuthzDenied {
                    provider: index,
                    reply,
                });
            }
            Decision::Invalid(reason) => {
                return Err(ProxyError::AuthzInvalid {
                    provider: index,
                    reason,
                });
            }
            // `failOpen` covers the authorization service failing, not a check the client's
            // own request made impossible to send: that would be a way around the check.
            Decision::Error(e) if config.fail_open && !e.is_request() => {
                // Counted in ext_authz_failure_mode_allowed; a log line per request would flood
                // the log exactly when the authorization service is down.
                tracing::debug!(provider = %config.name, error = %e, "ext_authz failed; failing open as configured");
            }
            Decision::Error(e) => {
                return Err(ProxyError::AuthzError {
                    provider: index,
                    reply: provider.error_response(&e),
                    reason: e.to_string(),
                });
            }
        }
    }
    // DENY and ALLOW policies come after CUSTOM (Istio's filter order), so they judge the
    // request as the authorization service left it, not the client's original headers.
    let local = if mutated {
        let path = path_and_query.split(['?', '#']).next().unwrap_or("/");
        let authority = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or(authority);
        snap.policy
            .evaluate(&attributes(
                conn,
                &parts,
                path,
                &path_and_query,
                authority,
                remote_ip,
            ))
            .local
    } else {
        verdict.local
    };
    if let LocalDecision::Deny { policy, .. } = &local {
        return Err(ProxyError::RbacDenied {
            policy: policy.as_deref().unwrap_or("none").to_owned(),
        });
    }

    // Forward.
    let upstream = snap
        .upstreams
        .get(route.backend)
        .ok_or_else(|| ProxyError::UpstreamUnavailable {
            reason: "backend missing".into(),
        })?;
    log.forwarded = true;
    let endpoint = upstream.pick();
    // The target as received, when forwarded unchanged, is reused without a parse or a copy.
    let received = uri.path_and_query().filter(|pq| pq.as_str() == path_and_query);
    parts.uri = match received.and_then(|pq| endpoint.origin_form(pq)) {
        Some(uri) => uri,
        None => endpoint
            .uri(&path_and_query)
            .map_err(|e| ProxyError::BadRequest {
                reason: format!("invalid path after authorization: {e}"),
                close: false,
            })?,
    };
    let client_h1 = parts.version < Version::HTTP_2;
    let h2_upstream = upstream.protocol == authgate_config::UpstreamProtocol::Http2;
    parts.version = if h2_upstream {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    // The client's Host was taken out on receipt, so a Host here was set by the authorization
    // service, which Envoy honours.
    let host = match parts.headers.remove(header::HOST) {
        Some(h) => h,
        None => authority_value.clone(),
    };
    if !h2_upstream {
        parts.headers.insert(header::HOST, host);
    }
    let client_upgrade = upgrade
        .as_ref()
        .and_then(|_| parts.extensions.remove::<hyper::upgrade::OnUpgrade>());
    let request = Request::from_parts(parts, body.unwrap_or_else(body::empty));
    // Envoy's route timeout: the whole response, head and body; zero disables it.
    let timeout = match route.timeout {
        Some(t) if t.is_zero() => None,
        Some(t) => Some(t),
        None => Some(DEFAULT_ROUTE_TIMEOUT),
    };
    let Some(pool) = endpoint.pool() else {
        return Err(ProxyError::UpstreamUnavailable {
            reason: "backend has no endpoints".into(),
        });
    };
    let upstream_start = Instant::now();
    let result = match timeout {
        Some(t) => tokio::time::timeout(t, pool.send(request)).await,
        None => Ok(pool.send(request).await),
    };
    log.upstream_time = Some(upstream_start.elapsed());
    endpoint.report(matches!(&result, Ok(Err(e)) if e.is_connect()));
    drop(endpoint);
    let response = match result {
        Err(_) => return Err(ProxyError::UpstreamTimeout),
        Ok(Err(e)) if e.is_connect() => {
            return Err(ProxyError::UpstreamUnavailable {
                reason: error_chain(&e),
            });
        }
        Ok(Err(e)) if e.is_protocol() => {
            return Err(ProxyError::UpstreamProtocolError {
                reason: error_chain(&e),
            });
        }
        Ok(Err(e)) => {
            return Err(ProxyError::UpstreamReset {
                reason: error_chain(&e),
            });
        }
        Ok(Ok(r)) => r,
    };

    // Respond.
    let mut response = response;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client) = client_upgrade else {
            // A switch nobody asked for (only WebSocket upgrades are forwarded): relaying it
            // would leave the client's connection in a protocol it never requested. Envoy
            // answers 502 (UPE); the upstream connection is closed with the response.
            return Err(ProxyError::UpstreamProtocolError {
                reason: "101 Switching Protocols to a request without an upgrade".into(),
            });
        };
        // Bytes flow only now that the backend has agreed to switch protocols. A tunnel
        // outlives the route timeout (Envoy's applies until the upgrade's response headers).
        let backend = hyper::upgrade::on(&mut response);
        tokio::spawn(tunnel(client, backend));
    }
    let (mut rparts, rbody) = response.into_parts();
    if rparts.status != StatusCode::SWITCHING_PROTOCOLS {
        headers::strip_hop_by_hop(&mut rparts.headers);
        if client_h1 && rbody.request_unfinished() {
            // An early answer to an upload: the rest of the client's body goes nowhere, so
            // its connection cannot carry another request (Envoy does the same).
            rparts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
    rparts
        .headers
        .insert(header::SERVER, HeaderValue::from_static("authgate"));
    for m in response_mutations {
        m.apply(&mut rparts.headers);
    }
    let rbody = match timeout {
        Some(t) if !rbody.is_end_stream() && rparts.status != StatusCode::SWITCHING_PROTOCOLS => {
            body::boxed(Deadline::new(rbody, upstream_start + t))
        }
        _ => body::boxed(rbody),
    };
    Ok(Response::from_parts(rparts, rbody))
}

/// What the policies see of a request and its connection.
fn attributes<'a>(
    conn: &'a ConnInfo,
    parts: &'a http::request::Parts,
    path: &'a str,
    path_and_query: &'a str,
    authority: &'a str,
    remote_ip: std::net::IpAddr,
) -> RequestAttributes<'a> {
    let tls = conn.tls.as_ref();
    RequestAttributes {
        method: parts.method.as_str(),
        path,
        path_and_query,
        authority,
        port: conn.local.port(),
        source_ip: conn.peer.ip(),
        remote_ip,
        destination_ip: conn.local.ip(),
        headers: &parts.headers,
        sni: tls.and_then(|t| t.sni.as_deref()),
        principal: tls.and_then(|t| t.principal.as_deref()),
    }
}

/// The one authority routing, policy, authorization and the upstream all use: the absolute-form
/// target's when present (RFC 9112 §3.2.2 says it replaces Host), else `:authority`/Host. The
/// Host value is shared, not copied.
fn request_authority(uri: &http::Uri, headers: &http::HeaderMap) -> Result<HeaderValue, ProxyError> {
    let value = request_authority_raw(uri, headers)?;
    // One grammar for every source: no userinfo (`x@admin.example.com`), no spaces or slashes.
    if authority::is_valid_authority(value.as_bytes()) {
        Ok(value)
    } else {
        Err(ProxyError::BadRequest {
            reason: format!(
                "invalid authority {:?}",
                String::from_utf8_lossy(value.as_bytes())
            ),
            close: false,
        })
    }
}

fn request_authority_raw(uri: &http::Uri, headers: &http::HeaderMap) -> Result<HeaderValue, ProxyError> {
    if let Some(a) = uri.authority() {
        return HeaderValue::from_str(a.as_str()).map_err(|_| ProxyError::BadRequest {
            reason: format!("invalid authority {:?}", a.as_str()),
            close: false,
        });
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(h), None) if h.to_str().is_ok_and(|s| !s.is_empty()) => Ok(h.clone()),
        (Some(_), None) => Err(ProxyError::BadRequest {
            reason: "invalid host header".into(),
            close: false,
        }),
        (Some(_), Some(_)) => Err(ProxyError::BadRequest {
            reason: "multiple host headers".into(),
            close: true,
        }),
        (None, _) => Err(ProxyError::BadRequest {
            reason: "missing host".into(),
            close: false,
        }),
    }
}

/// `x-forwarded-for` gets the peer appended; `x-forwarded-proto` is the downstream scheme
/// and `x-forwarded-host` is dropped, unless trusted proxies sit in front
/// (`numTrustedProxies` > 0); `x-forwarded-client-cert` only ever comes from our own TLS.
fn forwarded_headers(
    h: &mut http::HeaderMap,
    present: &headers::Present,
    conn: &ConnInfo,
    trusted_hops: u32,
) {
    if !present.forwarded_for {
        // The common case: the peer alone, formatted once per connection.
        h.insert(headers::X_FORWARDED_FOR, conn.peer_ip.clone());
    } else {
        append_xff(h, conn);
    }
    if trusted_hops == 0 || !h.contains_key(headers::X_FORWARDED_PROTO) {
        h.insert(headers::X_FORWARDED_PROTO, HeaderValue::from_static(conn.scheme));
    }
    if trusted_hops == 0 && present.forwarded_host {
        h.remove(headers::X_FORWARDED_HOST);
    }
    if let Some(xfcc) = conn.tls.as_ref().and_then(|t| t.xfcc.clone()) {
        h.insert(headers::X_FORWARDED_CLIENT_CERT, xfcc);
    } else if present.forwarded_client_cert {
        h.remove(headers::X_FORWARDED_CLIENT_CERT);
    }
}

/// Every X-Forwarded-For line, in order, then the peer.
fn append_xff(h: &mut http::HeaderMap, conn: &ConnInfo) {
    let peer = conn.peer.ip().to_string();
    let mut xff = String::new();
    for line in h.get_all(headers::X_FORWARDED_FOR) {
        if let Ok(v) = line.to_str()
            && !v.trim().is_empty()
        {
            xff.push_str(v.trim());
            xff.push(',');
        }
    }
    xff.push_str(&peer);
    if let Ok(v) = HeaderValue::from_str(&xff) {
        h.insert(headers::X_FORWARDED_FOR, v);
    }
}

/// Reads up to `max` bytes of the body for the check request. Returns the bytes to send to
/// the authorization service and a body that replays everything to the upstream.
async fn buffer_for_check(
    mut body: ProxyBody,
    max: usize,
    allow_partial: bool,
) -> Result<(Option<BufferedBody>, ProxyBody), ProxyError> {
    if body.is_end_stream() {
        return Ok((None, body));
    }
    let mut buf = BytesMut::new();
    let mut ended = false;
    while buf.len() <= max {
        match body.frame().await {
            None => {
                ended = true;
                break;
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
            Some(Err(e)) => {
                return Err(ProxyError::BadRequest {
                    reason: format!("reading request body: {e}"),
                    close: true,
                });
            }
        }
        if body.is_end_stream() {
            ended = true;
            break;
        }
    }
    let all: Bytes = buf.freeze();
    let partial = all.len() > max || !ended;
    if partial && !allow_partial {
        return Err(ProxyError::PayloadTooLarge);
    }
    // The whole buffer: the provider sends the first maxRequestBytes and reports the buffered
    // size, as Envoy does.
    let check = BufferedBody {
        bytes: all.clone(),
        partial,
    };
    let rest = if ended { None } else { Some(body) };
    Ok((Some(check), body::boxed(Replay::new(all, rest))))
}

async fn tunnel(client: hyper::upgrade::OnUpgrade, backend: hyper::upgrade::OnUpgrade) {
    let (client, backend) = match tokio::try_join!(client, backend) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let mut client = hyper_util::rt::TokioIo::new(client);
    let mut backend = hyper_util::rt::TokioIo::new(backend);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut backend).await {
        tracing::debug!(error = %e, "upgraded tunnel closed with error");
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
