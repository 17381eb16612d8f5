//! The demo backend behind the gateway: a Bookinfo-like product page and API, a health check,
//! and `/echo/*`, which tells end-to-end tests exactly what reached the backend.

use std::convert::Infallible;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use serde_json::json;
use tokio::net::TcpListener;

use crate::{BACKEND_RECEIVED_HEADER, RESULT_HEADER, server};

const PRODUCT_PAGE: &str = include_str!("productpage.html");
const PRODUCTS: &str = include_str!("products.json");
const HTML: &str = "text/html; charset=utf-8";
const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";

pub(crate) async fn serve(listener: TcpListener) -> std::io::Result<()> {
    let service = service_fn(|request| async { Ok::<_, Infallible>(handle(request).await) });
    server::serve(listener, server::http_builder(), service).await
}

async fn handle(request: Request<Incoming>) -> Response<Full<Bytes>> {
    // Lets end-to-end tests prove which check result the gateway forwarded upstream.
    let check_result = request.headers().get(RESULT_HEADER).cloned();
    let mut response = route(request).await;
    if let Some(value) = check_result {
        response.headers_mut().insert(BACKEND_RECEIVED_HEADER, value);
    }
    response
}

async fn route(request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if path == "/echo" || path.starts_with("/echo/") {
        return echo(request).await;
    }
    let page = match path {
        "/productpage" => Some((HTML, PRODUCT_PAGE)),
        "/api/v1/products" => Some((JSON, PRODUCTS)),
        "/health" => Some((TEXT, "ok")),
        _ => None,
    };
    let (method, head) = (request.method().clone(), request.method() == Method::HEAD);
    // Read the request body to its end so the HTTP/1 connection can be reused.
    let _ = body_len(request.into_body()).await;
    match page {
        None => fixed(StatusCode::NOT_FOUND, TEXT, "404 page not found\n", head),
        Some((content_type, body)) if method == Method::GET || head => {
            fixed(StatusCode::OK, content_type, body, head)
        }
        Some(_) => {
            let mut response = fixed(StatusCode::METHOD_NOT_ALLOWED, TEXT, "", false);
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            response
        }
    }
}

/// `{"method", "path" (with query), "version", "authority", "headers": [[name, value], ...],
/// "body_len"}`: the request as hyper received it. The body itself is only counted.
async fn echo(request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let Ok(body_len) = body_len(body).await else {
        return fixed(StatusCode::BAD_REQUEST, TEXT, "unreadable body\n", false);
    };
    let headers: Vec<_> = parts
        .headers
        .iter()
        .map(|(name, value)| [name.as_str().into(), String::from_utf8_lossy(value.as_bytes())])
        .collect();
    let echoed = json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().map_or("/", |pq| pq.as_str()),
        "version": format!("{:?}", parts.version),
        "authority": parts.uri.authority().map(|a| a.as_str()),
        "headers": headers,
        "body_len": body_len,
    });
    let body = Bytes::from(echoed.to_string());
    let head = parts.method == Method::HEAD;
    fixed_bytes(StatusCode::OK, JSON, body, head)
}

/// Reads the body to its end, keeping only its length.
async fn body_len(mut body: Incoming) -> Result<u64, hyper::Error> {
    let mut len = 0;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            len += data.len() as u64;
        }
    }
    Ok(len)
}

fn fixed(
    status: StatusCode,
    content_type: &'static str,
    body: &'static str,
    head: bool,
) -> Response<Full<Bytes>> {
    fixed_bytes(status, content_type, Bytes::from_static(body.as_bytes()), head)
}

/// A complete response with its Content-Length; a HEAD response keeps the length, not the body.
fn fixed_bytes(
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
    head: bool,
) -> Response<Full<Bytes>> {
    let len = body.len();
    let mut response = Response::new(Full::new(if head { Bytes::new() } else { body }));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if len > 0 {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    response
}
