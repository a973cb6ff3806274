//! Supply-chain checks of deploys on `nimbus server`: `nimbus advisories import` fills the
//! offline OSV database (a running server reads it at its next deploy); a function's `cargo
//! auditable` section and a service's lockfiles are matched against it; the report (advisories,
//! the version to upgrade to, imports against grants) is stored with the revision and shown by
//! the API and `nimbus revisions show`; a deploy at or above the blocking severity — the
//! server's `--block-advisories` or the app's `block_advisories` — is refused and leaves nothing.
//! Artifact signatures (`nimbus signing`) are checked against the server's trusted signers; with
//! `--require-signatures` only what a trusted key signed deploys.
mod common;

use std::path::Path;

use common::client;
use common::platform::Platform;
use serde_json::{Value, json};

/// Two advisories: a high one in a crate (fixed in 0.4.2) and a critical one (by its CVSS
/// vector) in a Python package.
fn advisories(dir: &Path) {
    let crate_advisory = json!({
        "id": "RUSTSEC-2099-0001", "aliases": ["CVE-2099-1111"], "summary": "Out-of-bounds read in tinyparse",
        "database_specific": { "severity": "HIGH" },
        "affected": [{ "package": { "ecosystem": "crates.io", "name": "tinyparse" },
            "ranges": [{ "type": "SEMVER", "events": [{ "introduced": "0" }, { "fixed": "0.4.2" }] }] }]
    });
    let python_advisory = json!({
        "id": "PYSEC-2099-0002", "summary": "Header injection in requests",
        "severity": [{ "type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H" }],
        "affected": [{ "package": { "ecosystem": "PyPI", "name": "requests" },
            "ranges": [{ "type": "ECOSYSTEM", "events": [{ "introduced": "2.0" }, { "fixed": "2.32.0" }] }] }]
    });
    std::fs::create_dir_all(dir.join("nested")).unwrap();
    std::fs::write(dir.join("RUSTSEC-2099-0001.json"), crate_advisory.to_string()).unwrap();
    std::fs::write(dir.join("nested/PYSEC-2099-0002.json"), python_advisory.to_string()).unwrap();
    std::fs::write(dir.join("broken.json"), "{ not json").unwrap();
}

/// `wasm` with the section `cargo auditable` writes, listing `crates` from crates.io.
fn auditable(wasm: &[u8], crates: &[(&str, &str)]) -> Vec<u8> {
    let mut packages = vec![json!({ "name": "app", "version": "0.1.0", "source": "local", "root": true })];
    packages.extend(crates.iter().map(|(n, v)| json!({ "name": n, "version": v, "source": "crates.io" })));
    let compressed =
        miniz_oxide::deflate::compress_to_vec_zlib(json!({ "packages": packages }).to_string().as_bytes(), 6);
    let name = b".dep-v0";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(&compressed);
    let mut out = wasm.to_vec();
    out.push(0); // a custom section
    let mut len = payload.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        out.push(if len == 0 { byte } else { byte | 0x80 });
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(&payload);
    out
}

fn function_bundle(app: &str, extra: &str, crates: &[(&str, &str)]) -> Vec<u8> {
    let manifest = format!(
        "[app]\nname = \"{app}\"\n{extra}\n[component.web]\nsource = \"web.wasm\"\ngrants = {{ kv = [\"carts\"] }}\n[[trigger.http]]\nroute = \"/{app}/...\"\ncomponent = \"web\"\n"
    );
    let wasm = auditable(&std::fs::read(nimbus_fixtures::HELLO).unwrap(), crates);
    nimbus_control::Bundle { manifest, artifacts: [("web".to_string(), wasm)].into(), ..Default::default() }.pack()
}

fn service_bundle(app: &str) -> Vec<u8> {
    let manifest = format!(
        "[app]\nname = \"{app}\"\n[component.api]\ncommand = [\"python3\", \"server.py\"]\n[[trigger.http]]\nroute = \"/{app}/...\"\ncomponent = \"api\"\n"
    );
    let mut tree = tar::Builder::new(Vec::new());
    let mut add = |path: &str, text: &str| {
        let mut h = tar::Header::new_ustar();
        h.set_size(text.len() as u64);
        h.set_mode(0o644);
        tree.append_data(&mut h, path, text.as_bytes()).unwrap();
    };
    add("server.py", "raise SystemExit('never started: the deploy is refused first')\n");
    add("requirements.txt", "# pinned\nRequests==2.31.0\nflask>=3\n");
    let trees = [("api".to_string(), tree.into_inner().unwrap())].into();
    nimbus_control::Bundle { manifest, trees, ..Default::default() }.pack()
}

/// A revision's details, as the API gives them to an admin.
async fn revision_detail(p: &Platform, app: &str, id: &str) -> Value {
    let resp = client()
        .get(p.api_url(&format!("/v1/apps/{app}/revisions/{id}")))
        .bearer_auth(p.admin.as_deref().unwrap())
        .send()
        .await
        .unwrap();
    resp.json().await.unwrap()
}

fn import(p: &Platform, feed: &Path) -> String {
    let out = p.cli(None, &["advisories", "import", feed.to_str().unwrap(), "--data-dir", p.data.to_str().unwrap()]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn advisories_are_reported_with_the_revision_and_an_apps_own_threshold_blocks_its_deploys() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::start(&dir.path().join("data"), &[]);
    let admin = p.admin.clone().unwrap();
    // Before any import nothing can match, and the report says so.
    let (s, body) = p.deploy(&admin, function_bundle("early", "", &[("tinyparse", "0.4.1")])).await;
    assert_eq!(s, 201, "{body}");
    let early = revision_detail(&p, "early", body["revision"].as_str().unwrap()).await;
    assert_eq!((early["supply"]["advisories"].as_u64(), &early["supply"]["worst"]), (Some(0), &Value::Null), "{early}");

    let feed = dir.path().join("feed");
    advisories(&feed);
    let imported = import(&p, &feed);
    assert!(imported.contains("Imported 2 advisories (1 skipped)"), "{imported}");
    assert!(imported.contains("broken.json"), "{imported}");

    // The running server reads the new database at the next deploy.
    let (s, body) =
        p.deploy(&admin, function_bundle("shop", "", &[("tinyparse", "0.4.1"), ("serde", "1.0.200")])).await;
    assert_eq!(s, 201, "{body}");
    let revision = body["revision"].as_str().unwrap().to_string();
    let detail = revision_detail(&p, "shop", &revision).await;
    let supply = &detail["supply"];
    assert_eq!(
        (supply["advisories"].as_u64(), supply["worst"].as_str(), &supply["block"]),
        (Some(2), Some("high"), &Value::Null),
        "{supply}"
    );
    let web = &supply["components"][0];
    assert_eq!((web["component"].as_str(), web["packages"].as_u64()), (Some("web"), Some(2)), "{web}");
    assert_eq!(web["sources"], json!(["cargo auditable section"]));
    let finding = &web["findings"][0];
    assert_eq!(
        (finding["id"].as_str(), finding["package"].as_str(), finding["version"].as_str(), finding["fixed"].as_str()),
        (Some("RUSTSEC-2099-0001"), Some("tinyparse"), Some("0.4.1"), Some("0.4.2")),
        "{finding}"
    );
    assert_eq!(web["findings"].as_array().unwrap().len(), 1, "serde has no advisory: {web}");
    // The hello component imports no KV interface: its grant is unused.
    let kv = web["reach"].as_array().unwrap().iter().find(|r| r["capability"] == "kv").unwrap();
    assert_eq!((kv["imported"].as_bool(), kv["granted"].as_bool()), (Some(false), Some(true)), "{kv}");
    let shown = p.admin_cli(&["revisions", "show", "shop", &revision]);
    assert!(shown.contains("RUSTSEC-2099-0001 high") && shown.contains("fixed in 0.4.2"), "{shown}");
    assert!(shown.contains("grant is unused"), "{shown}");

    // An app that blocks high advisories itself is refused, naming what to upgrade.
    let (s, body) =
        p.deploy(&admin, function_bundle("strict", "block_advisories = \"high\"", &[("tinyparse", "0.4.1")])).await;
    assert_eq!(s, 422, "{body}");
    assert!(body["details"][0].as_str().unwrap().contains("tinyparse 0.4.1"), "{body}");
    assert!(body["details"][0].as_str().unwrap().contains("upgrade to 0.4.2"), "{body}");
    let resp = client().get(p.api_url("/v1/apps/strict")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    // Upgraded, it deploys.
    let (s, body) =
        p.deploy(&admin, function_bundle("strict", "block_advisories = \"high\"", &[("tinyparse", "0.4.2")])).await;
    assert_eq!(s, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_blocking_advisories_refuses_a_service_whose_lockfile_has_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let feed = dir.path().join("feed");
    advisories(&feed);
    std::fs::create_dir_all(&data).unwrap();
    let out = std::process::Command::new(common::NIMBUS)
        .args(["advisories", "import", feed.to_str().unwrap(), "--data-dir", data.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let p = Platform::start(&data, &["--block-advisories", "critical"]);
    let admin = p.admin.clone().unwrap();
    let (s, body) = p.deploy(&admin, service_bundle("svc")).await;
    assert_eq!(s, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("severity critical or above"), "{body}");
    let detail = body["details"][0].as_str().unwrap();
    assert!(
        detail.contains("PYSEC-2099-0002") && detail.contains("requests 2.31.0") && detail.contains("requirements.txt"),
        "{detail}"
    );
    let resp = client().get(p.api_url("/v1/apps/svc")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    // A high advisory is below the server's threshold: reported, not blocking.
    let (s, body) = p.deploy(&admin, function_bundle("shop", "", &[("tinyparse", "0.4.1")])).await;
    assert_eq!(s, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn nimbus_deploy_ships_the_sboms_beside_a_function_and_the_server_matches_them() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::start(&dir.path().join("data"), &[]);
    let feed = dir.path().join("feed");
    advisories(&feed);
    import(&p, &feed);
    // A function built by a toolchain without `cargo auditable` (a Python component, say),
    // with a CycloneDX SBOM beside its artifact, as `nimbus deploy` finds it.
    let app = dir.path().join("app");
    std::fs::create_dir_all(app.join("dist")).unwrap();
    std::fs::copy(nimbus_fixtures::HELLO, app.join("dist/web.wasm")).unwrap();
    let sbom = json!({ "bomFormat": "CycloneDX", "specVersion": "1.5", "components": [
        { "type": "library", "name": "requests", "version": "2.31.0", "purl": "pkg:pypi/requests@2.31.0" },
        { "type": "library", "name": "idna", "version": "3.7", "purl": "pkg:pypi/idna@3.7" } ] });
    std::fs::write(app.join("dist/web.wasm.cdx.json"), sbom.to_string()).unwrap();
    std::fs::write(
        app.join("nimbus.toml"),
        "[app]\nname = \"py\"\n[component.web]\nsource = \"dist/web.wasm\"\n[[trigger.http]]\nroute = \"/py/...\"\ncomponent = \"web\"\n",
    )
    .unwrap();
    p.admin_cli(&["deploy", app.to_str().unwrap()]);
    let revisions = p.admin_cli(&["revisions", "list", "py", "-o", "json"]);
    let revisions: Value = serde_json::from_str(&revisions).unwrap();
    let revision = revisions[0]["id"].as_str().unwrap().to_string();
    let shown = p.admin_cli(&["revisions", "show", "py", &revision]);
    assert!(shown.contains("2 dependencies (web.cdx.json)"), "{shown}");
    assert!(shown.contains("PYSEC-2099-0002 critical requests 2.31.0 (PyPI), fixed in 2.32.0"), "{shown}");

    // An SBOM of no function in the bundle is refused as malformed, and nothing is deployed.
    let manifest = "[app]\nname = \"stray\"\n[component.web]\nsource = \"web.wasm\"\n[[trigger.http]]\nroute = \"/stray/...\"\ncomponent = \"web\"\n";
    let bundle = nimbus_control::Bundle {
        manifest: manifest.to_string(),
        artifacts: [("web".to_string(), std::fs::read(nimbus_fixtures::HELLO).unwrap())].into(),
        sboms: [("ghost.cdx.json".to_string(), sbom.to_string().into_bytes())].into(),
        ..Default::default()
    };
    let (s, body) = p.deploy(p.admin.as_deref().unwrap(), bundle.pack()).await;
    assert_eq!(s, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("`components/ghost.cdx.json` is the SBOM of no function"),
        "{body}"
    );
    let resp = client().get(p.api_url("/v1/apps/stray")).bearer_auth(p.admin.as_deref().unwrap()).send().await.unwrap();
    assert_eq!(resp.status(), 404);

    // A server that trusts no key and requires nothing still refuses a signature of another
    // artifact: what was signed is not what is deployed.
    let key = nimbus_security::signing::SigningKey::generate().unwrap();
    let other = nimbus_control::digest(b"another artifact");
    let bundle = nimbus_control::Bundle {
        manifest: manifest.replace("stray", "forged"),
        artifacts: [("web".to_string(), std::fs::read(nimbus_fixtures::HELLO).unwrap())].into(),
        signatures: [(
            "web".to_string(),
            nimbus_security::supply::ArtifactSignature::sign(&key, &other).to_json().into_bytes(),
        )]
        .into(),
        ..Default::default()
    };
    let (s, body) = p.deploy(p.admin.as_deref().unwrap(), bundle.pack()).await;
    assert_eq!(s, 422, "{body}");
    assert!(body["details"][0].as_str().unwrap().contains("not of this artifact"), "{body}");
}

/// Runs the CLI with no server; returns (success, stdout + stderr).
fn nimbus(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(common::NIMBUS).args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_requiring_signatures_deploys_only_what_a_trusted_key_signed() {
    let dir = tempfile::tempdir().unwrap();
    let (ci_key, stranger_key, signers) =
        (dir.path().join("ci.key"), dir.path().join("stranger.key"), dir.path().join("signers"));
    let out = std::process::Command::new(common::NIMBUS)
        .args(["signing", "keygen", ci_key.to_str().unwrap(), "--name", "ci"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(&signers, &out.stdout).unwrap();
    assert!(nimbus(&["signing", "keygen", stranger_key.to_str().unwrap()]).0);
    let (ok, text) = nimbus(&["signing", "keygen", ci_key.to_str().unwrap()]);
    assert!(!ok && text.contains("never overwritten"), "{text}");

    let p = Platform::start(
        &dir.path().join("data"),
        &["--trusted-signers", signers.to_str().unwrap(), "--require-signatures"],
    );
    let app = dir.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    let wasm = app.join("web.wasm");
    std::fs::copy(nimbus_fixtures::HELLO, &wasm).unwrap();
    std::fs::write(
        app.join("nimbus.toml"),
        "[app]\nname = \"signed\"\n[component.web]\nsource = \"web.wasm\"\n[[trigger.http]]\nroute = \"/signed/...\"\ncomponent = \"web\"\n",
    )
    .unwrap();
    let deploy = |extra: &[&str]| {
        let out = p.cli(p.admin.as_deref(), &[&["deploy", app.to_str().unwrap()], extra].concat());
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let absent = || async {
        let resp =
            client().get(p.api_url("/v1/apps/signed")).bearer_auth(p.admin.as_deref().unwrap()).send().await.unwrap();
        resp.status() == 404
    };

    // Unsigned: refused.
    let (ok, text) = deploy(&[]);
    assert!(!ok && text.contains("component `web`: it is not signed"), "{text}");
    assert!(absent().await);

    // Signed by a key the server does not trust: refused.
    assert!(nimbus(&["signing", "sign", wasm.to_str().unwrap(), "--key", stranger_key.to_str().unwrap()]).0);
    let (ok, text) = deploy(&[]);
    assert!(!ok && text.contains("a key this server does not trust"), "{text}");
    assert!(absent().await);

    // Signed by the trusted key: `verify` agrees, the deploy goes through and the report names it.
    assert!(nimbus(&["signing", "sign", wasm.to_str().unwrap(), "--key", ci_key.to_str().unwrap()]).0);
    let (ok, text) = nimbus(&["signing", "verify", wasm.to_str().unwrap(), "--trusted", signers.to_str().unwrap()]);
    assert!(ok && text.contains("is signed by `ci`"), "{text}");
    let (ok, text) = deploy(&[]);
    assert!(ok, "{text}");
    let resp = client().get(p.url("/signed/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let revisions: Value = serde_json::from_str(&p.admin_cli(&["revisions", "list", "signed", "-o", "json"])).unwrap();
    let shown = p.admin_cli(&["revisions", "show", "signed", revisions[0]["id"].as_str().unwrap()]);
    assert!(shown.contains("signed by `ci`") && shown.contains("signatures required (1 trusted signers)"), "{shown}");

    // The artifact changed after signing (a byte appended: a custom section's worth of tampering).
    let mut bytes = std::fs::read(&wasm).unwrap();
    bytes.extend_from_slice(&[0, 1, 0]);
    std::fs::write(&wasm, bytes).unwrap();
    let (ok, text) = nimbus(&["signing", "verify", wasm.to_str().unwrap(), "--trusted", signers.to_str().unwrap()]);
    assert!(!ok && text.contains("not of this artifact"), "{text}");
    let (ok, text) = deploy(&[]);
    assert!(!ok && text.contains("not of this artifact"), "{text}");
    let revisions: Value = serde_json::from_str(&p.admin_cli(&["revisions", "list", "signed", "-o", "json"])).unwrap();
    assert_eq!(revisions.as_array().unwrap().len(), 1, "{revisions}");

    // A service's tree is signed as `nimbus deploy --sign` packs it.
    let svc = common::App::new(
        "[app]\nname = \"svc\"\n[component.api]\ncommand = [\"python3\", \"server.py\"]\nenv = { PREFIX = \"/svc\" }\nreadiness = { path = \"/healthz\" }\n[[trigger.http]]\nroute = \"/svc/...\"\ncomponent = \"api\"\n",
    );
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/services/server.py"), svc.path().join("server.py"))
        .unwrap();
    let out = p.cli(p.admin.as_deref(), &["deploy", svc.path().to_str().unwrap()]);
    assert!(!out.status.success(), "an unsigned service is refused too");
    let out = p.cli(p.admin.as_deref(), &["deploy", svc.path().to_str().unwrap(), "--sign", ci_key.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let resp = client().get(p.url("/svc/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}
