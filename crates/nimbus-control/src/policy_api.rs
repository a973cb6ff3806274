//! `/v1/policies`: the Cedar policies an admin set, read and replaced whole (action
//! `policies`, which the built-in policies give the admin scope on a token for every app).
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::{ApiState, JsonBody};
use crate::auth::Principal;
use crate::error::ControlError;
use crate::model::ErrorBody;
use nimbus_security::policy::Action;

/// The admin's policies, in Cedar's syntax.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyText {
    /// The policies; empty: only the built-in ones apply.
    pub policies: String,
}

/// Largest policy text accepted.
const MAX_POLICY_BYTES: usize = 1 << 20;

pub(crate) fn routes() -> axum::Router<Arc<ApiState>> {
    axum::Router::new().route("/v1/policies", get(show_policies).put(set_policies))
}

/// The policies an admin set (the built-in ones are always there: `nimbus policy list --builtin`).
#[utoipa::path(get, path = "/v1/policies", tag = "policies",
    responses((status = 200, body = PolicyText), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn show_policies(
    State(s): State<Arc<ApiState>>,
    p: Principal,
) -> Result<Json<PolicyText>, ControlError> {
    p.check(Action::Policies, None)?;
    Ok(Json(PolicyText { policies: s.tokens.authorizer().text() }))
}

/// Replaces the policies. Each is validated against the built-in schema; policies that would
/// deny a loaded revision what its manifest grants, or deny the caller setting policies again,
/// are refused (409).
#[utoipa::path(put, path = "/v1/policies", tag = "policies", request_body = PolicyText,
    responses((status = 200, body = PolicyText), (status = 400, description = "A policy does not parse or does not match the schema", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "They would deny running components their grants, or another node set policies at the same time", body = ErrorBody)))]
pub(crate) async fn set_policies(
    State(s): State<Arc<ApiState>>,
    p: Principal,
    body: Result<JsonBody<PolicyText>, ControlError>,
) -> Result<Json<PolicyText>, ControlError> {
    p.check(Action::Policies, None)?;
    let JsonBody(body) = body?;
    if body.policies.len() > MAX_POLICY_BYTES {
        return Err(ControlError::TooLarge(format!("policies are limited to {MAX_POLICY_BYTES} bytes")));
    }
    let loaded = s.platform.loaded_manifests().await;
    tokio::task::block_in_place(|| s.tokens.authorizer().set(&body.policies, (p.as_policy(), p.id()), &loaded))?;
    tracing::info!(by = %p.id(), "policies set");
    Ok(Json(PolicyText { policies: s.tokens.authorizer().text() }))
}
