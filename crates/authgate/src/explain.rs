//! `authgate explain`: what the gateway would do with one request, without sending it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context as _;
use authgate_authz::{CheckRequestParts, ProviderClient};
use authgate_policy::{
    PolicyEngine, RequestAttributes, client_ip_from_headers, normalize_host, normalize_path,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method};

#[derive(clap::Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    config: crate::ConfigArgs,
    /// The request: `METHOD URL`, e.g. `GET https://bookinfo.example.com:8443/productpage?x=1`.
    /// The URL's port picks the listener port policies see (default: the first listener's).
    request: String,
    /// Request headers, `name: value`. Repeatable.
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Client address (the direct peer). Default 203.0.113.7.
    #[arg(long)]
    from: Option<IpAddr>,
}

pub fn explain(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let cfg =
        authgate_config::load(&args.config.config, &args.config.istio).map_err(|e| anyhow::anyhow!("{e}"))?;
    let engine = PolicyEngine::compile(&cfg).map_err(|errs| {
        anyhow::anyhow!(
            "{}",
            errs.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    })?;

    let (method, url) = args
        .request
        .trim()
        .split_once(char::is_whitespace)
        .unwrap_or(("GET", args.request.trim()));
    let method: Method = method.parse().context("request method")?;
    let uri: http::Uri = url.trim().parse().with_context(|| format!("URL {url:?}"))?;
    let scheme = uri.scheme_str().unwrap_or("http");
    let listener_port = cfg.listeners.first().map_or(8080, |l| l.address.port());
    let port = uri.port_u16().unwrap_or(listener_port);
    let mut headers = HeaderMap::new();
    for h in &args.headers {
        let (k, v) = h
            .split_once(':')
            .with_context(|| format!("header {h:?} is not `name: value`"))?;
        headers.append(
            HeaderName::from_bytes(k.trim().as_bytes()).with_context(|| format!("header name {k:?}"))?,
            HeaderValue::from_str(v.trim()).with_context(|| format!("header value {v:?}"))?,
        );
    }
    let authority = match uri.authority() {
        Some(a) => a.as_str().to_owned(),
        None => headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost")
            .to_owned(),
    };
    headers.remove("host");
    let peer_ip = args.from.unwrap_or(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)));
    let peer = SocketAddr::new(peer_ip, 54321);
    let local = SocketAddr::new(
        cfg.listeners
            .first()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |l| l.address.ip()),
        port,
    );

    let mut out = String::new();
    let raw_target = uri.path_and_query().map_or("/", |p| p.as_str());
    out.push_str(&format!(
        "request:     {method} {scheme}://{authority}{raw_target}\n"
    ));
    let target = match normalize_path(raw_target, cfg.path_normalization) {
        Ok(t) => t,
        Err(e) => {
            out.push_str(&format!("normalized:  rejected with 400 ({e})\n"));
            print!("{out}");
            return Ok(ExitCode::SUCCESS);
        }
    };
    out.push_str(&format!(
        "normalized:  path {:?}, forwarded and checked as {:?} ({:?})\n",
        target.path,
        target.path_and_query(),
        cfg.path_normalization.mode
    ));
    let (host, _) = normalize_host(&authority);
    let route = cfg.routes.iter().find(|r| {
        (r.hosts.is_empty() || r.hosts.iter().any(|h| h.matches(&host))) && r.path.matches(&target.path)
    });
    match route {
        Some(r) => out.push_str(&format!(
            "route:       {} → backend {}\n",
            r.name,
            cfg.backends.get(r.backend).map_or("?", |b| b.name.as_str())
        )),
        None => {
            out.push_str(
                "route:       none → 404, no policy evaluated and no authorization call (as Envoy)\n",
            );
            print!("{out}");
            return Ok(ExitCode::SUCCESS);
        }
    }
    // The gateway appends the peer to X-Forwarded-For before policies and checks see the request.
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.is_empty() => format!("{prev},{peer_ip}"),
        _ => peer_ip.to_string(),
    };
    let remote_ip = client_ip_from_headers(&headers, peer_ip, cfg.gateway.num_trusted_proxies);
    headers.insert(
        "x-forwarded-for",
        HeaderValue::from_str(&xff).context("x-forwarded-for")?,
    );
    headers.insert(
        "x-forwarded-proto",
        HeaderValue::from_static(if scheme == "https" { "https" } else { "http" }),
    );
    let attrs = RequestAttributes {
        method: method.as_str(),
        path: &target.path,
        path_and_query: &target.path_and_query(),
        authority: &authority,
        port,
        source_ip: peer_ip,
        remote_ip,
        destination_ip: local.ip(),
        headers: &headers,
        sni: (scheme == "https").then_some(host.as_ref()),
        principal: None,
    };
    let explanation = engine.explain(&attrs);
    out.push_str(&format!("\n{explanation}\n"));

    let path_and_query = target.path_and_query();
    for index in explanation.verdict.providers.iter() {
        let Some(provider) = cfg.providers.get(index) else {
            continue;
        };
        let client = ProviderClient::new(provider, provider.target(&cfg.static_hosts))
            .map_err(|e| anyhow::anyhow!("provider {}: {e}", provider.name))?;
        let parts = CheckRequestParts {
            method: &method,
            path_and_query: &path_and_query,
            authority: &authority,
            scheme,
            version: http::Version::HTTP_11,
            headers: &headers,
            source: peer,
            destination: local,
            stream_id: 1,
            request_time: SystemTime::now(),
            body: None,
            principal: None,
            sni: attrs.sni,
            context_extensions: &[],
        };
        out.push_str(&format!(
            "\ncheck request to provider {:?} ({}:{}):\n",
            provider.name, provider.service, provider.port
        ));
        match client.preview(&parts) {
            Ok(p) => out.push_str(&p.to_string()),
            Err(e) => out.push_str(&format!("  cannot build: {e} → statusOnError\n")),
        }
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}
