//! End-to-end tests: the real `rollwave` binary and its real children (servers, agents,
//! routers, sample apps) over real sockets and files. One test binary, so it links once
//! and its tests run side by side.

mod kit;

mod agents;
mod cli;
mod connections;
mod dashboard;
mod demo;
mod exec;
mod flag_release;
mod flags;
mod flags_cli;
mod functions;
mod guide;
mod logging;
mod prometheus;
mod replicas;
mod router;
mod signals;
