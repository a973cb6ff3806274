//! Outbound HTTP grants: which origins a component may call.
use std::fmt;

/// One entry of `grants.outbound`: `scheme://host[:port]`, where `host` may be `*` (any host) or
/// start with `*.` (any subdomain). Without a port the scheme's default port is meant. Written as
/// a string in `nimbus.toml`; it serializes back to the text it was written as.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct OutboundGrant {
    text: String,
    scheme: String,
    host: HostPattern,
    port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    Exact(String),
    Subdomain(String),
}

crate::value::string_value!(
    OutboundGrant,
    "write an origin such as `https://api.example.com` or `http://127.0.0.1:8080`",
    |g| g.text.clone()
);

impl OutboundGrant {
    /// Parses a grant, or says what is wrong with it.
    pub fn parse(grant: &str) -> Result<Self, String> {
        let (scheme, rest) = grant
            .split_once("://")
            .ok_or_else(|| format!("outbound grant `{grant}` needs a scheme, as in `https://api.example.com`"))?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            other => return Err(format!("outbound grant `{grant}`: scheme `{other}` is not http or https")),
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
            return Err(format!(
                "outbound grant `{grant}` must be an origin (scheme, host, optional port) without path, query or user"
            ));
        }
        let (host, port) = split_host_port(authority).map_err(|e| format!("outbound grant `{grant}`: {e}"))?;
        let port = port.unwrap_or(default_port);
        let host = host.to_ascii_lowercase();
        let host = if host == "*" {
            HostPattern::Any
        } else if let Some(suffix) = host.strip_prefix("*.") {
            if suffix.is_empty() || suffix.contains('*') {
                return Err(format!("outbound grant `{grant}`: `*.` must be followed by a domain"));
            }
            HostPattern::Subdomain(suffix.to_string())
        } else if host.contains('*') {
            return Err(format!("outbound grant `{grant}`: `*` may stand only for the whole host or as `*.domain`"));
        } else {
            HostPattern::Exact(host)
        };
        Ok(Self { text: grant.to_string(), scheme, host, port })
    }

    /// Whether a request to `scheme://host:port` is allowed by this grant.
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        if !self.scheme.eq_ignore_ascii_case(scheme) || self.port != port {
            return false;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        match &self.host {
            HostPattern::Any => true,
            HostPattern::Exact(h) => h.trim_start_matches('[').trim_end_matches(']') == host,
            HostPattern::Subdomain(suffix) => {
                host.strip_suffix(suffix.as_str()).is_some_and(|head| head.len() > 1 && head.ends_with('.'))
            }
        }
    }
}

fn split_host_port(authority: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']').ok_or("unclosed `[` in IPv6 address")?;
        let rest = &authority[end + 1..];
        (&authority[..=end], rest.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    let port = port
        .map(|p| p.parse::<u16>().map_err(|_| format!("port `{p}` is not a number from 0 to 65535")))
        .transpose()?;
    Ok((host, port))
}

impl fmt::Display for OutboundGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match &self.host {
            HostPattern::Any => "*".to_string(),
            HostPattern::Exact(h) => h.clone(),
            HostPattern::Subdomain(s) => format!("*.{s}"),
        };
        write!(f, "{}://{}:{}", self.scheme, host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::OutboundGrant;

    #[test]
    fn exact_origin_with_default_port() {
        let g = OutboundGrant::parse("https://api.example.com").unwrap();
        assert!(g.allows("https", "api.example.com", 443));
        assert!(g.allows("https", "API.example.com", 443));
        assert!(!g.allows("http", "api.example.com", 443));
        assert!(!g.allows("https", "api.example.com", 8443));
        assert!(!g.allows("https", "evil.com", 443));
    }

    #[test]
    fn wildcards_and_ports() {
        let g = OutboundGrant::parse("https://*.example.com").unwrap();
        assert!(g.allows("https", "a.example.com", 443));
        assert!(!g.allows("https", "example.com", 443));
        assert!(!g.allows("https", "badexample.com", 443));
        let g = OutboundGrant::parse("http://127.0.0.1:8080").unwrap();
        assert!(g.allows("http", "127.0.0.1", 8080));
        assert!(!g.allows("http", "127.0.0.1", 8081));
        let g = OutboundGrant::parse("http://[::1]:9000/").unwrap();
        assert!(g.allows("http", "[::1]", 9000));
        assert!(OutboundGrant::parse("http://*:80").unwrap().allows("http", "x.y", 80));
    }

    #[test]
    fn bad_grants_say_why() {
        assert!(OutboundGrant::parse("api.example.com").unwrap_err().contains("needs a scheme"));
        assert!(OutboundGrant::parse("ftp://x").unwrap_err().contains("not http or https"));
        assert!(OutboundGrant::parse("https://x/path").unwrap_err().contains("without path"));
        assert!(OutboundGrant::parse("https://x:99999").unwrap_err().contains("port"));
        assert!(OutboundGrant::parse("https://a*b.com").unwrap_err().contains("`*`"));
    }
}
