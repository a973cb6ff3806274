//! Who may publish to an app's topics, call its actors and run its workflows from outside. A
//! topic, actor type or workflow
//! whose trigger says `public = true` takes anyone who reaches the gateway; every other one needs
//! credentials that may write the app's data, which the gateway cannot judge itself: the
//! control plane supplies a [`Callers`] (its API tokens on a server, the one local token under
//! `nimbus up`). A gateway without one refuses every non-public call (deny by default).
use std::collections::BTreeSet;
use std::sync::Arc;

use http::{HeaderValue, StatusCode, header};
use nimbus_manifest::Manifest;

use crate::body::GatewayBody;
use crate::request_id::RequestId;
use crate::respond::error;

/// Decides whether a request may write an app's data (publish events, call actors).
pub trait Callers: Send + Sync + std::fmt::Debug {
    /// `Ok` if the request's credentials (its `Authorization` header), sent from `client`, may
    /// write the data of `app`; otherwise the status (401: none or unknown, 403: not allowed,
    /// 429: this client failed too often lately) and why.
    fn authorize(
        &self,
        app: &str,
        headers: &http::HeaderMap,
        client: Option<std::net::IpAddr>,
    ) -> Result<(), (StatusCode, String)>;
}

/// What a caller from outside asks to use.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Opened {
    Topic,
    ActorType,
    Workflow,
}

/// What an app opens to anyone, and who decides for the rest.
#[derive(Debug, Default)]
pub(crate) struct Openness {
    app: String,
    topics: BTreeSet<String>,
    actor_types: BTreeSet<String>,
    workflows: BTreeSet<String>,
    callers: Option<Arc<dyn Callers>>,
}

impl Openness {
    /// The public topics and actor types of a validated manifest.
    pub(crate) fn of(manifest: &Manifest) -> Self {
        Self {
            app: manifest.app.name.clone(),
            topics: manifest.trigger.topic.iter().filter(|t| t.public).map(|t| t.topic.clone()).collect(),
            actor_types: manifest.trigger.actor.iter().filter(|t| t.public).map(|t| t.actor_type.clone()).collect(),
            workflows: manifest.trigger.workflow.iter().filter(|t| t.public).map(|t| t.name.clone()).collect(),
            callers: None,
        }
    }

    pub(crate) fn set_callers(&mut self, callers: Arc<dyn Callers>) {
        self.callers = Some(callers);
    }

    /// `None` if the request may use `name` of `kind` (publish to the topic, call the actor
    /// type, start, read, signal and cancel runs of the workflow); the refusal otherwise.
    pub(crate) fn gate(
        &self,
        kind: Opened,
        name: &str,
        headers: &http::HeaderMap,
        client: Option<std::net::IpAddr>,
        id: &RequestId,
    ) -> Option<http::Response<GatewayBody>> {
        let (public, what, trigger) = match kind {
            Opened::Topic => (&self.topics, "topic", "topic"),
            Opened::ActorType => (&self.actor_types, "actor type", "actor"),
            Opened::Workflow => (&self.workflows, "workflow", "workflow"),
        };
        if public.contains(name) {
            return None;
        }
        self.refusal(&format!("{what} `{name}`"), &format!("its [[trigger.{trigger}]]"), headers, client, id)
    }

    fn refusal(
        &self,
        what: &str,
        trigger: &str,
        headers: &http::HeaderMap,
        client: Option<std::net::IpAddr>,
        id: &RequestId,
    ) -> Option<http::Response<GatewayBody>> {
        let app = &self.app;
        let (status, why) = match &self.callers {
            Some(callers) => callers.authorize(app, headers, client).err()?,
            None => (StatusCode::FORBIDDEN, "this gateway takes no credentials".to_string()),
        };
        let message = format!(
            "{what} of app `{app}` is not public: {why}; send `Authorization: Bearer TOKEN` with a token that may write app `{app}`'s data, or declare `public = true` on {trigger}"
        );
        let mut resp = error(status, id, &message);
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        Some(resp)
    }
}
