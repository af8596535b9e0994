//! The wire types of the HTTP/JSON API and their vocabulary, which live in
//! `rollwave-api` so that every process speaks them without linking the server.

pub use rollwave_api::metric::*;
pub use rollwave_api::vocab::{AlarmState, EventKind, HookStep, OperatorAction, Outcome, Purpose, Track};
pub use rollwave_api::wire::*;
