//! The subset of Envoy's header formatter that `includeAdditionalHeadersInCheck` values may use
//! (Istio passes them to Envoy's `headers_to_add`, which substitutes `%…%` commands).
//!
//! Supported: literal text, `%%` for a literal `%`, `%REQ(name)%` with Envoy's `?alternative`
//! and `:max_length` forms, and a few connection commands. Anything else is refused when the
//! provider is built, as Envoy refuses it when loading its config.

use std::fmt;

use crate::check::CheckRequestParts;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderFormatter {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Req {
        name: String,
        alternative: Option<String>,
        max_len: Option<usize>,
    },
    DownstreamRemoteAddress {
        with_port: bool,
    },
    DownstreamLocalAddress {
        with_port: bool,
    },
    Protocol,
    RequestedServerName,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError(String);

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl HeaderFormatter {
    pub fn parse(template: &str) -> Result<Self, FormatError> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = template;
        while let Some(pos) = rest.find('%') {
            text.push_str(&rest[..pos]);
            rest = &rest[pos + 1..];
            if let Some(after) = rest.strip_prefix('%') {
                text.push('%');
                rest = after;
                continue;
            }
            let Some(end) = rest.find('%') else {
                return Err(FormatError(format!(
                    "unterminated '%' command in {template:?} (write '%%' for a literal '%')"
                )));
            };
            let command = &rest[..end];
            rest = &rest[end + 1..];
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text)));
            }
            parts.push(parse_command(command)?);
        }
        text.push_str(rest);
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Self { parts })
    }

    /// True when the template has no command (the value is the same for every request).
    pub fn is_static(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Text(_)))
    }

    pub fn format(&self, req: &CheckRequestParts<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.extend_from_slice(t.as_bytes()),
                Part::Req {
                    name,
                    alternative,
                    max_len,
                } => {
                    let mut value = request_header(req, name);
                    if value.is_none()
                        && let Some(alt) = alternative
                    {
                        value = request_header(req, alt);
                    }
                    if let Some(mut v) = value {
                        if let Some(max) = max_len {
                            v.truncate(*max);
                        }
                        out.extend_from_slice(&v);
                    }
                }
                Part::DownstreamRemoteAddress { with_port } => {
                    push_addr(&mut out, req.source, *with_port);
                }
                Part::DownstreamLocalAddress { with_port } => {
                    push_addr(&mut out, req.destination, *with_port);
                }
                Part::Protocol => out.extend_from_slice(crate::check::protocol_name(req.version).as_bytes()),
                Part::RequestedServerName => {
                    if let Some(sni) = req.sni {
                        out.extend_from_slice(sni.as_bytes());
                    }
                }
            }
        }
        out
    }
}

fn push_addr(out: &mut Vec<u8>, addr: std::net::SocketAddr, with_port: bool) {
    let s = if with_port {
        addr.to_string()
    } else {
        addr.ip().to_string()
    };
    out.extend_from_slice(s.as_bytes());
}

/// The first value of a request header (what Envoy's `%REQ()%` returns), pseudo-headers
/// included. `host` is the authority, as in Envoy's header map.
fn request_header(req: &CheckRequestParts<'_>, name: &str) -> Option<Vec<u8>> {
    let name = name.to_ascii_lowercase();
    match name.as_str() {
        ":authority" | "host" => return Some(req.authority.as_bytes().to_vec()),
        ":path" => return Some(req.path_and_query.as_bytes().to_vec()),
        ":method" => return Some(req.method.as_str().as_bytes().to_vec()),
        ":scheme" => return Some(req.scheme.as_bytes().to_vec()),
        _ => {}
    }
    req.headers.get(name.as_str()).map(|v| v.as_bytes().to_vec())
}

fn parse_command(command: &str) -> Result<Part, FormatError> {
    let bad = |why: &str| FormatError(format!("unsupported header formatter '%{command}%': {why}"));
    if let Some(args) = command.strip_prefix("REQ(") {
        let Some(close) = args.find(')') else {
            return Err(bad("missing ')'"));
        };
        let inner = &args[..close];
        let tail = &args[close + 1..];
        let max_len = if tail.is_empty() {
            None
        } else {
            let n = tail
                .strip_prefix(':')
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| bad("expected ':<max length>' after ')'"))?;
            Some(n)
        };
        let (name, alternative) = match inner.split_once('?') {
            Some((n, a)) => (n, Some(a.to_owned())),
            None => (inner, None),
        };
        if name.is_empty() || alternative.as_deref().is_some_and(str::is_empty) {
            return Err(bad("empty header name"));
        }
        return Ok(Part::Req {
            name: name.to_owned(),
            alternative,
            max_len,
        });
    }
    match command {
        "DOWNSTREAM_REMOTE_ADDRESS" | "DOWNSTREAM_DIRECT_REMOTE_ADDRESS" => {
            Ok(Part::DownstreamRemoteAddress { with_port: true })
        }
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" | "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT" => {
            Ok(Part::DownstreamRemoteAddress { with_port: false })
        }
        "DOWNSTREAM_LOCAL_ADDRESS" => Ok(Part::DownstreamLocalAddress { with_port: true }),
        "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => Ok(Part::DownstreamLocalAddress { with_port: false }),
        "PROTOCOL" => Ok(Part::Protocol),
        "REQUESTED_SERVER_NAME" => Ok(Part::RequestedServerName),
        _ => Err(bad(
            "authgate supports %REQ(name)%, %REQ(name?alt):N%, %DOWNSTREAM_REMOTE_ADDRESS[_WITHOUT_PORT]%, \
             %DOWNSTREAM_LOCAL_ADDRESS[_WITHOUT_PORT]%, %PROTOCOL%, %REQUESTED_SERVER_NAME% and %%",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_text_and_commands() {
        let f = HeaderFormatter::parse("static%%pct").expect("valid");
        assert!(f.is_static());
        assert_eq!(f.parts, vec![Part::Text("static%pct".into())]);

        let f = HeaderFormatter::parse("a-%REQ(X-Id?x-alt):4%-b").expect("valid");
        assert_eq!(
            f.parts,
            vec![
                Part::Text("a-".into()),
                Part::Req {
                    name: "X-Id".into(),
                    alternative: Some("x-alt".into()),
                    max_len: Some(4)
                },
                Part::Text("-b".into()),
            ]
        );
        assert!(HeaderFormatter::parse("100%").is_err());
        assert!(HeaderFormatter::parse("%START_TIME%").is_err());
        assert!(HeaderFormatter::parse("%REQ()%").is_err());
        assert!(HeaderFormatter::parse("%REQ(x):y%").is_err());
    }
}
