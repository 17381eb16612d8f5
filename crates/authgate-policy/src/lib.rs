//! Istio `AuthorizationPolicy` for an ingress gateway: selection, webhook-equivalent
//! validation, compiled matchers, evaluation (CUSTOM → DENY → ALLOW, AUDIT marks), and
//! `explain`; plus the path, host and client-address normalization every decision rests on.
//!
//! Pure and synchronous: no I/O, no async, no locks. [`PolicyEngine::evaluate`] allocates
//! nothing in the common case.
//!
//! # How a request is decided (spec R-C4, R-B1)
//!
//! 1. **CUSTOM**: for every ext_authz provider (in provider-name order), the provider is to be
//!    called iff a rule of one of *its* CUSTOM policies matches ([`Verdict::providers`]). Several
//!    providers on one gateway work (Istio ≥ 1.30 with `PILOT_ENABLE_MULTIPLE_CUSTOM_AUTHZ_PROVIDERS`,
//!    always on here). A CUSTOM policy naming a provider that does not exist turns into a DENY
//!    policy `<name>-deny-due-to-bad-CUSTOM-action` over exactly its rules (R-C9, Istio ≥ 1.20).
//! 2. **DENY**: any matching DENY rule → 403 `RBAC: access denied`.
//! 3. **ALLOW**: with at least one ALLOW policy, a request no ALLOW rule matches → 403.
//! 4. **AUDIT** only sets [`Verdict::audit`].
//!
//! The proxy calls the providers in [`Verdict::providers`] order; the first one that denies
//! answers the client. If all allow (or none is called), [`Verdict::local`] decides.
//!
//! `istio.io/dry-run: "true"` ALLOW/DENY policies never change the decision; whether they
//! would have is in [`Verdict::dry_run`] for the access log. Dry-run CUSTOM (and AUDIT)
//! policies are ignored, with a note (R-C24).
//!
//! # Deliberate differences from Istio
//!
//! - **Strict values.** Istio's webhook accepts some values istiod later cannot convert (a bad
//!   IP or port in a DENY rule is silently dropped, widening it; in an ALLOW rule the whole rule
//!   vanishes — R-C23). authgate rejects such configurations instead, naming the field.
//! - **Slash-tolerant literal paths.** A literal `paths`/`notPaths` value treats a run of `/` in
//!   the request path as one `/`, and an exact value also matches the path with one trailing
//!   `/`. Under BASE normalization `//admin` and `/admin/.` (→ `/admin/`) would otherwise skip
//!   a rule on `/admin` (R-C21). The path itself is not rewritten.
//! - **`;` path parameters** are removed from every segment by normalization (BASE and
//!   stricter), so `/admin;x` is `/admin` for the rules, the authz service and the backend
//!   alike; under NONE a path with `;` is refused with 400.
//! - **Hosts**: one trailing dot of the authority's host is ignored (`example.com.` is
//!   `example.com`), in addition to Istio's case-insensitive comparison with the port kept.
//!   `connection.sni` also compares case-insensitively (DNS names).
//! - `principals` suffix values (`*x`) compare literally (Istio emits an unescaped regex).
//! - JWT attributes (`requestPrincipals`, `request.auth.*`) and Envoy metadata
//!   (`experimental.envoy.filters.*`) are never present: values never match, `notValues`
//!   always do — what Istio does for a request without a validated JWT.
//!
//! See `docs/policy.md` for the full account.

#![forbid(unsafe_code)]

mod compile;
mod compiled;
mod explain;
mod matcher;
mod normalize;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use authgate_config::{Action, Config};

pub use compiled::Check;
pub use explain::{Explanation, PolicyTrace, RequestSummary, RuleTrace};
pub use normalize::{NormalizedTarget, PathError, client_ip_from_headers, normalize_host, normalize_path};

use compiled::{NoTrace, Policy, Req, Role};

/// The request attributes policies look at.
#[derive(Debug, Clone, Copy)]
pub struct RequestAttributes<'a> {
    pub method: &'a str,
    /// Already normalized ([`normalize_path`]), no query, no fragment.
    pub path: &'a str,
    /// `:path` as Envoy holds it: the normalized path with its query (`request.headers[:path]`
    /// conditions read this).
    pub path_and_query: &'a str,
    /// `:authority` as sent. `hosts` compare case-insensitively, port included as Istio does
    /// (`example.com` does not match `example.com:8080`); one trailing dot of the host part is
    /// ignored before comparing.
    pub authority: &'a str,
    /// Listener (destination) port.
    pub port: u16,
    /// Direct peer (`source.ip`, `ipBlocks`).
    pub source_ip: IpAddr,
    /// Client address from XFF per `numTrustedProxies` ([`client_ip_from_headers`]);
    /// `remote.ip`, `remoteIpBlocks`.
    pub remote_ip: IpAddr,
    pub destination_ip: IpAddr,
    pub headers: &'a http::HeaderMap,
    pub sni: Option<&'a str>,
    /// Client-certificate URI SAN as presented (`spiffe://cluster.local/ns/a/sa/b`); `None`
    /// without mTLS.
    pub principal: Option<&'a str>,
}

/// A configuration problem in a policy, named by policy, origin and field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub policy: Option<String>,
    /// `file:line`
    pub origin: Option<String>,
    /// Field path inside the policy spec, e.g. `rules[0].from[0].source.principals`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.policy, &self.origin) {
            (Some(p), Some(o)) => write!(f, "policy {p:?} ({o}): ")?,
            (Some(p), None) => write!(f, "policy {p:?}: ")?,
            (None, Some(o)) => write!(f, "{o}: ")?,
            (None, None) => {}
        }
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for PolicyError {}

/// The ext_authz providers to call, as indices into `config.providers`, iterated in
/// provider-name order. A bitset over name ranks plus a shared order table: no allocation.
#[derive(Clone, Default)]
pub struct ProviderSet {
    bits: u64,
    order: Option<Arc<[u16]>>,
}

impl ProviderSet {
    pub fn is_empty(&self) -> bool {
        self.bits == 0
    }

    pub fn len(&self) -> usize {
        self.bits.count_ones() as usize
    }

    /// Indices into `config.providers`, in provider-name order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        let bits = self.bits;
        let order = self.order.as_deref().unwrap_or_default();
        (0..64usize)
            .filter(move |r| bits & (1u64 << r) != 0)
            .filter_map(move |r| order.get(r).map(|i| usize::from(*i)))
    }

    /// True if `config.providers[index]` is in the set.
    pub fn contains(&self, index: usize) -> bool {
        self.iter().any(|i| i == index)
    }
}

impl fmt::Debug for ProviderSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl PartialEq for ProviderSet {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for ProviderSet {}

/// Why the local stage denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// A DENY policy matched.
    DenyPolicy,
    /// ALLOW policies exist and none matched.
    NoAllowPolicyMatched,
    /// A CUSTOM policy whose provider does not exist matched (R-C9).
    BadCustomProvider,
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::DenyPolicy => "a DENY policy matched",
            Self::NoAllowPolicyMatched => "no ALLOW policy matched",
            Self::BadCustomProvider => "a CUSTOM policy with an undefined provider matched",
        })
    }
}

/// The decision after the CUSTOM stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalDecision {
    Allow,
    /// Reply 403 `RBAC: access denied`.
    Deny {
        /// The matching policy (for DENY, and `<policy>-deny-due-to-bad-CUSTOM-action`);
        /// `None` when no ALLOW policy matched.
        policy: Option<Arc<str>>,
        reason: DenyReason,
    },
}

impl LocalDecision {
    pub fn is_allow(&self) -> bool {
        matches!(self, Self::Allow)
    }

    /// Envoy's response-details string: `rbac_access_denied_matched_policy[<name>|none]`.
    pub fn details(&self) -> Option<String> {
        match self {
            Self::Allow => None,
            Self::Deny { policy, .. } => Some(format!(
                "rbac_access_denied_matched_policy[{}]",
                policy.as_deref().unwrap_or("none")
            )),
        }
    }
}

/// The result of one dry-run stage.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Shadow {
    /// No dry-run policy of this action applies.
    #[default]
    NotConfigured,
    NoMatch,
    /// The first matching dry-run policy.
    Matched(Arc<str>),
}

/// What the dry-run (`istio.io/dry-run`) policies would have done; never enforced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DryRun {
    pub allow: Shadow,
    pub deny: Shadow,
}

impl DryRun {
    /// True if enforcing the dry-run policies would have denied this request (Envoy's shadow
    /// engine result `denied`).
    pub fn would_deny(&self) -> bool {
        matches!(self.deny, Shadow::Matched(_)) || self.allow == Shadow::NoMatch
    }
}

/// The decision for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// ext_authz providers to call, in order; each must allow.
    pub providers: ProviderSet,
    /// Applied once every called provider allowed.
    pub local: LocalDecision,
    /// An AUDIT policy matched: mark the access log.
    pub audit: bool,
    pub dry_run: DryRun,
}

/// Compiled AuthorizationPolicies for one gateway. Immutable, `Send + Sync`.
#[derive(Debug)]
pub struct PolicyEngine {
    policies: Vec<Policy>,
    /// Indices into `policies`, per stage.
    custom_by_rank: Vec<Vec<usize>>,
    bad_custom: Vec<usize>,
    deny: Vec<usize>,
    allow: Vec<usize>,
    audit: Vec<usize>,
    dry_deny: Vec<usize>,
    dry_allow: Vec<usize>,
    /// Rank (name order) → index into `config.providers`.
    order: Arc<[u16]>,
    provider_names: Vec<String>,
    notes: Vec<String>,
}

impl PolicyEngine {
    /// Selects the policies that apply to this gateway (inline ones always; Istio ones per
    /// R-C3: selector ⊆ gateway labels, or no selector in the root or gateway namespace, or
    /// `targetRefs` naming the gateway), validates every policy like Istio's webhook, and
    /// compiles matchers. Returns all errors, not just the first.
    pub fn compile(config: &Config) -> Result<PolicyEngine, Vec<PolicyError>> {
        let mut errors = Vec::new();
        let mut notes = Vec::new();
        let gw = &config.gateway;

        if config.providers.len() > 64 {
            errors.push(PolicyError {
                policy: None,
                origin: None,
                field: "extensionProviders".into(),
                message: format!(
                    "{} ext_authz providers are defined; at most 64 are supported",
                    config.providers.len()
                ),
            });
        }
        let mut ranked: Vec<usize> = (0..config.providers.len().min(64)).collect();
        ranked.sort_by(|a, b| config.providers[*a].name.cmp(&config.providers[*b].name));
        let order: Arc<[u16]> = ranked.iter().map(|i| *i as u16).collect();
        let provider_names: Vec<String> = ranked.iter().map(|i| config.providers[*i].name.clone()).collect();
        let rank = |name: &str| provider_names.iter().position(|n| n == name);

        let mut seen: std::collections::HashMap<(String, String), String> = Default::default();
        let mut policies = Vec::new();
        for p in &config.policies {
            let ns = compile::effective_namespace(p, gw).to_owned();
            if let Some(prev) = seen.insert((ns.clone(), p.name.clone()), p.origin.to_string()) {
                errors.push(PolicyError {
                    policy: Some(p.name.clone()),
                    origin: Some(p.origin.to_string()),
                    field: "metadata.name".into(),
                    message: format!(
                        "a policy named {:?} in namespace {ns:?} is already defined at {prev}",
                        p.name
                    ),
                });
            }
            let mut ctx = compile::Ctx {
                policy: p,
                errors: &mut errors,
                notes: &mut notes,
            };
            let compiled = compile::compile_policy(&mut ctx, gw, &rank);
            match compile::applies(p, gw) {
                Ok(()) => policies.extend(compiled),
                Err(why) => notes.push(format!(
                    "policy {:?} ({}) does not apply to this gateway: {why}",
                    p.name, p.origin
                )),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }

        let mut engine = PolicyEngine {
            custom_by_rank: vec![Vec::new(); provider_names.len()],
            bad_custom: Vec::new(),
            deny: Vec::new(),
            allow: Vec::new(),
            audit: Vec::new(),
            dry_deny: Vec::new(),
            dry_allow: Vec::new(),
            order,
            provider_names,
            notes,
            policies: Vec::new(),
        };
        for (i, p) in policies.iter().enumerate() {
            match &p.role {
                Role::Custom(r) => {
                    if let Some(v) = engine.custom_by_rank.get_mut(*r) {
                        v.push(i);
                    }
                }
                Role::BadCustom(_) => engine.bad_custom.push(i),
                Role::Deny => engine.deny.push(i),
                Role::Allow => engine.allow.push(i),
                Role::Audit => engine.audit.push(i),
                Role::DryRunDeny => engine.dry_deny.push(i),
                Role::DryRunAllow => engine.dry_allow.push(i),
                Role::Inert(_) => {}
            }
        }
        engine.policies = policies;
        Ok(engine)
    }

    /// Non-fatal notes: policies that do not apply and why, undefined CUSTOM providers,
    /// ignored dry-run CUSTOM policies, attributes that never match here.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The name of `config.providers[config_index]` (as compiled).
    pub fn provider_name(&self, config_index: usize) -> Option<&str> {
        self.order
            .iter()
            .position(|i| usize::from(*i) == config_index)
            .and_then(|r| self.provider_names.get(r))
            .map(String::as_str)
    }

    /// Number of policies that apply to this gateway.
    pub fn len(&self) -> usize {
        self.policies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// True when no policy can affect any request (no provider is ever called, nothing is
    /// denied): the proxy may skip evaluation.
    pub fn is_allow_all(&self) -> bool {
        self.custom_by_rank.iter().all(Vec::is_empty)
            && self.bad_custom.is_empty()
            && self.deny.is_empty()
            && self.allow.is_empty()
            && self.audit.is_empty()
            && self.dry_deny.is_empty()
            && self.dry_allow.is_empty()
    }

    fn first_match(&self, ids: &[usize], r: &Req<'_>) -> Option<&Policy> {
        ids.iter()
            .filter_map(|i| self.policies.get(*i))
            .find(|p| p.matches(r, &mut NoTrace))
    }

    /// Decides a request. Zero allocations in the common case (an `Arc` is cloned, not
    /// allocated, when a provider is called or a policy name is reported).
    pub fn evaluate(&self, req: &RequestAttributes<'_>) -> Verdict {
        let r = Req::new(req);
        let mut providers = ProviderSet::default();
        let mut local = LocalDecision::Allow;

        // CUSTOM (R-B2/B3, R-C8, R-C9).
        if let Some(p) = self.first_match(&self.bad_custom, &r) {
            let name = match &p.role {
                Role::BadCustom(n) => n.clone(),
                _ => p.name.clone(),
            };
            local = LocalDecision::Deny {
                policy: Some(name),
                reason: DenyReason::BadCustomProvider,
            };
        } else {
            for (rank, ids) in self.custom_by_rank.iter().enumerate() {
                if self.first_match(ids, &r).is_some() {
                    providers.bits |= 1u64 << rank;
                }
            }
            if providers.bits != 0 {
                providers.order = Some(self.order.clone());
            }
        }
        // DENY.
        if local.is_allow()
            && let Some(p) = self.first_match(&self.deny, &r)
        {
            local = LocalDecision::Deny {
                policy: Some(p.name.clone()),
                reason: DenyReason::DenyPolicy,
            };
        }
        // ALLOW.
        if local.is_allow() && !self.allow.is_empty() && self.first_match(&self.allow, &r).is_none() {
            local = LocalDecision::Deny {
                policy: None,
                reason: DenyReason::NoAllowPolicyMatched,
            };
        }
        let audit = self.first_match(&self.audit, &r).is_some();
        let shadow = |ids: &[usize]| {
            if ids.is_empty() {
                Shadow::NotConfigured
            } else {
                self.first_match(ids, &r)
                    .map_or(Shadow::NoMatch, |p| Shadow::Matched(p.name.clone()))
            }
        };
        let dry_run = DryRun {
            allow: shadow(&self.dry_allow),
            deny: shadow(&self.dry_deny),
        };
        Verdict {
            providers,
            local,
            audit,
            dry_run,
        }
    }

    /// The same decision as [`evaluate`](Self::evaluate), plus, per policy and rule, which
    /// field decided: for `authgate explain`.
    pub fn explain(&self, req: &RequestAttributes<'_>) -> Explanation {
        explain::explain(self, req)
    }
}

/// Names for actions as Istio writes them.
pub(crate) fn action_name(a: Action) -> &'static str {
    match a {
        Action::Allow => "ALLOW",
        Action::Deny => "DENY",
        Action::Audit => "AUDIT",
        Action::Custom => "CUSTOM",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<PolicyEngine>();
        check::<Verdict>();
        check::<Explanation>();
    }

    #[test]
    fn policy_error_display() {
        let e = PolicyError {
            policy: Some("ext-authz".into()),
            origin: Some("gw.yaml:12".into()),
            field: "rules[0].from[0].source.principals".into(),
            message: "not allowed in a CUSTOM policy".into(),
        };
        assert_eq!(
            e.to_string(),
            "policy \"ext-authz\" (gw.yaml:12): rules[0].from[0].source.principals: not allowed in a CUSTOM policy"
        );
    }
}
