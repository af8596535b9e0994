//! Property tests of the manifest reader on mutated manifests: whatever the input, it
//! answers (no hang) with a manifest or with errors located inside the text, never a
//! panic; what it accepts can be planned.

mod yaml_fuzz;

use proptest::prelude::*;
use rollwave_core::plan::Plan;
use std::time::Duration;
use yaml_fuzz::{Mutation, Tree, located_inside, mutation, tree, within};

const EXAMPLE: &str = include_str!("fixtures/pipeline.yaml");
const DEMO: &str = include_str!("../../demo/src/demo.yaml");

/// Far more than any manifest takes to read; only a reader that loops forever reaches it.
const HANG: Duration = Duration::from_secs(20);

fn read(text: String) -> Result<(), String> {
    let outcome = within(HANG, {
        let text = text.clone();
        move || match rollwave_manifest::parse_manifest("fuzz.yaml", &text) {
            Ok(manifest) => {
                let _ = Plan::new(manifest).lead_time();
                Ok(())
            }
            Err(errors) => Err(errors),
        }
    })?;
    match outcome {
        Ok(()) => Ok(()),
        Err(errors) => located_inside(&text, &errors),
    }
}

fn seeds() -> Vec<Tree> {
    [EXAMPLE, DEMO].iter().map(|t| Tree::of(t).expect("the seeds are YAML")).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_manifests_are_read_or_refused_at_a_place(
        seed in 0usize..2,
        mutations in proptest::collection::vec(mutation(), 1..4),
        flow in any::<bool>(),
    ) {
        let mut doc = seeds()[seed].clone();
        for m in &mutations {
            m.apply(&mut doc);
        }
        let text = doc.render(flow);
        prop_assert_eq!(read(text.clone()), Ok(()), "{}", text);
    }

    #[test]
    fn random_documents_are_read_or_refused_at_a_place(doc in tree(), flow in any::<bool>()) {
        let text = doc.render(flow);
        prop_assert_eq!(read(text.clone()), Ok(()), "{}", text);
    }
}

#[test]
fn the_seeds_themselves_are_valid_and_survive_a_round_trip() {
    for (seed, flow) in seeds().iter().zip([false, true]) {
        let text = seed.render(flow);
        rollwave_manifest::parse_manifest("seed.yaml", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    }
    // A mutation really changes the document.
    let mut doc = seeds()[0].clone();
    Mutation::SetScalar(vec![0], "💥".into()).apply(&mut doc);
    assert!(rollwave_manifest::parse_manifest("m.yaml", &doc.render(false)).is_err());
}
