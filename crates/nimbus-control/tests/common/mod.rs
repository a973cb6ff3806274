//! A control plane assembled in-process the way `nimbus server` assembles it (control store,
//! embedded bus and KV, a wasm runtime, the gateway's `Ingress` served on a loopback port), with
//! helpers to deploy the hello fixture and to see which revision answers a request.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nimbus_control::{AppData, Bundle, DataAuth, DeployOptions, DeployResult, NewToken, Platform, Principal, Role};
use nimbus_control::{ControlError, Store, Tokens, Traffic, TrafficTarget};
use nimbus_gateway::{Ingress, REVISION_HEADER, TAG_HEADER};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// What outlives one `Platform`: the data directory, the event bus, the KV store and the
/// runtime (as in one `nimbus server` process, restarted in place).
pub struct Data {
    dir: tempfile::TempDir,
    bus: Arc<dyn nimbus_bus::EventBus>,
    kv_changes: Arc<nimbus_triggers::KvChanges>,
    runtime: Arc<nimbus_wasm::Runtime>,
}

impl Data {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bus: Arc<dyn nimbus_bus::EventBus> =
            Arc::new(nimbus_bus::Embedded::open(&dir.path().join("bus.redb"), Default::default()).unwrap());
        let kv: Arc<dyn nimbus_state::KvStore> =
            Arc::new(nimbus_state::Embedded::open(&dir.path().join("state.redb")).unwrap());
        let kv_changes = Arc::new(nimbus_triggers::KvChanges::new(kv.clone(), bus.clone()));
        let config = nimbus_wasm::RuntimeConfig { max_instances: 16, ..Default::default() };
        let runtime = Arc::new(nimbus_wasm::Runtime::new(config).unwrap().with_bus(bus.clone()).with_kv(kv));
        Self { dir, bus, kv_changes, runtime }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// One running control plane over [`Data`], its ingress served on `127.0.0.1:0`.
pub struct Server {
    pub platform: Platform,
    pub store: Arc<Store>,
    tokens: Tokens,
    /// An admin token not limited to apps.
    pub admin: Principal,
    base: String,
    client: reqwest::Client,
    stop: oneshot::Sender<()>,
    serving: JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Opens the control store in `data` (creating it the first time) and serves what it holds.
    pub async fn open(data: &Data) -> Self {
        let store = Arc::new(Store::open(&data.path("control.redb")).unwrap());
        let authorizer = Arc::new(nimbus_control::Authorizer::new(store.clone()));
        let tokens = Tokens::new(store.clone(), authorizer.clone());
        let ingress = Arc::new(Ingress::new());
        let callers = Arc::new(DataAuth::Tokens { tokens: tokens.clone(), dev: false });
        let app_data = AppData {
            bus: data.bus.clone(),
            kv_changes: data.kv_changes.clone(),
            callers,
            secrets: None,
            trust_domain: Default::default(),
            workload_certs: None,
            cluster: None,
            residency: Default::default(),
            authorizer,
        };
        let platform = Platform::open(
            store.clone(),
            data.runtime.clone(),
            ingress.clone(),
            app_data,
            data.path("services"),
            nimbus_observe::Observer::disabled(),
        )
        .await
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel();
        let serving = tokio::spawn(nimbus_gateway::serve(listener, ingress, stopped, Default::default()));
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        let admin = principal(&tokens, Role::Admin, &[]);
        Self { platform, store, tokens, admin, base, client, stop, serving }
    }

    /// Shuts the platform down and stops serving; the store is closed once this returns.
    pub async fn stop(self) {
        self.platform.shutdown().await;
        let _ = self.stop.send(());
        self.serving.await.unwrap().unwrap();
    }

    /// The caller holding a fresh token with `role`, limited to `apps` (none: every app), as the
    /// API authenticates it.
    pub fn principal(&self, role: Role, apps: &[&str]) -> Principal {
        principal(&self.tokens, role, apps)
    }

    /// Deploys `bundle` as the admin.
    pub async fn deploy(&self, bundle: Bundle, options: DeployOptions) -> Result<DeployResult, ControlError> {
        self.platform.deploy(bundle, options, &self.admin).await
    }

    /// Deploys `bundle` as the admin without moving traffic (unless it is the app's first).
    pub async fn deploy_new(&self, bundle: Bundle) -> String {
        self.deploy(bundle, DeployOptions::default()).await.unwrap().revision
    }

    /// Deploys `bundle` as the admin, sending it all traffic.
    pub async fn deploy_promoted(&self, bundle: Bundle) -> String {
        self.deploy(bundle, promoted()).await.unwrap().revision
    }

    /// `GET path` with `headers` through the ingress: the status and the revision that answered
    /// (empty when none did).
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let mut req = self.client.get(format!("{}{path}", self.base));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let resp = req.send().await.unwrap();
        let revision = resp.headers().get(REVISION_HEADER).map(|v| v.to_str().unwrap().to_string());
        let (status, body) = (resp.status().as_u16(), resp.text().await.unwrap());
        if status == 200 {
            assert_eq!(body, "Hello from Nimbus!\n", "the hello fixture answered");
        }
        (status, revision.unwrap_or_default())
    }

    /// The revision serving `path` on `host`, with `tag` in the tag header if given.
    pub async fn served_by(&self, host: &str, path: &str, tag: Option<&str>) -> String {
        let mut headers = vec![("host", host)];
        headers.extend(tag.map(|t| (TAG_HEADER, t)));
        let (status, revision) = self.get(path, &headers).await;
        assert_eq!(status, 200, "GET {host}{path} (tag {tag:?})");
        revision
    }

    /// Everything known about `app`, in memory and in the store, to show that a refused change
    /// changed nothing.
    pub async fn snapshot(&self, app: &str) -> Value {
        let stored_app = self.store.apps().unwrap().into_iter().find(|a| a.name == app);
        let mut stored_revisions: Vec<_> =
            self.store.revisions().unwrap().into_iter().filter(|r| r.app == app).collect();
        stored_revisions.sort_by(|a, b| a.id.cmp(&b.id));
        json!({
            "app": self.platform.app(app).await.ok(),
            "revisions": self.platform.revisions(app).await.ok(),
            "stored_app": stored_app,
            "stored_revisions": stored_revisions,
        })
    }

    /// The names of the apps the admin sees.
    pub async fn app_names(&self) -> Vec<String> {
        self.platform.apps(&self.admin).await.into_iter().map(|a| a.name).collect()
    }

    /// The ids of an app's revisions as listed: newest deploy first, even within one second.
    pub async fn revision_ids(&self, app: &str) -> Vec<String> {
        self.platform.revisions(app).await.unwrap().into_iter().map(|r| r.id).collect()
    }
}

fn principal(tokens: &Tokens, role: Role, apps: &[&str]) -> Principal {
    let apps = apps.iter().map(ToString::to_string).collect();
    let created = tokens.create(&NewToken { name: format!("{role} test"), role, apps, ..NewToken::default() }).unwrap();
    tokens.principal(Some(tokens.verify(&created.token).unwrap()))
}

/// These revision ids, in the order given (newest first, as listed).
pub fn ids<const N: usize>(ids: [&String; N]) -> Vec<String> {
    ids.into_iter().cloned().collect()
}

/// A manifest whose one function is the hello fixture on `route`; `marker` (its version and an
/// env value) makes each marker different content, hence a different revision.
pub fn hello_manifest(app: &str, route: &str, marker: &str) -> String {
    format!(
        r#"[app]
name = "{app}"
version = "{marker}"

[component.web]
source = "web.wasm"
env = {{ MARKER = "{marker}" }}

[[trigger.http]]
route = "{route}"
component = "web"
"#
    )
}

/// The bundle of [`hello_manifest`] with the hello fixture as `web`.
pub fn hello(app: &str, route: &str, marker: &str) -> Bundle {
    with_web(hello_manifest(app, route, marker), std::fs::read(nimbus_fixtures::HELLO).unwrap())
}

/// A bundle of `manifest` with `wasm` as the artifact of its `web` component.
pub fn with_web(manifest: String, wasm: Vec<u8>) -> Bundle {
    Bundle { manifest, artifacts: [("web".to_string(), wasm)].into(), ..Default::default() }
}

/// Deploy options binding the app to `hosts`.
pub fn on_hosts(hosts: &[&str]) -> DeployOptions {
    DeployOptions { hosts: Some(hosts.iter().map(ToString::to_string).collect()), ..Default::default() }
}

/// Deploy options pointing `tag` at the new revision.
pub fn tagged(tag: &str) -> DeployOptions {
    DeployOptions { tag: Some(tag.into()), ..Default::default() }
}

/// Deploy options sending all traffic to the new revision.
pub fn promoted() -> DeployOptions {
    DeployOptions { promote: true, ..Default::default() }
}

/// Traffic split by `percents`, with `tags`.
pub fn traffic(percents: &[(&str, u8)], tags: &[(&str, &str)]) -> Traffic {
    Traffic {
        targets: percents.iter().map(|(r, p)| TrafficTarget { revision: r.to_string(), percent: *p }).collect(),
        tags: tags.iter().map(|(t, r)| (t.to_string(), r.to_string())).collect(),
    }
}
