//! What a component is built from: a function's `cargo auditable` section and the SBOMs shipped
//! beside its artifact, a service's lockfiles and SBOMs in its tree, and a function's imports
//! against its grants.
use std::io::Read;
use std::path::{Component as PathPart, Path};

use nimbus_manifest::Grants;
use nimbus_security::supply::{self, Capability, Format, MAX_INVENTORY_BYTES, Package, SKIPPED_DIRS};

use super::ReachEntry;
use crate::bundle::Bundle;

/// What was read of a component: its packages, where from, what could not be read, its reach.
pub(super) type Scanned = (Vec<Package>, Vec<String>, Vec<String>, Vec<ReachEntry>);

/// The SBOMs shipped with function `name` in `bundle`: (entry, format, JSON).
pub(super) fn sboms<'a>(bundle: &'a Bundle, name: &str) -> Vec<(String, Format, &'a [u8])> {
    [(format!("{name}.cdx.json"), Format::CycloneDx), (format!("{name}.spdx.json"), Format::Spdx)]
        .into_iter()
        .filter_map(|(entry, format)| bundle.sboms.get(&entry).map(|json| (entry, format, json.as_slice())))
        .collect()
}

/// A function's dependencies (its `cargo auditable` section and the SBOMs shipped beside it)
/// and reach.
pub(super) fn function(wasm: &[u8], grants: &Grants, sboms: Vec<(String, Format, &[u8])>) -> Scanned {
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
        if json.len() as u64 > MAX_INVENTORY_BYTES {
            notes.push(format!("{entry}: larger than {MAX_INVENTORY_BYTES} bytes; skipped"));
            continue;
        }
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
pub(super) fn service(tree: &[u8]) -> Scanned {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_sbom_over_the_limit_is_noted_not_read() {
        let empty_module = b"\0asm\x01\0\0\0";
        let huge = vec![b' '; MAX_INVENTORY_BYTES as usize + 1];
        let small = br#"{"bomFormat": "CycloneDX", "components": [{"purl": "pkg:cargo/serde@1.0.1"}]}"#;
        let sboms = vec![
            ("web.cdx.json".to_string(), Format::CycloneDx, huge.as_slice()),
            ("web.spdx.json".to_string(), Format::Spdx, &br"{ not json"[..]),
        ];
        let (packages, sources, notes, _) = function(empty_module, &Grants::default(), sboms);
        assert!(packages.is_empty() && sources.is_empty(), "{sources:?}");
        assert!(notes[0].starts_with("web.cdx.json: larger than"), "{notes:?}");
        assert!(notes[1].starts_with("web.spdx.json: "), "{notes:?}");

        let sboms = vec![("web.cdx.json".to_string(), Format::CycloneDx, &small[..])];
        let (packages, sources, _, _) = function(empty_module, &Grants::default(), sboms);
        assert_eq!((packages.len(), sources), (1, vec!["web.cdx.json".to_string()]));
    }
}
