//! The dashboard's templates (in `templates/`) and what they show. Every value is
//! escaped by the templates; only the chart, which is built here with its text escaped,
//! goes in as markup.

use crate::views::{CellView, HostView, PipelineView};
use askama::Template;

/// What every page has around its main part.
pub struct Chrome {
    pub title: String,
    pub user: Option<UserView>,
    /// The live stream the page's script listens to; none for pages that do not change.
    pub live: Option<String>,
    /// This page's path, to come back to after logging in.
    pub here: String,
}

pub struct UserView {
    pub name: String,
    pub role: String,
}

#[derive(Template)]
#[template(path = "page.html")]
pub struct PageTemplate<'a> {
    pub chrome: &'a Chrome,
    /// The main part, rendered (and escaped) by its own template.
    pub main: &'a str,
}

#[derive(Template)]
#[template(path = "message.html")]
pub struct MessageTemplate<'a> {
    pub heading: &'a str,
    pub message: &'a str,
    pub login: bool,
}

pub struct ServiceBoard {
    pub name: String,
    pub holds: Vec<String>,
    pub pipeline: PipelineView,
    pub hosts: usize,
    pub in_flight: usize,
    pub releases: Vec<ReleaseRow>,
    pub alarms_firing: usize,
}

pub struct ReleaseRow {
    pub version: String,
    pub outcome: String,
    /// The CSS state class of the outcome.
    pub state: &'static str,
    pub at: String,
    pub reason: Option<String>,
    pub created: String,
}

#[derive(Template)]
#[template(path = "overview.html")]
pub struct OverviewTemplate {
    pub boards: Vec<ServiceBoard>,
}

#[derive(Template)]
#[template(path = "service.html")]
pub struct ServiceTemplate {
    pub board: ServiceBoard,
    pub service: String,
    pub held: bool,
    pub held_stages: Vec<String>,
    pub stages: Vec<String>,
    pub can_act: bool,
    pub hint: Option<String>,
    pub login_link: Option<String>,
    pub done: Option<String>,
}

#[derive(Clone)]
pub struct ActionButton {
    /// The role the action needs; the button shows only to tokens that have it.
    pub required: crate::auth::Role,
    pub action: String,
    pub label: String,
}

pub struct TimelineRow {
    pub t: String,
    pub kind: String,
    pub class: &'static str,
    pub scope: String,
    pub reason: String,
    pub output: Option<String>,
}

pub struct HookRow {
    pub t: String,
    pub scope: String,
    pub summary: String,
    pub ok: bool,
    pub output: String,
}

pub struct VerdictView {
    pub t: String,
    pub scope: String,
    pub headline: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// What follows the table (groups, reasons, warnings).
    pub rest: String,
    pub passed: bool,
    /// The one-box's hosts, the baseline's and the baseline's versions; empty for a
    /// verdict that did not name them.
    pub canary_hosts: Vec<String>,
    pub baseline_hosts: Vec<String>,
    pub baseline_versions: Vec<String>,
}

#[derive(Template)]
#[template(path = "release.html")]
pub struct ReleaseTemplate {
    pub service: String,
    pub release: ReleaseRow,
    pub artifact: Option<String>,
    pub sha256: Option<String>,
    pub completed: Option<String>,
    pub lead_time: Option<String>,
    pub reached: String,
    pub rolled_back: String,
    pub cells: Vec<CellView>,
    /// Inline SVG, built by `chart` with every text escaped.
    pub chart: String,
    pub timeline: Vec<TimelineRow>,
    pub hooks: Vec<HookRow>,
    pub verdicts: Vec<VerdictView>,
    pub buttons: Vec<ActionButton>,
    pub hint: Option<String>,
    pub login_link: Option<String>,
    pub done: Option<String>,
}

pub struct HostRow {
    pub view: HostView,
    pub heartbeat: Option<String>,
}

#[derive(Template)]
#[template(path = "hosts.html")]
pub struct HostsTemplate {
    pub service: String,
    pub hosts: Vec<HostRow>,
}

pub struct AlarmDef {
    pub name: String,
    pub metric: String,
    pub rule: String,
}

pub struct AlarmRow {
    pub alarm: String,
    pub scope: String,
    pub state: rollwave_api::AlarmState,
    pub class: &'static str,
    pub reason: String,
    pub since: String,
}

pub struct ChangeRow {
    pub t: String,
    pub alarm: String,
    pub scope: String,
    pub from: rollwave_api::AlarmState,
    pub to: rollwave_api::AlarmState,
    pub class: &'static str,
    pub reason: String,
}

#[derive(Template)]
#[template(path = "alarms.html")]
pub struct AlarmsTemplate {
    pub service: String,
    pub defined: Vec<AlarmDef>,
    pub instances: Vec<AlarmRow>,
    pub changes: Vec<ChangeRow>,
    pub events: Vec<TimelineRow>,
}

#[derive(Template)]
#[template(path = "confirm.html")]
pub struct ConfirmTemplate {
    pub service: String,
    pub action: String,
    pub label: &'static str,
    pub release: Option<String>,
    pub stage: Option<String>,
    pub question: String,
    pub error: Option<String>,
    pub login_link: Option<String>,
    pub back: String,
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginTemplate {
    pub next: String,
    pub error: Option<String>,
    /// Who is logged in already, if anyone.
    pub user: Option<String>,
}
