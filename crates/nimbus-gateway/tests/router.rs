//! Routing precedence through the public API: exact routes beat wildcards, longer prefixes beat
//! shorter ones, and the most specific route decides which methods are allowed.
use std::collections::HashMap;
use std::path::Path;

use nimbus_gateway::{Gateway, RouteMatch};
use nimbus_manifest::LoadedManifest;
use nimbus_wasm::{Runtime, RuntimeConfig};

const MANIFEST: &str = r#"
[app]
name = "routes"

[component.everything]
source = "x.wasm"
[component.api]
source = "x.wasm"
[component.v2]
source = "x.wasm"
[component.status]
source = "x.wasm"

[[trigger.http]]
route = "/..."
component = "everything"
[[trigger.http]]
route = "/api/..."
component = "api"
[[trigger.http]]
route = "/api/v2/..."
component = "v2"
[[trigger.http]]
route = "/api/status"
component = "status"
methods = ["GET"]
[[trigger.http]]
route = "/api/status"
component = "v2"
methods = ["DELETE"]
"#;

fn found(gateway: &Gateway, method: &str, path: &str) -> String {
    match gateway.router().find(&method.parse().unwrap(), path) {
        RouteMatch::Found(route) => route.target.backend.name().to_string(),
        other => panic!("{method} {path}: {other:?}"),
    }
}

#[tokio::test]
async fn precedence_and_methods() {
    let loaded = LoadedManifest::parse(MANIFEST.into(), "nimbus.toml".into()).unwrap();
    let runtime = Runtime::new(RuntimeConfig { max_instances: 8, ..RuntimeConfig::default() }).unwrap();
    let mut functions = HashMap::new();
    for (name, c) in &loaded.manifest.component {
        let f = runtime.load(name, Path::new(nimbus_fixtures::HELLO), c).await.unwrap();
        functions.insert(name.clone(), nimbus_gateway::Backend::Function(f));
    }
    let gateway = Gateway::from_manifest(&loaded.manifest, &functions, &Default::default());

    assert_eq!(found(&gateway, "GET", "/"), "everything");
    assert_eq!(found(&gateway, "GET", "/apix"), "everything", "prefixes match whole segments");
    assert_eq!(found(&gateway, "GET", "/api"), "api");
    assert_eq!(found(&gateway, "POST", "/api/users/7"), "api");
    assert_eq!(found(&gateway, "GET", "/api/v2"), "v2");
    assert_eq!(found(&gateway, "GET", "/api/v2/x/y"), "v2", "the longest prefix wins");
    assert_eq!(found(&gateway, "GET", "/api/v2/"), "v2");
    assert_eq!(found(&gateway, "GET", "/api/v"), "api", "a prefix never matches part of a segment");
    assert_eq!(found(&gateway, "OPTIONS", "*"), "everything", "the catch-all takes any target");
    assert_eq!(found(&gateway, "GET", "/api/status"), "status", "exact beats wildcard");
    assert_eq!(found(&gateway, "DELETE", "/api/status"), "v2", "one path, methods split across components");
    match gateway.router().find(&http::Method::POST, "/api/status") {
        RouteMatch::MethodNotAllowed(allowed) => assert_eq!(allowed, vec![http::Method::GET, http::Method::DELETE]),
        other => panic!("{other:?}"),
    }
    assert_eq!(gateway.router().routes().count(), 5);
}
