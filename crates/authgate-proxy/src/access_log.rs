//! One access-log line per request: Envoy-like text or JSON, with the authorization decision.

use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime};

use authgate_authz::Decision;
use http::{HeaderMap, Request, Response};

use crate::error::ProxyError;
use crate::pipeline::ConnInfo;
use crate::snapshot::Snapshot;

pub struct LogEntry {
    started: Instant,
    start_time: SystemTime,
    pub stream_id: u64,
    method: String,
    protocol: &'static str,
    peer: std::net::SocketAddr,
    authority: String,
    path: String,
    request_id: String,
    user_agent: String,
    enabled: bool,
    pub route_index: Option<usize>,
    pub backend_index: Option<usize>,
    /// The request was sent to the backend.
    pub forwarded: bool,
    pub upstream_time: Option<Duration>,
    /// (provider index, latency, outcome word)
    authz: Vec<(usize, Duration, &'static str)>,
    pub audit: bool,
    status: u16,
    flag: &'static str,
    detail: String,
    duration: Duration,
}

impl LogEntry {
    /// `enabled`: whether a log line will be written; without one, only what metrics need is
    /// kept (no string copies on the hot path).
    pub fn start<B>(req: &Request<B>, conn: &ConnInfo, stream_id: u64, enabled: bool) -> Self {
        Self {
            enabled,
            started: Instant::now(),
            start_time: SystemTime::now(),
            stream_id,
            method: if enabled {
                req.method().as_str().to_owned()
            } else {
                String::new()
            },
            protocol: protocol(req.version()),
            peer: conn.peer,
            authority: String::new(),
            path: match req.uri().path_and_query() {
                Some(p) if enabled => p.as_str().to_owned(),
                _ => String::new(),
            },
            request_id: String::new(),
            user_agent: String::new(),
            route_index: None,
            backend_index: None,
            forwarded: false,
            upstream_time: None,
            authz: Vec::new(),
            audit: false,
            status: 0,
            flag: "-",
            detail: String::new(),
            duration: Duration::ZERO,
        }
    }

    pub fn set_request(&mut self, authority: &str, path: &str, headers: &HeaderMap) {
        if !self.enabled {
            return;
        }
        authority.clone_into(&mut self.authority);
        path.clone_into(&mut self.path);
        let get = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned()
        };
        self.request_id = get("x-request-id");
        self.user_agent = get("user-agent");
    }

    pub fn authz(&mut self, provider: usize, latency: Duration, decision: &Decision) {
        let word = match decision {
            Decision::Allow(_) => "allowed",
            Decision::Deny(_) => "denied",
            Decision::Error(e) if e.is_timeout() => "timeout",
            Decision::Error(e) if e.is_request() => "unbuildable",
            Decision::Error(_) => "error",
            Decision::Invalid(_) => "invalid",
        };
        self.authz.push((provider, latency, word));
    }

    pub fn fail(&mut self, err: &ProxyError, _snap: &Snapshot) {
        self.flag = err.response_flag();
        if self.enabled {
            self.detail = err.detail();
        }
    }

    pub fn finish<B>(&mut self, resp: &Response<B>) {
        self.status = resp.status().as_u16();
        self.duration = self.started.elapsed();
    }

    pub fn upstream_connect_failed(&self) -> bool {
        self.flag == "UF"
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    pub fn duration(&self) -> Duration {
        self.duration
    }

    pub fn route_name<'s>(&self, snap: &'s Snapshot) -> &'s str {
        self.route_index
            .and_then(|i| snap.config.routes.get(i))
            .map_or("-", |r| r.name.as_str())
    }

    fn upstream_name<'s>(&self, snap: &'s Snapshot) -> Option<&'s str> {
        self.backend_index
            .filter(|_| self.forwarded)
            .and_then(|i| snap.config.backends.get(i))
            .map(|b| b.name.as_str())
    }

    pub fn authz_outcomes(&self) -> impl Iterator<Item = &(usize, Duration, &'static str)> {
        self.authz.iter()
    }

    fn authz_summary(&self, snap: &Snapshot) -> (String, String, String) {
        if self.authz.is_empty() {
            return ("-".into(), "-".into(), "-".into());
        }
        let mut decision = String::new();
        let mut providers = String::new();
        let mut ms = String::new();
        for (i, (p, d, w)) in self.authz.iter().enumerate() {
            if i > 0 {
                decision.push(',');
                providers.push(',');
                ms.push(',');
            }
            decision.push_str(w);
            providers.push_str(snap.config.providers.get(*p).map_or("?", |p| p.name.as_str()));
            let _ = write!(ms, "{}", d.as_millis());
        }
        (decision, providers, ms)
    }

    /// Envoy-like default format, plus the authorization fields.
    pub fn text(&self, snap: &Snapshot) -> String {
        let (decision, providers, authz_ms) = self.authz_summary(snap);
        format!(
            "[{}] \"{} {} {}\" {} {} {} {} \"{}\" \"{}\" \"{}\" \"{}\" route={} upstream={} authz={} provider={} authz_ms={}{}",
            rfc3339(self.start_time),
            self.method,
            self.path,
            self.protocol,
            self.status,
            self.flag,
            self.duration.as_millis(),
            self.upstream_time
                .map_or_else(|| "-".to_owned(), |d| d.as_millis().to_string()),
            self.peer.ip(),
            self.user_agent,
            self.request_id,
            self.authority,
            self.route_name(snap),
            self.upstream_name(snap).unwrap_or("-"),
            decision,
            providers,
            authz_ms,
            if self.audit { " audit=true" } else { "" },
        )
    }

    pub fn json(&self, snap: &Snapshot) -> String {
        let (decision, providers, authz_ms) = self.authz_summary(snap);
        let q = |s: &str| serde_json::Value::String(s.to_owned());
        serde_json::json!({
            "start_time": rfc3339(self.start_time),
            "method": q(&self.method),
            "path": q(&self.path),
            "protocol": self.protocol,
            "response_code": self.status,
            "response_flags": self.flag,
            "response_code_details": q(&self.detail),
            "duration_ms": self.duration.as_millis() as u64,
            "upstream_service_time_ms": self.upstream_time.map(|d| d.as_millis() as u64),
            "downstream_remote_address": self.peer.to_string(),
            "user_agent": q(&self.user_agent),
            "request_id": q(&self.request_id),
            "authority": q(&self.authority),
            "route": self.route_name(snap),
            "upstream_cluster": self.upstream_name(snap),
            "authz_decision": decision,
            "authz_provider": providers,
            "authz_ms": authz_ms,
            "audit": self.audit,
        })
        .to_string()
    }
}

fn protocol(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/0.9",
    }
}

/// UTC timestamp with milliseconds, computed without a date library.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Writes access-log lines to stdout from a thread of its own, in batches: the request path
/// only formats the line and hands it over (no syscall, no stdout lock). When stdout cannot
/// keep up, lines are dropped and counted rather than buffered without bound.
pub struct LogSink {
    tx: std::sync::mpsc::SyncSender<LogMsg>,
    dropped: std::sync::atomic::AtomicU64,
}

enum LogMsg {
    Line(String),
    /// Everything sent before has been written and flushed when the ack arrives.
    Flush(std::sync::mpsc::SyncSender<()>),
}

const LOG_QUEUE: usize = 16 * 1024;

impl LogSink {
    pub fn stdout() -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<LogMsg>(LOG_QUEUE);
        let spawned = std::thread::Builder::new()
            .name("authgate-access-log".into())
            .spawn(move || {
                use std::io::Write as _;
                let stdout = std::io::stdout();
                let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
                let mut acks = Vec::new();
                while let Ok(first) = rx.recv() {
                    for msg in std::iter::once(first).chain(std::iter::from_fn(|| rx.try_recv().ok())) {
                        match msg {
                            LogMsg::Line(line) => {
                                let _ = writeln!(out, "{line}");
                            }
                            LogMsg::Flush(ack) => acks.push(ack),
                        }
                    }
                    let _ = out.flush();
                    for ack in acks.drain(..) {
                        let _ = ack.send(());
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "access log thread failed to start; access log disabled");
        }
        Self {
            tx,
            dropped: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn write(&self, line: String) {
        if self.tx.try_send(LogMsg::Line(line)).is_err() {
            self.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Waits (at most `wait`) until every line handed over so far is on stdout.
    pub fn flush(&self, wait: std::time::Duration) {
        let (ack, done) = std::sync::mpsc::sync_channel(1);
        if self.tx.send(LogMsg::Flush(ack)).is_ok() {
            let _ = done.recv_timeout(wait);
        }
        let dropped = self.dropped.load(std::sync::atomic::Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "access log lines dropped because stdout could not keep up"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates() {
        assert_eq!(super::civil_from_days(0), (1970, 1, 1));
        assert_eq!(super::civil_from_days(20_790), (2026, 12, 3));
    }
}
