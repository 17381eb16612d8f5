//! No panics on any input, and normalization is a fixed point: pseudo-random targets,
//! authorities and headers through `normalize_path`, `normalize_host`, `client_ip_from_headers` and
//! `evaluate`/`explain`.

mod common;

use authgate_config::{EscapedSlashes, NormalizationMode, PathNormalization};
use authgate_policy::{client_ip_from_headers, normalize_host, normalize_path};
use common::{engine, get};

/// A small deterministic generator (no dependency needed).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() as usize) % xs.len()]
    }
}

const PIECES: &[&str] = &[
    "/",
    "//",
    ".",
    "..",
    "%2e",
    "%2E",
    "%2f",
    "%2F",
    "%5c",
    "%5C",
    "%00",
    "%",
    "%4",
    "%zz",
    "%41",
    "%252e",
    ";",
    ";x=1",
    "\\",
    "?",
    "#",
    "a",
    "productpage",
    "admin",
    "{",
    "}",
    "*",
    "é",
    " ",
    "\t",
    "~",
    "-",
    "_",
    ":",
    "@",
    "=",
    "&",
];

const MODES: [NormalizationMode; 4] = [
    NormalizationMode::None,
    NormalizationMode::Base,
    NormalizationMode::MergeSlashes,
    NormalizationMode::DecodeAndMergeSlashes,
];

#[test]
fn random_targets_never_panic_and_normalize_to_a_fixed_point() {
    let e = engine(
        None,
        r#"
- name: c
  action: CUSTOM
  provider: {name: ext-authz-grpc}
  rules: [{to: [{operation: {paths: ["/productpage", "/admin/*", "*.png", "/a/{*}/b", "/x/{**}/"]}}]}]
- name: d
  action: DENY
  rules: [{to: [{operation: {notPaths: ["/a*"], hosts: ["*.example.com:*", "EXAMPLE.com."]}}], when: [{key: "request.headers[x]", notValues: ["*"]}]}]
- name: a
  action: ALLOW
  rules: [{from: [{source: {namespaces: ["*a*b*"], notIpBlocks: ["::/0"]}}]}]
"#,
        "",
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    let mut rng = Lcg(42);
    let mut ok = 0;
    for _ in 0..20_000 {
        let n = 1 + rng.next() % 8;
        let mut target = String::from("/");
        for _ in 0..n {
            target.push_str(rng.pick(PIECES));
        }
        if rng.next().is_multiple_of(10) {
            target.remove(0);
        }
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
                let Ok(t) = normalize_path(&target, cfg) else {
                    continue;
                };
                ok += 1;
                assert!(t.path.starts_with('/'), "{target:?} → {t:?}");
                assert!(!t.path.contains('#'), "{target:?} → {t:?}");
                if mode != NormalizationMode::None {
                    assert!(
                        !t.path.contains(';') && !t.path.split('/').any(|s| s == ".." || s == "."),
                        "{target:?} → {t:?}"
                    );
                    let pq = t.path_and_query();
                    let again =
                        normalize_path(&pq, cfg).unwrap_or_else(|e| panic!("{target:?} → {t:?}: {e}"));
                    assert_eq!(
                        again, t,
                        "{target:?} is not a fixed point under {mode:?}/{slashes:?}"
                    );
                }
                let host = format!(
                    "{}{}",
                    rng.pick(&["EXAMPLE.com", "a.example.com", "[::1]", "", "x"]),
                    rng.pick(&["", ".", ":8080", ".:1", ":", ":99999"])
                );
                let (h, _) = normalize_host(&host);
                assert!(!h.ends_with('.') || h.ends_with(".."), "{host:?} → {h:?}");
                let mut req = get(&t.path).host(&host);
                if rng.next().is_multiple_of(3) {
                    req = req.header("x", "y").principal("spiffe://td/ns/ab/sa/x");
                }
                let v = e.evaluate(&req.attrs());
                if rng.next().is_multiple_of(50) {
                    assert_eq!(e.explain(&req.attrs()).verdict, v);
                }
            }
        }
    }
    assert!(ok > 10_000, "only {ok} targets were accepted");
}

#[test]
fn random_xff_never_panics() {
    let mut rng = Lcg(7);
    let peer = "10.0.0.1".parse().unwrap_or_else(|e| panic!("{e}"));
    let parts = [
        "1.2.3.4",
        " 5.6.7.8 ",
        "",
        ",",
        "[::1]",
        "::1",
        "x",
        "1.2.3.4:80",
        "[2001:db8::1]:443",
        "999.1.1.1",
    ];
    for _ in 0..5_000 {
        let mut s = String::new();
        for _ in 0..(rng.next() % 6) {
            s.push_str(rng.pick(&parts));
            s.push(',');
        }
        let Ok(v) = http::HeaderValue::from_str(&s) else {
            continue;
        };
        let mut headers = http::HeaderMap::new();
        headers.append("x-forwarded-for", v.clone());
        headers.append("x-forwarded-for", v);
        for n in 0..5 {
            let _ = client_ip_from_headers(&headers, peer, n);
        }
    }
}
