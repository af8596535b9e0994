//! The language every rollwave process speaks with the control plane: the wire types
//! of the HTTP/JSON API ([`wire`]), the closed vocabulary they are written in
//! ([`vocab`], [`metric`]) and a blocking [`client`].
//!
//! Domain types never cross the wire: the server converts them to these at its edge, so
//! the API stays stable while the core changes. Every enum here serializes to the exact
//! string the wire has always carried (`tests/golden` pins them). Agents, routers, the
//! demo and the CLI link this crate, not the server.

pub mod client;
pub mod metric;
pub mod tls;
pub mod vocab;
pub mod wire;

pub use client::{Client, ClientError};
pub use metric::{Builtin, GAUGES, Gauge, LATENCY_BOUNDS_MS, LATENCY_BUCKETS, MetricRef, MonitorField};
pub use vocab::{
    Actor, AlarmState, EventKind, HookStep, Lane, MachineComponent, OperatorAction, Outcome, Purpose, Role, Track,
};
pub use wire::*;
