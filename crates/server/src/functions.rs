//! The driver of regions of functions: a step of a rollout sets each function's alias to
//! route as the region's slices are (`FunctionStep`), through the Lambda API.
//!
//! Before any alias changes, every function's alias is read and every version the step
//! needs is checked to be published; a missing function, alias or version, or a refusal
//! (permissions), fails the step with Lambda's reason and changes nothing. An alias that
//! does not route as this driver last left it was changed by someone else: the step
//! fails instead of overwriting it (the release then halts). Each update is conditional
//! on the revision read, so a change in between is refused by Lambda too.

use crate::api::HookReport;
use crate::state::FunctionStep;
use rollwave_aws::{AliasState, AliasTarget, Credentials, Lambda, ProcessEnvironment, Retry};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Remembers what it last wrote to each alias, to tell a change by someone else.
#[derive(Default)]
pub struct FunctionsDriver {
    /// How calls are retried; the default unless a test says otherwise.
    retry: Option<Retry>,
    written: Mutex<HashMap<(String, String, String), AliasState>>,
}

impl FunctionsDriver {
    /// Carries out one step (blocking: call it from `spawn_blocking`). The report's output
    /// says what each alias routed to before and after, and every retry.
    pub fn step(&self, step: &FunctionStep) -> HookReport {
        let started = Instant::now();
        let mut journal = Vec::new();
        let ok = match self.try_step(step, &mut journal) {
            Ok(()) => true,
            Err(why) => {
                journal.push(why);
                false
            }
        };
        HookReport {
            name: "lambda".into(),
            exit_code: None,
            duration_ms: started.elapsed().as_millis() as u64,
            output: journal.join("\n"),
            timed_out: false,
            ok,
        }
    }

    fn try_step(&self, step: &FunctionStep, journal: &mut Vec<String>) -> Result<(), String> {
        if let Some(problem) = &step.problem {
            return Err(problem.clone());
        }
        let env = ProcessEnvironment;
        let credentials = Credentials::from_chain(&env).map_err(|e| e.to_string())?;
        let endpoint = rollwave_aws::endpoint(&env, "lambda", "lambda", &step.region)?;
        let client =
            rollwave_aws::Client::new("lambda", &step.region, endpoint, credentials, self.retry.unwrap_or_default());
        let lambda = Lambda::new(client);
        let slices: Vec<(Option<&str>, u32)> = step.slices.iter().map(|(v, n)| (v.as_deref(), *n)).collect();

        // Read and check everything first: nothing changes unless every alias can.
        let mut plans: Vec<(&crate::state::FunctionAlias, AliasState, AliasTarget, AliasTarget)> = Vec::new();
        for function in &step.functions {
            let current = lambda.get_alias(&function.name, &function.alias, journal).map_err(|e| e.to_string())?;
            let key = (step.region.clone(), function.name.clone(), function.alias.clone());
            if let Some(left) = self.written.lock().unwrap_or_else(|p| p.into_inner()).get(&key)
                && !current.routes_as(&left.target())
            {
                return Err(format!(
                    "alias {}:{} was changed by someone else: rollwave left it at {left}, it is now at {current}; \
                     not overwriting it",
                    function.name, function.alias
                ));
            }
            let split = rollwave_aws::target_for(&current, &slices, step.total)
                .map_err(|why| format!("alias {}:{}: {why}", function.name, function.alias))?;
            // Through the router the split is the router's: the alias keeps its version
            // until every slice has moved.
            let target = match function.routed {
                true => AliasTarget { function_version: split.function_version.clone(), weights: Default::default() },
                false => split.clone(),
            };
            let mut needed: Vec<&str> = vec![target.function_version.as_str()];
            needed.extend(target.weights.keys().map(String::as_str));
            for version in needed {
                if version != current.function_version
                    && !lambda.has_version(&function.name, version, journal).map_err(|e| e.to_string())?
                {
                    return Err(format!("function {} has no published version {version}", function.name));
                }
            }
            plans.push((function, current, target, split));
        }
        let mut targets = Vec::new();
        for (function, current, target, split) in plans {
            let key = (step.region.clone(), function.name.clone(), function.alias.clone());
            targets.push((function, split));
            if current.routes_as(&target) {
                journal.push(format!("{}:{} already routes to {target}", function.name, function.alias));
                self.remember(key, current);
                continue;
            }
            let after = lambda
                .update_alias(&function.name, &function.alias, &target, &current.revision_id, journal)
                .map_err(|e| e.to_string())?;
            journal.push(format!("{}:{}: {} → {}", function.name, function.alias, current.target(), after));
            self.remember(key, after);
        }
        for (function, split) in &targets {
            if function.queue.is_some() || function.routed {
                self.keep_canary_alias(&lambda, function, split, journal)?;
            }
            if let Some(queue) = &function.queue {
                let (stable_filters, canary_filters) = rollwave_aws::sqs_filters();
                let name = &function.name;
                lambda
                    .ensure_mapping(queue, name, &function.alias, &stable_filters, journal)
                    .map_err(|e| e.to_string())?;
                lambda
                    .ensure_mapping(queue, name, &function.canary_alias, &canary_filters, journal)
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    /// The canary alias on the version in flight: the split's additional version, else
    /// its only one. Messages on the canary track (through the queue's filtered mapping)
    /// and the router's canary callers reach it.
    fn keep_canary_alias(
        &self,
        lambda: &Lambda,
        function: &crate::state::FunctionAlias,
        split: &AliasTarget,
        journal: &mut Vec<String>,
    ) -> Result<(), String> {
        let in_flight = split.weights.keys().next().unwrap_or(&split.function_version).clone();
        let canary = AliasTarget { function_version: in_flight, weights: Default::default() };
        let name = &function.name;
        match lambda.get_alias(name, &function.canary_alias, journal) {
            Ok(current) if current.routes_as(&canary) => {}
            Ok(current) => {
                let after = lambda
                    .update_alias(name, &function.canary_alias, &canary, &current.revision_id, journal)
                    .map_err(|e| e.to_string())?;
                journal.push(format!("{name}:{}: {} → {after}", function.canary_alias, current.target()));
            }
            Err(e) if e.is_not_found() => {
                let after = lambda
                    .create_alias(name, &function.canary_alias, &canary.function_version, journal)
                    .map_err(|e| e.to_string())?;
                journal.push(format!("{name}:{}: created at {after}", function.canary_alias));
            }
            Err(e) => return Err(e.to_string()),
        }
        Ok(())
    }

    fn remember(&self, key: (String, String, String), state: AliasState) {
        self.written.lock().unwrap_or_else(|p| p.into_inner()).insert(key, state);
    }
}
