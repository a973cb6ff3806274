//! Supply-chain checks at deploy: each component's dependencies — a function's `cargo
//! auditable` section, a service's lockfiles and SBOMs in its tree — matched against the
//! server's offline advisory database (`DATA_DIR/advisories`, filled by `nimbus advisories
//! import`), and each function's imports against its grants. The report is stored with the
//! revision; a deploy with an advisory at or above the blocking severity (the server's
//! `--block-advisories` or the app's `block_advisories`, the stricter) is refused before
//! anything is stored. Signatures shipped with components (`signatures/NAME.sig`) are checked
//! against the server's trusted signers: an altered one or one of another artifact is always
//! refused, and with `--require-signatures` so is a component no trusted key signed.
mod inventory;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use nimbus_manifest::{AdvisorySeverity, Manifest};
use nimbus_security::supply::{self, Advisories, ArtifactSignature, Finding, Severity, SignatureError, TrustedSigners};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::bundle::Bundle;
use crate::error::ControlError;

/// What the supply-chain check found for a revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SupplyReport {
    /// When it was checked, Unix seconds.
    pub scanned_at: u64,
    /// Advisories in the server's database then (0: none imported, nothing could match).
    pub advisories: usize,
    /// The severity that blocks a deploy (`low`, `medium`, `high`, `critical`); absent: advisories
    /// are reported only.
    pub block: Option<String>,
    /// The most severe advisory found; absent: none.
    pub worst: Option<String>,
    /// How many signing keys the server trusted then.
    #[serde(default)]
    pub trusted_signers: usize,
    /// Whether every component had to be signed by one of them.
    #[serde(default)]
    pub require_signatures: bool,
    /// Per component.
    pub components: Vec<ComponentSupply>,
}

/// One component's dependencies, advisories and reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ComponentSupply {
    /// The component.
    pub component: String,
    /// Its artifact's digest (a service's: its tree's), `sha256:HEX`.
    #[serde(default)]
    pub digest: String,
    /// The trusted signer whose signature of that digest it carries; absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
    /// Where its dependencies were read from (`cargo auditable section`, `api/Cargo.lock`).
    pub sources: Vec<String>,
    /// How many dependencies were found.
    pub packages: usize,
    /// Known advisories affecting them.
    pub findings: Vec<SupplyFinding>,
    /// A function's imported capabilities against its grants.
    pub reach: Vec<ReachEntry>,
    /// Inventories that could not be read, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// A known advisory affecting a dependency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SupplyFinding {
    /// The advisory (`RUSTSEC-...`, `GHSA-...`).
    pub id: String,
    /// Other ids of it (`CVE-...`).
    pub aliases: Vec<String>,
    /// `unknown`, `low`, `medium`, `high` or `critical`.
    pub severity: String,
    /// `crates.io`, `npm`, `PyPI` or `Go`.
    pub ecosystem: String,
    /// The package.
    pub package: String,
    /// Its version.
    pub version: String,
    /// Where it was found.
    pub source: String,
    /// What is wrong.
    pub summary: String,
    /// The version to upgrade to, if the advisory names one.
    pub fixed: Option<String>,
}

/// A capability a function imports or was granted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReachEntry {
    /// `kv`, `publish`, `actors`, `secrets`, `outbound`, or another imported interface package.
    pub capability: String,
    /// The component imports it (could ask for it).
    pub imported: bool,
    /// Its grants give it.
    pub granted: bool,
    /// What to do about a mismatch.
    pub advice: Option<String>,
}

/// The supply-chain check of a server.
#[derive(Debug)]
pub struct SupplyChain {
    db: PathBuf,
    block: Option<Severity>,
    signers: TrustedSigners,
    require_signatures: bool,
    /// The database as last read, with the directory's modification time then.
    cache: Mutex<Option<(Option<SystemTime>, Arc<Advisories>)>>,
}

impl SupplyChain {
    /// Checks against the advisories in `db`, refusing deploys with one at or above `block`.
    pub fn new(db: PathBuf, block: Option<Severity>) -> Self {
        Self { db, block, signers: TrustedSigners::default(), require_signatures: false, cache: Mutex::new(None) }
    }

    /// Checks components' signatures against `signers`; with `require`, a component none of
    /// them signed is refused.
    pub fn with_signatures(self, signers: TrustedSigners, require: bool) -> Self {
        Self { signers, require_signatures: require, ..self }
    }

    /// The database, read again when an import changed it.
    fn advisories(&self) -> Result<Arc<Advisories>, ControlError> {
        let modified = std::fs::metadata(&self.db).and_then(|m| m.modified()).ok();
        let mut cache = self.cache.lock().expect("advisories cache");
        if let Some((at, db)) = &*cache
            && *at == modified
        {
            return Ok(db.clone());
        }
        let db = Arc::new(Advisories::open(&self.db).map_err(|e| ControlError::Unavailable {
            message: format!(
                "the advisory database in {} cannot be read; import it again with `nimbus advisories import`",
                self.db.display()
            ),
            source: Some(nimbus_observe::cause(e)),
        })?);
        *cache = Some((modified, db.clone()));
        Ok(db)
    }

    /// Checks `bundle` (whose manifest is `manifest`); refused when an advisory reaches the
    /// blocking severity.
    pub(crate) fn check(&self, manifest: &Manifest, bundle: &Bundle) -> Result<SupplyReport, ControlError> {
        let advisories = self.advisories()?;
        let block = [self.block, manifest.app.block_advisories.map(severity)].into_iter().flatten().min();
        let mut components = Vec::new();
        let mut refusals = Vec::new();
        for (name, component) in &manifest.component {
            let (bytes, (packages, sources, mut notes, reach)) =
                match (bundle.artifacts.get(name), bundle.trees.get(name)) {
                    (Some(wasm), _) => {
                        (wasm, inventory::function(wasm, &component.grants, inventory::sboms(bundle, name)))
                    }
                    (None, Some(tree)) => (tree, inventory::service(tree)),
                    (None, None) => continue,
                };
            let packages = supply::dedup(packages);
            let digest = crate::bundle::digest(bytes);
            let signed_by = match self.signature(bundle.signatures.get(name), &digest) {
                Ok(signer) => signer,
                Err(Refusal::Block(why)) => {
                    refusals.push(format!("component `{name}`: {why}"));
                    None
                }
                Err(Refusal::Note(why)) => {
                    notes.push(why);
                    None
                }
            };
            let findings: Vec<SupplyFinding> = advisories.scan(&packages).into_iter().map(finding).collect();
            components.push(ComponentSupply {
                component: name.clone(),
                digest,
                signed_by,
                sources,
                packages: packages.len(),
                findings,
                reach,
                notes,
            });
        }
        let found: Vec<(&str, &SupplyFinding)> =
            components.iter().flat_map(|c| c.findings.iter().map(move |f| (c.component.as_str(), f))).collect();
        let worst = found.iter().filter_map(|(_, f)| f.severity.parse::<Severity>().ok()).max();
        let unsigned = refusals.len();
        if let Some(block) = block {
            refusals.extend(
                found
                    .iter()
                    .filter(|(_, f)| f.severity.parse::<Severity>().is_ok_and(|s| s >= block))
                    .map(|(c, f)| describe(c, f)),
            );
        }
        if !refusals.is_empty() {
            let mut reasons = Vec::new();
            if refusals.len() > unsigned {
                let block = block.map_or_else(String::new, |b| b.to_string());
                reasons.push(format!("{} advisories of severity {block} or above", refusals.len() - unsigned));
            }
            if unsigned > 0 {
                reasons.push(format!("{unsigned} components without a valid trusted signature"));
            }
            return Err(ControlError::Invalid {
                message: format!(
                    "the supply-chain policy refuses this deploy: {}; nothing was deployed (upgrade the dependencies to the fixed versions, sign the artifacts with `nimbus signing sign`)",
                    reasons.join(" and ")
                ),
                details: refusals,
            });
        }
        for (component, f) in &found {
            tracing::warn!(app = %manifest.app.name, "{}", describe(component, f));
        }
        Ok(SupplyReport {
            scanned_at: crate::platform::now(),
            advisories: advisories.len(),
            block: block.map(|b| b.to_string()),
            worst: worst.map(|w| w.to_string()),
            trusted_signers: self.signers.len(),
            require_signatures: self.require_signatures,
            components,
        })
    }

    /// The trusted signer of a component whose artifact (or tree) has `digest`, from the
    /// signature file shipped with it, if any.
    fn signature(&self, file: Option<&Vec<u8>>, digest: &str) -> Result<Option<String>, Refusal> {
        let Some(file) = file else {
            return match self.require_signatures {
                true => Err(Refusal::Block(
                    "it is not signed, and this server requires a trusted signature: sign it with `nimbus signing sign` (or deploy with `nimbus deploy --sign KEY`)".into(),
                )),
                false => Ok(None),
            };
        };
        let checked = ArtifactSignature::parse(file).and_then(|s| self.signers.verify(&s, digest));
        match checked {
            Ok(signer) => Ok(Some(signer)),
            Err(e @ SignatureError::Untrusted { .. }) if !self.require_signatures => {
                Err(Refusal::Note(format!("signature: {e}")))
            }
            Err(e) => Err(Refusal::Block(format!("signature: {e}"))),
        }
    }
}

/// What a signature problem does to a deploy.
enum Refusal {
    /// Refuses it.
    Block(String),
    /// Is noted in the report.
    Note(String),
}

fn finding(f: Finding) -> SupplyFinding {
    SupplyFinding {
        id: f.id,
        aliases: f.aliases,
        severity: f.severity.to_string(),
        ecosystem: f.package.ecosystem.to_string(),
        package: f.package.name,
        version: f.package.version,
        source: f.package.source,
        summary: f.summary,
        fixed: f.fixed,
    }
}

/// One line naming a finding, for an error or the log.
fn describe(component: &str, f: &SupplyFinding) -> String {
    let upgrade = f.fixed.as_ref().map_or_else(String::new, |v| format!("; upgrade to {v}"));
    format!(
        "component `{component}`: {} {} ({}, from {}) has {} ({}): {}{upgrade}",
        f.package, f.version, f.ecosystem, f.source, f.id, f.severity, f.summary
    )
}

/// The manifest's severity as the scanner ranks it.
fn severity(s: AdvisorySeverity) -> Severity {
    match s {
        AdvisorySeverity::Low => Severity::Low,
        AdvisorySeverity::Medium => Severity::Medium,
        AdvisorySeverity::High => Severity::High,
        AdvisorySeverity::Critical => Severity::Critical,
    }
}
