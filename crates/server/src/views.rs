//! Read-model views for the dashboard: the pipeline as a grid of cells (one per stage,
//! wave and region), hosts, alarm instances and a release's rollout over time. Plain
//! functions over a [`ServiceState`]; bakes' progress is the engine's, and what the
//! engine does not expose (alarm instances' history, when hosts changed version) is
//! followed here as inputs are applied, so a replica that replays the log gets the same
//! views.

use crate::records::{Record, RecordKind, ScopePath};
use crate::state::{LogInput, ServiceState};
use jiff::Timestamp;
use rollwave_api::{AlarmState, Lane};
use rollwave_core::engine::{Engine, EventKind, Place, ReleaseId, ReleaseStatus, ReleaseSummary, Scope};
use rollwave_core::plan::{EnvId, HostId, RegionId, StageId};
use std::collections::{BTreeMap, VecDeque};

/// How many alarm state changes and host version changes a service remembers.
const ALARM_HISTORY: usize = 200;
const HOST_HISTORY: usize = 100_000;

/// What the dashboard follows beside the engine.
#[derive(Default)]
pub struct Tracked {
    /// Every alarm instance ever reported, by (alarm, scope path).
    alarms: BTreeMap<(String, String), AlarmInstance>,
    /// Recent alarm state changes, oldest first.
    alarm_changes: VecDeque<AlarmChange>,
    /// When hosts changed version, oldest first.
    host_changes: VecDeque<HostChange>,
}

#[derive(Clone, Debug)]
pub struct AlarmInstance {
    pub alarm: String,
    pub scope: String,
    pub state: AlarmState,
    pub reason: String,
    pub since: Timestamp,
    /// Where it lives, for placing its badge on the pipeline.
    place: Option<Scope>,
}

#[derive(Clone, Debug)]
pub struct AlarmChange {
    pub at: Timestamp,
    pub alarm: String,
    pub scope: String,
    pub from: AlarmState,
    pub to: AlarmState,
    pub reason: String,
}

#[derive(Clone, Copy, Debug)]
struct HostChange {
    at_ms: i64,
    env: EnvId,
    host: HostId,
    from: ReleaseId,
    to: ReleaseId,
}

impl ServiceState {
    /// Called once an input was accepted by the engine, before its outputs are handled.
    pub(crate) fn track_input(&mut self, at_ms: i64, input: &LogInput, before: Option<(EnvId, HostId, ReleaseId)>) {
        if let Some((env, host, from)) = before {
            let to = self.engine.host_version(env, host);
            if to != from {
                let changes = &mut self.tracked.host_changes;
                changes.push_back(HostChange { at_ms, env, host, from, to });
                if changes.len() > HOST_HISTORY {
                    changes.pop_front();
                }
            }
        }
        let LogInput::Alarm { alarm, scope, state, reason } = input else { return };
        let at = crate::state::timestamp(at_ms);
        let key = (alarm.clone(), scope.clone());
        let from = self.tracked.alarms.get(&key).map_or(AlarmState::Ok, |a| a.state);
        if from == *state {
            return;
        }
        let place = self.scope(scope).ok();
        self.tracked.alarms.insert(
            key,
            AlarmInstance {
                alarm: alarm.clone(),
                scope: scope.clone(),
                state: *state,
                reason: reason.clone(),
                since: at,
                place,
            },
        );
        let changes = &mut self.tracked.alarm_changes;
        changes.push_back(AlarmChange {
            at,
            alarm: alarm.clone(),
            scope: scope.clone(),
            from,
            to: *state,
            reason: reason.clone(),
        });
        if changes.len() > ALARM_HISTORY {
            changes.pop_front();
        }
    }

    /// The version a host reporting now runs, to see afterwards whether it changed.
    pub(crate) fn version_before(&self, input: &LogInput) -> Option<(EnvId, HostId, ReleaseId)> {
        let LogInput::HostReport { environment, host, lane: Lane::Code, .. } = input else { return None };
        let (env, host) = self.host(environment, host).ok()?;
        Some((env, host, self.engine.host_version(env, host)))
    }

    /// The service's pipeline: stages and waves as columns, regions as cells. A cell shows
    /// the code lane; once the service has had a flag release, the flags lane beside it.
    pub fn pipeline(&self, now: Timestamp) -> PipelineView {
        let grid = Grid::new(self);
        let code = LaneRows::new(&grid, &self.engine, &self.events);
        // The flags lane's rows (a second pass over the timeline) only once it has a release.
        let flags = self
            .flag_engine
            .releases()
            .iter()
            .any(|r| r.id.0 > 0)
            .then(|| LaneRows::new(&grid, &self.flag_engine, &self.events));
        let mut stages = Vec::new();
        for (s, stage) in self.plan.manifest.stages.iter().enumerate() {
            let stage_id = StageId(s as u16);
            let env = self.plan.stage_env(stage_id);
            let mut waves = Vec::new();
            for (w, wave) in stage.waves.iter().enumerate() {
                let mut at: Vec<WaveRelease> = code.at(stage_id, w).collect();
                if let Some(flags) = &flags {
                    at.extend(flags.at(stage_id, w));
                }
                at.sort_by(|a, b| a.what.cmp(&b.what));
                let cells = wave
                    .regions
                    .iter()
                    .map(|&r| {
                        let region = RegionId(r as u16);
                        let lane = |rows: &LaneRows, with_alarms: bool| {
                            let (shown, last) = rows.shown(&grid, stage_id, w, region);
                            self.cell(rows.engine, stage_id, w, env, region, shown, last, now, with_alarms)
                        };
                        let mut cell = lane(&code, true);
                        cell.flags = flags.as_ref().map(|flags| Box::new(lane(flags, false)));
                        cell
                    })
                    .collect();
                waves.push(WaveColumn { name: wave.name.clone(), releases: at, cells });
            }
            let (service_hold, stage_holds) = self.engine.holds();
            stages.push(StageColumn {
                name: stage.name.clone(),
                environment: self.plan.manifest.environments[stage.environment].name.clone(),
                approval: stage.approval,
                held: service_hold || stage_holds.contains(&stage_id),
                waves,
            });
        }
        PipelineView { stages }
    }

    /// Every region of every stage as one release, of either lane, sees it.
    pub fn release_cells(&self, release: &str, now: Timestamp) -> Vec<CellView> {
        let (engine, id) = match (self.engine.release_named(release), self.flag_engine.release_named(release)) {
            (Some(id), _) => (&self.engine, id),
            (None, Some(id)) => (&self.flag_engine, id),
            (None, None) => return Vec::new(),
        };
        let grid = Grid::new(self);
        let last = grid.last_phases(&self.events, &engine.releases());
        let mut out = Vec::new();
        for (s, stage) in self.plan.manifest.stages.iter().enumerate() {
            let stage_id = StageId(s as u16);
            let env = self.plan.stage_env(stage_id);
            for (w, wave) in stage.waves.iter().enumerate() {
                for &r in &wave.regions {
                    let region = RegionId(r as u16);
                    let cell = grid.cell(stage_id, region);
                    out.push(self.cell(engine, stage_id, w, env, region, Some(id), last.get(&(cell, id)), now, true));
                }
            }
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn cell(
        &self,
        engine: &Engine,
        stage: StageId,
        wave: usize,
        env: EnvId,
        region: RegionId,
        release: Option<ReleaseId>,
        last: Option<&&Record>,
        now: Timestamp,
        with_alarms: bool,
    ) -> CellView {
        let hosts = self.plan.env(env).regions[region.idx()].hosts.clone();
        let total = hosts.len() as u64;
        let mut counts: BTreeMap<ReleaseId, u64> = BTreeMap::new();
        let mut moving: BTreeMap<(ReleaseId, bool), u64> = BTreeMap::new();
        let mut lost = 0;
        for h in hosts.map(HostId) {
            let version = engine.host_version(env, h);
            *counts.entry(version).or_default() += 1;
            if let Some((_, target)) = engine.host_op(env, h) {
                *moving.entry((target, target < version)).or_default() += 1;
            }
            if !engine.host_present(env, h) {
                lost += 1;
            }
        }
        let versions = counts
            .into_iter()
            .map(|(v, n)| VersionCount {
                version: engine.version_name(v).to_owned(),
                hosts: n,
                percent: (n * 100).checked_div(total).unwrap_or(0),
            })
            .collect();
        let deploying: Vec<String> = moving
            .iter()
            .map(|(&(v, back), n)| {
                let verb = if back { "rolling back to" } else { "deploying" };
                format!("{n} host(s) {verb} {}", engine.version_name(v))
            })
            .collect();
        let summary = release.and_then(|r| engine.releases().into_iter().find(|s| s.id == r));
        let (mut state, mut detail) = match last {
            Some(e) => self.phase(engine, e, release, now),
            None => match &summary {
                Some(s) if s.place == Some(Place::Waiting { stage, wave }) => (CellState::Waiting, None),
                _ => (CellState::Idle, None),
            },
        };
        if let Some(s) = &summary {
            // A release still in an earlier wave of this stage has not come here yet,
            // whatever a stage-wide event said before.
            if let Some(place) = s.place
                && place.stage() == stage
                && place.wave() < wave
                && s.status == ReleaseStatus::InProgress
            {
                let waves = &self.plan.manifest.stages[stage.idx()].waves;
                state = CellState::Waiting;
                detail = Some(format!("comes after {}", waves[wave - 1].name));
            }
            if s.status == ReleaseStatus::Halted && state != CellState::RollingBack {
                state = CellState::Halted;
                detail = s.reason.clone().or(detail);
            }
        }
        if !moving.is_empty() && state != CellState::RollingBack {
            state = if moving.keys().any(|(_, back)| *back) { CellState::RollingBack } else { CellState::Deploying };
        }
        // The engine says which instances bear on the region; the badges name them as
        // their reports did.
        let instances = if with_alarms { engine.alarms_in_region(env, region) } else { Vec::new() };
        let mut alarms: Vec<AlarmBadge> = instances
            .into_iter()
            .filter_map(|i| {
                let name = &self.plan.manifest.alarms.get(i.alarm)?.name;
                let a = self.tracked.alarms.values().find(|a| a.alarm == *name && a.place == Some(i.scope))?;
                Some(AlarmBadge { alarm: a.alarm.clone(), state: a.state, scope: a.scope.clone() })
            })
            .collect();
        alarms.sort_by(|a, b| (&a.alarm, &a.scope).cmp(&(&b.alarm, &b.scope)));
        CellView {
            stage: self.plan.manifest.stages[stage.idx()].name.clone(),
            region: self.plan.region_name(env, region).to_owned(),
            hosts: total,
            lost,
            versions,
            release: release.filter(|r| r.0 > 0).map(|r| engine.version_name(r).to_owned()),
            state: state.as_str(),
            label: state.label(),
            detail,
            deploying,
            alarms,
            flags: None,
        }
    }

    /// What the last phase event of a release in a cell says about it.
    fn phase(
        &self,
        engine: &Engine,
        e: &Record,
        release: Option<ReleaseId>,
        now: Timestamp,
    ) -> (CellState, Option<String>) {
        let RecordKind::Event(kind) = e.kind else { return (CellState::Deploying, None) };
        match kind {
            EventKind::BakeStarted => {
                let bakes = engine.bakes();
                let bake = release.and_then(|r| {
                    bakes.iter().find(|b| b.release == r && ScopePath::of(&self.plan, b.scope) == e.scope)
                });
                let detail = match bake {
                    Some(b) => {
                        let left = b.until.duration_since(now).as_secs().max(0) as u64;
                        let points = b.need.saturating_sub(b.seen);
                        let mut text = format!("{} left", human_duration(left));
                        if b.need > 0 {
                            text.push_str(&format!(", {points} of {} data points to go", b.need));
                        }
                        text
                    }
                    None => e.reason.clone().unwrap_or_default(),
                };
                (CellState::Baking, Some(detail))
            }
            EventKind::Blocked => (CellState::Blocked, e.reason.clone()),
            EventKind::RollbackStarted => (CellState::RollingBack, e.reason.clone()),
            EventKind::RollbackCompleted | EventKind::ReleaseRolledBack => (CellState::RolledBack, e.reason.clone()),
            EventKind::RegionCompleted
            | EventKind::WaveCompleted
            | EventKind::StageCompleted
            | EventKind::ReleaseCompleted => (CellState::Done, None),
            // A wave's or a stage's bake ends the cell's part; a one-box's or a zone's does not.
            EventKind::BakeCompleted
                if matches!(e.scope, ScopePath::Service | ScopePath::Stage { .. } | ScopePath::Wave { .. }) =>
            {
                (CellState::Done, None)
            }
            EventKind::WaveStarted => (CellState::Waiting, Some("the region's turn comes".into())),
            EventKind::BakeCompleted
            | EventKind::ReleaseCreated
            | EventKind::Approved
            | EventKind::StageEntered
            | EventKind::RegionStarted
            | EventKind::OneBoxDeployed
            | EventKind::ZoneStarted
            | EventKind::BatchDeployed
            | EventKind::ZoneCompleted
            | EventKind::TestStarted
            | EventKind::TestPassed
            | EventKind::TestFailed
            | EventKind::AlarmFired
            | EventKind::AlarmCleared
            | EventKind::ReleaseHalted
            | EventKind::ReleaseResumed
            | EventKind::ReleaseSuperseded
            | EventKind::HostFailed
            | EventKind::RegressionSuspected
            | EventKind::JudgeVerdict
            | EventKind::Held
            | EventKind::Resumed => (CellState::Deploying, None),
        }
    }

    /// Every host of the service: where it is, what it runs, what it is doing.
    pub fn hosts_view(&self, heartbeats: &[(String, String, i64)]) -> Vec<HostView> {
        let mut last: BTreeMap<(EnvId, HostId), i64> = BTreeMap::new();
        for (env, host, at) in heartbeats {
            if let Ok(key) = self.host(env, host) {
                let entry = last.entry(key).or_insert(0);
                *entry = (*entry).max(*at);
            }
        }
        let agents: BTreeMap<(EnvId, HostId), &str> =
            self.aliases.iter().map(|((e, alias), h)| ((*e, *h), alias.as_str())).collect();
        let mut out = Vec::new();
        for (e, environment) in self.plan.manifest.environments.iter().enumerate() {
            let env = EnvId(e as u16);
            for h in 0..self.plan.env(env).hosts.len() {
                let host = HostId(h as u32);
                let zone = self.plan.host_zone(env, host);
                let version = self.engine.host_version(env, host);
                out.push(HostView {
                    environment: environment.name.clone(),
                    region: self.plan.region_name(env, self.plan.zone_region(env, zone)).to_owned(),
                    zone: self.plan.zone_name(env, zone).to_owned(),
                    host: self.plan.host_name(env, host).to_owned(),
                    agent: agents.get(&(env, host)).map(|a| (*a).to_owned()),
                    address: self.addresses.get(&(env, host)).cloned(),
                    version: self.engine.version_name(version).to_owned(),
                    operation: self.engine.host_op(env, host).map(|(c, target)| {
                        let verb = if target < version { "rolling back to" } else { "deploying" };
                        format!("{verb} {} (command {})", self.engine.version_name(target), c.0)
                    }),
                    present: self.engine.host_present(env, host),
                    last_heartbeat: last.get(&(env, host)).map(|&ms| crate::state::timestamp(ms)),
                });
            }
        }
        out
    }

    /// Alarm instances ever reported, by alarm and scope.
    pub fn alarm_instances(&self) -> Vec<AlarmInstance> {
        self.tracked.alarms.values().cloned().collect()
    }

    /// Recent alarm state changes, newest first.
    pub fn alarm_changes(&self) -> Vec<AlarmChange> {
        self.tracked.alarm_changes.iter().rev().cloned().collect()
    }

    /// The share of the service's hosts on each version over `[from_ms, to_ms]`, as steps
    /// at every change, oldest first: (unix ms, hosts per version).
    pub fn version_history(&self, from_ms: i64, to_ms: i64) -> Vec<(i64, BTreeMap<String, u64>)> {
        let mut current: BTreeMap<(EnvId, HostId), ReleaseId> = BTreeMap::new();
        for (e, env) in self.plan.envs.iter().enumerate() {
            for h in 0..env.hosts.len() {
                let key = (EnvId(e as u16), HostId(h as u32));
                current.insert(key, self.engine.host_version(key.0, key.1));
            }
        }
        // Walk back from now to `from_ms`, undoing changes, then forward again.
        let changes = &self.tracked.host_changes;
        for c in changes.iter().rev().take_while(|c| c.at_ms > from_ms) {
            current.insert((c.env, c.host), c.from);
        }
        let count = |current: &BTreeMap<(EnvId, HostId), ReleaseId>| {
            let mut n: BTreeMap<String, u64> = BTreeMap::new();
            for v in current.values() {
                *n.entry(self.engine.version_name(*v).to_owned()).or_default() += 1;
            }
            n
        };
        let mut out = vec![(from_ms, count(&current))];
        for c in changes.iter().filter(|c| c.at_ms > from_ms && c.at_ms <= to_ms) {
            current.insert((c.env, c.host), c.to);
            match out.last_mut() {
                Some(last) if last.0 == c.at_ms => last.1 = count(&current),
                _ => out.push((c.at_ms, count(&current))),
            }
        }
        out
    }
}

/// One lane's releases and where each last got to, per cell.
struct LaneRows<'a> {
    engine: &'a Engine,
    releases: Vec<ReleaseSummary>,
    last: BTreeMap<(usize, ReleaseId), &'a Record>,
}

impl<'a> LaneRows<'a> {
    fn new(grid: &Grid, engine: &'a Engine, events: &'a [Record]) -> Self {
        let releases = engine.releases();
        let last = grid.last_phases(events, &releases);
        LaneRows { engine, releases, last }
    }

    /// This lane's releases deploying in (`active`) or waiting at a wave.
    fn here(&self, stage: StageId, wave: usize, active: bool) -> impl Iterator<Item = &ReleaseSummary> {
        let place = if active { Place::Active { stage, wave } } else { Place::Waiting { stage, wave } };
        self.releases
            .iter()
            .filter(move |r| r.place == Some(place))
            .filter(|r| matches!(r.status, ReleaseStatus::InProgress | ReleaseStatus::Halted))
    }

    fn at(&self, stage: StageId, wave: usize) -> impl Iterator<Item = WaveRelease> + '_ {
        let named = |what: &'static str| {
            move |r: &ReleaseSummary| WaveRelease { version: r.version.clone(), what: what.into() }
        };
        self.here(stage, wave, true).map(named("active")).chain(self.here(stage, wave, false).map(named("waiting")))
    }

    /// The release a cell shows: the one deploying here, else the one waiting at the
    /// wave's gate, else the newest that did something here; with its last phase event.
    fn shown(
        &self,
        grid: &Grid,
        stage: StageId,
        wave: usize,
        region: RegionId,
    ) -> (Option<ReleaseId>, Option<&&'a Record>) {
        let cell = grid.cell(stage, region);
        let shown = self
            .here(stage, wave, true)
            .map(|r| r.id)
            .max()
            .or_else(|| self.here(stage, wave, false).map(|r| r.id).max())
            .or_else(|| self.last.keys().filter(|(c, _)| *c == cell).map(|(_, rel)| *rel).max());
        (shown, self.last.get(&(cell, shown.unwrap_or(ReleaseId(0)))))
    }
}

/// Maps event scopes (a stage's region, zone or host, a wave, a stage) to the cells they
/// touch.
struct Grid {
    regions: BTreeMap<(String, String), usize>,
    waves: BTreeMap<(String, String), Vec<usize>>,
    stages: BTreeMap<String, Vec<usize>>,
    index: BTreeMap<(StageId, RegionId), usize>,
}

impl Grid {
    fn new(s: &ServiceState) -> Self {
        let mut grid =
            Grid { regions: BTreeMap::new(), waves: BTreeMap::new(), stages: BTreeMap::new(), index: BTreeMap::new() };
        for (i, stage) in s.plan.manifest.stages.iter().enumerate() {
            let env = &s.plan.manifest.environments[stage.environment];
            for wave in &stage.waves {
                for &r in &wave.regions {
                    let cell = grid.index.len();
                    grid.index.insert((StageId(i as u16), RegionId(r as u16)), cell);
                    grid.regions.insert((stage.name.clone(), env.regions[r].name.clone()), cell);
                    grid.waves.entry((stage.name.clone(), wave.name.clone())).or_default().push(cell);
                    grid.stages.entry(stage.name.clone()).or_default().push(cell);
                }
            }
        }
        grid
    }

    fn cell(&self, stage: StageId, region: RegionId) -> usize {
        self.index.get(&(stage, region)).copied().unwrap_or(usize::MAX)
    }

    /// The cells an event at `scope` of this kind touches.
    fn cells_of(&self, kind: EventKind, scope: &ScopePath) -> &[usize] {
        match scope {
            ScopePath::Service => &[],
            // Only what a stage-wide gate says reaches every region of the stage.
            ScopePath::Stage { stage } if kind == EventKind::Blocked => {
                self.stages.get(stage).map_or(&[], Vec::as_slice)
            }
            ScopePath::Stage { .. } => &[],
            ScopePath::Wave { stage, wave } => {
                self.waves.get(&(stage.clone(), wave.clone())).map_or(&[], Vec::as_slice)
            }
            ScopePath::Region { stage, region }
            | ScopePath::Zone { stage, region, .. }
            | ScopePath::Host { stage, region, .. } => {
                self.regions.get(&(stage.clone(), region.clone())).map_or(&[][..], std::slice::from_ref)
            }
        }
    }

    /// The last event per cell and release that says where the release got to there.
    fn last_phases<'a>(
        &self,
        events: &'a [Record],
        releases: &[ReleaseSummary],
    ) -> BTreeMap<(usize, ReleaseId), &'a Record> {
        let ids: BTreeMap<&str, ReleaseId> = releases.iter().map(|r| (r.version.as_str(), r.id)).collect();
        let mut last = BTreeMap::new();
        for e in events {
            let Some(name) = e.release.as_deref() else { continue };
            let Some(&id) = ids.get(name) else { continue };
            let RecordKind::Event(kind) = e.kind else { continue };
            if !PHASE_KINDS.contains(&kind) {
                continue;
            }
            for &cell in self.cells_of(kind, &e.scope) {
                last.insert((cell, id), e);
            }
        }
        last
    }
}

/// The event kinds that move a release along in a region.
const PHASE_KINDS: [EventKind; 14] = [
    EventKind::WaveStarted,
    EventKind::RegionStarted,
    EventKind::OneBoxDeployed,
    EventKind::BakeStarted,
    EventKind::BakeCompleted,
    EventKind::ZoneStarted,
    EventKind::BatchDeployed,
    EventKind::ZoneCompleted,
    EventKind::RegionCompleted,
    EventKind::WaveCompleted,
    EventKind::Blocked,
    EventKind::RollbackStarted,
    EventKind::RollbackCompleted,
    EventKind::HostFailed,
];

/// `1h5m`, `4m10s`, `12s`: as manifests write durations.
pub fn human_duration(secs: u64) -> String {
    rollwave_core::format_duration(std::time::Duration::from_secs(secs))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CellState {
    Idle,
    Waiting,
    Deploying,
    Baking,
    Blocked,
    Done,
    RollingBack,
    RolledBack,
    Halted,
}

impl CellState {
    /// The CSS class: the colour says the state.
    fn as_str(self) -> &'static str {
        match self {
            CellState::Idle => "idle",
            CellState::Waiting => "waiting",
            CellState::Deploying => "deploying",
            CellState::Baking => "baking",
            CellState::Blocked => "blocked",
            CellState::Done => "done",
            CellState::RollingBack => "rolling-back",
            CellState::RolledBack => "rolled-back",
            CellState::Halted => "halted",
        }
    }

    fn label(self) -> &'static str {
        match self {
            CellState::Idle => "idle",
            CellState::Waiting => "waiting",
            CellState::Deploying => "deploying",
            CellState::Baking => "baking",
            CellState::Blocked => "blocked",
            CellState::Done => "done",
            CellState::RollingBack => "rolling back",
            CellState::RolledBack => "rolled back",
            CellState::Halted => "halted",
        }
    }
}

pub struct PipelineView {
    pub stages: Vec<StageColumn>,
}

pub struct StageColumn {
    pub name: String,
    pub environment: String,
    pub approval: bool,
    pub held: bool,
    pub waves: Vec<WaveColumn>,
}

pub struct WaveColumn {
    pub name: String,
    /// Releases deploying in (`active`) or waiting at (`waiting`) the wave.
    pub releases: Vec<WaveRelease>,
    pub cells: Vec<CellView>,
}

pub struct WaveRelease {
    pub version: String,
    pub what: String,
}

/// One region of one stage.
pub struct CellView {
    pub stage: String,
    pub region: String,
    pub hosts: u64,
    /// Hosts whose agent has not registered or was lost.
    pub lost: u64,
    pub versions: Vec<VersionCount>,
    /// The release the state is about.
    pub release: Option<String>,
    /// `idle`, `waiting`, `deploying`, `baking`, `blocked`, `done`, `rolling-back`, `rolled-back` or `halted`.
    pub state: &'static str,
    pub label: &'static str,
    /// Why it is blocked or halted, or what a bake still waits for.
    pub detail: Option<String>,
    pub deploying: Vec<String>,
    pub alarms: Vec<AlarmBadge>,
    /// The same region's flags lane, once the service has had a flag release; its
    /// alarms are the code lane's, so it shows none of its own.
    pub flags: Option<Box<CellView>>,
}

pub struct VersionCount {
    pub version: String,
    pub hosts: u64,
    pub percent: u64,
}

pub struct AlarmBadge {
    pub alarm: String,
    pub state: AlarmState,
    pub scope: String,
}

pub struct HostView {
    pub environment: String,
    pub region: String,
    pub zone: String,
    pub host: String,
    /// The id its agent registered with, when that differs from the slot.
    pub agent: Option<String>,
    pub address: Option<String>,
    pub version: String,
    pub operation: Option<String>,
    pub present: bool,
    pub last_heartbeat: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use crate::state::{LogInput, ReadModel};

    const MANIFEST: &str = "\
service: web
environments:
  prod: { regions: { r1: { zones: { z1: 2, z2: 2 } }, r2: { zones: { y1: 2 } } } }
strategy:
  one_box: { hosts: 1, max_share: 50%, bake: { time: 1h, min_datapoints: 5 } }
  rolling: { batch: 50%, zone_bake: 0s }
stages:
  - { name: prod, environment: prod, bake: 0s }
alarms:
  - { name: errors, metric: error_rate, scope: zone, threshold: \"> 0.02\", period: 1m, datapoints: 3 of 5 }
  - { name: region-errors, metric: error_rate, scope: region, threshold: \"> 0.01\", period: 1m, datapoints: 5 of 5 }
";

    fn input(json: serde_json::Value) -> LogInput {
        serde_json::from_value(json).expect("a log input")
    }

    /// A model with `v2`'s one-boxes deployed and baking.
    fn baking() -> ReadModel {
        let mut m = ReadModel::default();
        let apply = input(serde_json::json!({"type": "apply_manifest", "file": "web.yaml", "text": MANIFEST}));
        m.apply("web", 0, &apply).expect("the manifest applies");
        let create =
            input(serde_json::json!({"type": "create_release", "version": "v2", "artifact": null, "sha256": null}));
        let mut commands = m.apply("web", 1_000, &create).expect("the release is created").commands;
        while let Some(c) = commands.pop() {
            for host in &c.hosts {
                let report = input(serde_json::json!({
                    "type": "host_report", "environment": c.environment, "host": host, "command": c.id,
                    "ok": true, "reason": null,
                }));
                commands.extend(m.apply("web", 2_000, &report).expect("the report applies").commands);
            }
        }
        m
    }

    fn cell(m: &ReadModel, region: &str) -> crate::views::CellView {
        let now = crate::state::timestamp(3_000);
        let mut pipeline = m.service("web").expect("the service").pipeline(now);
        let cells = pipeline.stages.remove(0).waves.remove(0).cells;
        cells.into_iter().find(|c| c.region == region).expect("the region's cell")
    }

    fn served(m: &mut ReadModel, zone: &str, requests: u64) {
        let served = input(serde_json::json!({
            "type": "served", "environment": "prod", "zone": zone, "version": "v2", "requests": requests,
        }));
        m.apply("web", 2_500, &served).expect("served applies");
    }

    #[test]
    fn a_one_box_bake_counts_what_the_engine_counts_its_first_zone_s_traffic() {
        let mut m = baking();
        assert_eq!(cell(&m, "r1").state, "baking");
        assert_eq!(cell(&m, "r1").detail.as_deref(), Some("59m59s left, 5 of 5 data points to go"));
        served(&mut m, "z2", 3);
        assert_eq!(
            cell(&m, "r1").detail.as_deref(),
            Some("59m59s left, 5 of 5 data points to go"),
            "z2 has no one-box"
        );
        served(&mut m, "z1", 3);
        assert_eq!(cell(&m, "r1").detail.as_deref(), Some("59m59s left, 2 of 5 data points to go"));
        assert_eq!(cell(&m, "r2").detail.as_deref(), Some("59m59s left, 5 of 5 data points to go"), "another region's");
    }

    #[test]
    fn a_cell_shows_the_alarms_the_engine_gates_its_region_on() {
        let mut m = baking();
        for (alarm, scope, state) in [
            ("errors", "prod/r1/z2", "ALARM"),
            ("region-errors", "prod/r2", "ALARM"),
            ("region-errors", "prod/r1", "INSUFFICIENT_DATA"),
        ] {
            let alarm = input(serde_json::json!({
                "type": "alarm", "alarm": alarm, "scope": scope, "state": state, "reason": "high",
            }));
            m.apply("web", 2_500, &alarm).expect("the alarm applies");
        }
        let badges = |region| -> Vec<String> {
            cell(&m, region).alarms.into_iter().map(|a| format!("{} {} {}", a.alarm, a.scope, a.state)).collect()
        };
        assert_eq!(badges("r1"), ["errors prod/r1/z2 ALARM", "region-errors prod/r1 INSUFFICIENT_DATA"]);
        assert_eq!(badges("r2"), ["region-errors prod/r2 ALARM"]);
    }
}
