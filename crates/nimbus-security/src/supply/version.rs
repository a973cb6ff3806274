//! Ordering versions as each ecosystem does: semver for crates.io, npm and Go (its `v` prefix
//! dropped, so a pseudo-version is a prerelease), PEP 440 for PyPI.
use std::cmp::Ordering;

use super::Ecosystem;
use super::pep440::Pep440;

/// How a range's versions are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    Semver,
    Pep440,
}

impl Scheme {
    /// The ordering of an OSV range of type `kind`: `SEMVER` is semver whatever the ecosystem,
    /// `ECOSYSTEM` the ecosystem's own; `GIT` (commits) cannot be ordered without the repository.
    pub(crate) fn for_range(kind: &str, ecosystem: Ecosystem) -> Option<Self> {
        match kind {
            "SEMVER" => Some(Self::Semver),
            "ECOSYSTEM" => Some(Self::of(ecosystem)),
            _ => None,
        }
    }

    /// The ecosystem's own ordering.
    pub(crate) fn of(ecosystem: Ecosystem) -> Self {
        match ecosystem {
            Ecosystem::PyPI => Self::Pep440,
            Ecosystem::CratesIo | Ecosystem::Npm | Ecosystem::Go => Self::Semver,
        }
    }

    /// `version` in this scheme, if it is a valid one.
    pub(crate) fn parse(self, version: &str) -> Option<Version> {
        match self {
            Self::Semver => semver(version).map(Version::Semver),
            Self::Pep440 => version.parse().ok().map(Version::Pep440),
        }
    }
}

/// A parsed version; versions of two schemes are not comparable.
#[derive(Debug, Clone)]
pub(crate) enum Version {
    Semver(semver::Version),
    Pep440(Pep440),
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.partial_cmp(other) == Some(Ordering::Equal)
    }
}

impl PartialOrd for Version {
    /// Semver precedence (build metadata such as Go's `+incompatible` does not count).
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match (self, other) {
            (Self::Semver(a), Self::Semver(b)) => Some(a.cmp_precedence(b)),
            (Self::Pep440(a), Self::Pep440(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }
}

/// A semver version, leniently: a leading `v` or `=` is dropped and a missing minor or patch
/// (`1`, `1.2`) is zero.
fn semver(version: &str) -> Option<semver::Version> {
    let version = version.trim().trim_start_matches(['v', '=']);
    if let Ok(parsed) = semver::Version::parse(version) {
        return Some(parsed);
    }
    let split = version.find(['-', '+']).unwrap_or(version.len());
    let (core, rest) = version.split_at(split);
    let parts = core.split('.').count();
    let numeric = core.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if parts >= 3 || !numeric {
        return None;
    }
    semver::Version::parse(&format!("{core}{}{rest}", ".0".repeat(3 - parts))).ok()
}
