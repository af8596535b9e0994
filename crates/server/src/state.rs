//! The read model: every service's engine and the views derived from its outputs. The
//! leader changes it by applying inputs; followers by replaying the log. Both go through
//! [`ReadModel::apply`], so a replica that replays the log ends in the leader's state.

use crate::api::*;
use crate::error::ApiError;
use jiff::Timestamp;
use rollwave_core::engine::{
    Action, CommandId, Engine, Event, EventKind, Input, OperatorCommand, Output, Purpose, ReleaseId, ReleaseStatus,
    render_scope,
};
use rollwave_core::plan::{EnvId, HostId, Plan, StageId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// An input as the log keeps it: names, not indexes, so it reads on its own.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LogInput {
    ApplyManifest { file: String, text: String },
    CreateRelease { version: String, artifact: Option<String>, sha256: Option<String> },
    Operator { action: String, release: Option<String>, stage: Option<String> },
    HostReport { environment: String, host: String, command: u64, ok: bool, reason: Option<String> },
    Tick,
}

impl LogInput {
    /// What the audit log calls it.
    pub fn action_name(&self) -> &str {
        match self {
            LogInput::ApplyManifest { .. } => "apply_manifest",
            LogInput::CreateRelease { .. } => "create_release",
            LogInput::Operator { action, .. } => action,
            LogInput::HostReport { .. } => "host_report",
            LogInput::Tick => "tick",
        }
    }
}

/// A deployment command as the log and drivers see it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CommandView {
    pub id: u64,
    pub service: String,
    pub environment: String,
    pub hosts: Vec<String>,
    pub version: String,
    pub purpose: String,
}

/// What applying one input produced.
#[derive(Clone, Debug, Default)]
pub struct Applied {
    pub events: Vec<EventView>,
    pub commands: Vec<CommandView>,
}

pub const OPERATOR_ACTIONS: [&str; 6] = ["approve", "rollback", "retry", "roll_forward", "hold", "resume"];

pub struct ServiceState {
    pub name: String,
    pub file: String,
    pub manifest_text: String,
    pub plan: Arc<Plan>,
    pub engine: Engine,
    pub events: Vec<EventView>,
    pub artifacts: BTreeMap<String, (Option<String>, Option<String>)>,
    pub blocked: BTreeMap<(Option<String>, String), BlockedView>,
    /// The last deployment command per host.
    pub desired: BTreeMap<(EnvId, HostId), u64>,
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

fn parse_plan(file: &str, text: &str) -> Result<Arc<Plan>, ApiError> {
    rollwave_manifest::parse_manifest(file, text).map(|m| Arc::new(Plan::new(m))).map_err(|errors| {
        let details: Vec<serde_json::Value> = errors
            .errors
            .iter()
            .map(|e| serde_json::json!({ "line": e.location.line, "col": e.location.col, "message": e.message }))
            .collect();
        ApiError::invalid(errors.to_string().trim_end().to_owned()).with_details(serde_json::Value::Array(details))
    })
}

impl ReadModel {
    /// Applies one input at `at_ms`. A refused input changes nothing.
    pub fn apply(&mut self, service: &str, at_ms: i64, input: &LogInput) -> Result<Applied, ApiError> {
        let now = timestamp(at_ms);
        if let LogInput::ApplyManifest { file, text } = input {
            let plan = parse_plan(file, text)?;
            if plan.manifest.service != service {
                return Err(ApiError::invalid(format!(
                    "the manifest is for service {:?}, not {service:?}",
                    plan.manifest.service
                )));
            }
            match self.services.get_mut(service) {
                Some(s) => {
                    s.engine.replace_plan(Arc::clone(&plan)).map_err(|e| ApiError::conflict(e.to_string()))?;
                    s.plan = plan;
                    s.manifest_text = text.clone();
                    s.file = file.clone();
                }
                None => {
                    let engine = Engine::new(Arc::clone(&plan), "baseline", now);
                    self.services.insert(
                        service.to_owned(),
                        ServiceState {
                            name: service.to_owned(),
                            file: file.clone(),
                            manifest_text: text.clone(),
                            plan,
                            engine,
                            events: Vec::new(),
                            artifacts: BTreeMap::new(),
                            blocked: BTreeMap::new(),
                            desired: BTreeMap::new(),
                        },
                    );
                }
            }
            return Ok(Applied::default());
        }
        let s = self.services.get_mut(service).ok_or_else(|| ApiError::not_found(format!("no service {service:?}")))?;
        let engine_input = s.to_input(input)?;
        s.engine.handle(now, engine_input).map_err(|e| match e {
            rollwave_core::engine::InputError::UnknownRelease(_) => ApiError::not_found(e.to_string()),
            rollwave_core::engine::InputError::DuplicateVersion(_) => ApiError::conflict(e.to_string()),
            _ => ApiError::conflict(e.to_string()),
        })?;
        if let LogInput::CreateRelease { version, artifact, sha256 } = input {
            s.artifacts.insert(version.clone(), (artifact.clone(), sha256.clone()));
        }
        let outputs: Vec<Output> = s.engine.drain().collect();
        let mut applied = Applied::default();
        for output in outputs {
            match output {
                Output::Event(e) => {
                    let view = s.event_view(&e);
                    s.track_blocked(&e, &view);
                    s.events.push(view.clone());
                    applied.events.push(view);
                }
                Output::Command(c) => {
                    if let Action::Deploy { env, hosts, version, purpose, .. } = c.action {
                        for &h in &hosts {
                            s.desired.insert((env, h), c.id.0);
                        }
                        applied.commands.push(CommandView {
                            id: c.id.0,
                            service: s.name.clone(),
                            environment: s.plan.manifest.environments[env.idx()].name.clone(),
                            hosts: hosts.iter().map(|&h| s.plan.host_name(env, h).to_owned()).collect(),
                            version: s.engine.version_name(version).to_owned(),
                            purpose: match purpose {
                                Purpose::Rollout => "rollout".into(),
                                Purpose::Rollback => "rollback".into(),
                            },
                        });
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
    fn to_input(&self, input: &LogInput) -> Result<Input, ApiError> {
        Ok(match input {
            LogInput::ApplyManifest { .. } => unreachable!("handled by ReadModel::apply"),
            LogInput::CreateRelease { version, .. } => {
                rollwave_manifest::yaml::check_name(version).map_err(ApiError::invalid)?;
                Input::CreateRelease { version: version.clone() }
            }
            LogInput::Tick => Input::Tick,
            LogInput::HostReport { environment, host, command, ok, reason } => {
                let (env, host) = self.host(environment, host)?;
                let result = if *ok { Ok(()) } else { Err(reason.clone().unwrap_or_else(|| "failed".into())) };
                Input::HostReport { env, host, command: CommandId(*command), result }
            }
            LogInput::Operator { action, release, stage } => {
                let stage = stage.as_deref().map(|s| self.stage(s)).transpose()?;
                let release = || -> Result<ReleaseId, ApiError> {
                    let name =
                        release.as_deref().ok_or_else(|| ApiError::bad_request(format!("{action} needs a release")))?;
                    self.engine.release_named(name).ok_or_else(|| ApiError::not_found(format!("no release {name:?}")))
                };
                Input::Operator(match action.as_str() {
                    "approve" => OperatorCommand::Approve { release: release()?, stage },
                    "rollback" => OperatorCommand::Rollback { release: release()? },
                    "retry" => OperatorCommand::Retry { release: release()? },
                    "roll_forward" => OperatorCommand::RollForward { release: release()? },
                    "hold" => OperatorCommand::Hold { stage },
                    "resume" => OperatorCommand::Resume { stage },
                    other => return Err(ApiError::not_found(format!("no action {other:?}"))),
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

    pub fn host(&self, env: &str, host: &str) -> Result<(EnvId, HostId), ApiError> {
        let env = self.env(env)?;
        let h = self
            .plan
            .host_named(env, host)
            .ok_or_else(|| ApiError::not_found(format!("no host {host:?} in that environment")))?;
        Ok((env, h))
    }

    pub fn stage(&self, name: &str) -> Result<StageId, ApiError> {
        self.plan
            .manifest
            .stage_named(name)
            .map(|i| StageId(i as u16))
            .ok_or_else(|| ApiError::not_found(format!("service {} has no stage {name:?}", self.name)))
    }

    fn event_view(&self, e: &Event) -> EventView {
        EventView {
            seq: None,
            t: e.at.to_string(),
            service: self.name.clone(),
            kind: e.kind.as_str().to_owned(),
            release: e.release.map(|r| self.engine.version_name(r).to_owned()),
            scope: render_scope(&self.plan, e.scope),
            reason: e.reason.clone(),
        }
    }

    /// Keeps what is blocked now: a `blocked` event stands until its release moves on there.
    fn track_blocked(&mut self, e: &Event, view: &EventView) {
        let key = (view.release.clone(), view.scope.clone());
        if e.kind == EventKind::Blocked {
            self.blocked.insert(
                key,
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
            if *release != view.release {
                return true;
            }
            if settled {
                return false;
            }
            let related = scope == &view.scope
                || scope.starts_with(&format!("{}/", view.scope))
                || view.scope.starts_with(&format!("{scope}/"));
            !related
        });
    }

    pub fn release_view(&self, summary: &rollwave_core::engine::ReleaseSummary) -> ReleaseView {
        let (artifact, sha256) = self.artifacts.get(&summary.version).cloned().unwrap_or_default();
        ReleaseView {
            version: summary.version.clone(),
            outcome: summary.status.as_str().to_owned(),
            reason: summary.reason.clone(),
            created_at: summary.created_at.to_string(),
            completed_at: summary.completed_at.map(|t| t.to_string()),
            lead_time_s: summary.completed_at.map(|c| c.duration_since(summary.created_at).as_secs()),
            reached: summary.reached.clone(),
            rolled_back_scopes: summary.rolled_back_scopes.iter().map(|s| render_scope(&self.plan, *s)).collect(),
            at: summary.position.map(|(s, w, _)| {
                let stage = &self.plan.manifest.stages[s.idx()];
                format!("{}/{}", stage.name, stage.waves[w].name)
            }),
            waiting: summary.position.map(|(_, _, active)| !active),
            artifact,
            sha256,
        }
    }

    pub fn releases(&self) -> Vec<ReleaseView> {
        self.engine.releases().iter().map(|r| self.release_view(r)).collect()
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
        }
    }

    /// What a host should run: the last deployment asked of it, or the version it has.
    pub fn desired(&self, env: EnvId, host: HostId) -> Desired {
        let (command, version, purpose) = match self.engine.host_op(env, host) {
            Some((command, version)) => {
                let purpose = if version < self.engine.host_version(env, host) { "rollback" } else { "rollout" };
                (command.0, version, purpose)
            }
            None => {
                (self.desired.get(&(env, host)).copied().unwrap_or(0), self.engine.host_version(env, host), "rollout")
            }
        };
        let name = self.engine.version_name(version).to_owned();
        let (artifact, sha256) = self.artifacts.get(&name).cloned().unwrap_or_default();
        Desired { command, version: name, artifact, sha256, purpose: purpose.into() }
    }

    pub fn in_flight(&self) -> Vec<CommandView> {
        self.engine
            .in_flight()
            .into_iter()
            .map(|(env, host, command, version)| CommandView {
                id: command.0,
                service: self.name.clone(),
                environment: self.plan.manifest.environments[env.idx()].name.clone(),
                hosts: vec![self.plan.host_name(env, host).to_owned()],
                version: self.engine.version_name(version).to_owned(),
                purpose: "rollout".into(),
            })
            .collect()
    }

    pub fn is_settled(&self) -> bool {
        self.engine.releases().iter().all(|r| r.status != ReleaseStatus::InProgress) && self.engine.is_idle()
    }
}
