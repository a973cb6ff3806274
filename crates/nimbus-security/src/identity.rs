//! Workload identities: who a node or a component is, as a SPIFFE ID
//! (`spiffe://DOMAIN/app/APP/component/NAME`) under the platform's trust domain. Spans carry them
//! (`nimbus.workload.id`), a component-to-component call names its caller by one (the
//! [`CALLER_HEADER`] a callee receives), and the inter-node transport of cluster mode presents
//! them in mTLS certificates. [`WorkloadCerts`] issues a workload short-lived certificates of its
//! ID (X.509 SVIDs) as the files a service reads (`svid.pem`, `svid_key.pem`, `bundle.pem`).
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::tls::TlsError;
use crate::tls::ca::LocalCa;

/// The trust domain when none is configured (`--trust-domain`).
pub const DEFAULT_TRUST_DOMAIN: &str = "nimbus.local";

/// The request header naming the calling workload of a component-to-component call
/// (`spiffe://nimbus.local/app/shop/component/web`). The platform sets it; the gateway removes it
/// from every request that comes from outside, so a callee can rely on it.
pub const CALLER_HEADER: &str = "x-nimbus-caller";

/// A SPIFFE trust domain: lower-case letters, digits, `.`, `-` and `_` (the SPIFFE ID grammar),
/// 1 to 255 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TrustDomain(Arc<str>);

impl TrustDomain {
    /// Checks a trust domain, or says what is wrong with it.
    pub fn parse(domain: &str) -> Result<Self, String> {
        let ok = !domain.is_empty()
            && domain.len() <= 255
            && domain.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
        if ok {
            Ok(Self(domain.into()))
        } else {
            Err(format!(
                "trust domain `{domain}` must be 1 to 255 lower-case letters, digits, `.`, `-` and `_`, \
                 e.g. `prod.example.com`"
            ))
        }
    }

    /// The domain.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The identity of a node.
    pub fn node(&self, node: &str) -> WorkloadId {
        WorkloadId::new(format!("spiffe://{}/node/{}", self.0, segment(node)))
    }

    /// The identity of a component of an app.
    pub fn component(&self, app: &str, component: &str) -> WorkloadId {
        WorkloadId::new(format!("spiffe://{}/app/{}/component/{}", self.0, segment(app), segment(component)))
    }
}

impl Default for TrustDomain {
    fn default() -> Self {
        Self(DEFAULT_TRUST_DOMAIN.into())
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A path segment of a SPIFFE ID: app, component, node and revision names are validated
/// elsewhere; anything outside the SPIFFE path alphabet is replaced so an ID is always well
/// formed.
fn segment(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || "-._".contains(c) { c } else { '_' }).collect()
}

/// A SPIFFE ID. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WorkloadId(Arc<str>);

impl WorkloadId {
    fn new(uri: String) -> Self {
        Self(uri.into())
    }

    /// The `spiffe://` URI.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkloadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The workload certificate's file in a workload's identity directory.
pub const SVID_CERT: &str = "svid.pem";
/// The workload certificate's private key (PKCS#8, readable by the workload only).
pub const SVID_KEY: &str = "svid_key.pem";
/// The roots a workload trusts for its peers' certificates: the identity CA.
pub const SVID_BUNDLE: &str = "bundle.pem";

/// Removes from `headers` every header that claims to be [`CALLER_HEADER`] or
/// [`crate::mesh::DEPTH_HEADER`], also spelt with `_` for `-` (which CGI-style servers read as the
/// same variable): only the platform says who is calling and how deep.
pub fn strip_claims(headers: &mut http::HeaderMap) {
    let claims = |name: &http::HeaderName| {
        let name = name.as_str();
        [CALLER_HEADER, crate::mesh::DEPTH_HEADER].iter().any(|claim| {
            name.len() == claim.len()
                && name.bytes().zip(claim.bytes()).all(|(a, b)| a == b || (a == b'_' && b == b'-'))
        })
    };
    if headers.keys().any(claims) {
        let names: Vec<_> = headers.keys().filter(|n| claims(n)).cloned().collect();
        for name in names {
            headers.remove(&name);
        }
    }
}

/// Issues workloads their certificates from a node's identity CA, each valid for `ttl`.
#[derive(Debug)]
pub struct WorkloadCerts {
    ca: LocalCa,
    ttl: Duration,
}

impl WorkloadCerts {
    /// Issues from `ca` certificates valid for `ttl`.
    pub fn new(ca: LocalCa, ttl: Duration) -> Self {
        Self { ca, ttl }
    }

    /// How long a certificate is valid.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Writes a fresh certificate of `id` to `dir` ([`SVID_CERT`], [`SVID_KEY`], [`SVID_BUNDLE`]),
    /// each file replaced whole, the key first. The key is readable by `owner` (uid, gid) alone
    /// when given (else by this process's user alone); the certificates by anyone.
    pub fn renew(&self, id: &WorkloadId, dir: &Path, owner: Option<(u32, u32)>) -> Result<(), TlsError> {
        let issued = self.ca.issue_workload(id, self.ttl)?;
        crate::tls::ca::write(&dir.join(SVID_KEY), issued.key_pem.as_bytes(), 0o400, owner)?;
        crate::tls::ca::write(&dir.join(SVID_CERT), issued.cert_pem.as_bytes(), 0o444, None)?;
        crate::tls::ca::write(&dir.join(SVID_BUNDLE), self.ca.cert_pem().as_bytes(), 0o444, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_spiffe_layout() {
        let domain = TrustDomain::parse("prod.example.com").unwrap();
        let id = domain.component("shop", "web");
        assert_eq!(id.as_str(), "spiffe://prod.example.com/app/shop/component/web");
        assert_eq!(domain.node("n1").as_str(), "spiffe://prod.example.com/node/n1");
        assert_eq!(domain.node("a/b c").as_str(), "spiffe://prod.example.com/node/a_b_c");
    }

    #[test]
    fn claims_of_identity_are_stripped_in_every_spelling() {
        let mut headers = http::HeaderMap::new();
        for name in ["x-nimbus-caller", "x_nimbus_caller", "X_Nimbus-Caller", "x-nimbus_invoke-depth", "x-nimbus-other"]
        {
            headers.append(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), "v".parse().unwrap());
        }
        strip_claims(&mut headers);
        assert_eq!(headers.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-nimbus-other"]);
    }

    #[test]
    fn bad_trust_domains_say_why() {
        for bad in ["", "Prod", "a/b", "a b", &"a".repeat(256)] {
            assert!(TrustDomain::parse(bad).unwrap_err().contains("trust domain"), "{bad}");
        }
        assert_eq!(TrustDomain::default().as_str(), DEFAULT_TRUST_DOMAIN);
    }
}
