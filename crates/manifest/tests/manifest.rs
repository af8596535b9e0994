//! Behaviour of `parse_manifest`: how the example resolves, where each kind of error is
//! reported, and that no input makes it panic.

use rollwave_core::alarm::{
    AlarmScope, Comparison, Gauge, MetricRef, MonitorField, Threshold, TrafficMetric, TreatMissing,
};
use rollwave_core::manifest::{
    Bake, Function, Manifest, NotificationFormat, OneBox, Rolling, SecretSource, Strategy, WebhookUrl,
};
use rollwave_core::plan::Plan;
use rollwave_core::share::{BasisPoints, BatchSize};
use rollwave_core::window::{BlockedDates, WeeklyWindow};
use rollwave_manifest::{Location, SecretRef, SecretUse, parse_manifest};
use std::time::Duration;

const EXAMPLE: &str = include_str!("fixtures/pipeline.yaml");

const fn minutes(n: u64) -> Duration {
    Duration::from_secs(n * 60)
}

const fn hours(n: u64) -> Duration {
    Duration::from_secs(n * 3600)
}

fn bp(n: u32) -> BasisPoints {
    BasisPoints::new(n).unwrap()
}

fn parse(text: &str) -> Manifest {
    parse_manifest("pipeline.yaml", text).unwrap_or_else(|e| panic!("expected a valid manifest:\n{e}"))
}

/// The errors as `LINE:COL: message`, in the order reported.
fn errors(text: &str) -> Vec<String> {
    match parse_manifest("pipeline.yaml", text) {
        Ok(_) => panic!("expected errors, the manifest parsed"),
        Err(e) => {
            assert_eq!(e.file, "pipeline.yaml");
            e.errors.iter().map(|e| e.to_string()).collect()
        }
    }
}

/// A valid manifest to derive broken ones from, so each test shows only what it breaks.
const SMALL: &str = "\
service: checkout
environments:
  prod:
    regions:
      us-east-2: { zones: { use2-az1: 3 } }
      eu-west-1: { zones: { euw1-az1: 3 } }
stages:
  - name: prod
    environment: prod
";

// ---------------------------------------------------------------------------------------
// The example resolves as documented

#[test]
fn the_example_resolves_every_default_and_override() {
    let m = parse(EXAMPLE);
    assert_eq!(m.service, "checkout");
    assert_eq!(m.watch, hours(24));

    let envs: Vec<&str> = m.environments.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(envs, ["beta", "gamma", "prod"]);
    let prod = &m.environments[2];
    let regions: Vec<(&str, Option<&str>)> =
        prod.regions.iter().map(|r| (r.name.as_str(), r.timezone.iana_name())).collect();
    assert_eq!(regions, [("us-east-2", Some("America/Chicago")), ("eu-west-1", Some("Europe/Dublin"))]);
    let zones: Vec<(&str, u32)> = prod.regions[1].zones.iter().map(|z| (z.name.as_str(), z.hosts)).collect();
    assert_eq!(zones, [("euw1-az1", 8), ("euw1-az2", 8), ("euw1-az3", 8)]);
    // A region without a time zone reads its windows in UTC.
    assert_eq!(m.environments[0].regions[0].timezone, jiff::tz::TimeZone::UTC);

    let stages: Vec<(&str, usize, bool)> =
        m.stages.iter().map(|s| (s.name.as_str(), s.environment, s.approval)).collect();
    assert_eq!(stages, [("beta", 0, false), ("gamma", 1, false), ("prod", 2, true)]);

    // Every bake inherits strategy.bake.min_datapoints = 100.
    let one_box = Some(OneBox {
        hosts: 1,
        max_share: bp(1000),
        bake: Bake { time: hours(1), min_datapoints: 100 },
        judge: false,
        judging: Default::default(),
    });
    let rolling = Rolling {
        batch: BatchSize::Share(bp(3300)),
        zone_bake: Bake { time: minutes(30), min_datapoints: 100 },
        max_failures: 0,
        deploy_timeout: minutes(10),
        steps: Rolling::default_steps(),
    };
    let with_bake = |time| Strategy {
        one_box: one_box.clone(),
        rolling: rolling.clone(),
        bake: Bake { time, min_datapoints: 100 },
    };

    let beta = &m.stages[0];
    assert_eq!(beta.waves.len(), 1);
    assert_eq!(beta.waves[0].name, "wave-1");
    assert_eq!(beta.waves[0].regions, [0]);
    assert_eq!(beta.waves[0].strategy, with_bake(minutes(30)));
    assert_eq!(beta.tests.len(), 1);
    assert_eq!(
        (beta.tests[0].name.as_str(), beta.tests[0].run.as_str(), beta.tests[0].timeout),
        ("integration", "./tests/integration.sh", minutes(15))
    );

    assert_eq!(m.stages[1].waves[0].strategy, with_bake(hours(1)));
    assert!(m.stages[1].tests.is_empty());

    let prod_waves: Vec<(&str, &[usize], &Strategy)> =
        m.stages[2].waves.iter().map(|w| (w.name.as_str(), w.regions.as_slice(), &w.strategy)).collect();
    assert_eq!(prod_waves, [("wave-1", &[0][..], &with_bake(hours(12))), ("wave-2", &[1][..], &with_bake(hours(4)))]);

    for stage in &m.stages {
        assert_eq!(
            stage.windows.allow,
            [WeeklyWindow { days: [true, true, true, true, true, false, false], start_minute: 540, end_minute: 1020 }]
        );
        assert_eq!(
            stage.windows.block,
            [BlockedDates { first: jiff::civil::date(2026, 12, 24), last: jiff::civil::date(2026, 12, 26) }]
        );
    }

    let alarms: Vec<_> = m
        .alarms
        .iter()
        .map(|a| {
            (
                a.name.as_str(),
                a.metric.clone(),
                a.scope,
                a.threshold,
                a.period,
                a.datapoints_to_alarm,
                a.evaluation_periods,
            )
        })
        .collect();
    let greater = |value| Threshold { comparison: Comparison::Greater, value };
    assert_eq!(
        alarms,
        [
            ("errors", MetricRef::Traffic(TrafficMetric::ErrorRate), AlarmScope::Zone, greater(0.02), minutes(1), 3, 5),
            (
                "latency",
                MetricRef::Traffic(TrafficMetric::LatencyP99Ms),
                AlarmScope::Region,
                greater(800.0),
                minutes(1),
                3,
                3
            ),
        ]
    );
    assert!(m.alarms.iter().all(|a| a.missing == TreatMissing::Missing));
}

#[test]
fn the_example_lead_time_is_the_sum_of_its_bakes() {
    // Per wave: one-box bake + one zone bake per zone (the slowest region) + the wave bake.
    // Every region has at least 2 hosts, so each gets a one-box (1h).
    let beta = hours(1) + minutes(30) + minutes(30); // 1 zone, stage bake 30m
    let gamma = hours(1) + 2 * minutes(30) + hours(1); // 2 zones, stage bake 1h
    let prod_wave_1 = hours(1) + 3 * minutes(30) + hours(12); // us-east-2: 3 zones
    let prod_wave_2 = hours(1) + 3 * minutes(30) + hours(4); // eu-west-1: 3 zones
    let by_hand = beta + gamma + prod_wave_1 + prod_wave_2;
    assert_eq!(by_hand, hours(26));
    assert_eq!(Plan::new(parse(EXAMPLE)).lead_time(), by_hand);
}

#[test]
fn the_repository_example_parses_if_present() {
    // The workspace's own example may evolve; it must stay valid whatever it says.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/pipeline.yaml");
    if let Ok(text) = std::fs::read_to_string(path) {
        parse(&text);
    }
}

// ---------------------------------------------------------------------------------------
// Defaults and overrides

#[test]
fn without_strategy_the_documented_defaults_apply() {
    let m = parse(SMALL);
    assert_eq!(m.watch, hours(24));
    assert!(m.alarms.is_empty());
    assert!(m.stages[0].windows.allow.is_empty() && m.stages[0].windows.block.is_empty());
    let wave = &m.stages[0].waves[0];
    assert_eq!(wave.name, "wave-1");
    assert_eq!(wave.regions, [0, 1], "all regions, in manifest order");
    assert_eq!(
        wave.strategy,
        Strategy {
            one_box: Some(OneBox {
                hosts: 1,
                max_share: bp(1000),
                bake: Bake { time: hours(1), min_datapoints: 0 },
                judge: false,
                judging: Default::default()
            }),
            rolling: Rolling {
                batch: BatchSize::Share(bp(3300)),
                zone_bake: Bake { time: Duration::ZERO, min_datapoints: 0 },
                max_failures: 0,
                deploy_timeout: minutes(10),
                steps: Rolling::default_steps(),
            },
            bake: Bake { time: Duration::ZERO, min_datapoints: 0 },
        }
    );
}

#[test]
fn overrides_apply_field_by_field_wave_over_stage_over_strategy() {
    let m = parse(
        "\
service: checkout
environments:
  prod: { regions: { r1: { zones: { a: 4 } }, r2: { zones: { b: 4 } }, r3: { zones: { c: 4 } } } }
strategy:
  one_box: false
  rolling: { batch: 33%, zone_bake: { time: 30m, min_datapoints: 7 }, max_failures: 1 }
  bake: { time: 2h, min_datapoints: 100 }
stages:
  - name: prod
    environment: prod
    rolling: { batch: 50% }
    one_box: { hosts: 2 }
    bake: { min_datapoints: 500 }
    waves:
      - { name: w1, regions: [r1] }
      - name: w2
        regions: [r2]
        bake: 4h
        rolling: { batch: 1, deploy_timeout: 5m, zone_bake: 1m }
        one_box: { bake: { time: 10m, min_datapoints: 3 } }
      - { name: w3, regions: [r3], one_box: false }
",
    );
    let w = &m.stages[0].waves;
    // w1: the stage's batch with the strategy's zone bake and max_failures; the stage's
    // one-box (despite `one_box: false` above it) with defaults for what it leaves out.
    assert_eq!(w[0].strategy.rolling.batch, BatchSize::Share(bp(5000)));
    assert_eq!(w[0].strategy.rolling.zone_bake, Bake { time: minutes(30), min_datapoints: 7 });
    assert_eq!(w[0].strategy.rolling.max_failures, 1);
    assert_eq!(w[0].strategy.rolling.deploy_timeout, minutes(10));
    assert_eq!(
        w[0].strategy.one_box,
        Some(OneBox {
            hosts: 2,
            max_share: bp(1000),
            bake: Bake { time: hours(1), min_datapoints: 100 },
            judge: false,
            judging: Default::default()
        })
    );
    assert_eq!(w[0].strategy.bake, Bake { time: hours(2), min_datapoints: 500 });

    // w2: its own batch, timeout and zone bake time (min_datapoints still from the strategy).
    assert_eq!(w[1].strategy.rolling.batch, BatchSize::Hosts(1));
    assert_eq!(w[1].strategy.rolling.deploy_timeout, minutes(5));
    assert_eq!(w[1].strategy.rolling.zone_bake, Bake { time: minutes(1), min_datapoints: 7 });
    assert_eq!(
        w[1].strategy.one_box,
        Some(OneBox {
            hosts: 2,
            max_share: bp(1000),
            bake: Bake { time: minutes(10), min_datapoints: 3 },
            judge: false,
            judging: Default::default()
        })
    );
    assert_eq!(w[1].strategy.bake, Bake { time: hours(4), min_datapoints: 500 });

    // w3: no one-box.
    assert_eq!(w[2].strategy.one_box, None);
}

#[test]
fn one_box_true_turns_a_one_box_back_on_with_defaults() {
    let text = SMALL.replace("stages:", "strategy: { one_box: false }\nstages:").replace(
        "    environment: prod\n",
        "    environment: prod\n    waves: [ { name: w1, regions: [us-east-2], one_box: true }, { name: w2, regions: [eu-west-1] } ]\n",
    );
    let m = parse(&text);
    let waves = &m.stages[0].waves;
    assert_eq!(
        waves[0].strategy.one_box,
        Some(OneBox {
            hosts: 1,
            max_share: bp(1000),
            bake: Bake { time: hours(1), min_datapoints: 0 },
            judge: false,
            judging: Default::default()
        })
    );
    assert_eq!(waves[1].strategy.one_box, None);
}

#[test]
fn stage_windows_replace_the_top_level_lists_they_name() {
    let m = parse(&format!(
        "{SMALL}  - name: later\n    environment: prod\n    windows: {{ allow: [\"Sat,Sun 10:00-14:00\"] }}\n\
         \x20 - name: always\n    environment: prod\n    windows: {{ allow: [] }}\n\
         windows: {{ allow: [\"daily 22:00-06:00\"], block: [\"2026-12-25\"] }}\n"
    ));
    let christmas = [BlockedDates { first: jiff::civil::date(2026, 12, 25), last: jiff::civil::date(2026, 12, 25) }];
    let [first, later, always] = &m.stages[..] else { panic!("three stages") };
    assert_eq!(first.windows.allow, [WeeklyWindow { days: [true; 7], start_minute: 1320, end_minute: 360 }]);
    assert_eq!(
        later.windows.allow,
        [WeeklyWindow { days: [false, false, false, false, false, true, true], start_minute: 600, end_minute: 840 }]
    );
    assert!(always.windows.allow.is_empty());
    for stage in [first, later, always] {
        assert_eq!(stage.windows.block, christmas, "{}", stage.name);
    }
}

#[test]
fn alarm_options_are_read() {
    let m = parse(&format!(
        "{SMALL}alarms:\n\
         \x20 - {{ name: a, metric: restarts, threshold: 5, datapoints: 2, missing: not_breaching, scope: host }}\n\
         \x20 - {{ name: b, metric: error_rate, threshold: \"<= 0.5\", missing: notBreaching, period: 5m }}\n\
         \x20 - {{ name: c, metric: m, threshold: \">=1\", source: prometheus, query: 'sum(up{{service=\"{{{{service}}}}\"}})' }}\n"
    ));
    let a = &m.alarms[0];
    assert_eq!(
        (a.threshold, a.datapoints_to_alarm, a.evaluation_periods),
        (Threshold { comparison: Comparison::Greater, value: 5.0 }, 2, 2)
    );
    assert_eq!((a.missing, a.scope, a.period), (TreatMissing::NotBreaching, AlarmScope::Host, minutes(1)));
    let b = &m.alarms[1];
    assert_eq!(
        (b.threshold.comparison, b.missing, b.period, b.evaluation_periods),
        (Comparison::LessOrEqual, TreatMissing::NotBreaching, minutes(5), 1)
    );
    assert_eq!(b.scope, AlarmScope::Region);
    assert_eq!(a.metric, MetricRef::Gauge(Gauge::Restarts));
    assert_eq!(
        m.alarms[2].metric,
        MetricRef::Prometheus { name: "m".to_owned(), query: "sum(up{service=\"{{service}}\"})".to_owned() }
    );
}

// ---------------------------------------------------------------------------------------
// Errors, each at the offending node

#[test]
fn an_unknown_key_is_reported_at_the_key_with_a_suggestion() {
    let text = SMALL.replace("    environment: prod", "    enviroment: prod");
    assert_eq!(
        errors(&text),
        [
            // A missing key is reported at its mapping, which starts at `name`.
            "8:5: missing required key \"environment\"",
            "9:5: unknown key \"enviroment\"; did you mean \"environment\"?",
        ]
    );
    let text = SMALL.replace("    environment: prod", "    environment: prod\n    colour: blue");
    assert_eq!(
        errors(&text),
        [
            "10:5: unknown key \"colour\"; expected one of: name, environment, approval, tests, bake, windows, one_box, rolling, waves"
        ]
    );
}

#[test]
fn a_bad_duration_is_reported_at_the_value() {
    let errs = errors(&format!("{SMALL}watch: 24hours\n"));
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("10:8: invalid duration \"24hours\""), "{errs:?}");
    assert!(errs[0].contains("e.g. 90s, 30m, 12h, 2d or 1h30m"), "{errs:?}");

    let errs = errors(&format!("{SMALL}    bake: 90\n"));
    assert_eq!(errs, ["10:11: invalid duration \"90\": \"90\" needs a unit, e.g. 90s or 90m"]);
}

#[test]
fn an_exec_command_may_name_only_known_templates() {
    let exec = |deploy: &str| {
        SMALL.replace(
            "      eu-west-1: { zones: { euw1-az1: 3 } }\n",
            &format!("      eu-west-1: {{ zones: {{ euw1-az1: 3 }} }}\n    exec: {{ deploy: '{deploy}' }}\n"),
        )
    };
    let errs = errors(&exec("./ship {{artefact}} {{zone}}"));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("7:21: unknown template {{artefact}} (did you mean {{artifact}}?)"), "{errs:?}");
    assert!(errs[0].contains("{{service}}, {{environment}}"), "{errs:?}");
    let ok = parse(&exec("./ship {{artifact}} {{zone}} {{share}}"));
    let spec = ok.environments[0].exec.as_ref().expect("the exec spec");
    assert_eq!(spec.deploy, "./ship {{artifact}} {{zone}} {{share}}");
}

#[test]
fn a_bad_percentage_is_reported_at_the_value() {
    let errs = errors(&format!("{SMALL}strategy:\n  one_box: {{ max_share: 110% }}\n  rolling: {{ batch: 33 % }}\n"));
    assert_eq!(
        errs,
        [
            "11:25: invalid percentage \"110%\": it is above 100%",
            "12:21: invalid batch: invalid percentage \"33 %\": write a percentage from 0% to 100%, e.g. 33% or 10.5%",
        ]
    );
}

#[test]
fn a_bad_time_zone_is_reported_with_the_nearest_name() {
    let text = SMALL.replace("us-east-2: { zones", "us-east-2: { timezone: Europe/Dublln, zones");
    assert_eq!(errors(&text), ["5:30: unknown time zone \"Europe/Dublln\"; did you mean \"Europe/Dublin\"?"]);
    let text = SMALL.replace("us-east-2: { zones", "us-east-2: { timezone: Chicago, zones");
    assert_eq!(errors(&text), ["5:30: unknown time zone \"Chicago\"; did you mean \"America/Chicago\"?"]);
}

#[test]
fn a_wave_region_must_belong_to_the_stage_environment() {
    let text = format!(
        "{SMALL}    waves:\n      - {{ name: w1, regions: [us-east-3, eu-west-1] }}\n      - {{ name: w2, regions: [eu-west-1, ap-south-1] }}\n"
    );
    assert_eq!(
        errors(&text),
        [
            "11:31: region \"us-east-3\" is not in environment \"prod\"; did you mean \"us-east-2\"?",
            "12:31: region \"eu-west-1\" is already in wave \"w1\"; a region belongs to one wave of a stage",
            "12:42: region \"ap-south-1\" is not in environment \"prod\"; expected one of: us-east-2, eu-west-1",
        ]
    );
}

#[test]
fn a_stage_environment_must_exist() {
    let text = SMALL.replace("environment: prod", "environment: prd");
    assert_eq!(errors(&text), ["9:18: environment \"prd\" is not defined in `environments`; did you mean \"prod\"?"]);
}

#[test]
fn duplicate_names_are_reported_at_the_second_with_the_first() {
    let text = format!(
        "{SMALL}\
         \x20 - name: prod\n    environment: prod\n    waves:\n      - {{ name: w, regions: [us-east-2] }}\n      - {{ name: w, regions: [eu-west-1] }}\n\
         alarms:\n  - {{ name: errors, metric: error_rate, threshold: 0.1 }}\n  - {{ name: errors, metric: error_rate, threshold: 0.1 }}\n"
    );
    assert_eq!(
        errors(&text),
        [
            "10:11: duplicate stage name \"prod\"; the first is at 8:11",
            "14:17: duplicate wave name \"w\"; the first is at 13:17",
            "17:13: duplicate alarm name \"errors\"; the first is at 16:13",
        ]
    );
}

#[test]
fn zone_names_are_unique_across_an_environment() {
    let text = SMALL.replace("{ euw1-az1: 3 }", "{ use2-az1: 3 }");
    assert_eq!(
        errors(&text),
        [
            "6:29: zone \"use2-az1\" is already defined in this environment at 5:29; hosts are named {zone}-{n}, so zone names must be unique in an environment"
        ]
    );
}

#[test]
fn a_duplicate_yaml_key_is_reported_at_its_second_occurrence() {
    let text = format!("{SMALL}service: other\n");
    assert_eq!(errors(&text), ["10:1: duplicate key \"service\"; it is already defined at 1:1"]);
}

#[test]
fn a_syntax_error_is_reported_where_the_scanner_stopped() {
    assert_eq!(
        errors("service: checkout\nstages: [a, b\nwatch: 1h\n"),
        ["3:6: YAML syntax error: illegal placement of ':' indicator"]
    );
    // In block style, `>` starts a folded scalar: the classic way to break a threshold.
    let errs = errors(&format!("{SMALL}alarms:\n  - name: e\n    metric: m\n    threshold: > 0.02\n"));
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("13:16: YAML syntax error"), "{errs:?}");
    assert!(errs[0].contains("quote values that start with > or |"), "{errs:?}");
}

#[test]
fn a_wrong_node_kind_is_reported_with_what_was_found() {
    let text = "service: [checkout]\nenvironments: []\nstages: { name: prod }\nwatch: { time: 1h }\n";
    assert_eq!(
        errors(text),
        [
            "1:10: expected a name, found a list",
            "2:15: expected a mapping, found a list",
            "3:9: expected a list, found a mapping",
            "4:8: expected a duration such as 30m, found a mapping",
        ]
    );
    assert_eq!(errors("- a\n- b\n"), ["1:1: the document must be a mapping of `key: value` lines"]);
}

#[test]
fn every_error_in_a_file_is_reported_in_document_order() {
    let text = "\
service: checkout
environments:
  prod:
    regions:
      us-east-2: { timezone: Mars/Olympus, zones: { use2-az1: -3 } }
strategy:
  rolling: { batch: 0%, zone_bake: soon }
stages:
  - name: prod
    environment: prod
    approval: yes
    waves:
      - { name: w1, regions: [us-east-3], bake: 1h30 }
alarms:
  - { name: errors, metric: error_rate, scope: zon, threshold: \"> 0.02\", datapoints: 6 of 5 }
windows:
  allow: [\"Mon-Fry 09:00-17:00\"]
  block: [\"2026-12-26/2026-12-24\"]
watch: -1h
";
    let errs = errors(text);
    let expected_starts = [
        "5:30: unknown time zone \"Mars/Olympus\"",
        "5:63: expected a whole number of at least 0, found \"-3\"",
        "7:21: invalid batch \"0%\": a batch must be more than 0%",
        "7:36: invalid duration \"soon\"",
        "11:15: expected true or false, found \"yes\"",
        "13:31: region \"us-east-3\" is not in environment \"prod\"; did you mean \"us-east-2\"?",
        "13:49: invalid duration \"1h30\": \"30\" needs a unit",
        "15:48: unknown scope \"zon\"; did you mean \"zone\"?",
        "15:86: invalid datapoints \"6 of 5\": N must be between 1 and M",
        "17:11: invalid window \"Mon-Fry 09:00-17:00\": unknown day \"Fry\"; did you mean \"Fri\"?",
        "18:11: invalid blocked period \"2026-12-26/2026-12-24\": it ends before it starts",
        "19:8: invalid duration \"-1h\": durations cannot be negative",
    ];
    assert_eq!(errs.len(), expected_starts.len(), "{errs:#?}");
    for (err, start) in errs.iter().zip(expected_starts) {
        assert!(err.starts_with(start), "{err:?} should start with {start:?}");
    }
    // And the whole report, as the CLI prints it.
    let report = parse_manifest("p.yaml", text).unwrap_err().to_string();
    assert_eq!(report.lines().count(), expected_starts.len());
    assert!(report.starts_with("p.yaml:5:30: unknown time zone"));
}

#[test]
fn missing_required_keys_are_reported_at_their_mapping() {
    assert_eq!(
        errors("# nothing yet\n"),
        [
            "1:1: missing required key \"service\"",
            "1:1: missing required key \"environments\"",
            "1:1: missing required key \"stages\"",
        ]
    );
    let text = format!(
        "{SMALL}    tests: [ {{ name: t }} ]\n    waves: [ {{ name: w }} ]\nalarms:\n  - {{ name: a, metric: m, source: prometheus }}\n  - {{ threshold: 1 }}\n"
    );
    assert_eq!(
        errors(&text),
        [
            "10:14: missing required key \"run\"",
            "11:14: missing required key \"regions\"",
            "13:5: missing required key \"threshold\"",
            "13:5: missing required key \"query\" (a PromQL query, required with `source: prometheus`)",
            "14:5: missing required key \"name\"",
            "14:5: missing required key \"metric\"",
        ]
    );
    // A key with no value counts as missing, reported at the key.
    assert_eq!(errors(&SMALL.replace("service: checkout", "service:")), ["1:1: \"service\" has no value"]);
}

#[test]
fn structural_rules_are_enforced() {
    let cases: &[(&str, &str, &str)] = &[
        ("stages:\n  - name: prod\n    environment: prod\n", "stages: []\n", "7:9: define at least one stage"),
        ("{ euw1-az1: 3 }", "{}", "6:27: region \"eu-west-1\" needs at least one zone"),
        ("    environment: prod\n", "    environment: prod\n    waves: []\n", "10:12: define at least one wave"),
        ("service: checkout", "service: check out", "1:10: invalid name \"check out\": ' ' is not allowed"),
        ("use2-az1: 3", "use2-az1: 3000000", "5:39: too many hosts"),
        (
            "    environment: prod\n",
            "    environment: prod\n    one_box: maybe\n",
            "10:14: expected false, true or a mapping",
        ),
        (
            "    environment: prod\n",
            "    environment: prod\n    waves: [ { name: w, regions: [us-east-2, us-east-2] } ]\n",
            "10:46: region \"us-east-2\" is listed twice in this wave",
        ),
    ];
    for (from, to, expected) in cases {
        let text = SMALL.replace(from, to);
        assert_ne!(text, SMALL, "{from:?} not found");
        let errs = errors(&text);
        assert!(errs.iter().any(|e| e.starts_with(expected)), "{expected:?} not in {errs:#?}");
    }
}

/// `SMALL` with a monitor and the given lines under `alarms:`.
fn with_alarms(alarms: &str) -> String {
    format!("{SMALL}monitors:\n  - {{ name: home, request: {{ path: /health }} }}\nalarms:\n{alarms}")
}

#[test]
fn every_metric_reference_resolves_to_a_type() {
    let m = parse(&with_alarms(
        "  - { name: a, metric: error_rate, threshold: \"> 0.05\" }\n\
         \x20 - { name: b, metric: cpu_percent, threshold: \"> 90\" }\n\
         \x20 - { name: c, metric: \"monitor:home:success_rate\", threshold: \"< 0.9\" }\n\
         \x20 - { name: d, metric: \"monitor:home:latency_ms\", threshold: \"> 500\" }\n\
         \x20 - { name: e, metric: request_rate, threshold: \"< 1\" }\n",
    ));
    let metrics: Vec<MetricRef> = m.alarms.iter().map(|a| a.metric.clone()).collect();
    assert_eq!(
        metrics,
        [
            MetricRef::Traffic(TrafficMetric::ErrorRate),
            MetricRef::Gauge(Gauge::CpuPercent),
            MetricRef::Monitor { index: 0, name: "home".into(), field: MonitorField::SuccessRate },
            MetricRef::Monitor { index: 0, name: "home".into(), field: MonitorField::LatencyMs },
            MetricRef::Traffic(TrafficMetric::RequestRate),
        ]
    );
    // The manifest's spelling, for people.
    assert_eq!(m.alarms[2].metric.to_string(), "monitor:home:success_rate");
}

/// Each case: the alarm lines, and the one error expected.
#[test]
fn alarms_that_could_never_do_what_they_say_are_refused() {
    let cases: &[(&str, &str)] = &[
        (
            "  - { name: a, metric: eror_rate, threshold: \"> 0.05\" }\n",
            "13:24: unknown metric \"eror_rate\"; did you mean \"error_rate\"?",
        ),
        (
            "  - { name: a, metric: error_rate, threshold: \"> 5\" }\n",
            "13:47: `> 5` can never be crossed: the metric is a fraction from 0 to 1 (0.05 is 5%)",
        ),
        (
            "  - { name: a, metric: cpu_percent, threshold: \"> 250\" }\n",
            "13:48: `> 250` can never be crossed: the metric is a percentage from 0 to 100",
        ),
        (
            "  - { name: a, metric: error_rate, threshold: \">= 0\" }\n",
            "13:47: `>= 0` is always crossed: the metric is a fraction from 0 to 1",
        ),
        (
            "  - { name: a, metric: latency_p99_ms, threshold: \"< 0\" }\n",
            "13:51: `< 0` can never be crossed: the metric is milliseconds, 0 or more",
        ),
        (
            "  - { name: a, metric: \"monitor:hmoe:success_rate\", threshold: \"< 0.9\" }\n",
            "13:24: no monitor named \"hmoe\" in `monitors`; did you mean \"home\"?",
        ),
        (
            "  - { name: a, metric: \"monitor:home:sucess_rate\", threshold: \"< 0.9\" }\n",
            "13:24: unknown monitor metric \"sucess_rate\"; did you mean \"success_rate\"?",
        ),
        (
            "  - { name: a, metric: \"monitor:home\", threshold: \"< 0.9\" }\n",
            "13:24: write monitor:NAME:success_rate or monitor:NAME:latency_ms",
        ),
        (
            "  - { name: a, metric: \"monitor:home:success_rate\", threshold: \"> 1\" }\n",
            "13:64: `> 1` can never be crossed: the metric is a fraction from 0 to 1",
        ),
        (
            "  - { name: a, metric: error_rate, threshold: \"> 0.05\", datapoints: 6 of 5 }\n",
            "13:69: invalid datapoints \"6 of 5\": N must be between 1 and M",
        ),
        (
            "  - { name: a, metric: error_rate, threshold: \"> 0.05\", period: 0s }\n",
            "13:65: expected a duration longer than 0s",
        ),
    ];
    for (alarm, expected) in cases {
        let errs = errors(&with_alarms(alarm));
        assert_eq!(errs.len(), 1, "{alarm}: {errs:#?}");
        assert!(errs[0].starts_with(expected), "{alarm}: expected {expected:?}, found {:?}", errs[0]);
    }
    // Without monitors, a monitor metric names what exists instead.
    let errs = errors(&format!(
        "{SMALL}alarms:\n  - {{ name: a, metric: \"monitor:home:success_rate\", threshold: \"< 0.9\" }}\n"
    ));
    assert_eq!(errs, ["11:24: no monitor named \"home\" in `monitors`; none are defined"]);
    // A Prometheus query can give any value: its threshold is the query's business.
    parse(&with_alarms("  - { name: a, metric: mine, threshold: \"> 250\", source: prometheus, query: up }\n"));
}

#[test]
fn settings_that_could_never_take_effect_are_refused() {
    let cases: &[(&str, &str, &str)] = &[
        ("use2-az1: 3", "use2-az1: 0", "5:39: zone \"use2-az1\" has 0 hosts and would never be deployed"),
        (
            "    environment: prod\n",
            "    environment: prod\n    rolling: { max_failures: 3 }\n",
            "10:30: max_failures: 3 tolerates every host of zone(s) use2-az1 (3 host(s)), euw1-az1 (3 host(s)) of wave \"wave-1\"",
        ),
        (
            "    environment: prod\n",
            "    environment: prod\n    one_box: { max_share: 0% }\n",
            "10:27: a one-box of 0% of its region can never take a host",
        ),
        (
            "    environment: prod\n",
            "    environment: prod\n    waves: [ { name: w, regions: [us-east-2] } ]\n",
            "10:12: region(s) eu-west-1 of environment \"prod\" are in no wave, so this stage would never deploy them",
        ),
        (
            "    environment: prod\n",
            "    environment: prod\nmonitors:\n  - { name: m, request: { method: GTE, path: / } }\n",
            "11:35: unknown HTTP method \"GTE\"; did you mean \"GET\"?",
        ),
        (
            "    environment: prod\n",
            "    environment: prod\nmonitors:\n  - { name: m, request: { path: / } }\n  - { name: m, request: { path: / } }\n",
            "12:13: duplicate monitor name \"m\"; the first is at 11:13",
        ),
        (
            "    environment: prod\n",
            "    environment: prod\nnotifications:\n  - { url: \"https://hooks.example.com/x\", on: [] }\n",
            "11:47: a webhook that hears of nothing is never called",
        ),
        (
            "    environment: prod\n",
            "    environment: prod\nnotifications:\n  - { url: \"https://h.example.com/x\", on: [halted], blocked_after: 1h }\n",
            "11:53: `blocked_after` has no effect: this webhook does not hear of `blocked`",
        ),
    ];
    for (from, to, expected) in cases {
        let text = SMALL.replace(from, to);
        assert_ne!(text, SMALL, "{from:?} not found");
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{to}: {errs:#?}");
        assert!(errs[0].starts_with(expected), "expected {expected:?}, found {:?}", errs[0]);
    }
    // A tolerance below every zone's size is fine.
    parse(&SMALL.replace("    environment: prod\n", "    environment: prod\n    rolling: { max_failures: 2 }\n"));
    // A typo'd region is reported once, as a typo, not also as a region left out.
    let errs = errors(&SMALL.replace(
        "    environment: prod\n",
        "    environment: prod\n    waves: [ { name: w, regions: [us-east-2, eu-west-2] } ]\n",
    ));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(errs[0].contains("did you mean \"eu-west-1\""), "{errs:#?}");
    // Methods are read without regard to case.
    let m = parse(&format!("{SMALL}monitors:\n  - {{ name: m, request: {{ method: head, path: / }} }}\n"));
    assert_eq!(m.monitors[0].method, "HEAD");
}

#[test]
fn webhook_urls_are_literal_or_references_read_on_the_server() {
    let m = parse(&format!(
        "{SMALL}notifications:\n\
         \x20 - {{ url: \"https://user:pw@hooks.slack.com:8443/services/T0/B0/SECRET?x=1\" }}\n\
         \x20 - {{ url: {{ env: SLACK_WEBHOOK }} }}\n\
         \x20 - {{ url: {{ file: /run/secrets/hook }} }}\n"
    ));
    let urls: Vec<&WebhookUrl> = m.notifications.iter().map(|n| &n.url).collect();
    assert_eq!(
        urls[0],
        &WebhookUrl::Literal {
            url: "https://user:pw@hooks.slack.com:8443/services/T0/B0/SECRET?x=1".into(),
            shown: "https://hooks.slack.com:8443/…".into()
        }
    );
    assert_eq!(urls[1], &WebhookUrl::Env("SLACK_WEBHOOK".into()));
    assert_eq!(urls[2], &WebhookUrl::File("/run/secrets/hook".into()));
    assert!(!format!("{m:?}").contains("SECRET"), "Debug shows only the redacted form");

    let cases: &[(&str, &str)] = &[
        ("{ url: \"ftp://x/y\" }", "11:12: expected an http:// or https:// URL"),
        ("{ url: { env: 1BAD } }", "11:19: invalid environment variable name \"1BAD\""),
        ("{ url: { file: relative/path } }", "11:20: expected an absolute path on the server"),
        ("{ url: { env: A, file: /b } }", "11:12: write exactly one of `{ env: NAME }` or `{ file: PATH }`"),
        ("{ url: { vault: x } }", "11:14: unknown key \"vault\"; expected one of: env, file"),
    ];
    for (hook, expected) in cases {
        let errs = errors(&format!("{SMALL}notifications:\n  - {hook}\n"));
        assert!(errs.iter().any(|e| e.starts_with(expected)), "{hook}: expected {expected:?} in {errs:#?}");
    }
    // The error about a bad literal URL never quotes it: it may carry a secret.
    let errs = errors(&format!("{SMALL}notifications:\n  - {{ url: \"gopher://h/SECRET\" }}\n"));
    assert!(errs.iter().all(|e| !e.contains("SECRET")), "{errs:#?}");
}

#[test]
fn secret_references_are_checked_where_the_manifest_is_applied() {
    let text = format!(
        "{SMALL}notifications:\n  - {{ url: {{ env: THERE }} }}\n  - {{ url: {{ env: MISSING }} }}\n\
         \x20 - {{ format: pagerduty, routing_key: {{ env: PD_KEY }}, secret: {{ file: /run/secrets/hmac }} }}\n"
    );
    let check = |r: SecretRef<'_>, used: SecretUse| match (r, used) {
        (SecretRef::Env("THERE"), SecretUse::WebhookUrl) => Ok(()),
        other => Err(format!("{other:?} is not there")),
    };
    let err = rollwave_manifest::parse_manifest_checking_secrets("p.yaml", &text, &check).unwrap_err();
    let errs: Vec<String> = err.errors.iter().map(|e| e.to_string()).collect();
    // Each reference is checked for what it stands for.
    assert_eq!(
        errs,
        [
            "12:19: (Env(\"MISSING\"), WebhookUrl) is not there",
            "13:46: (Env(\"PD_KEY\"), RoutingKey) is not there",
            "13:72: (File(\"/run/secrets/hmac\"), SigningKey) is not there",
        ]
    );
    // Reading alone (`rollwave validate`, on another machine) checks no reference.
    parse(&text);
}

#[test]
fn webhooks_take_teams_and_pagerduty_formats_and_a_signing_secret_by_reference() {
    let m = parse(&format!(
        "{SMALL}notifications:\n\
         \x20 - {{ url: \"https://x.webhook.office.com/w\", format: teams, secret: {{ env: HOOK_KEY }} }}\n\
         \x20 - {{ format: pagerduty, routing_key: {{ env: PD_KEY }}, on: [halted, completed] }}\n\
         \x20 - {{ url: \"https://events.eu.pagerduty.com/v2/enqueue\", format: pagerduty, routing_key: {{ file: /run/pd }} }}\n\
         \x20 - {{ url: \"https://h.example.com/x\" }}\n"
    ));
    let hooks = &m.notifications;
    assert_eq!(hooks[0].format, NotificationFormat::Teams);
    assert_eq!(hooks[0].signing_secret, Some(SecretSource::Env("HOOK_KEY".into())));
    // Left out, a PagerDuty webhook's URL is the Events API's.
    assert_eq!(
        hooks[1].url,
        WebhookUrl::Literal {
            url: "https://events.pagerduty.com/v2/enqueue".into(),
            shown: "https://events.pagerduty.com/…".into()
        }
    );
    assert_eq!(hooks[1].format, NotificationFormat::PagerDuty { routing_key: SecretSource::Env("PD_KEY".into()) });
    assert_eq!(hooks[1].signing_secret, None);
    assert_eq!(hooks[2].url.shown(), "https://events.eu.pagerduty.com/…");
    assert_eq!(hooks[2].format, NotificationFormat::PagerDuty { routing_key: SecretSource::File("/run/pd".into()) });
    assert_eq!((&hooks[3].format, &hooks[3].signing_secret), (&NotificationFormat::Json, &None));
}

#[test]
fn a_webhook_s_mistakes_are_reported_where_they_are_written_and_no_secret_is_quoted() {
    let cases: &[(&str, &str)] = &[
        (
            "{ url: \"https://h.example.com/x\", format: team }",
            "11:47: unknown notification format \"team\"; did you mean \"teams\"?",
        ),
        (
            "{ url: \"https://h.example.com/x\", format: pager_duty }",
            "11:47: unknown notification format \"pager_duty\"; did you mean \"pagerduty\"?",
        ),
        (
            "{ url: \"https://h.example.com/x\", format: slack, routing_key: { env: K } }",
            "11:54: `routing_key` goes with `format: pagerduty` only; this webhook's format is slack",
        ),
        (
            "{ url: \"https://h.example.com/x\", routing_key: { env: K } }",
            "11:39: `routing_key` goes with `format: pagerduty` only; this webhook's format is json",
        ),
        (
            "{ format: pagerduty }",
            "11:5: missing required key \"routing_key\" (the integration key of PagerDuty's Events API v2",
        ),
        ("{ format: teams }", "11:5: missing required key \"url\""),
        (
            "{ format: pagerduty, routing_key: R0UTINGKEYLITERAL }",
            "11:39: a secret is never written in the manifest, which anyone who can read the repository reads",
        ),
        (
            "{ url: \"https://h.example.com/x\", secret: HMACKEYLITERAL }",
            "11:47: a secret is never written in the manifest",
        ),
        ("{ url: \"https://h.example.com/x\", secret: { env: A, file: /b } }", "11:47: write exactly one of"),
        (
            "{ url: \"https://h.example.com/x\", secret: { vault: x } }",
            "11:49: unknown key \"vault\"; expected one of: env, file",
        ),
        ("{ format: pagerduty, routing_key: { env: 1BAD } }", "11:46: invalid environment variable name \"1BAD\""),
    ];
    for (hook, expected) in cases {
        let errs = errors(&format!("{SMALL}notifications:\n  - {hook}\n"));
        assert_eq!(errs.len(), 1, "{hook}: {errs:#?}");
        assert!(errs[0].starts_with(expected), "{hook}: expected {expected:?}, found {:?}", errs[0]);
        for secret in ["R0UTINGKEYLITERAL", "HMACKEYLITERAL"] {
            assert!(!errs[0].contains(secret), "{errs:#?}");
        }
    }
    // A misspelt format is reported once, not again as what does not go with it.
    let errs = errors(&format!("{SMALL}notifications:\n  - {{ format: pagerdty, routing_key: {{ env: K }} }}\n"));
    assert_eq!(errs.len(), 1, "{errs:#?}");
}

/// `routing_key` is required with `format: pagerduty` and refused otherwise, which the
/// schema says with `if`/`then`/`else`: `EVERY_KEY` cannot hold it.
#[test]
fn a_routing_key_goes_with_pagerduty_only_in_the_schema_too() {
    let schema = rollwave_manifest::manifest_schema();
    let rule = &schema["$defs"]["notification"]["allOf"][0];
    assert_eq!(rule["if"]["properties"]["format"]["const"], "pagerduty");
    assert_eq!(rule["then"]["required"], serde_json::json!(["routing_key"]));
    assert_eq!(rule["else"]["required"], serde_json::json!(["url"]));
    assert_eq!(rule["else"]["not"]["required"], serde_json::json!(["routing_key"]));
    // And the decoder: without `format: pagerduty` a routing key is refused, with it required.
    parse(&format!("{SMALL}notifications:\n  - {{ format: pagerduty, routing_key: {{ env: K }} }}\n"));
    assert_eq!(errors(&format!("{SMALL}notifications:\n  - {{ format: pagerduty }}\n")).len(), 1);
    assert_eq!(
        errors(&format!("{SMALL}notifications:\n  - {{ url: \"https://h/x\", routing_key: {{ env: K }} }}\n")).len(),
        1
    );
}

#[test]
fn errors_display_as_file_line_col() {
    let err = parse_manifest("dir/p.yaml", "watch: 1x\n").unwrap_err();
    assert_eq!(err.errors[3].location, Location { line: 1, col: 8 });
    let text = err.to_string();
    assert!(text.starts_with("dir/p.yaml:1:1: missing required key \"service\"\n"), "{text}");
    assert!(text.ends_with("dir/p.yaml:1:8: invalid duration \"1x\": unknown unit 'x'; write a whole number and a unit (d, h, m or s), largest unit first, e.g. 90s, 30m, 12h, 2d or 1h30m"), "{text}");
    // Usable as a boxed error.
    let _: Box<dyn std::error::Error> = Box::new(err);
}

// ---------------------------------------------------------------------------------------
// Robustness

/// A tiny deterministic generator, so failures reproduce without a dependency.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Parses, and when it succeeds also plans, so a manifest the parser accepts is one the
/// core can use.
fn parse_and_plan(text: &str) {
    if let Ok(manifest) = parse_manifest("fuzz.yaml", text) {
        let _ = Plan::new(manifest).lead_time();
    }
}

#[test]
fn no_prefix_of_the_example_panics() {
    for (end, _) in EXAMPLE.char_indices() {
        parse_and_plan(&EXAMPLE[..end]);
    }
}

#[test]
fn random_byte_flips_do_not_panic() {
    // Bytes that matter to YAML and to the manifest's own grammars, plus arbitrary ones.
    const INTERESTING: &[u8] = b" \t\n:-,[]{}#&*!|>'\"%@`?0123456789.smhd/";
    // ROLLWAVE_FUZZ_ITERATIONS=1000000 for a longer local run.
    let iterations = std::env::var("ROLLWAVE_FUZZ_ITERATIONS").ok().and_then(|n| n.parse().ok()).unwrap_or(3000);
    let mut rng = Lcg(0x5eed);
    for _ in 0..iterations {
        let mut bytes = EXAMPLE.as_bytes().to_vec();
        for _ in 0..=rng.below(6) {
            let at = rng.below(bytes.len());
            bytes[at] = match rng.below(4) {
                0 => rng.next() as u8,
                _ => INTERESTING[rng.below(INTERESTING.len())],
            };
        }
        parse_and_plan(&String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn deeply_nested_or_odd_documents_are_errors_not_crashes() {
    let deep_block = format!("service:\n  {}x\n", "- ".repeat(5000));
    assert!(errors(&deep_block)[0].contains("nested too deeply"));
    let deep_flow = format!("service: {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
    assert!(errors(&deep_flow)[0].contains("YAML syntax error"));
    for odd in [
        "",
        "---",
        "---\n...\n",
        "~",
        "a: &x 1\nb: *x\n",
        "a: !!str b\n",
        "? [a]\n: b\n",
        "\u{feff}a: b",
        "a: b\n---\nc: d\n",
    ] {
        assert!(parse_manifest("odd.yaml", odd).is_err(), "{odd:?}");
    }
}

// ---------------------------------------------------------------------------------------
// The schema and the decoder agree

/// Every key of every object type on a line of its own, tagged with its `$defs` name in
/// the schema, so that each can be deleted in turn (with the lines nested under it).
const EVERY_KEY: &str = "\
service: checkout                 # manifest
environments:                     # manifest
  prod:
    regions:                      # environment
      r1:
        timezone: UTC             # region
        zones:                    # region
          a: 2
    require_signatures: false     # environment
    exec:                         # environment
      deploy: ./deploy.sh {{zone}}  # exec
      rollback: ./undo.sh         # exec
      timeout: 5m                 # exec
  lambdas:
    regions:                      # environment
      us-east-1:
        functions:                # region
          -
            name: checkout        # function
            alias: live           # function
            queue: \"arn:aws:sqs:us-east-1:123456789012:orders\"  # function
            canary_alias: next    # function
            router:               # function
              stable: \"127.0.0.1:9001\"  # functionRouter
              canary: \"127.0.0.1:9002\"  # functionRouter
monitors:                         # manifest
  -
    name: home                    # monitor
    every: 30s                    # monitor
    request:                      # monitor
      method: GET                 # monitorRequest
      path: /health               # monitorRequest
      headers: { x-probe: \"1\" }   # monitorRequest
      body: hi                    # monitorRequest
    expect:                       # monitor
      status: 200                 # monitorExpect
      body_contains: ok           # monitorExpect
      max_latency: 2s             # monitorExpect
notifications:                    # manifest
  -
    url: http://127.0.0.1:9/hook  # notification
    format: slack                 # notification
    secret: { env: HOOK_KEY }     # notification
    on: [halted, blocked]         # notification
    blocked_after: 10m            # notification
strategy:                         # manifest
  one_box:                        # strategy
    hosts: 1                      # oneBoxSettings
    max_share: 10%                # oneBoxSettings
    judge:                        # oneBoxSettings
      method: sequential          # judgeSettings
      alpha: 0.01                 # judgeSettings
      min_samples: 50             # judgeSettings
      metrics:                    # judgeSettings
        -
          metric: error_rate      # judgedMetric
          direction: increase     # judgedMetric
          critical: true          # judgedMetric
          allowed_increase: 1.0   # judgedMetric
    bake:                         # oneBoxSettings
      time: 1h                    # bakeSettings
      min_datapoints: 5           # bakeSettings
  rolling:                        # strategy
    batch: 33%                    # rolling
    zone_bake: 1m                 # rolling
    max_failures: 0               # rolling
    deploy_timeout: 10m           # rolling
    steps: [25%, 50%, 100%]       # rolling
  bake: 1h                        # strategy
stages:                           # manifest
  -
    name: prod                    # stage
    environment: prod             # stage
    approval: false               # stage
    tests:                        # stage
      -
        name: t                   # test
        run: ./t.sh               # test
        timeout: 5m               # test
    bake: 1h                      # stage
    windows:                      # stage
      allow: [\"daily 00:00-24:00\"]  # windows
      block: [\"2026-12-25\"]       # windows
    one_box: true                 # stage
    rolling:                      # stage
      batch: 2                    # rolling
    waves:                        # stage
      -
        name: w                   # wave
        regions: [r1]             # wave
        bake: 1h                  # wave
        one_box: false            # wave
        rolling:                  # wave
          zone_bake: 0s           # rolling
alarms:                           # manifest
  -
    name: a                       # alarm
    metric: error_rate            # alarm
    scope: zone                   # alarm
    threshold: 0.5                # alarm
    period: 1m                    # alarm
    datapoints: 1 of 1            # alarm
    missing: ignore               # alarm
    source: builtin               # alarm
windows:                          # manifest
  allow: []                       # windows
  block: []                       # windows
watch: 1h                         # manifest
signing_keys:                     # manifest
  ci: RWRoQGcwxDp2DmUquBftUVqcf3e4WFpzmLxhFzQtXmkkt9KyidJH0sDt
";

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

#[test]
fn the_decoder_requires_exactly_what_the_schema_requires() {
    parse(EVERY_KEY);
    let schema = rollwave_manifest::manifest_schema();
    let lines: Vec<&str> = EVERY_KEY.lines().collect();
    let mut seen = std::collections::BTreeSet::new();
    for (i, line) in lines.iter().enumerate() {
        let Some((content, object)) = line.split_once("# ") else { continue };
        let key = content.trim().split(':').next().unwrap_or_default();
        let def = if object == "manifest" { &schema } else { &schema["$defs"][object] };
        assert!(def["properties"].get(key).is_some(), "{object}.{key} is not in the schema");
        seen.insert((object, key));
        // Delete the line and everything nested under it; a parent left without keys
        // becomes `{}` rather than null.
        let nested = lines[i + 1..].iter().take_while(|l| indent(l) > indent(line)).count();
        let mut kept: Vec<String> =
            lines[..i].iter().chain(&lines[i + 1 + nested..]).map(|l| (*l).to_owned()).collect();
        let parent = (0..i).rev().find(|&p| indent(lines[p]) < indent(line)).unwrap_or(0);
        let has_siblings = |at: usize| lines.get(at).is_some_and(|l| indent(l) == indent(line));
        let siblings_before = (parent + 1..i).any(|p| indent(lines[p]) == indent(line));
        if i > 0 && !siblings_before && !has_siblings(i + 1 + nested) && !kept[parent].trim_start().starts_with('-') {
            kept[parent] = kept[parent].replacen(':', ": {}", 1);
        }
        let text: String = kept.iter().map(|l| format!("{l}\n")).collect();
        let required = def["required"].as_array().is_some_and(|r| r.iter().any(|k| k == key));
        let result = parse_manifest("p.yaml", &text);
        if object == "region" && matches!(key, "zones" | "functions") {
            // One of the two is required: the schema's `oneOf`, the decoder's message.
            assert!(def["oneOf"].is_array(), "region's oneOf");
            let errs = result.expect_err(&format!("a region without {key}")).to_string();
            assert!(errs.contains("needs `zones` (hosts)"), "{object}.{key}: {errs}");
        } else if object == "notification" && key == "url" {
            // Required but with `format: pagerduty`: the schema's `else`, the decoder's message.
            assert_eq!(def["allOf"][0]["else"]["required"], serde_json::json!(["url"]), "notification's url rule");
            let errs = result.expect_err("a slack webhook without url").to_string();
            assert!(errs.contains("missing required key \"url\""), "{object}.{key}: {errs}");
        } else if required {
            let errs = result.expect_err(&format!("{object}.{key} is required")).to_string();
            assert!(errs.contains(&format!("missing required key \"{key}\"")), "{object}.{key}: {errs}");
        } else if let Err(e) = result {
            panic!("{object}.{key} is optional in the schema, but leaving it out gives:\n{e}");
        }
    }
    // Every key of every object was exercised, except `query`, which is required with
    // `source: prometheus` and refused otherwise: see `a_query_goes_with_prometheus_only`.
    seen.insert(("alarm", "query"));
    // And `routing_key`, required with `format: pagerduty` and refused otherwise: see
    // `a_routing_key_goes_with_pagerduty_only_in_the_schema_too`.
    seen.insert(("notification", "routing_key"));
    // Likewise `namespace`, `dimensions` and `statistic` go with `source: cloudwatch`: see
    // `a_cloudwatch_alarm_reads_the_version_in_flight_and_is_refused_where_it_cannot_work`.
    for key in ["namespace", "dimensions", "statistic"] {
        seen.insert(("alarm", key));
    }
    for (object, def) in std::iter::once(("manifest", &schema))
        .chain(schema["$defs"].as_object().unwrap().iter().map(|(k, v)| (k.as_str(), v)))
    {
        for key in def["properties"].as_object().into_iter().flat_map(|p| p.keys()) {
            assert!(seen.contains(&(object, key.as_str())), "{object}.{key} is not in EVERY_KEY");
        }
    }
}

#[test]
fn the_schema_is_draft_2020_12_and_closed() {
    let schema = rollwave_manifest::manifest_schema();
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(schema["required"], serde_json::json!(["service", "environments", "stages"]));
    assert_eq!(schema["$defs"]["duration"]["pattern"], "^([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?$");
    assert_eq!(schema["$defs"]["alarm"]["then"]["required"], serde_json::json!(["query"]));
    assert_eq!(schema["$id"], "urn:rollwave:manifest-schema");
}

/// The manifests CI shows the schema (`check-jsonschema`) must reject: the decoder
/// refuses each of them too, with one located error.
#[test]
fn every_broken_manifest_of_the_schema_check_is_refused() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/broken");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let err = parse_manifest("broken.yaml", &text).expect_err(&path.display().to_string());
        assert!(!err.errors.is_empty() && err.errors.len() <= 2, "{}: {err}", path.display());
        seen += 1;
    }
    assert!(seen >= 10, "only {seen} broken manifests");
}

#[test]
fn a_query_goes_with_prometheus_only() {
    let text = format!(
        "{SMALL}alarms:\n  - {{ name: a, metric: error_rate, threshold: 0.5, query: up }}\n  - {{ name: b, metric: m, threshold: 1, source: prometheus }}\n"
    );
    assert_eq!(
        errors(&text),
        [
            "11:52: \"query\" is only used with `source: prometheus`; set the source or remove the query",
            "12:5: missing required key \"query\" (a PromQL query, required with `source: prometheus`)",
        ]
    );
}

#[test]
fn a_one_box_judge_is_a_switch_or_a_method_with_its_alpha() {
    use rollwave_core::manifest::{JudgeMethod, JudgeSettings};
    let judge_of = |judge: &str| {
        let text = format!(
            "service: web\nenvironments: {{ prod: {{ regions: {{ r1: {{ zones: {{ a: 2 }} }} }} }} }}\n\
             strategy: {{ one_box: {{ judge: {judge} }} }}\nstages: [{{ name: prod, environment: prod }}]\n"
        );
        parse_manifest("j.yaml", &text).map(|m| {
            let one_box = m.stages[0].waves[0].strategy.one_box.clone().unwrap();
            (one_box.judge, one_box.judging)
        })
    };
    assert_eq!(judge_of("false").unwrap(), (false, JudgeSettings::default()));
    assert_eq!(judge_of("true").unwrap(), (true, JudgeSettings::default()));
    assert_eq!(
        judge_of("{ method: sequential, alpha: 0.05 }").unwrap(),
        (true, JudgeSettings { alpha: 0.05, ..JudgeSettings::defaults(JudgeMethod::Sequential) })
    );
    assert_eq!(
        judge_of("{ method: mann_whitney }").unwrap(),
        (true, JudgeSettings::defaults(JudgeMethod::MannWhitney))
    );
    let err = judge_of("{ method: bayes }").unwrap_err().to_string();
    assert!(err.contains("j.yaml:3:") && err.contains("mann_whitney, sequential or off"), "{err}");
    assert_eq!(
        judge_of("{ method: off }").unwrap(),
        (false, JudgeSettings::defaults(JudgeMethod::Off)),
        "no verdict to wait for"
    );
    let err = judge_of("{ method: sequential, alpha: 0.9 }").unwrap_err().to_string();
    assert!(err.contains("j.yaml:3:") && err.contains("alpha 0.9 is outside"), "{err}");
    let err = judge_of("{ metod: sequential }").unwrap_err().to_string();
    assert!(err.contains("j.yaml:3:") && err.contains("metod"), "{err}");
}

#[test]
fn a_judge_s_metrics_and_least_samples_are_set_in_the_manifest_and_checked_where_they_are_written() {
    use rollwave_core::alarm::TrafficMetric;
    use rollwave_core::judge::Direction;
    use rollwave_core::manifest::{JudgeMethod, JudgeSettings, JudgedMetric};
    let judging_of = |judge: &str| {
        let text = format!(
            "service: web\nenvironments: {{ prod: {{ regions: {{ r1: {{ zones: {{ a: 2 }} }} }} }} }}\n\
             strategy:\n  one_box:\n    judge:\n{judge}\nstages: [{{ name: prod, environment: prod }}]\n"
        );
        parse_manifest("j.yaml", &text).map(|m| m.stages[0].waves[0].strategy.one_box.clone().unwrap().judging)
    };
    let judging = judging_of(
        "      min_samples: 400\n      metrics:\n        - { metric: latency_p99_ms, allowed_increase: 1.5 }\n        - { metric: error_rate, critical: false }",
    )
    .unwrap();
    assert_eq!(judging.min_samples, 400);
    assert_eq!(
        judging.metrics,
        [
            JudgedMetric {
                metric: TrafficMetric::LatencyP99Ms,
                direction: Direction::Increase,
                critical: true,
                allowed_increase: 1.5
            },
            JudgedMetric {
                metric: TrafficMetric::ErrorRate,
                direction: Direction::Increase,
                critical: false,
                allowed_increase: 1.0
            },
        ]
    );
    // Each method's defaults fill what a metric leaves out.
    let judging =
        judging_of("      method: mann_whitney\n      metrics: [{ metric: latency_p99_ms, direction: either }]")
            .unwrap();
    assert_eq!(
        judging.metrics,
        [JudgedMetric { direction: Direction::Either, ..JudgeSettings::defaults(JudgeMethod::MannWhitney).metrics[1] }]
    );
    assert_eq!(judging.min_samples, 3);
    let refused = |judge: &str, place: &str, words: &str| {
        let err = judging_of(judge).unwrap_err().to_string();
        assert!(err.contains(place) && err.contains(words), "{judge}: {err}");
    };
    refused("      metrics: [{ metric: cpu_percent }]", "j.yaml:6:27", "not measured per host from traffic");
    refused("      metrics: [{ metric: eror_rate }]", "j.yaml:6:27", "did you mean");
    refused("      metrics: [{ metric: monitor:home:success_rate }]", "j.yaml:6:27", "watch it with an alarm");
    refused("      metrics: []", "j.yaml:6:16", "could never fail a one-box");
    refused("      metrics: [{ critical: true }]", "j.yaml:6:17", "metric");
    refused("      metrics: [{ metric: error_rate }, { metric: error_rate }]", "j.yaml:6:41", "listed twice");
    refused("      metrics: [{ metric: error_rate, direction: decrease }]", "j.yaml:6:50", "tests for a rise only");
    refused("      metrics: [{ metric: error_rate, allowed_increase: 0.5 }]", "j.yaml:6:57", "below 1");
    refused("      min_samples: 0", "j.yaml:6:20", "write 1 or more");
}

// ---------------------------------------------------------------------------------------
// Functions environments

const FUNCTIONS: &str = "\
service: checkout
environments:
  lambdas:
    regions:
      us-east-1: { functions: [{ name: checkout, alias: live, router: { stable: \"10.0.0.1:80\", canary: \"lb.internal:8081\" } }, { name: checkout-worker, alias: live, queue: \"arn:aws:sqs:us-east-1:123456789012:orders\", canary_alias: next }] }
      eu-west-1: { functions: [{ name: checkout, alias: live }] }
strategy:
  one_box: { max_share: 10%, bake: 10m }
  rolling: { steps: [20%, 60%, 100%], zone_bake: 5m }
stages:
  - name: prod
    environment: lambdas
    waves:
      - { name: first, regions: [us-east-1] }
      - { name: rest, regions: [eu-west-1], rolling: { steps: [50%, 100%] } }
";

#[test]
fn a_region_of_functions_is_cut_into_one_zone_of_slices_per_step_of_its_wave() {
    let m = parse(FUNCTIONS);
    let env = &m.environments[0];
    assert!(env.is_functions());
    let us = &env.regions[0];
    assert_eq!(
        us.functions,
        vec![
            Function {
                name: "checkout".into(),
                alias: "live".into(),
                queue: None,
                canary_alias: "canary".into(),
                router: Some(rollwave_core::manifest::TrackAddresses {
                    stable: "10.0.0.1:80".into(),
                    canary: "lb.internal:8081".into(),
                }),
            },
            Function {
                name: "checkout-worker".into(),
                alias: "live".into(),
                queue: Some("arn:aws:sqs:us-east-1:123456789012:orders".into()),
                canary_alias: "next".into(),
                router: None,
            },
        ]
    );
    let zones = |r: &rollwave_core::manifest::Region| -> Vec<(String, u32)> {
        r.zones.iter().map(|z| (z.name.clone(), z.hosts)).collect()
    };
    assert_eq!(
        zones(us),
        vec![("us-east-1-share-20".into(), 20), ("us-east-1-share-60".into(), 40), ("us-east-1-share-100".into(), 40)]
    );
    assert_eq!(zones(&env.regions[1]), vec![("eu-west-1-share-50".into(), 50), ("eu-west-1-share-100".into(), 50)]);
    // Each step is one batch; the one-box is its share of the 100 slices.
    let first = &m.stages[0].waves[0].strategy;
    assert_eq!(first.rolling.batch, BatchSize::Share(BasisPoints::FULL));
    assert_eq!(first.one_box.as_ref().map(|o| o.hosts), Some(100));
    let plan = Plan::new(m.clone());
    let env_id = rollwave_core::plan::EnvId(0);
    let range = plan.one_box_hosts(env_id, rollwave_core::plan::RegionId(0), first).expect("a one-box");
    assert_eq!(range.len(), 10, "10 % of the region's invocations");
    // Regions of hosts keep their layout.
    assert!(!parse(EVERY_KEY).environments[0].is_functions());
}

#[test]
fn a_functions_environment_s_mistakes_are_reported_where_they_are_written() {
    let both = FUNCTIONS.replace(
        "eu-west-1: { functions: [{ name: checkout, alias: live }] }",
        "eu-west-1: { zones: { a: 1 }, functions: [{ name: checkout, alias: live }] }",
    );
    assert_eq!(
        errors(&both),
        ["6:48: region \"eu-west-1\" has both `zones` and `functions`; a region is hosts or functions, not both"]
    );
    let mixed = FUNCTIONS.replace(
        "eu-west-1: { functions: [{ name: checkout, alias: live }] }",
        "eu-west-1: { zones: { euw1-az1: 2 } }",
    );
    let errs = errors(&mixed);
    assert!(errs[0].starts_with("6:18: region \"eu-west-1\" is hosts but region \"us-east-1\""), "{errs:?}");
    let alias = FUNCTIONS.replace("{ name: checkout, alias: live }]", "{ name: checkout, alias: \"7\" }]");
    assert_eq!(
        errors(&alias),
        ["6:57: alias name \"7\" is a version number; name the alias callers invoke, e.g. `live`"]
    );
    let name = FUNCTIONS.replace("checkout-worker", "arn:aws:lambda:x");
    assert!(
        errors(&name)[0].contains("function name \"arn:aws:lambda:x\" must be 1 to 64 letters"),
        "{:?}",
        errors(&name)
    );
    let twice = FUNCTIONS.replace("checkout-worker", "checkout");
    assert!(
        errors(&twice)[0].starts_with("5:128: function \"checkout\" is already listed at 5:32"),
        "{:?}",
        errors(&twice)
    );
    let falling = FUNCTIONS.replace("[20%, 60%, 100%]", "[20%, 10%, 100%]");
    assert_eq!(errors(&falling), ["9:27: steps rise: 10% does not come after 20%"]);
    let short = FUNCTIONS.replace("[20%, 60%, 100%]", "[20%, 60%]");
    assert_eq!(
        errors(&short),
        ["9:27: the last step is 100%: a rollout ends with every invocation on the new version"]
    );
    let fraction = FUNCTIONS.replace("[20%, 60%, 100%]", "[20.5%, 100%]");
    assert!(errors(&fraction)[0].starts_with("9:22: a step is a whole percentage above 0"), "{:?}", errors(&fraction));
    let big_one_box = FUNCTIONS.replace("max_share: 10%", "max_share: 50%");
    let errs = errors(&big_one_box);
    assert!(
        errs.iter().any(|e| e.contains("wave \"first\": the one-box's share (50%) must be below the first step (20%)")),
        "{errs:?}"
    );
    let exec = FUNCTIONS.replace("  lambdas:\n    regions:", "  lambdas:\n    exec: { deploy: ./d.sh }\n    regions:");
    assert!(
        errors(&exec)[0].contains("environment \"lambdas\" is functions, which rollwave deploys itself"),
        "{:?}",
        errors(&exec)
    );
    let two_routed = FUNCTIONS.replace(
        "canary_alias: next }",
        "canary_alias: next, router: { stable: \"10.0.0.2:80\", canary: \"10.0.0.2:81\" } }",
    );
    let e = errors(&two_routed);
    assert!(e[0].contains("function \"checkout\" of this region already takes the router's traffic"), "{e:?}");
    let bad_address = FUNCTIONS.replace("lb.internal:8081", "http://lb/");
    let e = errors(&bad_address);
    assert!(e[0].contains("\"http://lb/\" is not an address host:port"), "{e:?}");
    let same_alias = FUNCTIONS.replace("canary_alias: next", "canary_alias: live");
    let e = errors(&same_alias);
    assert!(e[0].contains("the canary alias must differ from the alias \"live\""), "{e:?}");
    let neither = FUNCTIONS
        .replace("eu-west-1: { functions: [{ name: checkout, alias: live }] }", "eu-west-1: { timezone: UTC }");
    assert!(errors(&neither)[0].contains("region \"eu-west-1\" needs `zones` (hosts)"), "{:?}", errors(&neither));
}

#[test]
fn a_cloudwatch_alarm_reads_the_version_in_flight_and_is_refused_where_it_cannot_work() {
    let with = |alarm: &str| format!("{FUNCTIONS}alarms:\n  - {alarm}\n");
    let m = parse(&with("{ name: e, source: cloudwatch, metric: Errors, threshold: \"> 5\" }"));
    let MetricRef::CloudWatch(metric) = &m.alarms[0].metric else { panic!("{:?}", m.alarms[0].metric) };
    assert_eq!(metric.namespace, "AWS/Lambda");
    assert_eq!(metric.statistic, "Sum");
    assert_eq!(
        metric.dimensions,
        [
            ("FunctionName".to_owned(), "{{function}}".to_owned()),
            ("Resource".to_owned(), "{{function}}:{{alias}}".to_owned()),
            ("ExecutedVersion".to_owned(), "{{function_version}}".to_owned()),
        ]
    );
    let m = parse(&with(
        "{ name: e, source: cloudwatch, namespace: Shop/Checkout, metric: Failures, statistic: p99, \
         dimensions: { Fn: \"{{function}}\", V: \"{{function_version}}\" }, threshold: \"> 5\" }",
    ));
    let MetricRef::CloudWatch(metric) = &m.alarms[0].metric else { panic!() };
    assert_eq!((metric.namespace.as_str(), metric.statistic.as_str()), ("Shop/Checkout", "p99"));

    let errs = |alarm: &str| errors(&with(alarm)).join("\n");
    let e = errs("{ name: e, source: cloudwatch, metric: Errors, threshold: 5, scope: zone }");
    assert!(e.contains("a CloudWatch alarm watches a region's functions"), "{e}");
    let e = errs("{ name: e, source: cloudwatch, metric: Errors, threshold: 5, dimensions: { F: \"{{fn}}\" } }");
    assert!(e.contains("{{fn}} is not filled in"), "{e}");
    let e = errs("{ name: e, source: cloudwatch, metric: Errors, threshold: 5, statistic: Median }");
    assert!(e.contains("\"Median\" is not a statistic"), "{e}");
    let e = errs("{ name: e, source: cloudwatch, namespace: Mine, metric: Errors, threshold: 5 }");
    assert!(e.contains("missing required key \"dimensions\""), "{e}");
    let e = errs("{ name: e, metric: error_rate, threshold: 0.1, statistic: Sum }");
    assert!(e.contains("\"statistic\" is only used with `source: cloudwatch`"), "{e}");
    // Where no environment has functions, such an alarm could never fire.
    let hosts = "service: s\nenvironments:\n  prod:\n    regions: { r1: { zones: { a: 2 } } }\n\
        stages:\n  - { name: prod, environment: prod }\n\
        alarms:\n  - { name: e, source: cloudwatch, metric: Errors, threshold: 5 }\n";
    let e = errors(hosts).join("\n");
    assert!(e.contains("no environment has functions; it could never fire"), "{e}");
}

// ---------------------------------------------------------------------------------------
// Signed artifacts

const CI_KEY: &str = "RWRoQGcwxDp2DmUquBftUVqcf3e4WFpzmLxhFzQtXmkkt9KyidJH0sDt";
const OTHER_KEY: &str = "RWRmynhOGIPpcG7ARe7VfIvk2wl545jOpynMh7YTB54LNQZMfBGVZa7w";

/// SMALL with `keys` as its signing keys (none when empty) and prod requiring signatures.
fn signed(keys: &str, prod: &str) -> String {
    let text = SMALL.replace("  prod:\n", &format!("  prod:\n{prod}"));
    if keys.is_empty() { text } else { format!("{text}signing_keys:\n{keys}") }
}

#[test]
fn signing_keys_are_kept_and_an_environment_may_require_signatures() {
    let m =
        parse(&signed(&format!("  ci-2026: {CI_KEY}\n  other: \"{OTHER_KEY}\"\n"), "    require_signatures: true\n"));
    let keys: Vec<(&str, &str)> = m.signing_keys.iter().map(|k| (k.name.as_str(), k.public_key.as_str())).collect();
    assert_eq!(keys, [("ci-2026", CI_KEY), ("other", OTHER_KEY)]);
    assert!(m.environments[0].require_signatures);
    let m = parse(&signed(&format!("  ci: {CI_KEY}\n"), ""));
    assert!(!m.environments[0].require_signatures, "not required unless said");
}

#[test]
fn a_signature_requirement_that_could_not_take_effect_is_refused_where_written() {
    let errs = errors(&signed("", "    require_signatures: true\n"));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("4:25: environment \"prod\" requires signatures but the manifest names no key"),
        "{errs:?}"
    );
    let exec = signed(&format!("  ci: {CI_KEY}\n"), "    require_signatures: true\n    exec: { deploy: ./ship }\n");
    let errs = errors(&exec);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("4:25: environment \"prod\" deploys with exec commands"), "{errs:?}");
}

#[test]
fn a_signing_key_that_is_not_a_minisign_public_key_is_refused_at_its_value() {
    let truncated = &CI_KEY[..40];
    let errs = errors(&signed(&format!("  ci: {truncated}\n  again: {OTHER_KEY}\n  twice: {OTHER_KEY}\n"), ""));
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs[0].starts_with("11:7: expected a minisign public key"), "{errs:?}");
    assert!(errs[1].starts_with("13:10: signing key \"twice\" is the same key as \"again\""), "{errs:?}");
    let errs = errors(&format!("{SMALL}signing_keys: {{}}\n"));
    assert!(errs[0].contains("signing_keys names no key"), "{errs:?}");
}
