//! DNS for the authz connections: tokio's resolver, asked at connect time (so a service whose
//! address changes is followed on the next new connection).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TokioResolver;

impl tower_service::Service<Name> for TokioResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        Box::pin(async move {
            // The connector puts the URI's port on each address.
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            Ok(addrs.into_iter())
        })
    }
}

/// A plain-TCP connector with Nagle off (checks are small request/response exchanges).
pub(crate) fn connector() -> HttpConnector<TokioResolver> {
    let mut c = HttpConnector::new_with_resolver(TokioResolver);
    c.set_nodelay(true);
    c.enforce_http(true);
    c
}
