//! The pieces of `rollwave demo`. [`sample_app`] is the service the demo deploys: each
//! version answers with its name and can be told to fail a share of requests or to be
//! slow, so that a bad release is bad in a way alarms can see.

pub mod sample_app;
pub mod traffic;
