//! An OSV record (the fields matching needs) and whether a version falls in what it affects.
use std::cmp::Ordering;

use super::version::{Scheme, Version};
use super::{Ecosystem, Severity};

/// An OSV record as published (`https://ossf.github.io/osv-schema/`).
#[derive(Debug, serde::Deserialize)]
pub(crate) struct Record {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) aliases: Vec<String>,
    pub(crate) summary: Option<String>,
    pub(crate) details: Option<String>,
    pub(crate) withdrawn: Option<String>,
    #[serde(default)]
    pub(crate) affected: Vec<Affected>,
    #[serde(default)]
    severity: Vec<Score>,
    database_specific: Option<serde_json::Value>,
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct Affected {
    package: Option<AffectedPackage>,
    #[serde(default)]
    ranges: Vec<Range>,
    #[serde(default)]
    versions: Vec<String>,
    #[serde(default)]
    severity: Vec<Score>,
    database_specific: Option<serde_json::Value>,
}

#[derive(Debug, serde::Deserialize)]
struct AffectedPackage {
    ecosystem: String,
    name: String,
}

#[derive(Debug, serde::Deserialize)]
struct Range {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    events: Vec<Event>,
}

/// One of `introduced`, `fixed`, `last_affected` or `limit`.
#[derive(Debug, serde::Deserialize)]
struct Event {
    introduced: Option<String>,
    fixed: Option<String>,
    last_affected: Option<String>,
    limit: Option<String>,
}

/// A `severity` entry: `{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/..."}`.
#[derive(Debug, serde::Deserialize)]
struct Score {
    score: String,
}

impl Record {
    /// See [`Severity`] for the rules.
    pub(crate) fn severity(&self) -> Severity {
        let database = std::iter::once(&self.database_specific)
            .chain(self.affected.iter().map(|a| &a.database_specific))
            .filter_map(|d| d.as_ref()?.get("severity")?.as_str()?.parse().ok())
            .max();
        let cvss = || {
            self.severity
                .iter()
                .chain(self.affected.iter().flat_map(|a| &a.severity))
                .filter_map(|s| Severity::from_cvss(&s.score))
                .max()
        };
        database.or_else(cvss).unwrap_or(Severity::Unknown)
    }

    /// The summary, or the first line of the details when there is none.
    pub(crate) fn headline(&self) -> String {
        let details = self.details.as_deref().and_then(|d| d.lines().map(str::trim).find(|l| !l.is_empty()));
        self.summary.as_deref().or(details).unwrap_or_default().to_owned()
    }
}

impl Affected {
    /// The package this entry is about, if it is in an ecosystem scanned here.
    pub(crate) fn package(&self) -> Option<(Ecosystem, String)> {
        let package = self.package.as_ref()?;
        let ecosystem: Ecosystem = package.ecosystem.parse().ok()?;
        // OSV's names are exact: `Pypi` is no ecosystem of OSV's.
        (ecosystem.osv_name() == package.ecosystem).then(|| (ecosystem, ecosystem.normalize(&package.name)))
    }

    /// `None` if `version` is not affected, otherwise the version that fixes it, if known: the
    /// first `fixed` after the `introduced` that put it in range (or for a version listed without
    /// a range, the lowest `fixed` above it).
    pub(crate) fn matches(&self, ecosystem: Ecosystem, version: &str) -> Option<Option<String>> {
        for range in &self.ranges {
            if let Some(fixed) = range.matches(ecosystem, version) {
                return Some(fixed);
            }
        }
        let scheme = Scheme::of(ecosystem);
        let parsed = scheme.parse(version);
        let listed = self.versions.iter().any(|v| v == version || parsed.is_some() && scheme.parse(v) == parsed);
        listed.then(|| self.fixed_above(ecosystem, parsed.as_ref()?))
    }

    fn fixed_above(&self, ecosystem: Ecosystem, version: &Version) -> Option<String> {
        let scheme = Scheme::of(ecosystem);
        let mut fixes: Vec<(Version, &String)> = (self.ranges.iter().flat_map(|r| &r.events))
            .filter_map(|e| e.fixed.as_ref())
            .filter_map(|f| Some((scheme.parse(f)?, f)))
            .filter(|(f, _)| f > version)
            .collect();
        fixes.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(Ordering::Equal));
        fixes.first().map(|(_, f)| (*f).clone())
    }
}

impl Range {
    /// The OSV evaluation: events in version order, `introduced` turning "affected" on and
    /// `fixed`, `last_affected` (after it) and `limit` turning it off. `None` when unaffected, or
    /// when the range or a version in it cannot be ordered (a `GIT` range, an invalid version).
    fn matches(&self, ecosystem: Ecosystem, version: &str) -> Option<Option<String>> {
        let scheme = Scheme::for_range(&self.kind, ecosystem)?;
        let version = scheme.parse(version)?;
        let mut events = Vec::with_capacity(self.events.len());
        for event in &self.events {
            let text =
                [&event.introduced, &event.fixed, &event.last_affected, &event.limit].into_iter().flatten().next()?;
            // `introduced: "0"` is "from the first version", before any other event.
            let at = if event.introduced.as_deref() == Some("0") { None } else { Some(scheme.parse(text)?) };
            events.push((at, event));
        }
        events.sort_by(|a, b| match (&a.0, &b.0) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (Some(x), Some(y)) => x.partial_cmp(y).unwrap_or(Ordering::Equal),
        });
        let mut affected_from = None;
        for (index, (at, event)) in events.iter().enumerate() {
            let reached = at.as_ref().is_none_or(|at| version >= *at);
            if event.introduced.is_some() && reached {
                affected_from = Some(index);
            } else if (event.fixed.is_some() || event.limit.is_some()) && reached
                || event.last_affected.is_some() && at.as_ref().is_some_and(|at| version > *at)
            {
                affected_from = None;
            }
        }
        let from = affected_from?;
        Some(events[from..].iter().find_map(|(_, e)| e.fixed.clone()))
    }
}
