//! Workload identity options of `nimbus up` and `nimbus server`: the trust domain of the SPIFFE
//! IDs components run as, and the identity CA (`DATA_DIR/identity/ca`, created on first start)
//! that issues services their short-lived certificates (files under `DATA_DIR/identity/workloads`).
//! A killed run leaves that directory behind; the next start clears it.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use nimbus_security::identity::{DEFAULT_TRUST_DOMAIN, TrustDomain, WorkloadCerts};
use nimbus_security::tls::ca::LocalCa;

#[derive(clap::Args, Debug, Clone)]
pub(crate) struct IdentityArgs {
    /// The trust domain of workload identities: a component is
    /// `spiffe://DOMAIN/app/APP/component/NAME` in traces, in the `x-nimbus-caller` header of the
    /// calls it makes to other components and in a service's certificate.
    #[arg(long, env = "NIMBUS_TRUST_DOMAIN", default_value = DEFAULT_TRUST_DOMAIN, value_parser = TrustDomain::parse)]
    pub(crate) trust_domain: TrustDomain,
    /// How long a service's identity certificate is valid; it is renewed at half that.
    #[arg(long, env = "NIMBUS_WORKLOAD_CERT_TTL_S", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(2..=30 * 86_400))]
    pub(crate) workload_cert_ttl_s: u64,
}

impl IdentityArgs {
    /// This node's identity and the root that services' certificates chain to, for the banner.
    pub(crate) fn describe(&self, data_dir: &Path) -> String {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "localhost".into());
        let host = host.trim();
        let root = data_dir.join("identity/ca").join(nimbus_security::tls::ca::CA_CERT);
        format!("{} (services' certificates chain to {})", self.trust_domain.node(host), root.display())
    }

    /// The issuer of services' certificates, from the identity CA in `data_dir`, and the
    /// directory their files go under.
    pub(crate) fn workload_certs(&self, data_dir: &Path) -> anyhow::Result<(Arc<WorkloadCerts>, PathBuf)> {
        let dir = data_dir.join("identity");
        // Searchable (not readable) by others: a sandboxed service's user reaches its own
        // directory under `workloads`; the CA's key stays in `ca` (mode 0700).
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o711)))
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let ca = LocalCa::open_or_create(&dir.join("ca"))
            .with_context(|| format!("cannot open the identity CA in {}", dir.display()))?;
        let workloads = dir.join("workloads");
        // Left over by a run that was killed: certificates of services that no longer run.
        let _ = std::fs::remove_dir_all(&workloads);
        let certs = WorkloadCerts::new(ca, Duration::from_secs(self.workload_cert_ttl_s));
        Ok((Arc::new(certs), workloads))
    }
}
