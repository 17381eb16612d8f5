//! Loading Kubernetes-style Istio YAML (AuthorizationPolicy, the `istio` ConfigMap, MeshConfig).
//!
//! Files are multi-document YAML exactly as `kubectl apply -f` takes them. Every document is
//! parsed on its own (split at `---` lines, which YAML forbids inside scalars at column 0), so a
//! broken document is reported with its own file and line and does not hide the others.
//!
//! Accepted objects:
//! - `security.istio.io/v1` and `v1beta1` `AuthorizationPolicy` → a [`Policy`] (`inline: false`);
//! - the `istio` ConfigMap (`v1`/`ConfigMap` named `istio` or `istio-<revision>`), whose `mesh`
//!   key holds MeshConfig YAML as a string → its `extensionProviders` (and `rootNamespace`);
//! - a bare MeshConfig document (top-level `extensionProviders` and/or `rootNamespace`);
//! - Helm values with a top-level `meshConfig:`, and an `IstioOperator` with `spec.meshConfig`;
//! - `v1`/`List` whose `items` hold any of the above (`kubectl get ... -o yaml`).
//!
//! Everything else is skipped with a note naming the kind, file and line. An
//! `AuthorizationPolicy` with another `apiVersion` is an error rather than a skip: silently
//! dropping a security policy is worse than refusing to start.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::error::ConfigError;
use crate::model::{AuthorizationPolicySpec, ExtensionProviderSpec, ObjectMeta};
use crate::typed::{Origin, Policy};

/// What the Istio files contributed.
#[derive(Debug, Default)]
pub struct IstioBundle {
    pub policies: Vec<Policy>,
    /// Providers with where they came from and their field path, validated like inline ones.
    pub providers: Vec<(ExtensionProviderSpec, Origin, String)>,
    /// Files read (for reload watching), in the order they were read.
    pub files: Vec<PathBuf>,
    /// Directories listed (for reload watching: a new file in one of them is a change).
    pub dirs: Vec<PathBuf>,
    pub notes: Vec<String>,
    /// `rootNamespace` from a MeshConfig (ConfigMap `mesh`, bare MeshConfig, ...), if any set it.
    /// The caller decides how it combines with the gateway file's own setting.
    pub root_namespace: Option<String>,
    /// Where `root_namespace` was set.
    pub root_namespace_origin: Option<Origin>,
}

/// Loads every Istio object from a file or a directory of `*.yaml`/`*.yml` files
/// (non-recursive, sorted by name, hidden files skipped).
pub fn load_istio_path(path: &Path, bundle: &mut IstioBundle, errors: &mut Vec<ConfigError>) {
    let shown = path.display().to_string();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            errors.push(err(&shown, None, "(file)", format!("cannot read: {e}")));
            return;
        }
    };
    if !meta.is_dir() {
        load_istio_file(path, bundle, errors);
        return;
    }
    let entries = match std::fs::read_dir(path) {
        Ok(rd) => rd,
        Err(e) => {
            errors.push(err(&shown, None, "(directory)", format!("cannot list: {e}")));
            return;
        }
    };
    bundle.dirs.push(path.to_path_buf());
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let ext = p
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase);
            !name.starts_with('.')
                && matches!(ext.as_deref(), Some("yaml" | "yml"))
                && std::fs::metadata(p).is_ok_and(|m| m.is_file())
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bundle
            .notes
            .push(format!("{shown}: no *.yaml or *.yml files in this directory"));
    }
    for f in files {
        load_istio_file(&f, bundle, errors);
    }
}

fn load_istio_file(path: &Path, bundle: &mut IstioBundle, errors: &mut Vec<ConfigError>) {
    let file = path.display().to_string();
    let src = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) => {
            errors.push(err(&file, None, "(file)", format!("cannot read: {e}")));
            return;
        }
    };
    bundle.files.push(path.to_path_buf());
    load_istio_str(&src, &file, bundle, errors);
}

/// Loads Istio objects from YAML held in memory; `file` names it in origins and errors.
pub fn load_istio_str(src: &str, file: &str, bundle: &mut IstioBundle, errors: &mut Vec<ConfigError>) {
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    for doc in split_documents(src) {
        let mut loader = DocLoader {
            file,
            src,
            offset: doc.offset,
            bundle,
            errors,
        };
        loader.load(&doc.text);
    }
}

fn err(file: &str, line: Option<u64>, field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        file: file.to_owned(),
        line,
        field: field.to_owned(),
        message: message.into(),
    }
}

/// One YAML document of a stream, with the number of file lines before its first line.
struct Document {
    offset: u64,
    text: String,
}

/// Splits a YAML stream at document markers, keeping each document's line numbers exact:
/// a document's text starts with its own `---` line (or the first line of the file), and
/// directive (`%...`) and end (`...`) lines are blanked rather than removed.
fn split_documents(src: &str) -> Vec<Document> {
    let mut docs = Vec::new();
    let mut offset = 0u64;
    let mut text = String::new();
    for (i, line) in src.split('\n').enumerate() {
        let bare = line.strip_suffix('\r').unwrap_or(line);
        let is_start = bare.starts_with("---") && bare[3..].chars().next().is_none_or(char::is_whitespace);
        if is_start {
            if has_content(&text) {
                docs.push(Document {
                    offset,
                    text: std::mem::take(&mut text),
                });
            }
            text.clear();
            offset = i as u64;
        }
        let is_end = bare.starts_with("...") && bare[3..].chars().next().is_none_or(char::is_whitespace);
        if is_end || bare.starts_with('%') {
            text.push('\n');
        } else {
            text.push_str(bare);
            text.push('\n');
        }
    }
    if has_content(&text) {
        docs.push(Document { offset, text });
    }
    docs
}

/// True if the text holds anything besides blank lines, comments and a `---` marker.
fn has_content(text: &str) -> bool {
    text.lines().any(|l| {
        let t = l.trim();
        let t = t.strip_prefix("---").map_or(t, str::trim_start);
        !t.is_empty() && !t.starts_with('#')
    })
}

// ---------------------------------------------------------------------------------------------
// Document model
// ---------------------------------------------------------------------------------------------

/// The fields that say what a document is; everything else is ignored in this first pass.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: Option<HeaderMeta>,
    #[serde(default)]
    extension_providers: Option<IgnoredAny>,
    #[serde(default)]
    root_namespace: Option<IgnoredAny>,
    #[serde(default)]
    mesh_config: Option<IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
struct HeaderMeta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ListHeader {
    #[serde(default)]
    items: Vec<Spanned<Header>>,
}

/// `security.istio.io/v1[beta1]` `AuthorizationPolicy`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct K8sPolicy {
    #[serde(default)]
    #[allow(dead_code)]
    api_version: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    kind: Option<String>,
    #[serde(default)]
    metadata: Option<ObjectMeta>,
    #[serde(default)]
    spec: Option<AuthorizationPolicySpec>,
    #[serde(default)]
    #[allow(dead_code)]
    status: Option<IgnoredAny>,
}

/// `v1` `ConfigMap`; only `data.mesh` matters.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct K8sConfigMap {
    #[serde(default)]
    metadata: Option<HeaderMeta>,
    #[serde(default)]
    data: BTreeMap<String, Spanned<String>>,
}

/// The parts of Istio's `MeshConfig` authgate uses; every other MeshConfig field is ignored
/// (they configure the mesh, not this gateway's authorization).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MeshConfigDoc {
    #[serde(default)]
    extension_providers: Vec<Spanned<ExtensionProviderSpec>>,
    #[serde(default)]
    root_namespace: Option<Spanned<String>>,
}

/// Helm values for the istiod chart: `meshConfig:` at the top.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HelmValues {
    #[serde(default)]
    mesh_config: Option<MeshConfigDoc>,
}

/// `install.istio.io/v1alpha1` `IstioOperator`: `spec.meshConfig`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IstioOperatorDoc {
    #[serde(default)]
    spec: Option<HelmValues>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DocKind {
    Policy,
    ConfigMap,
    Mesh,
    HelmValues,
    IstioOperator,
    Skip,
}

#[derive(Debug)]
enum Typed {
    Policy(Box<K8sPolicy>),
    ConfigMap(K8sConfigMap),
    Mesh(MeshConfigDoc),
    HelmValues(HelmValues),
    IstioOperator(IstioOperatorDoc),
    Skipped,
}

/// Deserializes one object as the kind the first pass found.
struct ItemSeed(DocKind);

impl<'de> DeserializeSeed<'de> for ItemSeed {
    type Value = Typed;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Typed, D::Error> {
        Ok(match self.0 {
            DocKind::Policy => Typed::Policy(Box::new(K8sPolicy::deserialize(d)?)),
            DocKind::ConfigMap => Typed::ConfigMap(K8sConfigMap::deserialize(d)?),
            DocKind::Mesh => Typed::Mesh(MeshConfigDoc::deserialize(d)?),
            DocKind::HelmValues => Typed::HelmValues(HelmValues::deserialize(d)?),
            DocKind::IstioOperator => Typed::IstioOperator(IstioOperatorDoc::deserialize(d)?),
            DocKind::Skip => {
                IgnoredAny::deserialize(d)?;
                Typed::Skipped
            }
        })
    }
}

/// Deserializes a `List` document, each of its `items` as the kind the first pass found.
struct ListSeed<'a>(&'a [DocKind]);

impl<'de> DeserializeSeed<'de> for ListSeed<'_> {
    type Value = Vec<Typed>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Vec<Typed>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ListSeed<'_> {
    type Value = Vec<Typed>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Kubernetes List object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<Typed>, A::Error> {
        let mut out = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == "items" {
                out = map.next_value_seed(ItemsSeed(self.0))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(out)
    }
}

struct ItemsSeed<'a>(&'a [DocKind]);

impl<'de> DeserializeSeed<'de> for ItemsSeed<'_> {
    type Value = Vec<Typed>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Vec<Typed>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ItemsSeed<'_> {
    type Value = Vec<Typed>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of Kubernetes objects")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Vec<Typed>, E> {
        Ok(Vec::new())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Typed>, A::Error> {
        let mut out = Vec::new();
        loop {
            let kind = self.0.get(out.len()).copied().unwrap_or(DocKind::Skip);
            match seq.next_element_seed(ItemSeed(kind))? {
                Some(t) => out.push(t),
                None => break,
            }
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

struct DocLoader<'a> {
    file: &'a str,
    /// The whole file, to look at the line a `mesh:` block scalar starts on.
    src: &'a str,
    /// File lines before the document's first line.
    offset: u64,
    bundle: &'a mut IstioBundle,
    errors: &'a mut Vec<ConfigError>,
}

fn line_of<T>(s: &Spanned<T>) -> Option<u64> {
    let l = s.referenced.line();
    (l > 0).then_some(l)
}

impl DocLoader<'_> {
    fn origin(&self, doc_line: Option<u64>) -> Origin {
        Origin {
            file: self.file.to_owned(),
            line: Some(self.offset + doc_line.unwrap_or(1)),
        }
    }

    /// Records a YAML error found at `line_offset` lines into the file.
    fn yaml_error(&mut self, e: &serde_saphyr::Error, line_offset: u64, what: &str) {
        let line = e
            .location()
            .map(|l| l.line())
            .filter(|l| *l > 0)
            .map(|l| l + line_offset);
        let mut opts = serde_saphyr::RenderOptions::default();
        opts.line_offset = line_offset;
        opts.source_name = Some(self.file);
        let rendered = e.render_with_options(opts);
        let message = rendered
            .lines()
            .next()
            .unwrap_or("invalid YAML")
            .trim()
            .to_owned();
        let field = message
            .split('`')
            .nth(1)
            .filter(|_| message.contains("field"))
            .map_or_else(|| what.to_owned(), |f| format!("{what}: {f}"));
        self.errors.push(ConfigError {
            file: self.file.to_owned(),
            line,
            field,
            message: format!("{message}\n{rendered}"),
        });
    }

    fn load(&mut self, text: &str) {
        let header: Spanned<Header> = match serde_saphyr::from_str(text) {
            Ok(h) => h,
            Err(e) => {
                self.yaml_error(&e, self.offset, "(yaml)");
                return;
            }
        };
        let at = line_of(&header);
        let kind = self.classify(&header.value, at, "");
        if header.value.kind.as_deref() == Some("List") {
            self.load_list(text, at);
            return;
        }
        if kind == DocKind::Skip {
            return;
        }
        match serde_saphyr::with_deserializer_from_str(text, |d| ItemSeed(kind).deserialize(d)) {
            Ok(typed) => self.apply(typed, &header.value, at, ""),
            Err(e) => self.yaml_error(&e, self.offset, kind_name(&header.value)),
        }
    }

    fn load_list(&mut self, text: &str, at: Option<u64>) {
        let list: ListHeader = match serde_saphyr::from_str(text) {
            Ok(l) => l,
            Err(e) => {
                self.yaml_error(&e, self.offset, "List");
                return;
            }
        };
        let kinds: Vec<DocKind> = list
            .items
            .iter()
            .enumerate()
            .map(|(i, h)| self.classify(&h.value, line_of(h), &format!("items[{i}]")))
            .collect();
        if list.items.is_empty() {
            let o = self.origin(at);
            self.bundle.notes.push(format!("empty List ({o})"));
            return;
        }
        match serde_saphyr::with_deserializer_from_str(text, |d| ListSeed(&kinds).deserialize(d)) {
            Ok(items) => {
                for (i, typed) in items.into_iter().enumerate() {
                    if let Some(h) = list.items.get(i) {
                        self.apply(typed, &h.value, line_of(h), &format!("items[{i}]."));
                    }
                }
            }
            Err(e) => self.yaml_error(&e, self.offset, "List"),
        }
    }

    /// Decides what a document (or List item) is; notes the ones that are skipped.
    fn classify(&mut self, h: &Header, at: Option<u64>, item: &str) -> DocKind {
        let where_ = {
            let o = self.origin(at);
            if item.is_empty() {
                o.to_string()
            } else {
                format!("{o}, {item}")
            }
        };
        let api = h.api_version.as_deref().unwrap_or("");
        match h.kind.as_deref() {
            Some("AuthorizationPolicy") => {
                if matches!(api, "security.istio.io/v1" | "security.istio.io/v1beta1") {
                    DocKind::Policy
                } else {
                    self.errors.push(err(
                        self.file,
                        Some(self.offset + at.unwrap_or(1)),
                        &format!("{item}apiVersion"),
                        format!(
                            "AuthorizationPolicy apiVersion {api:?} is not supported; use \
                             security.istio.io/v1 or security.istio.io/v1beta1"
                        ),
                    ));
                    DocKind::Skip
                }
            }
            Some("ConfigMap") if api == "v1" => {
                let name = h.metadata.as_ref().and_then(|m| m.name.as_deref()).unwrap_or("");
                if name == "istio" || name.starts_with("istio-") {
                    DocKind::ConfigMap
                } else {
                    self.bundle.notes.push(format!(
                        "skipped ConfigMap {name:?} ({where_}): only the `istio` mesh ConfigMap is read"
                    ));
                    DocKind::Skip
                }
            }
            Some("IstioOperator") => DocKind::IstioOperator,
            Some("List") => DocKind::Skip,
            Some(other) => {
                let name = h
                    .metadata
                    .as_ref()
                    .map(|m| {
                        let ns = m
                            .namespace
                            .as_deref()
                            .map(|n| format!("{n}/"))
                            .unwrap_or_default();
                        format!(" {ns}{}", m.name.as_deref().unwrap_or(""))
                    })
                    .unwrap_or_default();
                self.bundle
                    .notes
                    .push(format!("skipped kind {other}{name} ({where_})"));
                DocKind::Skip
            }
            None if h.extension_providers.is_some() || h.root_namespace.is_some() => DocKind::Mesh,
            None if h.mesh_config.is_some() => DocKind::HelmValues,
            None => {
                self.bundle.notes.push(format!(
                    "skipped a document with no `kind` and no MeshConfig fields ({where_})"
                ));
                DocKind::Skip
            }
        }
    }

    fn apply(&mut self, typed: Typed, h: &Header, at: Option<u64>, item: &str) {
        match typed {
            Typed::Policy(p) => self.policy(*p, at, item),
            Typed::ConfigMap(cm) => self.config_map(cm, h, at, item),
            Typed::Mesh(m) => self.mesh(m, self.offset, item),
            Typed::HelmValues(v) => match v.mesh_config {
                Some(m) => self.mesh(m, self.offset, &format!("{item}meshConfig.")),
                None => {
                    let o = self.origin(at);
                    self.bundle
                        .notes
                        .push(format!("no meshConfig in Helm values ({o})"));
                }
            },
            Typed::IstioOperator(op) => match op.spec.and_then(|s| s.mesh_config) {
                Some(m) => self.mesh(m, self.offset, &format!("{item}spec.meshConfig.")),
                None => {
                    let o = self.origin(at);
                    self.bundle.notes.push(format!(
                        "IstioOperator without spec.meshConfig ({o}); nothing to read"
                    ));
                }
            },
            Typed::Skipped => {}
        }
    }

    fn policy(&mut self, p: K8sPolicy, at: Option<u64>, item: &str) {
        let origin = self.origin(at);
        let meta = p.metadata.unwrap_or_default();
        let Some(name) = meta.name.filter(|n| !n.is_empty()) else {
            self.errors.push(err(
                self.file,
                origin.line,
                &format!("{item}metadata.name"),
                "an AuthorizationPolicy needs metadata.name",
            ));
            return;
        };
        // Without metadata.namespace, `kubectl apply` would use the current namespace; the
        // policy engine takes an empty namespace as "the gateway's namespace".
        let namespace = match meta.namespace {
            Some(ns) if !ns.is_empty() => ns,
            _ => {
                self.bundle.notes.push(format!(
                    "AuthorizationPolicy {name:?} ({origin}) has no metadata.namespace; it is taken \
                     to be in the gateway's namespace"
                ));
                String::new()
            }
        };
        self.bundle.policies.push(Policy {
            name,
            namespace,
            labels: meta.labels,
            annotations: meta.annotations,
            spec: p.spec.unwrap_or_default(),
            origin,
            inline: false,
        });
    }

    fn config_map(&mut self, cm: K8sConfigMap, h: &Header, at: Option<u64>, item: &str) {
        let origin = self.origin(at);
        let name = cm
            .metadata
            .as_ref()
            .and_then(|m| m.name.clone())
            .or_else(|| h.metadata.as_ref().and_then(|m| m.name.clone()))
            .unwrap_or_default();
        let Some(mesh) = cm.data.get("mesh") else {
            if name == "istio" {
                self.bundle.notes.push(format!(
                    "ConfigMap istio ({origin}) has no data.mesh; nothing to read"
                ));
            } else {
                self.bundle
                    .notes
                    .push(format!("skipped ConfigMap {name:?} ({origin}): no data.mesh"));
            }
            return;
        };
        // `mesh: |` puts the text on the lines after the key; a quoted or plain scalar starts on
        // the key's own line.
        let span_line = self.offset + mesh.referenced.line().max(1);
        let col = usize::try_from(mesh.referenced.column()).unwrap_or(0);
        let line_text = self
            .src
            .lines()
            .nth(usize::try_from(span_line.saturating_sub(1)).unwrap_or(usize::MAX))
            .unwrap_or("");
        let at_col = line_text.chars().skip(col.saturating_sub(1)).collect::<String>();
        let block = matches!(at_col.trim_start().chars().next(), Some('|' | '>'));
        let base = if block {
            span_line
        } else {
            span_line.saturating_sub(1)
        };
        let text = mesh.value.clone();
        if text.trim().is_empty() {
            return;
        }
        match serde_saphyr::from_str::<MeshConfigDoc>(&text) {
            Ok(m) => self.mesh(m, base, &format!("{item}data.mesh.")),
            Err(e) => self.yaml_error(&e, base, &format!("{item}data.mesh")),
        }
    }

    /// Takes providers and rootNamespace from a MeshConfig whose line 1 is file line `base + 1`.
    fn mesh(&mut self, m: MeshConfigDoc, base: u64, prefix: &str) {
        for (i, p) in m.extension_providers.into_iter().enumerate() {
            let origin = Origin {
                file: self.file.to_owned(),
                line: line_of(&p).map(|l| l + base),
            };
            self.bundle
                .providers
                .push((p.value, origin, format!("{prefix}extensionProviders[{i}]")));
        }
        if let Some(rn) = m.root_namespace {
            let origin = Origin {
                file: self.file.to_owned(),
                line: line_of(&rn).map(|l| l + base),
            };
            match (&self.bundle.root_namespace, &self.bundle.root_namespace_origin) {
                (Some(prev), Some(prev_origin)) if *prev != rn.value => {
                    self.errors.push(err(
                        self.file,
                        origin.line,
                        &format!("{prefix}rootNamespace"),
                        format!(
                            "rootNamespace {:?} conflicts with {prev:?} set at {prev_origin}",
                            rn.value
                        ),
                    ));
                }
                _ => {
                    self.bundle.root_namespace = Some(rn.value);
                    self.bundle.root_namespace_origin = Some(origin);
                }
            }
        }
    }
}

fn kind_name(h: &Header) -> &str {
    match h.kind.as_deref() {
        Some(k) => k,
        None if h.mesh_config.is_some() => "meshConfig",
        None => "MeshConfig",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_line_offsets() {
        let docs = split_documents("a: 1\n---\nb: 2\n--- # c\n# only a comment\n---\nc: 3\n...\n");
        let got: Vec<(u64, &str)> = docs.iter().map(|d| (d.offset, d.text.as_str())).collect();
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0].0, 0);
        assert_eq!(got[1].0, 1);
        assert!(got[1].1.starts_with("---\nb: 2"));
        assert_eq!(got[2].0, 5);
    }

    #[test]
    fn dashes_inside_a_line_do_not_split() {
        let docs = split_documents("a: \"---\"\nb: ---x\n");
        assert_eq!(docs.len(), 1);
    }
}
