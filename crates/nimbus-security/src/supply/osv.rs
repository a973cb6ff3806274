//! The advisory database: OSV records imported into a directory, indexed by package.
use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use super::record::Record;
use super::tree::read_bounded;
use super::{Ecosystem, Package, Severity, SupplyError};

/// The largest advisory accepted: real ones are a few KiB.
const MAX_ADVISORY: u64 = 1 << 20;
/// How deep [`Advisories::import`] descends into the directory it imports from.
const MAX_IMPORT_DEPTH: usize = 16;

/// Advisories for crates.io, npm, PyPI and Go packages, read from a directory of OSV JSON files.
#[derive(Debug, Default)]
pub struct Advisories {
    records: Vec<Loaded>,
    /// (ecosystem, normalized name) to indexes into `records`.
    by_package: HashMap<(Ecosystem, String), Vec<usize>>,
}

#[derive(Debug)]
struct Loaded {
    record: Record,
    severity: Severity,
}

/// What [`Advisories::import`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImportReport {
    /// Advisories written to the database (a later import of the same id replaces it).
    pub imported: usize,
    /// Files left out, each with the reason.
    pub skipped: Vec<Skipped>,
}

/// A file [`Advisories::import`] left out.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    /// The file.
    pub path: PathBuf,
    /// Why: too large, not OSV JSON, an id unfit for a file name, no package scanned here, or a
    /// symbolic link.
    pub reason: String,
}

/// An advisory that affects a package.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// The advisory's id (`RUSTSEC-2024-0001`, `GHSA-...`, `PYSEC-...`, `GO-...`).
    pub id: String,
    /// Other ids of the same vulnerability (`CVE-...`).
    pub aliases: Vec<String>,
    /// One line saying what is wrong.
    pub summary: String,
    /// How bad it is.
    pub severity: Severity,
    /// The affected package, as the inventory found it.
    pub package: Package,
    /// The version to upgrade to, when the advisory names one.
    pub fixed: Option<String>,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let package = &self.package;
        write!(f, "{} ({}): {} {} from {}", self.id, self.severity, package.name, package.version, package.source)?;
        if !self.summary.is_empty() {
            write!(f, ": {}", self.summary)?;
        }
        match &self.fixed {
            Some(fixed) => write!(f, "; upgrade to {fixed}"),
            None => f.write_str("; no fixed version is known"),
        }
    }
}

impl Advisories {
    /// Copies every OSV `*.json` file under `src` (recursively, 16 levels at most, symbolic
    /// links not followed) into the database directory `db` (created if missing), as `ID.json`.
    /// A file over 1 MiB, one that is not an OSV record, one whose id cannot be a file name and
    /// one that affects no crates.io, npm, PyPI or Go package are skipped with the reason.
    /// Withdrawn advisories are imported, so a withdrawal replaces the earlier record, and then
    /// never match.
    pub fn import(src: &Path, db: &Path) -> Result<ImportReport, SupplyError> {
        fs::create_dir_all(db).map_err(SupplyError::io(db))?;
        let mut report = ImportReport::default();
        let mut stack = vec![(src.to_path_buf(), 0)];
        while let Some((dir, depth)) = stack.pop() {
            for entry in fs::read_dir(&dir).map_err(SupplyError::io(&dir))? {
                let path = entry.map_err(SupplyError::io(&dir))?.path();
                let kind = fs::symlink_metadata(&path).map_err(SupplyError::io(&path))?.file_type();
                if kind.is_dir() && depth < MAX_IMPORT_DEPTH {
                    stack.push((path, depth + 1));
                } else if kind.is_symlink() {
                    report.skipped.push(Skipped { path, reason: "a symbolic link, not followed".into() });
                } else if kind.is_file() && path.extension().is_some_and(|e| e == "json") {
                    match validate(&path) {
                        Ok((id, text)) => {
                            write_atomically(&db.join(format!("{id}.json")), &text)?;
                            report.imported += 1;
                        }
                        Err(reason) => report.skipped.push(Skipped { path, reason }),
                    }
                }
            }
        }
        report.skipped.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(report)
    }

    /// The advisories in the database directory `db`; an empty database if it does not exist.
    /// A file in it that is not a valid advisory is an error (import it again).
    pub fn open(db: &Path) -> Result<Self, SupplyError> {
        let mut advisories = Self::default();
        let entries = match fs::read_dir(db) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(advisories),
            Err(e) => return Err(SupplyError::Io { path: db.to_path_buf(), source: e }),
        };
        let mut paths = Vec::new();
        for entry in entries {
            let path = entry.map_err(SupplyError::io(db))?.path();
            if path.extension().is_some_and(|e| e == "json") {
                paths.push(path);
            }
        }
        paths.sort();
        for path in paths {
            let text = read_bounded(&path, MAX_ADVISORY, "an OSV advisory")?;
            let origin = path.display().to_string();
            let record: Record =
                serde_json::from_str(&text).map_err(|e| SupplyError::parse("OSV advisory", origin, e))?;
            advisories.insert(record);
        }
        Ok(advisories)
    }

    fn insert(&mut self, record: Record) {
        if record.withdrawn.is_some() {
            return;
        }
        let index = self.records.len();
        for key in record.affected.iter().filter_map(|a| a.package()) {
            let indexes = self.by_package.entry(key).or_default();
            if indexes.last() != Some(&index) {
                indexes.push(index);
            }
        }
        let severity = record.severity();
        self.records.push(Loaded { record, severity });
    }

    /// How many advisories are loaded (withdrawn ones are not).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no advisory is loaded.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The advisories that affect `packages`, worst first (then by id and package), each
    /// advisory once per package and version.
    pub fn scan(&self, packages: &[Package]) -> Vec<Finding> {
        let mut findings = Vec::new();
        for package in packages {
            let key = (package.ecosystem, package.ecosystem.normalize(&package.name));
            for &index in self.by_package.get(&key).into_iter().flatten() {
                let Loaded { record, severity } = &self.records[index];
                let fixed = record
                    .affected
                    .iter()
                    .filter(|a| a.package().as_ref() == Some(&key))
                    .find_map(|a| a.matches(package.ecosystem, &package.version));
                if let Some(fixed) = fixed {
                    findings.push(Finding {
                        id: record.id.clone(),
                        aliases: record.aliases.clone(),
                        summary: record.headline(),
                        severity: *severity,
                        package: package.clone(),
                        fixed,
                    });
                }
            }
        }
        findings
            .sort_by(|a, b| b.severity.cmp(&a.severity).then_with(|| a.id.cmp(&b.id)).then(a.package.cmp(&b.package)));
        findings.dedup_by(|b, a| {
            a.id == b.id
                && (a.package.ecosystem, &a.package.name, &a.package.version)
                    == (b.package.ecosystem, &b.package.name, &b.package.version)
        });
        findings
    }
}

/// The id and text of an importable advisory, or why it is not one.
fn validate(path: &Path) -> Result<(String, String), String> {
    let text = read_bounded(path, MAX_ADVISORY, "an OSV advisory").map_err(|e| match e {
        SupplyError::TooLarge { .. } => format!("larger than {MAX_ADVISORY} bytes: not a plausible advisory"),
        other => other.to_string(),
    })?;
    let record: Record = serde_json::from_str(&text).map_err(|e| format!("not an OSV record: {e}"))?;
    let id_fits = !record.id.is_empty()
        && record.id.len() <= 128
        && !record.id.starts_with('.')
        && record.id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !id_fits {
        return Err(format!("its id `{}` cannot be a file name", record.id.escape_debug()));
    }
    if !record.affected.iter().any(|a| a.package().is_some()) {
        return Err("it affects no crates.io, npm, PyPI or Go package".into());
    }
    Ok((record.id, text))
}

fn write_atomically(path: &Path, text: &str) -> Result<(), SupplyError> {
    let partial = path.with_extension("json.partial");
    fs::write(&partial, text).map_err(SupplyError::io(&partial))?;
    fs::rename(&partial, path).map_err(SupplyError::io(path))
}
