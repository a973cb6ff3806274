//! Lockfiles: `Cargo.lock`, `package-lock.json`, `requirements.txt`, `poetry.lock`, `go.sum`.
use std::collections::BTreeMap;

use super::{Ecosystem, Package, SupplyError};

/// The crates.io index, as Cargo records it (git and sparse protocols).
const CRATES_IO: [&str; 2] =
    ["registry+https://github.com/rust-lang/crates.io-index", "sparse+https://index.crates.io/"];

#[derive(serde::Deserialize)]
struct TomlLock {
    #[serde(default)]
    package: Vec<TomlPackage>,
}

#[derive(serde::Deserialize)]
struct TomlPackage {
    name: String,
    version: String,
    /// Cargo: the registry or git URL (absent for the workspace's own crates).
    /// Poetry: a table with `type` (`git`, `directory`, `file`, `url`, `legacy`).
    source: Option<toml::Value>,
}

/// `Cargo.lock`: the packages from crates.io (workspace members, git and other registries'
/// crates have no crates.io advisories).
pub(crate) fn cargo_lock(text: &str, origin: &str) -> Result<Vec<Package>, SupplyError> {
    let lock: TomlLock = toml::from_str(text).map_err(|e| SupplyError::parse("Cargo.lock", origin, e))?;
    Ok(lock
        .package
        .iter()
        .filter(|p| p.source.as_ref().and_then(toml::Value::as_str).is_some_and(|s| CRATES_IO.contains(&s)))
        .map(|p| Package::new(Ecosystem::CratesIo, &p.name, &p.version, origin))
        .collect())
}

/// `poetry.lock`: the packages from an index (PyPI or a mirror of it), not git, path or URL ones.
pub(crate) fn poetry_lock(text: &str, origin: &str) -> Result<Vec<Package>, SupplyError> {
    let lock: TomlLock = toml::from_str(text).map_err(|e| SupplyError::parse("poetry.lock", origin, e))?;
    Ok(lock
        .package
        .iter()
        .filter(|p| {
            let kind = p.source.as_ref().and_then(|s| s.get("type")).and_then(toml::Value::as_str);
            kind.is_none_or(|k| k == "legacy")
        })
        .map(|p| Package::new(Ecosystem::PyPI, &p.name, &p.version, origin))
        .collect())
}

#[derive(serde::Deserialize)]
struct NpmLock {
    /// Lockfile v2 and v3: `node_modules/...` paths to entries.
    packages: Option<BTreeMap<String, NpmEntry>>,
    /// Lockfile v1 (and v2, for older npm): names to entries, nested.
    dependencies: Option<BTreeMap<String, NpmV1Entry>>,
}

/// An entry of `packages` (v2, v3).
#[derive(serde::Deserialize)]
struct NpmEntry {
    version: Option<String>,
    /// The real name of an aliased package (`"foo": "npm:bar@1"`).
    name: Option<String>,
    /// A symlink to a workspace package.
    #[serde(default)]
    link: bool,
}

/// An entry of `dependencies` (v1).
#[derive(serde::Deserialize)]
struct NpmV1Entry {
    version: Option<String>,
    dependencies: Option<BTreeMap<String, NpmV1Entry>>,
}

/// `package-lock.json` (v1, v2 or v3): installed registry packages; workspace packages, links and
/// `file:`/git dependencies are left out.
pub(crate) fn package_lock(text: &str, origin: &str) -> Result<Vec<Package>, SupplyError> {
    let lock: NpmLock = serde_json::from_str(text).map_err(|e| SupplyError::parse("package-lock.json", origin, e))?;
    let mut out = Vec::new();
    if let Some(packages) = lock.packages {
        for (path, entry) in &packages {
            let Some((_, installed_as)) = path.rsplit_once("node_modules/") else { continue };
            if entry.link {
                continue;
            }
            let name = entry.name.as_deref().unwrap_or(installed_as);
            if let Some(version) = &entry.version {
                push_npm(&mut out, name, version, origin);
            }
        }
    } else if let Some(dependencies) = &lock.dependencies {
        npm_v1(&mut out, dependencies, origin);
    }
    Ok(out)
}

fn npm_v1(out: &mut Vec<Package>, dependencies: &BTreeMap<String, NpmV1Entry>, origin: &str) {
    for (name, entry) in dependencies {
        if let Some(version) = &entry.version {
            push_npm(out, name, version, origin);
        }
        if let Some(nested) = &entry.dependencies {
            npm_v1(out, nested, origin);
        }
    }
}

/// Adds a registry version; `npm:real@1.2.3` is an alias, anything else with a `:` (`file:`,
/// `git+https:`, `github:`) is not from the registry.
fn push_npm(out: &mut Vec<Package>, name: &str, version: &str, origin: &str) {
    let (name, version) = match version.strip_prefix("npm:") {
        Some(alias) => match alias.rsplit_once('@') {
            Some((real, version)) if !real.is_empty() => (real, version),
            _ => return,
        },
        None => (name, version),
    };
    if !version.contains(':') && !version.is_empty() {
        out.push(Package::new(Ecosystem::Npm, name, version, origin));
    }
}

/// `requirements.txt`: exact pins (`name==1.2.3`, extras and markers allowed); ranges, options,
/// editable installs and URLs say no single version and are left out.
pub(crate) fn requirements(text: &str, origin: &str) -> Vec<Package> {
    let joined = text.replace("\\\r\n", " ").replace("\\\n", " ");
    let mut out = Vec::new();
    for line in joined.lines() {
        let line = strip_comment(line).trim();
        if line.is_empty() || line.starts_with('-') {
            continue;
        }
        let requirement = line.split(';').next().unwrap_or_default();
        let requirement = requirement.split(" --").next().unwrap_or_default();
        let Some((name, version)) = requirement.split_once("==") else { continue };
        let version = version.trim_start_matches('=').trim();
        let name = name.split('[').next().unwrap_or_default().trim();
        let valid_name = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if valid_name && !version.is_empty() && !version.contains(['*', ',', ' ', '@']) {
            out.push(Package::new(Ecosystem::PyPI, name, version, origin));
        }
    }
    out
}

/// A line up to a `#` that starts it or follows whitespace (a `#` inside a URL is kept).
fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()) {
            return &line[..i];
        }
    }
    line
}

/// `go.sum`: every module version it holds a checksum for, with the `v` prefix and any
/// `+incompatible` as Go writes them (a `/go.mod` line and its module's line name one version,
/// which `Format::parse` keeps once).
pub(crate) fn go_sum(text: &str, origin: &str) -> Result<Vec<Package>, SupplyError> {
    let mut out = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let mut fields = line.split_whitespace();
        let (Some(module), Some(version), Some(_hash)) = (fields.next(), fields.next(), fields.next()) else {
            if line.trim().is_empty() {
                continue;
            }
            let message = format!("line {} is not `MODULE VERSION HASH`", number + 1);
            return Err(SupplyError::parse("go.sum", origin, message));
        };
        let version = version.strip_suffix("/go.mod").unwrap_or(version);
        out.push(Package::new(Ecosystem::Go, module, version, origin));
    }
    Ok(out)
}
