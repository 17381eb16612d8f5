//! authgate configuration: the gateway YAML (providers and policies under Istio's own field
//! names) and Istio Kubernetes YAML, parsed and validated into a typed [`Config`].
//!
//! No I/O here except reading the files named; errors carry file, line and field.

mod duration;
mod error;
pub mod istio;
pub mod model;
mod typed;
mod validate;

use std::path::{Path, PathBuf};

pub use duration::parse_duration;
pub use error::{ConfigError, ConfigErrors};
pub use typed::*;
pub use validate::{DEFAULT_PROVIDER_TIMEOUT, parse_host_port};

use error::Issues;
use istio::IstioBundle;

/// Loads the gateway file at `path`, plus the Istio files or directories in `istio_paths`
/// (and those its `include:` names), and validates the whole.
pub fn load(path: &Path, istio_paths: &[PathBuf]) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let src = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        line: None,
        field: "(file)".into(),
        message: format!("cannot read: {e}"),
    })?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let mut config = parse(&src, &file, base_dir, istio_paths)?;
    config.files.insert(0, path.to_path_buf());
    Ok(config)
}

/// Parses and validates gateway YAML held in memory; `file` names it in errors and `base_dir`
/// resolves relative paths.
pub fn parse(
    src: &str,
    file: &str,
    base_dir: &Path,
    istio_paths: &[PathBuf],
) -> Result<Config, ConfigErrors> {
    let raw: model::GatewayFile = if src.trim().is_empty() {
        model::GatewayFile::default()
    } else {
        serde_saphyr::from_str(src).map_err(|e| yaml_error(file, &e))?
    };
    let mut errors = Vec::new();
    let mut bundle = IstioBundle::default();
    for (p, _) in validate::include_paths(&raw, base_dir) {
        istio::load_istio_path(&p, &mut bundle, &mut errors);
    }
    for p in istio_paths {
        istio::load_istio_path(p, &mut bundle, &mut errors);
    }
    let mut files = std::mem::take(&mut bundle.files);
    // Directories too, so reload notices files added to them.
    files.extend(std::mem::take(&mut bundle.dirs));
    let mut issues = Issues::new(file);
    let mut config = validate::build(file, base_dir, raw, bundle, &mut issues);
    errors.extend(issues.errors);
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    config.files.extend(files);
    // Certificates, keys and CAs too: a reload is how they rotate.
    let tls_files: Vec<PathBuf> = config
        .listeners
        .iter()
        .filter_map(|l| l.tls.as_ref())
        .flat_map(|t| {
            t.certificates
                .iter()
                .flat_map(|c| [c.cert_file.clone(), c.key_file.clone()])
                .chain(t.client_ca_file.clone())
        })
        .chain(
            config
                .backends
                .iter()
                .filter_map(|b| b.tls.as_ref().and_then(|t| t.ca_file.clone())),
        )
        .collect();
    for f in tls_files {
        if !config.files.contains(&f) {
            config.files.push(f);
        }
    }
    Ok(config)
}

/// A YAML syntax or type error, reduced to file:line plus serde-saphyr's message.
pub(crate) fn yaml_error(file: &str, e: &serde_saphyr::Error) -> ConfigErrors {
    let line = e.location().map(|l| l.line()).filter(|l| *l > 0);
    // serde-saphyr renders the message, then a snippet of the source labelled `<input>`.
    let rendered = e.to_string().replace("<input>", file);
    let first = rendered
        .lines()
        .next()
        .unwrap_or("invalid YAML")
        .trim()
        .to_owned();
    // Name the field when the message does (unknown field `x`, missing field `y`).
    let field = first
        .split('`')
        .nth(1)
        .filter(|_| first.contains("field"))
        .map_or_else(|| "(yaml)".to_owned(), ToOwned::to_owned);
    ConfigErrors(vec![ConfigError {
        file: file.to_owned(),
        line,
        field,
        message: rendered,
    }])
}

#[cfg(test)]
mod tests;
