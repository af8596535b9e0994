//! The read model: every service's engine and the views derived from its outputs. The
//! leader changes it by applying inputs; followers by replaying the log. Both go through
//! [`ReadModel::apply`], so a replica that replays the log ends in the leader's state.

use crate::api::*;
use crate::error::ApiError;
use crate::exec::Template;
use crate::records::{
    Detail, HookRun, JudgeVerdict, Record, RecordKind, ScopePath, TestRun as TestRecord, VerdictTable,
};
use jiff::Timestamp;
use rollwave_api::Lane;
use rollwave_core::engine::{
    Action, CommandId, Engine, Event, EventKind, Input, OperatorCommand, Output, ReleaseId, ReleaseStatus, render_scope,
};
use rollwave_core::judge::Outcome;
use rollwave_core::plan::{EnvId, HostId, Plan, StageId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Inputs are a part of the log's format, defined with it.
pub use crate::log::LogInput;

/// A deployment command as the log and drivers see it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CommandView {
    pub id: u64,
    pub service: String,
    pub environment: String,
    pub hosts: Vec<String>,
    pub version: String,
    pub purpose: rollwave_api::Purpose,
    /// `flags` for a flag set's deployment: agents serve it, nothing runs for it.
    #[serde(default, skip_serializing_if = "rollwave_api::Lane::is_code")]
    pub lane: rollwave_api::Lane,
    /// For `exec` environments: per host, its region, its zone and the share (percent)
    /// of its region that runs the version once this step is done.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<ExecTarget>,
    /// For a stage's test (`purpose: test`, no hosts): what to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<TestRun>,
    /// For regions of functions: what the region's aliases should route to once this
    /// command is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub functions: Option<FunctionStep>,
}

/// A step of a functions rollout in one region: its functions, and the function version
/// each slice of its invocations is on once the step is done.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FunctionStep {
    /// The region's name, which is the AWS region's.
    pub region: String,
    pub functions: Vec<FunctionAlias>,
    /// Function versions and how many slices each holds; `None` is what the alias routes
    /// to before any release (the engine's baseline has no artifact).
    pub slices: Vec<(Option<String>, u32)>,
    pub total: u32,
    /// A release whose artifact names no function version: nothing is changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// A function and the alias a step changes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FunctionAlias {
    pub name: String,
    pub alias: String,
    /// The SQS queue that triggers it, and the alias its canary messages go to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub canary_alias: String,
    /// Its HTTP callers come through the router, which splits them between the alias and
    /// the canary alias: the alias itself is not weighted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub routed: bool,
}

/// A stage's test, run by the leader in its working directory.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TestRun {
    pub stage: String,
    pub name: String,
    pub run: String,
    pub timeout_s: u64,
    #[serde(default)]
    pub artifact: Option<String>,
}

/// One host's `exec` command. `command` is the manifest's text with each `{{name}}`
/// turned into a reference to a variable of `env`: no value is ever part of it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ExecTarget {
    pub host: String,
    pub region: String,
    pub zone: String,
    pub share: u32,
    pub command: String,
    pub timeout_s: u64,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// What applying one input produced.
#[derive(Clone, Debug, Default)]
pub struct Applied {
    pub events: Vec<EventView>,
    pub commands: Vec<CommandView>,
}

pub struct ServiceState {
    pub name: String,
    pub file: String,
    pub manifest_text: String,
    pub plan: Arc<Plan>,
    /// The code lane: releases that carry an artifact.
    pub engine: Engine,
    /// The flags lane: releases that carry a flag set, through the same pipeline beside
    /// the code lane (each wave holds one release of each). Its release 0, `baseline`, is
    /// no flag set at all.
    pub flag_engine: Engine,
    /// Every flag release's document, by version.
    pub flag_sets: BTreeMap<String, crate::release::FlagDocument>,
    /// The last flag deployment command per host.
    pub flag_desired: BTreeMap<(EnvId, HostId), u64>,
    /// The timeline: the engine's events and the reports that came with them.
    pub events: Vec<Record>,
    pub artifacts: BTreeMap<String, (Option<String>, Option<String>)>,
    /// What is blocked now, by release and scope.
    pub blocked: BTreeMap<(Option<String>, ScopePath), BlockedView>,
    /// The last deployment command per host.
    pub desired: BTreeMap<(EnvId, HostId), u64>,
    /// Agents' host ids and the slots they took.
    pub aliases: BTreeMap<(EnvId, String), HostId>,
    /// Where each host's service answers, as its agent said.
    pub addresses: BTreeMap<(EnvId, HostId), String>,
    pub agents: bool,
    /// What the dashboard follows beside the engine (see [`crate::views`]).
    pub tracked: crate::views::Tracked,
}

#[derive(Default)]
pub struct ReadModel {
    pub services: BTreeMap<String, ServiceState>,
    /// The last log sequence number reflected here.
    pub applied_seq: i64,
}

pub fn timestamp(at_ms: i64) -> Timestamp {
    Timestamp::from_millisecond(at_ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A manifest's located errors as a 422 with `details: [{line, col, message}]`.
/// A reported outcome as the engine takes it.
fn outcome(ok: bool, reason: &Option<String>) -> Result<(), String> {
    if ok { Ok(()) } else { Err(reason.clone().unwrap_or_else(|| "failed".into())) }
}

pub fn manifest_error(errors: rollwave_manifest::ManifestErrors) -> ApiError {
    let details: Vec<serde_json::Value> = errors
        .errors
        .iter()
        .map(|e| serde_json::json!({ "line": e.location.line, "col": e.location.col, "message": e.message }))
        .collect();
    ApiError::invalid(errors.to_string().trim_end().to_owned()).with_details(serde_json::Value::Array(details))
}

fn parse_plan(file: &str, text: &str) -> Result<Arc<Plan>, ApiError> {
    rollwave_manifest::parse_manifest(file, text).map(|m| Arc::new(Plan::new(m))).map_err(manifest_error)
}

impl ReadModel {
    /// Applies one input at `at_ms`. A refused input changes nothing.
    pub fn apply(&mut self, service: &str, at_ms: i64, input: &LogInput) -> Result<Applied, ApiError> {
        let now = timestamp(at_ms);
        if let LogInput::ApplyManifest { file, text, agents } = input {
            let plan = parse_plan(file, text)?;
            if plan.manifest.service != service {
                return Err(ApiError::invalid(format!(
                    "the manifest is for service {:?}, not {service:?}",
                    plan.manifest.service
                )));
            }
            match self.services.get_mut(service) {
                Some(s) => {
                    // Both lanes take the new plan or neither: the flags lane is checked
                    // first (the fleet check is the same for both, the code lane's goes
                    // next and changes nothing when it refuses).
                    if s.flag_engine
                        .releases()
                        .iter()
                        .any(|r| matches!(r.status, ReleaseStatus::InProgress | ReleaseStatus::Halted))
                        || !s.flag_engine.is_idle()
                    {
                        return Err(ApiError::conflict(
                            "a flag release is in flight: finish, roll back or roll it forward before changing the pipeline",
                        ));
                    }
                    s.engine.replace_plan(Arc::clone(&plan)).map_err(|e| ApiError::conflict(e.to_string()))?;
                    s.flag_engine.replace_plan(Arc::clone(&plan)).map_err(|e| ApiError::conflict(e.to_string()))?;
                    s.plan = plan;
                    s.manifest_text = text.clone();
                    s.file = file.clone();
                }
                None => {
                    let mut engine = Engine::new(Arc::clone(&plan), "baseline", now);
                    let mut flag_engine = Engine::new(Arc::clone(&plan), "baseline", now);
                    if *agents {
                        for (e, env) in plan.manifest.environments.iter().enumerate() {
                            if env.exec.is_none() && !env.is_functions() {
                                engine.expect_hosts_to_join(EnvId(e as u16));
                                flag_engine.expect_hosts_to_join(EnvId(e as u16));
                            }
                        }
                    }
                    self.services.insert(
                        service.to_owned(),
                        ServiceState {
                            name: service.to_owned(),
                            file: file.clone(),
                            manifest_text: text.clone(),
                            plan,
                            engine,
                            flag_engine,
                            flag_sets: BTreeMap::new(),
                            flag_desired: BTreeMap::new(),
                            events: Vec::new(),
                            artifacts: BTreeMap::new(),
                            blocked: BTreeMap::new(),
                            desired: BTreeMap::new(),
                            aliases: BTreeMap::new(),
                            addresses: BTreeMap::new(),
                            agents: *agents,
                            tracked: Default::default(),
                        },
                    );
                }
            }
            return Ok(Applied::default());
        }
        let s = self.services.get_mut(service).ok_or_else(|| ApiError::not_found(format!("no service {service:?}")))?;
        if let LogInput::RegisterHost { environment, host, region, zone, address } = input {
            let (env, slot) = s.assign_slot(environment, host, region, zone)?;
            s.aliases.insert((env, host.clone()), slot);
            if let Some(a) = address {
                s.addresses.insert((env, slot), a.clone());
            }
            // Both lanes know the same hosts: the check cannot refuse one and not the other.
            for lane in Lane::ALL {
                s.lane_engine_mut(lane)
                    .handle(now, Input::HostJoined { env, host: slot })
                    .map_err(|e| ApiError::conflict(e.to_string()))?;
            }
            return Ok(Applied { events: Vec::new(), commands: s.drain_commands() });
        }
        // Hook results go to the timeline under the release the host was deploying.
        let mut hook_records = Vec::new();
        if let LogInput::HostReport { environment, host, hooks, command, lane, .. } = input {
            let (env, h) = s.host(environment, host)?;
            let engine = s.lane_engine(*lane);
            let release = match engine.host_op(env, h) {
                Some((c, v)) if c.0 == *command => Some(engine.version_name(v).to_owned()),
                _ => None,
            };
            let stage = s.plan.first_stage_of(env);
            let scope = ScopePath::of(&s.plan, rollwave_core::engine::EventScope::Host(stage, env, h));
            for hook in hooks {
                hook_records.push(Record {
                    at: now,
                    kind: RecordKind::Hook,
                    release: release.clone(),
                    scope: scope.clone(),
                    reason: None,
                    detail: Some(Detail::Hook(HookRun::of(hook))),
                });
            }
        }
        let engine_inputs = s.to_inputs(input)?;
        let before = s.version_before(input);
        // An input given to both lanes names only what both know (the same plan and
        // hosts), so the second cannot refuse what the first took.
        for (lane, engine_input) in engine_inputs {
            s.lane_engine_mut(lane).handle(now, engine_input).map_err(|e| match e {
                rollwave_core::engine::InputError::UnknownRelease(_) => ApiError::not_found(e.to_string()),
                rollwave_core::engine::InputError::DuplicateVersion(_) => ApiError::conflict(e.to_string()),
                _ => ApiError::conflict(e.to_string()),
            })?;
        }
        s.track_input(at_ms, input, before);
        #[cfg(test)]
        fault::after_engine_input(service, input);
        if let LogInput::CreateRelease { version, artifact, sha256, flags } = input {
            match flags {
                Some(doc) => {
                    s.flag_sets.insert(version.to_string(), doc.clone());
                }
                None => {
                    let (artifact, sha256) =
                        (artifact.as_ref().map(ToString::to_string), sha256.as_ref().map(ToString::to_string));
                    s.artifacts.insert(version.to_string(), (artifact, sha256));
                }
            }
        }
        let mut applied = Applied::default();
        for record in hook_records {
            applied.events.push(record.view(&s.name));
            s.events.push(record);
        }
        let outputs: Vec<(Lane, Output)> = Lane::ALL
            .into_iter()
            .flat_map(|lane| s.lane_engine_mut(lane).drain().map(move |o| (lane, o)).collect::<Vec<_>>())
            .collect();
        for (lane, output) in outputs {
            match output {
                Output::Event(e) => {
                    let mut record = s.record(&e, lane);
                    record.detail = match (e.kind, input) {
                        (EventKind::JudgeVerdict, LogInput::Verdict { passed, marginal, table, report, .. }) => {
                            let table = match report {
                                Some(report) => VerdictTable::Table(report.clone()),
                                None => VerdictTable::from_log(table),
                            };
                            Some(Detail::Verdict(JudgeVerdict::new(*passed, *marginal, table)))
                        }
                        (EventKind::TestPassed | EventKind::TestFailed, LogInput::TestReport { ok, output, .. }) => {
                            Some(Detail::Test(TestRecord { ok: *ok, output: output.clone() }))
                        }
                        _ => None,
                    };
                    let view = record.view(&s.name);
                    s.track_blocked(&e, &record, &view);
                    s.events.push(record);
                    applied.events.push(view);
                }
                Output::Command(c) => {
                    if let Some(view) = s.command_view(c, lane) {
                        applied.commands.push(view);
                    }
                }
            }
        }
        Ok(applied)
    }

    pub fn service(&self, name: &str) -> Result<&ServiceState, ApiError> {
        self.services.get(name).ok_or_else(|| ApiError::not_found(format!("no service {name:?}")))
    }
}

impl ServiceState {
    /// Turns an engine command into what drivers and the log see; remembers it per host.
    fn command_view(&mut self, c: rollwave_core::engine::Command, lane: Lane) -> Option<CommandView> {
        let (env, hosts, version, purpose) = match c.action {
            Action::Deploy { env, hosts, version, purpose, .. } => (env, hosts, version, purpose),
            Action::RunTest { release, stage, test, run, timeout } => {
                let version = self.lane_engine(lane).version_name(release).to_owned();
                let stage_spec = &self.plan.manifest.stages[stage.idx()];
                return Some(CommandView {
                    id: c.id.0,
                    service: self.name.clone(),
                    environment: self.plan.manifest.environments[stage_spec.environment].name.clone(),
                    hosts: Vec::new(),
                    purpose: rollwave_api::Purpose::Test,
                    lane,
                    targets: Vec::new(),
                    test: Some(TestRun {
                        stage: stage_spec.name.clone(),
                        name: stage_spec.tests.get(test).map(|t| t.name.clone()).unwrap_or_default(),
                        run,
                        timeout_s: timeout.as_secs().max(1),
                        artifact: self.artifacts.get(&version).and_then(|(a, _)| a.clone()),
                    }),
                    version,
                    functions: None,
                });
            }
        };
        let desired = match lane {
            Lane::Code => &mut self.desired,
            Lane::Flags => &mut self.flag_desired,
        };
        for &h in &hosts {
            desired.insert((env, h), c.id.0);
        }
        let environment = &self.plan.manifest.environments[env.idx()];
        let version_name = self.lane_engine(lane).version_name(version).to_owned();
        let purpose = rollwave_api::Purpose::from(purpose);
        // A flag set needs no command on a host: agents fetch and serve it.
        let targets = match lane {
            Lane::Code => self.exec_targets(env, &hosts, version, purpose),
            Lane::Flags => Vec::new(),
        };
        let functions = match lane {
            Lane::Code => self.function_step(env, &hosts, version),
            Lane::Flags => None,
        };
        Some(CommandView {
            id: c.id.0,
            service: self.name.clone(),
            environment: environment.name.clone(),
            hosts: hosts.iter().map(|&h| self.plan.host_name(env, h).to_owned()).collect(),
            version: version_name,
            purpose,
            lane,
            targets,
            test: None,
            functions,
        })
    }

    /// The function version a release ships to a region of functions: what its artifact
    /// names (`7`, or the ARN of one of the region's functions). `Ok(None)` for what ran
    /// before any release; an error, saying why, for a release that names none.
    pub fn function_version(
        &self,
        release: ReleaseId,
        region: &rollwave_core::manifest::Region,
    ) -> Result<Option<String>, String> {
        let name = self.engine.version_name(release);
        match self.artifacts.get(name).and_then(|(a, _)| a.as_deref()) {
            None if release == ReleaseId(0) => Ok(None),
            None => Err(format!(
                "release {name} has no artifact; for functions it names the version to ship \
                 (7, or arn:aws:lambda:…:function:NAME:7)"
            )),
            // An ARN names one function: the region must have it.
            Some(a)
                if a.starts_with("arn:")
                    && !region.functions.iter().any(|f| a.split(':').nth(6) == Some(f.name.as_str())) =>
            {
                Err(format!(
                    "artifact {a} is a version of a function region {} does not have ({})",
                    region.name,
                    region.functions.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(", ")
                ))
            }
            Some(a) => rollwave_aws::version_of_artifact(a).map(Some),
        }
    }

    /// For a region of functions: what its aliases route to once `hosts` (slices, all of
    /// one region) run `version`, the other slices going where they are asked to go.
    fn function_step(&self, env: EnvId, hosts: &[HostId], version: ReleaseId) -> Option<FunctionStep> {
        let first = *hosts.first()?;
        let environment = &self.plan.manifest.environments[env.idx()];
        let region_id = self.plan.zone_region(env, self.plan.host_zone(env, first));
        let region = environment.regions.get(region_id.idx()).filter(|r| r.is_functions())?;
        let mut held: BTreeMap<ReleaseId, u32> = BTreeMap::new();
        let slices = self.plan.env(env).regions[region_id.idx()].hosts.clone();
        let total = slices.len() as u32;
        for h in slices.map(HostId) {
            let after = if hosts.contains(&h) {
                version
            } else {
                self.engine.host_op(env, h).map_or_else(|| self.engine.host_version(env, h), |(_, target)| target)
            };
            *held.entry(after).or_default() += 1;
        }
        let mut problem = None;
        let slices = held
            .into_iter()
            .map(|(release, n)| {
                let function_version = self.function_version(release, region).unwrap_or_else(|why| {
                    problem.get_or_insert(why);
                    None
                });
                (function_version, n)
            })
            .collect();
        let functions = region
            .functions
            .iter()
            .map(|f| FunctionAlias {
                name: f.name.clone(),
                alias: f.alias.clone(),
                queue: f.queue.clone(),
                canary_alias: f.canary_alias.clone(),
                routed: f.router.is_some(),
            })
            .collect();
        Some(FunctionStep { region: region.name.clone(), functions, slices, total, problem })
    }

    /// For `exec` environments: the command to run per host and the values its
    /// templates stand for.
    fn exec_targets(
        &self,
        env: EnvId,
        hosts: &[HostId],
        version: ReleaseId,
        purpose: rollwave_api::Purpose,
    ) -> Vec<ExecTarget> {
        let environment = &self.plan.manifest.environments[env.idx()];
        let Some(exec) = &environment.exec else { return Vec::new() };
        let version_name = self.engine.version_name(version);
        let artifact = self.artifacts.get(version_name).and_then(|a| a.0.as_deref());
        hosts
            .iter()
            .map(|&h| {
                let zone = self.plan.host_zone(env, h);
                let region = self.plan.zone_region(env, zone);
                let region_hosts = self.plan.env(env).regions[region.idx()].hosts.clone();
                let total = region_hosts.len().max(1) as u32;
                let on_version = region_hosts
                    .filter(|&x| self.engine.host_version(env, HostId(x)) == version || hosts.contains(&HostId(x)))
                    .count() as u32;
                let share = on_version * 100 / total;
                let template = match (purpose, &exec.rollback) {
                    (rollwave_api::Purpose::Rollback, Some(r)) => r.as_str(),
                    (
                        rollwave_api::Purpose::Rollback | rollwave_api::Purpose::Rollout | rollwave_api::Purpose::Test,
                        _,
                    ) => exec.deploy.as_str(),
                };
                let share_text = share.to_string();
                let value = |t: Template| match t {
                    Template::Service => Some(self.name.as_str()),
                    Template::Environment => Some(environment.name.as_str()),
                    Template::Region => Some(self.plan.region_name(env, region)),
                    Template::Zone => Some(self.plan.zone_name(env, zone)),
                    Template::Host => Some(self.plan.host_name(env, h)),
                    Template::Version => Some(version_name),
                    Template::Artifact => artifact,
                    Template::Share => Some(share_text.as_str()),
                };
                ExecTarget {
                    host: self.plan.host_name(env, h).to_owned(),
                    region: self.plan.region_name(env, region).to_owned(),
                    zone: self.plan.zone_name(env, zone).to_owned(),
                    share,
                    command: crate::exec::command_text(template),
                    timeout_s: exec.timeout.as_secs(),
                    env: Template::ALL
                        .into_iter()
                        .filter_map(|t| Some((t.variable().to_owned(), value(t)?.to_owned())))
                        .collect(),
                }
            })
            .collect()
    }

    /// Commands the engine produced with nothing else to say (after a host joined).
    fn drain_commands(&mut self) -> Vec<CommandView> {
        let mut commands = Vec::new();
        for lane in Lane::ALL {
            let outputs: Vec<Output> = self.lane_engine_mut(lane).drain().collect();
            for output in outputs {
                if let Output::Command(c) = output {
                    commands.extend(self.command_view(c, lane));
                }
            }
        }
        commands
    }

    pub fn lane_engine(&self, lane: Lane) -> &Engine {
        match lane {
            Lane::Code => &self.engine,
            Lane::Flags => &self.flag_engine,
        }
    }

    fn lane_engine_mut(&mut self, lane: Lane) -> &mut Engine {
        match lane {
            Lane::Code => &mut self.engine,
            Lane::Flags => &mut self.flag_engine,
        }
    }

    /// The lane of the release named `name` (names are unique across both lanes;
    /// `baseline` is the code lane's).
    pub fn lane_of(&self, name: &str) -> Option<Lane> {
        Lane::ALL.into_iter().find(|&lane| self.lane_engine(lane).release_named(name).is_some())
    }

    /// A release by name, in its lane.
    fn release_in_lane(&self, name: &str) -> Result<(Lane, ReleaseId), ApiError> {
        Lane::ALL
            .into_iter()
            .find_map(|lane| Some((lane, self.lane_engine(lane).release_named(name)?)))
            .ok_or_else(|| ApiError::not_found(format!("no release {name:?}")))
    }

    /// The slot an agent takes: the one named like it, else the first free one in its zone.
    fn assign_slot(
        &self,
        environment: &str,
        host: &str,
        region: &str,
        zone: &str,
    ) -> Result<(EnvId, HostId), ApiError> {
        let env = self.env(environment)?;
        if let Some(&slot) = self.aliases.get(&(env, host.to_owned())) {
            return Ok((env, slot));
        }
        let zone_id = (0..self.plan.env(env).zones.len() as u32)
            .map(rollwave_core::plan::ZoneId)
            .find(|&z| self.plan.zone_name(env, z) == zone)
            .ok_or_else(|| ApiError::not_found(format!("environment {environment} has no zone {zone:?}")))?;
        let actual_region = self.plan.region_name(env, self.plan.zone_region(env, zone_id));
        if actual_region != region {
            return Err(ApiError::invalid(format!("zone {zone} is in region {actual_region}, not {region}")));
        }
        let taken: std::collections::BTreeSet<HostId> =
            self.aliases.iter().filter(|((e, _), _)| *e == env).map(|(_, &h)| h).collect();
        let slots = self.plan.zone_hosts(env, zone_id);
        if let Some(named) = self.plan.host_named(env, host).filter(|h| slots.contains(&h.0))
            && !taken.contains(&named)
        {
            return Ok((env, named));
        }
        slots
            .map(HostId)
            .find(|h| !taken.contains(h) && !self.aliases.contains_key(&(env, self.plan.host_name(env, *h).to_owned())))
            .map(|h| (env, h))
            .ok_or_else(|| {
                ApiError::conflict(format!(
                    "zone {zone} already has the {} host(s) the manifest expects; raise its count to add more",
                    self.plan.zone_hosts(env, zone_id).len()
                ))
            })
    }

    /// The engine inputs a log input stands for, each with the lane it goes to. What
    /// happens to hosts, scopes and time (a lost host, an alarm, a tick, a hold) goes to
    /// both lanes: an alarm rolls back whatever is deploying or baking where it fired.
    fn to_inputs(&self, input: &LogInput) -> Result<Vec<(Lane, Input)>, ApiError> {
        let both = |input: Input| Lane::ALL.into_iter().map(|lane| (lane, input.clone())).collect();
        Ok(match input {
            LogInput::Alarm { .. } => {
                // An alarm where one lane's release is changing hosts, or was just rolled
                // back, is that release's: the other lane, with nothing in flight there,
                // suspects none of its finished releases.
                let Input::Alarm { alarm, scope, state, reason, .. } = self.to_input(input)? else {
                    unreachable!("an alarm is an alarm")
                };
                Lane::ALL
                    .into_iter()
                    .map(|lane| {
                        let explained_elsewhere = Lane::ALL
                            .into_iter()
                            .any(|other| other != lane && self.lane_engine(other).explains_alarm(scope, alarm));
                        (lane, Input::Alarm { alarm, scope, state, reason: reason.clone(), explained_elsewhere })
                    })
                    .collect()
            }
            LogInput::HostLost { .. } | LogInput::Tick => both(self.to_input(input)?),
            LogInput::Operator { action, .. } if !action.is_release_action() => both(self.to_input(input)?),
            LogInput::CreateRelease { version, flags, .. } => {
                if let Some(lane) = self.lane_of(version.as_str()) {
                    return Err(ApiError::conflict(format!(
                        "{version} is already a {} release of {}",
                        lane.as_str(),
                        self.name
                    )));
                }
                let lane = if flags.is_some() { Lane::Flags } else { Lane::Code };
                vec![(lane, Input::CreateRelease { version: version.as_str().to_owned() })]
            }
            LogInput::Served { lane, .. } | LogInput::TestReport { lane, .. } | LogInput::HostReport { lane, .. } => {
                vec![(*lane, self.to_input(input)?)]
            }
            LogInput::Verdict { release, .. } | LogInput::Operator { release: Some(release), .. } => {
                vec![(self.release_in_lane(release)?.0, self.to_input(input)?)]
            }
            _ => vec![(Lane::Code, self.to_input(input)?)],
        })
    }

    /// One input for the lane it names (or the code lane); releases are looked up in
    /// their own lane.
    fn to_input(&self, input: &LogInput) -> Result<Input, ApiError> {
        Ok(match input {
            LogInput::ApplyManifest { .. } | LogInput::RegisterHost { .. } => {
                unreachable!("handled by ReadModel::apply")
            }
            LogInput::HostLost { environment, host } => {
                let (env, host) = self.host(environment, host)?;
                Input::HostLost { env, host }
            }
            LogInput::Alarm { alarm, scope, state, reason } => {
                let index = self
                    .plan
                    .manifest
                    .alarm_named(alarm)
                    .ok_or_else(|| ApiError::not_found(format!("service {} has no alarm {alarm:?}", self.name)))?;
                let state = rollwave_core::alarm::AlarmState::from(*state);
                Input::Alarm {
                    alarm: index,
                    scope: self.scope(scope)?,
                    state,
                    reason: reason.clone(),
                    explained_elsewhere: false,
                }
            }
            LogInput::Verdict { environment, region, release, passed, marginal, reason, .. } => {
                let env = self.env(environment)?;
                let region = self.region(env, region)?;
                let release = self.release_in_lane(release)?.1;
                // The log keeps the two flags it always had; `marginal` without `passed`
                // has always counted as a failure.
                let outcome = match (*passed, *marginal) {
                    (false, _) => Outcome::Fail,
                    (true, true) => Outcome::Marginal,
                    (true, false) => Outcome::Pass,
                };
                Input::Verdict { env, region, release, outcome, reason: reason.clone() }
            }
            LogInput::Served { environment, zone, version, requests, lane } => {
                let env = self.env(environment)?;
                let zone = self.zone(env, zone)?;
                let version = self
                    .lane_engine(*lane)
                    .release_named(version)
                    .ok_or_else(|| ApiError::not_found(format!("no {} release {version:?}", lane.as_str())))?;
                Input::Served { env, zone, version, requests: *requests }
            }
            LogInput::CreateRelease { version, .. } => Input::CreateRelease { version: version.as_str().to_owned() },
            LogInput::Tick => Input::Tick,
            LogInput::TestReport { command, ok, reason, .. } => {
                Input::TestReport { command: CommandId(*command), result: outcome(*ok, reason) }
            }
            LogInput::HostReport { environment, host, command, ok, reason, .. } => {
                let (env, host) = self.host(environment, host)?;
                Input::HostReport { env, host, command: CommandId(*command), result: outcome(*ok, reason) }
            }
            LogInput::Operator { action, release, stage } => {
                let stage = stage.as_deref().map(|s| self.stage(s)).transpose()?;
                let release = || -> Result<ReleaseId, ApiError> {
                    let name =
                        release.as_deref().ok_or_else(|| ApiError::bad_request(format!("{action} needs a release")))?;
                    Ok(self.release_in_lane(name)?.1)
                };
                use rollwave_api::OperatorAction as A;
                Input::Operator(match action {
                    A::Approve => OperatorCommand::Approve { release: release()?, stage },
                    A::Rollback => OperatorCommand::Rollback { release: release()? },
                    A::Retry => OperatorCommand::Retry { release: release()? },
                    A::RollForward => OperatorCommand::RollForward { release: release()? },
                    A::Hold => OperatorCommand::Hold { stage },
                    A::Resume => OperatorCommand::Resume { stage },
                })
            }
        })
    }

    pub fn env(&self, name: &str) -> Result<EnvId, ApiError> {
        self.plan
            .manifest
            .environments
            .iter()
            .position(|e| e.name == name)
            .map(|i| EnvId(i as u16))
            .ok_or_else(|| ApiError::not_found(format!("service {} has no environment {name:?}", self.name)))
    }

    /// A host by its agent's id or by its slot name (`{zone}-{n}`).
    pub fn host(&self, env: &str, host: &str) -> Result<(EnvId, HostId), ApiError> {
        let env = self.env(env)?;
        if let Some(&h) = self.aliases.get(&(env, host.to_owned())) {
            return Ok((env, h));
        }
        let h = self
            .plan
            .host_named(env, host)
            .ok_or_else(|| ApiError::not_found(format!("no host {host:?} in that environment")))?;
        Ok((env, h))
    }

    pub fn zone(&self, env: EnvId, name: &str) -> Result<rollwave_core::plan::ZoneId, ApiError> {
        (0..self.plan.env(env).zones.len() as u32)
            .map(rollwave_core::plan::ZoneId)
            .find(|&z| self.plan.zone_name(env, z) == name)
            .ok_or_else(|| ApiError::not_found(format!("no zone {name:?}")))
    }

    pub fn region(&self, env: EnvId, name: &str) -> Result<rollwave_core::plan::RegionId, ApiError> {
        (0..self.plan.env(env).regions.len() as u16)
            .map(rollwave_core::plan::RegionId)
            .find(|&r| self.plan.region_name(env, r) == name)
            .ok_or_else(|| ApiError::not_found(format!("no region {name:?}")))
    }

    /// `env`, `env/region`, `env/region/zone` or `env/host`.
    pub fn scope(&self, path: &str) -> Result<rollwave_core::engine::Scope, ApiError> {
        use rollwave_core::engine::Scope;
        let parts: Vec<&str> = path.split('/').collect();
        let env = self.env(parts[0])?;
        Ok(match parts.as_slice() {
            [_] => Scope::Environment(env),
            [_, second] => match self.region(env, second) {
                Ok(r) => Scope::Region(env, r),
                Err(_) => Scope::Host(env, self.host(parts[0], second)?.1),
            },
            [_, region, zone] => {
                self.region(env, region)?;
                Scope::Zone(env, self.zone(env, zone)?)
            }
            _ => return Err(ApiError::invalid(format!("bad scope {path:?}"))),
        })
    }

    /// The routing table of a region: the hosts of the release deploying there are the
    /// canary track, the others stable.
    pub fn routes(&self, environment: &str, region: &str, generation: i64) -> Result<Routes, ApiError> {
        let env = self.env(environment)?;
        let region = self.region(env, region)?;
        let canary = active_in_region(&self.plan, &self.engine, env, region);
        let spec = &self.plan.manifest.environments[env.idx()].regions[region.idx()];
        if let Some((function, addresses)) = spec.functions.iter().find_map(|f| Some((f, f.router.as_ref()?))) {
            return Ok(self.function_routes(env, region, canary, function, addresses, generation));
        }
        let region_hosts = self.plan.env(env).regions[region.idx()].hosts.clone();
        let total = region_hosts.len().max(1) as u32;
        let mut hosts = Vec::new();
        let mut on_canary = 0;
        for h in region_hosts.map(HostId) {
            let version = self.engine.host_version(env, h);
            let is_canary = canary == Some(version);
            if is_canary {
                on_canary += 1;
            }
            let Some(address) = self.addresses.get(&(env, h)) else { continue };
            if !self.engine.host_present(env, h) {
                continue;
            }
            hosts.push(RouteHost {
                host: self.plan.host_name(env, h).to_owned(),
                address: address.clone(),
                version: self.engine.version_name(version).to_owned(),
                track: if is_canary { Track::Canary } else { Track::Stable },
                draining: self.engine.host_op(env, h).is_some(),
            });
        }
        let release = canary.map(|c| self.engine.version_name(c).to_owned());
        Ok(Routes {
            salt: format!("{}-{}", self.name, release.as_deref().unwrap_or("stable")),
            canary_share: on_canary * 10_000 / total,
            release,
            hosts,
            generation,
        })
    }

    /// The routing table of a region of functions whose HTTP callers come through the
    /// router: the alias's address is the stable track, the canary alias's the canary one,
    /// with the share of the slices the release in flight holds.
    fn function_routes(
        &self,
        env: EnvId,
        region: rollwave_core::plan::RegionId,
        canary: Option<ReleaseId>,
        function: &rollwave_core::manifest::Function,
        addresses: &rollwave_core::manifest::TrackAddresses,
        generation: i64,
    ) -> Routes {
        let slices = self.plan.env(env).regions[region.idx()].hosts.clone();
        let total = slices.len().max(1) as u32;
        let versions: Vec<ReleaseId> = slices.map(|h| self.engine.host_version(env, HostId(h))).collect();
        let on_canary = versions.iter().filter(|&&v| Some(v) == canary).count() as u32;
        let stable = versions.iter().copied().filter(|&v| Some(v) != canary).max().or(canary).unwrap_or(ReleaseId(0));
        let mut hosts = vec![RouteHost {
            host: format!("{}:{}", function.name, function.alias),
            address: addresses.stable.clone(),
            version: self.engine.version_name(stable).to_owned(),
            track: Track::Stable,
            draining: false,
        }];
        if let Some(c) = canary.filter(|_| on_canary > 0) {
            hosts.push(RouteHost {
                host: format!("{}:{}", function.name, function.canary_alias),
                address: addresses.canary.clone(),
                version: self.engine.version_name(c).to_owned(),
                track: Track::Canary,
                draining: false,
            });
        }
        let release = canary.map(|c| self.engine.version_name(c).to_owned());
        Routes {
            salt: format!("{}-{}", self.name, release.as_deref().unwrap_or("stable")),
            canary_share: if hosts.len() > 1 { on_canary * 10_000 / total } else { 0 },
            release,
            hosts,
            generation,
        }
    }

    pub fn stage(&self, name: &str) -> Result<StageId, ApiError> {
        self.plan
            .manifest
            .stage_named(name)
            .map(|i| StageId(i as u16))
            .ok_or_else(|| ApiError::not_found(format!("service {} has no stage {name:?}", self.name)))
    }

    fn record(&self, e: &Event, lane: Lane) -> Record {
        Record {
            at: e.at,
            kind: RecordKind::Event(e.kind),
            release: e.release.map(|r| self.lane_engine(lane).version_name(r).to_owned()),
            scope: ScopePath::of(&self.plan, e.scope),
            reason: e.reason.clone(),
            detail: None,
        }
    }

    /// Keeps what is blocked now: a `blocked` event stands until its release moves on there.
    fn track_blocked(&mut self, e: &Event, record: &Record, view: &EventView) {
        if e.kind == EventKind::Blocked {
            self.blocked.insert(
                (record.release.clone(), record.scope.clone()),
                BlockedView {
                    release: view.release.clone(),
                    scope: view.scope.clone(),
                    reason: view.reason.clone().unwrap_or_default(),
                    since: view.t.clone(),
                },
            );
            return;
        }
        let settled = matches!(
            e.kind,
            EventKind::ReleaseCompleted
                | EventKind::ReleaseRolledBack
                | EventKind::ReleaseSuperseded
                | EventKind::ReleaseHalted
        );
        self.blocked.retain(|(release, scope), _| {
            if *release != record.release {
                return true;
            }
            if settled {
                return false;
            }
            // What happens to the whole service (an approval, a retry) moves nothing on
            // at a gate; what happens within or around a blocked scope does.
            let related = match &record.scope {
                ScopePath::Service => *scope == ScopePath::Service,
                at => scope.contains(at) || scope.is_within(at),
            };
            !related
        });
    }

    pub fn release_view(&self, summary: &rollwave_core::engine::ReleaseSummary, lane: Lane) -> ReleaseView {
        let (artifact, sha256) = match lane {
            Lane::Code => self.artifacts.get(&summary.version).cloned().unwrap_or_default(),
            Lane::Flags => (None, None),
        };
        ReleaseView {
            version: summary.version.clone(),
            outcome: summary.status.into(),
            reason: summary.reason.clone(),
            created_at: summary.created_at.to_string(),
            completed_at: summary.completed_at.map(|t| t.to_string()),
            lead_time_s: summary.completed_at.map(|c| c.duration_since(summary.created_at).as_secs()),
            reached: summary.reached.clone(),
            rolled_back_scopes: summary.rolled_back_scopes.iter().map(|s| render_scope(&self.plan, *s)).collect(),
            at: summary.place.map(|place| {
                let stage = &self.plan.manifest.stages[place.stage().idx()];
                format!("{}/{}", stage.name, stage.waves[place.wave()].name)
            }),
            waiting: summary.place.map(|place| !place.is_active()),
            artifact,
            sha256,
            lane,
        }
    }

    /// Every release of both lanes, in the order they were created.
    pub fn releases(&self) -> Vec<ReleaseView> {
        let code = self.engine.releases().into_iter().map(|r| (Lane::Code, r));
        let flags = self.flag_engine.releases().into_iter().map(|r| (Lane::Flags, r));
        let mut all: Vec<_> = code.chain(flags).collect();
        // Stable: within one instant, code before flags, each lane in its own order.
        all.sort_by_key(|(_, r)| r.created_at);
        all.iter().map(|(lane, r)| self.release_view(r, *lane)).collect()
    }

    /// Hosts per version in each environment.
    pub fn versions(&self) -> Vec<EnvironmentVersions> {
        self.plan
            .manifest
            .environments
            .iter()
            .enumerate()
            .map(|(e, env)| {
                let env_id = EnvId(e as u16);
                let mut counts: BTreeMap<ReleaseId, u64> = BTreeMap::new();
                for h in 0..self.plan.envs[e].hosts.len() {
                    *counts.entry(self.engine.host_version(env_id, HostId(h as u32))).or_default() += 1;
                }
                EnvironmentVersions {
                    environment: env.name.clone(),
                    versions: counts.into_iter().map(|(v, n)| (self.engine.version_name(v).to_owned(), n)).collect(),
                }
            })
            .collect()
    }

    /// Hosts per version in every region of every stage, as `stage/region`.
    pub fn region_versions(&self) -> Vec<ScopeVersions> {
        let mut out = Vec::new();
        for stage in &self.plan.manifest.stages {
            let env = EnvId(stage.environment as u16);
            for (r, region) in self.plan.manifest.environments[stage.environment].regions.iter().enumerate() {
                let mut counts: BTreeMap<ReleaseId, u64> = BTreeMap::new();
                for h in self.plan.envs[env.idx()].regions[r].hosts.clone() {
                    *counts.entry(self.engine.host_version(env, HostId(h))).or_default() += 1;
                }
                out.push(ScopeVersions {
                    scope: format!("{}/{}", stage.name, region.name),
                    versions: counts.into_iter().map(|(v, n)| (self.engine.version_name(v).to_owned(), n)).collect(),
                });
            }
        }
        out
    }

    pub fn status(&self, holds: Vec<String>) -> ServiceStatus {
        ServiceStatus {
            service: self.name.clone(),
            stages: self
                .plan
                .manifest
                .stages
                .iter()
                .map(|s| StageStatus {
                    name: s.name.clone(),
                    environment: self.plan.manifest.environments[s.environment].name.clone(),
                    waves: s.waves.iter().map(|w| w.name.clone()).collect(),
                })
                .collect(),
            environments: self.versions(),
            releases: self.releases(),
            blocked: self.blocked.values().cloned().collect(),
            holds,
            notifications: Vec::new(),
        }
    }

    /// What a host should run: the last deployment asked of it, or the version it has.
    pub fn desired(&self, env: EnvId, host: HostId) -> Desired {
        let (command, version, purpose) = match self.engine.host_op(env, host) {
            Some((command, version)) => {
                let purpose = purpose(&self.engine, env, host, version);
                (command.0, version, purpose)
            }
            None => (
                self.desired.get(&(env, host)).copied().unwrap_or(0),
                self.engine.host_version(env, host),
                rollwave_api::Purpose::Rollout,
            ),
        };
        let name = self.engine.version_name(version).to_owned();
        let (artifact, sha256) = self.artifacts.get(&name).cloned().unwrap_or_default();
        Desired {
            command,
            version: name,
            artifact,
            sha256,
            purpose,
            flags: self.desired_flags(env, host),
            signatures: self.signature_policy(env),
        }
    }

    /// Whose signatures an artifact of `env` may carry, and whether it must: `None` when
    /// the manifest names no signing key.
    fn signature_policy(&self, env: EnvId) -> Option<rollwave_api::SignaturePolicy> {
        let manifest = &self.plan.manifest;
        if manifest.signing_keys.is_empty() {
            return None;
        }
        Some(rollwave_api::SignaturePolicy {
            required: manifest.environments[env.idx()].require_signatures,
            keys: manifest
                .signing_keys
                .iter()
                .map(|k| rollwave_api::TrustedKey { name: k.name.clone(), public_key: k.public_key.clone() })
                .collect(),
        })
    }

    /// The flag set a host should serve: absent until a flag release first reaches it.
    fn desired_flags(&self, env: EnvId, host: HostId) -> Option<DesiredFlags> {
        let engine = &self.flag_engine;
        let (command, version, purpose) = match engine.host_op(env, host) {
            Some((command, version)) => {
                let purpose = purpose(engine, env, host, version);
                (command.0, version, purpose)
            }
            None => {
                let command = *self.flag_desired.get(&(env, host))?;
                (command, engine.host_version(env, host), rollwave_api::Purpose::Rollout)
            }
        };
        Some(DesiredFlags { command, version: engine.version_name(version).to_owned(), purpose })
    }

    /// A flag-set version's document; `baseline` is the empty set hosts start with.
    pub fn flag_set(&self, version: &str) -> Option<serde_json::Value> {
        match self.flag_sets.get(version) {
            Some(doc) => Some(doc.value().clone()),
            None if version == self.flag_engine.version_name(ReleaseId(0)) => Some(serde_json::json!({ "flags": {} })),
            None => None,
        }
    }

    /// The flag sets a region serves to relays: the flag release rolling out there (if
    /// any) at the share of the region's hosts that serve it, and what the others serve.
    pub fn region_flags(&self, environment: &str, region: &str, generation: i64) -> Result<RegionFlags, ApiError> {
        let env = self.env(environment)?;
        let region = self.region(env, region)?;
        let engine = &self.flag_engine;
        let canary = active_in_region(&self.plan, engine, env, region);
        let region_hosts = self.plan.env(env).regions[region.idx()].hosts.clone();
        let total = region_hosts.len().max(1) as u32;
        let mut on_canary = 0;
        // What the region's other hosts serve: the newest such flag set.
        let mut stable = ReleaseId(0);
        for h in region_hosts.map(HostId) {
            let version = engine.host_version(env, h);
            if canary == Some(version) {
                on_canary += 1;
            } else {
                stable = stable.max(version);
            }
        }
        let document = |id: ReleaseId| {
            let version = engine.version_name(id);
            self.flag_sets
                .get(version)
                .map(|doc| FlagSetDocument { version: version.to_owned(), flags: doc.value().clone() })
        };
        let release = canary.map(|c| engine.version_name(c).to_owned());
        Ok(RegionFlags {
            salt: format!("{}-{}", self.name, release.as_deref().unwrap_or("stable")),
            canary_share: on_canary * 10_000 / total,
            stable: document(stable),
            canary: canary.and_then(document),
            generation,
        })
    }

    pub fn in_flight(&self) -> Vec<CommandView> {
        let mut commands = Vec::new();
        for lane in Lane::ALL {
            let engine = self.lane_engine(lane);
            for (env, host, command, version) in engine.in_flight() {
                let purpose = purpose(engine, env, host, version);
                commands.push(CommandView {
                    id: command.0,
                    service: self.name.clone(),
                    environment: self.plan.manifest.environments[env.idx()].name.clone(),
                    hosts: vec![self.plan.host_name(env, host).to_owned()],
                    version: engine.version_name(version).to_owned(),
                    purpose,
                    lane,
                    targets: match lane {
                        Lane::Code => self.exec_targets(env, &[host], version, purpose),
                        Lane::Flags => Vec::new(),
                    },
                    test: None,
                    functions: match lane {
                        Lane::Code => self.function_step(env, &[host], version),
                        Lane::Flags => None,
                    },
                });
            }
        }
        commands
    }

    pub fn is_settled(&self) -> bool {
        Lane::ALL.into_iter().all(|lane| {
            let engine = self.lane_engine(lane);
            engine.releases().iter().all(|r| r.status != ReleaseStatus::InProgress) && engine.is_idle()
        })
    }
}

/// Whether deploying `version` to a host moves it back (an older version) or forward.
fn purpose(engine: &Engine, env: EnvId, host: HostId, version: ReleaseId) -> rollwave_api::Purpose {
    if version < engine.host_version(env, host) {
        rollwave_api::Purpose::Rollback
    } else {
        rollwave_api::Purpose::Rollout
    }
}

/// The newest open release of `engine` rolling out in a region: its hosts are the canary.
fn active_in_region(
    plan: &Plan,
    engine: &Engine,
    env: EnvId,
    region: rollwave_core::plan::RegionId,
) -> Option<ReleaseId> {
    engine
        .releases()
        .into_iter()
        .filter(|r| matches!(r.status, ReleaseStatus::InProgress | ReleaseStatus::Halted))
        .filter(|r| {
            r.place.is_some_and(|place| {
                let stage = &plan.manifest.stages[place.stage().idx()];
                place.is_active()
                    && stage.environment == env.idx()
                    && stage.waves[place.wave()].regions.contains(&region.idx())
            })
        })
        .map(|r| r.id)
        .next_back()
}

/// Fault injection for tests: a panic in the middle of applying an input, once the
/// engine has taken it, so that the read model is left half-changed.
#[cfg(test)]
pub(crate) mod fault {
    use super::LogInput;
    use std::collections::BTreeSet;
    use std::sync::Mutex;

    /// Services whose next `hold` panics midway.
    pub static PANIC_ON_NEXT_HOLD: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

    pub fn after_engine_input(service: &str, input: &LogInput) {
        let LogInput::Operator { action, .. } = input else { return };
        if *action == rollwave_api::OperatorAction::Hold
            && PANIC_ON_NEXT_HOLD.lock().unwrap_or_else(|p| p.into_inner()).remove(service)
        {
            panic!("injected fault while applying a hold to {service}");
        }
    }
}
