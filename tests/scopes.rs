//! API tokens on `nimbus server`: every operation of the OpenAPI document, called with a token
//! holding each scope, is refused (403) exactly when the token lacks the scope the operation
//! needs; app-limited tokens reach no other app; expired tokens and missing tokens get 401; a
//! client sending unknown tokens is slowed down with 429.
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::client;
use common::platform::Platform;
use serde_json::Value;

/// The scope each operation needs (`None`: any valid token). A new operation must be added
/// here, or the test fails.
const NEEDS: &[(&str, &str, Option<&str>)] = &[
    ("GET", "/metrics", Some("read")),
    ("GET", "/v1/apps", Some("read")),
    ("GET", "/v1/apps/{app}", Some("read")),
    ("DELETE", "/v1/apps/{app}", Some("deploy")),
    ("GET", "/v1/apps/{app}/kv/{bucket}/keys", Some("data-read")),
    ("GET", "/v1/apps/{app}/kv/{bucket}/keys/{key}", Some("data-read")),
    ("PUT", "/v1/apps/{app}/kv/{bucket}/keys/{key}", Some("data-write")),
    ("DELETE", "/v1/apps/{app}/kv/{bucket}/keys/{key}", Some("data-write")),
    ("GET", "/v1/apps/{app}/revisions", Some("read")),
    ("GET", "/v1/apps/{app}/revisions/{revision}", Some("read")),
    ("DELETE", "/v1/apps/{app}/revisions/{revision}", Some("deploy")),
    ("POST", "/v1/apps/{app}/rollback", Some("traffic")),
    ("GET", "/v1/apps/{app}/secrets", Some("read")),
    ("PUT", "/v1/apps/{app}/secrets/{name}", Some("secrets")),
    ("DELETE", "/v1/apps/{app}/secrets/{name}", Some("secrets")),
    ("GET", "/v1/apps/{app}/topics/{topic}/events", Some("data-read")),
    ("GET", "/v1/apps/{app}/topics/{topic}/groups", Some("data-read")),
    ("POST", "/v1/apps/{app}/topics/{topic}/events", Some("data-write")),
    ("POST", "/v1/apps/{app}/topics/{topic}/replay", Some("data-write")),
    ("GET", "/v1/apps/{app}/traffic", Some("read")),
    ("GET", "/v1/apps/{app}/workflows/{name}", Some("data-read")),
    ("POST", "/v1/apps/{app}/workflows/{name}", Some("data-write")),
    ("GET", "/v1/apps/{app}/workflows/{name}/runs/{run}", Some("data-read")),
    ("POST", "/v1/apps/{app}/workflows/{name}/runs/{run}/cancel", Some("data-write")),
    ("POST", "/v1/apps/{app}/workflows/{name}/runs/{run}/signals/{signal}", Some("data-write")),
    ("PUT", "/v1/apps/{app}/traffic", Some("traffic")),
    ("POST", "/v1/deployments", Some("deploy")),
    ("GET", "/v1/logs", Some("read")),
    ("GET", "/v1/nodes", Some("read")),
    ("GET", "/v1/policies", Some("admin")),
    ("PUT", "/v1/policies", Some("admin")),
    ("GET", "/v1/audit", Some("admin")),
    ("GET", "/v1/audit/verify", Some("admin")),
    ("POST", "/v1/secrets/rotate", Some("admin")),
    ("GET", "/v1/tokens", Some("admin")),
    ("POST", "/v1/tokens", Some("admin")),
    ("DELETE", "/v1/tokens/{id}", Some("admin")),
    ("GET", "/v1/traces", Some("read")),
    ("GET", "/v1/metrics/series", Some("read")),
    ("GET", "/v1/traces/{id}", Some("read")),
    ("GET", "/v1/alerts", Some("read")),
    ("GET", "/v1/alerts/{id}", Some("read")),
    ("GET", "/v1/cost", Some("read")),
    ("GET", "/v1/budgets", Some("read")),
    ("GET", "/v1/silences", Some("read")),
    ("POST", "/v1/apps/{app}/silences", Some("traffic")),
    ("DELETE", "/v1/apps/{app}/silences/{id}", Some("traffic")),
    ("GET", "/v1/whoami", None),
];

const SCOPES: &[&str] = &["read", "deploy", "traffic", "data-read", "data-write", "secrets", "admin"];

/// `template` with placeholders for its parameters: nothing by these names exists, so an
/// authorised call fails later (404, 400, 422...) and changes nothing that matters.
fn fill(template: &str) -> String {
    template
        .replace("{app}", "ghost")
        .replace("{bucket}", "b")
        .replace("{key}", "k")
        .replace("{revision}", "r0")
        .replace("{name}", "s")
        .replace("{topic}", "t")
        .replace("{run}", "r1")
        .replace("{signal}", "go")
        .replace("{id}", "00000000000000000000000000000000")
}

/// Creates a token through the API as `admin`; returns the bearer string.
async fn token(p: &Platform, admin: &str, body: Value) -> String {
    let resp = client().post(p.api_url("/v1/tokens")).bearer_auth(admin).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 201, "{body}");
    resp.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_string()
}

/// `method path` with `token` (if any): its status and error code.
async fn call(p: &Platform, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = client().request(method, p.api_url(path)).header("content-type", "application/json").body("{}");
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    (status, body["code"].as_str().unwrap_or_default().to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_operation_needs_its_scope_and_nothing_else_grants_it() {
    let data = tempfile::tempdir().unwrap();
    let p = Platform::start(data.path(), &[]);
    let admin = p.admin.clone().unwrap();

    // The table covers exactly the operations the control API documents (the gateway's, tagged
    // `gateway`, take no token: tests/events.rs checks them).
    let doc: Value = client().get(p.api_url("/v1/openapi.json")).send().await.unwrap().json().await.unwrap();
    let mut documented = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let is_operation = op.get("responses").is_some();
            if is_operation && !op["tags"].as_array().unwrap().iter().any(|t| t == "gateway") {
                documented.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    documented.sort();
    let mut table: Vec<_> = NEEDS.iter().map(|(m, p, _)| (m.to_string(), p.to_string())).collect();
    table.sort();
    assert_eq!(documented, table, "every documented operation needs a row in NEEDS");

    // One token per scope (an admin's role allows each), each holding only that scope.
    let mut holders = BTreeMap::new();
    for scope in SCOPES {
        let t = token(&p, &admin, serde_json::json!({ "name": scope, "role": "admin", "scopes": [scope] })).await;
        holders.insert(*scope, t);
    }
    for (method, template, needs) in NEEDS {
        let path = fill(template);
        for (scope, t) in &holders {
            let (status, code) = call(&p, method, &path, Some(t)).await;
            let allowed = needs.is_none_or(|n| n == *scope);
            if allowed {
                assert!(![401, 403].contains(&status), "{method} {path} with scope {scope}: {status} {code}");
            } else {
                assert_eq!((status, code.as_str()), (403, "forbidden"), "{method} {path} with scope {scope}");
            }
        }
        // No token at all: 401.
        assert_eq!(call(&p, method, &path, None).await.0, 401, "{method} {path} without a token");
    }

    // A deployer limited to another app reaches none of this app's operations.
    let other = token(&p, &admin, serde_json::json!({ "name": "other", "role": "deployer", "apps": ["other"] })).await;
    for (method, template, _) in NEEDS.iter().filter(|(_, t, _)| t.contains("{app}")) {
        let path = fill(template);
        assert_eq!(call(&p, method, &path, Some(&other)).await, (403, "forbidden".into()), "{method} {path}");
    }
    // A role bounds the scopes a token may be given.
    let resp = client()
        .post(p.api_url("/v1/tokens"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({ "name": "x", "role": "viewer", "scopes": ["deploy"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    // An expired token is refused with 401 and says so; it was not used, so has no last use,
    // while a used one shows when.
    let brief = token(&p, &admin, serde_json::json!({ "name": "brief", "role": "viewer", "ttl_s": 1 })).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let resp = client().get(p.api_url("/v1/apps")).bearer_auth(&brief).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.text().await.unwrap().contains("expired at"));
    let listed: Vec<Value> =
        client().get(p.api_url("/v1/tokens")).bearer_auth(&admin).send().await.unwrap().json().await.unwrap();
    let by_name = |name: &str| listed.iter().find(|t| t["name"] == name).unwrap().clone();
    assert!(by_name("brief")["expires_at"].is_u64());
    assert!(by_name("brief")["last_used_at"].is_null());
    assert!(by_name("read")["last_used_at"].is_u64(), "{:?}", by_name("read"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_sending_unknown_tokens_is_refused_for_a_while() {
    let data = tempfile::tempdir().unwrap();
    let p = Platform::start(data.path(), &[]);
    let admin = p.admin.clone().unwrap();
    let wrong = format!("{}0", &admin[..admin.len() - 1]);
    let wrong = if wrong == admin { format!("{}1", &admin[..admin.len() - 1]) } else { wrong };
    let mut refused = None;
    for attempt in 0..50 {
        let resp = client().get(p.api_url("/v1/apps")).bearer_auth(&wrong).send().await.unwrap();
        if resp.status() == 429 {
            refused = Some((attempt, resp.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap()));
            break;
        }
        assert_eq!(resp.status(), 401);
    }
    let (attempt, retry_after) = refused.expect("guessing tokens is slowed down");
    assert!(attempt >= 10, "the first ten failures are answered 401 ({attempt})");
    // While refused, even the right token is not looked at from this address...
    let resp = client().get(p.api_url("/v1/apps")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(resp.status(), 429);
    // ...and after the wait it works again.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let resp = client().get(p.api_url("/v1/apps")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}
