//! What rollwave needs of AWS, and no more: credentials from the standard chain
//! ([`credentials`]), SigV4-signed JSON calls retried with backoff ([`client`], signing by
//! the `aws-sigv4` crate), and the Lambda operations a functions rollout makes
//! ([`lambda`]). Blocking: the server calls it from `spawn_blocking`.

pub mod client;
pub mod credentials;
pub mod lambda;

pub use client::{CallError, Client, Retry, endpoint};
pub use credentials::{Credentials, CredentialsError, Environment, ProcessEnvironment};
pub use lambda::{AliasState, AliasTarget, Lambda, target_for, version_of_artifact};
