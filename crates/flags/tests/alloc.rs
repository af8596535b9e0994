//! Evaluating a static flag, a simple rule and a `fractional` split (hashing
//! `{"cat": [flag key, targeting key]}`) allocates nothing: counted by a global
//! allocator, in a test binary of its own so that no other test allocates meanwhile.

use rollwave_flags::{Context, FlagSet};
use serde_json::json;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: the layout is passed on unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn static_flags_simple_rules_and_splits_evaluate_without_allocating() {
    let set = FlagSet::parse(
        "f.json",
        r#"{"flags": {
          "static": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
          "rule": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
            "targeting": {"if": [{"and": [{"ends_with": [{"var": "user.email"}, "@example.com"]},
                                          {">=": [{"var": "age"}, 18]}, {"in": [{"var": "plan"}, ["pro", "team"]]},
                                          {"sem_ver": [{"var": "version"}, ">=", "1.2.0"]}]}, "on", "off"]}},
          "split": {"state": "ENABLED", "variants": {"a": 1, "b": 2}, "defaultVariant": "a",
            "targeting": {"fractional": [{"cat": [{"var": "$flagd.flagKey"}, {"var": "targetingKey"}]}, ["a", 50], ["b", 50]]}},
          "shorthand": {"state": "ENABLED", "variants": {"a": 1, "b": 2}, "defaultVariant": "a",
            "targeting": {"fractional": [["a", 50], ["b", 50]]}}
        }}"#,
    )
    .unwrap();
    let ctx = Context::from_value(&json!({
        "targetingKey": "user-1", "user": {"email": "ada@example.com"}, "age": 30, "plan": "pro", "version": "1.4.0"
    }))
    .unwrap();
    for key in ["static", "rule", "split", "shorthand"] {
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        let e = set.evaluate(key, &ctx);
        let after = ALLOCATIONS.load(Ordering::SeqCst);
        assert!(e.variant.is_some() && e.error.is_none(), "{key}: {e:?}");
        assert_eq!(after - before, 0, "{key} allocated");
    }
    assert_eq!(set.evaluate("rule", &ctx).variant, Some("on"));
}
