//! Real servers on 127.0.0.1:0 for the provider tests: a recording HTTP authz service, a
//! recording gRPC authz service (tonic `AuthorizationServer` over hyper's HTTP/2), and helpers to
//! build check inputs. Nothing here mocks the HTTP or gRPC stacks.

#![allow(dead_code, clippy::unwrap_used)]

pub mod scripted;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use authgate_authz::{BufferedBody, CheckRequestParts};
use authgate_config::{BodySettings, HeaderPattern, HostPort, HttpProviderSettings, Provider, ProviderKind};
use authgate_proto::auth::authorization_server::{Authorization, AuthorizationServer};
use authgate_proto::auth::{CheckRequest, CheckResponse};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// What the HTTP authz service received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Every header line in order, duplicates kept.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn header_names(&self) -> Vec<&str> {
        self.headers.iter().map(|(n, _)| n.as_str()).collect()
    }
}

/// A scripted HTTP answer.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    /// Send the body chunked (no content-length).
    pub chunked: bool,
    pub delay: Option<Duration>,
}

impl Reply {
    pub fn new(status: u16) -> Self {
        Self {
            status,
            ..Default::default()
        }
    }
    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }
    pub fn body(mut self, body: &[u8]) -> Self {
        self.body = body.to_vec();
        self
    }
    pub fn chunked(mut self) -> Self {
        self.chunked = true;
        self
    }
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = Some(d);
        self
    }
}

/// A body of unknown length (hyper sends it chunked).
struct ChunkedBody(Option<Bytes>);

impl http_body::Body for ChunkedBody {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(self.0.take().map(|b| Ok(Frame::data(b))))
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// Accept loop; counts TCP connections; dropping the handle stops everything.
async fn serve<S>(
    listener: TcpListener,
    builder: Builder<TokioExecutor>,
    service: S,
    connections: Arc<AtomicUsize>,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<BoxBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                connections.fetch_add(1, Ordering::SeqCst);
                let (builder, service) = (builder.clone(), service.clone());
                conns.spawn(async move {
                    let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                });
            }
            Some(_) = conns.join_next() => {}
        }
    }
}

pub struct Server<R> {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<R>>>,
    pub connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl<R: Clone> Server<R> {
    pub fn requests(&self) -> Vec<R> {
        self.requests.lock().unwrap().clone()
    }
    pub fn last(&self) -> R {
        self.requests
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the server received a request")
    }
    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
    pub fn target(&self) -> HostPort {
        HostPort {
            host: self.addr.ip().to_string(),
            port: self.addr.port(),
        }
    }
}

impl<R> Drop for Server<R> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The recording HTTP authz service (HTTP/1.1 and h2c).
pub async fn http_authz<F>(script: F) -> Server<Recorded>
where
    F: Fn(&Recorded) -> Reply + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(AtomicUsize::new(0));
    let script = Arc::new(script);
    let recorded = requests.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (script, recorded) = (script.clone(), recorded.clone());
        async move {
            let (head, body) = req.into_parts();
            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let rec = Recorded {
                method: head.method.to_string(),
                path: head
                    .uri
                    .path_and_query()
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
                headers: head
                    .headers
                    .iter()
                    .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                    .collect(),
                body,
            };
            let reply = script(&rec);
            recorded.lock().unwrap().push(rec);
            if let Some(d) = reply.delay {
                tokio::time::sleep(d).await;
            }
            let body: BoxBody = if reply.chunked {
                BoxBody::new(ChunkedBody(Some(Bytes::from(reply.body))))
            } else {
                BoxBody::new(
                    http_body_util::Full::new(Bytes::from(reply.body)).map_err(|never| match never {}),
                )
            };
            let mut resp = Response::new(body);
            *resp.status_mut() = http::StatusCode::from_u16(reply.status).unwrap();
            for (n, v) in reply.headers {
                resp.headers_mut().append(n, HeaderValue::from_str(&v).unwrap());
            }
            Ok::<_, Infallible>(resp)
        }
    });
    let task = tokio::spawn(serve(
        listener,
        Builder::new(TokioExecutor::new()),
        service,
        connections.clone(),
    ));
    Server {
        addr,
        requests,
        connections,
        task,
    }
}

type GrpcScript = dyn Fn(&CheckRequest) -> Result<CheckResponse, tonic::Status> + Send + Sync;

struct Authz {
    script: Arc<GrpcScript>,
    requests: Arc<Mutex<Vec<CheckRequest>>>,
    delay: Option<Duration>,
}

#[tonic::async_trait]
impl Authorization for Authz {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let req = request.into_inner();
        let answer = (self.script)(&req);
        self.requests.lock().unwrap().push(req);
        if let Some(d) = self.delay {
            tokio::time::sleep(d).await;
        }
        answer.map(tonic::Response::new)
    }
}

/// What the transport carried for one call.
#[derive(Debug, Clone)]
pub struct CallInfo {
    pub authority: String,
    pub grpc_timeout: Option<String>,
}

type Seen = Arc<Mutex<Vec<CallInfo>>>;

pub struct GrpcServer {
    pub server: Server<CheckRequest>,
    pub seen: Seen,
}

impl std::ops::Deref for GrpcServer {
    type Target = Server<CheckRequest>;
    fn deref(&self) -> &Server<CheckRequest> {
        &self.server
    }
}

/// The recording gRPC authz service.
pub async fn grpc_authz<F>(delay: Option<Duration>, script: F) -> GrpcServer
where
    F: Fn(&CheckRequest) -> Result<CheckResponse, tonic::Status> + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(AtomicUsize::new(0));
    let svc = AuthorizationServer::new(Authz {
        script: Arc::new(script),
        requests: requests.clone(),
        delay,
    });
    let seen = Arc::new(Mutex::new(Vec::new()));
    let tower = BoxedTonic {
        inner: svc,
        seen: seen.clone(),
    };
    let task = tokio::spawn(serve(
        listener,
        Builder::new(TokioExecutor::new()).http2_only(),
        TowerToHyperService::new(tower),
        connections.clone(),
    ));
    GrpcServer {
        server: Server {
            addr,
            requests,
            connections,
            task,
        },
        seen,
    }
}

/// Records each call's `:authority` and `grpc-timeout`, and boxes tonic's response body so both
/// servers share one body type.
#[derive(Clone)]
struct BoxedTonic<S> {
    inner: S,
    seen: Seen,
}

impl<S> tower_service::Service<Request<Incoming>> for BoxedTonic<S>
where
    S: tower_service::Service<Request<Incoming>, Response = Response<tonic::body::Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<BoxBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Response<BoxBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let authority = req.uri().authority().map(|a| a.to_string()).unwrap_or_default();
        let timeout = req
            .headers()
            .get("grpc-timeout")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        self.seen.lock().unwrap().push(CallInfo {
            authority,
            grpc_timeout: timeout,
        });
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            Ok(resp.map(|b| BoxBody::new(b.map_err(BoxError::from))))
        })
    }
}

/// An HTTP provider config pointing anywhere (the target is passed separately).
pub fn http_provider(settings: HttpProviderSettings) -> Provider {
    Provider {
        name: "http-authz".into(),
        service: "ext-authz.local".into(),
        port: 8000,
        timeout: Duration::from_secs(5),
        fail_open: false,
        status_on_error: 403,
        body: None,
        clear_route_cache: false,
        kind: ProviderKind::Http(settings),
    }
}

pub fn grpc_provider() -> Provider {
    Provider {
        name: "grpc-authz".into(),
        service: "ext-authz.local".into(),
        port: 9000,
        timeout: Duration::from_secs(5),
        fail_open: false,
        status_on_error: 403,
        body: None,
        clear_route_cache: false,
        kind: ProviderKind::Grpc,
    }
}

pub fn patterns(list: &[&str]) -> Vec<HeaderPattern> {
    list.iter().map(|p| HeaderPattern::parse(p).unwrap()).collect()
}

pub fn body_settings(max: u32, partial: bool, pack: bool) -> BodySettings {
    BodySettings {
        max_request_bytes: max,
        allow_partial_message: partial,
        pack_as_bytes: pack,
    }
}

/// An owned client request the tests borrow `CheckRequestParts` from.
pub struct ClientRequest {
    pub method: Method,
    pub path_and_query: String,
    pub authority: String,
    pub scheme: String,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body: Option<BufferedBody>,
    pub principal: Option<String>,
    pub sni: Option<String>,
    pub context_extensions: Vec<(String, String)>,
    pub time: SystemTime,
}

impl ClientRequest {
    pub fn get(path: &str) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", HeaderValue::from_static("req-1"));
        Self {
            method: Method::GET,
            path_and_query: path.to_owned(),
            authority: "shop.example.com".to_owned(),
            scheme: "http".to_owned(),
            version: http::Version::HTTP_11,
            headers,
            body: None,
            principal: None,
            sni: None,
            context_extensions: Vec::new(),
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
        }
    }

    pub fn method(mut self, m: Method) -> Self {
        self.method = m;
        self
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.append(name, HeaderValue::from_str(value).unwrap());
        self
    }

    pub fn body(mut self, bytes: &[u8], partial: bool) -> Self {
        self.body = Some(BufferedBody {
            bytes: Bytes::copy_from_slice(bytes),
            partial,
        });
        self
    }

    pub fn parts(&self) -> CheckRequestParts<'_> {
        CheckRequestParts {
            method: &self.method,
            path_and_query: &self.path_and_query,
            authority: &self.authority,
            scheme: &self.scheme,
            version: self.version,
            headers: &self.headers,
            source: "10.1.2.3:45678".parse().unwrap(),
            destination: "10.0.0.1:8080".parse().unwrap(),
            stream_id: 4242,
            request_time: self.time,
            body: self.body.as_ref(),
            principal: self.principal.as_deref(),
            sni: self.sni.as_deref(),
            context_extensions: &self.context_extensions,
        }
    }
}

/// A gRPC status with `code` and nothing else.
pub fn rpc_status(code: i32) -> Option<authgate_proto::rpc::Status> {
    Some(authgate_proto::rpc::Status {
        code,
        message: String::new(),
        details: vec![],
    })
}

/// An OK CheckResponse carrying `resp`.
pub fn ok(resp: authgate_proto::auth::OkHttpResponse) -> CheckResponse {
    CheckResponse {
        status: rpc_status(0),
        dynamic_metadata: None,
        http_response: Some(authgate_proto::auth::check_response::HttpResponse::OkResponse(
            resp,
        )),
    }
}

/// The `:path` the CheckRequest reports for the client's request.
pub fn path_of(req: &CheckRequest) -> String {
    req.attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
        .map(|h| h.path.clone())
        .unwrap_or_default()
}
