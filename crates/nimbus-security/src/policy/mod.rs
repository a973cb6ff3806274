//! Who may do what, decided by one Cedar policy set ([`Policies`]): control-plane actions of
//! API tokens (deploy, traffic, rollback, delete, tokens, secrets, policies, reads) and the
//! data-plane access of components (buckets, topics, actor types, secrets, outbound origins,
//! components to invoke).
//!
//! The set is the built-in one — what each token scope allows on the apps a token is not limited
//! away from (`baseline.cedar`), and one template per kind of grant (`grants.cedar`), linked with
//! a component and what its manifest grants it — plus the policies an admin sets. Every policy is
//! validated against the built-in schema (`schema.cedarschema`, strict mode) before it is used.
//! Cedar's semantics hold: nothing is allowed unless a `permit` says so, and any `forbid` that
//! applies overrides every `permit`. Decisions are cached per (principal, action, resource) for
//! the policy set they were taken under; setting new policies starts an empty cache.
//!
//! ```
//! use nimbus_security::policy::{Action, Policies, Principal, Resource, TokenPrincipal};
//!
//! let policies = Policies::new();
//! policies.set(r#"@id("no-deletes") forbid (principal, action == Nimbus::Action::"delete", resource);"#)?;
//! let ci = Principal::Token(TokenPrincipal {
//!     id: "ci".into(),
//!     role: "deployer".into(),
//!     scopes: vec!["deploy".into()],
//!     ..TokenPrincipal::default()
//! });
//! assert!(policies.decide(&ci, Action::Deploy, &Resource::App("shop".into())).allowed);
//! let no = policies.decide(&ci, Action::Delete, &Resource::App("shop".into()));
//! assert_eq!((no.allowed, no.forbidden_by.as_slice()), (false, &["no-deletes".to_string()][..]));
//! # Ok::<(), nimbus_security::policy::PolicyError>(())
//! ```
mod model;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, EntityUid, PolicyId, PolicySet, Request, Schema, SlotId,
    ValidationMode, Validator,
};

pub use model::{Action, Principal, Resource, TokenPrincipal};

const SCHEMA: &str = include_str!("schema.cedarschema");
const BASELINE: &str = include_str!("baseline.cedar");
const GRANTS: &str = include_str!("grants.cedar");

/// Ids of built-in policies start with this; an admin's may not.
pub const RESERVED_PREFIX: &str = "nimbus.";

/// How many decisions are cached before the cache starts again.
const CACHE_LIMIT: usize = 16_384;

/// Decisions about resources with longer names are not cached (a name comes from a request
/// path before it is validated; the cache stays within a few MB whatever callers send).
const CACHED_NAME_BYTES: usize = 256;

/// Why policies were refused. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The text is not Cedar.
    #[error("the policies do not parse: {message}")]
    Parse {
        /// Cedar's errors, one per line.
        message: String,
    },
    /// A policy does not match the schema (an unknown entity type, action or attribute, or an
    /// action applied to what it does not apply to).
    #[error("policy `{id}` does not match the Nimbus schema: {message}; see `nimbus policy schema`")]
    Invalid {
        /// The policy's `@id`, or its position.
        id: String,
        /// What the validator said.
        message: String,
    },
    /// Two policies have the same `@id`, or one uses the built-in prefix.
    #[error("policy id `{id}` {why}; give each policy its own `@id(\"...\")`")]
    Id {
        /// The id.
        id: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A template (with `?principal` or `?resource`) where only policies are accepted.
    #[error("`{id}` is a template; set policies, not templates (grants are linked by Nimbus itself)")]
    Template {
        /// Its id.
        id: String,
    },
}

/// A decision, and what decided it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// Allowed: a `permit` applies and no `forbid` does.
    pub allowed: bool,
    /// The ids of the `forbid` policies that denied it (empty when it was denied because no
    /// `permit` applies).
    pub forbidden_by: Vec<String>,
    /// Errors evaluating policies (a `permit` that errs is skipped, as Cedar does; an admin's
    /// `forbid` that errs denies).
    pub errors: Vec<String>,
}

impl Decision {
    /// The forbidding policies, for a message: `` `a`, `b` ``; `None` when none forbade.
    pub fn forbidding(&self) -> Option<String> {
        (!self.forbidden_by.is_empty())
            .then(|| self.forbidden_by.iter().map(|i| format!("`{i}`")).collect::<Vec<_>>().join(", "))
    }
}

/// The active policy set: the built-in policies and templates plus an admin's, with the cache
/// of the decisions taken under it.
#[derive(Debug)]
struct Active {
    set: PolicySet,
    /// The admin's policies as they were set.
    text: String,
    /// Ids of the admin's `forbid` policies.
    forbids: HashSet<PolicyId>,
    cache: Mutex<HashMap<(String, Action, Resource), Decision>>,
}

/// The policy engine.
#[derive(Debug)]
pub struct Policies {
    schema: Schema,
    authorizer: Authorizer,
    active: ArcSwap<Active>,
}

impl Default for Policies {
    fn default() -> Self {
        Self::new()
    }
}

impl Policies {
    /// The built-in policies only.
    pub fn new() -> Self {
        let (schema, _) = Schema::from_cedarschema_str(SCHEMA).expect("the built-in schema parses");
        let active = compile(&schema, "").expect("the built-in policies are valid");
        Self { schema, authorizer: Authorizer::new(), active: ArcSwap::from_pointee(active) }
    }

    /// The built-in schema, in Cedar's schema syntax.
    pub fn schema_text() -> &'static str {
        SCHEMA
    }

    /// The built-in policies and grant templates.
    pub fn builtin_text() -> String {
        format!("{BASELINE}\n{GRANTS}")
    }

    /// Uses `text` as the admin's policies from now on (replacing the ones set before); the
    /// cached decisions are dropped.
    pub fn set(&self, text: &str) -> Result<(), PolicyError> {
        let active = compile(&self.schema, text)?;
        self.active.store(Arc::new(active));
        Ok(())
    }

    /// The admin's policies in use.
    pub fn text(&self) -> String {
        self.active.load().text.clone()
    }

    /// Whether `principal` may do `action` to `resource` (cached).
    pub fn decide(&self, principal: &Principal, action: Action, resource: &Resource) -> Decision {
        let active = self.active.load();
        let key = (principal.cache_key(), action, resource.clone());
        if let Some(hit) = active.cache.lock().expect("policy cache").get(&key) {
            return hit.clone();
        }
        let decision = self.evaluate(&active, &active.set, principal, action, resource);
        if resource.name_len() > CACHED_NAME_BYTES {
            return decision;
        }
        let mut cache = active.cache.lock().expect("policy cache");
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(key, decision.clone());
        decision
    }

    /// Whether `principal` may do `action` to `resource`, evaluated now (not cached).
    pub fn decide_uncached(&self, principal: &Principal, action: Action, resource: &Resource) -> Decision {
        let active = self.active.load();
        self.evaluate(&active, &active.set, principal, action, resource)
    }

    /// The grants of component `name` of `app` (each an action of the data plane and what it
    /// is about) linked into the policy set, and each one decided: those denied (by an admin's
    /// `forbid`), with their decision.
    pub fn check_grants(
        &self,
        app: &str,
        name: &str,
        grants: &[(Action, Resource)],
    ) -> Vec<(Action, Resource, Decision)> {
        let active = self.active.load();
        let mut set = active.set.clone();
        let component = Principal::Component { app: app.into(), name: name.into() };
        for (i, (action, resource)) in grants.iter().enumerate() {
            let Some(template) = action.grant_template() else { continue };
            let slots = HashMap::from([(SlotId::principal(), component.uid()), (SlotId::resource(), resource.uid())]);
            // Ids are ours (a counter); the entities are typed values, never policy text.
            if let Err(e) = set.link(PolicyId::new(template), PolicyId::new(format!("nimbus.link.{i}")), slots) {
                tracing::error!(error = %e, "cannot link a grant");
            }
        }
        grants
            .iter()
            .filter_map(|(action, resource)| {
                let decision = self.evaluate(&active, &set, &component, *action, resource);
                (!decision.allowed).then(|| (*action, resource.clone(), decision))
            })
            .collect()
    }

    fn evaluate(
        &self,
        active: &Active,
        set: &PolicySet,
        principal: &Principal,
        action: Action,
        resource: &Resource,
    ) -> Decision {
        let deny = |errors: Vec<String>| Decision { allowed: false, forbidden_by: Vec::new(), errors };
        // The request and the entities are built by this module from typed values, in the
        // schema's shapes; checking them against it again costs more than the decision.
        let request = match Request::new(principal.uid(), action.uid(), resource.uid(), Context::empty(), None) {
            Ok(r) => r,
            Err(e) => return deny(vec![e.to_string()]),
        };
        let mut seen: HashSet<EntityUid> = HashSet::new();
        let entities = principal.entities().into_iter().chain(resource.entities()).filter(|e| seen.insert(e.uid()));
        let entities = match Entities::from_entities(entities, None) {
            Ok(e) => e,
            Err(e) => return deny(vec![e.to_string()]),
        };
        let response = self.authorizer.is_authorized(&request, set, &entities);
        let diagnostics = response.diagnostics();
        let errors: Vec<String> = diagnostics.errors().map(|e| e.to_string()).collect();
        for e in &errors {
            tracing::warn!(error = %e, "a policy failed to evaluate");
        }
        // An admin's forbid that cannot be evaluated denies (Cedar would skip it and allow).
        let failed_forbids = diagnostics.errors().map(|e| match e {
            cedar_policy::AuthorizationError::PolicyEvaluationError(e) => e.policy_id(),
        });
        let mut forbidden_by: Vec<String> = diagnostics
            .reason()
            .chain(failed_forbids)
            .filter(|id| active.forbids.contains(*id))
            .map(|id| id.to_string())
            .collect();
        forbidden_by.dedup();
        let allowed = response.decision() == CedarDecision::Allow && forbidden_by.is_empty();
        if allowed {
            forbidden_by.clear();
        }
        Decision { allowed, forbidden_by, errors }
    }
}

/// The built-in policy set with the admin's `text` added, every policy validated.
fn compile(schema: &Schema, text: &str) -> Result<Active, PolicyError> {
    let mut set = named(BASELINE)?;
    for template in named(GRANTS)?.templates() {
        set.add_template(template.clone()).expect("built-in ids are unique");
    }
    let admin = named(text)?;
    let mut forbids = HashSet::new();
    if let Some(t) = admin.templates().next() {
        return Err(PolicyError::Template { id: t.id().to_string() });
    }
    for policy in admin.policies() {
        let id = policy.id().to_string();
        if id.starts_with(RESERVED_PREFIX) {
            return Err(PolicyError::Id { id, why: "starts with the built-in prefix `nimbus.`" });
        }
        if policy.effect() == cedar_policy::Effect::Forbid {
            forbids.insert(policy.id().clone());
        }
        set.add(policy.clone()).map_err(|_| PolicyError::Id { id, why: "is used twice" })?;
    }
    let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
    if let Some(e) = result.validation_errors().next() {
        return Err(PolicyError::Invalid { id: e.policy_id().to_string(), message: e.to_string() });
    }
    Ok(Active { set, text: text.to_string(), forbids, cache: Mutex::default() })
}

/// The policies and templates of `text`, each under its `@id` (else `policyN`, its position).
fn named(text: &str) -> Result<PolicySet, PolicyError> {
    let parsed: PolicySet = text.parse().map_err(|e: cedar_policy::ParseErrors| PolicyError::Parse {
        message: e.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "),
    })?;
    let mut set = PolicySet::new();
    let mut ids = HashSet::new();
    for policy in parsed.policies() {
        let id = policy.annotation("id").map_or_else(|| policy.id().clone(), PolicyId::new);
        if !ids.insert(id.clone()) {
            return Err(PolicyError::Id { id: id.to_string(), why: "is used twice" });
        }
        set.add(policy.new_id(id)).expect("ids are unique");
    }
    for template in parsed.templates() {
        let id = template.annotation("id").map_or_else(|| template.id().clone(), PolicyId::new);
        if !ids.insert(id.clone()) {
            return Err(PolicyError::Id { id: id.to_string(), why: "is used twice" });
        }
        set.add_template(template.new_id(id)).expect("ids are unique");
    }
    Ok(set)
}

#[cfg(test)]
mod tests;
