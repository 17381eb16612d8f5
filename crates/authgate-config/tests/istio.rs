//! Loading Istio Kubernetes YAML from real files and directories.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use authgate_config::istio::{IstioBundle, load_istio_path};
use authgate_config::{Action, ConfigError, ProviderKind};

/// A fresh temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "authgate-istio-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        Self(dir)
    }

    fn write(&self, name: &str, content: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, content).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn load(path: &Path) -> (IstioBundle, Vec<ConfigError>) {
    let mut bundle = IstioBundle::default();
    let mut errors = Vec::new();
    load_istio_path(path, &mut bundle, &mut errors);
    (bundle, errors)
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/istio")
}

#[test]
fn examples_directory_loads() {
    let (b, errors) = load(&examples());
    assert!(errors.is_empty(), "{errors:#?}");
    let names: Vec<&str> = b.policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["ext-authz", "httpbin-ext-authz"]);
    let seed = &b.policies[0];
    assert_eq!(seed.namespace, "istio-system");
    assert!(!seed.inline);
    assert_eq!(seed.action(), Action::Custom);
    assert_eq!(
        seed.spec.provider.as_ref().map(|p| p.name.as_str()),
        Some("ext-authz-grpc")
    );
    assert!(
        seed.origin.file.ends_with("ext-authz-productpage.yaml"),
        "{}",
        seed.origin
    );
    assert_eq!(seed.origin.line, Some(7), "the line of apiVersion");
    assert_eq!(b.policies[1].origin.line, Some(6));
    let providers: Vec<(&str, Option<u64>, &str)> = b
        .providers
        .iter()
        .map(|(p, o, f)| (p.name.as_str(), o.line, f.as_str()))
        .collect();
    assert_eq!(
        providers,
        [
            (
                "sample-ext-authz-grpc",
                Some(20),
                "data.mesh.extensionProviders[0]"
            ),
            (
                "sample-ext-authz-http",
                Some(24),
                "data.mesh.extensionProviders[1]"
            ),
            ("ext-authz-grpc", Some(29), "data.mesh.extensionProviders[2]"),
            ("ext-authz-http", Some(34), "data.mesh.extensionProviders[3]"),
        ]
    );
    assert_eq!(b.root_namespace.as_deref(), Some("istio-system"));
    assert_eq!(b.root_namespace_origin.and_then(|o| o.line), Some(18));
    let files: Vec<String> = b
        .files
        .iter()
        .filter_map(|f| f.file_name().and_then(|n| n.to_str()).map(str::to_owned))
        .collect();
    assert_eq!(
        files,
        [
            "ext-authz-productpage.yaml",
            "httpbin-ext-authz.yaml",
            "mesh-config.yaml"
        ]
    );
    assert_eq!(b.dirs.len(), 1);
}

#[test]
fn examples_work_through_parse_with_a_gateway_file() {
    let gw = "staticHosts:\n  ext-authz.default.svc.cluster.local: 127.0.0.1\n  ext-authz.foo.svc.cluster.local: 127.0.0.1\n";
    let config = authgate_config::parse(gw, "gw.yaml", Path::new("."), &[examples()])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.providers.len(), 4);
    let http = config
        .providers
        .iter()
        .find(|p| p.name == "sample-ext-authz-http")
        .unwrap_or_else(|| panic!("missing provider"));
    let ProviderKind::Http(h) = &http.kind else {
        panic!("HTTP provider expected")
    };
    assert_eq!(h.include_request_headers.len(), 1);
    assert_eq!(http.port, 8000);
    assert_eq!(config.policies.len(), 2);
    // The three manifests plus their directory (watched so added files trigger a reload).
    assert_eq!(config.files.len(), 4, "{:?}", config.files);
    assert!(config.files.iter().any(|f| f.is_dir()), "{:?}", config.files);
    // The same through `include:` relative to the gateway file.
    let dir = TempDir::new("include");
    let main = dir.write(
        "gw.yaml",
        &format!("include: [\"{}\"]\n{gw}", examples().display()),
    );
    let config = authgate_config::load(&main, &[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.policies.len(), 2);
    assert_eq!(config.files.first(), Some(&main));
}

#[test]
fn multi_document_files_keep_line_numbers_and_skip_other_kinds() {
    let dir = TempDir::new("multi");
    let f = dir.write(
        "all.yaml",
        r#"# comment before the first document
apiVersion: v1
kind: Service
metadata:
  name: ext-authz
spec:
  ports: [{name: grpc, port: 9000}]
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: deny-bad
  namespace: istio-system
  labels: {team: sec}
  annotations: {istio.io/dry-run: "true"}
  uid: 1234
spec:
  action: DENY
  rules:
  - from:
    - source:
        ipBlocks: ["192.0.2.0/24"]
    to:
    - operation:
        ports: [8080]
---
# only a comment
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ext-authz, namespace: foo}
spec: {replicas: 1}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: istio-ca-root-cert}
data: {root-cert.pem: "x"}
---
extensionProviders:
- name: bare
  envoyExtAuthzGrpc: {service: bare.svc, port: 9000}
---
apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
spec:
  meshConfig:
    extensionProviders:
    - name: from-operator
      envoyExtAuthzHttp: {service: op.svc, port: 8000}
---
meshConfig:
  extensionProviders:
  - name: from-helm
    envoyExtAuthzGrpc: {service: helm.svc, port: 9000}
...
"#,
    );
    let (b, errors) = load(&f);
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(b.policies.len(), 1);
    let p = &b.policies[0];
    assert_eq!(p.name, "deny-bad");
    assert_eq!(p.origin.line, Some(9));
    assert_eq!(p.labels.get("team").map(String::as_str), Some("sec"));
    assert!(p.dry_run());
    let names: Vec<(&str, Option<u64>, &str)> = b
        .providers
        .iter()
        .map(|(p, o, f)| (p.name.as_str(), o.line, f.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("bare", Some(40), "extensionProviders[0]"),
            ("from-operator", Some(48), "spec.meshConfig.extensionProviders[0]"),
            ("from-helm", Some(53), "meshConfig.extensionProviders[0]"),
        ]
    );
    let notes = b.notes.join("\n");
    assert!(notes.contains("skipped kind Service ext-authz"), "{notes}");
    assert!(notes.contains("all.yaml:2"), "{notes}");
    assert!(notes.contains("skipped kind Deployment foo/ext-authz"), "{notes}");
    assert!(notes.contains("all.yaml:29"), "{notes}");
    assert!(
        notes.contains("skipped ConfigMap \"istio-ca-root-cert\""),
        "{notes}"
    );
}

#[test]
fn kubectl_list_output() {
    let dir = TempDir::new("list");
    let f = dir.write(
        "list.yaml",
        r#"apiVersion: v1
items:
- apiVersion: security.istio.io/v1
  kind: AuthorizationPolicy
  metadata:
    name: a
    namespace: istio-system
    resourceVersion: "1"
    managedFields: [{manager: kubectl}]
  spec:
    action: ALLOW
    rules: [{}]
  status: {}
- apiVersion: networking.istio.io/v1
  kind: Gateway
  metadata: {name: gw}
  spec: {selector: {istio: ingressgateway}, servers: []}
- apiVersion: security.istio.io/v1
  kind: AuthorizationPolicy
  metadata: {name: b, namespace: foo}
  spec: {action: DENY, rules: [{to: [{operation: {paths: ["/x"]}}]}]}
kind: List
metadata:
  resourceVersion: ""
"#,
    );
    let (b, errors) = load(&f);
    assert!(errors.is_empty(), "{errors:#?}");
    let got: Vec<(&str, &str, Option<u64>)> = b
        .policies
        .iter()
        .map(|p| (p.name.as_str(), p.namespace.as_str(), p.origin.line))
        .collect();
    assert_eq!(got, [("a", "istio-system", Some(3)), ("b", "foo", Some(18))]);
    assert!(
        b.notes
            .iter()
            .any(|n| n.contains("skipped kind Gateway gw") && n.contains("items[1]")),
        "{:?}",
        b.notes
    );
}

#[test]
fn invalid_documents_are_errors_with_file_line_and_field() {
    let dir = TempDir::new("invalid");
    let f = dir.write(
        "bad.yaml",
        r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ok, namespace: istio-system}
spec: {action: ALLOW, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: typo, namespace: istio-system}
spec:
  action: DENY
  rules:
  - to:
    - operation:
        path: ["/x"]
---
apiVersion: security.istio.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: old}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {namespace: istio-system}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: bad-action}
spec: {action: REJECT}
---
key: [unclosed
"#,
    );
    let (b, errors) = load(&f);
    assert_eq!(b.policies.len(), 1, "the valid document still loads");
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 5, "{text:#?}");
    let file = f.display().to_string();
    assert!(errors.iter().all(|e| e.file == file));
    assert_eq!(errors[0].line, Some(14), "{}", text[0]);
    assert!(errors[0].field.contains("path"), "{}", text[0]);
    assert!(text[0].contains("unknown field"), "{}", text[0]);
    assert_eq!(errors[1].line, Some(16));
    assert!(
        text[1].contains("apiVersion") && text[1].contains("security.istio.io/v1alpha1"),
        "{}",
        text[1]
    );
    assert_eq!(errors[2].line, Some(21));
    assert_eq!(errors[2].field, "metadata.name");
    assert_eq!(errors[3].line, Some(29), "{}", text[3]);
    assert!(text[3].contains("REJECT"), "{}", text[3]);
    assert_eq!(errors[4].line, Some(31), "{}", text[4]);
}

#[test]
fn mesh_string_errors_map_to_file_lines() {
    let dir = TempDir::new("mesh");
    let f = dir.write(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio\ndata:\n  mesh: |\n    extensionProviders:\n    - name: x\n      envoyExtAuthzGrpc:\n        service: x\n        port: 9000\n        failopen: true\n",
    );
    let (_, errors) = load(&f);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].line, Some(12), "{}", errors[0]);
    assert!(
        errors[0].field.contains("data.mesh") && errors[0].field.contains("failopen"),
        "{}",
        errors[0]
    );
    // Provider values are validated by `parse` with the ConfigMap's file and line.
    let g = dir.write(
        "cm2.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio\ndata:\n  mesh: |-\n    extensionProviders:\n    - name: Bad_Name\n      envoyExtAuthzGrpc: {service: x, port: 70000}\n",
    );
    let e = authgate_config::parse("", "gw.yaml", Path::new("."), std::slice::from_ref(&g))
        .err()
        .unwrap_or_else(|| panic!("accepted"));
    let text = e.to_string();
    assert!(
        text.contains(&format!(
            "{}:8: data.mesh.extensionProviders[0].name",
            g.display()
        )),
        "{text}"
    );
    assert!(
        text.contains("data.mesh.extensionProviders[0].envoyExtAuthzGrpc.port"),
        "{text}"
    );
}

#[test]
fn directories_are_non_recursive_sorted_and_yaml_only() {
    let dir = TempDir::new("dir");
    let ap = |name: &str| {
        format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: istio-system}}\nspec: {{}}\n"
        )
    };
    dir.write("b.yml", &ap("b"));
    dir.write("a.yaml", &ap("a"));
    dir.write("c.YAML", &ap("c"));
    dir.write("notes.txt", &ap("txt"));
    dir.write(".hidden.yaml", &ap("hidden"));
    std::fs::create_dir_all(dir.0.join("sub")).unwrap_or_else(|e| panic!("{e}"));
    dir.write("sub/d.yaml", &ap("d"));
    let (b, errors) = load(&dir.0);
    assert!(errors.is_empty(), "{errors:#?}");
    let names: Vec<&str> = b.policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(b.files.len(), 3);

    let empty = TempDir::new("empty");
    let (b, errors) = load(&empty.0);
    assert!(errors.is_empty());
    assert!(b.notes.iter().any(|n| n.contains("no *.yaml")), "{:?}", b.notes);

    let (_, errors) = load(&dir.0.join("missing.yaml"));
    assert_eq!(errors.len(), 1);
    assert!(errors[0].to_string().contains("cannot read"), "{}", errors[0]);
}

#[test]
fn root_namespace_conflicts_and_missing_namespace() {
    let dir = TempDir::new("rootns");
    let f = dir.write(
        "m.yaml",
        "rootNamespace: a\n---\nrootNamespace: b\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: nons}\nspec: {}\n",
    );
    let (b, errors) = load(&f);
    assert_eq!(b.root_namespace.as_deref(), Some("a"));
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].line, Some(3));
    assert!(errors[0].message.contains("conflicts"), "{}", errors[0]);
    assert_eq!(
        b.policies[0].namespace, "",
        "left for the policy engine to place in the gateway's namespace"
    );
    assert!(
        b.notes.iter().any(|n| n.contains("no metadata.namespace")),
        "{:?}",
        b.notes
    );
}

#[test]
fn empty_and_comment_only_files() {
    let dir = TempDir::new("blank");
    for (name, content) in [
        ("e.yaml", ""),
        ("c.yaml", "# nothing\n---\n---\n"),
        ("bom.yaml", "\u{feff}rootNamespace: x\n"),
    ] {
        let f = dir.write(name, content);
        let (b, errors) = load(&f);
        assert!(errors.is_empty(), "{name}: {errors:#?}");
        assert!(b.policies.is_empty());
    }
}
