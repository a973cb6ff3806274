//! The metering endpoints of the control API: usage and cost per day, tenant, app, revision and
//! component (`/v1/cost`, JSON or CSV for a spreadsheet) and where each budget stands
//! (`/v1/budgets`). Served with the data endpoints, under the same tokens: reading one app's
//! cost needs `read` on it; reading every app's, or the budgets, needs `read` on every app.
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{Datelike, NaiveDate};
use nimbus_observe::metering::{BudgetStatus, CostReport, Dimension, Metering};
use nimbus_security::policy::Action;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::data::DataState;
use crate::error::ControlError;

type CostApp = State<Arc<DataState>>;

/// The metering routes.
pub(crate) fn routes() -> Router<Arc<DataState>> {
    Router::new().route("/v1/cost", get(cost)).route("/v1/budgets", get(budgets))
}

fn metering(s: &DataState) -> Result<&Metering, ControlError> {
    s.observer
        .metering()
        .ok_or_else(|| ControlError::NotFound("metering is off on this node (it runs with --no-metering)".into()))
}

/// Which usage to report.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct CostQuery {
    /// First UTC day, `YYYY-MM-DD` (default: the first of this month).
    from: Option<String>,
    /// Last UTC day, inclusive (default: today).
    to: Option<String>,
    /// What rows are grouped by, comma-separated: `day`, `tenant`, `app`, `revision`,
    /// `component` (default `app`).
    by: Option<String>,
    /// Only this app.
    app: Option<String>,
    /// `json` (the default) or `csv`.
    format: Option<String>,
}

fn date(value: Option<&str>, default: NaiveDate, name: &str) -> Result<NaiveDate, ControlError> {
    match value {
        None => Ok(default),
        Some(v) => NaiveDate::parse_from_str(v, "%Y-%m-%d").map_err(|e| {
            ControlError::bad_request(format!("`{name}={v}`: {e}"), format!("give `{name}` as YYYY-MM-DD"))
        }),
    }
}

/// Usage and its cost by the price book, grouped as asked, as of the last flush (at most one
/// flush interval behind).
#[utoipa::path(get, path = "/v1/cost", tag = "observability", params(CostQuery),
    responses((status = 200, body = CostReport, description = "The report (with `format=csv`, its rows as `text/csv`)"),
        (status = 400, body = crate::ErrorBody), (status = 404, body = crate::ErrorBody)))]
async fn cost(
    State(s): CostApp,
    caller: Caller,
    q: Result<Query<CostQuery>, QueryRejection>,
) -> Result<Response, ControlError> {
    let q = crate::api::query(q)?;
    match &q.app {
        Some(app) => s.check_app(&caller, Action::Read, app)?,
        None => s.check(&caller, Action::Read)?,
    }
    let today = chrono::Utc::now().date_naive();
    let from = date(q.from.as_deref(), today.with_day(1).unwrap_or(today), "from")?;
    let to = date(q.to.as_deref(), today, "to")?;
    let by =
        q.by.as_deref()
            .unwrap_or("app")
            .split(',')
            .filter(|d| !d.is_empty())
            .map(str::parse::<Dimension>)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ControlError::bad_request(e, "e.g. `by=day,app`"))?;
    if by.is_empty() {
        return Err(ControlError::bad_request("`by` names no dimension", "e.g. `by=day,app`"));
    }
    let csv = match q.format.as_deref().unwrap_or("json") {
        "json" => false,
        "csv" => true,
        other => {
            return Err(ControlError::bad_request(
                format!("unknown format `{other}`"),
                "use `format=json` or `format=csv`",
            ));
        }
    };
    let metering = metering(&s)?.clone();
    let report = tokio::task::spawn_blocking(move || metering.report(from, to, &by, q.app.as_deref()))
        .await
        .map_err(|e| ControlError::unavailable("reading the usage store failed", e))?
        .map_err(|e| match e {
            nimbus_observe::metering::MeteringError::Range(m) => {
                ControlError::bad_request(m, "ask for a shorter range")
            }
            e => ControlError::unavailable("reading the usage store failed", e),
        })?;
    if csv {
        let headers = [(http::header::CONTENT_TYPE, "text/csv; charset=utf-8; header=present")];
        Ok((headers, report.to_csv()).into_response())
    } else {
        Ok(Json(report).into_response())
    }
}

/// Where each budget stands this month.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BudgetList {
    /// The budgets of the node's cost configuration.
    pub budgets: Vec<BudgetStatus>,
}

/// Where each budget stands this month (as of the last flush): spent, thresholds reached,
/// whether its apps are throttled.
#[utoipa::path(get, path = "/v1/budgets", tag = "observability",
    responses((status = 200, body = BudgetList), (status = 404, body = crate::ErrorBody)))]
async fn budgets(State(s): CostApp, caller: Caller) -> Result<Json<BudgetList>, ControlError> {
    s.check(&caller, Action::Read)?;
    Ok(Json(BudgetList { budgets: metering(&s)?.budgets() }))
}
