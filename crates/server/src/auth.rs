//! Who acts: a machine component of the control plane, or a bearer token with its id,
//! name, role and scope. Only a token's SHA-256 is stored; the secret is shown once.
//!
//! The types here are plain data (serde, no HTTP) so that every process can share them.

use crate::error::ApiError;
use axum::http::{HeaderMap, StatusCode};
use rollwave_store::{Store, TokenRow, hash_secret};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

pub use rollwave_api::Role;

pub use rollwave_api::MachineComponent;

/// What a token may speak for beyond its role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Scope {
    /// Every service (people's tokens).
    Global,
    /// One host: an agent's token.
    Host { service: String, environment: String, host: String },
    /// One region: a router's token.
    Region { service: String, environment: String, region: String },
}

impl Scope {
    /// `service/environment/NAME`, three parts, none empty.
    fn parts(text: &str) -> Option<(String, String, String)> {
        let mut it = text.split('/');
        let (s, e, n) = (it.next()?, it.next()?, it.next()?);
        let ok =
            it.next().is_none() && [s, e, n].iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_graphic()));
        ok.then(|| (s.to_owned(), e.to_owned(), n.to_owned()))
    }

    pub fn host(text: &str) -> Option<Scope> {
        Scope::parts(text).map(|(service, environment, host)| Scope::Host { service, environment, host })
    }

    pub fn region(text: &str) -> Option<Scope> {
        Scope::parts(text).map(|(service, environment, region)| Scope::Region { service, environment, region })
    }

    fn of_row(row: &TokenRow, role: Role) -> Option<Scope> {
        match role {
            Role::Agent => Scope::host(row.host.as_deref()?),
            Role::Router => Scope::region(row.region.as_deref()?),
            Role::Viewer | Role::Deployer | Role::Approver | Role::Admin => Some(Scope::Global),
        }
    }
}

/// A token that authenticated: who is asking over HTTP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub scope: Scope,
}

/// Who caused an input: a machine component or a token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Actor {
    Machine(MachineComponent),
    Token(Caller),
}

impl Actor {
    /// As it reaches logs and the audit: the component's name or the token's name.
    pub fn name(&self) -> &str {
        match self {
            Actor::Machine(m) => m.as_str(),
            Actor::Token(c) => &c.name,
        }
    }

    pub fn token_id(&self) -> Option<i64> {
        match self {
            Actor::Machine(_) => None,
            Actor::Token(c) => Some(c.id),
        }
    }
}

/// The actor as the audit names it, without the token's role and scope.
impl From<&Actor> for rollwave_api::Actor {
    fn from(actor: &Actor) -> Self {
        match actor {
            Actor::Machine(m) => rollwave_api::Actor::Machine(*m),
            Actor::Token(c) => rollwave_api::Actor::Token { id: c.id, name: c.name.clone() },
        }
    }
}

fn forbidden(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

impl Caller {
    /// At least `role` among the people's roles; machine tokens have none of them.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role.is_person() && self.role >= role {
            Ok(())
        } else {
            Err(forbidden(format!(
                "this needs the {} role; token {:?} has {}",
                role.as_str(),
                self.name,
                self.role.as_str()
            )))
        }
    }

    /// An admin, or the agent of exactly this host.
    pub fn require_host(&self, service: &str, environment: &str, host: &str) -> Result<(), ApiError> {
        match (&self.role, &self.scope) {
            (Role::Admin, _) => Ok(()),
            (Role::Agent, Scope::Host { service: s, environment: e, host: h })
                if s == service && e == environment && h == host =>
            {
                Ok(())
            }
            _ => Err(forbidden(format!("token {:?} may not speak for host {service}/{environment}/{host}", self.name))),
        }
    }

    /// The router of exactly this region.
    pub fn is_router_of(&self, service: &str, environment: &str, region: &str) -> bool {
        matches!((&self.role, &self.scope), (Role::Router, Scope::Region { service: s, environment: e, region: r })
            if s == service && e == environment && r == region)
    }
}

/// A token name: `[a-z0-9][a-z0-9._-]{0,63}`, and not the name of a machine component.
pub fn check_token_name(name: &str) -> Result<(), String> {
    let grammar = name.len() <= 64
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if !grammar {
        return Err(format!(
            "token name {name:?} must be 1 to 64 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit"
        ));
    }
    if MachineComponent::ALL.iter().any(|m| m.as_str() == name) {
        return Err(format!("token name {name:?} is reserved for a part of the control plane"));
    }
    Ok(())
}

/// A fresh secret: `rw_` and 32 random bytes in hex.
pub fn new_secret() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::internal(format!("no randomness: {e}")))?;
    Ok(format!("rw_{}", hex::encode(bytes)))
}

/// How long a token looked up is believed before it is read again: a revoked, expired or
/// changed token is refused on every replica within this.
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(1);

/// Looks tokens up, remembering each answer for [`TOKEN_CACHE_TTL`], and notes when each
/// was last used (written by [`Tokens::flush_last_used`] in batches).
pub struct Tokens {
    /// Each token's row, with when it was read (ms by `clock`).
    cache: Mutex<HashMap<String, (TokenRow, i64)>>,
    used: Mutex<HashMap<i64, i64>>,
    /// Expiry, the cache's age and last-used times read the server's clock.
    clock: std::sync::Arc<dyn crate::clock::Clock>,
}

impl Default for Tokens {
    fn default() -> Self {
        Self::with_clock(crate::clock::system())
    }
}

fn unauthorized(why: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", why.to_owned())
}

/// The bearer token of a request, if it sent an Authorization header.
pub fn bearer(headers: &HeaderMap) -> Option<Result<&str, ApiError>> {
    let header = headers.get(axum::http::header::AUTHORIZATION)?;
    Some(
        header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(|| unauthorized("the Authorization header must be `Bearer TOKEN`")),
    )
}

impl Tokens {
    pub fn with_clock(clock: std::sync::Arc<dyn crate::clock::Clock>) -> Self {
        Tokens { cache: Mutex::default(), used: Mutex::default(), clock }
    }

    pub async fn authenticate(&self, store: &Store, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let token =
            bearer(headers).ok_or_else(|| unauthorized("this needs a token: send Authorization: Bearer TOKEN"))??;
        self.authenticate_secret(store, token).await
    }

    pub async fn authenticate_secret(&self, store: &Store, secret: &str) -> Result<Caller, ApiError> {
        let hash = hash_secret(secret);
        let ttl = i64::try_from(TOKEN_CACHE_TTL.as_millis()).unwrap_or(i64::MAX);
        let fresh = |now: i64, at: i64| now - at < ttl;
        let read_at = self.clock.now_ms();
        let cached = {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.get(&hash).filter(|(_, at)| fresh(read_at, *at)).map(|(row, _)| row.clone())
        };
        let row = match cached {
            Some(row) => row,
            None => {
                let row = store.find_token(&hash).await?.ok_or_else(|| unauthorized("unknown token"))?;
                let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                cache.retain(|_, (_, at)| fresh(read_at, *at));
                cache.insert(hash, (row.clone(), read_at));
                row
            }
        };
        let now = self.clock.now_ms();
        if row.revoked_ms.is_some() {
            return Err(unauthorized("this token was revoked"));
        }
        if row.expires_ms.is_some_and(|at| at <= now) {
            return Err(unauthorized("this token has expired"));
        }
        let role = Role::parse(&row.role).ok_or_else(|| unauthorized("the token has an unknown role"))?;
        let scope = Scope::of_row(&row, role).ok_or_else(|| unauthorized("the token's scope is not readable"))?;
        self.used.lock().unwrap_or_else(|p| p.into_inner()).insert(row.id, now);
        Ok(Caller { id: row.id, name: row.name, role, scope })
    }

    /// Forgets what this replica remembers of a token (after revoking it here).
    pub fn forget(&self, id: i64) {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, (row, _)| row.id != id);
    }

    /// Writes the last-used times noted since the last flush, in one batch.
    pub async fn flush_last_used(&self, store: &Store) {
        let used: Vec<(i64, i64)> =
            std::mem::take(&mut *self.used.lock().unwrap_or_else(|p| p.into_inner())).into_iter().collect();
        if !used.is_empty()
            && let Err(e) = store.touch_tokens(&used).await
        {
            tracing::warn!("the tokens' last-used times could not be written: {e}");
        }
    }
}

/// How often last-used times are written.
pub const LAST_USED_FLUSH: Duration = Duration::from_secs(5);
