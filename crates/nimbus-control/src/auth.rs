//! API tokens and who may do what. A token is `nbt_ID_SECRET`: the id is public and names the
//! stored record, the 256-bit secret is shown once and only its SHA-256 is kept (a token is
//! random, so a plain hash is enough; no password stretching is needed). Comparison is
//! constant-time. A token has a role, the [`Scope`]s it may use within it, optionally the apps it
//! is limited to and an expiry; its last use is recorded (at most once a minute). Failed
//! authentications are rate-limited per client address ([`crate::auth`]'s `Failures`), so a
//! client guessing tokens is answered 429 before any more are checked.
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use nimbus_security::audit::{Event, Outcome};
use nimbus_security::policy::{self, Action, Decision, Resource};

use crate::error::ControlError;
use crate::model::{CreatedToken, NewToken, Role, Scope, TokenInfo};
use crate::policy::Authorizer;
use crate::store::{Store, TokenRecord};

const PREFIX: &str = "nbt_";
/// Last-use times are written at most this often per token (each write is a durable commit).
const TOUCH_EVERY_S: u64 = 60;

/// The authenticated caller of one request, and the policies that decide what it may do.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The token, or `None` in `--dev` mode without one.
    pub token: Option<TokenInfo>,
    /// The token as the policies see it (`dev`, with every scope, in `--dev` mode without one).
    as_policy: Arc<policy::Principal>,
    authorizer: Arc<Authorizer>,
    /// The API request it made, as the audit trail records it.
    request: Option<Arc<RequestLine>>,
}

/// An API request as the audit trail records it.
#[derive(Debug)]
struct RequestLine {
    /// `METHOD PATH` (the path without its query, at most [`RequestLine::MAX_PATH`] bytes).
    line: String,
    /// Whether the method changes something (not `GET`, `HEAD` or `OPTIONS`).
    mutating: bool,
    client: Option<IpAddr>,
}

impl RequestLine {
    const MAX_PATH: usize = 512;
}

impl Principal {
    /// The caller holding `token` (`None`: `--dev` mode without one).
    fn new(token: Option<TokenInfo>, authorizer: Arc<Authorizer>) -> Self {
        let as_policy = match &token {
            Some(t) => policy::TokenPrincipal {
                id: t.id.clone(),
                role: t.role.to_string(),
                scopes: t.effective_scopes().iter().map(|s| s.name().to_string()).collect(),
                apps: t.apps.clone(),
                user: t.user.clone(),
                groups: t.groups.clone(),
            },
            None => policy::TokenPrincipal {
                id: "dev".into(),
                role: Role::Admin.to_string(),
                scopes: Scope::ALL.iter().map(|s| s.name().to_string()).collect(),
                ..policy::TokenPrincipal::default()
            },
        };
        Self { token, as_policy: Arc::new(policy::Principal::Token(as_policy)), authorizer, request: None }
    }

    /// The caller making API request `parts` (changes it makes and its refusals are audited).
    pub(crate) fn at(mut self, parts: &http::request::Parts) -> Self {
        let path = parts.uri.path();
        let mut end = path.len().min(RequestLine::MAX_PATH);
        while !path.is_char_boundary(end) {
            end -= 1;
        }
        self.request = Some(Arc::new(RequestLine {
            line: format!("{} {}", parts.method, &path[..end]),
            mutating: !parts.method.is_safe(),
            client: parts.extensions.get::<ClientIp>().map(|c| c.0),
        }));
        self
    }

    /// Whether this caller may do `action` about `app` (`None`: not about one app), as the
    /// policies decide; a denial says why.
    /// A change an API request makes is recorded in the audit trail before this returns (and
    /// refused if it cannot be), and so is a refusal of a control-plane action.
    pub fn check(&self, action: Action, app: Option<&str>) -> Result<(), ControlError> {
        let decision = self.decide(action, app);
        if decision.allowed {
            // A deploy's first check, about no app yet, is followed by the one recorded.
            let first_of_deploy = action == Action::Deploy && app.is_none();
            if self.request.as_ref().is_some_and(|r| r.mutating) && !first_of_deploy {
                self.audit(action, app, Outcome::Allowed, None)?;
            }
            return Ok(());
        }
        let denied = self.denied(action, app, &decision);
        if !matches!(action, Action::DataRead | Action::DataWrite)
            && let Err(e) = self.audit(action, app, Outcome::Denied, Some(denied.to_string()))
        {
            tracing::error!(error = %nimbus_observe::report(&e), "cannot record a refusal in the audit log");
        }
        Err(denied)
    }

    fn decide(&self, action: Action, app: Option<&str>) -> Decision {
        let resource = app.map_or(Resource::Server, |a| Resource::App(a.to_string()));
        self.authorizer.decide(&self.as_policy, action, &resource)
    }

    /// Records the decision about `action` in the audit trail.
    fn audit(
        &self,
        action: Action,
        app: Option<&str>,
        outcome: Outcome,
        reason: Option<String>,
    ) -> Result<(), ControlError> {
        let request = self.request.as_deref();
        self.authorizer.record(Event {
            principal: self.id().to_string(),
            user: self.token.as_ref().and_then(|t| t.user.clone()),
            client: request.and_then(|r| r.client).map(|ip| ip.to_string()),
            action: action.name().to_string(),
            resource: app.map_or_else(|| "server".to_string(), |a| format!("app:{a}")),
            request: request.map(|r| r.line.clone()),
            outcome,
            reason,
            ..Event::default()
        })
    }

    /// Why `action` about `app` was denied.
    fn denied(&self, action: Action, app: Option<&str>, decision: &Decision) -> ControlError {
        let who = self.token.as_ref().map_or_else(|| "this --dev call".to_string(), |t| format!("token `{}`", t.id));
        let what = app.map_or_else(|| "on this server".to_string(), |a| format!("on app `{a}`"));
        if let Some(ids) = decision.forbidding() {
            return ControlError::Forbidden(format!(
                "{who} may not `{action}` {what}: forbidden by policy {ids} (see `nimbus policy list`)"
            ));
        }
        if let Some(why) = decision.errors.iter().find(|e| e.starts_with("the stored policies")) {
            return ControlError::Forbidden(why.clone());
        }
        let Some(token) = &self.token else {
            return ControlError::Forbidden(format!("{who} may not `{action}` {what}: no policy permits it"));
        };
        let scope = Scope::for_action(action);
        if let Some(scope) = scope.filter(|s| !token.allows(*s)) {
            let held: Vec<_> = token.effective_scopes().iter().map(|s| s.name()).collect();
            return ControlError::Forbidden(format!(
                "token `{}` (role {}) holds scopes [{}]; this needs scope `{scope}`",
                token.id,
                token.role,
                held.join(", ")
            ));
        }
        if scope == Some(Scope::Admin) && !token.apps.is_empty() {
            return ControlError::Forbidden(format!(
                "token `{}` is limited to apps [{}]; administering the server needs a token for every app",
                token.id,
                token.apps.join(", ")
            ));
        }
        if let Some(app) = app
            && !token.apps.is_empty()
            && !token.apps.iter().any(|a| a == app)
        {
            return ControlError::Forbidden(format!(
                "token `{}` is limited to apps [{}]; it may not touch app `{app}`",
                token.id,
                token.apps.join(", ")
            ));
        }
        ControlError::Forbidden(format!("{who} may not `{action}` {what}: no policy permits it"))
    }

    /// Whether this caller may read `app` (lists show it only then).
    pub fn sees(&self, app: &str) -> bool {
        self.may(Action::Read, Some(app))
    }

    /// Whether this caller may do `action` about `app`, to shape an answer (a list hiding what
    /// it may not see): nothing is refused, so nothing is audited.
    pub(crate) fn may(&self, action: Action, app: Option<&str>) -> bool {
        self.decide(action, app).allowed
    }

    /// The caller as the policies see it.
    pub(crate) fn as_policy(&self) -> &policy::Principal {
        &self.as_policy
    }

    /// Who the caller is, for records: its token id, or `dev`.
    pub(crate) fn id(&self) -> &str {
        self.token.as_ref().map_or("dev", |t| t.id.as_str())
    }
}

/// The address a request came from, put in its extensions by the listener ([`crate::ApiHandler`]).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

/// What a data handler authenticates: the request's headers and the address it came from.
#[derive(Debug)]
pub(crate) struct Caller {
    pub(crate) headers: http::HeaderMap,
    pub(crate) ip: Option<IpAddr>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self { headers: parts.headers.clone(), ip: parts.extensions.get::<ClientIp>().map(|c| c.0) })
    }
}

/// The bearer token of a request, if it sent one.
pub(crate) fn bearer(headers: &http::HeaderMap) -> Result<Option<&str>, ControlError> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else { return Ok(None) };
    value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(|t| Some(t.trim()))
        .ok_or_else(|| ControlError::Unauthorized("the Authorization header is not `Bearer TOKEN`".into()))
}

/// Who sent a request from `client`: its verified token, or nobody in `--dev` mode.
pub(crate) fn principal(
    headers: &http::HeaderMap,
    tokens: &Tokens,
    dev: bool,
    client: Option<IpAddr>,
) -> Result<Principal, ControlError> {
    match bearer(headers)? {
        Some(token) => Ok(tokens.principal(Some(tokens.verify_from(token, client)?))),
        None if dev => Ok(tokens.principal(None)),
        None => Err(ControlError::Unauthorized("this call needs an API token and none was sent".into())),
    }
}

/// Token issuing and checking over the store.
#[derive(Debug, Clone)]
pub struct Tokens {
    store: Arc<Store>,
    failures: Arc<Mutex<Failures>>,
    authorizer: Arc<Authorizer>,
}

/// The id of the first admin token (its secret is random like every token's).
const INITIAL_ADMIN_ID: &str = "000000000000";

impl Tokens {
    /// Tokens kept in `store`, their calls decided by `authorizer`.
    pub fn new(store: Arc<Store>, authorizer: Arc<Authorizer>) -> Self {
        Self { store, failures: Arc::default(), authorizer }
    }

    /// The policies deciding what tokens may do.
    pub fn authorizer(&self) -> &Arc<Authorizer> {
        &self.authorizer
    }

    /// The caller holding `token` (`None`: a `--dev` call without one), checked by the policies.
    pub fn principal(&self, token: Option<TokenInfo>) -> Principal {
        Principal::new(token, self.authorizer.clone())
    }

    /// Creates the first admin token if there is no token at all; returns it (to print once).
    /// It has a fixed id, so of several nodes of a cluster starting at once on an empty cluster
    /// exactly one creates it (the others' create loses the compare-and-set and prints none).
    pub fn bootstrap(&self) -> Result<Option<CreatedToken>, ControlError> {
        if !self.store.tokens()?.is_empty() {
            return Ok(None);
        }
        let new = NewToken { name: "initial admin".into(), role: Role::Admin, ..NewToken::default() };
        match self.issue(&new, Some(INITIAL_ADMIN_ID)) {
            Ok(created) => Ok(Some(created)),
            Err(ControlError::Store(crate::store::StoreError::Conflict { .. })) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Issues a token.
    pub fn create(&self, new: &NewToken) -> Result<CreatedToken, ControlError> {
        self.issue(new, None)
    }

    /// Issues a token with id `id`, or a random one.
    fn issue(&self, new: &NewToken, id: Option<&str>) -> Result<CreatedToken, ControlError> {
        if new.name.trim().is_empty() || new.name.len() > 200 {
            return Err(ControlError::bad_request(
                "a token needs a name of 1 to 200 characters",
                "say what it is for, e.g. `ci-deploy`",
            ));
        }
        if let Some(scope) = new.scopes.iter().find(|s| !new.role.scopes().contains(s)) {
            let allowed: Vec<_> = new.role.scopes().iter().map(|s| s.name()).collect();
            return Err(ControlError::bad_request(
                format!("a {} token cannot hold scope `{scope}`", new.role),
                format!("a {} token may hold [{}]; choose a role that allows it", new.role, allowed.join(", ")),
            ));
        }
        if let Some(bad) = new.user.iter().chain(&new.groups).find(|n| !principal_name(n)) {
            return Err(ControlError::bad_request(
                format!("`{bad}` is not a user or group name"),
                "use 1 to 100 letters, digits, `.`, `_`, `-` or `@`",
            ));
        }
        if new.ttl_s == Some(0) {
            return Err(ControlError::bad_request("a token's ttl must be positive", "e.g. `--ttl 30d`"));
        }
        let mut random_id = [0u8; 6];
        let mut secret = [0u8; 32];
        getrandom::fill(&mut random_id)
            .and_then(|()| getrandom::fill(&mut secret))
            .map_err(|e| ControlError::internal("drawing random bytes for the token", e))?;
        let id = id.map_or_else(|| hex::encode(random_id), str::to_string);
        let secret = hex::encode(secret);
        let now = crate::platform::now();
        let mut scopes = if new.scopes.is_empty() { new.role.scopes().to_vec() } else { new.scopes.clone() };
        scopes.sort();
        scopes.dedup();
        let info = TokenInfo {
            id: id.clone(),
            name: new.name.trim().to_string(),
            role: new.role,
            apps: new.apps.clone(),
            scopes,
            created_at: now,
            expires_at: new.ttl_s.map(|ttl| now.saturating_add(ttl)),
            last_used_at: None,
            user: new.user.clone(),
            groups: new.groups.clone(),
        };
        self.store.put_token(&TokenRecord { info: info.clone(), secret_sha256: hash(&secret) })?;
        Ok(CreatedToken { token: format!("{PREFIX}{id}_{secret}"), info })
    }

    /// The token a bearer string stands for.
    pub fn verify(&self, bearer: &str) -> Result<TokenInfo, ControlError> {
        self.verify_from(bearer, None)
    }

    /// The token a bearer string sent from `client` stands for. A client that sent unknown
    /// tokens too often lately is refused (429) before the token is looked at.
    pub fn verify_from(&self, bearer: &str, client: Option<IpAddr>) -> Result<TokenInfo, ControlError> {
        if let Some(ip) = client {
            self.failures.lock().expect("failures lock").admit(ip)?;
        }
        let record = match self.lookup(bearer) {
            Ok(record) => record,
            Err(e) => {
                if let (ControlError::Unauthorized(_), Some(ip)) = (&e, client) {
                    self.failures.lock().expect("failures lock").record(ip);
                }
                return Err(e);
            }
        };
        let (id, now) = (&record.info.id, crate::platform::now());
        if let Some(expired) = record.info.expires_at.filter(|at| *at <= now) {
            return Err(ControlError::Unauthorized(format!(
                "token `{id}` expired at {}; ask an admin for a new one (`nimbus tokens create --ttl ...`)",
                humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(expired))
            )));
        }
        if record.info.last_used_at.is_none_or(|at| now.saturating_sub(at) >= TOUCH_EVERY_S)
            && let Err(e) = self.store.touch_token(id, now)
        {
            tracing::warn!(token = %id, error = %nimbus_observe::report(&e), "cannot record the token's last use");
        }
        Ok(record.info)
    }

    /// The stored token whose secret `bearer` holds.
    fn lookup(&self, bearer: &str) -> Result<TokenRecord, ControlError> {
        let unknown = || ControlError::Unauthorized("the token is not valid (unknown, revoked or mistyped)".into());
        let (id, secret) = bearer.strip_prefix(PREFIX).and_then(|t| t.split_once('_')).ok_or_else(unknown)?;
        let record = self.store.token(id)?.ok_or_else(unknown)?;
        if bool::from(hash(secret).as_bytes().ct_eq(record.secret_sha256.as_bytes())) {
            Ok(record)
        } else {
            Err(unknown())
        }
    }

    /// Every token's description.
    pub fn list(&self) -> Result<Vec<TokenInfo>, ControlError> {
        Ok(self.store.tokens()?.into_iter().map(|t| t.info).collect())
    }

    /// Revokes a token.
    pub fn revoke(&self, id: &str) -> Result<(), ControlError> {
        if self.store.delete_token(id)? { Ok(()) } else { Err(ControlError::NotFound(format!("no token `{id}`"))) }
    }
}

/// Whether `name` may name a user or a group.
fn principal_name(name: &str) -> bool {
    (1..=100).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
}

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Failed authentications per client address: a bucket of [`Failures::BURST`] failures that
/// refills one every [`Failures::REFILL`]; an empty bucket refuses the client until it refills.
/// IPv6 clients count per /64 (one host usually owns one). At most [`Failures::MAX_CLIENTS`]
/// addresses are tracked; full buckets are forgotten first.
#[derive(Debug, Default)]
struct Failures {
    clients: HashMap<IpAddr, (f64, Instant)>,
}

impl Failures {
    const BURST: f64 = 10.0;
    const REFILL: Duration = Duration::from_secs(6);
    const MAX_CLIENTS: usize = 10_000;

    fn key(ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
            IpAddr::V6(v6) => IpAddr::V4(v6.to_ipv4_mapped().expect("mapped")),
            v4 => v4,
        }
    }

    /// The bucket of `ip` now, refilled for the time since it was last seen.
    fn level(&self, ip: IpAddr, now: Instant) -> f64 {
        self.clients.get(&Self::key(ip)).map_or(Self::BURST, |(level, at)| {
            (level + now.duration_since(*at).as_secs_f64() / Self::REFILL.as_secs_f64()).min(Self::BURST)
        })
    }

    fn admit(&self, ip: IpAddr) -> Result<(), ControlError> {
        let level = self.level(ip, Instant::now());
        if level >= 1.0 {
            return Ok(());
        }
        let wait = ((1.0 - level) * Self::REFILL.as_secs_f64()).ceil().max(1.0) as u64;
        Err(ControlError::TooManyFailures { retry_after_s: wait })
    }

    fn record(&mut self, ip: IpAddr) {
        let now = Instant::now();
        let level = self.level(ip, now) - 1.0;
        if self.clients.len() >= Self::MAX_CLIENTS {
            self.clients.retain(|_, (l, at)| {
                *l + now.duration_since(*at).as_secs_f64() / Self::REFILL.as_secs_f64() < Self::BURST
            });
            if self.clients.len() >= Self::MAX_CLIENTS
                && let Some(evict) = self.clients.keys().next().copied()
            {
                self.clients.remove(&evict);
            }
        }
        self.clients.insert(Self::key(ip), (level.max(0.0), now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_that_keeps_failing_is_refused_and_others_are_not() {
        let mut f = Failures::default();
        let (bad, good): (IpAddr, IpAddr) = ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());
        for _ in 0..10 {
            f.admit(bad).unwrap();
            f.record(bad);
        }
        match f.admit(bad) {
            Err(ControlError::TooManyFailures { retry_after_s }) => assert!((1..=6).contains(&retry_after_s)),
            other => panic!("expected a refusal, got {other:?}"),
        }
        f.admit(good).unwrap();
        // One /64 is one client.
        let (a, b): (IpAddr, IpAddr) = ("2001:db8::1".parse().unwrap(), "2001:db8::2".parse().unwrap());
        for _ in 0..10 {
            f.record(a);
        }
        assert!(f.admit(b).is_err());
    }
}
