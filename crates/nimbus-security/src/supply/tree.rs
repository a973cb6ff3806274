//! Which files hold a dependency list, reading them with bounds, and walking a service's tree.
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::error::DIRECTORY_SCAN;
use super::{Package, SupplyError, dedup, lockfiles, sbom};

/// The largest lockfile or SBOM read (a large monorepo's `package-lock.json` is a few MiB).
pub const MAX_INVENTORY_BYTES: u64 = 32 << 20;
/// How deep [`scan_tree`] descends below the directory it is given.
const MAX_DEPTH: usize = 8;
/// How many directory entries [`scan_tree`] looks at before giving up.
const MAX_ENTRIES: u64 = 50_000;
/// Directories [`scan_tree`] does not enter: installed or vendored dependencies carry their own
/// lockfiles, which say nothing about what the service runs, and build output and VCS data.
pub const SKIPPED_DIRS: [&str; 7] = ["node_modules", ".git", "target", "vendor", ".venv", "venv", "__pycache__"];

/// A kind of file that lists dependencies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Cargo's `Cargo.lock` (crates.io packages only).
    CargoLock,
    /// npm's `package-lock.json` (or `npm-shrinkwrap.json`), lockfile versions 1 to 3.
    PackageLock,
    /// pip's `requirements.txt`: exact `name==version` pins only.
    Requirements,
    /// Poetry's `poetry.lock`.
    PoetryLock,
    /// Go's `go.sum`.
    GoSum,
    /// A CycloneDX JSON SBOM (`*.cdx.json`, `bom.json`).
    CycloneDx,
    /// An SPDX JSON SBOM (`*.spdx.json`).
    Spdx,
}

impl Format {
    /// The format a file's name says it has, if any.
    pub fn detect(file_name: &str) -> Option<Self> {
        Some(match file_name {
            "Cargo.lock" => Self::CargoLock,
            "package-lock.json" | "npm-shrinkwrap.json" => Self::PackageLock,
            "requirements.txt" => Self::Requirements,
            "poetry.lock" => Self::PoetryLock,
            "go.sum" => Self::GoSum,
            "bom.json" => Self::CycloneDx,
            name if name.ends_with(".cdx.json") => Self::CycloneDx,
            name if name.ends_with(".spdx.json") => Self::Spdx,
            _ => return None,
        })
    }

    /// The packages `text`, in this format, lists; `origin` (a path, usually) becomes each
    /// package's [`Package::source`] and names the input in errors.
    pub fn parse(self, text: &str, origin: &str) -> Result<Vec<Package>, SupplyError> {
        let packages = match self {
            Self::CargoLock => lockfiles::cargo_lock(text, origin)?,
            Self::PackageLock => lockfiles::package_lock(text, origin)?,
            Self::Requirements => lockfiles::requirements(text, origin),
            Self::PoetryLock => lockfiles::poetry_lock(text, origin)?,
            Self::GoSum => lockfiles::go_sum(text, origin)?,
            Self::CycloneDx => sbom::cyclonedx(text, origin)?,
            Self::Spdx => sbom::spdx(text, origin)?,
        };
        Ok(dedup(packages))
    }

    /// Reads and parses a file in this format (at most 32 MiB).
    pub fn read(self, path: &Path) -> Result<Vec<Package>, SupplyError> {
        self.read_as(path, &path.display().to_string())
    }

    fn read_as(self, path: &Path, origin: &str) -> Result<Vec<Package>, SupplyError> {
        let text = read_bounded(path, MAX_INVENTORY_BYTES, "a lockfile or SBOM")?;
        self.parse(&text, origin)
    }
}

/// A UTF-8 file's contents, refused when larger than `limit`.
pub(crate) fn read_bounded(path: &Path, limit: u64, what: &'static str) -> Result<String, SupplyError> {
    let file = fs::File::open(path).map_err(SupplyError::io(path))?;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes).map_err(SupplyError::io(path))?;
    let (size, origin) = (bytes.len() as u64, path.display().to_string());
    if size > limit {
        return Err(SupplyError::TooLarge { what, origin, size, limit });
    }
    String::from_utf8(bytes).map_err(|e| SupplyError::parse("UTF-8 text file", origin, e))
}

/// Every package listed by a lockfile or SBOM under `dir` (see [`Format::detect`]), each once,
/// with its [`Package::source`] the file's path relative to `dir`.
///
/// The walk goes at most 8 directories deep, looks at no more than 50,000 entries (more is an
/// error: scan the service's own directory) and skips `node_modules`, `vendor`, `.git`,
/// `target`, `.venv`, `venv` and `__pycache__`. Symbolic links to directories are not followed;
/// a link to a file is read only if it resolves inside `dir`.
pub fn scan_tree(dir: &Path) -> Result<Vec<Package>, SupplyError> {
    let root = fs::canonicalize(dir).map_err(SupplyError::io(dir))?;
    let mut stack = vec![(root.clone(), 0)];
    let mut entries = 0u64;
    let mut packages = Vec::new();
    while let Some((current, depth)) = stack.pop() {
        for entry in fs::read_dir(&current).map_err(SupplyError::io(&current))? {
            entries += 1;
            if entries > MAX_ENTRIES {
                let origin = dir.display().to_string();
                return Err(SupplyError::TooLarge { what: DIRECTORY_SCAN, origin, size: entries, limit: MAX_ENTRIES });
            }
            let entry = entry.map_err(SupplyError::io(&current))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(SupplyError::io(&path))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
            if kind.is_dir() {
                if depth < MAX_DEPTH && !SKIPPED_DIRS.contains(&name.as_str()) {
                    stack.push((path, depth + 1));
                }
                continue;
            }
            let Some(format) = Format::detect(&name) else { continue };
            if !(kind.is_file() || kind.is_symlink() && resolves_inside(&path, &root)) {
                continue;
            }
            let relative = path.strip_prefix(&root).unwrap_or(&path).display().to_string();
            packages.extend(format.read_as(&path, &relative)?);
        }
    }
    Ok(dedup(packages))
}

/// Whether a symbolic link resolves to a file inside `root` (a canonical path).
fn resolves_inside(link: &Path, root: &Path) -> bool {
    fs::canonicalize(link).is_ok_and(|target| target.starts_with(root) && target.is_file())
}

/// The SBOMs shipped beside a wasm artifact `X.wasm`, at most one per format:
/// `X.wasm.cdx.json`, else `X.cdx.json` (CycloneDX); `X.wasm.spdx.json`, else `X.spdx.json`
/// (SPDX). `nimbus deploy` ships them in the bundle with the artifact.
pub fn sboms_beside(wasm_path: &Path) -> Vec<(PathBuf, Format)> {
    let (Some(file_name), Some(stem)) = (wasm_path.file_name(), wasm_path.file_stem()) else { return Vec::new() };
    let (file_name, stem) = (file_name.to_string_lossy(), stem.to_string_lossy());
    [("cdx", Format::CycloneDx), ("spdx", Format::Spdx)]
        .into_iter()
        .filter_map(|(suffix, format)| {
            [format!("{file_name}.{suffix}.json"), format!("{stem}.{suffix}.json")]
                .into_iter()
                .map(|name| wasm_path.with_file_name(name))
                .find(|path| path.is_file())
                .map(|path| (path, format))
        })
        .collect()
}
