//! What the control API sends and receives. The same types are stored (inside the records of
//! [`crate::store`]) and used by the CLI, so the wire format has one definition.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A token's role: the most its [`Scope`]s may be. Admins do everything; deployers deploy, move
/// traffic and use the data and secrets of their apps; viewers read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including tokens.
    Admin,
    /// Deploy, traffic, rollback and revision deletion, plus reads.
    Deployer,
    /// Reads only.
    #[default]
    Viewer,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Self::Admin => "admin",
            Self::Deployer => "deployer",
            Self::Viewer => "viewer",
        })
    }
}

impl Role {
    /// Every scope a token of this role may hold (and holds unless created with fewer).
    pub fn scopes(self) -> &'static [Scope] {
        use Scope::*;
        match self {
            Self::Admin => &[Read, Deploy, Traffic, DataRead, DataWrite, Secrets, Admin],
            Self::Deployer => &[Read, Deploy, Traffic, DataRead, DataWrite, Secrets],
            Self::Viewer => &[Read, DataRead],
        }
    }
}

/// One kind of call a token may make. Every API route needs exactly one (`whoami` none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// Read apps, revisions (manifests with `env` redacted), traffic, secrets' names, traces,
    /// metrics and logs.
    Read,
    /// Deploy revisions, delete revisions and apps, read manifests with their `env`.
    Deploy,
    /// Change traffic splits and tags, roll back.
    Traffic,
    /// Read an app's topics and KV buckets.
    DataRead,
    /// Publish to an app's topics, replay dead letters, write KV buckets; call its non-public
    /// topics and actor types through the gateway.
    DataWrite,
    /// Set and remove an app's secrets.
    Secrets,
    /// Create, list and revoke tokens; rotate the secrets' keys (never limited to apps).
    Admin,
}

impl Scope {
    /// Every scope, in order.
    pub const ALL: &'static [Scope] =
        &[Self::Read, Self::Deploy, Self::Traffic, Self::DataRead, Self::DataWrite, Self::Secrets, Self::Admin];

    /// Its name, as written in requests (`data-read`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Deploy => "deploy",
            Self::Traffic => "traffic",
            Self::DataRead => "data-read",
            Self::DataWrite => "data-write",
            Self::Secrets => "secrets",
            Self::Admin => "admin",
        }
    }

    /// The scope the built-in policies ask of a token for `action` (none for the actions of
    /// components).
    pub fn for_action(action: nimbus_security::policy::Action) -> Option<Self> {
        use nimbus_security::policy::Action as A;
        Some(match action {
            A::Read => Self::Read,
            A::Deploy | A::Delete => Self::Deploy,
            A::Traffic | A::Rollback => Self::Traffic,
            A::DataRead => Self::DataRead,
            A::DataWrite => Self::DataWrite,
            A::Secrets => Self::Secrets,
            A::Tokens | A::Policies | A::RotateKeys | A::Audit => Self::Admin,
            A::Kv | A::Publish | A::Actor | A::Secret | A::Outbound | A::Invoke => return None,
        })
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.iter().copied().find(|scope| scope.name() == s).ok_or_else(|| {
            let names: Vec<_> = Self::ALL.iter().map(|s| s.name()).collect();
            format!("unknown scope `{s}`; use one of {}", names.join(", "))
        })
    }
}

/// A revision and its share of the app's traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrafficTarget {
    /// Revision id.
    pub revision: String,
    /// Percent of requests without a tag, 0–100.
    pub percent: u8,
}

/// How an app's requests are spread over its revisions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Traffic {
    /// Percentages summing to 100.
    pub targets: Vec<TrafficTarget>,
    /// Tag → revision: requests with `x-nimbus-tag: TAG` (or to host `TAG.HOST`) reach that
    /// revision whatever its percent.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

impl Traffic {
    /// All traffic to one revision, keeping the tags.
    pub fn all_to(revision: &str, tags: BTreeMap<String, String>) -> Self {
        Self { targets: vec![TrafficTarget { revision: revision.to_string(), percent: 100 }], tags }
    }

    /// The percent a revision receives.
    pub fn percent_of(&self, revision: &str) -> u8 {
        self.targets.iter().filter(|t| t.revision == revision).map(|t| t.percent).sum()
    }

    /// Whether a revision receives requests: a share of the traffic or a tag.
    pub fn serves(&self, revision: &str) -> bool {
        self.percent_of(revision) > 0 || self.tags.values().any(|r| r == revision)
    }

    /// The revisions that receive requests (a share of the traffic or a tag), once each.
    pub fn served(&self) -> std::collections::BTreeSet<&str> {
        let shared = self.targets.iter().filter(|t| t.percent > 0).map(|t| t.revision.as_str());
        shared.chain(self.tags.values().map(String::as_str)).collect()
    }

    /// The tags naming a revision.
    pub fn tags_of(&self, revision: &str) -> Vec<String> {
        self.tags.iter().filter(|(_, r)| *r == revision).map(|(t, _)| t.clone()).collect()
    }
}

/// An app on the server.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AppInfo {
    /// `[app] name` of its manifest.
    pub name: String,
    /// Hosts it is bound to; empty: every host.
    pub hosts: Vec<String>,
    /// Current traffic.
    pub traffic: Traffic,
    /// Number of stored revisions.
    pub revisions: usize,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds of the last deploy or traffic change.
    pub updated_at: u64,
}

/// One component's artifact inside a revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ArtifactInfo {
    /// Component name.
    pub component: String,
    /// `sha256:` digest of the .wasm.
    pub digest: String,
    /// Bytes.
    pub size: u64,
}

/// An immutable revision of an app.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RevisionInfo {
    /// Content-derived id.
    pub id: String,
    /// The app.
    pub app: String,
    /// Unix seconds.
    pub created_at: u64,
    /// `[app] version` of its manifest, if any.
    pub version: Option<String>,
    /// Its HTTP routes.
    pub routes: Vec<String>,
    /// Its artifacts.
    pub artifacts: Vec<ArtifactInfo>,
    /// Percent of the app's traffic it receives now.
    pub percent: u8,
    /// Tags naming it now.
    pub tags: Vec<String>,
    /// Whether its components are loaded (revisions with traffic or a tag are; the others are
    /// loaded when traffic or a tag moves to them).
    pub loaded: bool,
    /// The registry artifact its content was first deployed from, pinned to its digest
    /// (`oci://REGISTRY/REPOSITORY@sha256:HEX`, from `nimbus deploy oci://REF`); absent when it
    /// was deployed from an app directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// A revision with its manifest.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RevisionDetail {
    /// The revision.
    #[serde(flatten)]
    pub info: RevisionInfo,
    /// The `nimbus.toml` it was deployed with; for a viewer, re-rendered without comments and
    /// with every `env` value replaced by `<redacted>`.
    pub manifest: String,
    /// Its dependencies' known advisories and its functions' imports against their grants, as
    /// checked at deploy (absent: the server did not check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supply: Option<crate::SupplyReport>,
}

/// Outcome of a deploy.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeployResult {
    /// The app.
    pub app: String,
    /// The revision id.
    pub revision: String,
    /// False when identical content was already deployed (the deploy is idempotent).
    pub created: bool,
    /// The app's traffic after the deploy.
    pub traffic: Traffic,
}

/// Body of a rollback.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// Send all traffic to this revision; without it, restore the traffic in effect before the
    /// last change.
    #[serde(default)]
    pub to: Option<String>,
}

/// An API token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    /// Public id (part of the token).
    pub id: String,
    /// What it is for.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Apps it is limited to; empty: all apps.
    pub apps: Vec<String>,
    /// What it may do (within its role); empty in records older than scopes: all of its role's.
    #[serde(default)]
    pub scopes: Vec<Scope>,
    /// Unix seconds.
    pub created_at: u64,
    /// When it stops being accepted, Unix seconds; never if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// When a call last used it, Unix seconds (updated at most once a minute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<u64>,
    /// The user it stands for, for policies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The groups it is in, for policies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

impl TokenInfo {
    /// Whether it may make calls of `scope` (on apps it is not limited away from).
    pub fn allows(&self, scope: Scope) -> bool {
        self.role.scopes().contains(&scope) && (self.scopes.is_empty() || self.scopes.contains(&scope))
    }

    /// The scopes it holds.
    pub fn effective_scopes(&self) -> Vec<Scope> {
        Scope::ALL.iter().copied().filter(|s| self.allows(*s)).collect()
    }
}

/// Body of a token creation.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// What it is for.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Apps it is limited to; empty or absent: all apps.
    #[serde(default)]
    pub apps: Vec<String>,
    /// What it may do, within its role; empty or absent: everything its role may.
    #[serde(default)]
    pub scopes: Vec<Scope>,
    /// Seconds until it expires; absent: never.
    #[serde(default)]
    pub ttl_s: Option<u64>,
    /// The user it stands for, as policies name it (`Nimbus::User::"alice"`).
    #[serde(default)]
    pub user: Option<String>,
    /// The groups it is in, as policies name them (`Nimbus::Group::"ops"`).
    #[serde(default)]
    pub groups: Vec<String>,
}

/// A freshly created token: the secret is shown this once and only its hash is kept.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    /// The bearer token.
    pub token: String,
    /// Its description.
    pub info: TokenInfo,
}

/// Who is calling.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Whoami {
    /// The token used, if any.
    pub token: Option<TokenInfo>,
    /// Whether the server runs in unauthenticated `--dev` mode.
    pub dev: bool,
}

/// Every error of the control API.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, with what caused it.
    pub error: String,
    /// The kind of error, stable across releases (`not_found`, `conflict`, `invalid_bundle`,
    /// ...): match on this, not on `error`. Empty from a server older than codes.
    #[serde(default)]
    pub code: String,
    /// HTTP status.
    pub status: u16,
    /// What to do about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Individual problems (e.g. every manifest error).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

/// A secret of an app, without its value (values are write-only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SecretInfo {
    /// Its name (`grants.secrets` names it).
    pub name: String,
    /// When it was last set, Unix seconds.
    pub updated_at: u64,
}

/// The secrets of an app.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SecretList {
    /// Each secret, by name.
    pub secrets: Vec<SecretInfo>,
}

/// The outcome of a key rotation.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RotatedKeys {
    /// The data key that seals new values from now on.
    pub data_key: u32,
    /// How many data keys there are (older ones still open the values sealed under them).
    pub data_keys: usize,
    /// Fingerprint of the master key every data key is now wrapped under.
    pub master_key: String,
}
