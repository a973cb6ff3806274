//! `/v1/audit`: this node's audit trail, read page by page (JSON, or JSON lines for a SIEM),
//! and checked (`/v1/audit/verify`); in a cluster, with `node=NAME`, the cluster's copy of any
//! node's trail (also a node that is gone). Action `audit`, which the built-in policies give the
//! admin scope on a token for every app only.
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::{ApiState, query};
use crate::audit::AuditLog;
use crate::audit_replica::AuditReplica;
use crate::auth::Principal;
use crate::error::ControlError;
use crate::model::ErrorBody;
use nimbus_security::audit::Record;
use nimbus_security::policy::Action;

/// Largest page.
const MAX_LIMIT: usize = 10_000;

pub(crate) fn routes() -> axum::Router<Arc<ApiState>> {
    axum::Router::new().route("/v1/audit", get(list)).route("/v1/audit/verify", get(verify))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// Only records numbered after this one (default 0: from the first).
    pub(crate) after: Option<u64>,
    /// At most this many (default 1000, at most 10000).
    pub(crate) limit: Option<usize>,
    /// `json` (default: an [`AuditPage`]) or `jsonl`: one record per line, `{"hash":..,"record":..}`.
    pub(crate) format: Option<String>,
    /// In a cluster, read the cluster's copy of this node's trail (default: the answering
    /// node's own log).
    pub(crate) node: Option<String>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct VerifyQuery {
    /// In a cluster, check the cluster's copy of this node's trail (default: the answering
    /// node's own log, against its head and key).
    pub(crate) node: Option<String>,
}

/// A record of the audit trail with the hash of its line.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    /// The hex SHA-256 of the record's JSON as stored; the next record's `prev`.
    pub hash: String,
    /// The record: `v`, `seq`, `prev`, `kind` (`event` or `digest`) and the fields of its kind.
    #[schema(value_type = Object)]
    pub record: Record,
}

/// A page of the audit trail, oldest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    /// The node whose trail it is.
    pub node: String,
    /// The records.
    pub records: Vec<AuditEntry>,
    /// Pass as `after` for the next page; absent at the end.
    pub next_after: Option<u64>,
}

/// What checking the trail found.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditVerification {
    /// The node whose trail it is.
    pub node: String,
    /// Nothing is wrong.
    pub ok: bool,
    /// Records read, of which events and digests.
    pub records: u64,
    /// Events.
    pub events: u64,
    /// Signed digests.
    pub digests: u64,
    /// The newest record number.
    pub last: u64,
    /// The newest record a valid digest vouches for.
    pub signed: u64,
    /// Each problem, said (edited, deleted, reordered or unreadable records, broken links, bad
    /// signatures, a log cut short).
    pub problems: Vec<String>,
    /// The same, as objects with a `problem` kind and the record numbers.
    #[schema(value_type = Vec<Object>)]
    pub details: Vec<nimbus_security::audit::Problem>,
}

fn trail(s: &ApiState) -> Result<&Arc<AuditLog>, ControlError> {
    s.tokens.authorizer().audit_log().ok_or_else(|| ControlError::NotFound("this server keeps no audit trail".into()))
}

/// The cluster's copy of `node`'s trail, when `node` is another node than the answering one:
/// the replica to read it from.
fn remote<'a>(log: &'a AuditLog, node: Option<&str>) -> Result<Option<&'a AuditReplica>, ControlError> {
    match node {
        None => Ok(None),
        // The rule `--node-name` is held to (a label value, not empty).
        Some(node) if node.is_empty() || !nimbus_manifest::label_value_ok(node) => Err(ControlError::bad_request(
            "`node` is not a node name",
            "give a name `nimbus nodes list` shows: 1 to 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit",
        )),
        Some(node) if node == log.node() => Ok(None),
        Some(node) => log.replica().map(Some).ok_or_else(|| {
            ControlError::bad_request(
                format!("this server is not a cluster node: it keeps only its own trail, not `{node}`'s"),
                "leave out `node`",
            )
        }),
    }
}

/// The audit trail of the node answering, oldest first.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = AuditPage, description = "A page; with `format=jsonl`, `application/x-ndjson` lines of `AuditEntry`"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn list(
    State(s): State<Arc<ApiState>>,
    p: Principal,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Response, ControlError> {
    p.check(Action::Audit, None)?;
    let q = query(q)?;
    let jsonl = match q.format.as_deref() {
        None | Some("json") => false,
        Some("jsonl") => true,
        Some(other) => return Err(ControlError::bad_request(format!("no format `{other}`"), "use `json` or `jsonl`")),
    };
    let limit = q.limit.unwrap_or(1000).clamp(1, MAX_LIMIT);
    let log = trail(&s)?.clone();
    let after = q.after.unwrap_or(0);
    let (node, records) = match (remote(&log, q.node.as_deref())?, q.node.clone()) {
        (Some(replica), Some(node)) => {
            let lines = replica.lines(&node, after, limit).await?;
            (node, lines.iter().filter_map(|l| crate::audit::parsed(l)).collect())
        }
        _ => {
            let node = log.node().to_string();
            let records = tokio::task::spawn_blocking(move || log.list(after, limit))
                .await
                .map_err(|e| ControlError::internal("reading the audit log", e))??;
            (node, records)
        }
    };
    let full = records.len() == limit;
    let records: Vec<AuditEntry> = records.into_iter().map(|(hash, record)| AuditEntry { hash, record }).collect();
    if jsonl {
        let mut body = String::new();
        for entry in &records {
            body.push_str(&serde_json::to_string(entry).expect("an entry serializes"));
            body.push('\n');
        }
        return Ok(([(http::header::CONTENT_TYPE, "application/x-ndjson")], body).into_response());
    }
    let next_after = records.last().filter(|_| full).map(|e| e.record.seq);
    Ok(Json(AuditPage { node, records, next_after }).into_response())
}

/// Checks the node's audit trail: every hash, link and signature, and that it was not cut short.
/// The cluster's copy of another node's trail is checked against the key of its first digest
/// (a copy rewritten whole under another key is not detected there: verify the node's own log
/// too), and is as long as the node got to publish.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit", params(VerifyQuery),
    responses((status = 200, body = AuditVerification), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn verify(
    State(s): State<Arc<ApiState>>,
    p: Principal,
    q: Result<Query<VerifyQuery>, QueryRejection>,
) -> Result<Json<AuditVerification>, ControlError> {
    p.check(Action::Audit, None)?;
    let q = query(q)?;
    let log = trail(&s)?.clone();
    let (node, report) = match (remote(&log, q.node.as_deref())?, q.node) {
        (Some(replica), Some(node)) => {
            let lines = replica.lines(&node, 0, usize::MAX).await?;
            let key = lines.iter().filter_map(|l| crate::audit::parsed(l)).find_map(|(_, r)| match r.body {
                nimbus_security::audit::Body::Digest(d) => Some(d.key),
                nimbus_security::audit::Body::Event(_) => None,
            });
            let text: String = lines.iter().flat_map(|l| [l.as_str(), "\n"]).collect();
            (node, nimbus_security::audit::verify(text.as_bytes(), None, key.as_deref()))
        }
        _ => {
            let node = log.node().to_string();
            let report = tokio::task::spawn_blocking(move || log.verify())
                .await
                .map_err(|e| ControlError::internal("verifying the audit log", e))??;
            (node, report)
        }
    };
    Ok(Json(AuditVerification {
        node,
        ok: report.ok(),
        records: report.records,
        events: report.events,
        digests: report.digests,
        last: report.last,
        signed: report.signed,
        problems: report.problems.iter().map(ToString::to_string).collect(),
        details: report.problems,
    }))
}
