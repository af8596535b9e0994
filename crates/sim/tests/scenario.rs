//! Scenario files: what they say, and that no malformed one makes the reader panic.

use rollwave_sim::{OperatorVerb, parse_scenario};

const PIPELINE: &str = include_str!("../../../examples/pipeline.yaml");
const BAD_RELEASE: &str = include_str!("../../../examples/bad-release.yaml");

fn manifest() -> rollwave_core::manifest::Manifest {
    rollwave_manifest::parse_manifest("pipeline.yaml", PIPELINE).unwrap()
}

#[test]
fn the_issue_example_reads_as_written() {
    let s = parse_scenario("bad-release.yaml", BAD_RELEASE, &manifest()).unwrap();
    assert_eq!(s.start.to_string(), "2026-11-30T08:00:00Z");
    assert_eq!(s.traffic.requests_per_host_per_s, 20.0);
    assert_eq!(s.releases.len(), 2);
    assert_eq!(s.releases[1].defect.as_ref().unwrap().error_rate, Some(0.05));
    assert_eq!(s.releases[1].at.as_secs(), 6 * 3600);
    assert_eq!(s.operators[1].action, OperatorVerb::Rollback);
    assert_eq!(s.host_failures[0].host, "use2-az1-3");
}

#[test]
fn names_are_checked_against_the_manifest() {
    let text = "start: 2026-11-30T08:00:00Z\ntraffic: { requests_per_host_per_s: 1 }\nhost_failures:\n  - { at: 1h, host: use2-az1-11 }\n  - { at: 1h, host: use2-az1-01 }\n  - { at: 1h, host: use2-az1-10, environment: gama }\n";
    let errors = parse_scenario("s.yaml", text, &manifest()).unwrap_err();
    let lines: Vec<String> = errors.to_string().lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[0].starts_with("s.yaml:4:21: no host \"use2-az1-11\""), "{lines:?}");
    assert!(lines[1].starts_with("s.yaml:5:21: no host \"use2-az1-01\""), "{lines:?}");
    assert!(lines[2].starts_with("s.yaml:6:47: no environment \"gama\"; did you mean \"gamma\"?"), "{lines:?}");
}

#[test]
fn truncated_and_garbled_scenarios_never_panic() {
    let manifest = manifest();
    for end in 0..=BAD_RELEASE.len() {
        if BAD_RELEASE.is_char_boundary(end) {
            let _ = parse_scenario("s.yaml", &BAD_RELEASE[..end], &manifest);
        }
    }
    // A fixed linear congruential sequence of byte flips.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..2_000 {
        let mut bytes = BAD_RELEASE.as_bytes().to_vec();
        for _ in 0..3 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let at = (x >> 33) as usize % bytes.len();
            const NOISE: &[u8] = b" :-{}[],#&*!|>'\"%@`0a\n\t";
            bytes[at] = NOISE[(x >> 20) as usize % NOISE.len()];
        }
        let text = String::from_utf8_lossy(&bytes);
        let _ = parse_scenario("s.yaml", &text, &manifest);
    }
}

fn simulate_judged(judge: &str, seed: u64) -> rollwave_sim::Report {
    let text = PIPELINE.replace(
        "one_box: { hosts: 1, max_share: 10%, bake: 1h }",
        &format!("one_box: {{ hosts: 1, max_share: 10%, bake: 1h, judge: {judge} }}"),
    );
    assert_ne!(text, PIPELINE, "the example's one-box line changed");
    let manifest = rollwave_manifest::parse_manifest("pipeline.yaml", &text).unwrap();
    let scenario = parse_scenario("quiet-defect.yaml", QUIET_DEFECT, &manifest).unwrap();
    let plan = std::sync::Arc::new(rollwave_core::plan::Plan::new(manifest));
    let options = rollwave_sim::Options { seed, until: std::time::Duration::from_secs(30 * 86_400) };
    rollwave_sim::simulate(plan, &scenario, options).unwrap()
}

/// v3 fails 0.5 % of requests against the usual 0.1 %: under every alarm's threshold
/// (2 % a zone, 1 % a region), so only a one-box judge can catch it.
const QUIET_DEFECT: &str = "\
start: 2026-11-30T08:00:00Z
traffic: { requests_per_host_per_s: 20, error_rate: 0.001, latency_p99_ms: 120 }
releases:
  - { version: v2, at: 0h }
  - { version: v3, at: 6h, defect: { error_rate: 0.005 } }
operators:
  - { at: 2h, action: approve, release: v2 }
  - { at: 8h, action: approve, release: v3 }
";

#[test]
fn the_simulator_judges_one_boxes_on_their_hosts_traffic_passing_the_good_release_and_failing_the_bad() {
    for judge in ["true", "{ method: sequential, alpha: 0.01 }"] {
        let report = simulate_judged(judge, 1);
        let v2 = report.releases.iter().find(|r| r.version == "v2").unwrap();
        assert_eq!(v2.outcome, "completed", "{judge}: {}", report.to_text());
        let passes = report
            .events
            .iter()
            .filter(|e| e.kind == "judge_verdict" && e.release.as_deref() == Some("v2"))
            .filter(|e| e.reason.as_deref().is_some_and(|r| r.contains("(PASS)")))
            .count();
        assert!(passes > 0, "{judge}: a passing verdict per judged one-box of v2");
        // v3's first one-box (gamma's) is judged failing and rolled back alone.
        let v3 = report.releases.iter().find(|r| r.version == "v3").unwrap();
        let reason = v3.reason.as_deref().unwrap_or_default();
        assert!(reason.contains("one-box judge") && reason.contains("(FAIL)"), "{judge}: {v3:?}");
        assert_eq!(v3.rolled_back_scopes.len(), 1, "{judge}: only its one-box: {v3:?}");
        assert!(!report.notes.iter().any(|n| n.contains("judge")), "{:?}", report.notes);
    }
}

#[test]
fn the_same_seed_gives_the_same_verdicts() {
    let verdicts = |r: rollwave_sim::Report| -> Vec<(String, Option<String>)> {
        r.events.into_iter().filter(|e| e.kind == "judge_verdict").map(|e| (e.t, e.reason)).collect()
    };
    let judge = "{ method: sequential }";
    assert_eq!(verdicts(simulate_judged(judge, 3)), verdicts(simulate_judged(judge, 3)));
}

#[test]
fn a_study_s_figures_do_not_depend_on_how_many_threads_ran_it() {
    let manifest = rollwave_manifest::parse_manifest("pipeline.yaml", PIPELINE).unwrap();
    let scenario = parse_scenario("bad-release.yaml", BAD_RELEASE, &manifest).unwrap();
    let plan = std::sync::Arc::new(rollwave_core::plan::Plan::new(manifest));
    let options = |threads| rollwave_sim::StudyOptions {
        runs: 7,
        seed: 40,
        until: std::time::Duration::from_secs(30 * 86_400),
        threads,
    };
    let one = rollwave_sim::study(std::sync::Arc::clone(&plan), &scenario, options(1)).unwrap();
    let three = rollwave_sim::study(plan, &scenario, options(3)).unwrap();
    assert_eq!(one, three);
    assert_eq!(one.runs, 7);
    let v3 = one.releases.iter().find(|r| r.version == "v3").unwrap();
    assert_eq!(v3.outcomes.values().sum::<u64>(), 7);
}
