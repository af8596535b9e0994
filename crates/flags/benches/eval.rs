//! One evaluation each of a static flag, a targeting rule (`if` on `ends_with` of an
//! email) and a `fractional` split, on a parsed flag set and a prepared context, as a
//! relay evaluates them. Run with `cargo bench -p rollwave-flags --bench eval`.

use criterion::{Criterion, criterion_group, criterion_main};
use rollwave_flags::{Context, FlagSet};
use serde_json::json;
use std::hint::black_box;

const FLAGS: &str = r#"{
  "flags": {
    "static": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
    "targeted": {
      "state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
      "targeting": {"if": [{"ends_with": [{"var": "email"}, "@example.com"]}, "on", "off"]}
    },
    "split": {
      "state": "ENABLED", "variants": {"red": "r", "green": "g", "blue": "b"}, "defaultVariant": "red",
      "targeting": {"fractional": [{"cat": [{"var": "$flagd.flagKey"}, {"var": "targetingKey"}]}, ["red", 50], ["green", 25], ["blue", 25]]}
    }
  }
}"#;

fn bench(c: &mut Criterion) {
    let set = FlagSet::parse("bench.json", FLAGS).expect("the bench's flags parse");
    let ctx = Context::from_value(&json!({"targetingKey": "user-4711", "email": "ada@example.com", "plan": "pro"}))
        .expect("an object");
    assert_eq!(set.evaluate("targeted", &ctx).variant, Some("on"));
    assert!(set.evaluate("split", &ctx).variant.is_some());

    for key in ["static", "targeted", "split"] {
        c.bench_function(key, |b| b.iter(|| black_box(set.evaluate(black_box(key), black_box(&ctx)).variant)));
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
