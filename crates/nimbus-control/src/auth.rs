//! API tokens and who may do what. A token is `nbt_ID_SECRET`: the id is public and names the
//! stored record, the 256-bit secret is shown once and only its SHA-256 is kept (a token is
//! random, so a plain hash is enough; no password stretching is needed). Comparison is
//! constant-time.
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ControlError;
use crate::model::{CreatedToken, NewToken, Role, TokenInfo};
use crate::store::{Store, TokenRecord};

const PREFIX: &str = "nbt_";

/// What a caller wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read apps, revisions and traffic.
    Read,
    /// Deploy, change traffic, roll back, delete revisions.
    Write,
    /// Create, list and revoke tokens.
    ManageTokens,
}

/// The authenticated caller of one request.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The token, or `None` in `--dev` mode without one.
    pub token: Option<TokenInfo>,
}

impl Principal {
    /// Whether this caller may do `action` on `app` (`None`: not about one app).
    pub fn check(&self, action: Action, app: Option<&str>) -> Result<(), ControlError> {
        let Some(token) = &self.token else { return Ok(()) };
        let needed = match action {
            Action::Read => Role::Viewer,
            Action::Write => Role::Deployer,
            Action::ManageTokens => Role::Admin,
        };
        if token.role > needed {
            return Err(ControlError::Forbidden(format!(
                "token `{}` has role {}; this needs role {needed} or higher",
                token.id, token.role
            )));
        }
        if let Some(app) = app
            && !self.sees(app)
        {
            return Err(ControlError::Forbidden(format!(
                "token `{}` is limited to apps [{}]; it may not touch app `{app}`",
                token.id,
                token.apps.join(", ")
            )));
        }
        Ok(())
    }

    /// Whether the token's app scope covers `app`.
    pub fn sees(&self, app: &str) -> bool {
        self.token.as_ref().is_none_or(|t| t.apps.is_empty() || t.apps.iter().any(|a| a == app))
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

/// Who sent a request: its verified token, or nobody in `--dev` mode.
pub(crate) fn principal(headers: &http::HeaderMap, tokens: &Tokens, dev: bool) -> Result<Principal, ControlError> {
    match bearer(headers)? {
        Some(token) => Ok(Principal { token: Some(tokens.verify(token)?) }),
        None if dev => Ok(Principal { token: None }),
        None => Err(ControlError::Unauthorized("this call needs an API token and none was sent".into())),
    }
}

/// Token issuing and checking over the store.
#[derive(Debug, Clone)]
pub struct Tokens {
    store: Arc<Store>,
}

impl Tokens {
    /// Tokens kept in `store`.
    pub fn new(store: Arc<Store>) -> Self {
        Self { store }
    }

    /// Creates the first admin token if there is no token at all; returns it (to print once).
    pub fn bootstrap(&self) -> Result<Option<CreatedToken>, ControlError> {
        if !self.store.tokens()?.is_empty() {
            return Ok(None);
        }
        let new = NewToken { name: "initial admin".into(), role: Role::Admin, apps: Vec::new() };
        self.create(&new).map(Some)
    }

    /// Issues a token.
    pub fn create(&self, new: &NewToken) -> Result<CreatedToken, ControlError> {
        if new.name.trim().is_empty() || new.name.len() > 200 {
            return Err(ControlError::bad_request(
                "a token needs a name of 1 to 200 characters",
                "say what it is for, e.g. `ci-deploy`",
            ));
        }
        let mut id = [0u8; 6];
        let mut secret = [0u8; 32];
        getrandom::fill(&mut id)
            .and_then(|()| getrandom::fill(&mut secret))
            .map_err(|e| ControlError::internal("drawing random bytes for the token", e))?;
        let id = hex::encode(id);
        let secret = hex::encode(secret);
        let info = TokenInfo {
            id: id.clone(),
            name: new.name.trim().to_string(),
            role: new.role,
            apps: new.apps.clone(),
            created_at: crate::platform::now(),
        };
        self.store.put_token(&TokenRecord { info: info.clone(), secret_sha256: hash(&secret) })?;
        Ok(CreatedToken { token: format!("{PREFIX}{id}_{secret}"), info })
    }

    /// The token a bearer string stands for.
    pub fn verify(&self, bearer: &str) -> Result<TokenInfo, ControlError> {
        let unknown = || ControlError::Unauthorized("the token is not valid (unknown, revoked or mistyped)".into());
        let (id, secret) = bearer.strip_prefix(PREFIX).and_then(|t| t.split_once('_')).ok_or_else(unknown)?;
        let record = self.store.token(id)?.ok_or_else(unknown)?;
        if bool::from(hash(secret).as_bytes().ct_eq(record.secret_sha256.as_bytes())) {
            Ok(record.info)
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

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}
