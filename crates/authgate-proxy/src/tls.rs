//! TLS termination with rustls (aws-lc-rs): several certificates chosen by SNI, optional client
//! certificate verification, and the peer identity Envoy would report.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use authgate_config::ListenerTls;
use http::HeaderValue;
use rustls::RootCertStore;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::pipeline::TlsInfo;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{file}: {message}")]
    File { file: String, message: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client CA: {0}")]
    Verifier(String),
}

fn file_err(path: &Path, message: impl ToString) -> TlsError {
    TlsError::File {
        file: path.display().to_string(),
        message: message.to_string(),
    }
}

/// Certificates with the DNS names they serve, picked by SNI; the first is the default.
#[derive(Debug)]
struct SniResolver {
    certs: Vec<(Vec<String>, Arc<CertifiedKey>)>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let chosen = hello.server_name().and_then(|sni| {
            let sni = sni.to_ascii_lowercase();
            self.certs
                .iter()
                .find(|(names, _)| names.iter().any(|n| dns_matches(n, &sni)))
        });
        chosen.or_else(|| self.certs.first()).map(|(_, k)| k.clone())
    }
}

fn dns_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => name
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => pattern == name,
    }
}

pub fn server_config(tls: &ListenerTls) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut certs = Vec::new();
    for c in &tls.certificates {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&c.cert_file)
            .map_err(|e| file_err(&c.cert_file, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| file_err(&c.cert_file, e))?;
        let Some(leaf) = chain.first() else {
            return Err(file_err(&c.cert_file, "no certificate in file"));
        };
        let names = dns_names(leaf);
        let key = PrivateKeyDer::from_pem_file(&c.key_file).map_err(|e| file_err(&c.key_file, e))?;
        let certified =
            CertifiedKey::from_der(chain, key, &provider).map_err(|e| file_err(&c.key_file, e))?;
        certs.push((names, Arc::new(certified)));
    }
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &tls.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca).map_err(|e| file_err(ca, e))? {
                roots
                    .add(cert.map_err(|e| file_err(ca, e))?)
                    .map_err(|e| file_err(ca, e))?;
            }
            let mut v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            if !tls.require_client_certificate {
                v = v.allow_unauthenticated();
            }
            builder.with_client_cert_verifier(v.build().map_err(|e| TlsError::Verifier(e.to_string()))?)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(SniResolver { certs }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn dns_names(der: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, cert)) = X509Certificate::from_der(der.as_ref()) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty()
        && let Some(cn) = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
    {
        names.push(cn.to_ascii_lowercase());
    }
    names
}

/// SNI, peer principal and `x-forwarded-client-cert` for an established connection.
pub fn session_info(conn: &rustls::ServerConnection) -> TlsInfo {
    let sni = conn.server_name().map(str::to_owned);
    let Some(leaf) = conn.peer_certificates().and_then(|c| c.first()) else {
        return TlsInfo {
            sni,
            principal: None,
            xfcc: None,
        };
    };
    let Ok((_, cert)) = X509Certificate::from_der(leaf.as_ref()) else {
        return TlsInfo {
            sni,
            principal: None,
            xfcc: None,
        };
    };
    let mut uris = Vec::new();
    let mut dns = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::URI(u) => uris.push((*u).to_owned()),
                GeneralName::DNSName(d) => dns.push((*d).to_owned()),
                _ => {}
            }
        }
    }
    let subject = cert.subject().to_string();
    // Envoy: URI SAN first, else DNS SAN, else the subject.
    let principal = uris
        .first()
        .or(dns.first())
        .cloned()
        .unwrap_or_else(|| subject.clone());
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, leaf.as_ref());
    let mut xfcc = String::from("Hash=");
    for b in digest.as_ref() {
        let _ = write!(xfcc, "{b:02x}");
    }
    let _ = write!(xfcc, ";Subject=\"{}\"", subject.replace('"', "\\\""));
    for u in &uris {
        let _ = write!(xfcc, ";URI={u}");
    }
    for d in &dns {
        let _ = write!(xfcc, ";DNS={d}");
    }
    TlsInfo {
        sni,
        principal: Some(principal),
        xfcc: HeaderValue::from_str(&xfcc).ok(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn wildcard_dns() {
        assert!(super::dns_matches("*.example.com", "a.example.com"));
        assert!(!super::dns_matches("*.example.com", "a.b.example.com"));
        assert!(!super::dns_matches("*.example.com", "example.com"));
        assert!(super::dns_matches("example.com", "example.com"));
    }
}
