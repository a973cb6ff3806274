//! Inventories from wasm artifacts, SBOMs and directory trees.
use std::fs;

use super::super::sbom::{Purl, parse_purl};
use super::{custom_section, module_with_deps, section, zlib};
use crate::supply::{Ecosystem, Format, Package, SupplyError, from_wasm, sboms_beside, scan_tree};

const AUDITABLE_JSON: &str = r#"{"packages":[
    {"name":"hello-fn","version":"0.1.0","source":"local","kind":"runtime","dependencies":[1,2,3,4],"root":true},
    {"name":"serde","version":"1.0.100","source":"crates.io","kind":"runtime","dependencies":[]},
    {"name":"wit-bindgen","version":"0.30.0","source":"crates.io"},
    {"name":"acme-internal","version":"0.2.0","source":"git","kind":"runtime"},
    {"name":"cc","version":"1.0.83","source":"crates.io","kind":"build"}
]}"#;

fn names(packages: &[Package]) -> Vec<String> {
    packages.iter().map(|p| format!("{} {} {}", p.ecosystem, p.name, p.version)).collect()
}

#[test]
fn a_modules_auditable_section_lists_its_crates_io_dependencies() {
    let packages = from_wasm(&module_with_deps(AUDITABLE_JSON)).expect("readable");
    assert_eq!(names(&packages), ["crates.io cc 1.0.83", "crates.io serde 1.0.100", "crates.io wit-bindgen 0.30.0"]);
    assert!(packages.iter().all(|p| p.source == "cargo auditable section"));
}

#[test]
fn the_section_cargo_auditable_writes_is_read() {
    // The `.dep-v0` section `cargo auditable` 0.7.7 wrote (`cargo auditable build --release
    // --target wasm32-wasip1` of a binary crate `aud` depending on `itoa = "=1.0.10"`), as is.
    let compressed = include_bytes!("fixtures/cargo-auditable-0.7.7.dep-v0");
    let mut module = wat::parse_str("(module)").expect("valid wat");
    module.extend(custom_section(".dep-v0", compressed));
    assert_eq!(names(&from_wasm(&module).expect("readable")), ["crates.io itoa 1.0.10"]);
}

#[test]
fn a_section_in_a_components_nested_module_is_found() {
    let mut component = wat::parse_str("(component)").expect("valid wat");
    // Section 1 of a component: a core module.
    component.extend(section(1, &module_with_deps(AUDITABLE_JSON)));
    let packages = from_wasm(&component).expect("readable");
    assert_eq!(packages.len(), 3);
}

#[test]
fn an_artifact_without_the_section_has_no_packages() {
    let module = wat::parse_str("(module)").expect("valid wat");
    assert_eq!(from_wasm(&module).expect("readable"), []);
}

#[test]
fn a_section_inflating_past_the_limit_is_refused() {
    // 9 MiB of JSON whitespace compresses to a few KiB: a zip bomb in miniature.
    let mut bomb = vec![b' '; 9 << 20];
    bomb.extend(br#"{"packages":[]}"#);
    let mut module = wat::parse_str("(module)").expect("valid wat");
    module.extend(custom_section(".dep-v0", &zlib(&bomb)));
    assert!(module.len() < 64 << 10, "the bomb is small: {}", module.len());
    let err = from_wasm(&module).expect_err("over the limit");
    assert!(matches!(err, SupplyError::TooLarge { limit, .. } if limit == 8 << 20), "{err:?}");
}

#[test]
fn a_corrupt_section_or_binary_is_an_error() {
    let mut module = wat::parse_str("(module)").expect("valid wat");
    module.extend(custom_section(".dep-v0", b"not zlib at all"));
    assert!(matches!(from_wasm(&module), Err(SupplyError::Parse { what: "zlib stream", .. })));

    let mut module = wat::parse_str("(module)").expect("valid wat");
    module.extend(custom_section(".dep-v0", &zlib(br#"{"packages": "none"}"#)));
    assert!(matches!(from_wasm(&module), Err(SupplyError::Parse { .. })));

    assert!(matches!(from_wasm(b"\0asm\x01\0\0\0\x07\xff"), Err(SupplyError::Parse { what: "wasm binary", .. })));
}

#[test]
fn purls_are_parsed_per_the_specification() {
    let purl = |s| parse_purl(s).expect("a purl");
    assert_eq!(
        purl("pkg:npm/%40angular/core@16.0.0?arch=x64#lib"),
        Purl {
            ty: "npm".into(),
            namespace: Some("@angular".into()),
            name: "core".into(),
            version: Some("16.0.0".into())
        }
    );
    assert_eq!(purl("pkg:npm/@babel/core@7.22.0").namespace.as_deref(), Some("@babel"));
    assert_eq!(purl("pkg:npm/@babel/core").version, None);
    assert_eq!(
        purl("pkg:golang/github.com/docker/docker@v20.10.7%2Bincompatible").version.as_deref(),
        Some("v20.10.7+incompatible")
    );
    assert_eq!(purl("pkg:pypi/django@4.2.1").namespace, None);
    assert_eq!(parse_purl("pkg:cargo"), None);
    assert_eq!(parse_purl("https://crates.io/crates/serde"), None);
    assert_eq!(parse_purl("pkg:npm/%ff@1.0.0"), None, "not UTF-8 once decoded");
}

#[test]
fn cyclonedx_components_with_purls_are_read() {
    let bom = r#"{
      "bomFormat": "CycloneDX", "specVersion": "1.5",
      "metadata": { "component": { "type": "application", "name": "shop", "purl": "pkg:npm/shop@1.0.0" } },
      "components": [
        { "type": "library", "name": "serde", "version": "1.0.1", "purl": "pkg:cargo/serde@1.0.1" },
        { "type": "library", "group": "@angular", "name": "core", "purl": "pkg:npm/%40angular/core@16.0.0" },
        { "type": "library", "name": "Flask_Login", "purl": "pkg:pypi/Flask_Login@0.6.2" },
        { "type": "library", "name": "toml", "purl": "pkg:golang/github.com/BurntSushi/toml@v1.2.1?type=module" },
        { "type": "library", "name": "musl", "purl": "pkg:apk/alpine/musl@1.2.3-r4" },
        { "type": "library", "name": "unpinned", "purl": "pkg:npm/left-pad" },
        { "type": "library", "name": "no-purl", "version": "1.0.0" },
        { "type": "framework", "name": "bundle", "components": [
          { "type": "library", "name": "node", "purl": "pkg:npm/%40types/node@20.1.0" }
        ] }
      ]
    }"#;
    let packages = Format::CycloneDx.parse(bom, "sbom.cdx.json").expect("valid");
    assert_eq!(
        names(&packages),
        [
            "crates.io serde 1.0.1",
            "npm @angular/core 16.0.0",
            "npm @types/node 20.1.0",
            "PyPI flask-login 0.6.2",
            "Go github.com/BurntSushi/toml v1.2.1",
        ]
    );
    assert!(packages.iter().all(|p| p.source == "sbom.cdx.json"));
    assert!(Format::CycloneDx.parse("{\"components\": 3}", "bad.cdx.json").is_err());
}

#[test]
fn spdx_packages_purl_references_are_read() {
    let doc = r#"{
      "spdxVersion": "SPDX-2.3", "SPDXID": "SPDXRef-DOCUMENT", "name": "shop",
      "packages": [
        { "SPDXID": "SPDXRef-Package-lodash", "name": "lodash", "versionInfo": "4.17.20", "externalRefs": [
            { "referenceCategory": "SECURITY", "referenceType": "cpe23Type",
              "referenceLocator": "cpe:2.3:a:lodash:lodash:4.17.20:*:*:*:*:*:*:*" },
            { "referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": "pkg:npm/lodash@4.17.20" } ] },
        { "SPDXID": "SPDXRef-Package-babel", "name": "@babel/traverse", "externalRefs": [
            { "referenceCategory": "PACKAGE_MANAGER", "referenceType": "purl", "referenceLocator": "pkg:npm/@babel/traverse@7.23.1" } ] },
        { "SPDXID": "SPDXRef-root", "name": "shop" }
      ]
    }"#;
    let packages = Format::Spdx.parse(doc, "app.spdx.json").expect("valid");
    assert_eq!(names(&packages), ["npm @babel/traverse 7.23.1", "npm lodash 4.17.20"]);
}

#[test]
fn formats_are_detected_by_file_name() {
    assert_eq!(Format::detect("Cargo.lock"), Some(Format::CargoLock));
    assert_eq!(Format::detect("npm-shrinkwrap.json"), Some(Format::PackageLock));
    assert_eq!(Format::detect("bom.json"), Some(Format::CycloneDx));
    assert_eq!(Format::detect("fn.wasm.cdx.json"), Some(Format::CycloneDx));
    assert_eq!(Format::detect("fn.spdx.json"), Some(Format::Spdx));
    assert_eq!(Format::detect("package.json"), None);
    assert_eq!(Format::detect("Cargo.toml"), None);
}

const CARGO_LOCK: &str = r#"version = 4

[[package]]
name = "api"
version = "0.1.0"
dependencies = ["serde"]

[[package]]
name = "serde"
version = "1.0.100"
source = "registry+https://github.com/rust-lang/crates.io-index"
"#;

#[test]
#[cfg(unix)]
fn a_tree_is_walked_without_leaving_it() {
    use std::os::unix::fs::symlink;

    let outside = tempfile::tempdir().expect("tempdir");
    let secret_lock = CARGO_LOCK.replace("serde", "outside-secret");
    fs::write(outside.path().join("Cargo.lock"), &secret_lock).expect("write");

    let tree = tempfile::tempdir().expect("tempdir");
    let root = tree.path();
    fs::write(root.join("Cargo.lock"), CARGO_LOCK).expect("write");
    fs::create_dir_all(root.join("web/node_modules/left-pad")).expect("mkdir");
    let npm = r#"{"lockfileVersion": 3, "packages": {"node_modules/lodash": {"version": "4.17.20"}}}"#;
    fs::write(root.join("web/package-lock.json"), npm).expect("write");
    // Installed dependencies' own lockfiles say nothing about the service.
    let nested = r#"{"lockfileVersion": 3, "packages": {"node_modules/ignored": {"version": "1.0.0"}}}"#;
    fs::write(root.join("web/node_modules/left-pad/package-lock.json"), nested).expect("write");
    fs::create_dir_all(root.join("py")).expect("mkdir");
    fs::write(root.join("py/requirements.txt"), "requests==2.31.0\n").expect("write");
    // Links out of the tree, to a file and to a directory, are not followed; one inside is.
    fs::create_dir_all(root.join("linked")).expect("mkdir");
    symlink(outside.path().join("Cargo.lock"), root.join("linked/Cargo.lock")).expect("symlink");
    symlink(outside.path(), root.join("escape")).expect("symlink");
    symlink(root.join("py/requirements.txt"), root.join("linked/requirements.txt")).expect("symlink");

    let packages = scan_tree(root).expect("scanned");
    assert_eq!(names(&packages), ["crates.io serde 1.0.100", "npm lodash 4.17.20", "PyPI requests 2.31.0"]);
    let sources: Vec<&str> = packages.iter().map(|p| p.source.as_str()).collect();
    assert_eq!(sources, ["Cargo.lock", "web/package-lock.json", "linked/requirements.txt"]);
}

#[test]
fn a_broken_lockfile_in_a_tree_names_the_file() {
    let tree = tempfile::tempdir().expect("tempdir");
    fs::write(tree.path().join("go.sum"), "github.com/x/y\n").expect("write");
    let err = scan_tree(tree.path()).expect_err("invalid");
    assert!(err.to_string().starts_with("go.sum is not a valid go.sum"), "{err}");
}

#[test]
fn sboms_beside_an_artifact_are_found_one_per_format() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wasm = dir.path().join("checkout.wasm");
    assert_eq!(sboms_beside(&wasm), []);

    let cdx = r#"{"bomFormat": "CycloneDX", "components": [{"purl": "pkg:cargo/serde@1.0.1"}]}"#;
    fs::write(dir.path().join("checkout.cdx.json"), cdx).expect("write");
    fs::write(dir.path().join("checkout.wasm.cdx.json"), cdx).expect("write");
    let spdx = r#"{"spdxVersion": "SPDX-2.3", "packages": [{"externalRefs": [
        {"referenceType": "purl", "referenceLocator": "pkg:cargo/serde@1.0.1"},
        {"referenceType": "purl", "referenceLocator": "pkg:cargo/time@0.3.20"}]}]}"#;
    fs::write(dir.path().join("checkout.spdx.json"), spdx).expect("write");
    fs::write(dir.path().join("other.spdx.json"), spdx).expect("write");
    let found = sboms_beside(&wasm);
    assert_eq!(
        found,
        [
            (dir.path().join("checkout.wasm.cdx.json"), Format::CycloneDx),
            (dir.path().join("checkout.spdx.json"), Format::Spdx)
        ]
    );
    let packages: Vec<Package> = found.iter().flat_map(|(path, format)| format.read(path).expect("valid")).collect();
    assert_eq!(names(&packages), ["crates.io serde 1.0.1", "crates.io serde 1.0.1", "crates.io time 0.3.20"]);
    assert_eq!(packages[0].ecosystem, Ecosystem::CratesIo);
}
