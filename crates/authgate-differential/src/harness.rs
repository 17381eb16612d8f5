//! Running cases through a gateway, classifying the differences and printing the report.

use std::fmt::Write as _;
use std::net::SocketAddr;

use crate::client::{self, ClientRequest};
use crate::compare::{Difference, Observation, compare, fields};
use crate::corpus::Case;
use crate::listed::{Listed, explain};
use crate::recorder::Recorders;

/// Sends `case`'s request to `gateway` with the recorders armed with its scripts, and returns
/// what the client got and what the recorders saw.
pub async fn observe(recorders: &Recorders, gateway: SocketAddr, case: &Case) -> Observation {
    recorders.arm(case.scripts.clone());
    let client = client::send(gateway, &case.request).await;
    // Every recorder logs a request before it answers it, and the client's answer comes after
    // those answers, so by now everything this request caused has been recorded.
    Observation {
        client,
        seen: recorders.take(),
    }
}

/// Envoy never puts a loopback peer into `x-forwarded-for`: with `use_remote_address` it
/// substitutes the host's own address (`local_info.address()`). Production clients are never
/// loopback, so this is an artefact of the test bed, not a behaviour to compare. Sends `probe`
/// (a request no authorization applies to) to Envoy and returns the address it substituted, if
/// any.
pub async fn envoy_loopback_alias(
    recorders: &Recorders,
    envoy: SocketAddr,
    probe: &ClientRequest,
) -> Option<String> {
    recorders.arm(crate::recorder::Scripts::default());
    let _ = client::send(envoy, probe).await;
    let seen = recorders.take();
    let xff = seen
        .backend
        .first()?
        .headers
        .iter()
        .find(|(k, _)| k == "x-forwarded-for")
        .map(|(_, v)| v.clone())?;
    let last = xff.rsplit(',').next()?.trim().to_owned();
    (last != "127.0.0.1").then_some(last)
}

/// Rewrites Envoy's loopback substitute (see [`envoy_loopback_alias`]) back to `127.0.0.1` when
/// it is the last `x-forwarded-for` element, wherever `x-forwarded-for` was recorded.
pub fn undo_loopback_alias(obs: &mut Observation, alias: &str) {
    let fix = |v: &mut String| {
        if let Some((before, last)) = v.rsplit_once(',') {
            if last.trim() == alias {
                *v = format!("{before},127.0.0.1");
            }
        } else if v.trim() == alias {
            "127.0.0.1".clone_into(v);
        }
    };
    for r in obs.seen.backend.iter_mut().chain(obs.seen.http_authz.iter_mut()) {
        for (k, v) in &mut r.headers {
            if k == "x-forwarded-for" {
                fix(v);
            }
        }
    }
    for c in &mut obs.seen.grpc_authz {
        let Some(http) = c
            .request
            .attributes
            .as_mut()
            .and_then(|a| a.request.as_mut())
            .and_then(|r| r.http.as_mut())
        else {
            continue;
        };
        if let Some(v) = http.headers.get_mut("x-forwarded-for") {
            fix(v);
        }
        for h in http.header_map.iter_mut().flat_map(|m| m.headers.iter_mut()) {
            if h.key == "x-forwarded-for" {
                if h.raw_value.is_empty() {
                    fix(&mut h.value);
                } else {
                    let mut v = String::from_utf8_lossy(&h.raw_value).into_owned();
                    fix(&mut v);
                    h.raw_value = v.into_bytes();
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Identical,
    Listed,
    Unexplained,
}

/// One case's two observations and their differences.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub case: Case,
    pub authgate: Observation,
    pub envoy: Observation,
    pub differences: Vec<(Difference, Option<&'static Listed>)>,
}

impl Outcome {
    pub fn new(case: Case, authgate: Observation, envoy: Observation) -> Self {
        let differences = compare(&authgate, &envoy)
            .into_iter()
            .map(|d| {
                let l = explain(case.id, &d.field);
                (d, l)
            })
            .collect();
        Self {
            case,
            authgate,
            envoy,
            differences,
        }
    }

    pub fn verdict(&self) -> Verdict {
        if self.differences.is_empty() {
            Verdict::Identical
        } else if self.differences.iter().all(|(_, l)| l.is_some()) {
            Verdict::Listed
        } else {
            Verdict::Unexplained
        }
    }
}

/// Runs every case through authgate, then through Envoy (whose loopback substitute, if any,
/// is `alias`).
pub async fn run(
    recorders: &Recorders,
    authgate: SocketAddr,
    envoy: SocketAddr,
    alias: Option<&str>,
    cases: &[Case],
) -> Vec<Outcome> {
    let mut out = Vec::with_capacity(cases.len());
    for case in cases {
        let a = observe(recorders, authgate, case).await;
        let mut e = observe(recorders, envoy, case).await;
        if let Some(alias) = alias {
            undo_loopback_alias(&mut e, alias);
        }
        out.push(Outcome::new(case.clone(), a, e));
    }
    out
}

fn show(v: Option<&String>) -> &str {
    v.map_or("(absent)", String::as_str)
}

/// The per-case diffs, readable.
pub fn render(outcomes: &[Outcome]) -> String {
    let mut s = String::new();
    for o in outcomes {
        let verdict = o.verdict();
        if verdict == Verdict::Identical {
            continue;
        }
        let r = &o.case.request;
        let _ = writeln!(
            s,
            "── {} [{}] {}\n   {} {} ({}, host {})",
            o.case.id,
            if verdict == Verdict::Listed {
                "listed"
            } else {
                "UNEXPLAINED"
            },
            o.case.about,
            r.method,
            r.target,
            r.proto,
            r.authority
        );
        for (d, listed) in &o.differences {
            let _ = writeln!(s, "   {}", d.field);
            let _ = writeln!(s, "      authgate: {}", show(d.authgate.as_ref()));
            let _ = writeln!(s, "      envoy:    {}", show(d.envoy.as_ref()));
            if let Some(l) = listed {
                let _ = writeln!(s, "      listed ({}): {}", l.doc, l.reason);
            }
        }
    }
    s
}

/// Every field of both sides, for `AUTHGATE_DIFF_DUMP=1`.
pub fn dump(o: &Outcome) -> String {
    let mut s = format!("== {} — {}\n", o.case.id, o.case.about);
    for (side, obs) in [("authgate", &o.authgate), ("envoy", &o.envoy)] {
        for (k, v) in fields(obs) {
            let _ = writeln!(s, "  {side:8} {k} = {v}");
        }
    }
    s
}

/// `(identical, listed, unexplained)`.
pub fn tally(outcomes: &[Outcome]) -> (usize, usize, usize) {
    let count = |v| outcomes.iter().filter(|o| o.verdict() == v).count();
    (
        count(Verdict::Identical),
        count(Verdict::Listed),
        count(Verdict::Unexplained),
    )
}

/// `differential: N identical, M listed differences, K unexplained`.
pub fn summary_line(outcomes: &[Outcome]) -> String {
    let (n, m, k) = tally(outcomes);
    format!("differential: {n} identical, {m} listed differences, {k} unexplained")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recorder::{RecordedHttp, Recordings};

    fn with_xff(v: &str) -> Observation {
        let backend = RecordedHttp {
            method: "GET".into(),
            target: "/".into(),
            version: "HTTP/1.1".into(),
            headers: vec![("x-forwarded-for".into(), v.into())],
            body: bytes::Bytes::new(),
        };
        Observation {
            client: Err("unused".into()),
            seen: Recordings {
                backend: vec![backend],
                ..Default::default()
            },
        }
    }

    fn xff(o: &Observation) -> &str {
        &o.seen.backend[0].headers[0].1
    }

    #[test]
    fn loopback_alias_is_undone_only_as_the_last_hop() {
        for (before, after) in [
            ("192.0.2.2", "127.0.0.1"),
            ("203.0.113.7,192.0.2.2", "203.0.113.7,127.0.0.1"),
            ("192.0.2.2,203.0.113.7", "192.0.2.2,203.0.113.7"),
            ("192.0.2.20", "192.0.2.20"),
        ] {
            let mut o = with_xff(before);
            undo_loopback_alias(&mut o, "192.0.2.2");
            assert_eq!(xff(&o), after, "{before}");
        }
    }
}
