//! `rollwave demo` and its pieces. [`sample_app`] is the service the demo deploys: each
//! version answers with its name and can be told to fail a share of requests or to be
//! slow, so that a bad release is bad in a way alarms can see. [`traffic`] is sticky
//! users; [`world`] starts a server, agents and routers as real processes; [`run`] is
//! the demo's story, and [`progress`] its live view in the terminal.

pub mod progress;
pub mod run;
pub mod sample_app;
pub mod traffic;
pub mod world;
