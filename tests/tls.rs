//! TLS on every listener of `nimbus server`, through the real binary over loopback: the local CA
//! of `--tls auto` (HTTP/1.1 and HTTP/2 by ALPN, the CLI with `--cacert`, HSTS, the 308
//! redirect listener, the clear answer to plaintext), certificates from files picked by SNI and
//! reloaded while an open connection keeps its own, the refusal to serve the control API on
//! a non-loopback address without TLS, and `nimbus up --tls auto` (gateway and local API).
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::platform::{Platform, hello_app};
use nimbus_security::tls::ca::LocalCa;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// A client that trusts only the CA certificate in `ca`, keeps connections open, and records
/// the certificate each response came over.
fn client_trusting(ca: &Path) -> reqwest::ClientBuilder {
    let root = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root)
        .tls_info(true)
        .pool_idle_timeout(Duration::from_secs(300))
        .timeout(Duration::from_secs(30))
}

/// The value after `prefix` on the banner line that starts with it.
fn banner_word(p: &Platform, prefix: &str) -> String {
    let line =
        p.banner.lines().map(str::trim).find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("{}", p.banner));
    line[prefix.len()..].split_whitespace().next().unwrap().trim_end_matches(':').to_string()
}

/// The DER of the certificate the response came over.
fn peer_cert(resp: &reqwest::Response) -> Vec<u8> {
    resp.extensions().get::<reqwest::tls::TlsInfo>().unwrap().peer_certificate().unwrap().to_vec()
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_auto_serves_https_trusted_through_the_printed_ca() {
    let data = tempfile::tempdir().unwrap();
    let p = Platform::start(data.path(), &["--tls", "auto", "--hsts-max-age", "600", "--redirect-http", "127.0.0.1:0"]);
    assert!(p.gateway.starts_with("https://") && p.api.starts_with("https://"), "{}", p.banner);
    let ca = PathBuf::from(banner_word(&p, "TLS:         local CA"));
    assert_eq!(ca, data.path().join("tls/ca.pem"));
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.path().join("tls/ca.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // The CLI over HTTPS, trusting the printed root only.
    let app = hello_app("secure", "/secure/...", "1");
    let ca_arg = ca.to_str().unwrap();
    p.admin_cli(&["deploy", app.path().to_str().unwrap(), "--cacert", ca_arg]);
    let out = p.cli(p.admin.as_deref(), &["apps", "list"]);
    assert!(!out.status.success(), "without the CA the CLI must not trust the server");
    assert!(p.admin_cli(&["apps", "list", "--cacert", ca_arg]).contains("secure"));

    // HTTP/1.1 and HTTP/2 (ALPN) with the root alone; HSTS on every response.
    let h1 = client_trusting(&ca).http1_only().build().unwrap();
    let resp = h1.get(p.url("/secure/x")).send().await.unwrap();
    assert_eq!((resp.status().as_u16(), resp.version()), (200, reqwest::Version::HTTP_11));
    assert_eq!(resp.headers()["strict-transport-security"], "max-age=600");
    let h2 = client_trusting(&ca).build().unwrap();
    let resp = h2.get(p.url("/secure/x")).send().await.unwrap();
    assert_eq!((resp.status().as_u16(), resp.version()), (200, reqwest::Version::HTTP_2));
    assert_eq!(resp.headers()["strict-transport-security"], "max-age=600");
    assert!(resp.text().await.unwrap().contains("Hello"));

    // A client with only the public roots refuses the certificate.
    let public = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    assert!(public.get(p.url("/secure/x")).send().await.is_err());

    // Plaintext HTTP to the TLS port: a clear 400 naming the https:// URL, not a reset.
    let plain = p.gateway.replace("https://", "http://");
    let answer = common::send_raw(&plain, b"GET /secure/x HTTP/1.1\r\nhost: example.test:8443\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("use https://example.test:8443/secure/x"), "{answer}");

    // The redirect listener: 308 to the same path over HTTPS on the gateway's port.
    let redirect = banner_word(&p, "Redirect:");
    let port = p.gateway.rsplit(':').next().unwrap();
    let no_follow = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let resp = no_follow.get(format!("{redirect}/secure/x?a=1")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 308);
    assert_eq!(resp.headers()["location"], format!("https://127.0.0.1:{port}/secure/x?a=1").as_str());

    // `nimbus login --cacert` pins the root: later commands need no flag.
    let home = tempfile::tempdir().unwrap();
    let nimbus = |args: &[&str]| common::nimbus_at_home(home.path(), args);
    let admin = p.admin.clone().unwrap();
    assert!(!nimbus(&["login", "--server", &p.api, "--token", &admin]).status.success(), "no CA, no login");
    common::ok(nimbus(&["login", "--server", &p.api, "--token", &admin, "--cacert", ca_arg]));
    assert!(common::ok(nimbus(&["apps", "list"])).contains("secure"));
}

#[tokio::test(flavor = "multi_thread")]
async fn nimbus_up_serves_its_gateway_and_local_api_over_https() {
    let app = hello_app("secure", "/secure/...", "1");
    let server = app.up(&["--tls", "auto"]);
    assert!(server.base.starts_with("https://"), "{}", server.banner);
    let ca = app.path().join(".nimbus/tls/ca.pem");
    assert!(server.banner.contains(&format!("local CA {}", ca.display())), "{}", server.banner);
    let h2 = client_trusting(&ca).build().unwrap();
    let resp = h2.get(server.url("/secure/x")).send().await.unwrap();
    assert_eq!((resp.status().as_u16(), resp.version()), (200, reqwest::Version::HTTP_2));
    assert!(resp.text().await.unwrap().contains("Hello"));
    // The local API too: `nimbus traces` and friends go over HTTPS with the same root.
    let local = server.banner.lines().find_map(|l| l.strip_prefix("Local API: ")).unwrap();
    let local = local.split_whitespace().next().unwrap();
    assert!(local.starts_with("https://"), "{local}");
    let resp = h2.get(format!("{local}/v1/traces")).bearer_auth(app.local_token()).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(reqwest::Client::new().get(server.url("/secure/x")).send().await.is_err(), "untrusted without the root");
}

/// Writes a leaf for `names` signed by `ca` to `dir/NAME.pem` and `dir/NAME.key` (renamed into
/// place, the key first) and returns the certificate's PEM.
fn write_leaf(ca: &LocalCa, dir: &Path, file: &str, names: &[&str]) -> String {
    let leaf = ca.issue(&names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    for (ext, text) in [("key", &leaf.key_pem), ("pem", &leaf.cert_pem)] {
        let tmp = dir.join(format!("{file}.{ext}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(format!("{file}.{ext}"))).unwrap();
    }
    leaf.cert_pem
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_from_files_are_picked_by_sni_and_reloaded_while_open_connections_keep_theirs() {
    let data = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let ca = LocalCa::open_or_create(&certs.path().join("ca")).unwrap();
    let default = write_leaf(&ca, certs.path(), "default", &["localhost", "127.0.0.1"]);
    let shop_v1 = write_leaf(&ca, certs.path(), "shop", &["shop.test"]);
    let path = |name: &str| certs.path().join(name).to_str().unwrap().to_string();
    let host_cert = format!("shop.test={},{}", path("shop.pem"), path("shop.key"));
    let p = Platform::start(
        data.path(),
        &["--tls-cert", &path("default.pem"), "--tls-key", &path("default.key"), "--tls-host-cert", &host_cert],
    );
    let addr: std::net::SocketAddr = p.gateway.trim_start_matches("https://").parse().unwrap();
    let for_shop = || client_trusting(&ca.cert_path()).resolve("shop.test", addr).build().unwrap();
    let shop_url = format!("https://shop.test:{}/healthz", addr.port());

    // SNI: the host's certificate for its name, the default for the address.
    let held = for_shop();
    let resp = held.get(&shop_url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(peer_cert(&resp), der(&shop_v1));
    let resp = client_trusting(&ca.cert_path()).build().unwrap().get(p.url("/healthz")).send().await.unwrap();
    assert_eq!(peer_cert(&resp), der(&default));

    // The host's files replaced on disk: new connections get the new certificate...
    let shop_v2 = write_leaf(&ca, certs.path(), "shop", &["shop.test"]);
    assert_ne!(der(&shop_v1), der(&shop_v2));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let resp = for_shop().get(&shop_url).send().await.unwrap();
        if peer_cert(&resp) == der(&shop_v2) {
            break;
        }
        assert!(Instant::now() < deadline, "the replaced certificate was never served");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    p.wait_for_log(&["reloaded the TLS certificates"]);
    // ...while the connection opened before still serves, over the certificate it started with.
    let resp = held.get(&shop_url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(peer_cert(&resp), der(&shop_v1));

    // A broken file keeps the certificate in use.
    std::fs::write(certs.path().join("shop.pem"), "not a certificate").unwrap();
    p.wait_for_log(&["cannot be used", "shop.pem"]);
    let resp = for_shop().get(&shop_url).send().await.unwrap();
    assert_eq!(peer_cert(&resp), der(&shop_v2));
}

#[test]
fn the_control_api_refuses_a_non_loopback_address_without_tls() {
    let data = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::NIMBUS)
        .args(["server", "--listen", "127.0.0.1:0", "--api-listen", "0.0.0.0:0", "--data-dir"])
        .arg(data.path().join("d"))
        .env_remove("NIMBUS_TLS")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("non-loopback") && err.contains("--tls auto") && err.contains("--tls-cert"), "{err}");
    assert!(!data.path().join("d").exists(), "refused before anything was created");
}
