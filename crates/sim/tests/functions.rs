//! The simulator runs a pipeline of functions (`examples/functions.yaml`): its regions'
//! slices of invocations are served, judged and rolled back like hosts.

use rollwave_core::plan::Plan;
use rollwave_sim::{Options, parse_scenario, simulate};
use std::sync::Arc;

const PIPELINE: &str = include_str!("../../../examples/functions.yaml");
const BAD: &str = include_str!("../../../examples/bad-function.yaml");

#[test]
fn a_good_version_reaches_every_step_and_a_failing_one_is_rolled_back_where_it_failed() {
    let manifest = rollwave_manifest::parse_manifest("functions.yaml", PIPELINE).unwrap();
    let scenario = parse_scenario("bad-function.yaml", BAD, &manifest).unwrap();
    let report = simulate(Arc::new(Plan::new(manifest)), &scenario, Options::default()).unwrap();
    let v2 = &report.releases[0];
    assert_eq!((v2.version.as_str(), v2.outcome), ("v2", "completed"), "{:?}", v2.reason);
    assert!(v2.reached.iter().any(|s| s == "prod/wave-3"), "{:?}", v2.reached);
    // The one-box and every step of each production region, in order.
    let us_east_2: Vec<&str> = report
        .events
        .iter()
        .filter(|e| e.release.as_deref() == Some("v2") && e.kind == "zone_completed")
        .map(|e| e.scope.as_str())
        .filter(|s| s.starts_with("prod/us-east-2/"))
        .collect();
    assert_eq!(
        us_east_2,
        [
            "prod/us-east-2/us-east-2-share-25",
            "prod/us-east-2/us-east-2-share-50",
            "prod/us-east-2/us-east-2-share-100"
        ]
    );
    let v3 = &report.releases[1];
    assert_eq!(v3.outcome, "halted", "{:?}", v3.reason);
    assert!(v3.rolled_back_scopes.iter().any(|s| s == "staging/us-west-2"), "{:?}", v3.rolled_back_scopes);
    assert!(v3.reached.is_empty() || v3.reached.iter().all(|s| !s.starts_with("prod")), "{:?}", v3.reached);
    assert!(report.violations.is_empty(), "{:?}", report.violations);
}
