//! Authorization on the platform's policy set ([`nimbus_security::policy`]): the control API's
//! checks of tokens, and the grants of every component at load, decided by the built-in
//! policies plus the ones an admin set (`PUT /v1/policies`, kept in the control store and so,
//! in a cluster, on every node). A node reads the stored policies again when the record
//! changes, through it or through another node. Stored policies it cannot use (unreadable, or
//! not valid for this version's schema) fail closed: every call is refused but an admin's
//! setting new policies.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use nimbus_manifest::Manifest;
use nimbus_security::policy::{Action, Decision, Policies, Principal, Resource};

use crate::audit::AuditLog;
use crate::error::ControlError;
use crate::store::{PolicyRecord, Store};
use nimbus_security::audit::Event;

/// The platform's policy set over the control store.
#[derive(Debug)]
pub struct Authorizer {
    store: Arc<Store>,
    policies: Policies,
    /// The built-in policies alone: they decide who may set policies while the stored ones
    /// cannot be used.
    builtin: Policies,
    /// The store's policies generation the set was read at (a hint read without the lock).
    seen: AtomicU64,
    /// Held while the stored policies are read and compiled, with why they cannot be used.
    reload: Mutex<Option<String>>,
    /// They cannot be used (the reason is under `reload`).
    broken: AtomicBool,
    /// Where decisions are recorded.
    audit: Option<Arc<AuditLog>>,
}

impl Authorizer {
    /// The policies stored in `store` (the built-in ones alone if none were set).
    pub fn new(store: Arc<Store>) -> Self {
        let authorizer = Self {
            policies: Policies::new(),
            builtin: Policies::new(),
            seen: AtomicU64::new(u64::MAX),
            reload: Mutex::new(None),
            broken: AtomicBool::new(false),
            audit: None,
            store,
        };
        authorizer.current();
        authorizer
    }

    /// Records changes and refusals in `log` (each before the change is made; a change whose
    /// record cannot be written is refused).
    pub fn with_audit(mut self, log: Arc<AuditLog>) -> Self {
        self.audit = Some(log);
        self
    }

    /// The audit log decisions are recorded in.
    pub fn audit_log(&self) -> Option<&Arc<AuditLog>> {
        self.audit.as_ref()
    }

    /// Appends `event` to the audit log, if there is one; durable when this returns.
    pub(crate) fn record(&self, event: Event) -> Result<(), ControlError> {
        let Some(log) = &self.audit else { return Ok(()) };
        // An fsync: off the async workers where the runtime has others to run them.
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if multi_thread { tokio::task::block_in_place(|| log.record(event)) } else { log.record(event) }.map(drop)
    }

    /// The policies in use, read again from the store if they changed there; why they cannot
    /// be used, if so.
    fn current(&self) -> Option<String> {
        let generation = self.store.policies_generation();
        let mut broken = self.reload.lock().expect("policies reload");
        if self.seen.load(Ordering::Acquire) == generation {
            return broken.clone();
        }
        // Read under the lock, so the last reload is of the newest record.
        let generation = self.store.policies_generation();
        let loaded = self.store.policies().map_err(|e| nimbus_observe::report(&e).to_string()).and_then(|record| {
            self.policies.set(&record.map(|r| r.text).unwrap_or_default()).map_err(|e| e.to_string())
        });
        *broken = match loaded {
            Ok(()) => {
                tracing::info!("policies loaded; decisions are taken under them");
                None
            }
            Err(why) => {
                tracing::error!(error = %why, "the stored policies cannot be used; every call is refused until an admin sets valid ones");
                Some(why)
            }
        };
        self.broken.store(broken.is_some(), Ordering::Release);
        self.seen.store(generation, Ordering::Release);
        broken.clone()
    }

    /// Whether `principal` may do `action` to `resource`.
    pub fn decide(&self, principal: &Principal, action: Action, resource: &Resource) -> Decision {
        if self.seen.load(Ordering::Acquire) != self.store.policies_generation() {
            self.current();
        }
        if self.broken.load(Ordering::Acquire) {
            let why = self.reload.lock().expect("policies reload").clone().unwrap_or_default();
            return self.fail_closed(principal, action, resource, why);
        }
        self.policies.decide(principal, action, resource)
    }

    /// With stored policies that cannot be used: only an admin's setting new ones.
    fn fail_closed(&self, principal: &Principal, action: Action, resource: &Resource, why: String) -> Decision {
        if action == Action::Policies && self.builtin.decide(principal, action, resource).allowed {
            return Decision { allowed: true, ..Decision::default() };
        }
        Decision {
            allowed: false,
            errors: vec![format!(
                "the stored policies cannot be used ({why}); every call is refused until an admin sets valid ones with `nimbus policy set`"
            )],
            ..Decision::default()
        }
    }

    /// The admin's policies in use.
    pub fn text(&self) -> String {
        self.current();
        self.policies.text()
    }

    /// Refuses `manifest` if a policy denies one of its components something its grants give it.
    pub fn check_manifest(&self, manifest: &Manifest) -> Result<(), ControlError> {
        if let Some(why) = self.current() {
            return Err(ControlError::Unavailable {
                message: format!("the stored policies cannot be used ({why}); set valid ones with `nimbus policy set`"),
                source: None,
            });
        }
        let details = denials(&self.policies, manifest);
        if details.is_empty() {
            return Ok(());
        }
        Err(ControlError::Invalid {
            message: "a policy denies a component what its manifest grants; nothing was loaded".into(),
            details,
        })
    }

    /// Sets the admin's policies to `text` (validated against the schema) for `setter` (its
    /// token id in `by`); refused if they would deny a component of a revision in `loaded`
    /// what it was granted, or deny `setter` setting policies again.
    pub fn set(&self, text: &str, setter: (&Principal, &str), loaded: &[Arc<Manifest>]) -> Result<(), ControlError> {
        let candidate = Policies::new();
        candidate.set(text).map_err(|e| ControlError::BadRequest {
            message: format!("the policies are refused: {e}"),
            hint: Some(
                "`nimbus policy schema` prints the entity types, attributes and actions policies may use".into(),
            ),
        })?;
        let (principal, by) = setter;
        if !candidate.decide_uncached(principal, Action::Policies, &Resource::Server).allowed {
            return Err(ControlError::Conflict {
                message: "the policies would deny you `policies`: nobody could change them again".into(),
                hint: Some(
                    "keep a permit of `policies` for an admin token, or leave admin tokens out of the forbid".into(),
                ),
            });
        }
        let conflicts: Vec<String> = loaded.iter().flat_map(|m| denials(&candidate, m)).collect();
        if !conflicts.is_empty() {
            return Err(ControlError::Conflict {
                message: format!(
                    "the policies would deny loaded revisions what their manifests grant: {}",
                    conflicts.join("; ")
                ),
                hint: Some(
                    "deploy revisions without those grants first (or move their traffic away and delete them), then set the policies"
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

/// What `policies` deny the components of `manifest` of their grants, one line each.
fn denials(policies: &Policies, manifest: &Manifest) -> Vec<String> {
    let app = manifest.app.name.as_str();
    let mut details = Vec::new();
    for (name, component) in &manifest.component {
        for (action, resource, decision) in policies.check_grants(app, name, &grants(app, &component.grants)) {
            let by = decision
                .forbidding()
                .map_or_else(|| "no policy permits it".into(), |ids| format!("forbidden by policy {ids}"));
            details.push(format!(
                "component `{name}` of app `{app}` is granted {action} {} but {by}",
                describe(&resource)
            ));
        }
    }
    details
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Tokens;
    use crate::model::{NewToken, Role};

    #[test]
    fn stored_policies_that_cannot_be_used_refuse_every_call_but_an_admin_setting_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("control.redb")).unwrap());
        // As a node of a later version could store them: not valid for this schema.
        let record = PolicyRecord {
            text: "permit (principal, action == Nimbus::Action::\"fly\", resource);".into(),
            updated_at: 0,
            updated_by: "x".into(),
        };
        store.set_policies(&record).unwrap();
        let authorizer = Arc::new(Authorizer::new(store.clone()));
        let tokens = Tokens::new(store, authorizer.clone());
        let principal = |role| {
            let created = tokens.create(&NewToken { name: "t".into(), role, ..NewToken::default() }).unwrap();
            tokens.principal(Some(tokens.verify(&created.token).unwrap()))
        };
        let (admin, deployer) = (principal(Role::Admin), principal(Role::Deployer));
        let refused = admin.check(Action::Read, Some("shop")).unwrap_err().to_string();
        assert!(refused.contains("the stored policies cannot be used"), "{refused}");
        assert!(deployer.check(Action::Deploy, Some("shop")).is_err());
        assert!(deployer.check(Action::Policies, None).is_err());
        // The way out: an admin sets valid policies.
        admin.check(Action::Policies, None).unwrap();
        authorizer.set("", (admin.as_policy(), admin.id()), &[]).unwrap();
        admin.check(Action::Read, Some("shop")).unwrap();
        deployer.check(Action::Deploy, Some("shop")).unwrap();
    }

    #[test]
    fn policies_that_would_lock_out_their_setter_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("control.redb")).unwrap());
        let authorizer = Arc::new(Authorizer::new(store.clone()));
        let tokens = Tokens::new(store, authorizer.clone());
        let created =
            tokens.create(&NewToken { name: "root".into(), role: Role::Admin, ..NewToken::default() }).unwrap();
        let admin = tokens.principal(Some(tokens.verify(&created.token).unwrap()));
        let lockout = "forbid (principal is Nimbus::Token, action, resource);";
        let refused = authorizer.set(lockout, (admin.as_policy(), admin.id()), &[]).unwrap_err().to_string();
        assert!(refused.contains("nobody could change them again"), "{refused}");
        admin.check(Action::Read, None).unwrap();
    }
}
