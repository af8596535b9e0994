//! What rollwave needs of AWS, and no more: credentials from the standard chain
//! ([`credentials`]), SigV4-signed JSON calls retried with backoff ([`client`], signing by
//! the `aws-sigv4` crate), the Lambda operations a functions rollout makes
//! ([`lambda`]), and CloudWatch's `GetMetricData` for alarms ([`cloudwatch`]). Blocking: the server calls it from `spawn_blocking`.

pub mod client;
pub mod cloudwatch;
pub mod credentials;
pub mod lambda;

pub use client::{CallError, Client, Retry, endpoint};
pub use cloudwatch::{CloudWatch, MetricQuery};
pub use credentials::{Credentials, CredentialsError, Environment, ProcessEnvironment};
pub use lambda::{AliasState, AliasTarget, Lambda, Mapping, sqs_filters, target_for, version_of_artifact};
