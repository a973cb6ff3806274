//! The control API (axum), described by an OpenAPI 3 document served at `/v1/openapi.json`
//! and checked into the repository as `openapi/nimbus-v1.json`. Every call but the document
//! itself needs `Authorization: Bearer TOKEN`, except in `--dev` mode; every error is
//! [`ErrorBody`] JSON.
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::StatusCode;
use http::request::Parts;
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi};

use crate::auth::{Principal, Tokens};
use crate::error::ControlError;
use crate::model::{
    AppInfo, ArtifactInfo, CreatedToken, DeployResult, ErrorBody, NewToken, RevisionDetail, RevisionInfo, Role,
    RollbackRequest, Scope, TokenInfo, Traffic, TrafficTarget, Whoami,
};
use crate::platform::{DeployOptions, Platform};
use nimbus_security::policy::Action;

/// What the API handlers share.
#[derive(Debug)]
pub struct ApiState {
    /// Deployed state.
    pub platform: Arc<Platform>,
    /// Token checks.
    pub tokens: Tokens,
    /// Unauthenticated calls allowed (loopback only; the server enforces that).
    pub dev: bool,
    /// Where deploy bundles are received, how many at once and how large.
    pub uploads: crate::Uploads,
    /// The KV store behind `/v1/kv` (the one functions use).
    pub kv: Option<Arc<dyn nimbus_state::KvStore>>,
    /// The apps' secrets.
    pub vault: Arc<crate::Vault>,
    /// The platform's nodes.
    pub nodes: Arc<crate::Nodes>,
}

type AppState = State<Arc<ApiState>>;

/// The control API routes; in `--dev` mode they refuse what a web page could send
/// ([`crate::guard_local`]).
pub fn router(state: Arc<ApiState>) -> Router {
    let dev = state.dev;
    let data = crate::data::data_router(Arc::new(crate::data::DataState {
        bus: Some(state.platform.bus()),
        kv: state.kv.clone(),
        auth: crate::data::DataAuth::Tokens { tokens: state.tokens.clone(), dev: state.dev },
        observer: state.platform.observer().clone(),
        workflows: Some(state.platform.clone()),
        ingress: Some(state.platform.ingress()),
    }));
    let api = Router::new()
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/whoami", get(whoami))
        .route("/v1/deployments", post(deploy))
        .route("/v1/apps", get(list_apps))
        .route("/v1/apps/{app}", get(show_app).delete(delete_app))
        .route("/v1/apps/{app}/revisions", get(list_revisions))
        .route("/v1/apps/{app}/revisions/{revision}", get(show_revision).delete(delete_revision))
        .route("/v1/apps/{app}/traffic", get(show_traffic).put(set_traffic))
        .route("/v1/apps/{app}/rollback", post(rollback))
        .route("/v1/nodes", get(list_nodes))
        .route("/v1/tokens", get(list_tokens).post(create_token))
        .route("/v1/tokens/{id}", axum::routing::delete(revoke_token))
        .merge(crate::secrets_api::routes())
        .merge(crate::policy_api::routes())
        .merge(crate::audit_api::routes())
        .fallback(|| async { ControlError::NotFound("no such API endpoint; see /v1/openapi.json".into()) })
        .with_state(state)
        .merge(data)
        .merge(nimbus_console::routes());
    if dev { crate::guard_local(api) } else { api }
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        if let Self::Store(e) = &self {
            tracing::error!(error = %e, "control store failed");
        }
        let mut resp = (self.status(), Json(self.body())).into_response();
        if self.status() == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
        }
        if let Self::Busy(_) = &self {
            resp.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("1"));
        }
        if let Self::TooManyFailures { retry_after_s } = &self {
            resp.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from(*retry_after_s));
        }
        resp
    }
}

impl FromRequestParts<Arc<ApiState>> for Principal {
    type Rejection = ControlError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<ApiState>) -> Result<Self, Self::Rejection> {
        let client = parts.extensions.get::<crate::auth::ClientIp>().map(|c| c.0);
        crate::auth::principal(&parts.headers, &state.tokens, state.dev, client).map(|p| p.at(parts))
    }
}

/// A JSON body whose rejections are [`ErrorBody`] JSON too.
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ControlError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Json::<T>::from_request(req, state).await.map(|Json(v)| Self(v)).map_err(|e: JsonRejection| {
            ControlError::bad_request(e.body_text(), "send a JSON body as described in /v1/openapi.json")
        })
    }
}

pub(crate) fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ControlError> {
    q.map(|Query(v)| v).map_err(|e| ControlError::bad_request(e.body_text(), "see /v1/openapi.json for the parameters"))
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Nimbus control API", version = "1", description = "Deploy apps as immutable revisions, split traffic, roll back, manage API tokens, policies and secrets, read and verify the audit trail, publish and read events, read and write KV buckets, read traces, metrics, logs and alerts, silence alerts."),
    paths(whoami, list_nodes, deploy, list_apps, show_app, delete_app, list_revisions, show_revision, delete_revision, show_traffic, set_traffic, rollback, list_tokens, create_token, revoke_token, crate::topics::publish, crate::topics::read, crate::topics::groups, crate::topics::replay, crate::kv_api::list, crate::kv_api::read, crate::kv_api::write, crate::kv_api::remove, crate::workflows_api::list, crate::workflows_api::start, crate::workflows_api::show, crate::workflows_api::signal, crate::workflows_api::cancel, crate::secrets_api::list, crate::secrets_api::set, crate::secrets_api::remove, crate::secrets_api::rotate, crate::policy_api::show_policies, crate::policy_api::set_policies, crate::audit_api::list, crate::audit_api::verify, crate::observe_api::metrics, crate::observe_api::series, crate::observe_api::list_traces, crate::observe_api::show_trace, crate::observe_api::logs, crate::alerts_api::list, crate::alerts_api::show, crate::alerts_api::silences, crate::alerts_api::silence, crate::alerts_api::unsilence, crate::cost_api::cost, crate::cost_api::budgets),
    components(schemas(crate::nodes::NodeInfo, crate::nodes::NodeLoad, crate::nodes::NodeService, crate::nodes::NodeStatus, AppInfo, ArtifactInfo, CreatedToken, DeployResult, ErrorBody, NewToken, RevisionDetail, RevisionInfo, Role, RollbackRequest, Scope, Scope, TokenInfo, Traffic, TrafficTarget, Whoami, crate::topics::PublishedEvent, crate::topics::EventPage, crate::topics::StoredEvent, crate::topics::Replayed, crate::topics::GroupList, crate::topics::GroupInfo, crate::kv_api::KeyPage, crate::kv_api::Written, crate::model::SecretInfo, crate::model::SecretList, crate::model::RotatedKeys, crate::policy_api::PolicyText, crate::supply::SupplyReport, crate::supply::ComponentSupply, crate::supply::SupplyFinding, crate::supply::ReachEntry, crate::audit_api::AuditEntry, crate::audit_api::AuditPage, crate::audit_api::AuditVerification, crate::observe_api::MetricsSeries, crate::observe_api::ComponentMetricsSeries, crate::observe_api::MetricsPoint, crate::observe_api::TraceList, crate::observe_api::TraceDetail, crate::observe_api::LogList, crate::alerts_api::AlertList, crate::alerts_api::SilenceList, nimbus_observe::insight::Alert, nimbus_observe::insight::AlertKind, nimbus_observe::insight::AlertState, nimbus_observe::insight::Severity, nimbus_observe::insight::Observed, nimbus_observe::insight::Suspect, nimbus_observe::insight::Change, nimbus_observe::insight::Silence, nimbus_observe::insight::NewSilence, crate::cost_api::BudgetList, nimbus_observe::metering::BudgetStatus, nimbus_observe::metering::CostReport, nimbus_observe::metering::CostRow, nimbus_observe::metering::UsageView, nimbus_observe::metering::Cost, nimbus_observe::metering::Dimension)),
    modifiers(&BearerAuth, &GatewayPaths),
    security(("bearer" = [])),
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API token: `nbt_ID_SECRET`"))
                    .build(),
            ),
        );
    }
}

/// The gateway's endpoints (`nimbus_gateway::openapi`), served where the apps are.
struct GatewayPaths;

impl utoipa::Modify for GatewayPaths {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi.paths.merge(nimbus_gateway::openapi::paths());
        let components = openapi.components.get_or_insert_with(Default::default);
        components
            .schemas
            .insert(nimbus_gateway::openapi::ERROR_SCHEMA.into(), nimbus_gateway::openapi::error_schema());
        let tag = utoipa::openapi::tag::TagBuilder::new()
            .name(nimbus_gateway::openapi::TAG)
            .description(Some("Served by the gateway, on the apps' address, without an API token: health, the CloudEvents ingress, actor calls, workflow runs."))
            .build();
        openapi.tags.get_or_insert_with(Vec::new).push(tag);
    }
}

/// The OpenAPI document of this API, pretty-printed.
pub fn openapi_json() -> String {
    ApiDoc::openapi().to_pretty_json().expect("the document serializes") + "\n"
}

async fn openapi() -> Response {
    ([(http::header::CONTENT_TYPE, "application/json")], openapi_json()).into_response()
}

/// Who the token belongs to.
#[utoipa::path(get, path = "/v1/whoami", tag = "tokens", responses((status = 200, body = Whoami), (status = 401, body = ErrorBody)))]
async fn whoami(State(s): AppState, p: Principal) -> Json<Whoami> {
    Json(Whoami { token: p.token, dev: s.dev })
}

/// The platform's nodes: labels, status, version, load and the revisions each serves (only
/// the apps the token may see). A node whose heartbeat is older than its timeout is `gone`.
#[utoipa::path(get, path = "/v1/nodes", tag = "nodes",
    responses((status = 200, body = Vec<crate::nodes::NodeInfo>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn list_nodes(State(s): AppState, p: Principal) -> Result<Json<Vec<crate::nodes::NodeInfo>>, ControlError> {
    p.check(Action::Read, None)?;
    Ok(Json(s.nodes.list(&s.platform, &p).await?))
}

/// Parameters of a deploy.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DeployQuery {
    /// Comma-separated hosts to bind the app to (replaces the current binding).
    hosts: Option<String>,
    /// Tag to point at the new revision.
    tag: Option<String>,
    /// Send all traffic to the new revision (default true; the first revision always gets it).
    promote: Option<bool>,
    /// Take the hosts and requests this deploy claims from the apps that have them (admin
    /// tokens not limited to apps only); without it such a deploy is refused with 409.
    take_over: Option<bool>,
    /// The registry artifact the bundle was pulled from, pinned to its manifest's digest
    /// (`oci://REGISTRY/REPOSITORY@sha256:HEX`, as `nimbus deploy oci://REF` sends it); recorded
    /// on the new revision.
    source: Option<String>,
}

/// `source` if it is a digest-pinned registry reference, `oci://REGISTRY/REPOSITORY@sha256:HEX`.
fn oci_source(source: String) -> Result<String, ControlError> {
    let pinned = source.strip_prefix("oci://").and_then(|r| r.rsplit_once("@sha256:")).is_some_and(|(name, hex)| {
        name.contains('/')
            && !name.contains(char::is_whitespace)
            && hex.len() == 64
            && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if pinned {
        Ok(source)
    } else {
        Err(ControlError::bad_request(
            format!("`source={source}` is not a digest-pinned registry artifact"),
            "name it as oci://REGISTRY/REPOSITORY@sha256:HEX (64 lower-case hex digits), or leave `source` out",
        ))
    }
}

/// Deploys a bundle (tar of `nimbus.toml` and `components/NAME.wasm`) as an immutable revision.
#[utoipa::path(post, path = "/v1/deployments", tag = "deploy", params(DeployQuery),
    request_body(content = Vec<u8>, content_type = "application/x-tar", description = "The bundle"),
    responses(
        (status = 201, description = "A new revision", body = DeployResult),
        (status = 200, description = "Identical content was already deployed", body = DeployResult),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "A host or requests of another app would be taken", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, description = "In `--dev` mode: a body without a content type a web page cannot send", body = ErrorBody),
        (status = 422, description = "Invalid manifest or component", body = ErrorBody),
        (status = 503, description = "Too many uploads at once; retry after `Retry-After` seconds", body = ErrorBody),
    ))]
async fn deploy(
    State(s): AppState,
    principal: Principal,
    q: Result<Query<DeployQuery>, QueryRejection>,
    body: axum::body::Body,
) -> Result<Response, ControlError> {
    principal.check(Action::Deploy, None)?;
    let q = query(q)?;
    let source = q.source.map(oci_source).transpose()?;
    // The upload holds its slot until the deploy is done: unpacking and compiling use memory too.
    let upload = s.uploads.receive(body).await?;
    let bundle = upload.unpack().await?;
    let options = DeployOptions {
        hosts: q.hosts.map(|h| h.split(',').map(str::trim).filter(|h| !h.is_empty()).map(String::from).collect()),
        tag: q.tag,
        promote: q.promote.unwrap_or(true),
        take_over: q.take_over.unwrap_or(false),
        source,
    };
    let result = s.platform.deploy(bundle, options, &principal).await?;
    drop(upload);
    let status = if result.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(result)).into_response())
}

/// Apps the token may see.
#[utoipa::path(get, path = "/v1/apps", tag = "apps", responses((status = 200, body = [AppInfo]), (status = 401, body = ErrorBody)))]
async fn list_apps(State(s): AppState, p: Principal) -> Result<Json<Vec<AppInfo>>, ControlError> {
    p.check(Action::Read, None)?;
    Ok(Json(s.platform.apps(&p).await))
}

/// One app.
#[utoipa::path(get, path = "/v1/apps/{app}", tag = "apps", params(("app" = String, Path)), responses((status = 200, body = AppInfo), (status = 404, body = ErrorBody)))]
async fn show_app(State(s): AppState, p: Principal, Path(app): Path<String>) -> Result<Json<AppInfo>, ControlError> {
    p.check(Action::Read, Some(&app))?;
    Ok(Json(s.platform.app(&app).await?))
}

/// Deletes an app and all its revisions.
#[utoipa::path(delete, path = "/v1/apps/{app}", tag = "apps", params(("app" = String, Path)), responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_app(State(s): AppState, p: Principal, Path(app): Path<String>) -> Result<StatusCode, ControlError> {
    p.check(Action::Delete, Some(&app))?;
    s.platform.delete_app(&app).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The revisions of an app, newest first.
#[utoipa::path(get, path = "/v1/apps/{app}/revisions", tag = "revisions", params(("app" = String, Path)), responses((status = 200, body = [RevisionInfo]), (status = 404, body = ErrorBody)))]
async fn list_revisions(
    State(s): AppState,
    p: Principal,
    Path(app): Path<String>,
) -> Result<Json<Vec<RevisionInfo>>, ControlError> {
    p.check(Action::Read, Some(&app))?;
    Ok(Json(s.platform.revisions(&app).await?))
}

/// One revision with its manifest (for viewers, with its `env` values redacted).
#[utoipa::path(get, path = "/v1/apps/{app}/revisions/{revision}", tag = "revisions", params(("app" = String, Path), ("revision" = String, Path)), responses((status = 200, body = RevisionDetail), (status = 404, body = ErrorBody)))]
async fn show_revision(
    State(s): AppState,
    p: Principal,
    Path((app, revision)): Path<(String, String)>,
) -> Result<Json<RevisionDetail>, ControlError> {
    p.check(Action::Read, Some(&app))?;
    let mut detail = s.platform.revision(&app, &revision).await?;
    if !crate::redact::sees_env(&p, &app) {
        detail.manifest = crate::redact::redact_env(&detail.manifest);
    }
    Ok(Json(detail))
}

/// Deletes a revision; refused (409) while it receives traffic or has a tag.
#[utoipa::path(delete, path = "/v1/apps/{app}/revisions/{revision}", tag = "revisions", params(("app" = String, Path), ("revision" = String, Path)), responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_revision(
    State(s): AppState,
    p: Principal,
    Path((app, revision)): Path<(String, String)>,
) -> Result<StatusCode, ControlError> {
    p.check(Action::Delete, Some(&app))?;
    s.platform.delete_revision(&app, &revision).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The app's traffic split and tags.
#[utoipa::path(get, path = "/v1/apps/{app}/traffic", tag = "traffic", params(("app" = String, Path)), responses((status = 200, body = Traffic), (status = 404, body = ErrorBody)))]
async fn show_traffic(
    State(s): AppState,
    p: Principal,
    Path(app): Path<String>,
) -> Result<Json<Traffic>, ControlError> {
    p.check(Action::Read, Some(&app))?;
    Ok(Json(s.platform.app(&app).await?.traffic))
}

/// Replaces the traffic split (percentages summing to 100) and tags; effective when it returns.
#[utoipa::path(put, path = "/v1/apps/{app}/traffic", tag = "traffic", params(("app" = String, Path)), request_body = Traffic, responses((status = 200, body = Traffic), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn set_traffic(
    State(s): AppState,
    p: Principal,
    Path(app): Path<String>,
    traffic: Result<JsonBody<Traffic>, ControlError>,
) -> Result<Json<Traffic>, ControlError> {
    p.check(Action::Traffic, Some(&app))?;
    let JsonBody(traffic) = traffic?;
    Ok(Json(s.platform.set_traffic(&app, traffic).await?))
}

/// Restores the traffic in effect before the last change, or sends all traffic to `to`.
#[utoipa::path(post, path = "/v1/apps/{app}/rollback", tag = "traffic", params(("app" = String, Path)), request_body = RollbackRequest, responses((status = 200, body = Traffic), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn rollback(
    State(s): AppState,
    p: Principal,
    Path(app): Path<String>,
    req: Result<JsonBody<RollbackRequest>, ControlError>,
) -> Result<Json<Traffic>, ControlError> {
    p.check(Action::Rollback, Some(&app))?;
    let JsonBody(req) = req?;
    Ok(Json(s.platform.rollback(&app, req.to.as_deref()).await?))
}

/// Every token (without secrets). Admins only.
#[utoipa::path(get, path = "/v1/tokens", tag = "tokens", responses((status = 200, body = [TokenInfo]), (status = 403, body = ErrorBody)))]
async fn list_tokens(State(s): AppState, p: Principal) -> Result<Json<Vec<TokenInfo>>, ControlError> {
    p.check(Action::Tokens, None)?;
    Ok(Json(s.tokens.list()?))
}

/// Issues a token; its secret is in this response only. Admins only.
#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", request_body = NewToken, responses((status = 201, body = CreatedToken), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn create_token(
    State(s): AppState,
    p: Principal,
    new: Result<JsonBody<NewToken>, ControlError>,
) -> Result<(StatusCode, Json<CreatedToken>), ControlError> {
    p.check(Action::Tokens, None)?;
    let JsonBody(new) = new?;
    let created = s.tokens.create(&new)?;
    tracing::info!(token = %created.info.id, role = %created.info.role, "token created");
    Ok((StatusCode::CREATED, Json(created)))
}

/// Revokes a token at once. Admins only.
#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "tokens", params(("id" = String, Path)), responses((status = 204), (status = 404, body = ErrorBody)))]
async fn revoke_token(State(s): AppState, p: Principal, Path(id): Path<String>) -> Result<StatusCode, ControlError> {
    p.check(Action::Tokens, None)?;
    s.tokens.revoke(&id)?;
    tracing::info!(token = %id, "token revoked");
    Ok(StatusCode::NO_CONTENT)
}
