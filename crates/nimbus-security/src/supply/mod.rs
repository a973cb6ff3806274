//! Supply-chain scans: what a deployed artifact says it is built from, matched against an
//! offline advisory database in the [OSV](https://ossf.github.io/osv-schema/) format, and what a
//! component imports compared with what it was granted.
//!
//! This module owns the *inventory* ([`Package`]s read from the `.dep-v0` section `cargo
//! auditable` writes into a wasm binary ([`from_wasm`]), from CycloneDX and SPDX JSON SBOMs and
//! from `Cargo.lock`, `package-lock.json`, `requirements.txt`, `poetry.lock` and `go.sum`
//! ([`Format`], [`scan_tree`], [`sboms_beside`])), the *advisory database* ([`Advisories`]: OSV
//! files imported into a directory, matched by exact versions and by `SEMVER`/`ECOSYSTEM` ranges
//! with semver for crates.io, npm and Go and PEP 440 for PyPI) and the *reach* of a component
//! ([`imports`], [`capabilities`], [`reach`]: its imported interfaces against its granted
//! capabilities), and *artifact signatures* ([`ArtifactSignature`]: a build pipeline's Ed25519
//! signature over an artifact's digest; [`TrustedSigners`]: the keys a server accepts). Every limit is enforced on the input (sizes, decompressed bytes, directory
//! depth and entries), so a hostile artifact or tree yields an error, never an exhausted node.
//!
//! It does not reach the network (advisories are imported from files the operator fetched),
//! store anything beyond the advisory directory it is given, or decide policy: the caller compares
//! the worst [`Finding::severity`] with its own threshold and decides whether a deploy goes on.
//! It does not read `nimbus.toml` either: the caller passes the granted [`Capability`]s.
//!
//! ```
//! use nimbus_security::supply::{Advisories, Format, Severity};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let feed = tempfile::tempdir()?;
//! std::fs::write(feed.path().join("RUSTSEC-2099-0001.json"), r#"{
//!     "id": "RUSTSEC-2099-0001", "summary": "Out-of-bounds read in `tinyparse`",
//!     "database_specific": { "severity": "HIGH" },
//!     "affected": [{ "package": { "ecosystem": "crates.io", "name": "tinyparse" },
//!                    "ranges": [{ "type": "SEMVER", "events": [{ "introduced": "0" }, { "fixed": "0.4.2" }] }] }]
//! }"#)?;
//! let db = tempfile::tempdir()?;
//! let report = Advisories::import(feed.path(), db.path())?;
//! assert_eq!(report.imported, 1);
//!
//! let lock = r#"
//! [[package]]
//! name = "tinyparse"
//! version = "0.4.1"
//! source = "registry+https://github.com/rust-lang/crates.io-index"
//! "#;
//! let packages = Format::CargoLock.parse(lock, "Cargo.lock")?;
//! let findings = Advisories::open(db.path())?.scan(&packages);
//! assert_eq!(findings[0].severity, Severity::High);
//! assert_eq!(findings[0].fixed.as_deref(), Some("0.4.2"));
//! // The caller's policy: refuse a deploy at or above its threshold.
//! let threshold: Severity = "high".parse()?;
//! assert!(findings.iter().any(|f| f.severity >= threshold));
//! # Ok(()) }
//! ```
mod auditable;
mod error;
mod imports;
mod lockfiles;
mod osv;
mod pep440;
mod record;
mod sbom;
mod severity;
mod signature;
mod tree;
mod version;

#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

pub use auditable::from_wasm;
pub use error::SupplyError;
pub use imports::{Capability, Reach, capabilities, imports, reach};
pub use osv::{Advisories, Finding, ImportReport, Skipped};
pub use severity::Severity;
pub use signature::{ArtifactSignature, SIGNATURE_FORMAT, SignatureError, TrustedSigners};
pub use tree::{Format, MAX_INVENTORY_BYTES, SKIPPED_DIRS, sboms_beside, scan_tree};

/// A package registry whose advisories OSV publishes under this name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum Ecosystem {
    /// Rust crates (`crates.io`).
    #[serde(rename = "crates.io")]
    CratesIo,
    /// JavaScript packages (`npm`).
    #[serde(rename = "npm")]
    Npm,
    /// Python packages (`PyPI`); names are compared normalized per PEP 503.
    #[serde(rename = "PyPI")]
    PyPI,
    /// Go modules (`Go`), versions with their `v` prefix.
    #[serde(rename = "Go")]
    Go,
}

impl Ecosystem {
    /// The ecosystem's name in OSV records: `crates.io`, `npm`, `PyPI` or `Go`.
    pub fn osv_name(self) -> &'static str {
        match self {
            Self::CratesIo => "crates.io",
            Self::Npm => "npm",
            Self::PyPI => "PyPI",
            Self::Go => "Go",
        }
    }

    /// The name a package is looked up by: PEP 503 normalized for PyPI, as written otherwise.
    pub(crate) fn normalize(self, name: &str) -> String {
        match self {
            Self::PyPI => pep503(name),
            _ => name.to_owned(),
        }
    }
}

impl fmt::Display for Ecosystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.osv_name())
    }
}

impl FromStr for Ecosystem {
    type Err = String;

    /// An OSV ecosystem name, in any case (`crates.io`, `npm`, `PyPI`, `Go`).
    fn from_str(s: &str) -> Result<Self, String> {
        [Self::CratesIo, Self::Npm, Self::PyPI, Self::Go]
            .into_iter()
            .find(|e| e.osv_name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown ecosystem `{s}`: expected crates.io, npm, PyPI or Go"))
    }
}

/// One dependency of an artifact: a released package of a registry at one version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct Package {
    /// The registry it comes from.
    pub ecosystem: Ecosystem,
    /// Its name in that registry (`@scope/name` for a scoped npm package, the module path for Go,
    /// the PEP 503 normalized name for PyPI).
    pub name: String,
    /// Its version as the registry writes it (`v1.2.3` for Go).
    pub version: String,
    /// Where it was read from: `cargo auditable section`, or a file's path (`api/Cargo.lock`).
    pub source: String,
}

impl Package {
    pub(crate) fn new(ecosystem: Ecosystem, name: &str, version: &str, source: &str) -> Self {
        Self { ecosystem, name: ecosystem.normalize(name), version: version.to_owned(), source: source.to_owned() }
    }
}

impl fmt::Display for Package {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ({}, from {})", self.name, self.version, self.ecosystem, self.source)
    }
}

/// Sorts packages and keeps one of each (ecosystem, name, version): the first source by name.
pub fn dedup(mut packages: Vec<Package>) -> Vec<Package> {
    packages.sort();
    packages.dedup_by(|b, a| a.ecosystem == b.ecosystem && a.name == b.name && a.version == b.version);
    packages
}

/// A Python package name normalized per PEP 503: lowercase, each run of `-`, `_` and `.` one `-`.
fn pep503(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_separator = false;
    for c in name.trim().chars() {
        if matches!(c, '-' | '_' | '.') {
            in_separator = true;
            continue;
        }
        if in_separator && !out.is_empty() {
            out.push('-');
        }
        in_separator = false;
        out.push(c.to_ascii_lowercase());
    }
    out
}
