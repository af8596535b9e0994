//! A small, fast, per-thread random number generator for choosing hosts and making up
//! sticky keys. Not for secrets: a key only spreads clients over buckets.

use std::cell::Cell;
use std::hash::{BuildHasher, RandomState};

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

/// A seed from the standard library's randomly keyed hasher (itself seeded by the OS).
fn seed() -> u64 {
    RandomState::new().hash_one(0x5eed_u64) | 1
}

/// The next number of this thread's xorshift64* sequence.
pub fn next_u64() -> u64 {
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}
