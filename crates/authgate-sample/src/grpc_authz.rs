//! The gRPC check server: the Go sample's `extAuthzServerV3.Check`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use authgate_proto::auth::authorization_server::{Authorization, AuthorizationServer};
use authgate_proto::auth::check_response::HttpResponse;
use authgate_proto::auth::{
    AttributeContext, CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use authgate_proto::core::{HeaderValue, HeaderValueOption};
use authgate_proto::http_status::{HttpStatus, StatusCode};
use authgate_proto::rpc;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tonic::{Code, Request, Response, Status};

use crate::golog::golog;
use crate::{
    ALLOWED_VALUE, CHECK_HEADER, CheckCounters, DENY_BODY, GRPC_OVERRIDE_VALUE, OVERRIDE_HEADER,
    RECEIVED_HEADER, RESULT_HEADER, SampleConfig, TOO_LONG, is_too_long, prototext, server,
};

pub(crate) async fn serve(
    listener: TcpListener,
    cfg: Arc<SampleConfig>,
    counters: Arc<CheckCounters>,
) -> std::io::Result<()> {
    let service = AuthorizationServer::new(SampleAuthorization { cfg, counters });
    // Served by our own hyper loop: tonic's `Server::add_service` needs its `router` feature.
    let service = TowerToHyperService::new(service);
    server::serve(listener, server::grpc_builder(), service).await
}

struct SampleAuthorization {
    cfg: Arc<SampleConfig>,
    counters: Arc<CheckCounters>,
}

#[tonic::async_trait]
impl Authorization for SampleAuthorization {
    async fn check(&self, request: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        self.counters.grpc.fetch_add(1, Ordering::Relaxed);
        let attributes = request.into_inner().attributes.unwrap_or_default();
        let allowed = is_allowed(&attributes, &self.cfg.allow_service_account);
        let dump = prototext::attributes(&attributes);
        log_check(allowed, &attributes, &dump);
        // The RPC itself always succeeds: the decision travels in `CheckResponse.status`.
        Ok(Response::new(check_response(allowed, dump)))
    }
}

/// A present `x-ext-authz` header decides alone (only exactly `allow` allows); without it, the
/// peer's service account does.
fn is_allowed(attributes: &AttributeContext, allow_service_account: &str) -> bool {
    let headers = attributes
        .request
        .as_ref()
        .and_then(|request| request.http.as_ref())
        .map(|http| &http.headers);
    match headers.and_then(|headers| headers.get(CHECK_HEADER)) {
        Some(value) => value == ALLOWED_VALUE,
        None => attributes.source.as_ref().is_some_and(|source| {
            let suffix = format!("/sa/{allow_service_account}");
            source.principal.ends_with(&suffix)
        }),
    }
}

/// `[gRPCv3][allowed]: <host><path>, attributes: <dump>`, as the Go sample logs it.
fn log_check(allowed: bool, attributes: &AttributeContext, dump: &str) {
    let http = attributes.request.as_ref().and_then(|r| r.http.as_ref());
    let (host, path) = http.map_or(("", ""), |http| (&http.host, &http.path));
    golog!("[gRPCv3][{}]: {host}{path}, attributes: {dump}", verdict(allowed));
}

/// Allowed: status OK and `ok_response`. Denied: PERMISSION_DENIED and a `denied_response`
/// that Envoy turns into a 403 with the deny body. Both carry the same three headers.
fn check_response(allowed: bool, dump: String) -> CheckResponse {
    let received = if is_too_long(dump.as_bytes()) {
        TOO_LONG.to_owned()
    } else {
        dump
    };
    let headers = vec![
        header(RESULT_HEADER, verdict(allowed)),
        header(RECEIVED_HEADER, received),
        header(OVERRIDE_HEADER, GRPC_OVERRIDE_VALUE),
    ];
    let (code, http_response) = if allowed {
        let ok = OkHttpResponse {
            headers,
            ..Default::default()
        };
        (Code::Ok, HttpResponse::OkResponse(ok))
    } else {
        let denied = DeniedHttpResponse {
            status: Some(HttpStatus {
                code: StatusCode::Forbidden.into(),
            }),
            headers,
            body: DENY_BODY.to_owned(),
        };
        (Code::PermissionDenied, HttpResponse::DeniedResponse(denied))
    };
    CheckResponse {
        status: Some(rpc::Status {
            code: code.into(),
            ..Default::default()
        }),
        http_response: Some(http_response),
        ..Default::default()
    }
}

fn verdict(allowed: bool) -> &'static str {
    if allowed { "allowed" } else { "denied" }
}

/// A header that overrides: `append` unset, exactly as the Go sample sends it.
fn header(key: &str, value: impl Into<String>) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value: value.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use authgate_proto::auth::attribute_context::{HttpRequest, Peer, Request as AttrRequest};

    fn attributes(header: Option<&str>, principal: Option<&str>) -> AttributeContext {
        let mut http = HttpRequest::default();
        if let Some(value) = header {
            http.headers.insert(CHECK_HEADER.to_owned(), value.to_owned());
        }
        AttributeContext {
            source: principal.map(|p| Peer {
                principal: p.to_owned(),
                ..Default::default()
            }),
            request: Some(AttrRequest {
                http: Some(http),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn header_decides_when_present() {
        let sa_a = Some("spiffe://cluster.local/ns/default/sa/a");
        assert!(is_allowed(&attributes(Some("allow"), None), "a"));
        assert!(!is_allowed(&attributes(Some("deny"), sa_a), "a"));
        assert!(!is_allowed(&attributes(Some("Allow"), None), "a"));
        assert!(!is_allowed(&attributes(Some("allow,allow"), None), "a"));
        assert!(!is_allowed(&attributes(Some(""), sa_a), "a"));
    }

    #[test]
    fn service_account_decides_when_header_absent() {
        let principal = |sa: &str| format!("spiffe://cluster.local/ns/default/sa/{sa}");
        assert!(is_allowed(&attributes(None, Some(&principal("a"))), "a"));
        assert!(!is_allowed(&attributes(None, Some(&principal("b"))), "a"));
        assert!(!is_allowed(&attributes(None, Some(&principal("ba"))), "a"));
        assert!(is_allowed(
            &attributes(None, Some(&principal("bookinfo"))),
            "bookinfo"
        ));
        assert!(!is_allowed(&attributes(None, None), "a"));
        assert!(!is_allowed(&AttributeContext::default(), "a"));
    }
}
