//! Workload identity of services: a sandboxed service gets a short-lived certificate of its
//! SPIFFE ID as read-only files, proves it in a real mTLS handshake (each side verifying the
//! other against the bundle it was given), sees it renewed before it expires, and leaves nothing
//! behind when it stops.
mod common;

use std::time::{Duration, Instant};

use common::{App, client};

const SERVER_PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/services/server.py");

async fn identity(url: &str) -> serde_json::Value {
    let resp = client().get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_holds_a_renewed_certificate_of_its_workload_identity() {
    let app = App::new(
        "[app]\nname = \"shop\"\n[component.py]\ncommand = [\"python3\", \"server.py\"]\n\
         readiness = { path = \"/py/healthz\" }\n[[trigger.http]]\nroute = \"/py/...\"\ncomponent = \"py\"\n",
    );
    std::fs::copy(SERVER_PY, app.path().join("server.py")).unwrap();
    let state = app.path().join(".state");
    let mut server = app.up(&[
        "--trust-domain",
        "prod.example.com",
        "--workload-cert-ttl-s",
        "2",
        "--data-dir",
        state.to_str().unwrap(),
    ]);
    let id = "spiffe://prod.example.com/app/shop/component/py";

    let first = identity(&server.url("/py/identity")).await;
    assert_eq!(first["id"], id, "{first}");
    assert_eq!(first["dir"], "/run/nimbus/identity", "mounted in the sandbox: {first}");
    assert_eq!(first["san"], serde_json::json!([["URI", id]]), "the certificate names only the workload: {first}");
    assert_eq!(first["client_seen_by_server"], first["san"], "mTLS: the server verified the client: {first}");
    assert_eq!(first["server_seen_by_client"], first["san"], "mTLS: the client verified the server: {first}");
    assert_eq!(first["key_mode"], "0o400", "{first}");
    assert_eq!(first["writable"], false, "{first}");

    // Renewed at half its two-second lifetime: a new certificate, never an expired one.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = identity(&server.url("/py/identity")).await;
        assert_eq!(now["client_seen_by_server"], now["san"], "still a working identity: {now}");
        if now["serial"] != first["serial"] {
            break;
        }
        assert!(Instant::now() < deadline, "never renewed: {now}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The certificates go with the service.
    let workloads = state.join("identity/workloads");
    assert_eq!(std::fs::read_dir(&workloads).unwrap().count(), 1);
    server.signal("TERM");
    assert_eq!(server.wait_exit(Duration::from_secs(30)), Some(0));
    assert_eq!(std::fs::read_dir(&workloads).unwrap().count(), 0, "nothing left after the stop");
}
