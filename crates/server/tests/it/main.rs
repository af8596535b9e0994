//! The server's integration tests, as one binary so that linking stays cheap: each
//! module was a test binary of its own; `support` is the kit they share.

mod support;

mod api;
mod authz;
mod connections;
mod dashboard;
mod flag_lane;
mod grafana;
mod leader;
mod openapi;
mod promtool;
mod release_input;
mod signals;
mod store_errors;
mod upgrade;
mod webhooks;
