//! Reads a scenario file, checking every name it uses against the manifest; every error
//! is reported as `FILE:LINE:COL: message`.

use crate::scenario::*;
use rollwave_core::manifest::Manifest;
use rollwave_manifest::ManifestErrors;
use rollwave_manifest::yaml::{Decoder, Node, hint};
use std::time::Duration;

const SCENARIO: &[&str] = &[
    "start",
    "initial_version",
    "traffic",
    "deploy_time",
    "test_time",
    "releases",
    "incidents",
    "operators",
    "host_failures",
];
const TRAFFIC: &[&str] = &["requests_per_host_per_s", "error_rate", "latency_p99_ms", "host_spread", "daily_swing"];
const RELEASE: &[&str] = &["version", "at", "defect"];
const DEFECT: &[&str] = &["error_rate", "latency_p99_ms", "appears_after", "fails_tests"];
const INCIDENT: &[&str] = &["at", "for", "environment", "region", "zone", "error_rate", "latency_p99_ms"];
const OPERATOR: &[&str] = &["at", "action", "release", "stage"];
const HOST_FAILURE: &[&str] = &["at", "host", "environment"];

/// Parses a scenario for `manifest`.
pub fn parse_scenario(file: &str, text: &str, manifest: &Manifest) -> Result<Scenario, ManifestErrors> {
    let mut d = Decoder::new(file);
    let scenario = d.parse_document(text).and_then(|root| decode(&mut d, &root, manifest));
    d.finish(scenario)
}

fn rate(d: &mut Decoder, node: &Node) -> Option<f64> {
    d.parsed(node, "a rate from 0 to 1", |s| match s.trim().parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("expected a rate from 0 to 1 (0.05 is 5%), found {s:?}")),
    })
}

fn non_negative(d: &mut Decoder, node: &Node) -> Option<f64> {
    d.parsed(node, "a number", |s| match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("expected a number of at least 0, found {s:?}")),
    })
}

fn decode(d: &mut Decoder, root: &Node, manifest: &Manifest) -> Option<Scenario> {
    let map = d.mapping(root, SCENARIO)?;
    let start = d.required(&map, "start", Decoder::timestamp);
    let initial_version = d.optional(&map, "initial_version", Decoder::string).unwrap_or_else(|| "v1".to_owned());
    let traffic = d.required(&map, "traffic", |d, n| {
        let t = d.mapping(n, TRAFFIC)?;
        let requests_per_host_per_s = d.required(&t, "requests_per_host_per_s", non_negative);
        let error_rate = d.optional(&t, "error_rate", rate).unwrap_or(0.0);
        let latency_p99_ms = d.optional(&t, "latency_p99_ms", non_negative).unwrap_or(100.0);
        let host_spread = d
            .optional(&t, "host_spread", |d, n| {
                let spread = non_negative(d, n)?;
                if spread > 2.0 {
                    d.error(n, format!("host_spread {spread} would make hosts differ by a factor of e^{spread} or more; write a spread from 0 to 2, such as 0.2"));
                    return None;
                }
                Some(spread)
            })
            .unwrap_or(0.0);
        let daily_swing = d.optional(&t, "daily_swing", rate).unwrap_or(0.0);
        Some(Traffic {
            requests_per_host_per_s: requests_per_host_per_s?,
            error_rate,
            latency_p99_ms,
            host_spread,
            daily_swing,
        })
    });
    let deploy_time = d.optional(&map, "deploy_time", Decoder::duration).unwrap_or(Duration::from_secs(120));
    let test_time = d.optional(&map, "test_time", Decoder::duration).unwrap_or(Duration::from_secs(300));

    let releases = d
        .optional(&map, "releases", |d, n| {
            d.list(n, |d, item| {
                let r = d.mapping(item, RELEASE)?;
                let version = d.required(&r, "version", Decoder::name);
                let at = d.required(&r, "at", Decoder::duration);
                let defect = d.optional(&r, "defect", |d, n| {
                    let m = d.mapping(n, DEFECT)?;
                    Some(Defect {
                        error_rate: d.optional(&m, "error_rate", rate),
                        latency_p99_ms: d.optional(&m, "latency_p99_ms", non_negative),
                        appears_after: d.optional(&m, "appears_after", Decoder::duration).unwrap_or_default(),
                        fails_tests: d.optional(&m, "fails_tests", Decoder::bool).unwrap_or(false),
                    })
                });
                Some((item, ScenarioRelease { version: version?, at: at?, defect }))
            })
        })
        .unwrap_or_default();
    let mut versions: Vec<&str> = Vec::new();
    for (node, r) in &releases {
        if versions.contains(&r.version.as_str()) || r.version == initial_version {
            d.error(*node, format!("release {:?} is listed twice (or is the initial version)", r.version));
        }
        versions.push(&r.version);
    }

    let env_names: Vec<&str> = manifest.environments.iter().map(|e| e.name.as_str()).collect();
    let environment = |d: &mut Decoder, n: &Node| -> Option<String> {
        let name = d.name(n)?;
        if !env_names.contains(&name.as_str()) {
            d.error(n, format!("no environment {name:?}{}", hint(&name, env_names.iter().copied())));
            return None;
        }
        Some(name)
    };

    let incidents = d
        .optional(&map, "incidents", |d, n| {
            d.list(n, |d, item| {
                let m = d.mapping(item, INCIDENT)?;
                let at = d.required(&m, "at", Decoder::duration);
                let duration = d.required(&m, "for", Decoder::positive_duration);
                let env = d.optional(&m, "environment", environment);
                let region = d.required(&m, "region", Decoder::name)?;
                let zone = d.optional(&m, "zone", Decoder::name);
                let regions: Vec<&rollwave_core::manifest::Region> = manifest
                    .environments
                    .iter()
                    .filter(|e| env.as_ref().is_none_or(|n| *n == e.name))
                    .flat_map(|e| &e.regions)
                    .collect();
                let matching: Vec<_> = regions.iter().filter(|r| r.name == region).collect();
                let at_region = m.get("region").unwrap_or(item);
                if matching.is_empty() {
                    let names: Vec<&str> = regions.iter().map(|r| r.name.as_str()).collect();
                    d.error(at_region, format!("no region {region:?}{}", hint(&region, names.iter().copied())));
                    return None;
                }
                if let Some(z) = &zone
                    && !matching.iter().any(|r| r.zones.iter().any(|zone| zone.name == *z))
                {
                    let names: Vec<&str> = matching.iter().flat_map(|r| &r.zones).map(|z| z.name.as_str()).collect();
                    let at_zone = m.get("zone").unwrap_or(item);
                    d.error(at_zone, format!("region {region:?} has no zone {z:?}{}", hint(z, names)));
                    return None;
                }
                Some(Incident {
                    at: at?,
                    duration: duration?,
                    environment: env,
                    region,
                    zone,
                    error_rate: d.optional(&m, "error_rate", rate),
                    latency_p99_ms: d.optional(&m, "latency_p99_ms", non_negative),
                })
            })
        })
        .unwrap_or_default();

    let stage_names: Vec<&str> = manifest.stages.iter().map(|s| s.name.as_str()).collect();
    let verbs: Vec<(&str, OperatorVerb)> =
        OperatorVerb::NAMES.iter().filter_map(|n| OperatorVerb::from_name(n).map(|v| (*n, v))).collect();
    let operators = d
        .optional(&map, "operators", |d, n| {
            d.list(n, |d, item| {
                let m = d.mapping(item, OPERATOR)?;
                let at = d.required(&m, "at", Decoder::duration);
                let action = d.required(&m, "action", |d, n| d.one_of(n, "operator action", &verbs));
                let release = d.optional(&m, "release", |d, n| {
                    let v = d.name(n)?;
                    if !versions.contains(&v.as_str()) {
                        d.error(n, format!("no release {v:?} in this scenario{}", hint(&v, versions.iter().copied())));
                        return None;
                    }
                    Some(v)
                });
                let stage = d.optional(&m, "stage", |d, n| {
                    let s = d.name(n)?;
                    if !stage_names.contains(&s.as_str()) {
                        d.error(n, format!("no stage {s:?}{}", hint(&s, stage_names.iter().copied())));
                        return None;
                    }
                    Some(s)
                });
                let action = action?;
                let needs_release = !matches!(action, OperatorVerb::Hold | OperatorVerb::Resume);
                if needs_release && release.is_none() && m.get("release").is_none() {
                    d.error(m, "this action needs a `release`");
                    return None;
                }
                Some(OperatorAction { at: at?, action, release, stage })
            })
        })
        .unwrap_or_default();

    let host_failures = d
        .optional(&map, "host_failures", |d, n| {
            d.list(n, |d, item| {
                let m = d.mapping(item, HOST_FAILURE)?;
                let at = d.required(&m, "at", Decoder::duration);
                let env = d.optional(&m, "environment", environment);
                let host = d.required(&m, "host", Decoder::name)?;
                let exists =
                    manifest.environments.iter().filter(|e| env.as_ref().is_none_or(|n| *n == e.name)).any(|e| {
                        e.regions.iter().flat_map(|r| &r.zones).any(|z| {
                            host.strip_prefix(z.name.as_str())
                                .and_then(|rest| rest.strip_prefix('-'))
                                .and_then(|n| n.parse::<u32>().ok())
                                .is_some_and(|n| n >= 1 && n <= z.hosts && format!("{}-{n}", z.name) == host)
                        })
                    });
                if !exists {
                    let at_host = m.get("host").unwrap_or(item);
                    d.error(at_host, format!("no host {host:?}; hosts are named ZONE-N, from 1 to the zone's count"));
                    return None;
                }
                Some(HostFailure { at: at?, environment: env, host })
            })
        })
        .unwrap_or_default();

    Some(Scenario {
        start: start?,
        initial_version,
        traffic: traffic?,
        deploy_time,
        test_time,
        releases: releases.into_iter().map(|(_, r)| r).collect(),
        incidents,
        operators,
        host_failures,
    })
}
