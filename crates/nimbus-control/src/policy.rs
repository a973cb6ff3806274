//! Authorization on the platform's policy set ([`nimbus_security::policy`]): the control API's
//! checks of tokens, and the grants of every component at load, decided by the built-in
//! policies plus the ones an admin set (`PUT /v1/policies`, kept in the control store and so,
//! in a cluster, on every node). A node reads the stored policies again when the record
//! changes, through it or through another node.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use nimbus_manifest::Manifest;
use nimbus_security::policy::{Action, Decision, Policies, Principal, Resource};

use crate::error::ControlError;
use crate::store::{PolicyRecord, Store};

/// The platform's policy set over the control store.
#[derive(Debug)]
pub struct Authorizer {
    store: Arc<Store>,
    policies: Policies,
    /// The store's policies generation the set was read at.
    seen: AtomicU64,
}

impl Authorizer {
    /// The policies stored in `store` (the built-in ones alone if none were set).
    pub fn new(store: Arc<Store>) -> Result<Self, ControlError> {
        let authorizer = Self { policies: Policies::new(), seen: AtomicU64::new(store.policies_generation()), store };
        if let Some(record) = authorizer.store.policies()? {
            authorizer.policies.set(&record.text).map_err(|e| ControlError::Invalid {
                message: "the stored policies do not validate against this version's schema".into(),
                details: vec![
                    e.to_string(),
                    "set policies that do with `nimbus policy set` from a node of the previous version".into(),
                ],
            })?;
        }
        Ok(authorizer)
    }

    /// The policies in use, read again from the store if they changed there.
    fn current(&self) -> &Policies {
        let generation = self.store.policies_generation();
        if self.seen.swap(generation, Ordering::AcqRel) != generation {
            let text = match self.store.policies() {
                Ok(record) => record.map(|r| r.text).unwrap_or_default(),
                Err(e) => {
                    tracing::error!(error = %nimbus_observe::report(&e), "cannot read the policies; the ones in use stay");
                    self.seen.store(u64::MAX, Ordering::Release);
                    return &self.policies;
                }
            };
            match self.policies.set(&text) {
                Ok(()) => tracing::info!("policies changed; decisions are taken under the new ones"),
                Err(e) => {
                    tracing::error!(error = %nimbus_observe::report(&e), "the stored policies do not validate; the ones in use stay")
                }
            }
        }
        &self.policies
    }

    /// Whether `principal` may do `action` to `resource`.
    pub fn decide(&self, principal: &Principal, action: Action, resource: &Resource) -> Decision {
        self.current().decide(principal, action, resource)
    }

    /// The admin's policies in use.
    pub fn text(&self) -> String {
        self.current().text()
    }

    /// Refuses `manifest` if a policy denies one of its components something its grants give it.
    pub fn check_manifest(&self, manifest: &Manifest) -> Result<(), ControlError> {
        denials(self.current(), manifest)
    }

    /// Sets the admin's policies to `text` (validated against the schema), set by token `by`;
    /// refused if they would deny a component of a revision in `serving` what it was granted.
    pub fn set(&self, text: &str, by: &str, serving: &[Arc<Manifest>]) -> Result<(), ControlError> {
        let candidate = Policies::new();
        candidate.set(text).map_err(|e| ControlError::BadRequest {
            message: format!("the policies are refused: {e}"),
            hint: Some(
                "`nimbus policy schema` prints the entity types, attributes and actions policies may use".into(),
            ),
        })?;
        let conflicts: Vec<String> = serving
            .iter()
            .filter_map(|m| denials(&candidate, m).err())
            .flat_map(|e| match e {
                ControlError::Invalid { details, .. } => details,
                other => vec![other.to_string()],
            })
            .collect();
        if !conflicts.is_empty() {
            return Err(ControlError::Conflict {
                message: format!(
                    "the policies would deny revisions that receive traffic what their manifests grant: {}",
                    conflicts.join("; ")
                ),
                hint: Some(
                    "deploy revisions without those grants first (or move their traffic away), then set the policies"
                        .into(),
                ),
            });
        }
        let record = PolicyRecord { text: text.to_string(), updated_at: crate::platform::now(), updated_by: by.into() };
        self.store.set_policies(&record)?;
        self.current();
        Ok(())
    }
}

/// What `policies` deny the components of `manifest` of their grants: an error naming each.
fn denials(policies: &Policies, manifest: &Manifest) -> Result<(), ControlError> {
    let app = manifest.app.name.as_str();
    let mut details = Vec::new();
    for (name, component) in &manifest.component {
        for (action, resource, decision) in policies.check_grants(app, name, &grants(app, &component.grants)) {
            let by = match decision.forbidden_by.as_slice() {
                [] => "no policy permits it".to_string(),
                ids => format!(
                    "forbidden by policy {}",
                    ids.iter().map(|i| format!("`{i}`")).collect::<Vec<_>>().join(", ")
                ),
            };
            details.push(format!(
                "component `{name}` of app `{app}` is granted {action} {} but {by}",
                describe(&resource)
            ));
        }
    }
    if details.is_empty() {
        return Ok(());
    }
    Err(ControlError::Invalid {
        message: "a policy denies a component what its manifest grants; nothing was loaded".into(),
        details,
    })
}

/// The grants of a component of `app` as the policies see them.
fn grants(app: &str, g: &nimbus_manifest::Grants) -> Vec<(Action, Resource)> {
    let owned = |named: &str| {
        let (owner, name) = nimbus_manifest::resolve(app, named);
        (owner.to_string(), name.to_string())
    };
    let mut out = Vec::new();
    out.extend(g.kv.iter().map(|b| owned(b)).map(|(app, name)| (Action::Kv, Resource::Bucket { app, name })));
    out.extend(g.publish.iter().map(|t| owned(t)).map(|(app, name)| (Action::Publish, Resource::Topic { app, name })));
    out.extend(g.actors.iter().map(|a| owned(a)).map(|(app, name)| (Action::Actor, Resource::ActorType { app, name })));
    out.extend(
        g.invoke.iter().map(|c| owned(c)).map(|(app, name)| (Action::Invoke, Resource::Component { app, name })),
    );
    out.extend(
        g.secrets.iter().map(|s| (Action::Secret, Resource::Secret { app: app.to_string(), name: s.to_string() })),
    );
    out.extend(g.outbound.iter().map(|o| (Action::Outbound, Resource::Origin(o.to_string()))));
    out
}

/// A resource as an error names it.
fn describe(resource: &Resource) -> String {
    match resource {
        Resource::Server => "the server".into(),
        Resource::App(app) => format!("app `{app}`"),
        Resource::Bucket { app, name } => format!("bucket `{app}/{name}`"),
        Resource::Topic { app, name } => format!("topic `{app}/{name}`"),
        Resource::ActorType { app, name } => format!("actor type `{app}/{name}`"),
        Resource::Secret { app, name } => format!("secret `{app}/{name}`"),
        Resource::Origin(url) => format!("origin `{url}`"),
        Resource::Component { app, name } => format!("component `{app}/{name}`"),
    }
}
