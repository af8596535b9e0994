//! The blocking client of the API, from `rollwave-api`.

pub use rollwave_api::client::*;
