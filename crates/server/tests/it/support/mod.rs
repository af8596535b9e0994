//! The kit the tests share: the server's own, `rollwave_server::testing`, which the
//! agent's tests use too.

pub use rollwave_server::testing::*;
