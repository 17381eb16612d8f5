//! Intentional differences from Envoy, mirroring `docs/compatibility.md`. A difference matched
//! here is reported as "listed"; anything else is "unexplained" and fails the suite.
//!
//! Only differences that are deliberate belong here (a safer default, a documented choice).
//! Bugs stay unexplained until they are fixed.

/// One documented difference: a case-id pattern and a field pattern (`*` wildcards, see
/// [`crate::compare::glob`]) and why it is intentional.
#[derive(Debug, Clone, Copy)]
pub struct Listed {
    pub case: &'static str,
    pub field: &'static str,
    /// The `docs/compatibility.md` section that explains it.
    pub doc: &'static str,
    pub reason: &'static str,
}

/// The table. Keep it in the same order as `docs/compatibility.md`.
pub static LISTED: &[Listed] = &[
    Listed {
        case: "double-slash-not-merged",
        field: "*",
        doc: "Slash-tolerant literal paths",
        reason: "a CUSTOM rule on `/g-basic/*` also triggers for `//g-basic/x` (Istio R-C21 bypass closed); \
                 Envoy skips the check and forwards",
    },
    Listed {
        case: "path-parameters",
        field: "*",
        doc: "Path parameters are removed",
        reason: "`;params` are stripped from every segment (Istio #27409); Envoy 1.40 keeps them on \
                 ordinary segments",
    },
    Listed {
        case: "authority-trailing-dot",
        field: "*",
        doc: "A trailing dot in the authority",
        reason: "`gw.example.com.` is routed and matched as `gw.example.com`; Envoy has no virtual host \
                 for it and answers 404",
    },
    Listed {
        case: "g-invalid-header-*",
        field: "client.*",
        doc: "Invalid mutations are refused with 500",
        reason: "an invalid header from the authz service is rejected before forwarding (500, empty \
                 body, failOpen or not); Envoy without validate_mutations applies it and its codec \
                 fails the upstream request with 503",
    },
];

/// The entry explaining `field` of case `case`, if any.
pub fn explain(case: &str, field: &str) -> Option<&'static Listed> {
    LISTED
        .iter()
        .find(|l| crate::compare::glob(l.case, case) && crate::compare::glob(l.field, field))
}
