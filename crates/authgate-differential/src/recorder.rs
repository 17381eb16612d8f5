//! Recording, scriptable servers on 127.0.0.1:0: an HTTP authorization service, a gRPC
//! authorization service (`envoy.service.auth.v3.Authorization/Check`) and a backend.
//!
//! The harness runs one request at a time, so the servers answer with whatever script was last
//! [`Recorders::arm`]ed and append what they received to one shared log that
//! [`Recorders::take`] drains. Both gateways (authgate and Envoy) point at the same three servers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use authgate_proto::auth::authorization_server::{Authorization, AuthorizationServer};
use authgate_proto::auth::{CheckRequest, CheckResponse};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// What the HTTP authorization service answers.
#[derive(Debug, Clone)]
pub enum HttpAuthzScript {
    Reply {
        status: u16,
        /// In order; repeated names are sent as separate header lines.
        headers: Vec<(String, String)>,
        body: Bytes,
    },
    /// Wait, then do the inner script (the gateway's timeout should fire first).
    Delay(Duration, Box<HttpAuthzScript>),
    /// Close the connection without answering.
    Hangup,
}

impl HttpAuthzScript {
    /// 200, no headers, no body: an allow with no mutations.
    pub fn allow() -> Self {
        Self::reply(200, &[], "")
    }

    pub fn reply(status: u16, headers: &[(&str, &str)], body: &str) -> Self {
        Self::Reply {
            status,
            headers: pairs(headers),
            body: Bytes::copy_from_slice(body.as_bytes()),
        }
    }
}

impl Default for HttpAuthzScript {
    fn default() -> Self {
        Self::allow()
    }
}

/// What the gRPC authorization service answers.
#[derive(Debug, Clone)]
pub enum GrpcAuthzScript {
    Reply(Box<CheckResponse>),
    /// The RPC fails with this gRPC status.
    Fail(tonic::Code, String),
    Delay(Duration, Box<GrpcAuthzScript>),
}

impl Default for GrpcAuthzScript {
    fn default() -> Self {
        Self::Reply(Box::new(crate::grpc::ok(Vec::new())))
    }
}

/// What the backend answers (to every request while armed).
#[derive(Debug, Clone)]
pub struct BackendScript {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Default for BackendScript {
    fn default() -> Self {
        Self {
            status: 200,
            headers: pairs(&[("content-type", "text/plain"), ("x-backend", "recorder")]),
            body: Bytes::from_static(b"hello from the backend\n"),
        }
    }
}

impl BackendScript {
    /// The default answer plus `extra` headers.
    pub fn with_headers(extra: &[(&str, &str)]) -> Self {
        let mut s = Self::default();
        s.headers.extend(pairs(extra));
        s
    }
}

/// The three scripts for one request.
#[derive(Debug, Clone, Default)]
pub struct Scripts {
    pub http_authz: HttpAuthzScript,
    pub grpc_authz: GrpcAuthzScript,
    pub backend: BackendScript,
}

/// An HTTP request as a recording server received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedHttp {
    pub method: String,
    /// Path and query as received (origin-form).
    pub target: String,
    pub version: String,
    /// Lower-case names; values lossily decoded; repeated names kept in their order.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// A `Check` call as the gRPC service received it.
#[derive(Debug, Clone)]
pub struct RecordedCheck {
    pub request: CheckRequest,
    /// gRPC request metadata (`grpc-timeout`, `:authority`, ...), for diagnosis only.
    pub metadata: Vec<(String, String)>,
}

/// Everything the three servers received since the last [`Recorders::arm`].
#[derive(Debug, Clone, Default)]
pub struct Recordings {
    pub http_authz: Vec<RecordedHttp>,
    pub grpc_authz: Vec<RecordedCheck>,
    pub backend: Vec<RecordedHttp>,
}

#[derive(Default)]
struct State {
    scripts: Scripts,
    seen: Recordings,
}

/// The three recording servers, running until dropped.
pub struct Recorders {
    pub http_authz: SocketAddr,
    pub grpc_authz: SocketAddr,
    pub backend: SocketAddr,
    state: Arc<Mutex<State>>,
    _tasks: JoinSet<()>,
}

impl Recorders {
    /// Binds three ephemeral ports on 127.0.0.1 and starts serving.
    pub async fn start() -> std::io::Result<Self> {
        let state = Arc::new(Mutex::new(State::default()));
        let (h, g, b) = (bind().await?, bind().await?, bind().await?);
        let (http_authz, grpc_authz, backend) = (h.local_addr()?, g.local_addr()?, b.local_addr()?);
        let mut tasks = JoinSet::new();

        let st = state.clone();
        let http_service = service_fn(move |req| http_authz_answer(st.clone(), req));
        tasks.spawn(serve(h, http_builder(), http_service));

        let grpc_service = TowerToHyperService::new(AuthorizationServer::new(GrpcRecorder(state.clone())));
        tasks.spawn(serve(g, grpc_builder(), grpc_service));

        let st = state.clone();
        let backend_service = service_fn(move |req| backend_answer(st.clone(), req));
        tasks.spawn(serve(b, http_builder(), backend_service));

        Ok(Self {
            http_authz,
            grpc_authz,
            backend,
            state,
            _tasks: tasks,
        })
    }

    /// Installs the scripts for the next request and forgets what was recorded so far.
    pub fn arm(&self, scripts: Scripts) {
        let mut st = lock(&self.state);
        st.scripts = scripts;
        st.seen = Recordings::default();
    }

    /// Everything recorded since the last `arm`.
    pub fn take(&self) -> Recordings {
        std::mem::take(&mut lock(&self.state).seen)
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

async fn bind() -> std::io::Result<TcpListener> {
    TcpListener::bind("127.0.0.1:0").await
}

fn http_builder() -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    builder
}

fn grpc_builder() -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new()).http2_only();
    builder.http2().timer(TokioTimer::new());
    builder
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn serve<S, B>(listener: TcpListener, builder: Builder<TokioExecutor>, service: S)
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (builder, service) = (builder.clone(), service.clone());
                connections.spawn(async move {
                    let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                });
            }
            Some(_) = connections.join_next() => {}
        }
    }
}

fn version_name(v: Version) -> String {
    match v {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        _ => "other",
    }
    .to_owned()
}

/// Reads a whole request and turns it into a [`RecordedHttp`].
async fn record(req: Request<Incoming>) -> RecordedHttp {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    RecordedHttp {
        method: parts.method.as_str().to_owned(),
        target: parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
        version: version_name(parts.version),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
    }
}

fn build_response(status: u16, headers: &[(String, String)], body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
            resp.headers_mut().append(k, v);
        }
    }
    resp
}

#[derive(Debug)]
struct Hangup;

impl std::fmt::Display for Hangup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("scripted hang-up")
    }
}

impl std::error::Error for Hangup {}

async fn http_authz_answer(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Hangup> {
    let seen = record(req).await;
    let script = {
        let mut st = lock(&state);
        st.seen.http_authz.push(seen);
        st.scripts.http_authz.clone()
    };
    let mut script = script;
    loop {
        match script {
            HttpAuthzScript::Reply {
                status,
                headers,
                body,
            } => {
                return Ok(build_response(status, &headers, body));
            }
            HttpAuthzScript::Delay(d, inner) => {
                tokio::time::sleep(d).await;
                script = *inner;
            }
            HttpAuthzScript::Hangup => return Err(Hangup),
        }
    }
}

async fn backend_answer(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let seen = record(req).await;
    let script = {
        let mut st = lock(&state);
        st.seen.backend.push(seen);
        st.scripts.backend.clone()
    };
    Ok(build_response(script.status, &script.headers, script.body))
}

struct GrpcRecorder(Arc<Mutex<State>>);

#[tonic::async_trait]
impl Authorization for GrpcRecorder {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let metadata = request
            .metadata()
            .clone()
            .into_headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let seen = RecordedCheck {
            request: request.into_inner(),
            metadata,
        };
        let mut script = {
            let mut st = lock(&self.0);
            st.seen.grpc_authz.push(seen);
            st.scripts.grpc_authz.clone()
        };
        loop {
            match script {
                GrpcAuthzScript::Reply(r) => return Ok(tonic::Response::new(*r)),
                GrpcAuthzScript::Fail(code, msg) => return Err(tonic::Status::new(code, msg)),
                GrpcAuthzScript::Delay(d, inner) => {
                    tokio::time::sleep(d).await;
                    script = *inner;
                }
            }
        }
    }
}
