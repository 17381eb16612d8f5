//! Issue 5: WebSocket upgrades go through routing and authorization like any request; a denied
//! upgrade never reaches the backend, an allowed one tunnels messages both ways.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const CONFIG: &str = r#"
listeners: [{ address: "127.0.0.1:0" }]
backends: [{ name: ws, endpoints: ["{{backend}}"] }]
routes: [{ name: ws, backend: ws }]
extensionProviders:
  - name: grpc
    envoyExtAuthzGrpc: { service: "{{gh}}", port: {{gp}} }
authorizationPolicies:
  - name: ext-authz
    action: CUSTOM
    provider: { name: grpc }
    rules: [{}]
"#;

struct WsBackend {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    upgrades: Arc<AtomicUsize>,
}

/// A tokio-tungstenite echo server counting TCP connections and completed upgrades.
async fn ws_echo_backend() -> WsBackend {
    let listener = bind().await;
    let a = addr(&listener);
    let connections = Arc::new(AtomicUsize::new(0));
    let upgrades = Arc::new(AtomicUsize::new(0));
    let (c, u) = (connections.clone(), upgrades.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let u = u.clone();
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                u.fetch_add(1, Ordering::SeqCst);
                while let Some(Ok(msg)) = ws.next().await {
                    let echo = matches!(msg, Message::Text(_) | Message::Binary(_));
                    if matches!(msg, Message::Close(_)) || (echo && ws.send(msg).await.is_err()) {
                        break;
                    }
                }
            });
        }
    });
    WsBackend {
        addr: a,
        connections,
        upgrades,
    }
}

#[tokio::test]
async fn websocket_upgrade_is_authorized() {
    let sample = start_sample().await;
    let backend = ws_echo_backend().await;
    let gw = gateway(
        CONFIG,
        &[
            ("backend", backend.addr.to_string()),
            ("gh", sample.authz_grpc.ip().to_string()),
            ("gp", sample.authz_grpc.port().to_string()),
        ],
    )
    .await;
    let url = format!("ws://{}/chat", gw_addr(&gw));

    // Denied: the upgrade request gets the authz service's 403; the backend saw nothing.
    let req = url
        .as_str()
        .into_client_request()
        .unwrap_or_else(|e| panic!("{e}"));
    match within("denied upgrade", tokio_tungstenite::connect_async(req)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 403, "denied upgrade");
        }
        Err(e) => panic!("expected an HTTP 403 answer to the upgrade, got {e}"),
        Ok((_, resp)) => panic!("denied upgrade was switched: {}", resp.status()),
    }
    assert_eq!(
        sample.counters.grpc.load(Ordering::SeqCst),
        1,
        "the upgrade was checked"
    );
    assert_eq!(
        backend.connections.load(Ordering::SeqCst),
        0,
        "denied upgrade never reaches the backend"
    );
    assert_eq!(backend.upgrades.load(Ordering::SeqCst), 0);

    // Allowed: 101 from the backend, then messages flow both ways.
    let mut req = url
        .as_str()
        .into_client_request()
        .unwrap_or_else(|e| panic!("{e}"));
    req.headers_mut()
        .insert("x-ext-authz", http::HeaderValue::from_static("allow"));
    let (mut ws, resp) = within("allowed upgrade", tokio_tungstenite::connect_async(req))
        .await
        .unwrap_or_else(|e| panic!("allowed upgrade failed: {e}"));
    assert_eq!(resp.status(), 101);
    for i in 0..5 {
        let text = format!("hello {i}");
        within("send", ws.send(Message::text(text.clone())))
            .await
            .unwrap_or_else(|e| panic!("send: {e}"));
        let echoed = within("echo", ws.next())
            .await
            .unwrap_or_else(|| panic!("tunnel closed after {i} messages"))
            .unwrap_or_else(|e| panic!("receive: {e}"));
        assert_eq!(echoed, Message::text(text));
    }
    let blob: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    within("send binary", ws.send(Message::binary(blob.clone())))
        .await
        .unwrap_or_else(|e| panic!("send: {e}"));
    let echoed = within("binary echo", ws.next())
        .await
        .unwrap_or_else(|| panic!("tunnel closed"))
        .unwrap_or_else(|e| panic!("receive: {e}"));
    assert_eq!(echoed, Message::binary(blob));
    let _ = within("close", ws.close(None)).await;

    assert_eq!(sample.counters.grpc.load(Ordering::SeqCst), 2);
    assert_eq!(backend.connections.load(Ordering::SeqCst), 1);
    assert_eq!(backend.upgrades.load(Ordering::SeqCst), 1);
    gw.shutdown(Duration::from_secs(1)).await;
}
