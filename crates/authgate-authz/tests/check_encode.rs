//! The hot path writes the gRPC `CheckRequest` straight into its wire bytes
//! (`authgate_authz::check_encode`); `ProviderClient::preview` (and `authgate explain`) still
//! build the prost struct. What a real tonic `AuthorizationServer` receives from `check` must
//! be exactly that struct, and the public encoder must decode to it too.

mod support;

use authgate_authz::CheckPreview;
use authgate_authz::ProviderClient;
use authgate_authz::check_encode::{check_request_len, encode_check_request, encode_grpc_check_request};
use authgate_proto::auth::{CheckRequest, CheckResponse};
use bytes::BytesMut;
use http::{HeaderValue, Method};
use prost::Message as _;
use support::{ClientRequest, body_settings, grpc_authz, grpc_provider};

fn requests() -> Vec<ClientRequest> {
    let mut invalid = ClientRequest::get("/bad?x=1")
        .header("accept", "a")
        .header("accept", "b");
    invalid.headers.append(
        "x-bytes",
        HeaderValue::from_bytes(b"a\xffb\xc3").expect("obs-text value"),
    );
    let mut tls = ClientRequest::get("/tls")
        .header("x-envoy-downstream-service-cluster", "frontend")
        .header("host", "elsewhere:1");
    tls.principal = Some("spiffe://cluster.local/ns/default/sa/client".into());
    tls.sni = Some("shop.example.com".into());
    tls.scheme = "https".into();
    tls.version = http::Version::HTTP_2;
    tls.context_extensions = vec![("virtual_host".into(), "shop".into())];
    vec![
        ClientRequest::get("/"),
        invalid,
        tls,
        ClientRequest::get("/b")
            .method(Method::POST)
            .header("x-envoy-auth-partial-body", "spoof")
            .header("x-big", &"v".repeat(20_000))
            .body(b"0123\xff\xfe6789abcdef", false),
        ClientRequest::get("/b").method(Method::PUT).body(b"", true),
    ]
}

#[tokio::test]
async fn what_the_service_receives_is_the_preview() {
    let server = grpc_authz(None, |_| Ok(CheckResponse::default())).await;
    for body in [
        None,
        Some(body_settings(8, true, false)),
        Some(body_settings(8, true, true)),
    ] {
        let mut config = grpc_provider();
        config.body = body;
        let client = ProviderClient::new(&config, server.target()).expect("provider builds");
        for req in requests() {
            let parts = req.parts();
            let Ok(CheckPreview::Grpc(expected)) = client.preview(&parts) else {
                panic!("a gRPC preview");
            };
            client.check(&parts).await;
            assert_eq!(server.last(), *expected, "{} body {body:?}", req.path_and_query);

            let mut direct = BytesMut::new();
            encode_check_request(&parts, body.as_ref(), &mut direct);
            assert_eq!(direct.len(), expected.encoded_len());
            assert_eq!(check_request_len(&parts, body.as_ref()), direct.len());
            assert_eq!(CheckRequest::decode(direct.as_ref()).expect("decodes"), *expected);

            let mut framed = BytesMut::new();
            encode_grpc_check_request(&parts, body.as_ref(), &mut framed).expect("frames");
            assert_eq!(framed.len(), 5 + direct.len());
            assert_eq!(&framed[5..], &direct[..]);
        }
    }
}
