//! Route patterns of `[[trigger.http]]`: exact paths and `/prefix/...` wildcards.
use std::fmt;

/// A parsed route: `/a/b` matches only that path; `/a/...` matches `/a` and everything below it.
/// Written as a string in `nimbus.toml` (`route = "/api/..."`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize, serde::Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum RoutePattern {
    /// Matches exactly this path.
    Exact(String),
    /// Matches this prefix (without trailing `/`; empty for `/...`) and every path below it.
    Prefix(String),
}

crate::value::string_value!(RoutePattern, "write `/exact/path` or `/prefix/...`", ToString::to_string);

impl RoutePattern {
    /// Parses a route, or says what is wrong with it.
    pub fn parse(route: &str) -> Result<Self, String> {
        if !route.starts_with('/') {
            return Err(format!("route `{route}` must start with `/`"));
        }
        if route.contains(['?', '#']) {
            return Err(format!("route `{route}` must be a path without query or fragment"));
        }
        if let Some(prefix) = route.strip_suffix("/...") {
            if prefix.contains("...") {
                return Err(format!("route `{route}` may use `...` only once, as its last segment"));
            }
            return Ok(Self::Prefix(prefix.to_string()));
        }
        if route.contains("...") {
            return Err(format!("route `{route}` may use `...` only as its last segment, as in `/api/...`"));
        }
        Ok(Self::Exact(route.to_string()))
    }

    /// Whether `path` (no query string) is handled by this route.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(p) => p == path,
            Self::Prefix(p) => {
                path.starts_with(p.as_str()) && (path.len() == p.len() || path.as_bytes()[p.len()] == b'/')
            }
        }
    }
}

/// An HTTP method a `[[trigger.http]]` route accepts, written upper-case (`GET`, `POST`, or an
/// extension method such as `PURGE`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct HttpMethod(pub http::Method);

crate::value::string_value!(HttpMethod, "use upper-case methods such as \"GET\" or \"POST\"", |m| m.0.to_string());

impl HttpMethod {
    /// Parses an upper-case method, or says it is not one.
    pub fn parse(method: &str) -> Result<Self, String> {
        match http::Method::from_bytes(method.as_bytes()) {
            Ok(m) if !method.chars().any(|c| c.is_ascii_lowercase()) => Ok(Self(m)),
            _ => Err(format!("`{method}` is not an HTTP method")),
        }
    }
}

impl fmt::Display for RoutePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(p) => f.write_str(p),
            Self::Prefix(p) => write!(f, "{p}/..."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RoutePattern;

    #[test]
    fn exact_and_prefix_routes() {
        let exact = RoutePattern::parse("/hello").unwrap();
        assert!(exact.matches("/hello"));
        assert!(!exact.matches("/hello/x"));
        let prefix = RoutePattern::parse("/api/...").unwrap();
        assert!(prefix.matches("/api"));
        assert!(prefix.matches("/api/v1/x"));
        assert!(!prefix.matches("/apix"));
        let all = RoutePattern::parse("/...").unwrap();
        assert!(all.matches("/"));
        assert!(all.matches("/anything/at/all"));
        assert_eq!(all.to_string(), "/...");
    }

    #[test]
    fn bad_routes_say_why() {
        assert!(RoutePattern::parse("hello").unwrap_err().contains("must start with `/`"));
        assert!(RoutePattern::parse("/a/.../b").unwrap_err().contains("last segment"));
        assert!(RoutePattern::parse("/a?x=1").unwrap_err().contains("query"));
    }
}
