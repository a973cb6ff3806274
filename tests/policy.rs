//! Cedar policies on `nimbus server`, through the API and the CLI: a policy an admin sets gives
//! a group what its tokens' scopes do not, a `forbid` beats every `permit` (the admin's own
//! included) and names itself, policies that do not match the schema are refused with the
//! validator's error and change nothing, a component that a policy denies a bucket its manifest
//! grants is refused at deploy, policies that would deny a running revision its grants are
//! refused, and `nimbus policy test` runs request → decision cases from a file.
mod common;

use common::client;
use common::platform::{Platform, hello_bundle};
use serde_json::{Value, json};

async fn token(p: &Platform, admin: &str, body: Value) -> String {
    let resp = client().post(p.api_url("/v1/tokens")).bearer_auth(admin).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 201, "{body}");
    resp.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_string()
}

async fn set_policies(p: &Platform, token: &str, text: &str) -> (u16, Value) {
    let resp = client()
        .put(p.api_url("/v1/policies"))
        .bearer_auth(token)
        .json(&json!({ "policies": text }))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

/// The app `vault`: the KV fixture granted bucket `ledger` on `/vault/...`.
fn kv_bundle(bucket: &str) -> Vec<u8> {
    let manifest = format!(
        "[app]\nname = \"vault\"\n[component.store]\nsource = \"kv.wasm\"\ngrants = {{ kv = [\"{bucket}\"] }}\n[[trigger.http]]\nroute = \"/vault/...\"\ncomponent = \"store\"\n"
    );
    let wasm = std::fs::read(nimbus_fixtures::KV).unwrap();
    nimbus_control::Bundle { manifest, artifacts: [("store".to_string(), wasm)].into(), ..Default::default() }.pack()
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_policies_permit_groups_forbid_over_permits_and_invalid_ones_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::start(dir.path(), &[]);
    let admin = p.admin.clone().unwrap();
    let (s, body) = p.deploy(&admin, hello_bundle("shop", "/shop/...", "1")).await;
    assert_eq!(s, 201, "{body}");

    // A viewer in group `ops` may not deploy: its scopes do not allow it.
    let ops =
        token(&p, &admin, json!({ "name": "ops viewer", "role": "viewer", "user": "alice", "groups": ["ops"] })).await;
    let (s, body) = p.deploy(&ops, hello_bundle("shop", "/shop/...", "2")).await;
    assert_eq!(s, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("needs scope `deploy`"), "{body}");

    // Policies set through the CLI: ops may deploy `shop`; nobody may delete it, the admin
    // included (a forbid overrides every permit).
    let file = dir.path().join("policies.cedar");
    std::fs::write(
        &file,
        r#"@id("ops-deploy-shop")
permit (principal in Nimbus::Group::"ops", action == Nimbus::Action::"deploy", resource)
when { resource == Nimbus::Server::"nimbus" || resource == Nimbus::App::"shop" };

@id("keep-shop")
forbid (principal, action == Nimbus::Action::"delete", resource == Nimbus::App::"shop");
"#,
    )
    .unwrap();
    p.admin_cli(&["policy", "set", file.to_str().unwrap()]);
    let listed = p.admin_cli(&["policy", "list"]);
    assert!(listed.contains("ops-deploy-shop") && listed.contains("keep-shop"), "{listed}");
    let (s, body) = p.deploy(&ops, hello_bundle("shop", "/shop/...", "2")).await;
    assert_eq!(s, 201, "the group's permit: {body}");
    let (s, body) = p.deploy(&ops, hello_bundle("other", "/other/...", "1")).await;
    assert_eq!(s, 403, "only `shop`: {body}");
    let resp = client().delete(p.api_url("/v1/apps/shop")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("forbidden by policy `keep-shop`"), "{body}");
    // The app is still there and served.
    let served = client().get(p.url("/shop/x")).send().await.unwrap();
    assert_eq!(served.status(), 200);

    // Invalid policies are refused with the validator's error; the ones in use stay.
    for (bad, says) in [
        (r#"permit (principal, action == Nimbus::Action::"deploi", resource);"#, "does not match the Nimbus schema"),
        (
            r#"permit (principal is Nimbus::Token, action, resource) when { principal.team == "a" };"#,
            "does not match the Nimbus schema",
        ),
        ("permit (principal, action, resource", "do not parse"),
        (r#"@id("nimbus.scope.read") permit (principal, action, resource);"#, "built-in prefix"),
    ] {
        let (s, body) = set_policies(&p, &admin, bad).await;
        assert_eq!(s, 400, "{bad}: {body}");
        assert!(body["error"].as_str().unwrap().contains(says), "{bad}: {body}");
    }
    let resp = client().get(p.api_url("/v1/policies")).bearer_auth(&admin).send().await.unwrap();
    assert!(resp.json::<Value>().await.unwrap()["policies"].as_str().unwrap().contains("keep-shop"));
    // Only an admin for every app reads or sets them.
    let (s, _) = set_policies(&p, &ops, "").await;
    assert_eq!(s, 403);

    // Restarted, the server decides with the stored policies.
    drop(p);
    let p = Platform::start(dir.path(), &[]);
    let resp = client().delete(p.api_url("/v1/apps/shop")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(resp.status(), 403, "still forbidden after a restart");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_denies_a_component_a_bucket_its_manifest_grants() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::start(dir.path(), &[]);
    let admin = p.admin.clone().unwrap();
    let (s, body) = set_policies(
        &p,
        &admin,
        r#"@id("no-ledger")
forbid (principal is Nimbus::Component, action == Nimbus::Action::"kv", resource is Nimbus::Bucket)
when { resource.name == "ledger" };"#,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let (s, body) = p.deploy(&admin, kv_bundle("ledger")).await;
    assert_eq!(s, 422, "{body}");
    let details = body.to_string();
    assert!(details.contains("component `store` of app `vault` is granted kv bucket `vault/ledger`"), "{details}");
    assert!(details.contains("forbidden by policy `no-ledger`"), "{details}");
    let resp = client().get(p.url("/vault/k")).send().await.unwrap();
    assert_eq!(resp.status(), 404, "nothing was deployed");

    // Another bucket is fine; then a policy that would take it from the running revision is
    // refused, naming what it would deny.
    let (s, body) = p.deploy(&admin, kv_bundle("notes")).await;
    assert_eq!(s, 201, "{body}");
    let (s, body) = set_policies(
        &p,
        &admin,
        r#"@id("no-notes") forbid (principal, action == Nimbus::Action::"kv", resource == Nimbus::Bucket::"vault/notes");"#,
    )
    .await;
    assert_eq!(s, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("bucket `vault/notes` but forbidden by policy `no-notes`"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_tests_run_from_a_file_against_the_server_or_a_local_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::start(dir.path(), &[]);
    let policies = dir.path().join("p.cedar");
    std::fs::write(
        &policies,
        r#"@id("freeze") forbid (principal, action == Nimbus::Action::"deploy", resource == Nimbus::App::"payments");
@id("no-stripe") forbid (principal, action == Nimbus::Action::"outbound", resource) when { resource.url like "*stripe*" };"#,
    )
    .unwrap();
    let cases = dir.path().join("cases.toml");
    let passing = r#"
[[case]]
name = "a deployer deploys shop"
principal = { token = "ci", role = "deployer" }
action = "deploy"
resource = { app = "shop" }
expect = "allow"

[[case]]
name = "payments are frozen, even for an admin"
principal = { token = "root", role = "admin" }
action = "deploy"
resource = { app = "payments" }
expect = "deny"

[[case]]
name = "an app-limited token reaches only its app"
principal = { token = "t", role = "deployer", apps = ["shop"] }
action = "traffic"
resource = { app = "billing" }
expect = "deny"

[[case]]
name = "a granted origin is allowed"
principal = { component = "shop/api" }
action = "outbound"
resource = { origin = "https://api.example.com" }
granted = true
expect = "allow"

[[case]]
name = "a granted stripe origin is not"
principal = { component = "shop/api" }
action = "outbound"
resource = { origin = "https://api.stripe.com" }
granted = true
expect = "deny"
"#;
    std::fs::write(&cases, passing).unwrap();
    let offline = p.cli(None, &["policy", "test", cases.to_str().unwrap(), "--policies", policies.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&offline.stdout);
    assert!(offline.status.success(), "{out}{}", String::from_utf8_lossy(&offline.stderr));
    assert!(out.contains("5 passed, 0 failed"), "{out}");

    // The same cases against the server, which has no policies yet: the freeze case fails.
    let online = p.cli(p.admin.as_deref(), &["policy", "test", cases.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&online.stdout);
    assert!(!online.status.success(), "{out}");
    assert!(out.contains("FAILED  payments are frozen, even for an admin: expected Deny, got Allow"), "{out}");
    p.admin_cli(&["policy", "set", policies.to_str().unwrap()]);
    p.admin_cli(&["policy", "test", cases.to_str().unwrap()]);

    // A case naming two resources is an error, not a pass.
    std::fs::write(
        &cases,
        passing.replace(r#"resource = { app = "shop" }"#, r#"resource = { app = "shop", server = true }"#),
    )
    .unwrap();
    let bad = p.cli(p.admin.as_deref(), &["policy", "test", cases.to_str().unwrap()]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("name exactly one resource"));
    // The schema is printed for policy authors.
    assert!(p.admin_cli(&["policy", "schema"]).contains("entity Token in [User, Group]"));
}
