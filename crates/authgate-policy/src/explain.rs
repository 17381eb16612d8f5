//! `explain`: the decision, with every policy and rule and the field that decided it.

use std::fmt;

use crate::compiled::{Check, Recorder, Req, Role};
use crate::{DenyReason, LocalDecision, PolicyEngine, RequestAttributes, Shadow, Verdict, action_name};

/// The request as the policies saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSummary {
    pub method: String,
    /// As sent.
    pub authority: String,
    /// As `hosts` compare it (trailing dot of the host removed; case is ignored).
    pub host_as_matched: String,
    pub path: String,
    pub port: u16,
    pub source_ip: String,
    pub remote_ip: String,
    pub destination_ip: String,
    pub sni: Option<String>,
    pub principal: Option<String>,
}

/// One rule of one policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleTrace {
    pub index: usize,
    pub matched: bool,
    /// The checks made, in order. Evaluation stops at the first failing condition of an AND,
    /// so for a rule that did not match the last failing check is the one that decided.
    pub checks: Vec<Check>,
}

/// One policy that applies to the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyTrace {
    pub name: String,
    pub namespace: String,
    /// `file:line`
    pub origin: String,
    /// `CUSTOM`, `DENY`, `ALLOW`, `AUDIT`.
    pub action: &'static str,
    pub provider: Option<String>,
    pub dry_run: bool,
    /// What a match of this policy does (or why it does nothing).
    pub effect: String,
    /// Whether this policy was evaluated at all (dry-run CUSTOM/AUDIT policies are not).
    pub evaluated: bool,
    pub matched: bool,
    /// `false` when `rules` is absent or empty: the policy matches nothing.
    pub has_rules: bool,
    pub rules: Vec<RuleTrace>,
}

/// The decision for a request with its reasons; `Display` renders a report fit for a bug
/// report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub verdict: Verdict,
    pub request: RequestSummary,
    /// Policies in evaluation order: CUSTOM, DENY, ALLOW, AUDIT, then dry-run and ignored ones.
    pub policies: Vec<PolicyTrace>,
    /// Names of the providers that will be called, in order.
    pub providers: Vec<String>,
    pub notes: Vec<String>,
}

fn stage(role: &Role) -> u8 {
    match role {
        Role::BadCustom(_) | Role::Custom(_) => 0,
        Role::Deny => 1,
        Role::Allow => 2,
        Role::Audit => 3,
        Role::DryRunDeny | Role::DryRunAllow => 4,
        Role::Inert(_) => 5,
    }
}

pub(crate) fn explain(engine: &PolicyEngine, req: &RequestAttributes<'_>) -> Explanation {
    let verdict = engine.evaluate(req);
    let r = Req::new(req);
    let mut order: Vec<usize> = (0..engine.policies.len()).collect();
    order.sort_by_key(|i| engine.policies.get(*i).map_or(9, |p| stage(&p.role)));
    let mut policies = Vec::with_capacity(order.len());
    for i in order {
        let Some(p) = engine.policies.get(i) else { continue };
        let evaluated = !matches!(p.role, Role::Inert(_));
        let mut rules = Vec::with_capacity(p.rules.len());
        if evaluated {
            for (index, rule) in p.rules.iter().enumerate() {
                let mut rec = Recorder::default();
                let matched = rule.matches(&r, &mut rec);
                rules.push(RuleTrace {
                    index,
                    matched,
                    checks: rec.checks,
                });
            }
        }
        let effect = match &p.role {
            Role::Custom(rank) => format!(
                "calls ext_authz provider {:?}",
                engine.provider_names.get(*rank).map_or("?", String::as_str)
            ),
            Role::BadCustom(n) => format!(
                "denies (403) as {n:?}: provider {:?} is not defined",
                p.provider.as_deref().unwrap_or("")
            ),
            Role::Deny => "denies (403 RBAC: access denied)".into(),
            Role::Allow => "allows".into(),
            Role::Audit => "marks the access log".into(),
            Role::DryRunDeny => "dry-run: would deny; not enforced".into(),
            Role::DryRunAllow => "dry-run: would allow; not enforced".into(),
            Role::Inert(why) => format!("ignored: {why}"),
        };
        policies.push(PolicyTrace {
            name: p.name.to_string(),
            namespace: p.namespace.clone(),
            origin: p.origin.clone(),
            action: action_name(p.action),
            provider: p.provider.clone(),
            dry_run: p.dry_run,
            effect,
            evaluated,
            matched: rules.iter().any(|t| t.matched),
            has_rules: p.has_rules,
            rules,
        });
    }
    let providers = verdict
        .providers
        .iter()
        .map(|i| engine.provider_name(i).unwrap_or("?").to_owned())
        .collect();
    Explanation {
        request: RequestSummary {
            method: req.method.to_owned(),
            authority: req.authority.to_owned(),
            host_as_matched: r.authority.to_string(),
            path: req.path.to_owned(),
            port: req.port,
            source_ip: r.source_ip.to_string(),
            remote_ip: r.remote_ip.to_string(),
            destination_ip: r.destination_ip.to_string(),
            sni: r.sni.map(str::to_owned),
            principal: r.principal.map(str::to_owned),
        },
        verdict,
        policies,
        providers,
        notes: engine.notes.clone(),
    }
}

fn yes(b: bool) -> &'static str {
    if b { "MATCH" } else { "no match" }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let q = &self.request;
        writeln!(f, "request (as the policies see it)")?;
        writeln!(f, "  method          {}", q.method)?;
        writeln!(
            f,
            "  authority       {:?} (hosts compare {:?}, case-insensitive)",
            q.authority, q.host_as_matched
        )?;
        writeln!(f, "  path            {:?}", q.path)?;
        writeln!(f, "  port            {}", q.port)?;
        writeln!(f, "  source.ip       {}", q.source_ip)?;
        writeln!(f, "  remote.ip       {}", q.remote_ip)?;
        writeln!(f, "  destination.ip  {}", q.destination_ip)?;
        writeln!(f, "  sni             {}", q.sni.as_deref().unwrap_or("-"))?;
        writeln!(
            f,
            "  principal       {}",
            q.principal.as_deref().unwrap_or("- (no client certificate)")
        )?;

        writeln!(f)?;
        if self.policies.is_empty() {
            writeln!(
                f,
                "policies: none apply to this gateway (every request is allowed)"
            )?;
        } else {
            writeln!(
                f,
                "policies ({} apply; evaluated CUSTOM → DENY → ALLOW, AUDIT marks)",
                self.policies.len()
            )?;
        }
        for p in &self.policies {
            let provider = p
                .provider
                .as_deref()
                .map(|n| format!(" provider={n}"))
                .unwrap_or_default();
            let dry = if p.dry_run { " dry-run" } else { "" };
            let outcome = if !p.evaluated {
                "not evaluated"
            } else if p.matched {
                "MATCH"
            } else {
                "no match"
            };
            writeln!(
                f,
                "  {} {}/{} ({}){provider}{dry}: {outcome}",
                p.action, p.namespace, p.name, p.origin
            )?;
            writeln!(f, "      on match: {}", p.effect)?;
            if p.evaluated && !p.has_rules {
                writeln!(f, "      no rules: matches nothing")?;
            }
            for rule in &p.rules {
                writeln!(f, "      rules[{}]: {}", rule.index, yes(rule.matched))?;
                if rule.checks.is_empty() {
                    writeln!(f, "        (empty rule: matches every request)")?;
                }
                for c in &rule.checks {
                    let mark = if c.ok { "ok  " } else { "FAIL" };
                    writeln!(f, "        {mark} {}: {}", c.field, c.detail)?;
                }
            }
        }

        writeln!(f)?;
        writeln!(f, "decision")?;
        let v = &self.verdict;
        let custom_denied = matches!(
            v.local,
            LocalDecision::Deny {
                reason: DenyReason::BadCustomProvider,
                ..
            }
        );
        if custom_denied {
            writeln!(
                f,
                "  CUSTOM  no ext_authz call: a CUSTOM policy with an undefined provider matched"
            )?;
        } else if self.providers.is_empty() {
            writeln!(f, "  CUSTOM  no CUSTOM rule matched: no ext_authz call")?;
        } else {
            writeln!(
                f,
                "  CUSTOM  call ext_authz {} (in this order; the first deny answers the client)",
                self.providers
                    .iter()
                    .map(|p| format!("{p:?}"))
                    .collect::<Vec<_>>()
                    .join(", then ")
            )?;
        }
        match &v.local {
            LocalDecision::Allow => {
                let then = if self.providers.is_empty() {
                    "ALLOW"
                } else {
                    "ALLOW if every called provider allows"
                };
                writeln!(f, "  local   allow (no DENY matched; ALLOW stage passed)")?;
                writeln!(f, "  result  {then}")?;
            }
            LocalDecision::Deny { policy, reason } => {
                writeln!(
                    f,
                    "  local   deny: {reason}{}",
                    policy.as_deref().map(|p| format!(" ({p})")).unwrap_or_default()
                )?;
                let before = if self.providers.is_empty() {
                    ""
                } else {
                    " (after the providers answer; a provider's own deny is returned instead)"
                };
                writeln!(f, "  result  403 RBAC: access denied{before}")?;
                if let Some(d) = v.local.details() {
                    writeln!(f, "          response details {d}")?;
                }
            }
        }
        writeln!(
            f,
            "  audit   {}",
            if v.audit {
                "yes (an AUDIT policy matched)"
            } else {
                "no"
            }
        )?;
        let shadow = |s: &Shadow| match s {
            Shadow::NotConfigured => None,
            Shadow::NoMatch => Some("no match".to_owned()),
            Shadow::Matched(n) => Some(format!("matched {n}")),
        };
        if let Some(s) = shadow(&v.dry_run.deny) {
            writeln!(f, "  dry-run DENY   {s}")?;
        }
        if let Some(s) = shadow(&v.dry_run.allow) {
            writeln!(f, "  dry-run ALLOW  {s}")?;
        }
        if !self.notes.is_empty() {
            writeln!(f)?;
            writeln!(f, "notes")?;
            for n in &self.notes {
                writeln!(f, "  - {n}")?;
            }
        }
        Ok(())
    }
}
