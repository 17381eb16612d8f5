//! The gRPC check server through a real tonic client.

mod common;

use std::sync::atomic::Ordering;

use authgate_proto::auth::attribute_context::{HttpRequest, Peer, Request};
use authgate_proto::auth::authorization_client::AuthorizationClient;
use authgate_proto::auth::check_response::HttpResponse;
use authgate_proto::auth::{AttributeContext, CheckRequest, CheckResponse};
use authgate_proto::core::HeaderValueOption;
use authgate_sample::{DENY_BODY, SampleConfig};
use common::{TIMEOUT, start_authz};
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint};

const SA_A: &str = "spiffe://cluster.local/ns/default/sa/a";
const SA_B: &str = "spiffe://cluster.local/ns/default/sa/b";

async fn client(addr: std::net::SocketAddr) -> AuthorizationClient<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).expect("endpoint");
    let channel = endpoint.timeout(TIMEOUT).connect().await.expect("connect");
    AuthorizationClient::new(channel)
}

/// A check for `GET bookinfo.example/productpage` with an optional `x-ext-authz` header and
/// an optional source principal.
fn check_request(header: Option<&str>, principal: Option<&str>) -> CheckRequest {
    let mut http = HttpRequest {
        method: "GET".into(),
        host: "bookinfo.example".into(),
        path: "/productpage".into(),
        ..Default::default()
    };
    if let Some(value) = header {
        http.headers.insert("x-ext-authz".into(), value.into());
    }
    CheckRequest {
        attributes: Some(AttributeContext {
            source: principal.map(|principal| Peer {
                principal: principal.into(),
                ..Default::default()
            }),
            request: Some(Request {
                http: Some(http),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

async fn check(client: &mut AuthorizationClient<Channel>, request: CheckRequest) -> CheckResponse {
    client.check(request).await.expect("gRPC OK").into_inner()
}

fn code(response: &CheckResponse) -> i32 {
    response.status.as_ref().map_or(-1, |status| status.code)
}

fn pairs(headers: &[HeaderValueOption]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|option| {
            let header = option.header.clone().unwrap_or_default();
            let only_header = HeaderValueOption {
                header: Some(header.clone()),
                ..Default::default()
            };
            // `append` unset, as in the Go sample, so Envoy overrides rather than appends.
            assert_eq!(option, &only_header);
            (header.key, header.value)
        })
        .collect()
}

fn assert_allowed(response: &CheckResponse) -> Vec<(String, String)> {
    assert_eq!(code(response), 0);
    match &response.http_response {
        Some(HttpResponse::OkResponse(ok)) => pairs(&ok.headers),
        other => panic!("expected ok_response, got {other:?}"),
    }
}

fn assert_denied(response: &CheckResponse) -> Vec<(String, String)> {
    assert_eq!(code(response), 7, "PERMISSION_DENIED");
    match &response.http_response {
        Some(HttpResponse::DeniedResponse(denied)) => {
            assert_eq!(denied.status.as_ref().map(|s| s.code), Some(403));
            assert_eq!(denied.body, DENY_BODY);
            pairs(&denied.headers)
        }
        other => panic!("expected denied_response, got {other:?}"),
    }
}

fn names(headers: &[(String, String)]) -> Vec<&str> {
    headers.iter().map(|(name, _)| name.as_str()).collect()
}

const HEADER_ORDER: [&str; 3] = [
    "x-ext-authz-check-result",
    "x-ext-authz-check-received",
    "x-ext-authz-additional-header-override",
];

#[tokio::test]
async fn header_allow_allows_with_three_headers_in_order() {
    let authz = start_authz(SampleConfig::default()).await;
    let mut client = client(authz.grpc).await;
    let headers = assert_allowed(&check(&mut client, check_request(Some("allow"), None)).await);

    assert_eq!(names(&headers), HEADER_ORDER);
    assert_eq!(headers[0].1, "allowed");
    assert!(
        headers[1]
            .1
            .contains(r#"headers:{key:"x-ext-authz" value:"allow"}"#)
    );
    assert!(headers[1].1.contains(r#"path:"/productpage""#));
    assert_eq!(headers[2].1, "grpc-additional-header-override-value");
    assert_eq!(authz.counters.grpc.load(Ordering::Relaxed), 1);
    assert_eq!(authz.counters.http.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn header_deny_denies_with_403_body_and_headers() {
    let authz = start_authz(SampleConfig::default()).await;
    let mut client = client(authz.grpc).await;
    let headers = assert_denied(&check(&mut client, check_request(Some("deny"), None)).await);

    assert_eq!(names(&headers), HEADER_ORDER);
    assert_eq!(headers[0].1, "denied");
    assert!(headers[1].1.contains(r#"value:"deny""#));
    assert_eq!(headers[2].1, "grpc-additional-header-override-value");
}

#[tokio::test]
async fn present_header_decides_even_for_an_allowed_principal() {
    let authz = start_authz(SampleConfig::default()).await;
    let mut client = client(authz.grpc).await;
    for value in ["deny", "Allow", "allow,allow", ""] {
        let response = check(&mut client, check_request(Some(value), Some(SA_A))).await;
        assert_denied(&response);
    }
    assert_allowed(&check(&mut client, check_request(Some("allow"), Some(SA_B))).await);
}

#[tokio::test]
async fn service_account_rule_applies_without_the_header() {
    let authz = start_authz(SampleConfig::default()).await;
    let mut client = client(authz.grpc).await;
    assert_allowed(&check(&mut client, check_request(None, Some(SA_A))).await);
    let other_trust_domain = "spiffe://example.org/ns/prod/sa/a";
    assert_allowed(&check(&mut client, check_request(None, Some(other_trust_domain))).await);
    assert_denied(&check(&mut client, check_request(None, Some(SA_B))).await);
    assert_denied(&check(&mut client, check_request(None, Some("x/sa/ba"))).await);
    assert_denied(&check(&mut client, check_request(None, None)).await);
    // No attributes at all (a TCP-less, HTTP-less check): denied, not an error.
    assert_denied(&check(&mut client, CheckRequest::default()).await);
}

#[tokio::test]
async fn allow_service_account_is_configurable() {
    let cfg = SampleConfig {
        allow_service_account: "bookinfo-productpage".into(),
    };
    let authz = start_authz(cfg).await;
    let mut client = client(authz.grpc).await;
    let principal = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage";
    assert_allowed(&check(&mut client, check_request(None, Some(principal))).await);
    assert_denied(&check(&mut client, check_request(None, Some(SA_A))).await);
}

#[tokio::test]
async fn received_dump_over_60000_bytes_is_too_long() {
    let authz = start_authz(SampleConfig::default()).await;
    let mut client = client(authz.grpc).await;
    let mut request = check_request(Some("allow"), None);
    if let Some(http) = request
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
    {
        http.body = "x".repeat(70_000);
    }
    let headers = assert_allowed(&check(&mut client, request).await);
    assert_eq!(headers[1].1, "<too-long>");
}

#[tokio::test]
async fn many_concurrent_checks_share_one_connection() {
    const CHECKS: u64 = 300; // more than hyper's default of 200 concurrent streams
    let authz = start_authz(SampleConfig::default()).await;
    let client = client(authz.grpc).await; // one Channel: one HTTP/2 connection
    let mut checks = JoinSet::new();
    for i in 0..CHECKS {
        let mut client = client.clone();
        let allow = i % 2 == 0;
        checks.spawn(async move {
            let value = if allow { "allow" } else { "deny" };
            let response = check(&mut client, check_request(Some(value), None)).await;
            (allow, code(&response))
        });
    }
    while let Some(joined) = checks.join_next().await {
        let (allow, code) = joined.expect("check task");
        assert_eq!(code, if allow { 0 } else { 7 });
    }
    assert_eq!(authz.counters.grpc.load(Ordering::Relaxed), CHECKS);
}

#[tokio::test]
async fn garbage_on_the_grpc_port_does_not_stop_it() {
    let authz = start_authz(SampleConfig::default()).await;
    let reply = common::raw_exchange(authz.grpc, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(!reply.starts_with(b"HTTP/1.1 200"));
    let reply = common::raw_exchange(authz.grpc, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff").await;
    assert!(!reply.starts_with(b"HTTP/1.1 200"));
    let mut client = client(authz.grpc).await;
    assert_allowed(&check(&mut client, check_request(Some("allow"), None)).await);
}
