//! How a deploy bundle is laid out as an OCI artifact, both ways.
//!
//! The layout is Spin's (`spin registry push`) rather than the CNCF TAG Runtime wasm artifact:
//! the CNCF layout (`application/vnd.wasm.config.v0+json` config, one `application/wasm` layer)
//! describes one component, while a Nimbus app, like a Spin app, is a manifest plus several
//! components. As in Spin, the app's manifest is the config blob (ours,
//! `application/vnd.nimbus.app.v1+toml`: the `nimbus.toml` text) and each function's wasm is one
//! `application/vnd.wasm.content.layer.v1+wasm` layer, so registries and tools that know wasm
//! layers recognise them. What neither layout defines gets a media type of its own: a service's
//! working directory (`application/vnd.nimbus.service.v1.tar`), artifact signatures
//! (`application/vnd.nimbus.signature.v1+json`); SBOMs keep their standard types
//! (`application/vnd.cyclonedx+json`, `application/spdx+json`). Every layer carries its path in
//! the bundle as its `org.opencontainers.image.title`, so a pull rebuilds exactly the bundle that
//! was pushed, and a layer whose media type is not the one its path calls for is refused.
use std::collections::BTreeMap;

use nimbus_control::{Bundle, MANIFEST_ENTRY};
use oci_client::manifest::{OCI_IMAGE_MEDIA_TYPE, OciDescriptor, OciImageManifest, WASM_LAYER_MEDIA_TYPE};

use super::error::RegistryError;

/// Media type of the config blob: the app's `nimbus.toml`.
pub(crate) const CONFIG_MEDIA_TYPE: &str = "application/vnd.nimbus.app.v1+toml";
const SERVICE_MEDIA_TYPE: &str = "application/vnd.nimbus.service.v1.tar";
const SIGNATURE_MEDIA_TYPE: &str = "application/vnd.nimbus.signature.v1+json";
const CYCLONEDX_MEDIA_TYPE: &str = "application/vnd.cyclonedx+json";
const SPDX_MEDIA_TYPE: &str = "application/spdx+json";
/// The annotation naming a layer's path in the bundle.
const TITLE: &str = "org.opencontainers.image.title";

/// The media type of the bundle file at `path`.
fn media_type(path: &str) -> Option<&'static str> {
    if path.starts_with("signatures/") {
        Some(SIGNATURE_MEDIA_TYPE)
    } else if path.starts_with("services/") {
        Some(SERVICE_MEDIA_TYPE)
    } else if path.ends_with(".cdx.json") {
        Some(CYCLONEDX_MEDIA_TYPE)
    } else if path.ends_with(".spdx.json") {
        Some(SPDX_MEDIA_TYPE)
    } else if path.ends_with(".wasm") {
        Some(WASM_LAYER_MEDIA_TYPE)
    } else {
        None
    }
}

/// A blob of the artifact with its descriptor.
pub(crate) struct Blob<'a> {
    pub(crate) descriptor: OciDescriptor,
    pub(crate) data: &'a [u8],
}

/// The artifact of `bundle`: its config blob, its layers, and its manifest's JSON.
pub(crate) fn artifact(bundle: &Bundle) -> (Blob<'_>, Vec<Blob<'_>>, Vec<u8>) {
    let config = blob(CONFIG_MEDIA_TYPE, bundle.manifest.as_bytes(), None);
    let layers: Vec<Blob<'_>> = bundle
        .entries()
        .into_iter()
        .filter_map(|(path, data)| Some(blob(media_type(&path)?, data, Some(path))))
        .collect();
    let manifest = OciImageManifest {
        media_type: Some(OCI_IMAGE_MEDIA_TYPE.to_string()),
        config: config.descriptor.clone(),
        layers: layers.iter().map(|l| l.descriptor.clone()).collect(),
        ..OciImageManifest::default()
    };
    let json = serde_json::to_vec(&manifest).expect("a manifest serializes");
    (config, layers, json)
}

/// Refuses a descriptor whose digest is not `sha256:` and 64 lower-case hex digits, or that
/// names other places to fetch it from (`urls`: the client would follow them anywhere).
fn check_descriptor(descriptor: &OciDescriptor) -> Result<(), RegistryError> {
    let hex = descriptor.digest.strip_prefix("sha256:").unwrap_or_default();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(RegistryError::NotNimbus(format!(
            "it names a blob by `{}`, not a sha256 digest",
            descriptor.digest
        )));
    }
    if descriptor.urls.as_ref().is_some_and(|u| !u.is_empty()) {
        return Err(RegistryError::NotNimbus(format!(
            "its blob {} is to be fetched from elsewhere",
            descriptor.digest
        )));
    }
    Ok(())
}

fn blob<'a>(media_type: &str, data: &'a [u8], title: Option<String>) -> Blob<'a> {
    let descriptor = OciDescriptor {
        media_type: media_type.to_string(),
        digest: nimbus_control::digest(data),
        size: data.len() as i64,
        annotations: title.map(|t| BTreeMap::from([(TITLE.to_string(), t)])),
        ..OciDescriptor::default()
    };
    Blob { descriptor, data }
}

/// What a pulled manifest names: the config's descriptor, then each layer's bundle path and
/// descriptor; refused unless it is a Nimbus app artifact whose layers have the media types
/// their paths call for.
pub(crate) fn read(manifest: &[u8]) -> Result<(OciDescriptor, Vec<(String, OciDescriptor)>), RegistryError> {
    let manifest: OciImageManifest = serde_json::from_slice(manifest)
        .map_err(|e| RegistryError::NotNimbus(format!("its manifest is not an OCI image manifest ({e})")))?;
    if manifest.media_type.as_deref().is_some_and(|t| t != OCI_IMAGE_MEDIA_TYPE) {
        return Err(RegistryError::NotNimbus(format!(
            "its manifest is a `{}`, not an OCI image manifest",
            manifest.media_type.unwrap_or_default()
        )));
    }
    if manifest.config.media_type != CONFIG_MEDIA_TYPE {
        return Err(RegistryError::NotNimbus(format!(
            "its config is `{}`, not `{CONFIG_MEDIA_TYPE}` (it was not pushed by `nimbus registry push`)",
            manifest.config.media_type
        )));
    }
    check_descriptor(&manifest.config)?;
    let mut layers = Vec::with_capacity(manifest.layers.len());
    for layer in manifest.layers {
        check_descriptor(&layer)?;
        let title = layer.annotations.as_ref().and_then(|a| a.get(TITLE)).cloned().unwrap_or_default();
        let expected = media_type(&title).filter(|_| title != MANIFEST_ENTRY);
        if expected != Some(layer.media_type.as_str()) {
            return Err(RegistryError::NotNimbus(format!(
                "its layer {} (`{title}`) is `{}`, where a Nimbus app has {}",
                layer.digest,
                layer.media_type,
                expected.map_or("no such layer".to_string(), |t| format!("`{t}`"))
            )));
        }
        layers.push((title, layer));
    }
    Ok((manifest.config, layers))
}
