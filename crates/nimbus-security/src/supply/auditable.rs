//! The `.dep-v0` custom section `cargo auditable` writes: zlib-compressed JSON listing every crate
//! the binary was built from.
use miniz_oxide::inflate::{TINFLStatus, decompress_to_vec_zlib_with_limit};
use wasmparser::{Parser, Payload};

use super::error::AUDITABLE_SECTION;
use super::{Ecosystem, Package, SupplyError, dedup};

/// The section's name.
const SECTION: &str = ".dep-v0";
/// The largest decompressed section read: real ones are a few KiB per hundred crates.
const MAX_DECOMPRESSED: usize = 8 << 20;
/// What findings name as the packages' source.
const SOURCE: &str = "cargo auditable section";

#[derive(serde::Deserialize)]
struct DepInfo {
    packages: Vec<DepPackage>,
}

#[derive(serde::Deserialize)]
struct DepPackage {
    name: String,
    version: String,
    /// `crates.io`, `local`, `git`, `registry` or `other`.
    source: String,
    #[serde(default)]
    root: bool,
}

/// The crates.io packages listed in the `cargo auditable` section of a wasm module or component,
/// wherever it is (a component's nested modules included); empty when there is none (the artifact
/// was built without `cargo auditable`, or not from Rust). Local, git and other registries' crates
/// and the root crate are left out: no advisory database knows them.
///
/// An invalid binary or section is an error, as is a section over 8 MiB decompressed.
pub fn from_wasm(bytes: &[u8]) -> Result<Vec<Package>, SupplyError> {
    let mut packages = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| SupplyError::parse("wasm binary", "the artifact", e))?;
        if let Payload::CustomSection(section) = payload
            && section.name() == SECTION
        {
            packages.extend(read_section(section.data())?);
        }
    }
    Ok(dedup(packages))
}

fn read_section(compressed: &[u8]) -> Result<Vec<Package>, SupplyError> {
    let origin = "the artifact's `.dep-v0` section";
    let json = decompress_to_vec_zlib_with_limit(compressed, MAX_DECOMPRESSED).map_err(|e| match e.status {
        TINFLStatus::HasMoreOutput => SupplyError::TooLarge {
            what: AUDITABLE_SECTION,
            origin: origin.into(),
            size: e.output.len() as u64,
            limit: MAX_DECOMPRESSED as u64,
        },
        _ => SupplyError::parse("zlib stream", origin, e.to_string()),
    })?;
    let info: DepInfo = serde_json::from_slice(&json)
        .map_err(|e| SupplyError::parse("`cargo auditable` dependency list", origin, e))?;
    Ok(info
        .packages
        .into_iter()
        .filter(|p| p.source == "crates.io" && !p.root)
        .map(|p| Package::new(Ecosystem::CratesIo, &p.name, &p.version, SOURCE))
        .collect())
}
