//! The Nimbus control plane: what is deployed on a server and who may change it.
//!
//! This crate owns the embedded control store (redb: apps, immutable content-addressed
//! revisions, artifacts, traffic settings, token hashes), deploys (a tar [`Bundle`] of
//! `nimbus.toml` and one `.wasm` per component, validated and compiled before anything is
//! stored), traffic splitting by percent and tag, rollback, ownership of hosts and routes between apps
//! (a deploy never takes another app's requests unless an admin says so),
//! API tokens with roles, scopes, app limits and expiry (failed authentications rate-limited per
//! client address), the node's audit trail of every change and refusal ([`AuditLog`]: a hash
//! chain with signed digests, fail closed; in a cluster each record copied to JetStream
//! ([`AuditReplica`]) before the change goes on), the supply-chain check of deploys ([`SupplyChain`]:
//! dependencies against an offline advisory database, imports against grants, the report stored
//! with the revision, deploys refused at a blocking severity), the apps' secrets ([`Vault`]: sealed with a data key wrapped by a master
//! key that never touches the store; values write-only through the API), the control API (axum + OpenAPI 3) including the topic endpoints
//! (publish, read, replay dead letters), the workflow endpoints (start, list, show, signal,
//! cancel runs, through the app's engine: [`AppWorkflows`]) and the observability endpoints
//! (`/metrics`, traces, logs), which revisions stay loaded and undeletable because unfinished
//! workflow runs are pinned to them, deploy uploads streamed to disk with a cap on concurrent ones, `env` values redacted for
//! viewers, the guard of APIs that trust the local machine (`--dev`, `nimbus up`) against web
//! pages, the API served by the gateway's accept loop ([`ApiHandler`]), and which revision of an app its event triggers
//! deliver to (the one with the largest share of traffic). Services of a revision are
//! unpacked under the data directory. In cluster mode it also owns the replica of the
//! cluster's records in NATS JetStream ([`ClusterStore`]), the membership ([`Nodes`]), and the
//! scheduler of services with the sending end of the inter-node transport ([`Scheduler`],
//! [`Transport`]). It does not assemble a revision (loading functions,
//! starting services, building its gateway and triggers: that is [`nimbus_host::AppHost`], the
//! same call `nimbus up` makes), serve app traffic (the gateway's [`nimbus_gateway::Ingress`]
//! does, from the table published here) or run wasm (`nimbus-wasm`).
//!
//! ```no_run
//! # async fn demo(runtime: nimbus_wasm::Runtime) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use nimbus_control::{ApiState, Platform, Store, Tokens};
//!
//! let store = Arc::new(Store::open("control.redb".as_ref())?);
//! let ingress = Arc::new(nimbus_gateway::Ingress::new());
//! let bus: Arc<dyn nimbus_bus::EventBus> =
//!     Arc::new(nimbus_bus::Embedded::open("bus.redb".as_ref(), Default::default())?);
//! let kv: Arc<dyn nimbus_state::KvStore> = Arc::new(nimbus_state::Embedded::open("state.redb".as_ref())?);
//! let kv_changes = Arc::new(nimbus_triggers::KvChanges::new(kv.clone(), bus.clone()));
//! // The apps' secrets, sealed in the store under a master key (none here: secrets are refused).
//! let vault = Arc::new(nimbus_control::Vault::open(store.clone(), None)?);
//! let runtime = Arc::new(runtime.with_bus(bus.clone()).with_kv(kv).with_secrets(vault.clone()));
//! let authorizer = Arc::new(nimbus_control::Authorizer::new(store.clone()));
//! let tokens = Tokens::new(store.clone(), authorizer.clone());
//! let callers = Arc::new(nimbus_control::DataAuth::Tokens { tokens: tokens.clone(), dev: false });
//! let data = nimbus_control::AppData { bus, kv_changes, callers, secrets: Some(vault.clone()),
//!     trust_domain: Default::default(), workload_certs: None, residency: Default::default(), cluster: None,
//!     authorizer };
//! let platform =
//!     Arc::new(Platform::open(store, runtime, ingress.clone(), data, "services".into(), Default::default()).await?);
//! let nodes = Arc::new(nimbus_control::Nodes::single(nimbus_control::NodeConfig {
//!     name: "local".into(), labels: Default::default(), gateway: "http://127.0.0.1:3000".into(),
//!     api: "http://127.0.0.1:3001".into(), instance: "0".into(), peer: None, capacity_mb: 0 }));
//! let api = nimbus_control::router(Arc::new(ApiState {
//!     platform, tokens, dev: false, kv: None, vault, nodes,
//!     uploads: nimbus_control::Uploads::new("uploads".into(), 2, 256 << 20)?,
//! }));
//! // serve `api` on the control listener and `ingress` with `nimbus_gateway::serve`.
//! # Ok(()) }
//! ```

mod alerts_api;
mod api;
mod audit;
mod audit_api;
mod audit_replica;
mod auth;
mod bundle;
mod cluster;
mod cost_api;
mod data;
mod error;
mod handler;
mod kv_api;
mod local_guard;
mod migrate;
mod model;
mod nodes;
mod observe_api;
mod ownership;
mod path;
mod platform;
mod policy;
mod policy_api;
mod redact;
mod secrets_api;
mod store;
mod supply;
mod topics;
mod upload;
mod vault;
mod workflows_api;

pub use alerts_api::{AlertList, SilenceList};
pub use api::{ApiState, openapi_json, router};
pub use audit::{AuditError, AuditLog, DIGEST_EVERY, verify_dir};
pub use audit_api::{AuditEntry, AuditPage, AuditVerification};
pub use audit_replica::AuditReplica;
pub use auth::{ClientIp, Principal, Tokens};
pub use bundle::{Bundle, CONTENT_TYPE as BUNDLE_CONTENT_TYPE, MANIFEST_ENTRY, digest};
pub use cluster::{Scheduler, Transport};
pub use cost_api::BudgetList;
pub use data::{DataAuth, DataState, data_router};
pub use error::ControlError;
pub use handler::ApiHandler;
pub use kv_api::{KeyPage, MAX_VALUE_BYTES, REVISION_HEADER, Written};
pub use local_guard::guard_local;
pub use migrate::{MigrateError, migrate_state};
pub use model::*;
pub use nodes::{Labels, NODES_BUCKET, NodeConfig, NodeInfo, NodeLoad, NodeService, NodeStatus, Nodes, parse_labels};
pub use observe_api::{ComponentMetricsSeries, LogList, MetricsPoint, MetricsSeries, TraceDetail, TraceList};
pub use path::path_segment;
pub use platform::{AppData, DeployOptions, Platform};
pub use policy::Authorizer;
pub use policy_api::PolicyText;
pub use redact::REDACTED;
pub use store::{ClusterStore, Key, PolicyRecord, Store, StoreError, sweep_artifacts};
pub use supply::{ComponentSupply, ReachEntry, SupplyChain, SupplyFinding, SupplyReport};
pub use topics::{EventPage, GroupInfo, GroupList, PublishedEvent, Replayed, StoredEvent};
pub use upload::Uploads;
pub use vault::{MAX_SECRET_BYTES, MasterKeySource, Vault};
pub use workflows_api::AppWorkflows;
