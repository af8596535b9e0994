//! The Lambda operations a functions rollout makes, and what an alias should route to
//! when its region's slices of invocations are on given versions.
//!
//! An alias routes to its `FunctionVersion` and at most one additional version with a
//! weight (`RoutingConfig.AdditionalVersionWeights`). A step of a rollout keeps the
//! alias's version and gives the new one the step's share; the last step points the alias
//! at the new version with no weights; a rollback gives the slices back, which ends where
//! the alias began.

use crate::client::{CallError, Client};
use serde_json::json;
use std::collections::BTreeMap;
use std::fmt;

const API: &str = "2015-03-31";

/// An alias as Lambda reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct AliasState {
    pub function_version: String,
    /// Additional versions and their weights (0 to 1); empty when the alias routes to
    /// its version alone.
    pub weights: BTreeMap<String, f64>,
    pub revision_id: String,
}

/// What an alias should route to.
#[derive(Clone, Debug, PartialEq)]
pub struct AliasTarget {
    pub function_version: String,
    pub weights: BTreeMap<String, f64>,
}

impl AliasState {
    /// Whether it routes as `target` says (weights equal to the hundredth).
    pub fn routes_as(&self, target: &AliasTarget) -> bool {
        self.function_version == target.function_version
            && self.weights.len() == target.weights.len()
            && self.weights.iter().zip(&target.weights).all(|((v, w), (tv, tw))| v == tv && (w - tw).abs() < 0.005)
    }

    pub fn target(&self) -> AliasTarget {
        AliasTarget { function_version: self.function_version.clone(), weights: self.weights.clone() }
    }
}

impl fmt::Display for AliasTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "version {}", self.function_version)?;
        for (version, weight) in &self.weights {
            write!(f, " + {}% to version {version}", (weight * 100.0).round())?;
        }
        Ok(())
    }
}

impl fmt::Display for AliasState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (revision {})", self.target(), self.revision_id)
    }
}

/// What the alias should route to when `slices` of `total` hold these versions (`None`:
/// the slice is on what the alias routes to now, as before a first release).
///
/// The alias keeps its own version while it holds any slice; a version holding every
/// slice becomes the alias's version with no weights.
pub fn target_for(current: &AliasState, slices: &[(Option<&str>, u32)], total: u32) -> Result<AliasTarget, String> {
    let mut held: BTreeMap<&str, u32> = BTreeMap::new();
    for &(version, n) in slices {
        if n > 0 {
            *held.entry(version.unwrap_or(&current.function_version)).or_default() += n;
        }
    }
    let total = total.max(1);
    match held.len() {
        0 => Ok(current.target()),
        1 => {
            let only = held.keys().next().copied().unwrap_or_default();
            Ok(AliasTarget { function_version: only.to_owned(), weights: BTreeMap::new() })
        }
        2 => {
            let Some(&stays) = held.get(current.function_version.as_str()) else {
                return Err(format!(
                    "the alias routes to version {}, which is neither of the versions the rollout has \
                     ({}); someone changed it",
                    current.function_version,
                    held.keys().copied().collect::<Vec<_>>().join(", ")
                ));
            };
            let _ = stays;
            let weights = held
                .iter()
                .filter(|(v, _)| **v != current.function_version)
                .map(|(v, &n)| ((*v).to_owned(), f64::from(n) / f64::from(total)))
                .collect();
            Ok(AliasTarget { function_version: current.function_version.clone(), weights })
        }
        _ => Err(format!(
            "an alias routes to at most two versions; the region's slices are on {}",
            held.keys().copied().collect::<Vec<_>>().join(", ")
        )),
    }
}

/// A function version from a release's artifact: `7`, or a function ARN ending in `:7`
/// (`arn:aws:lambda:REGION:ACCOUNT:function:NAME:7`).
pub fn version_of_artifact(artifact: &str) -> Result<String, String> {
    let version = match artifact.strip_prefix("arn:") {
        Some(_) => {
            let parts: Vec<&str> = artifact.split(':').collect();
            if parts.len() != 8 || parts[2] != "lambda" || parts[5] != "function" {
                return Err(format!(
                    "artifact {artifact:?} is not a function version's ARN \
                     (arn:aws:lambda:REGION:ACCOUNT:function:NAME:VERSION)"
                ));
            }
            parts[7]
        }
        None => artifact,
    };
    if version.is_empty() || version.len() > 10 || !version.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "artifact {artifact:?} does not name a published function version (a number such as 7, or its ARN)"
        ));
    }
    Ok(version.to_owned())
}

/// The message attribute that carries a message's track (as `rollwave-router` sets it).
pub const TRACK_ATTRIBUTE: &str = "rollwave.track";

/// The `FilterCriteria` of the two event source mappings of an SQS-triggered function,
/// (stable, canary): the canary alias's takes messages on the canary track; the stable
/// alias's takes the rest, those without the attribute included (Lambda ORs a mapping's
/// filters).
pub fn sqs_filters() -> (serde_json::Value, serde_json::Value) {
    let pattern = |p: serde_json::Value| json!({ "Pattern": p.to_string() });
    let canary = json!({ "Filters": [
        pattern(json!({ "messageAttributes": { TRACK_ATTRIBUTE: { "stringValue": ["canary"] } } })),
    ] });
    let stable = json!({ "Filters": [
        pattern(json!({ "messageAttributes": { TRACK_ATTRIBUTE: { "stringValue": [{ "anything-but": ["canary"] }] } } })),
        pattern(json!({ "messageAttributes": { TRACK_ATTRIBUTE: { "stringValue": [{ "exists": false }] } } })),
    ] });
    (stable, canary)
}

/// An event source mapping, as far as rollwave looks at it.
#[derive(Clone, Debug, PartialEq)]
pub struct Mapping {
    pub uuid: String,
    pub filter_criteria: serde_json::Value,
}

/// Lambda in one region.
pub struct Lambda {
    client: Client,
}

impl Lambda {
    pub fn new(client: Client) -> Lambda {
        Lambda { client }
    }

    pub fn region(&self) -> &str {
        self.client.region()
    }

    /// `GetAlias`.
    pub fn get_alias(&self, function: &str, alias: &str, journal: &mut Vec<String>) -> Result<AliasState, CallError> {
        let operation = format!("GetAlias {function}:{alias}");
        let answer =
            self.client.call(&operation, "GET", &[API, "functions", function, "aliases", alias], &[], None, journal)?;
        alias_state(&operation, &answer)
    }

    /// Whether `version` of `function` is published (`GetFunctionConfiguration` with it
    /// as the qualifier).
    pub fn has_version(&self, function: &str, version: &str, journal: &mut Vec<String>) -> Result<bool, CallError> {
        let operation = format!("GetFunctionConfiguration {function}:{version}");
        let segments = [API, "functions", function, "configuration"];
        match self.client.call(&operation, "GET", &segments, &[("Qualifier", version)], None, journal) {
            Ok(answer) => Ok(answer.get("Version").and_then(|v| v.as_str()) == Some(version)),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `UpdateAlias` to `target`, only if the alias is still at `revision_id`.
    pub fn update_alias(
        &self,
        function: &str,
        alias: &str,
        target: &AliasTarget,
        revision_id: &str,
        journal: &mut Vec<String>,
    ) -> Result<AliasState, CallError> {
        let operation = format!("UpdateAlias {function}:{alias}");
        let body = json!({
            "FunctionVersion": target.function_version,
            "RoutingConfig": { "AdditionalVersionWeights": target.weights },
            "RevisionId": revision_id,
        });
        let answer = self.client.call(
            &operation,
            "PUT",
            &[API, "functions", function, "aliases", alias],
            &[],
            Some(&body),
            journal,
        )?;
        alias_state(&operation, &answer)
    }
}

impl Lambda {
    /// `CreateAlias` routing to `version` alone.
    pub fn create_alias(
        &self,
        function: &str,
        alias: &str,
        version: &str,
        journal: &mut Vec<String>,
    ) -> Result<AliasState, CallError> {
        let operation = format!("CreateAlias {function}:{alias}");
        let body =
            json!({ "Name": alias, "FunctionVersion": version, "Description": "rollwave: the version in flight" });
        let answer = self.client.call(
            &operation,
            "POST",
            &[API, "functions", function, "aliases"],
            &[],
            Some(&body),
            journal,
        )?;
        alias_state(&operation, &answer)
    }

    /// The event source mappings from `source` to `function:alias`
    /// (`ListEventSourceMappings`).
    pub fn mappings(
        &self,
        source: &str,
        function: &str,
        alias: &str,
        journal: &mut Vec<String>,
    ) -> Result<Vec<Mapping>, CallError> {
        let qualified = format!("{function}:{alias}");
        let operation = format!("ListEventSourceMappings {qualified}");
        let query = [("EventSourceArn", source), ("FunctionName", qualified.as_str())];
        let answer = self.client.call(&operation, "GET", &[API, "event-source-mappings"], &query, None, journal)?;
        let mappings = answer.get("EventSourceMappings").and_then(|m| m.as_array()).cloned().unwrap_or_default();
        Ok(mappings
            .iter()
            .filter_map(|m| {
                Some(Mapping {
                    uuid: m.get("UUID")?.as_str()?.to_owned(),
                    filter_criteria: m.get("FilterCriteria").cloned().unwrap_or(serde_json::Value::Null),
                })
            })
            .collect())
    }

    /// Makes `source` feed `function:alias` through exactly `filters`: creates the mapping,
    /// or updates its filters if they differ. Says what it did in `journal`.
    pub fn ensure_mapping(
        &self,
        source: &str,
        function: &str,
        alias: &str,
        filters: &serde_json::Value,
        journal: &mut Vec<String>,
    ) -> Result<(), CallError> {
        let qualified = format!("{function}:{alias}");
        match self.mappings(source, function, alias, journal)?.first() {
            Some(m) if &m.filter_criteria == filters => Ok(()),
            Some(m) => {
                let operation = format!("UpdateEventSourceMapping {qualified}");
                let body = json!({ "FilterCriteria": filters });
                self.client.call(
                    &operation,
                    "PUT",
                    &[API, "event-source-mappings", &m.uuid],
                    &[],
                    Some(&body),
                    journal,
                )?;
                journal.push(format!("{source} → {qualified}: filters set"));
                Ok(())
            }
            None => {
                let operation = format!("CreateEventSourceMapping {qualified}");
                let body = json!({
                    "EventSourceArn": source,
                    "FunctionName": qualified,
                    "FilterCriteria": filters,
                    "Enabled": true,
                });
                self.client.call(&operation, "POST", &[API, "event-source-mappings"], &[], Some(&body), journal)?;
                journal.push(format!("{source} → {qualified}: mapping created with its filters"));
                Ok(())
            }
        }
    }
}

fn alias_state(operation: &str, answer: &serde_json::Value) -> Result<AliasState, CallError> {
    let malformed = |what: &str| CallError {
        operation: operation.to_owned(),
        status: None,
        code: "MalformedAnswer".to_owned(),
        message: format!("the answer has no {what}"),
    };
    let function_version =
        answer.get("FunctionVersion").and_then(|v| v.as_str()).ok_or_else(|| malformed("FunctionVersion"))?;
    let weights = answer
        .pointer("/RoutingConfig/AdditionalVersionWeights")
        .and_then(|w| w.as_object())
        .map(|w| w.iter().filter_map(|(v, weight)| Some((v.clone(), weight.as_f64()?))).collect())
        .unwrap_or_default();
    Ok(AliasState {
        function_version: function_version.to_owned(),
        weights,
        revision_id: answer.get("RevisionId").and_then(|v| v.as_str()).unwrap_or_default().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alias(version: &str, weights: &[(&str, f64)]) -> AliasState {
        AliasState {
            function_version: version.into(),
            weights: weights.iter().map(|(v, w)| ((*v).to_owned(), *w)).collect(),
            revision_id: "r".into(),
        }
    }

    fn target(version: &str, weights: &[(&str, f64)]) -> AliasTarget {
        alias(version, weights).target()
    }

    #[test]
    fn a_step_weights_the_new_version_the_last_step_moves_the_alias_and_a_rollback_ends_where_it_began() {
        let before = alias("3", &[]);
        // The one-box: 10 slices of 100 on version 4, the rest on what the alias has.
        let one_box = target_for(&before, &[(Some("4"), 10), (None, 90)], 100).unwrap();
        assert_eq!(one_box, target("3", &[("4", 0.1)]));
        let during = alias("3", &[("4", 0.1)]);
        assert_eq!(target_for(&during, &[(Some("4"), 50), (Some("3"), 50)], 100).unwrap(), target("3", &[("4", 0.5)]));
        assert_eq!(target_for(&during, &[(Some("4"), 100)], 100).unwrap(), target("4", &[]));
        // Rolled back: every slice on 3 again, which is the alias as it was.
        let back = target_for(&during, &[(Some("3"), 100)], 100).unwrap();
        assert!(before.routes_as(&back), "{back}");
        assert_eq!(back.to_string(), "version 3");
        assert_eq!(one_box.to_string(), "version 3 + 10% to version 4");
    }

    #[test]
    fn routes_the_alias_cannot_take_are_refused() {
        let changed = target_for(&alias("9", &[]), &[(Some("4"), 10), (Some("3"), 90)], 100).unwrap_err();
        assert!(changed.contains("someone changed it"), "{changed}");
        let three = target_for(&alias("3", &[]), &[(Some("4"), 10), (Some("5"), 10), (None, 80)], 100).unwrap_err();
        assert!(three.contains("at most two versions"), "{three}");
    }

    #[test]
    fn the_canary_mapping_takes_the_canary_track_and_the_stable_one_the_rest() {
        let (stable, canary) = sqs_filters();
        let patterns = |f: &serde_json::Value| -> Vec<serde_json::Value> {
            f["Filters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| serde_json::from_str(p["Pattern"].as_str().unwrap()).unwrap())
                .collect()
        };
        let canary = patterns(&canary);
        assert_eq!(canary, [json!({ "messageAttributes": { "rollwave.track": { "stringValue": ["canary"] } } })]);
        let stable = patterns(&stable);
        assert_eq!(
            stable[0]["messageAttributes"]["rollwave.track"]["stringValue"][0]["anything-but"],
            json!(["canary"])
        );
        assert_eq!(stable[1]["messageAttributes"]["rollwave.track"]["stringValue"][0]["exists"], json!(false));
    }

    #[test]
    fn an_artifact_names_a_published_version_by_number_or_arn() {
        assert_eq!(version_of_artifact("7").unwrap(), "7");
        assert_eq!(version_of_artifact("arn:aws:lambda:us-east-1:123456789012:function:checkout:12").unwrap(), "12");
        for bad in
            ["$LATEST", "live", "", "arn:aws:lambda:us-east-1:123:function:checkout", "arn:aws:s3:::b:k:1:2", "7; rm"]
        {
            assert!(version_of_artifact(bad).is_err(), "{bad:?}");
        }
    }
}
