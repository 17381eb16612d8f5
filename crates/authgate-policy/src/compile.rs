//! Selection (which policies apply to this gateway), webhook-equivalent validation, and
//! compilation of `authgate_config::Policy` into matchers.

use std::collections::BTreeMap;

use authgate_config::model::{Condition, Operation, Source};
use authgate_config::{Action, GatewayIdentity, Policy as ConfigPolicy};
use http::HeaderName;

use crate::PolicyError;
use crate::compiled::{Attr, Field, HeaderSource, Policy, Role, Rule};
use crate::matcher::{
    IpList, NamespaceGlob, PathPattern, PrincipalPattern, SPIFFE, ServiceAccount, StrPattern,
};

/// Istio's CRD limits.
const MAX_RULES: usize = 512;
const MAX_FROM: usize = 512;
const MAX_TARGET_REFS: usize = 16;
const MAX_SERVICE_ACCOUNTS: usize = 16;

pub(crate) const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// Collects the errors and notes of one policy.
pub(crate) struct Ctx<'a> {
    pub policy: &'a ConfigPolicy,
    pub errors: &'a mut Vec<PolicyError>,
    pub notes: &'a mut Vec<String>,
}

impl Ctx<'_> {
    fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(PolicyError {
            policy: Some(self.policy.name.clone()),
            origin: Some(self.policy.origin.to_string()),
            field: field.into(),
            message: message.into(),
        });
    }

    fn note(&mut self, message: impl AsRef<str>) {
        self.notes.push(format!(
            "policy {:?} ({}): {}",
            self.policy.name,
            self.policy.origin,
            message.as_ref()
        ));
    }
}

/// The namespace a policy lives in; a manifest without one is taken to be in the gateway's.
pub(crate) fn effective_namespace<'a>(p: &'a ConfigPolicy, gw: &'a GatewayIdentity) -> &'a str {
    if p.namespace.is_empty() {
        &gw.namespace
    } else {
        &p.namespace
    }
}

/// R-C3: does this policy apply to the gateway? `Err` says why not.
pub(crate) fn applies(p: &ConfigPolicy, gw: &GatewayIdentity) -> Result<(), String> {
    if p.inline {
        return Ok(());
    }
    let ns = effective_namespace(p, gw);
    let refs: Vec<_> = p
        .spec
        .target_ref
        .iter()
        .chain(p.spec.target_refs.iter().flatten())
        .collect();
    if !refs.is_empty() {
        let Some(gw_name) = gw.name.as_deref() else {
            return Err(
                "it has targetRefs, which a classic (selector-based) gateway ignores; set \
                        gateway.name to attach policies to a Gateway API gateway"
                    .into(),
            );
        };
        if ns != gw.namespace {
            return Err(format!(
                "its targetRefs can only name a Gateway in its own namespace {ns:?}, and this \
                 gateway is in {:?}",
                gw.namespace
            ));
        }
        let names_us = refs.iter().any(|r| {
            r.group.as_deref() == Some("gateway.networking.k8s.io")
                && r.kind.as_deref() == Some("Gateway")
                && r.name.as_deref() == Some(gw_name)
                && r.namespace
                    .as_deref()
                    .is_none_or(|n| n.is_empty() || n == gw.namespace)
        });
        return if names_us {
            Ok(())
        } else {
            Err(format!("its targetRefs do not name Gateway {gw_name:?}"))
        };
    }
    if ns != gw.root_namespace && ns != gw.namespace {
        return Err(format!(
            "its namespace {ns:?} is neither the root namespace {:?} nor the gateway's {:?}",
            gw.root_namespace, gw.namespace
        ));
    }
    if let Some(sel) = &p.spec.selector {
        let labels = gateway_labels(gw);
        let missing: Vec<String> = sel
            .match_labels
            .iter()
            .filter(|(k, v)| labels.get(k.as_str()) != Some(v))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "its selector needs {} which the gateway's labels {} lack",
                missing.join(","),
                show_labels(&labels)
            ));
        }
    }
    Ok(())
}

/// The gateway's labels, plus the Gateway API name label a managed gateway pod carries.
pub(crate) fn gateway_labels(gw: &GatewayIdentity) -> BTreeMap<String, String> {
    let mut labels = gw.labels.clone();
    if let Some(n) = &gw.name {
        labels
            .entry(GATEWAY_NAME_LABEL.to_owned())
            .or_insert_with(|| n.clone());
    }
    labels
}

fn show_labels(l: &BTreeMap<String, String>) -> String {
    let v: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", v.join(","))
}

/// Go's `strconv.ParseBool`, for the `istio.io/dry-run` annotation.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Validates one policy like Istio's webhook (`ValidateAuthorizationPolicy`) and compiles it.
/// Returns `None` when it has errors (they are in `ctx.errors`).
pub(crate) fn compile_policy(
    ctx: &mut Ctx<'_>,
    gw: &GatewayIdentity,
    provider_rank: &dyn Fn(&str) -> Option<usize>,
) -> Option<Policy> {
    let p = ctx.policy;
    let errors_before = ctx.errors.len();
    let spec = &p.spec;
    let action = p.action();
    let ns = effective_namespace(p, gw).to_owned();

    // Selector / targetRefs.
    let n_kinds = usize::from(spec.selector.is_some())
        + usize::from(spec.target_ref.is_some())
        + usize::from(spec.target_refs.as_ref().is_some_and(|r| !r.is_empty()));
    if n_kinds > 1 {
        ctx.error(
            "selector",
            "only one of targetRefs or workloadSelector can be set",
        );
    }
    if let Some(sel) = &spec.selector {
        for (k, v) in &sel.match_labels {
            if k.is_empty() {
                ctx.error("selector.matchLabels", "empty key not allowed");
            }
            if k.contains('*') || v.contains('*') {
                ctx.error(
                    format!("selector.matchLabels.{k}"),
                    "wildcard not allowed in label key match",
                );
            }
        }
    }
    if let Some(refs) = &spec.target_refs
        && refs.len() > MAX_TARGET_REFS
    {
        ctx.error(
            "targetRefs",
            format!("at most {MAX_TARGET_REFS} targetRefs are allowed"),
        );
    }
    let all_refs = spec.target_ref.iter().map(|r| ("targetRef".to_owned(), r)).chain(
        spec.target_refs
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, r)| (format!("targetRefs[{i}]"), r)),
    );
    for (field, r) in all_refs {
        if r.name.as_deref().is_none_or(str::is_empty) {
            ctx.error(format!("{field}.name"), "must be set");
        }
        match r.kind.as_deref() {
            Some("Gateway" | "GatewayClass" | "Service" | "ServiceEntry") => {}
            Some(k) => ctx.error(
                format!("{field}.kind"),
                format!("{k:?} is not one of Gateway, GatewayClass, Service, ServiceEntry"),
            ),
            None => ctx.error(format!("{field}.kind"), "must be set"),
        }
    }

    // Action-level rules (R-C5, R-C7).
    let rules_present = spec.rules.as_ref().is_some_and(|r| !r.is_empty());
    match action {
        Action::Custom => {
            if !rules_present {
                ctx.error(
                    "rules",
                    "CUSTOM action without `rules` is meaningless as it will never be triggered, \
                     add an empty rule `{}` if you want it be triggered for every request",
                );
            }
            if spec.provider.as_ref().is_none_or(|pr| pr.name.is_empty()) {
                ctx.error("provider.name", "must not be empty in a CUSTOM policy");
            }
        }
        Action::Deny if !rules_present => ctx.error(
            "rules",
            "DENY action without `rules` is meaningless as it will never be triggered, add an \
             empty rule `{}` if you want it be triggered for every request",
        ),
        _ => {}
    }
    if spec.provider.is_some() && action != Action::Custom {
        ctx.error(
            "provider",
            format!("`provider` must not be set with a non-CUSTOM action, found {action:?}"),
        );
    }
    let rules = spec.rules.as_deref().unwrap_or_default();
    if rules.len() > MAX_RULES {
        ctx.error("rules", format!("at most {MAX_RULES} rules are allowed"));
    }

    let mut compiled = Vec::with_capacity(rules.len());
    for (i, rule) in rules.iter().enumerate() {
        compiled.push(compile_rule(ctx, action, &ns, i, rule));
    }

    // Dry run (R-C24).
    let dry_run = match p.annotations.get("istio.io/dry-run") {
        None => false,
        Some(v) => parse_go_bool(v).unwrap_or_else(|| {
            ctx.note(format!(
                "annotation istio.io/dry-run={v:?} is not a boolean; treated as false, as Istio does"
            ));
            false
        }),
    };
    if p.inline && spec.selector.is_some() {
        ctx.note("has a selector, which an inline policy does not need: inline policies always apply");
    }

    let provider = spec.provider.as_ref().map(|pr| pr.name.clone());
    let role = match (action, dry_run) {
        (Action::Custom, true) => {
            ctx.note(
                "istio.io/dry-run is not supported for CUSTOM policies; this policy is ignored \
                 (never triggers ext_authz, never denies)",
            );
            Role::Inert("dry-run CUSTOM policies are ignored")
        }
        (Action::Custom, false) => {
            let name = provider.clone().unwrap_or_default();
            match provider_rank(&name) {
                Some(rank) => Role::Custom(rank),
                None => {
                    let deny = format!("{}-deny-due-to-bad-CUSTOM-action", p.name);
                    if !name.is_empty() {
                        ctx.note(format!(
                            "failed to process CUSTOM action: extension provider {name:?} is not \
                             defined; requests matching its rules are denied (403 RBAC: access \
                             denied) as policy {deny:?}"
                        ));
                    }
                    Role::BadCustom(deny.into())
                }
            }
        }
        (Action::Deny, false) => Role::Deny,
        (Action::Deny, true) => Role::DryRunDeny,
        (Action::Allow, false) => Role::Allow,
        (Action::Allow, true) => Role::DryRunAllow,
        (Action::Audit, false) => Role::Audit,
        (Action::Audit, true) => {
            ctx.note("istio.io/dry-run on an AUDIT policy: it marks nothing");
            Role::Inert("dry-run AUDIT policies are ignored")
        }
    };

    if ctx.errors.len() > errors_before {
        return None;
    }
    Some(Policy {
        name: p.name.as_str().into(),
        namespace: ns,
        origin: p.origin.to_string(),
        action,
        provider,
        dry_run,
        role,
        has_rules: rules_present,
        rules: compiled,
    })
}

fn compile_rule(
    ctx: &mut Ctx<'_>,
    action: Action,
    ns: &str,
    i: usize,
    rule: &authgate_config::model::Rule,
) -> Rule {
    let rp = format!("rules[{i}]");
    let mut out = Rule::default();

    if let Some(from) = &rule.from {
        if from.is_empty() {
            ctx.error(
                format!("{rp}.from"),
                "`from` must not be empty (omit it to match any source)",
            );
        }
        if from.len() > MAX_FROM {
            ctx.error(
                format!("{rp}.from"),
                format!("at most {MAX_FROM} entries are allowed"),
            );
        }
        for (j, f) in from.iter().enumerate() {
            let fp = format!("from[{j}].source");
            match &f.source {
                None => ctx.error(format!("{rp}.{fp}"), "`from.source` must not be nil"),
                Some(src) => out.from.push(compile_source(ctx, action, ns, &rp, &fp, src)),
            }
        }
    }
    if let Some(to) = &rule.to {
        if to.is_empty() {
            ctx.error(
                format!("{rp}.to"),
                "`to` must not be empty (omit it to match any operation)",
            );
        }
        for (j, t) in to.iter().enumerate() {
            let op = format!("to[{j}].operation");
            match &t.operation {
                None => ctx.error(format!("{rp}.{op}"), "`to.operation` must not be nil"),
                Some(o) => out.to.push(compile_operation(ctx, &rp, &op, o)),
            }
        }
    }
    for (j, c) in rule.when.iter().flatten().enumerate() {
        compile_condition(ctx, action, ns, &rp, j, c, &mut out.when);
    }
    out
}

/// Checks the values of one list field: no empty strings (R-C12).
fn non_empty_values(ctx: &mut Ctx<'_>, field: &str, values: &[String]) -> bool {
    let mut ok = true;
    for (k, v) in values.iter().enumerate() {
        if v.is_empty() {
            ctx.error(format!("{field}[{k}]"), "empty value not allowed");
            ok = false;
        }
    }
    ok
}

/// A set list field (`Some` and non-empty); Istio treats an empty list as unset.
fn set(v: &Option<Vec<String>>) -> Option<&[String]> {
    v.as_deref().filter(|v| !v.is_empty())
}

fn compile_source(ctx: &mut Ctx<'_>, action: Action, ns: &str, rp: &str, fp: &str, s: &Source) -> Vec<Field> {
    let mut fields = Vec::new();
    let at = |name: &str| format!("{fp}.{name}");
    let full = |name: &str| format!("{rp}.{fp}.{name}");

    let lists: [(&str, &Option<Vec<String>>); 12] = [
        ("ipBlocks", &s.ip_blocks),
        ("notIpBlocks", &s.not_ip_blocks),
        ("remoteIpBlocks", &s.remote_ip_blocks),
        ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
        ("principals", &s.principals),
        ("notPrincipals", &s.not_principals),
        ("requestPrincipals", &s.request_principals),
        ("notRequestPrincipals", &s.not_request_principals),
        ("namespaces", &s.namespaces),
        ("notNamespaces", &s.not_namespaces),
        ("serviceAccounts", &s.service_accounts),
        ("notServiceAccounts", &s.not_service_accounts),
    ];
    if lists.iter().all(|(_, v)| set(v).is_none()) {
        ctx.error(
            full("").trim_end_matches('.').to_owned(),
            "`from.source` must not be empty",
        );
        return fields;
    }
    let identity = set(&s.principals).is_some()
        || set(&s.not_principals).is_some()
        || set(&s.namespaces).is_some()
        || set(&s.not_namespaces).is_some();
    let sas = set(&s.service_accounts).is_some() || set(&s.not_service_accounts).is_some();
    if identity && sas {
        ctx.error(
            full("serviceAccounts"),
            "cannot set serviceAccounts with namespaces or principals",
        );
    }

    for (name, values) in lists {
        let Some(values) = set(values) else { continue };
        let negate = name.starts_with("not");
        let field = full(name);
        if action == Action::Custom
            && matches!(
                name,
                "principals"
                    | "notPrincipals"
                    | "requestPrincipals"
                    | "notRequestPrincipals"
                    | "namespaces"
                    | "notNamespaces"
                    | "serviceAccounts"
                    | "notServiceAccounts"
            )
        {
            ctx.error(
                &field,
                "not allowed in a CUSTOM policy (not supported with the CUSTOM action)",
            );
            continue;
        }
        if !non_empty_values(ctx, &field, values) {
            continue;
        }
        let attr = match name {
            "ipBlocks" | "notIpBlocks" => ip_list(ctx, &field, values).map(Attr::SourceIp),
            "remoteIpBlocks" | "notRemoteIpBlocks" => ip_list(ctx, &field, values).map(Attr::RemoteIp),
            "principals" | "notPrincipals" => {
                principal_notes(ctx, &field, values);
                Some(Attr::Principal(
                    values.iter().map(|v| PrincipalPattern::parse(v)).collect(),
                ))
            }
            "requestPrincipals" | "notRequestPrincipals" => {
                ctx.note(format!(
                    "{field}: authgate does not validate JWTs (no RequestAuthentication), so request \
                     principals are never present: values never match, notValues always do"
                ));
                Some(Attr::Absent("request principal (JWT)"))
            }
            "namespaces" | "notNamespaces" => Some(Attr::Namespace(
                values.iter().map(|v| NamespaceGlob::new(v)).collect(),
            )),
            _ => service_accounts(ctx, &field, ns, values).map(Attr::ServiceAccount),
        };
        if let Some(attr) = attr {
            fields.push(Field::new(at(name), negate, attr, values));
        }
    }
    fields
}

fn principal_notes(ctx: &mut Ctx<'_>, field: &str, values: &[String]) {
    if values.iter().any(|v| v.starts_with(SPIFFE)) {
        ctx.note(format!(
            "{field}: Istio prepends spiffe:// to principals; a value that already starts with \
             spiffe:// only matches spiffe://spiffe://... (write cluster.local/ns/NS/sa/SA)"
        ));
    }
}

fn ip_list(ctx: &mut Ctx<'_>, field: &str, values: &[String]) -> Option<IpList> {
    let mut nets = Vec::with_capacity(values.len());
    let mut ok = true;
    for (k, v) in values.iter().enumerate() {
        match IpList::parse_one(v) {
            Ok(n) => nets.push(n),
            Err(m) => {
                ctx.error(format!("{field}[{k}]"), m);
                ok = false;
            }
        }
    }
    ok.then_some(IpList(nets))
}

fn ports(ctx: &mut Ctx<'_>, field: &str, values: &[String]) -> Option<Vec<u16>> {
    let mut out = Vec::with_capacity(values.len());
    let mut ok = true;
    for (k, v) in values.iter().enumerate() {
        // Go's strconv.ParseUint(v, 10, 32) then <= 65535.
        match v.parse::<u32>() {
            Ok(p) if v.bytes().all(|b| b.is_ascii_digit()) && p <= 65535 => out.push(p as u16),
            _ => {
                ctx.error(
                    format!("{field}[{k}]"),
                    format!("bad port ({v}): not an integer in 0..65535"),
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn service_accounts(
    ctx: &mut Ctx<'_>,
    field: &str,
    ns: &str,
    values: &[String],
) -> Option<Vec<ServiceAccount>> {
    if values.len() > MAX_SERVICE_ACCOUNTS {
        ctx.error(
            field,
            format!("at most {MAX_SERVICE_ACCOUNTS} service accounts are allowed"),
        );
        return None;
    }
    let mut ok = true;
    for (k, v) in values.iter().enumerate() {
        let parts: Vec<&str> = v.split('/').collect();
        let valid = parts.len() <= 2
            && parts.iter().all(|p| {
                !p.is_empty()
                    && p.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            });
        if !valid {
            ctx.error(
                format!("{field}[{k}]"),
                format!(
                    "{v:?} must be <name> or <namespace>/<name> (lower-case DNS names; wildcards are \
                     not supported)"
                ),
            );
            ok = false;
        }
    }
    ok.then(|| values.iter().map(|v| ServiceAccount::new(v, ns)).collect())
}

fn compile_operation(ctx: &mut Ctx<'_>, rp: &str, op: &str, o: &Operation) -> Vec<Field> {
    let mut fields = Vec::new();
    let lists: [(&str, &Option<Vec<String>>); 8] = [
        ("hosts", &o.hosts),
        ("notHosts", &o.not_hosts),
        ("ports", &o.ports),
        ("notPorts", &o.not_ports),
        ("methods", &o.methods),
        ("notMethods", &o.not_methods),
        ("paths", &o.paths),
        ("notPaths", &o.not_paths),
    ];
    if lists.iter().all(|(_, v)| set(v).is_none()) {
        ctx.error(format!("{rp}.{op}"), "`to.operation` must not be empty");
        return fields;
    }
    for (name, values) in lists {
        let Some(values) = set(values) else { continue };
        let field = format!("{rp}.{op}.{name}");
        if !non_empty_values(ctx, &field, values) {
            continue;
        }
        let attr = match name {
            "hosts" | "notHosts" => {
                // Compared with the authority lower-cased and without one trailing dot; do the
                // same to the values so `Example.com.` still means example.com.
                Some(Attr::Host(
                    values.iter().map(|v| StrPattern::parse(&host_value(v))).collect(),
                ))
            }
            "ports" | "notPorts" => ports(ctx, &field, values).map(Attr::Port),
            "methods" | "notMethods" => Some(Attr::Method(
                values.iter().map(|v| StrPattern::parse(v)).collect(),
            )),
            _ => {
                let mut pats = Vec::with_capacity(values.len());
                let mut ok = true;
                for (k, v) in values.iter().enumerate() {
                    match PathPattern::parse(v) {
                        Ok(p) => pats.push(p),
                        Err(m) => {
                            ctx.error(format!("{field}[{k}]"), m);
                            ok = false;
                        }
                    }
                    if !v.starts_with('/') && !v.starts_with('*') {
                        ctx.note(format!(
                            "{field}[{k}]: {v:?} does not start with '/' or '*', so no request path \
                             can equal it"
                        ));
                    }
                    if v.contains('?') || v.contains('#') {
                        ctx.note(format!(
                            "{field}[{k}]: {v:?} contains '?' or '#', but paths are matched without \
                             query and fragment"
                        ));
                    }
                }
                ok.then_some(Attr::Path(pats))
            }
        };
        if let Some(attr) = attr {
            fields.push(Field::new(
                format!("{op}.{name}"),
                name.starts_with("not"),
                attr,
                values,
            ));
        }
    }
    fields
}

/// A `hosts` value as compared: the host part without one trailing dot.
fn host_value(v: &str) -> String {
    let (host, port) = crate::normalize::split_authority(v);
    match (host.strip_suffix('.'), port) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) if !h.is_empty() => h.to_owned(),
        _ => v.to_owned(),
    }
}

/// `a[b]` with a non-empty `b` (Istio's `validateMapKey`); returns `b`.
fn map_key<'k>(key: &'k str, prefix: &str) -> Option<&'k str> {
    key.strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('['))
        .and_then(|r| r.strip_suffix(']'))
        .filter(|n| !n.is_empty())
}

fn compile_condition(
    ctx: &mut Ctx<'_>,
    action: Action,
    ns: &str,
    rp: &str,
    j: usize,
    c: &Condition,
    out: &mut Vec<Field>,
) {
    let cp = format!("when[{j}]");
    let key = c.key.as_str();
    if key.is_empty() {
        ctx.error(format!("{rp}.{cp}.key"), "`key` must not be empty");
        return;
    }
    let values = set(&c.values);
    let not_values = set(&c.not_values);
    if values.is_none() && not_values.is_none() {
        ctx.error(
            format!("{rp}.{cp}"),
            format!("at least one of `values` or `notValues` must be set for key {key}"),
        );
        return;
    }
    if action == Action::Custom
        && (matches!(
            key,
            "source.namespace" | "source.principal" | "source.serviceAccount"
        ) || key.starts_with("request.auth."))
    {
        ctx.error(
            format!("{rp}.{cp}.key"),
            format!("{key} is not allowed in a CUSTOM policy (not supported with the CUSTOM action)"),
        );
        return;
    }
    for (list, negate, lname) in [(values, false, "values"), (not_values, true, "notValues")] {
        let Some(vals) = list else { continue };
        let field = format!("{rp}.{cp}.{lname}");
        if !non_empty_values(ctx, &field, vals) {
            continue;
        }
        let attr = match condition_attr(ctx, key, ns, &field, vals) {
            Ok(a) => a,
            Err(m) => {
                ctx.error(format!("{rp}.{cp}.key"), m);
                return;
            }
        };
        if let Some(attr) = attr {
            out.push(Field::new(format!("{cp}.{lname}"), negate, attr, vals));
        }
    }
}

/// Istio's `ValidateAttribute` plus the matcher for a `when` key. `Err` = a key error;
/// `Ok(None)` = a value error (already reported).
fn condition_attr(
    ctx: &mut Ctx<'_>,
    key: &str,
    ns: &str,
    field: &str,
    vals: &[String],
) -> Result<Option<Attr>, String> {
    let strs = || vals.iter().map(|v| StrPattern::parse(v)).collect::<Vec<_>>();
    Ok(match key {
        "source.ip" => ip_list(ctx, field, vals).map(Attr::SourceIp),
        "remote.ip" => ip_list(ctx, field, vals).map(Attr::RemoteIp),
        "destination.ip" => ip_list(ctx, field, vals).map(Attr::DestinationIp),
        "destination.port" => ports(ctx, field, vals).map(Attr::Port),
        "connection.sni" => Some(Attr::Sni(strs())),
        "source.principal" => {
            principal_notes(ctx, field, vals);
            Some(Attr::Principal(
                vals.iter().map(|v| PrincipalPattern::parse(v)).collect(),
            ))
        }
        "source.namespace" => Some(Attr::Namespace(
            vals.iter().map(|v| NamespaceGlob::new(v)).collect(),
        )),
        "source.serviceAccount" => service_accounts(ctx, field, ns, vals).map(Attr::ServiceAccount),
        "request.auth.principal" | "request.auth.audiences" | "request.auth.presenter" => {
            absent_note(ctx, key);
            Some(Attr::Absent("JWT claims"))
        }
        "destination.namespace" => {
            return Err(format!("attribute {key} is replaced by the metadata.namespace"));
        }
        "destination.name" | "destination.user" => {
            return Err(format!("deprecated attribute {key}: only supported in v1alpha1"));
        }
        k if k.starts_with("destination.labels") => {
            return Err(format!("attribute {k} is replaced by the workload selector"));
        }
        k if k.starts_with("request.auth.claims") => {
            map_key(k, "request.auth.claims")
                .ok_or_else(|| format!("bad key ({k}): should have format a[b]"))?;
            absent_note(ctx, k);
            Some(Attr::Absent("JWT claims"))
        }
        k if k.starts_with("experimental.envoy.filters.") => {
            if !(k.ends_with(']') && k.find('[').is_some_and(|i| i + 2 < k.len())) {
                return Err(format!("bad key ({k}): should have format a[b]"));
            }
            ctx.note(format!(
                "{field}: {k} reads Envoy dynamic metadata, which authgate does not have: values \
                 never match, notValues always do"
            ));
            Some(Attr::Absent("Envoy dynamic metadata"))
        }
        k if k.starts_with("request.headers") => {
            let name = map_key(k, "request.headers")
                .ok_or_else(|| format!("bad key ({k}): should have format a[b]"))?;
            let src = match name.to_ascii_lowercase().as_str() {
                ":method" => HeaderSource::Method,
                ":path" => HeaderSource::Path,
                ":authority" | "host" => HeaderSource::Authority,
                n if n.starts_with(':') => {
                    return Err(format!(
                        "pseudo-header {name} is not supported (use :method, :path or :authority)"
                    ));
                }
                _ => HeaderSource::Name(
                    HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| format!("{name:?} is not a valid HTTP header name"))?,
                ),
            };
            Some(Attr::Header(src, strs()))
        }
        k => return Err(format!("unknown attribute: {k}")),
    })
}

fn absent_note(ctx: &mut Ctx<'_>, key: &str) {
    ctx.note(format!(
        "{key}: authgate does not validate JWTs (no RequestAuthentication), so this attribute is \
         never present: values never match, notValues always do"
    ));
}
