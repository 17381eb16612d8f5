//! Issue 4's bypass list against the seed policy (CUSTOM on /productpage), through
//! normalization and evaluation, in every normalization mode: each attempt is either refused
//! with 400 or reaches the ext_authz provider with the normalized path — never the backend
//! unchecked. Also the examples/istio manifests end to end.

mod common;

use std::path::Path;

use authgate_config::{EscapedSlashes, NormalizationMode, PathNormalization};
use authgate_policy::{PolicyEngine, normalize_path};
use common::get;

const MODES: [NormalizationMode; 4] = [
    NormalizationMode::None,
    NormalizationMode::Base,
    NormalizationMode::MergeSlashes,
    NormalizationMode::DecodeAndMergeSlashes,
];

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// 400 from normalization.
    Refused,
    /// The provider is called with this path.
    Checked(String),
    /// Reaches the backend without a check.
    Unchecked(String),
}

fn outcome(engine: &PolicyEngine, target: &str, host: &str, cfg: PathNormalization) -> Outcome {
    let Ok(t) = normalize_path(target, cfg) else {
        return Outcome::Refused;
    };
    let req = get(&t.path).host(host);
    let v = engine.evaluate(&req.attrs());
    if v.providers.is_empty() {
        Outcome::Unchecked(t.path_and_query().into_owned())
    } else {
        Outcome::Checked(t.path_and_query().into_owned())
    }
}

fn seed_engine() -> PolicyEngine {
    let gw = "staticHosts:\n  ext-authz.default.svc.cluster.local: 127.0.0.1\n  ext-authz.foo.svc.cluster.local: 127.0.0.1\n";
    let istio = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/istio");
    let config =
        authgate_config::parse(gw, "gw.yaml", Path::new("."), &[istio]).unwrap_or_else(|e| panic!("{e}"));
    PolicyEngine::compile(&config).unwrap_or_else(|e| panic!("{e:?}"))
}

#[test]
fn seed_bypass_attempts_never_reach_the_backend_unchecked() {
    let engine = seed_engine();
    let host = "bookinfo.example.com";
    for mode in MODES {
        for slashes in [
            EscapedSlashes::Keep,
            EscapedSlashes::Reject,
            EscapedSlashes::Unescape,
        ] {
            let cfg = PathNormalization {
                mode,
                escaped_slashes: slashes,
            };
            let mut attempts = vec![
                "/productpage",
                "//productpage",
                "/productpage/",
                "/productpage;x=1",
                "/productpage#frag",
                "/productpage?x=1#frag",
                "/productpage/;x",
                "///productpage//",
            ];
            if mode != NormalizationMode::None {
                // NONE keeps dot segments and %2e by definition (R-C20); every other mode
                // resolves them.
                attempts.extend([
                    "/public/../productpage",
                    "/public/%2e%2e/productpage",
                    "/public/%2E%2e/productpage",
                    "/productpage/.",
                    "/public/..;/productpage",
                    "/public\\..\\productpage",
                    "/%70roductpage",
                ]);
            }
            for a in attempts {
                let o = outcome(&engine, a, host, cfg);
                assert!(
                    !matches!(o, Outcome::Unchecked(_)),
                    "{mode:?}/{slashes:?}: {a} reached the backend unchecked: {o:?}"
                );
                if let Outcome::Checked(p) = &o {
                    assert!(
                        !p.contains('#') && !p.contains(';') && !p.contains(".."),
                        "{a} → {p}"
                    );
                }
            }
            // `%2F` in the protected path: refused under REJECT; otherwise a different
            // resource (`/productpage%2Fx` is not `/productpage`) unless decoded, and then
            // checked like `/productpage/x` is not (not covered by the exact rule).
            let o = outcome(&engine, "/productpage%2Fx", host, cfg);
            if slashes == EscapedSlashes::Reject {
                assert_eq!(o, Outcome::Refused, "{mode:?}");
            } else {
                assert!(matches!(o, Outcome::Unchecked(_)), "{mode:?}/{slashes:?}: {o:?}");
            }
        }
    }
}

#[test]
fn seed_outcomes_under_base() {
    let engine = seed_engine();
    let base = PathNormalization::default();
    let host = "bookinfo.example.com";
    let checked = |p: &str| Outcome::Checked(p.to_owned());
    for (target, expected) in [
        ("/public/../productpage", checked("/productpage")),
        ("/public/%2e%2e/productpage", checked("/productpage")),
        ("//productpage", checked("//productpage")),
        ("/productpage/.", checked("/productpage/")),
        ("/productpage;x=1", checked("/productpage")),
        ("/productpage#frag", checked("/productpage")),
        ("/productpage?a=1", checked("/productpage?a=1")),
        ("/api/v1/products", Outcome::Unchecked("/api/v1/products".into())),
        ("/headers", checked("/headers")),
        ("/productpage%00", Outcome::Refused),
    ] {
        assert_eq!(outcome(&engine, target, host, base), expected, "{target}");
    }
    let reject = PathNormalization {
        mode: NormalizationMode::Base,
        escaped_slashes: EscapedSlashes::Reject,
    };
    assert_eq!(
        outcome(&engine, "/productpage%2Fx", host, reject),
        Outcome::Refused
    );
    // The host does not matter to the seed policy; any spelling reaches the check.
    assert_eq!(
        outcome(&engine, "/productpage", "BOOKINFO.example.com.", base),
        checked("/productpage")
    );
}

#[test]
fn host_rule_against_case_and_trailing_dot() {
    let engine = common::engine(
        None,
        "- name: bookinfo-only\n  action: CUSTOM\n  provider: {name: ext-authz-grpc}\n  rules: [{to: [{operation: {hosts: [\"bookinfo.example.com\"], paths: [\"/productpage\"]}}]}]",
        "",
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    for host in [
        "bookinfo.example.com",
        "BOOKINFO.example.com.",
        "Bookinfo.Example.Com",
    ] {
        let v = engine.evaluate(&get("/productpage").host(host).attrs());
        assert_eq!(v.providers.len(), 1, "{host}");
    }
}

#[test]
fn examples_call_the_right_providers() {
    let engine = seed_engine();
    let gw = "staticHosts:\n  ext-authz.default.svc.cluster.local: 127.0.0.1\n  ext-authz.foo.svc.cluster.local: 127.0.0.1\n";
    let istio = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/istio");
    let config =
        authgate_config::parse(gw, "gw.yaml", Path::new("."), &[istio]).unwrap_or_else(|e| panic!("{e}"));
    let names = |path: &str| -> Vec<String> {
        engine
            .evaluate(&get(path).attrs())
            .providers
            .iter()
            .map(|i| config.providers[i].name.clone())
            .collect()
    };
    assert_eq!(names("/productpage"), ["ext-authz-grpc"]);
    assert_eq!(names("/headers"), ["sample-ext-authz-grpc"]);
    assert!(names("/ip").is_empty());
    assert!(engine.notes().is_empty(), "{:?}", engine.notes());
}
