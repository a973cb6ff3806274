//! The typed requests the engine decides: who ([`Principal`]), does what ([`Action`]), to what
//! ([`Resource`]) — and their Cedar entities, built from typed ids (no policy text is ever
//! assembled from a name).
use std::collections::{HashMap, HashSet};

use cedar_policy::{Entity, EntityId, EntityTypeName, EntityUid, RestrictedExpression};

/// Who asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// An API token.
    Token(TokenPrincipal),
    /// A component of an app, for what its grants give it.
    Component {
        /// Its app.
        app: String,
        /// Its name.
        name: String,
    },
}

/// An API token as the policies see it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TokenPrincipal {
    /// Its public id (`dev` for an unauthenticated call in `--dev` mode).
    pub id: String,
    /// Its role (`admin`, `deployer`, `viewer`).
    pub role: String,
    /// The scopes it holds (`read`, `deploy`, …).
    pub scopes: Vec<String>,
    /// The apps it is limited to; empty: every app.
    pub apps: Vec<String>,
    /// The user it stands for.
    pub user: Option<String>,
    /// The groups it is in.
    pub groups: Vec<String>,
}

/// What is asked. The first ones are control-plane actions of tokens, the others what
/// components' grants give them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Read apps, revisions, traffic, secrets' names, traces, metrics, logs, nodes.
    Read,
    /// Deploy a revision.
    Deploy,
    /// Change a traffic split or tags.
    Traffic,
    /// Roll back.
    Rollback,
    /// Delete a revision or an app.
    Delete,
    /// Read an app's topics and buckets.
    DataRead,
    /// Publish to an app's topics, write its buckets, call its non-public entry points.
    DataWrite,
    /// Set and remove an app's secrets.
    Secrets,
    /// Create, list and revoke tokens.
    Tokens,
    /// Read and set the policies.
    Policies,
    /// Rotate the secrets' keys.
    RotateKeys,
    /// Read and verify the audit trail.
    Audit,
    /// Open a KV bucket.
    Kv,
    /// Publish to a topic.
    Publish,
    /// Call an actor type.
    Actor,
    /// Read a secret.
    Secret,
    /// Call an outbound origin.
    Outbound,
    /// Call another component.
    Invoke,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 18] = [
        Self::Read,
        Self::Deploy,
        Self::Traffic,
        Self::Rollback,
        Self::Delete,
        Self::DataRead,
        Self::DataWrite,
        Self::Secrets,
        Self::Tokens,
        Self::Policies,
        Self::RotateKeys,
        Self::Audit,
        Self::Kv,
        Self::Publish,
        Self::Actor,
        Self::Secret,
        Self::Outbound,
        Self::Invoke,
    ];

    /// Its name in policies (`Nimbus::Action::"data-read"`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Deploy => "deploy",
            Self::Traffic => "traffic",
            Self::Rollback => "rollback",
            Self::Delete => "delete",
            Self::DataRead => "data-read",
            Self::DataWrite => "data-write",
            Self::Secrets => "secrets",
            Self::Tokens => "tokens",
            Self::Policies => "policies",
            Self::RotateKeys => "rotate-keys",
            Self::Audit => "audit",
            Self::Kv => "kv",
            Self::Publish => "publish",
            Self::Actor => "actor",
            Self::Secret => "secret",
            Self::Outbound => "outbound",
            Self::Invoke => "invoke",
        }
    }

    /// The template a grant of this kind is linked from, for data-plane actions.
    pub(crate) fn grant_template(self) -> Option<&'static str> {
        Some(match self {
            Self::Kv => "nimbus.grant.kv",
            Self::Publish => "nimbus.grant.publish",
            Self::Actor => "nimbus.grant.actor",
            Self::Secret => "nimbus.grant.secret",
            Self::Outbound => "nimbus.grant.outbound",
            Self::Invoke => "nimbus.grant.invoke",
            _ => return None,
        })
    }

    pub(crate) fn uid(self) -> EntityUid {
        uid("Action", self.name())
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

impl std::str::FromStr for Action {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|a| a.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|a| a.name()).collect();
            format!("no action `{s}`; the actions are {}", names.join(", "))
        })
    }
}

/// What an action is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Resource {
    /// The platform as a whole.
    Server,
    /// An app.
    App(String),
    /// A KV bucket of `app`.
    Bucket {
        /// The app owning it.
        app: String,
        /// Its name.
        name: String,
    },
    /// A topic of `app`.
    Topic {
        /// The app owning it.
        app: String,
        /// Its name.
        name: String,
    },
    /// An actor type of `app`.
    ActorType {
        /// The app owning it.
        app: String,
        /// Its name.
        name: String,
    },
    /// A secret of `app`.
    Secret {
        /// The app owning it.
        app: String,
        /// Its name.
        name: String,
    },
    /// An outbound origin (`https://api.example.com`, or a pattern as granted).
    Origin(String),
    /// A component of `app` (to invoke).
    Component {
        /// The app owning it.
        app: String,
        /// Its name.
        name: String,
    },
}

impl Resource {
    /// How long its name is.
    pub(crate) fn name_len(&self) -> usize {
        match self {
            Self::Server => 0,
            Self::App(name) | Self::Origin(name) => name.len(),
            Self::Bucket { app, name }
            | Self::Topic { app, name }
            | Self::ActorType { app, name }
            | Self::Secret { app, name }
            | Self::Component { app, name } => app.len() + name.len(),
        }
    }

    pub(crate) fn uid(&self) -> EntityUid {
        match self {
            Self::Server => uid("Server", "nimbus"),
            Self::App(app) => uid("App", app),
            Self::Bucket { app, name } => owned_uid("Bucket", app, name),
            Self::Topic { app, name } => owned_uid("Topic", app, name),
            Self::ActorType { app, name } => owned_uid("ActorType", app, name),
            Self::Secret { app, name } => owned_uid("Secret", app, name),
            Self::Origin(url) => uid("Origin", url),
            Self::Component { app, name } => owned_uid("Component", app, name),
        }
    }

    /// Its entity and the app's it belongs to.
    pub(crate) fn entities(&self) -> Vec<Entity> {
        let named = |app: &str, name: &str| owned_entity(self.uid(), app, name);
        match self {
            Self::Server | Self::App(_) => vec![Entity::new_no_attrs(self.uid(), HashSet::new())],
            Self::Origin(url) => {
                let attrs = HashMap::from([("url".to_string(), RestrictedExpression::new_string(url.clone()))]);
                vec![Entity::new(self.uid(), attrs, HashSet::new()).expect("a string attribute")]
            }
            Self::Bucket { app, name }
            | Self::Topic { app, name }
            | Self::ActorType { app, name }
            | Self::Secret { app, name }
            | Self::Component { app, name } => named(app, name),
        }
    }
}

impl Principal {
    pub(crate) fn uid(&self) -> EntityUid {
        match self {
            Self::Token(t) => uid("Token", &t.id),
            Self::Component { app, name } => owned_uid("Component", app, name),
        }
    }

    /// Its entity and its parents'.
    pub(crate) fn entities(&self) -> Vec<Entity> {
        match self {
            Self::Component { app, name } => owned_entity(self.uid(), app, name),
            Self::Token(t) => {
                let groups: Vec<EntityUid> = t.groups.iter().map(|g| uid("Group", g)).collect();
                let user = t.user.as_ref().map(|u| uid("User", u));
                let set = |items: &[String]| {
                    RestrictedExpression::new_set(items.iter().cloned().map(RestrictedExpression::new_string))
                };
                let apps = RestrictedExpression::new_set(
                    t.apps.iter().map(|a| RestrictedExpression::new_entity_uid(uid("App", a))),
                );
                let attrs = HashMap::from([
                    ("role".to_string(), RestrictedExpression::new_string(t.role.clone())),
                    ("scopes".to_string(), set(&t.scopes)),
                    ("all_apps".to_string(), RestrictedExpression::new_bool(t.apps.is_empty())),
                    ("apps".to_string(), apps),
                ]);
                let parents: HashSet<EntityUid> = groups.iter().cloned().chain(user.clone()).collect();
                let mut entities = vec![Entity::new(self.uid(), attrs, parents).expect("literal attributes")];
                entities.extend(groups.iter().map(|g| Entity::new_no_attrs(g.clone(), HashSet::new())));
                entities.extend(user.map(|u| Entity::new_no_attrs(u, groups.iter().cloned().collect())));
                entities.extend(t.apps.iter().map(|a| Entity::new_no_attrs(uid("App", a), HashSet::new())));
                entities
            }
        }
    }

    /// The key its decisions are cached under: a token's attributes never change.
    pub(crate) fn cache_key(&self) -> String {
        match self {
            Self::Token(t) => format!("token\u{0}{}", t.id),
            Self::Component { app, name } => format!("component\u{0}{app}\u{0}{name}"),
        }
    }
}

/// The entity types of the schema, parsed once (parsing is Cedar's full parser).
static TYPES: std::sync::LazyLock<HashMap<&'static str, EntityTypeName>> = std::sync::LazyLock::new(|| {
    [
        "Action",
        "Group",
        "User",
        "Token",
        "Server",
        "App",
        "Component",
        "Bucket",
        "Topic",
        "ActorType",
        "Secret",
        "Origin",
    ]
    .into_iter()
    .map(|kind| (kind, format!("Nimbus::{kind}").parse().expect("a type of the schema")))
    .collect()
});

fn uid(kind: &str, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(TYPES[kind].clone(), EntityId::new(id))
}

/// A thing of `app`: its id is `APP/NAME`.
fn owned_uid(kind: &str, app: &str, name: &str) -> EntityUid {
    uid(kind, &format!("{app}/{name}"))
}

/// The entity of a thing of `app` named `name`, and the app's.
fn owned_entity(id: EntityUid, app: &str, name: &str) -> Vec<Entity> {
    let app_uid = uid("App", app);
    let attrs = HashMap::from([("name".to_string(), RestrictedExpression::new_string(name.to_string()))]);
    vec![
        Entity::new(id, attrs, HashSet::from([app_uid.clone()])).expect("a string attribute"),
        Entity::new_no_attrs(app_uid, HashSet::new()),
    ]
}
