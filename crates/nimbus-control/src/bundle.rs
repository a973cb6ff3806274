//! The deploy bundle: a tar archive of `nimbus.toml`, one `components/NAME.wasm` per function
//! (with the SBOMs shipped beside it, `components/NAME.cdx.json` and `components/NAME.spdx.json`,
//! if any), one `services/NAME.tar` (its working directory) per service, and the signatures of
//! components' artifacts or trees, `signatures/NAME.sig`, if any. `nimbus deploy` packs it, the server unpacks and checks it before anything is
//! stored. A revision's id is derived from the bundle's content, so deploying the same content
//! twice yields the same revision.
use std::collections::BTreeMap;
use std::io::Read;

use sha2::{Digest, Sha256};

use crate::error::ControlError;

/// Name of the manifest inside a bundle.
pub const MANIFEST_ENTRY: &str = "nimbus.toml";
/// Largest manifest accepted.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// The media type of a bundle upload.
pub const CONTENT_TYPE: &str = "application/x-tar";

/// An app's manifest and the artifact of each component.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bundle {
    /// The manifest text.
    pub manifest: String,
    /// Function name → .wasm bytes.
    pub artifacts: BTreeMap<String, Vec<u8>>,
    /// Service name → tar of its working directory (program, code, assets).
    pub trees: BTreeMap<String, Vec<u8>>,
    /// SBOMs of functions: `NAME.cdx.json` (CycloneDX) or `NAME.spdx.json` (SPDX) → the JSON.
    /// Read by the supply-chain check at deploy; not kept with the revision.
    pub sboms: BTreeMap<String, Vec<u8>>,
    /// Component name → its signature file (an artifact signature of its `.wasm` or its tree's
    /// tar). Checked at deploy against the server's trusted signers; not kept with the revision.
    pub signatures: BTreeMap<String, Vec<u8>>,
}

impl Bundle {
    /// The tar archive of this bundle.
    pub fn pack(&self) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in self.entries() {
            let mut header = tar::Header::new_ustar();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            builder.append_data(&mut header, &path, data).expect("writing to memory");
        }
        builder.into_inner().expect("writing to memory")
    }

    /// Each file of the bundle as (its path in the archive, its bytes), the manifest first.
    pub fn entries(&self) -> Vec<(String, &[u8])> {
        let mut entries = vec![(MANIFEST_ENTRY.to_string(), self.manifest.as_bytes())];
        entries.extend(self.artifacts.iter().map(|(name, b)| (format!("components/{name}.wasm"), b.as_slice())));
        entries.extend(self.trees.iter().map(|(name, b)| (format!("services/{name}.tar"), b.as_slice())));
        entries.extend(self.sboms.iter().map(|(name, b)| (format!("components/{name}"), b.as_slice())));
        entries.extend(self.signatures.iter().map(|(name, b)| (format!("signatures/{name}.sig"), b.as_slice())));
        entries
    }

    /// A bundle from its files, named as [`Bundle::entries`] names them; anything else, a file
    /// twice or a file that belongs to no component is refused.
    pub fn from_entries(entries: impl IntoIterator<Item = (String, Vec<u8>)>) -> Result<Self, ControlError> {
        let mut partial = Partial::default();
        for (path, data) in entries {
            partial.add(&path, data)?;
        }
        partial.finish()
    }

    /// Reads a tar archive, refusing anything but the expected regular files.
    pub fn unpack(archive: &[u8]) -> Result<Self, ControlError> {
        Self::read(archive, archive.len() as u64)
    }

    /// Reads a tar archive of `len` bytes from `archive` (each file is read into a buffer of its
    /// size at once, so a file costs its size in memory, not twice that while a buffer grows).
    pub fn read(archive: impl Read, len: u64) -> Result<Self, ControlError> {
        let mut partial = Partial::default();
        let mut tar = tar::Archive::new(archive);
        for entry in tar.entries().map_err(|e| malformed(e.to_string()))? {
            let mut entry = entry.map_err(|e| malformed(e.to_string()))?;
            let path = entry.path().map_err(|e| malformed(e.to_string()))?.to_string_lossy().into_owned();
            if entry.header().entry_type() != tar::EntryType::Regular {
                return Err(malformed(format!("`{path}` is not a regular file")));
            }
            let mut data = Vec::with_capacity(usize::try_from(entry.size().min(len)).unwrap_or(0));
            entry.read_to_end(&mut data).map_err(|e| malformed(format!("`{path}`: {e}")))?;
            partial.add(&path, data)?;
        }
        partial.finish()
    }

    /// The revision id of this content: the first 12 hex digits of a SHA-256 over the manifest
    /// and the artifact digests.
    pub fn revision_id(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"nimbus-revision-v1\n");
        h.update((self.manifest.len() as u64).to_le_bytes());
        h.update(self.manifest.as_bytes());
        for (name, bytes) in &self.artifacts {
            h.update(format!("\n{name}={}", digest(bytes)));
        }
        for (name, bytes) in &self.trees {
            h.update(format!("\nservice:{name}={}", digest(bytes)));
        }
        for (name, bytes) in &self.sboms {
            h.update(format!("\nsbom:{name}={}", digest(bytes)));
        }
        for (name, bytes) in &self.signatures {
            h.update(format!("\nsignature:{name}={}", digest(bytes)));
        }
        hex::encode(&h.finalize()[..6])
    }
}

/// A bundle whose files are being read: each is checked as it arrives.
#[derive(Default)]
struct Partial {
    manifest: Option<String>,
    bundle: Bundle,
}

impl Partial {
    /// Takes the file at `path` (a bundle path) with its bytes.
    fn add(&mut self, path: &str, data: Vec<u8>) -> Result<(), ControlError> {
        if path == MANIFEST_ENTRY {
            if data.len() as u64 > MAX_MANIFEST_BYTES {
                return Err(malformed(format!("{MANIFEST_ENTRY} is larger than {MAX_MANIFEST_BYTES} bytes")));
            }
            let text = String::from_utf8(data).map_err(|_| malformed(format!("{MANIFEST_ENTRY} is not UTF-8")))?;
            if self.manifest.replace(text).is_some() {
                return Err(malformed(format!("{MANIFEST_ENTRY} appears twice")));
            }
            return Ok(());
        }
        let b = &mut self.bundle;
        let Some((map, name)) = path
            .strip_prefix("components/")
            .filter(|p| sbom_of(p).is_some())
            .map(|p| (&mut b.sboms, p))
            .or_else(|| {
                path.strip_prefix("components/").and_then(|p| p.strip_suffix(".wasm")).map(|n| (&mut b.artifacts, n))
            })
            .or_else(|| path.strip_prefix("services/").and_then(|p| p.strip_suffix(".tar")).map(|n| (&mut b.trees, n)))
            .or_else(|| {
                path.strip_prefix("signatures/").and_then(|p| p.strip_suffix(".sig")).map(|n| (&mut b.signatures, n))
            })
        else {
            return Err(malformed(format!("unexpected entry `{path}`")));
        };
        if name.is_empty() || name.contains('/') {
            return Err(malformed(format!("unexpected entry `{path}`")));
        }
        if map.insert(name.to_string(), data).is_some() {
            return Err(malformed(format!("`{path}` appears twice")));
        }
        Ok(())
    }

    /// The bundle, once every file has been added.
    fn finish(self) -> Result<Bundle, ControlError> {
        let Self { manifest, mut bundle } = self;
        bundle.manifest = manifest.ok_or_else(|| malformed(format!("it has no {MANIFEST_ENTRY}")))?;
        if let Some(stray) = bundle.sboms.keys().find(|s| sbom_of(s).is_none_or(|f| !bundle.artifacts.contains_key(f)))
        {
            return Err(malformed(format!("`components/{stray}` is the SBOM of no function in the bundle")));
        }
        if let Some(stray) =
            bundle.signatures.keys().find(|s| !bundle.artifacts.contains_key(*s) && !bundle.trees.contains_key(*s))
        {
            return Err(malformed(format!("`signatures/{stray}.sig` is the signature of no component in the bundle")));
        }
        Ok(bundle)
    }
}

fn malformed(why: String) -> ControlError {
    ControlError::bad_request(
        format!("malformed bundle: {why}"),
        "upload the tar archive `nimbus deploy` builds: nimbus.toml plus components/NAME.wasm",
    )
}

/// The function whose SBOM a bundle's `components/` entry `name` is (`web.cdx.json`,
/// `web.spdx.json`: `web`).
pub(crate) fn sbom_of(name: &str) -> Option<&str> {
    name.strip_suffix(".cdx.json").or_else(|| name.strip_suffix(".spdx.json"))
}

/// `sha256:HEX` of an artifact.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}
