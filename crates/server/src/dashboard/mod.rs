//! The dashboard: server-rendered HTML pages over the read model, at `/`. Reading needs
//! no login; acting (approve, roll back, retry, roll forward, hold, resume) needs an API
//! token pasted into the login form, kept in an HttpOnly SameSite=Strict cookie, and a
//! confirmation step. Every page works without JavaScript; a small script served here
//! swaps in a page's main fragment when the server says something changed (SSE).

mod chart;
mod pages;

use crate::api::{EventKind, OperatorAction, Outcome, ReleaseView};
use crate::auth::{Actor, Caller, Role};
use crate::error::ApiError;
use crate::http::{App, Served};
use crate::state::{LogInput, ServiceState};
use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use pages::*;
use rollwave_api::AlarmState;
use serde::Deserialize;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

type Shared = State<Arc<App>>;

/// The cookie that carries a logged-in token.
const COOKIE: &str = "rollwave_token";
/// How long the live stream waits after a change before saying so, so that a burst of
/// changes is one message.
const LIVE_COALESCE: Duration = Duration::from_millis(400);

const CSS: &str = include_str!("../../assets/dashboard.css");
const JS: &str = include_str!("../../assets/dashboard.js");

/// The pages, behind the read rule (see [`readers_only`]).
fn pages() -> Served {
    Served::default()
        .get("/", overview)
        .get("/services/{service}", service_page)
        .get("/services/{service}/releases/{version}", release_page)
        .get("/services/{service}/hosts", hosts_page)
        .get("/services/{service}/alarms", alarms_page)
        .get("/services/{service}/confirm", confirm_page)
        .get("/dashboard/live", live)
}

/// What anyone may reach: the action form (which checks its token itself), logging in
/// and out, and the assets.
fn open() -> Served {
    Served::default()
        .post("/services/{service}/act", act)
        .get("/login", login_page)
        .post("/login", login)
        .post("/logout", logout)
        .get("/dashboard/dashboard.css", || async { asset("text/css; charset=utf-8", CSS) })
        .get("/dashboard/dashboard.js", || async { asset("text/javascript; charset=utf-8", JS) })
}

pub fn routes(app: Arc<App>) -> Served {
    pages().map_router(|r| r.route_layer(axum::middleware::from_fn_with_state(app, readers_only))).merge(open())
}

/// The dashboard's routes as `METHOD PATH`, from the tables [`routes`] serves.
pub fn served_routes() -> Vec<String> {
    pages().merge(open()).routes().to_vec()
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// `?fragment=1` asks for the page's main part alone (what the live script swaps in);
/// `done` names an action just carried out.
#[derive(Deserialize, Default)]
struct PageQuery {
    #[serde(default)]
    fragment: Option<String>,
    #[serde(default)]
    done: Option<String>,
}

/// The token of the `rollwave_token` cookie, if any.
fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Pages follow the API's read rule: a person's token (viewer or more) in the cookie,
/// unless the server runs with `--anonymous-read`. Anyone else gets the login form.
async fn readers_only(State(app): Shared, request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if app.anonymous_read() {
        return next.run(request).await;
    }
    let user = who(&app, request.headers()).await;
    let error = match &user {
        Some(u) => match u.require(Role::Viewer) {
            Ok(()) => return next.run(request).await,
            Err(e) => e.body.message,
        },
        None => "log in with a viewer token (or more) to see this page".to_owned(),
    };
    let here = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let main = LoginTemplate { next: local_path(Some(here)), error: Some(error), user: None }.render();
    respond(StatusCode::UNAUTHORIZED, chrome(&user, "Log in".into(), None, "/login"), main, false)
}

/// Who the cookie's token belongs to; nobody when there is none or it is not known.
async fn who(app: &App, headers: &HeaderMap) -> Option<Caller> {
    let token = cookie_token(headers)?;
    authenticate(app, &token).await.ok()
}

async fn authenticate(app: &App, token: &str) -> Result<Caller, ApiError> {
    let mut bearer = HeaderMap::new();
    let value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "that is not a token"))?;
    bearer.insert(header::AUTHORIZATION, value);
    app.tokens.authenticate(&app.node.store, &bearer).await
}

/// A whole page around `main`, or `main` alone for the live script.
fn respond(status: StatusCode, page: Chrome, main: Result<String, askama::Error>, fragment: bool) -> Response {
    let main = match main {
        Ok(m) => m,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("rendering failed: {e}")).into_response(),
    };
    let body = if fragment {
        main
    } else {
        match (PageTemplate { chrome: &page, main: &main }).render() {
            Ok(b) => b,
            Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("rendering failed: {e}")).into_response(),
        }
    };
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// A page that only says something went wrong (unknown service, refused action…).
fn message_page(status: StatusCode, chrome: Chrome, heading: &str, message: &str) -> Response {
    let main = MessageTemplate { heading, message, login: chrome.user.is_none() && status == StatusCode::UNAUTHORIZED }
        .render();
    respond(status, chrome, main, false)
}

fn chrome(user: &Option<Caller>, title: String, live: Option<String>, here: &str) -> Chrome {
    Chrome {
        title,
        user: user.as_ref().map(|a| UserView { name: a.name.clone(), role: a.role.as_str().to_owned() }),
        live,
        here: here.to_owned(),
    }
}

fn not_found(user: &Option<Caller>, e: &ApiError, here: &str) -> Response {
    message_page(e.status, chrome(user, "Not found".into(), None, here), "Not found", &e.body.message)
}

/// A page whose store read failed says so (with the API's status for it), rather than
/// show what it could not read as empty.
fn store_failed(user: &Option<Caller>, e: rollwave_store::StoreError, here: &str) -> Response {
    let e = ApiError::from(e);
    message_page(
        e.status,
        chrome(user, "Store unavailable".into(), None, here),
        "The store could not be read",
        &e.body.message,
    )
}

async fn overview(State(app): Shared, headers: HeaderMap, Query(q): Query<PageQuery>) -> Response {
    let user = who(&app, &headers).await;
    let now = app.node.clock.now();
    let boards: Vec<ServiceBoard> = app.node.read(|m| m.services.values().map(|s| board(s, now, 5)).collect());
    let main = OverviewTemplate { boards }.render();
    respond(
        StatusCode::OK,
        chrome(&user, "Pipelines".into(), Some("/dashboard/live".into()), "/"),
        main,
        q.fragment.is_some(),
    )
}

fn board(s: &ServiceState, now: jiff::Timestamp, recent: usize) -> ServiceBoard {
    let mut releases: Vec<ReleaseView> = s.releases();
    releases.reverse();
    let in_flight = releases.iter().filter(|r| matches!(r.outcome, Outcome::InProgress | Outcome::Halted)).count();
    ServiceBoard {
        name: s.name.clone(),
        holds: holds(s),
        pipeline: s.pipeline(now),
        hosts: s.plan.envs.iter().map(|e| e.hosts.len()).sum(),
        in_flight,
        releases: releases.into_iter().take(recent.max(in_flight)).map(release_row).collect(),
        alarms_firing: s.alarm_instances().iter().filter(|a| a.state == AlarmState::Alarm).count(),
    }
}

fn release_row(r: ReleaseView) -> ReleaseRow {
    ReleaseRow {
        state: outcome_class(r.outcome),
        outcome: r.outcome.as_str().replace('_', " "),
        at: match (&r.at, r.waiting) {
            (Some(at), Some(true)) => format!("waiting at {at}"),
            (Some(at), _) => format!("in {at}"),
            (None, _) => String::new(),
        },
        created: short_time(&r.created_at),
        version: r.version,
        reason: r.reason,
    }
}

fn outcome_class(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Completed => "done",
        Outcome::InProgress => "deploying",
        Outcome::Halted => "halted",
        Outcome::RolledBack => "rolled-back",
        Outcome::Superseded => "idle",
    }
}

/// `2026-05-01T12:00:03.123Z` → `2026-05-01 12:00:03`.
fn short_time(t: &str) -> String {
    let t = t.replace('T', " ");
    let t = t.split('.').next().unwrap_or(&t).trim_end_matches('Z');
    format!("{t} UTC")
}

fn holds(s: &ServiceState) -> Vec<String> {
    let (service, stages) = s.engine.holds();
    let mut out: Vec<String> = stages.iter().map(|st| s.plan.manifest.stages[st.idx()].name.clone()).collect();
    if service {
        out.insert(0, "the whole service".to_owned());
    }
    out
}

/// Why someone sees no buttons: not logged in, or a token without the role.
fn action_hint(user: &Option<Caller>, role: Role) -> Option<String> {
    match user {
        None => Some(format!("Log in with a {} token to act here.", role.as_str())),
        Some(a) if a.require(role).is_err() => Some(format!(
            "Your token {} has the {} role: acting here needs {}.",
            a.name,
            a.role.as_str(),
            role.as_str()
        )),
        Some(_) => None,
    }
}

async fn service_page(
    State(app): Shared,
    headers: HeaderMap,
    Path(service): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    let user = who(&app, &headers).await;
    let here = format!("/services/{service}");
    let now = app.node.clock.now();
    let found = app.node.read(|m| {
        m.service(&service).map(|s| {
            let (whole, stages) = s.engine.holds();
            (
                board(s, now, usize::MAX),
                whole,
                stages.iter().map(|st| s.plan.manifest.stages[st.idx()].name.clone()).collect::<Vec<_>>(),
                s.plan.manifest.stages.iter().map(|st| st.name.clone()).collect::<Vec<_>>(),
            )
        })
    });
    let (board, held, held_stages, stages) = match found {
        Ok(f) => f,
        Err(e) => return not_found(&user, &e, &here),
    };
    let can_act = user.as_ref().is_some_and(|a| a.require(Role::Deployer).is_ok());
    let main = ServiceTemplate {
        board,
        service: service.clone(),
        held,
        held_stages,
        stages,
        can_act,
        hint: action_hint(&user, Role::Deployer),
        login_link: user.is_none().then(|| format!("/login?next={here}")),
        done: q.done.clone(),
    }
    .render();
    let live = Some("/dashboard/live".to_owned());
    respond(StatusCode::OK, chrome(&user, format!("{service} · pipeline"), live, &here), main, q.fragment.is_some())
}

async fn release_page(
    State(app): Shared,
    headers: HeaderMap,
    Path((service, version)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
) -> Response {
    let user = who(&app, &headers).await;
    let here = format!("/services/{service}/releases/{version}");
    let now = app.node.clock.now();
    let found = app.node.read(|m| {
        let s = m.service(&service)?;
        let release = s
            .releases()
            .into_iter()
            .find(|r| r.version == version)
            .ok_or_else(|| ApiError::not_found(format!("service {service} has no release {version:?}")))?;
        let events: Vec<crate::records::Record> =
            s.events.iter().filter(|e| e.release.as_deref() == Some(version.as_str())).cloned().collect();
        let created = jiff::Timestamp::from_str_or_epoch(&release.created_at);
        let end = release.completed_at.as_deref().map_or(now, jiff::Timestamp::from_str_or_epoch);
        let from_ms = created.as_millisecond() - 5_000;
        let to_ms = end.as_millisecond().max(from_ms + 10_000) + 5_000;
        let history = s.version_history(from_ms, to_ms);
        Ok::<_, ApiError>((release, s.release_cells(&version, now), events, history, from_ms, to_ms))
    });
    let (release, cells, events, history, from_ms, to_ms) = match found {
        Ok(f) => f,
        Err(e) => return not_found(&user, &e, &here),
    };
    let rows = match app.node.store.metrics(&service, from_ms, to_ms).await {
        Ok(rows) => rows,
        Err(e) => return store_failed(&user, e, &here),
    };
    let svg = chart::rollout(&version, &history, &rows, from_ms, to_ms);
    let actions = release_actions(release.outcome);
    let may = |role: Role| user.as_ref().is_some_and(|a| a.require(role).is_ok());
    let buttons: Vec<ActionButton> = actions.iter().filter(|a| may(a.required)).cloned().collect();
    let hint = if buttons.is_empty() && !actions.is_empty() {
        let role = if actions.iter().all(|a| a.required == Role::Approver) { Role::Approver } else { Role::Deployer };
        action_hint(&user, role)
    } else {
        None
    };
    let timeline = events
        .iter()
        .rev()
        .map(|e| {
            let view = e.view(&service);
            TimelineRow {
                t: short_time(&view.t),
                kind: view.kind.as_str().replace('_', " "),
                class: event_class(view.kind),
                scope: view.scope,
                reason: view.reason.unwrap_or_default(),
                // A verdict's table has a section of its own.
                output: view.output.filter(|_| e.verdict().is_none()),
            }
        })
        .collect();
    let hooks = events
        .iter()
        .filter_map(|e| Some((e, e.hook()?)))
        .map(|(e, hook)| HookRow {
            t: short_time(&e.at.to_string()),
            scope: e.scope.to_string(),
            summary: hook.summary(),
            ok: hook.ok,
            output: hook.output.clone(),
        })
        .collect();
    let verdicts = events.iter().filter_map(|e| Some(verdict_view(e, e.verdict()?))).collect();
    let main = ReleaseTemplate {
        service: service.clone(),
        release: release_row(release.clone()),
        artifact: release.artifact.clone(),
        sha256: release.sha256.clone(),
        completed: release.completed_at.as_deref().map(short_time),
        lead_time: release.lead_time_s.map(|s| crate::views::human_duration(s.max(0) as u64)),
        reached: release.reached.join(", "),
        rolled_back: release.rolled_back_scopes.join(", "),
        cells,
        chart: svg,
        timeline,
        hooks,
        verdicts,
        buttons,
        hint,
        login_link: user.is_none().then(|| format!("/login?next={here}")),
        done: q.done.clone(),
    }
    .render();
    let live = Some("/dashboard/live".to_owned());
    respond(StatusCode::OK, chrome(&user, format!("{service} {version}"), live, &here), main, q.fragment.is_some())
}

/// The actions a release in this outcome can take.
fn release_actions(outcome: Outcome) -> Vec<ActionButton> {
    use OperatorAction::*;
    let button = |action: OperatorAction, label: &str| ActionButton {
        required: action.required_role(),
        action: action.as_str().to_owned(),
        label: label.to_owned(),
    };
    match outcome {
        Outcome::InProgress => vec![button(Approve, "Approve"), button(Rollback, "Roll back")],
        Outcome::Halted => {
            vec![button(Retry, "Retry"), button(RollForward, "Roll forward"), button(Rollback, "Roll back")]
        }
        Outcome::Completed => vec![button(Rollback, "Roll back")],
        Outcome::RolledBack | Outcome::Superseded => Vec::new(),
    }
}

fn event_class(kind: EventKind) -> &'static str {
    use EventKind::*;
    match kind {
        ReleaseCompleted | RegionCompleted | WaveCompleted | StageCompleted | BakeCompleted | TestPassed | Approved => {
            "done"
        }
        Blocked | BakeStarted | RegressionSuspected | Held => "baking",
        AlarmFired | RollbackStarted | RollbackCompleted | ReleaseHalted | ReleaseRolledBack | HostFailed
        | TestFailed => "halted",
        ReleaseCreated | StageEntered | WaveStarted | RegionStarted | OneBoxDeployed | ZoneStarted | BatchDeployed
        | ZoneCompleted | TestStarted | AlarmCleared | ReleaseResumed | ReleaseSuperseded | JudgeVerdict | Resumed
        | Hook => "deploying",
    }
}

/// The judge's verdict as a table of its metrics.
fn verdict_view(e: &crate::records::Record, v: &crate::records::JudgeVerdict) -> VerdictView {
    use crate::records::VerdictTable;
    let (header, rows, rest, sides) = match &v.table {
        VerdictTable::Table(report) => (
            report.columns.clone(),
            report.rows.iter().map(|r| r.cells().into_iter().map(str::to_owned).collect()).collect(),
            report.notes.trim_end().to_owned(),
            (report.canary_hosts.clone(), report.baseline_hosts.clone(), report.baseline_versions.clone()),
        ),
        VerdictTable::Text(text) => (
            Vec::new(),
            Vec::new(),
            text.split_once('\n').map_or("", |(_, rest)| rest).trim_end().to_owned(),
            Default::default(),
        ),
    };
    VerdictView {
        t: short_time(&e.at.to_string()),
        scope: e.scope.to_string(),
        headline: v.table.headline().to_owned(),
        header,
        rows,
        rest,
        passed: v.passed(),
        canary_hosts: sides.0,
        baseline_hosts: sides.1,
        baseline_versions: sides.2,
    }
}

async fn hosts_page(
    State(app): Shared,
    headers: HeaderMap,
    Path(service): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    let user = who(&app, &headers).await;
    let here = format!("/services/{service}/hosts");
    if let Err(e) = app.node.read(|m| m.service(&service).map(|_| ())) {
        return not_found(&user, &e, &here);
    }
    let beats = match app.node.store.heartbeats(&service).await {
        Ok(beats) => beats,
        Err(e) => return store_failed(&user, e, &here),
    };
    let now = app.node.clock.now();
    let hosts = app.node.read(|m| m.service(&service).map(|s| s.hosts_view(&beats)).unwrap_or_default());
    let rows = hosts
        .into_iter()
        .map(|h| HostRow {
            heartbeat: h.last_heartbeat.map(|t| {
                let ago = now.duration_since(t).as_secs().max(0) as u64;
                format!("{} ago", crate::views::human_duration(ago))
            }),
            view: h,
        })
        .collect();
    let main = HostsTemplate { service: service.clone(), hosts: rows }.render();
    let live = Some("/dashboard/live".to_owned());
    respond(StatusCode::OK, chrome(&user, format!("{service} · hosts"), live, &here), main, q.fragment.is_some())
}

async fn alarms_page(
    State(app): Shared,
    headers: HeaderMap,
    Path(service): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    let user = who(&app, &headers).await;
    let here = format!("/services/{service}/alarms");
    let found = app.node.read(|m| {
        m.service(&service).map(|s| {
            let defined: Vec<AlarmDef> = s
                .plan
                .manifest
                .alarms
                .iter()
                .map(|a| AlarmDef {
                    name: a.name.clone(),
                    metric: a.metric.to_string(),
                    rule: format!(
                        "{} per {}, {} of {} periods, per {}",
                        a.threshold,
                        crate::views::human_duration(a.period.as_secs()),
                        a.datapoints_to_alarm,
                        a.evaluation_periods,
                        a.scope.as_str()
                    ),
                })
                .collect();
            let events: Vec<TimelineRow> = s
                .events
                .iter()
                .rev()
                .filter(|e| {
                    use rollwave_core::engine::EventKind;
                    matches!(
                        e.kind,
                        crate::records::RecordKind::Event(
                            EventKind::AlarmFired | EventKind::AlarmCleared | EventKind::RegressionSuspected
                        )
                    )
                })
                .take(100)
                .map(|e| TimelineRow {
                    t: short_time(&e.at.to_string()),
                    kind: e.kind.as_str().replace('_', " "),
                    class: event_class(e.kind.wire()),
                    scope: e.scope.to_string(),
                    reason: e.reason.clone().unwrap_or_default(),
                    output: None,
                })
                .collect();
            (defined, s.alarm_instances(), s.alarm_changes(), events)
        })
    });
    let (defined, instances, changes, events) = match found {
        Ok(f) => f,
        Err(e) => return not_found(&user, &e, &here),
    };
    let instances = instances
        .into_iter()
        .map(|a| AlarmRow {
            class: alarm_class(a.state),
            since: short_time(&a.since.to_string()),
            alarm: a.alarm,
            scope: a.scope,
            state: a.state,
            reason: a.reason,
        })
        .collect();
    let changes = changes
        .into_iter()
        .map(|c| ChangeRow {
            t: short_time(&c.at.to_string()),
            class: alarm_class(c.to),
            alarm: c.alarm,
            scope: c.scope,
            from: c.from,
            to: c.to,
            reason: c.reason,
        })
        .collect();
    let main = AlarmsTemplate { service: service.clone(), defined, instances, changes, events }.render();
    let live = Some("/dashboard/live".to_owned());
    respond(StatusCode::OK, chrome(&user, format!("{service} · alarms"), live, &here), main, q.fragment.is_some())
}

fn alarm_class(state: AlarmState) -> &'static str {
    match state {
        AlarmState::Ok => "done",
        AlarmState::Alarm => "halted",
        AlarmState::InsufficientData => "baking",
    }
}

/// An operator action as the forms send it.
#[derive(Deserialize, Default, Clone)]
struct ActionForm {
    #[serde(default)]
    action: String,
    #[serde(default)]
    release: Option<String>,
    #[serde(default)]
    stage: Option<String>,
}

impl ActionForm {
    fn release(&self) -> Option<&str> {
        self.release.as_deref().filter(|r| !r.is_empty())
    }

    fn stage(&self) -> Option<&str> {
        self.stage.as_deref().filter(|s| !s.is_empty())
    }

    /// What the action does, as a question.
    fn question(&self, service: &str) -> String {
        let release = self.release().unwrap_or("?");
        let stage =
            self.stage().map_or_else(|| format!("the whole service {service}"), |s| format!("stage {s} of {service}"));
        let Some(action) = OperatorAction::named(&self.action) else { return format!("{}?", self.action) };
        match action {
            OperatorAction::Approve => {
                format!("Approve release {release} of {service} for every stage that waits for approval?")
            }
            OperatorAction::Rollback => format!(
                "Roll back release {release} of {service}? Every host running it or a newer release returns to the version before it."
            ),
            OperatorAction::Retry => format!(
                "Retry halted release {release} of {service}? What was rolled back is deployed again once its alarms are OK."
            ),
            OperatorAction::RollForward => format!(
                "Roll forward past halted release {release} of {service}? The next newer release takes its place."
            ),
            OperatorAction::Hold => format!("Hold {stage}? Nothing new starts there until it is resumed."),
            OperatorAction::Resume => format!("Resume {stage}?"),
        }
    }

    fn label(&self) -> &'static str {
        match OperatorAction::named(&self.action) {
            Some(OperatorAction::Approve) => "Approve",
            Some(OperatorAction::Rollback) => "Roll back",
            Some(OperatorAction::Retry) => "Retry",
            Some(OperatorAction::RollForward) => "Roll forward",
            Some(OperatorAction::Hold) => "Hold",
            Some(OperatorAction::Resume) => "Resume",
            None => "Confirm",
        }
    }

    /// Where to go back to.
    fn back(&self, service: &str) -> String {
        match self.release() {
            Some(r) if OperatorAction::named(&self.action).is_none_or(OperatorAction::is_release_action) => {
                format!("/services/{service}/releases/{r}")
            }
            _ => format!("/services/{service}"),
        }
    }
}

async fn confirm_page(
    State(app): Shared,
    headers: HeaderMap,
    Path(service): Path<String>,
    Query(form): Query<ActionForm>,
) -> Response {
    let user = who(&app, &headers).await;
    let here = format!("/services/{service}");
    if let Err(e) = app.node.read(|m| m.service(&service).map(|_| ())) {
        return not_found(&user, &e, &here);
    }
    confirm(StatusCode::OK, &user, &service, &form, None)
}

fn confirm(
    status: StatusCode,
    user: &Option<Caller>,
    service: &str,
    form: &ActionForm,
    error: Option<String>,
) -> Response {
    let back = form.back(service);
    let main = ConfirmTemplate {
        service: service.to_owned(),
        action: form.action.clone(),
        label: form.label(),
        release: form.release().map(str::to_owned),
        stage: form.stage().map(str::to_owned),
        question: form.question(service),
        error,
        login_link: user.is_none().then(|| format!("/login?next={back}")),
        back,
    }
    .render();
    respond(
        status,
        chrome(user, format!("{} · confirm", form.label()), None, &format!("/services/{service}")),
        main,
        false,
    )
}

/// A form posted from another site is refused (the cookie is SameSite=Strict as well).
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else { return true };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    origin.split_once("://").is_some_and(|(_, rest)| rest == host)
}

async fn act(
    State(app): Shared,
    headers: HeaderMap,
    Path(service): Path<String>,
    Form(form): Form<ActionForm>,
) -> Response {
    let user = who(&app, &headers).await;
    if !same_origin(&headers) {
        let error = "this form was sent from another site; open the dashboard and try again".to_owned();
        return confirm(StatusCode::FORBIDDEN, &user, &service, &form, Some(error));
    }
    let Some(actor) = user.clone() else {
        let error = if cookie_token(&headers).is_some() {
            "your token is not known any more: log in again"
        } else {
            "log in with an API token to act"
        };
        return confirm(StatusCode::UNAUTHORIZED, &user, &service, &form, Some(error.to_owned()));
    };
    match operate(&app, &actor, &service, &form).await {
        Ok(()) => Redirect::to(&format!("{}?done={}", form.back(&service), form.action)).into_response(),
        Err(e) => confirm(e.status, &user, &service, &form, Some(e.body.message)),
    }
}

/// The same checks and input as `POST /v1/services/{s}/releases/{v}/{action}`, `/hold`
/// and `/resume`.
async fn operate(app: &App, actor: &Caller, service: &str, form: &ActionForm) -> Result<(), ApiError> {
    let action = form.action.replace('-', "_");
    let Some(action) = OperatorAction::named(&action) else {
        return Err(ApiError::not_found(format!(
            "no action {action:?}; use approve, rollback, retry, roll_forward, hold or resume"
        )));
    };
    actor.require(action.required_role())?;
    let release = match action.is_release_action() {
        false => None,
        true => {
            Some(form.release().ok_or_else(|| ApiError::bad_request(format!("{action} needs a release")))?.to_owned())
        }
    };
    let input = LogInput::Operator { action, release, stage: form.stage().map(str::to_owned) };
    app.node.submit(service, input, Actor::Token(actor.clone())).await.map(|_| ())
}

#[derive(Deserialize, Default)]
struct LoginQuery {
    #[serde(default)]
    next: Option<String>,
}

#[derive(Deserialize, Default)]
struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    next: Option<String>,
}

/// Only a path on this server is a place to go back to.
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_owned(),
        _ => "/".to_owned(),
    }
}

async fn login_page(State(app): Shared, headers: HeaderMap, Query(q): Query<LoginQuery>) -> Response {
    let user = who(&app, &headers).await;
    let main =
        LoginTemplate { next: local_path(q.next.as_deref()), error: None, user: user.as_ref().map(|a| a.name.clone()) }
            .render();
    respond(StatusCode::OK, chrome(&user, "Log in".into(), None, "/login"), main, false)
}

async fn login(State(app): Shared, headers: HeaderMap, Form(form): Form<LoginForm>) -> Response {
    let next = local_path(form.next.as_deref());
    let token = form.token.trim().to_owned();
    let refused = |user: &Option<Caller>, status: StatusCode, error: String| {
        let main = LoginTemplate { next: next.clone(), error: Some(error), user: None }.render();
        respond(status, chrome(user, "Log in".into(), None, "/login"), main, false)
    };
    if !same_origin(&headers) {
        return refused(&None, StatusCode::FORBIDDEN, "this form was sent from another site".into());
    }
    let ok = !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic() && b != b';' && b != b',');
    if !ok {
        return refused(&None, StatusCode::UNAUTHORIZED, "paste an API token (rw_…)".into());
    }
    match authenticate(&app, &token).await {
        Ok(_) => {
            let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200");
            let mut response = Redirect::to(&next).into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, v);
            }
            response
        }
        Err(e) => refused(&None, e.status, e.body.message),
    }
}

async fn logout() -> Response {
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("rollwave_token=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}

/// `changed` whenever the read model changed (a burst of changes is one message), with
/// the log position reached; the page's script then fetches its main part again.
async fn live(State(app): Shared) -> Sse<impl tokio_stream::Stream<Item = Result<SseEvent, Infallible>>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<i64>(1);
    let mut changed = app.node.changed.subscribe();
    let mut reset = app.node.reset.subscribe();
    let node = Arc::clone(&app.node);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                r = changed.changed() => if r.is_err() { return },
                r = reset.changed() => if r.is_err() { return },
                _ = tx.closed() => return,
            }
            tokio::time::sleep(LIVE_COALESCE).await;
            changed.borrow_and_update();
            reset.borrow_and_update();
            let seq = node.read(|m| m.applied_seq);
            if tx.send(seq).await.is_err() {
                return;
            }
        }
    });
    let stream = tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), |seq| {
        Ok(SseEvent::default().event("changed").id(seq.to_string()).data(seq.to_string()))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

trait FromStrOrEpoch {
    fn from_str_or_epoch(s: &str) -> jiff::Timestamp;
}

impl FromStrOrEpoch for jiff::Timestamp {
    fn from_str_or_epoch(s: &str) -> jiff::Timestamp {
        s.parse().unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }
}
