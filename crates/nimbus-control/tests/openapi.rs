//! The OpenAPI document checked into the repository (`openapi/nimbus-v1.json`) is the one the
//! server generates. Regenerate it with `NIMBUS_UPDATE_OPENAPI=1 cargo test -p nimbus-control --test openapi`.

const CHECKED_IN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../openapi/nimbus-v1.json");

#[test]
fn openapi_document_is_checked_in_and_current() {
    let generated = nimbus_control::openapi_json();
    if std::env::var_os("NIMBUS_UPDATE_OPENAPI").is_some() {
        std::fs::write(CHECKED_IN, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(CHECKED_IN).unwrap_or_default();
    assert!(
        checked_in == generated,
        "openapi/nimbus-v1.json is out of date; run `NIMBUS_UPDATE_OPENAPI=1 cargo test -p nimbus-control --test openapi` and commit it"
    );
    let doc: serde_json::Value = serde_json::from_str(&generated).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in
        ["/v1/deployments", "/v1/apps/{app}/traffic", "/v1/apps/{app}/rollback", "/v1/tokens", "/v1/metrics/series"]
    {
        assert!(doc["paths"][path].is_object(), "{path} is not documented");
    }
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
}
