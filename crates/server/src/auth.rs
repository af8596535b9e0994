//! Bearer tokens and roles. Only a token's SHA-256 is stored; the secret is shown once.

use crate::error::ApiError;
use axum::http::{HeaderMap, StatusCode};
use rollwave_store::{Store, TokenRow, hash_secret};
use std::collections::HashMap;
use std::sync::Mutex;

/// What a token may do. `viewer` < `deployer` < `approver` < `admin`; `agent` may only
/// register and report for its own host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Agent,
    Viewer,
    Deployer,
    Approver,
    Admin,
}

impl Role {
    pub const NAMES: [&'static str; 5] = ["viewer", "deployer", "approver", "admin", "agent"];

    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "viewer" => Role::Viewer,
            "deployer" => Role::Deployer,
            "approver" => Role::Approver,
            "admin" => Role::Admin,
            "agent" => Role::Agent,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Deployer => "deployer",
            Role::Approver => "approver",
            Role::Admin => "admin",
            Role::Agent => "agent",
        }
    }
}

/// Who is asking.
#[derive(Clone, Debug)]
pub struct Actor {
    pub name: String,
    pub role: Role,
    /// For agents: `service/environment/host`.
    pub host: Option<String>,
}

impl Actor {
    /// At least `role` among the human roles; agents have none of them.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role != Role::Agent && self.role >= role {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this needs the {} role; token {:?} has {}", role.as_str(), self.name, self.role.as_str()),
            ))
        }
    }

    /// An admin, or the agent of exactly this host.
    pub fn require_host(&self, host: &str) -> Result<(), ApiError> {
        match (self.role, &self.host) {
            (Role::Admin, _) => Ok(()),
            (Role::Agent, Some(own)) if own == host => Ok(()),
            _ => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("token {:?} may not speak for host {host}", self.name),
            )),
        }
    }
}

/// A fresh secret: `rw_` and 32 random bytes in hex.
pub fn new_secret() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::internal(format!("no randomness: {e}")))?;
    Ok(format!("rw_{}", hex::encode(bytes)))
}

/// Looks tokens up, remembering the answers (tokens are never edited once made).
#[derive(Default)]
pub struct Tokens {
    cache: Mutex<HashMap<String, TokenRow>>,
}

impl Tokens {
    pub async fn authenticate(&self, store: &Store, headers: &HeaderMap) -> Result<Actor, ApiError> {
        let unauthorized = |why: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", why.to_owned());
        let header = headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| unauthorized("this needs a token: send Authorization: Bearer TOKEN"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(|| unauthorized("the Authorization header must be `Bearer TOKEN`"))?;
        let hash = hash_secret(token);
        let cached = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&hash).cloned();
        let row = match cached {
            Some(row) => row,
            None => {
                let row = store.find_token(&hash).await?.ok_or_else(|| unauthorized("unknown token"))?;
                self.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(hash, row.clone());
                row
            }
        };
        let role = Role::parse(&row.role).ok_or_else(|| unauthorized("the token has an unknown role"))?;
        Ok(Actor { name: row.name, role, host: row.host })
    }
}
