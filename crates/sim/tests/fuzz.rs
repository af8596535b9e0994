//! Property tests of the scenario reader on mutated scenarios: it answers (no hang) with
//! a scenario or with errors located inside the text, never a panic.

#[path = "../../manifest/tests/yaml_fuzz/mod.rs"]
mod yaml_fuzz;

use proptest::prelude::*;
use std::sync::Arc;
use std::time::Duration;
use yaml_fuzz::{Tree, located_inside, mutation, tree, within};

const PIPELINE: &str = include_str!("../../../examples/pipeline.yaml");
const SCENARIOS: [&str; 5] = [
    include_str!("../../../examples/bad-release.yaml"),
    include_str!("../../../examples/good-release.yaml"),
    include_str!("../../../examples/in-flight.yaml"),
    include_str!("../../../examples/incident.yaml"),
    include_str!("../../../examples/latent-defect.yaml"),
];

/// Far more than any scenario takes to read; only a reader that loops forever reaches it.
const HANG: Duration = Duration::from_secs(20);

fn read(manifest: &Arc<rollwave_core::manifest::Manifest>, text: String) -> Result<(), String> {
    let manifest = Arc::clone(manifest);
    let answer = within(HANG, {
        let text = text.clone();
        move || rollwave_sim::parse_scenario("fuzz.yaml", &text, &manifest).map(|_| ())
    })?;
    match answer {
        Ok(()) => Ok(()),
        Err(errors) => located_inside(&text, &errors),
    }
}

fn manifest() -> Arc<rollwave_core::manifest::Manifest> {
    Arc::new(rollwave_manifest::parse_manifest("pipeline.yaml", PIPELINE).expect("the example pipeline"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_scenarios_are_read_or_refused_at_a_place(
        seed in 0usize..SCENARIOS.len(),
        mutations in proptest::collection::vec(mutation(), 1..4),
        flow in any::<bool>(),
    ) {
        let mut doc = Tree::of(SCENARIOS[seed]).expect("the examples are YAML");
        for m in &mutations {
            m.apply(&mut doc);
        }
        let text = doc.render(flow);
        prop_assert_eq!(read(&manifest(), text.clone()), Ok(()), "{}", text);
    }

    #[test]
    fn random_documents_are_read_or_refused_at_a_place(doc in tree(), flow in any::<bool>()) {
        let text = doc.render(flow);
        prop_assert_eq!(read(&manifest(), text.clone()), Ok(()), "{}", text);
    }
}

#[test]
fn every_example_scenario_survives_a_round_trip() {
    let manifest = manifest();
    for (text, flow) in SCENARIOS.iter().zip([false, true, false, true, false]) {
        let rendered = Tree::of(text).unwrap().render(flow);
        rollwave_sim::parse_scenario("seed.yaml", &rendered, &manifest).unwrap_or_else(|e| panic!("{e}\n{rendered}"));
    }
}
