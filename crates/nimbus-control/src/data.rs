//! The data endpoints of the control API — an app's topics ([`crate::topics`]) and KV buckets
//! ([`crate::kv_api`]) under `/v1/apps/APP/`, metrics, traces and logs ([`crate::observe_api`]) —
//! and who may call them. Served by `nimbus server` (with its API tokens)
//! and by `nimbus up` (with the one token it writes to `.nimbus/api.json`).
use std::sync::Arc;

use axum::Router;
use http::HeaderMap;
use nimbus_bus::EventBus;
use nimbus_state::KvStore;
use subtle::ConstantTimeEq;

use crate::auth::{Caller, Tokens};
use crate::error::ControlError;
use nimbus_security::policy::Action;

/// Who may call the data endpoints.
#[derive(Debug)]
pub enum DataAuth {
    /// A server's API tokens. Topics and buckets belong to an app (`/v1/apps/APP/...`): a token
    /// limited to some apps reaches exactly their data. Telemetry belongs to no single app, so
    /// app-scoped tokens are refused there.
    Tokens {
        /// The token store.
        tokens: Tokens,
        /// `--dev`: calls without a token are allowed.
        dev: bool,
    },
    /// `nimbus up`: exactly this bearer token, for its one app.
    Local {
        /// The token in `.nimbus/api.json`.
        token: String,
        /// The app `nimbus up` serves: the only one whose data is here.
        app: String,
    },
}

impl DataAuth {
    fn check_app(
        &self,
        headers: &HeaderMap,
        client: Option<std::net::IpAddr>,
        action: Action,
        app: &str,
    ) -> Result<(), ControlError> {
        match self {
            DataAuth::Tokens { tokens, dev } => {
                crate::auth::principal(headers, tokens, *dev, client)?.check(action, Some(app))
            }
            DataAuth::Local { token, app: serving } => {
                check_local(headers, token)?;
                if app == serving {
                    Ok(())
                } else {
                    Err(ControlError::NotFound(format!(
                        "this `nimbus up` serves app `{serving}`, not `{app}`; its data is under /v1/apps/{serving}/"
                    )))
                }
            }
        }
    }
}

/// The gateway's `POST /events/TOPIC` and `POST /actors/...` of topics and actor types that are
/// not `public` take the callers that may write the app's data through this API (a token with scope
/// `data-write` for the app; `--dev` without a token; the local token under `nimbus up`).
impl nimbus_gateway::Callers for DataAuth {
    fn authorize(
        &self,
        app: &str,
        headers: &HeaderMap,
        client: Option<std::net::IpAddr>,
    ) -> Result<(), (http::StatusCode, String)> {
        self.check_app(headers, client, Action::DataWrite, app).map_err(|e| (e.status(), e.to_string()))
    }
}

/// What the data handlers share.
#[derive(Debug)]
pub struct DataState {
    /// The event bus, if this node has one.
    pub bus: Option<Arc<dyn EventBus>>,
    /// The KV store, if this node has one.
    pub kv: Option<Arc<dyn KvStore>>,
    /// Who may call.
    pub auth: DataAuth,
    /// Where this node's traces, metrics and logs are.
    pub observer: nimbus_observe::Observer,
    /// The apps' workflows, if this node runs any.
    pub workflows: Option<Arc<dyn crate::AppWorkflows>>,
    /// The routing table: the data of an app it says is served elsewhere (`[placement]`) is
    /// refused here too (421), so it never passes through this node.
    pub ingress: Option<Arc<nimbus_gateway::Ingress>>,
}

impl DataState {
    pub(crate) fn check(&self, caller: &Caller, action: Action) -> Result<(), ControlError> {
        match &self.auth {
            DataAuth::Tokens { tokens, dev } => {
                let principal = crate::auth::principal(&caller.headers, tokens, *dev, caller.ip)?;
                principal.check(action, None)?;
                match principal.token {
                    Some(t) if !t.apps.is_empty() => Err(ControlError::Forbidden(format!(
                        "token `{}` is limited to apps [{}]; traces, metrics and logs span every app, so they need a token for every app (an app's topics and buckets are under /v1/apps/APP/)",
                        t.id,
                        t.apps.join(", ")
                    ))),
                    _ => Ok(()),
                }
            }
            DataAuth::Local { token, .. } => check_local(&caller.headers, token),
        }
    }

    /// Checks a call about the data (topics, buckets) of `app`: the caller's token must allow
    /// calls of `scope` on that app.
    pub(crate) fn check_app(&self, caller: &Caller, action: Action, app: &str) -> Result<(), ControlError> {
        self.auth.check_app(&caller.headers, caller.ip, action, app)?;
        match self.ingress.as_ref().and_then(|i| i.elsewhere(app)) {
            Some(requires) => Err(ControlError::Misdirected { what: format!("app `{app}`"), requires }),
            None => Ok(()),
        }
    }

    pub(crate) fn bus(&self) -> Result<Arc<dyn EventBus>, ControlError> {
        self.bus
            .clone()
            .ok_or_else(|| ControlError::NotFound("this node has no event bus (the app declares no topics)".into()))
    }

    pub(crate) fn kv(&self) -> Result<Arc<dyn KvStore>, ControlError> {
        self.kv
            .clone()
            .ok_or_else(|| ControlError::NotFound("this node has no state store (no component has grants.kv)".into()))
    }
}

fn check_local(headers: &HeaderMap, expected: &str) -> Result<(), ControlError> {
    let given = crate::auth::bearer(headers)?
        .ok_or_else(|| ControlError::Unauthorized("this call needs the token in .nimbus/api.json".into()))?;
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(ControlError::Unauthorized("wrong token; it is in .nimbus/api.json next to nimbus.toml".into()))
    }
}

/// Reads a request body of at most `max` bytes (`what` names it in the error).
pub(crate) async fn read_body(body: axum::body::Body, max: usize, what: &str) -> Result<bytes::Bytes, ControlError> {
    use http_body_util::BodyExt;
    let collected = http_body_util::Limited::new(body, max).collect().await.map_err(|e| {
        if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
            ControlError::TooLarge(format!("{what} may be at most {max} bytes"))
        } else {
            ControlError::bad_request(format!("the body broke off: {e}"), "send it again")
        }
    })?;
    Ok(collected.to_bytes())
}

/// The topic, bucket and observability routes; under `nimbus up` ([`DataAuth::Local`]) also a
/// read-only `GET /v1/apps` listing the one app served (so the web console and other clients of
/// the control API find its name the same way on both).
pub fn data_router(state: Arc<DataState>) -> Router {
    let mut router = crate::topics::routes()
        .merge(crate::kv_api::routes())
        .merge(crate::workflows_api::routes())
        .merge(crate::observe_api::routes())
        .merge(crate::alerts_api::routes())
        .merge(crate::cost_api::routes());
    if let DataAuth::Local { .. } = state.auth {
        router = router.route("/v1/apps", axum::routing::get(served_app));
    }
    router.with_state(state)
}

/// `GET /v1/apps` under `nimbus up`: the app served, in the control API's [`crate::model::AppInfo`]
/// shape. It has no stored revisions (`revisions` 0, no traffic targets) and its times are
/// those of this answer: `nimbus up` keeps no history.
async fn served_app(
    axum::extract::State(s): axum::extract::State<Arc<DataState>>,
    caller: Caller,
) -> Result<axum::Json<Vec<crate::model::AppInfo>>, ControlError> {
    let DataAuth::Local { token, app } = &s.auth else {
        return Err(ControlError::NotFound("no such API endpoint; see /v1/openapi.json".into()));
    };
    check_local(&caller.headers, token)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Ok(axum::Json(vec![crate::model::AppInfo {
        name: app.clone(),
        hosts: Vec::new(),
        traffic: crate::model::Traffic::default(),
        revisions: 0,
        created_at: now,
        updated_at: now,
    }]))
}
