//! Apps as OCI artifacts, against a real registry (Debian's `docker-registry`, the CNCF
//! distribution server, on a free loopback port with its storage in a temporary directory):
//! `nimbus registry push` prints the digest, `nimbus registry pull` writes an app directory that
//! `nimbus up` serves, `nimbus deploy oci://REF` deploys the digest a tag names and the revision
//! records it; tampered or missing blobs, wrong media types and unknown references are refused
//! with their codes; a registry with htpasswd auth refuses anonymous pushes and accepts the
//! credentials of a docker config file.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

use base64::Engine;
use common::platform::{Platform, hello_app};
use common::{App, NIMBUS, client, ok};

/// A `docker-registry serve` on a free loopback port; killed on drop.
struct Registry {
    child: Child,
    addr: String,
    storage: tempfile::TempDir,
    _config: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry; with `htpasswd` (user, password) it requires those credentials.
    async fn start(htpasswd: Option<(&str, &str)>) -> Self {
        let storage = tempfile::tempdir().unwrap();
        let config = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            storage.path().display()
        );
        if let Some((user, password)) = htpasswd {
            let line = format!("{user}:{}\n", bcrypt::hash(password, 5).unwrap());
            std::fs::write(config.path().join("htpasswd"), line).unwrap();
            yaml.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: nimbus-tests\n    path: {}\n",
                config.path().join("htpasswd").display()
            ));
        }
        std::fs::write(config.path().join("config.yml"), yaml).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(config.path().join("config.yml"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker-registry (scripts/test.sh installs it)");
        let registry = Self { child, addr, storage, _config: config };
        for _ in 0..500 {
            if client().get(format!("http://{}/v2/", registry.addr)).send().await.is_ok() {
                return registry;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("docker-registry did not start on {}", registry.addr);
    }

    /// The stored data of blob `digest`.
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.storage.path().join(format!("docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `nimbus ARGS` in `dir` with the docker config directory `docker` (no other credentials).
fn nimbus(dir: &Path, docker: &Path, args: &[&str]) -> Output {
    Command::new(NIMBUS)
        .args(args)
        .current_dir(dir)
        .env("DOCKER_CONFIG", docker)
        .env_remove("NIMBUS_SERVER")
        .env_remove("NIMBUS_TOKEN")
        .output()
        .unwrap()
}

/// The stderr of a failed command; panics if it succeeded.
fn failed(out: Output) -> String {
    assert!(!out.status.success(), "succeeded: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8(out.stderr).unwrap()
}

/// Pushes `app` to `reference` and returns the digest it prints.
fn push(app: &App, docker: &Path, reference: &str) -> String {
    let digest = ok(nimbus(app.path(), docker, &["registry", "push", reference, "--insecure"])).trim().to_string();
    assert!(digest.starts_with("sha256:") && digest.len() == 71, "{digest}");
    digest
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pushed_app_pulls_into_a_directory_that_nimbus_up_serves() {
    let registry = Registry::start(None).await;
    let docker = tempfile::tempdir().unwrap();
    let app = hello_app("shop", "/shop/...", "pulled");
    let reference = format!("{}/team/shop:v1", registry.addr);
    let digest = push(&app, docker.path(), &reference);

    let out = tempfile::tempdir().unwrap();
    let pulled = out.path().join("shop");
    let said = ok(nimbus(out.path(), docker.path(), &["registry", "pull", &reference, "--insecure", "-o", "shop"]));
    assert!(said.contains(&format!("{}/team/shop@{digest}", registry.addr)), "{said}");
    let wasm = std::fs::read(pulled.join("components/web.wasm")).unwrap();
    assert_eq!(wasm, std::fs::read(nimbus_fixtures::HELLO).unwrap());
    let manifest = std::fs::read_to_string(pulled.join("nimbus.toml")).unwrap();
    assert!(manifest.contains("source = \"components/web.wasm\"") && manifest.contains("MARKER = \"pulled\""));

    // Pinned to the digest, the same artifact; into a directory that holds an app, refused.
    let by_digest = format!("{}/team/shop@{digest}", registry.addr);
    ok(nimbus(out.path(), docker.path(), &["registry", "pull", &by_digest, "--insecure", "-o", "again"]));
    let err = failed(nimbus(out.path(), docker.path(), &["registry", "pull", &reference, "--insecure", "-o", "shop"]));
    assert!(err.contains("already holds an app"), "{err}");

    let server = app.up_dir(&pulled, &[]);
    let resp = client().get(server.url("/shop/cart")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "Hello from Nimbus!\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_oci_deploys_the_digest_its_tag_names_and_records_it() {
    let registry = Registry::start(None).await;
    let data = tempfile::tempdir().unwrap();
    let p = Platform::start(data.path(), &[]);
    let docker = tempfile::tempdir().unwrap();
    let reference = format!("{}/shop:live", registry.addr);
    let first = push(&hello_app("shop", "/shop/...", "one"), docker.path(), &reference);

    let out = p.admin_cli(&["deploy", &format!("oci://{reference}"), "--insecure", "--output", "json"]);
    let deployed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(deployed["created"], true);
    let resp = client().get(p.url("/shop/cart")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "Hello from Nimbus!\n");

    // The tag moves on; the revision keeps the digest it was deployed from.
    let second = push(&hello_app("shop", "/shop/...", "two"), docker.path(), &reference);
    assert_ne!(first, second);
    p.admin_cli(&["deploy", &format!("oci://{reference}"), "--insecure"]);
    let revisions: serde_json::Value =
        serde_json::from_str(&p.admin_cli(&["revisions", "list", "shop", "--output", "json"])).unwrap();
    let sources: Vec<&str> = revisions.as_array().unwrap().iter().map(|r| r["source"].as_str().unwrap()).collect();
    assert_eq!(
        sources,
        [format!("oci://{}/shop@{second}", registry.addr), format!("oci://{}/shop@{first}", registry.addr)]
    );
    let listed = p.admin_cli(&["revisions", "list", "shop"]);
    assert!(listed.contains(&format!("from oci://{}/shop@{first}", registry.addr)), "{listed}");

    // A digest the registry does not have fails cleanly and deploys nothing.
    let unknown = format!("oci://{}/shop@sha256:{}", registry.addr, "0".repeat(64));
    let out = p.cli(p.admin.as_deref(), &["deploy", &unknown, "--insecure"]);
    let err = failed(out);
    assert!(err.contains("[registry_not_found]"), "{err}");
    let after: serde_json::Value =
        serde_json::from_str(&p.admin_cli(&["revisions", "list", "shop", "--output", "json"])).unwrap();
    assert_eq!(after.as_array().unwrap().len(), 2);

    // The API takes only a digest-pinned source.
    let bundle = common::platform::hello_bundle("other", "/other/...", "x");
    let resp = client()
        .post(p.api_url("/v1/deployments?source=oci%3A%2F%2F127.0.0.1%2Fshop%3Alive"))
        .bearer_auth(p.admin.as_deref().unwrap())
        .header("content-type", nimbus_control::BUNDLE_CONTENT_TYPE)
        .body(bundle)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("not a digest-pinned registry artifact"));
}

#[tokio::test(flavor = "multi_thread")]
async fn tampered_missing_and_foreign_artifacts_are_refused() {
    let registry = Registry::start(None).await;
    let docker = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let app = hello_app("shop", "/shop/...", "tamper");
    let reference = format!("{}/shop:v1", registry.addr);
    let digest = push(&app, docker.path(), &reference);
    let pull = |reference: &str| nimbus(out.path(), docker.path(), &["registry", "pull", reference, "--insecure"]);

    let err = failed(pull(&format!("{}/shop:nope", registry.addr)));
    assert!(err.contains("[registry_not_found]"), "{err}");
    let err =
        failed(nimbus(out.path(), docker.path(), &["registry", "pull", "registry.example/shop:v1", "--insecure"]));
    assert!(err.contains("[registry_insecure]"), "{err}");

    // The same blobs under a manifest whose config is a container image's.
    let manifest_url = |at: &str| format!("http://{}/v2/shop/manifests/{at}", registry.addr);
    let accept = "application/vnd.oci.image.manifest.v1+json";
    let manifest: serde_json::Value =
        client().get(manifest_url(&digest)).header("accept", accept).send().await.unwrap().json().await.unwrap();
    let mut foreign = manifest.clone();
    foreign["config"]["mediaType"] = "application/vnd.oci.image.config.v1+json".into();
    let put = client()
        .put(manifest_url("foreign"))
        .header("content-type", accept)
        .body(foreign.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let err = failed(pull(&format!("{}/shop:foreign", registry.addr)));
    assert!(
        err.contains("[registry_not_nimbus_app]") && err.contains("application/vnd.oci.image.config.v1+json"),
        "{err}"
    );

    // A wasm layer whose stored bytes changed.
    let wasm = manifest["layers"][0]["digest"].as_str().unwrap();
    let file = registry.blob_file(wasm);
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    let err = failed(pull(&reference));
    assert!(err.contains("[registry_digest_mismatch]") && err.contains(wasm), "{err}");
    assert!(!out.path().join("shop").exists(), "nothing is written from a refused artifact");

    // The config blob gone from storage.
    std::fs::remove_file(registry.blob_file(manifest["config"]["digest"].as_str().unwrap())).unwrap();
    let err = failed(pull(&format!("{}/shop@{digest}", registry.addr)));
    assert!(err.contains("[registry_not_found]"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_htpasswd_registry_takes_the_credentials_of_the_docker_config() {
    let registry = Registry::start(Some(("ci", "s3cret"))).await;
    let app = hello_app("shop", "/shop/...", "auth");
    let reference = format!("{}/shop:v1", registry.addr);
    let anonymous = tempfile::tempdir().unwrap();
    let err = failed(nimbus(app.path(), anonymous.path(), &["registry", "push", &reference, "--insecure"]));
    assert!(err.contains("[registry_unauthorized]"), "{err}");

    let wrong = tempfile::tempdir().unwrap();
    docker_login(wrong.path(), &registry.addr, "ci:wrong");
    let err = failed(nimbus(app.path(), wrong.path(), &["registry", "push", &reference, "--insecure"]));
    assert!(err.contains("[registry_unauthorized]"), "{err}");

    let docker = tempfile::tempdir().unwrap();
    docker_login(docker.path(), &registry.addr, "ci:s3cret");
    let digest = push(&app, docker.path(), &reference);
    let out = tempfile::tempdir().unwrap();
    let err = failed(nimbus(out.path(), anonymous.path(), &["registry", "pull", &reference, "--insecure"]));
    assert!(err.contains("[registry_unauthorized]"), "{err}");
    let said = ok(nimbus(out.path(), docker.path(), &["registry", "pull", &reference, "--insecure"]));
    assert!(said.contains(&digest), "{said}");
    assert!(out.path().join("shop/components/web.wasm").is_file());
}

/// Writes `config.json` in `dir` as `docker login` does: `auths` with base64 `USER:PASSWORD`.
fn docker_login(dir: &Path, registry: &str, user_password: &str) {
    let auth = base64::engine::general_purpose::STANDARD.encode(user_password);
    let config = serde_json::json!({ "auths": { registry: { "auth": auth } } });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
}
