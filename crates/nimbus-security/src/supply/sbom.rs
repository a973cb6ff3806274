//! SBOMs: CycloneDX JSON (`components[].purl`) and SPDX JSON (`packages[].externalRefs[]` of
//! type `purl`), and the package URLs (purls) both name packages by.
use percent_encoding::percent_decode_str;

use super::{Ecosystem, Package, SupplyError};

#[derive(serde::Deserialize)]
struct CycloneDx {
    #[serde(default)]
    components: Vec<Component>,
}

#[derive(serde::Deserialize)]
struct Component {
    purl: Option<String>,
    /// Sub-components (an assembly's parts).
    #[serde(default)]
    components: Vec<Component>,
}

/// A CycloneDX JSON SBOM's components that carry a purl of a known ecosystem with a version.
pub(crate) fn cyclonedx(text: &str, origin: &str) -> Result<Vec<Package>, SupplyError> {
    let bom: CycloneDx = serde_json::from_str(text).map_err(|e| SupplyError::parse("CycloneDX SBOM", origin, e))?;
    let mut out = Vec::new();
    let mut stack: Vec<&Component> = bom.components.iter().collect();
    while let Some(component) = stack.pop() {
        out.extend(component.purl.as_deref().and_then(|p| from_purl(p, origin)));
        stack.extend(&component.components);
    }
    Ok(out)
}

#[derive(serde::Deserialize)]
struct Spdx {
    #[serde(default)]
    packages: Vec<SpdxPackage>,
}

#[derive(serde::Deserialize)]
struct SpdxPackage {
    #[serde(default, rename = "externalRefs")]
    external_refs: Vec<ExternalRef>,
}

#[derive(serde::Deserialize)]
struct ExternalRef {
    #[serde(rename = "referenceType")]
    reference_type: String,
    #[serde(rename = "referenceLocator")]
    reference_locator: String,
}

/// An SPDX JSON SBOM's packages that carry a purl of a known ecosystem with a version.
pub(crate) fn spdx(text: &str, origin: &str) -> Result<Vec<Package>, SupplyError> {
    let doc: Spdx = serde_json::from_str(text).map_err(|e| SupplyError::parse("SPDX SBOM", origin, e))?;
    Ok(doc
        .packages
        .iter()
        .flat_map(|p| &p.external_refs)
        .filter(|r| r.reference_type == "purl")
        .filter_map(|r| from_purl(&r.reference_locator, origin))
        .collect())
}

/// A package URL's parts that name a package (qualifiers and subpath dropped), percent-decoded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Purl {
    pub(crate) ty: String,
    /// Segments joined with `/`, each decoded.
    pub(crate) namespace: Option<String>,
    pub(crate) name: String,
    pub(crate) version: Option<String>,
}

/// Parses `pkg:TYPE/NAMESPACE/NAME@VERSION?QUALIFIERS#SUBPATH` per the purl specification. An
/// unencoded `@` starting an npm scope (`pkg:npm/@scope/name@1.0.0`, as some tools write it) is
/// accepted too: only an `@` in the last segment starts the version.
pub(crate) fn parse_purl(purl: &str) -> Option<Purl> {
    let rest = purl.trim().strip_prefix("pkg:")?;
    let rest = rest.split('#').next().unwrap_or_default();
    let rest = rest.split('?').next().unwrap_or_default();
    let rest = rest.trim_start_matches('/');
    let (ty, rest) = rest.split_once('/')?;
    let (path, version) = match rest.rsplit_once('@') {
        Some((path, version)) if !version.contains('/') && !path.is_empty() => (path, Some(decode(version)?)),
        _ => (rest, None),
    };
    let mut segments: Vec<String> =
        path.trim_matches('/').split('/').filter(|s| !s.is_empty()).map(decode).collect::<Option<_>>()?;
    let name = segments.pop()?;
    let namespace = (!segments.is_empty()).then(|| segments.join("/"));
    Some(Purl { ty: ty.to_ascii_lowercase(), namespace, name, version: version.filter(|v| !v.is_empty()) })
}

fn decode(segment: &str) -> Option<String> {
    percent_decode_str(segment).decode_utf8().ok().map(|s| s.into_owned())
}

/// The package a purl names, if it is of a known type and has a version.
fn from_purl(purl: &str, origin: &str) -> Option<Package> {
    let purl = parse_purl(purl)?;
    let ecosystem = match purl.ty.as_str() {
        "cargo" => Ecosystem::CratesIo,
        "npm" => Ecosystem::Npm,
        "pypi" => Ecosystem::PyPI,
        "golang" => Ecosystem::Go,
        _ => return None,
    };
    let name = match (&purl.namespace, ecosystem) {
        (Some(namespace), Ecosystem::Npm | Ecosystem::Go) => format!("{namespace}/{}", purl.name),
        _ => purl.name,
    };
    Some(Package::new(ecosystem, &name, &purl.version?, origin))
}
