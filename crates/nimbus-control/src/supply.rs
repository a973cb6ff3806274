//! Supply-chain checks at deploy: each component's dependencies — a function's `cargo
//! auditable` section, a service's lockfiles and SBOMs in its tree — matched against the
//! server's offline advisory database (`DATA_DIR/advisories`, filled by `nimbus advisories
//! import`), and each function's imports against its grants. The report is stored with the
//! revision; a deploy with an advisory at or above the blocking severity (the server's
//! `--block-advisories` or the app's `block_advisories`, the stricter) is refused before
//! anything is stored. Signatures shipped with components (`signatures/NAME.sig`) are checked
//! against the server's trusted signers: an altered one or one of another artifact is always
//! refused, and with `--require-signatures` so is a component no trusted key signed.
use std::io::Read;
use std::path::{Component as PathPart, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use nimbus_manifest::{AdvisorySeverity, Grants, Manifest};
use nimbus_security::supply::{
    self, Advisories, ArtifactSignature, Capability, Finding, Format, Package, Severity, SignatureError, TrustedSigners,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::bundle::Bundle;
use crate::error::ControlError;

/// Largest lockfile or SBOM read from a service's tree.
const MAX_INVENTORY_BYTES: u64 = 32 << 20;

/// Directories of a tree whose lockfiles describe dependencies' own builds, not the service's.
const SKIPPED_DIRS: [&str; 7] = ["node_modules", ".git", "target", "vendor", ".venv", "venv", "__pycache__"];

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
                    (Some(wasm), _) => (wasm, function(wasm, &component.grants, sboms(bundle, name))),
                    (None, Some(tree)) => (tree, service(tree)),
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

type Scanned = (Vec<Package>, Vec<String>, Vec<String>, Vec<ReachEntry>);

/// The SBOMs shipped with function `name` in `bundle`: (entry, format, JSON).
fn sboms<'a>(bundle: &'a Bundle, name: &str) -> Vec<(String, Format, &'a [u8])> {
    [(format!("{name}.cdx.json"), Format::CycloneDx), (format!("{name}.spdx.json"), Format::Spdx)]
        .into_iter()
        .filter_map(|(entry, format)| bundle.sboms.get(&entry).map(|json| (entry, format, json.as_slice())))
        .collect()
}

/// A function's dependencies (its `cargo auditable` section and the SBOMs shipped beside it)
/// and reach.
fn function(wasm: &[u8], grants: &Grants, sboms: Vec<(String, Format, &[u8])>) -> Scanned {
    let (mut packages, mut sources, mut notes) = (Vec::new(), Vec::new(), Vec::new());
    match supply::from_wasm(wasm) {
        Ok(found) if found.is_empty() => {}
        Ok(found) => {
            packages.extend(found);
            sources.push("cargo auditable section".to_string());
        }
        Err(e) => notes.push(format!("cargo auditable section: {e}")),
    }
    for (entry, format, json) in sboms {
        let parsed = std::str::from_utf8(json)
            .map_err(|e| format!("not UTF-8: {e}"))
            .and_then(|text| format.parse(text, &entry).map_err(|e| e.to_string()));
        match parsed {
            Ok(found) => {
                packages.extend(found);
                sources.push(entry);
            }
            Err(why) => notes.push(format!("{entry}: {why}")),
        }
    }
    let reach = match supply::imports(wasm) {
        Ok(imports) => supply::reach(&imports, &granted(grants))
            .into_iter()
            .map(|r| ReachEntry {
                capability: r.capability.to_string(),
                imported: r.imported,
                granted: r.granted,
                advice: r.advice().map(str::to_string),
            })
            .collect(),
        Err(e) => {
            notes.push(format!("imports: {e}"));
            Vec::new()
        }
    };
    (packages, sources, notes, reach)
}

/// The capabilities `grants` give.
fn granted(grants: &Grants) -> Vec<Capability> {
    [
        (!grants.kv.is_empty(), Capability::Kv),
        (!grants.publish.is_empty(), Capability::Publish),
        (!grants.actors.is_empty(), Capability::Actors),
        (!grants.secrets.is_empty(), Capability::Secrets),
        (!grants.outbound.is_empty(), Capability::Outbound),
    ]
    .into_iter()
    .filter_map(|(given, c)| given.then_some(c))
    .collect()
}

/// A service's dependencies: the lockfiles and SBOMs in its tree (a tar).
fn service(tree: &[u8]) -> Scanned {
    let (mut packages, mut sources, mut notes) = (Vec::new(), Vec::new(), Vec::new());
    let mut archive = tar::Archive::new(tree);
    let entries = match archive.entries() {
        Ok(entries) => entries,
        Err(e) => return (packages, sources, vec![format!("the tree cannot be read: {e}")], Vec::new()),
    };
    for entry in entries {
        let Ok(mut entry) = entry else { break };
        let Ok(path) = entry.path().map(|p| p.into_owned()) else { continue };
        let Some(format) = inventory(&path) else { continue };
        let origin = path.display().to_string();
        if entry.header().entry_type() != tar::EntryType::Regular || entry.size() > MAX_INVENTORY_BYTES {
            notes.push(format!("{origin}: not a regular file of at most {MAX_INVENTORY_BYTES} bytes; skipped"));
            continue;
        }
        let mut text = String::new();
        let parsed = entry
            .read_to_string(&mut text)
            .map_err(|e| e.to_string())
            .and_then(|_| format.parse(&text, &origin).map_err(|e| e.to_string()));
        match parsed {
            Ok(found) => {
                sources.push(origin);
                packages.extend(found);
            }
            Err(why) => notes.push(format!("{origin}: {why}")),
        }
    }
    (packages, sources, notes, Vec::new())
}

/// The inventory format of a tree's file at `path`, unless it is under a skipped directory.
fn inventory(path: &Path) -> Option<Format> {
    let skipped = path.components().any(|p| matches!(p, PathPart::Normal(n) if SKIPPED_DIRS.iter().any(|s| n == *s)));
    if skipped {
        return None;
    }
    Format::detect(path.file_name()?.to_str()?)
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
