//! A pulled bundle as an app directory `nimbus up` runs: `nimbus.toml`, each function's
//! `components/NAME.wasm` (with its SBOMs and signature beside it), each service's working
//! directory unpacked in `services/NAME/`. The manifest's `source` and `workdir` of each
//! component are pointed there: the paths it was pushed with belong to the machine it was
//! pushed from, and a path from a registry must never choose where a file is written.
use std::path::Path;

use anyhow::{Context, bail};
use nimbus_control::{Bundle, MANIFEST_ENTRY};
use nimbus_manifest::LoadedManifest;

/// Writes `bundle` into `dir` (created; refused if it already holds an app).
pub(crate) fn write(bundle: &Bundle, dir: &Path) -> anyhow::Result<()> {
    if dir.join(MANIFEST_ENTRY).exists() {
        bail!("{} already holds an app; pull into another directory (-o DIR)", dir.display());
    }
    let mut manifest: toml_edit::DocumentMut = bundle.manifest.parse().context("the pulled nimbus.toml is not TOML")?;
    let components = dir.join("components");
    std::fs::create_dir_all(&components).with_context(|| format!("cannot create {}", components.display()))?;
    for (name, wasm) in &bundle.artifacts {
        set(&mut manifest, name, "source", format!("components/{name}.wasm"))?;
        write_file(&components.join(format!("{name}.wasm")), wasm)?;
        if let Some(signature) = bundle.signatures.get(name) {
            write_file(&components.join(format!("{name}.wasm.sig")), signature)?;
        }
    }
    for (name, sbom) in &bundle.sboms {
        write_file(&components.join(name), sbom)?;
    }
    for (name, tree) in &bundle.trees {
        let workdir = format!("services/{name}");
        set(&mut manifest, name, "workdir", workdir.clone())?;
        let target = dir.join(&workdir);
        std::fs::create_dir_all(&target).with_context(|| format!("cannot create {}", target.display()))?;
        tar::Archive::new(tree.as_slice())
            .unpack(&target)
            .with_context(|| format!("cannot unpack service `{name}` into {}", target.display()))?;
    }
    write_file(&dir.join(MANIFEST_ENTRY), manifest.to_string().as_bytes())?;
    LoadedManifest::load(dir).context("the pulled app's manifest does not load")?;
    Ok(())
}

/// Sets `key` of component `name` in the manifest (a name from a bundle never has a `/`).
fn set(manifest: &mut toml_edit::DocumentMut, name: &str, key: &str, value: String) -> anyhow::Result<()> {
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        bail!("the artifact names a component `{name}`, which no manifest can declare");
    }
    let Some(component) = manifest.get_mut("component").and_then(|c| c.get_mut(name)) else {
        bail!("the artifact carries component `{name}`, which its nimbus.toml does not declare");
    };
    let Some(table) = component.as_table_like_mut() else {
        bail!("`component.{name}` of the pulled nimbus.toml is not a table");
    };
    table.insert(key, toml_edit::value(value));
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}
