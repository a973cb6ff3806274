//! Secrets end to end on `nimbus server`: set through the CLI, read by the granted function
//! (`wasi:config`) and service (environment), nowhere else — not in the data dir, the server's
//! output, the trace and log stores or any API response; refused to components and apps without
//! the grant; readable across a key rotation and `kill -9`; and a wrong or missing master key
//! stops the start before anything is served.
mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::platform::Platform;
use common::{App, NIMBUS, client};

const SERVER_PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/services/server.py");
const LOG: &str = "nimbus_control=debug,nimbus_host=debug,nimbus_wasm=debug,nimbus_services=debug,info";

/// A new master key in a private file outside the data dir.
fn master_key(dir: &Path, name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    let key: String = (0..2).map(|_| format!("{:032x}", random())).collect();
    std::fs::write(&path, key).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// 128 bits no other run of this test draws (the std hasher's keys are random per process).
fn random() -> u128 {
    use std::hash::{BuildHasher, RandomState};
    let state = RandomState::new();
    (u128::from(state.hash_one(1u8)) << 64) | u128::from(state.hash_one(2u8))
}

fn start(data: &Path, key: &Path) -> Platform {
    Platform::start(data, &["--master-key-file", key.to_str().unwrap(), "--log", LOG])
}

/// `nimbus secrets set --app APP NAME` with `value` on stdin.
fn set_secret(p: &Platform, token: &str, app: &str, name: &str, value: &str) -> Output {
    let mut child = Command::new(NIMBUS)
        .args(["secrets", "set", "--app", app, name])
        .env("NIMBUS_SERVER", &p.api)
        .env("NIMBUS_TOKEN", token)
        .env("HOME", &p.data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("{value}\n").as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// The vault app: `reader` (granted `stripe-key`) on `/fn/...`, `nosy` (granted only
/// `other-key`) on `/nosy/...`, and the Python service (granted `stripe-key`) on `/py/...`.
fn vault_app() -> App {
    let app = App::new(&format!(
        r#"[app]
name = "vault"

[component.reader]
source = "{secrets}"
grants = {{ secrets = ["stripe-key"] }}

[component.nosy]
source = "{secrets}"
grants = {{ secrets = ["other-key"] }}

[component.py]
command = ["python3", "server.py"]
grants = {{ secrets = ["stripe-key"] }}
readiness = {{ path = "/py/healthz" }}

[[trigger.http]]
route = "/fn/..."
component = "reader"

[[trigger.http]]
route = "/nosy/..."
component = "nosy"

[[trigger.http]]
route = "/py/..."
component = "py"
"#,
        secrets = nimbus_fixtures::SECRETS
    ));
    std::fs::copy(SERVER_PY, app.path().join("server.py")).unwrap();
    app
}

fn deploy(p: &Platform, token: &str, app: &App) -> Output {
    p.cli(Some(token), &["deploy", app.path().to_str().unwrap()])
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn get(url: String) -> (u16, String) {
    let resp = client().get(url).send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// Every file under `dir`, read as bytes, that contains `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file()
                && std::fs::read(&path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
            {
                found.push(path);
            }
        }
    }
    found
}

/// The body of every read-only control API endpoint about the app: none may hold a value.
async fn api_responses(p: &Platform, token: &str) -> Vec<(String, Vec<u8>)> {
    let c = client();
    let fetch = |path: String| {
        let c = c.clone();
        let url = p.api_url(&path);
        async move {
            let resp = c.get(url).bearer_auth(token).send().await.unwrap();
            assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
            (path, resp.bytes().await.unwrap().to_vec())
        }
    };
    let mut out = Vec::new();
    for path in ["/v1/apps", "/v1/apps/vault", "/v1/apps/vault/revisions", "/v1/apps/vault/traffic"] {
        out.push(fetch(path.to_string()).await);
    }
    out.push(fetch("/v1/apps/vault/secrets".into()).await);
    out.push(fetch("/v1/tokens".into()).await);
    out.push(fetch("/metrics".into()).await);
    let revisions: serde_json::Value = serde_json::from_slice(&out[2].1).unwrap();
    for r in revisions.as_array().unwrap() {
        out.push(fetch(format!("/v1/apps/vault/revisions/{}", r["id"].as_str().unwrap())).await);
    }
    let traces = fetch("/v1/traces?limit=1000".into()).await;
    let list: serde_json::Value = serde_json::from_slice(&traces.1).unwrap();
    for t in list["traces"].as_array().unwrap() {
        out.push(fetch(format!("/v1/traces/{}", t["trace_id"].as_str().unwrap())).await);
    }
    out.push(traces);
    out.push(fetch("/v1/logs?limit=1000".into()).await);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_reaches_only_its_granted_components_and_appears_nowhere_else() {
    let keys = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let key = master_key(keys.path(), "master.key");
    let mut p = start(data.path(), &key);
    let admin = p.admin.clone().unwrap();
    let canary = format!("sk_canary_{:032x}", random());
    let app = vault_app();

    // Granted but not set: the deploy is refused and says how to set it.
    let early = deploy(&p, &admin, &app);
    assert!(!early.status.success());
    assert!(stderr(&early).contains("nimbus secrets set --app vault stripe-key"), "{}", stderr(&early));

    assert!(set_secret(&p, &admin, "vault", "stripe-key", &canary).status.success());
    assert!(set_secret(&p, &admin, "vault", "other-key", "not-the-canary").status.success());
    let deployed = deploy(&p, &admin, &app);
    assert!(deployed.status.success(), "{}", stderr(&deployed));

    // The granted function and service read it; the trailing newline of stdin was dropped.
    assert_eq!(get(p.url("/fn/secret/stripe-key")).await, (200, canary.clone()));
    assert_eq!(get(p.url("/fn/all")).await, (200, "stripe-key".into()));
    assert_eq!(get(p.url("/py/env?name=STRIPE_KEY")).await, (200, canary.clone()));
    // A component of the same app without the grant is refused, naming the grant.
    let (status, body) = get(p.url("/nosy/secret/stripe-key")).await;
    assert_eq!(status, 500);
    assert!(body.contains("not granted") && body.contains("grants.secrets") && !body.contains(&canary), "{body}");
    assert_eq!(get(p.url("/nosy/all")).await, (200, "other-key".into()));

    // Another app granting the same name gets its own (unset) secret, not vault's.
    let thief = App::new(&format!(
        "[app]\nname = \"thief\"\n[component.t]\nsource = \"{}\"\ngrants = {{ secrets = [\"stripe-key\"] }}\n[[trigger.http]]\nroute = \"/thief/...\"\ncomponent = \"t\"\n",
        nimbus_fixtures::SECRETS
    ));
    let refused = deploy(&p, &admin, &thief);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("secret `stripe-key` of app `thief` is not set"), "{}", stderr(&refused));
    // A component importing wasi:config without any grant does not load.
    let ungranted = App::new(&format!(
        "[app]\nname = \"ungranted\"\n[component.t]\nsource = \"{}\"\n[[trigger.http]]\nroute = \"/ungranted/...\"\ncomponent = \"t\"\n",
        nimbus_fixtures::SECRETS
    ));
    let refused = deploy(&p, &admin, &ungranted);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("wasi:config/store"), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("add `grants.secrets = [\"SECRET\"]`"), "{}", stderr(&refused));

    // A new value reaches the function at its next request.
    let second = format!("sk_second_{:032x}", random());
    assert!(set_secret(&p, &admin, "vault", "stripe-key", &second).status.success());
    assert_eq!(get(p.url("/fn/secret/stripe-key")).await, (200, second.clone()));

    // Rotation to a new master key put in the key file: values stay readable, without a restart.
    let rotated_key = master_key(keys.path(), "new.key");
    std::fs::rename(&rotated_key, &key).unwrap();
    let rotated = p.cli(Some(&admin), &["secrets", "rotate-key"]);
    assert!(rotated.status.success(), "{}", stderr(&rotated));
    assert_eq!(get(p.url("/fn/secret/stripe-key")).await, (200, second.clone()));

    // Nothing else holds either value: not the CLI's listing, any API response, the server's
    // output or any file of the data dir (stores, traces, logs, uploads, unpacked trees).
    let listed = p.admin_cli(&["secrets", "list", "--app", "vault", "--output", "json"]);
    assert!(listed.contains("stripe-key") && !listed.contains(&canary) && !listed.contains(&second), "{listed}");
    // Let the telemetry pipeline write what it holds.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let responses = api_responses(&p, &admin).await;
    assert!(responses.iter().any(|(_, body)| body.windows(10).any(|w| w == b"stripe-key")));
    for (path, body) in responses {
        for value in [&canary, &second] {
            assert!(!body.windows(value.len()).any(|w| w == value.as_bytes()), "GET {path} shows a secret value");
        }
    }
    let output = format!("{}{}", p.banner, p.stderr());
    assert!(!output.contains(&canary) && !output.contains(&second), "the server printed a secret value");
    for value in [&canary, &second] {
        assert_eq!(files_containing(data.path(), value.as_bytes()), Vec::<PathBuf>::new(), "a file holds a value");
    }
    // (The scans do read what is there: the secret's name is in the store and the listing.)
    assert!(!files_containing(data.path(), b"stripe-key").is_empty());

    // kill -9: the acknowledged value and rotation survive; the new key opens them.
    p.kill9();
    let p = start(data.path(), &key);
    assert_eq!(get(p.url("/fn/secret/stripe-key")).await, (200, second.clone()));
    assert_eq!(get(p.url("/py/env?name=STRIPE_KEY")).await, (200, second));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_or_missing_master_key_stops_the_start_before_anything_is_served() {
    let keys = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let key = master_key(keys.path(), "master.key");
    {
        let p = start(data.path(), &key);
        let admin = p.admin.clone().unwrap();
        assert!(set_secret(&p, &admin, "vault", "stripe-key", "value").status.success());
    }
    let wrong = master_key(keys.path(), "wrong.key");
    let err = Platform::try_start(data.path(), &["--master-key-file", wrong.to_str().unwrap()]).err().unwrap();
    assert!(err.contains("is not the one the secrets were stored with"), "{err}");
    assert!(!err.contains("Ready"), "{err}");
    let err = Platform::try_start(data.path(), &[]).err().unwrap();
    assert!(err.contains("no master key") && err.contains("--master-key-file"), "{err}");
    // A key file others can read is refused too.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Platform::try_start(data.path(), &["--master-key-file", key.to_str().unwrap()]).err().unwrap();
    assert!(err.contains("chmod 600"), "{err}");
    // Without a master key and without stored secrets, the server runs and refuses to set one.
    let empty = tempfile::tempdir().unwrap();
    let p = Platform::start(empty.path(), &[]);
    let out = set_secret(&p, p.admin.as_deref().unwrap(), "vault", "stripe-key", "value");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("secrets_unconfigured"), "{}", stderr(&out));
}

/// `nimbus up` reads a granted secret from `NIMBUS_SECRET_<NAME>`, and does not start without it.
#[tokio::test(flavor = "multi_thread")]
async fn nimbus_up_reads_granted_secrets_from_the_environment() {
    let app = App::new(&format!(
        "[app]\nname = \"local\"\n[component.reader]\nsource = \"{}\"\ngrants = {{ secrets = [\"stripe-key\"] }}\n[[trigger.http]]\nroute = \"/...\"\ncomponent = \"reader\"\n",
        nimbus_fixtures::SECRETS
    ));
    let missing = Command::new(NIMBUS)
        .args(["up", "--listen", "127.0.0.1:0"])
        .arg(app.path())
        .env_remove("NIMBUS_SECRET_STRIPE_KEY")
        .output()
        .unwrap();
    assert!(!missing.status.success());
    let err = stderr(&missing);
    assert!(err.contains("secret `stripe-key` of app `local` is not set"), "{err}");
    assert!(err.contains("export NIMBUS_SECRET_STRIPE_KEY=VALUE"), "{err}");
    assert!(err.contains("nothing is served until every granted secret is set"), "{err}");

    let server = app.up_env(&[], &[("NIMBUS_SECRET_STRIPE_KEY", "local-value")]);
    assert_eq!(get(server.url("/secret/stripe-key")).await, (200, "local-value".into()));
    assert_eq!(get(server.url("/secret/other")).await.0, 500, "only granted secrets are readable");
}
