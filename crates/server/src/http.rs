//! The HTTP/JSON API under `/v1`, plus `/healthz`, `/readyz` and `/metrics`; the
//! dashboard's pages (see [`crate::dashboard`]) are merged in.

use crate::api::*;
use crate::auth::{Actor, Caller, Role, Scope, Tokens, bearer, check_token_name, new_secret};
use crate::error::ApiError;
use crate::log::RecordKind;
use crate::node::Node;
use crate::state::{LogInput, ServiceState};
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Path, Query, Request, State};
use axum::handler::Handler;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, on};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;

/// Request bodies may not exceed this.
pub const MAX_BODY: usize = 1024 * 1024;

pub struct App {
    pub node: Arc<Node>,
    pub tokens: Tokens,
}

impl App {
    pub fn anonymous_read(&self) -> bool {
        self.node.config.anonymous_read
    }
}

type Shared = State<Arc<App>>;

/// A router that records every `METHOD PATH` it is given, so that the list of served
/// routes comes from the routing table itself (the authorization matrix and the OpenAPI
/// document are both checked against it).
pub struct Served {
    router: Router<Arc<App>>,
    routes: Vec<String>,
}

impl Default for Served {
    fn default() -> Self {
        Served { router: Router::new(), routes: Vec::new() }
    }
}

/// The methods the API and the dashboard serve.
#[derive(Clone, Copy)]
enum Verb {
    Get,
    Post,
    Delete,
}

impl Verb {
    fn filter(self) -> MethodFilter {
        match self {
            Verb::Get => MethodFilter::GET,
            Verb::Post => MethodFilter::POST,
            Verb::Delete => MethodFilter::DELETE,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "GET",
            Verb::Post => "POST",
            Verb::Delete => "DELETE",
        }
    }
}

impl Served {
    fn on<H: Handler<T, Arc<App>>, T: 'static>(mut self, verb: Verb, path: &str, handler: H) -> Self {
        self.router = self.router.route(path, on(verb.filter(), handler));
        self.routes.push(format!("{} {path}", verb.as_str()));
        self
    }

    pub fn get<H: Handler<T, Arc<App>>, T: 'static>(self, path: &str, handler: H) -> Self {
        self.on(Verb::Get, path, handler)
    }

    pub fn post<H: Handler<T, Arc<App>>, T: 'static>(self, path: &str, handler: H) -> Self {
        self.on(Verb::Post, path, handler)
    }

    pub fn delete<H: Handler<T, Arc<App>>, T: 'static>(self, path: &str, handler: H) -> Self {
        self.on(Verb::Delete, path, handler)
    }

    pub fn merge(mut self, other: Served) -> Self {
        self.router = self.router.merge(other.router);
        self.routes.extend(other.routes);
        self
    }

    /// Changes the router (a layer over its routes) without changing what it serves.
    pub fn map_router(mut self, f: impl FnOnce(Router<Arc<App>>) -> Router<Arc<App>>) -> Self {
        self.router = f(self.router);
        self
    }

    /// `METHOD PATH` of every route, in the order they were added.
    pub fn routes(&self) -> &[String] {
        &self.routes
    }

    pub fn into_router(self) -> Router<Arc<App>> {
        self.router
    }
}

/// The API's routes: `/healthz`, `/readyz`, `/metrics` and everything under `/v1`.
pub fn api_routes() -> Served {
    Served::default()
        .get("/healthz", || async { "ok\n" })
        .get("/readyz", readyz)
        .get("/metrics", metrics)
        .get("/v1/openapi.json", || async { Json(crate::openapi::document()) })
        .get("/v1/services", list_services)
        .post("/v1/services", apply_service)
        .get("/v1/services/{service}", get_service)
        .get("/v1/services/{service}/releases", list_releases)
        .post("/v1/services/{service}/releases", create_release)
        .get("/v1/services/{service}/releases/{version}", get_release)
        .post("/v1/services/{service}/releases/{version}/{action}", release_action)
        .post("/v1/services/{service}/hold", hold)
        .post("/v1/services/{service}/resume", resume)
        .post("/v1/hosts/register", register_host)
        .get("/v1/services/{service}/hosts/{environment}/{host}/desired", desired)
        .post("/v1/services/{service}/hosts/{environment}/{host}/report", report)
        .get("/v1/events", events)
        .get("/v1/events/stream", stream)
        .get("/v1/tokens", list_tokens)
        .post("/v1/tokens", create_token)
        .delete("/v1/tokens/{id}", revoke_token)
        .post("/v1/tokens/{id}/revoke", revoke_token)
        .get("/v1/audit/verify", verify_audit)
        .get("/v1/cluster", cluster)
        .get("/v1/services/{service}/routes/{environment}/{region}", routes)
        .get("/v1/services/{service}/flags/{environment}/{region}", region_flags)
        .get("/v1/services/{service}/flag-sets/{version}", flag_set)
        .post("/v1/flag-evaluations", push_flag_evaluations)
        .get("/v1/metrics", query_metrics)
        .post("/v1/metrics", push_metrics)
}

/// Every route the server serves, as `METHOD PATH`: the API's and the dashboard's, read
/// from the same tables [`router`] is built from.
pub fn served_routes() -> Vec<String> {
    let mut all = api_routes().routes().to_vec();
    all.extend(dashboard_routes());
    all
}

/// The dashboard's HTML routes as `METHOD PATH` (the OpenAPI document leaves them out).
pub fn dashboard_routes() -> Vec<String> {
    crate::dashboard::served_routes()
}

pub fn router(app: Arc<App>) -> Router {
    api_routes()
        .merge(crate::dashboard::routes(Arc::clone(&app)))
        .into_router()
        .fallback(|| async { ApiError::not_found("no such endpoint; see /v1/openapi.json") })
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&app), observe))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(app)
}

async fn observe(State(app): Shared, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let response = next.run(request).await;
    app.node.metrics.observe_request(&method, &route, response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}

/// A JSON body whose every failure is an API error: 413 when too large, 400 otherwise.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("the body exceeds {MAX_BODY} bytes"))
            } else {
                ApiError::bad_request(e.body_text())
            }
        })?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &bytes };
        serde_json::from_slice(bytes).map(Body).map_err(|e| {
            ApiError::bad_request(format!("malformed JSON: {e}")).with_details(serde_json::json!({
                "line": e.line(), "col": e.column()
            }))
        })
    }
}

/// A request with a valid token: checked from the headers, before any body is read.
impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        app.tokens.authenticate(&app.node.store, &parts.headers).await
    }
}

/// A token if the request sent one (then it must be valid), or nobody.
pub struct MaybeCaller(pub Option<Caller>);

impl FromRequestParts<Arc<App>> for MaybeCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        match bearer(&parts.headers) {
            None => Ok(MaybeCaller(None)),
            Some(_) => app.tokens.authenticate(&app.node.store, &parts.headers).await.map(|c| MaybeCaller(Some(c))),
        }
    }
}

/// Someone who may read: a person's token (viewer or more), or anyone when the server
/// runs with `--anonymous-read`.
pub struct Reader;

/// The read rule, for a request that may carry a token.
pub fn may_read(app: &App, caller: &Option<Caller>) -> Result<(), ApiError> {
    match caller {
        Some(c) => c.require(Role::Viewer),
        None if app.anonymous_read() => Ok(()),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "reads need a viewer token: send Authorization: Bearer TOKEN",
        )),
    }
}

impl FromRequestParts<Arc<App>> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let MaybeCaller(caller) = MaybeCaller::from_request_parts(parts, app).await?;
        may_read(app, &caller).map(|()| Reader)
    }
}

async fn readyz(State(app): Shared) -> Response {
    if *app.node.ready.borrow() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "replaying the log\n").into_response()
    }
}

async fn metrics(State(app): Shared) -> Response {
    let m = &app.node.metrics;
    let services = app.node.read(|model| {
        m.releases.clear();
        m.hosts.clear();
        m.bake_seconds_left.clear();
        m.bake_datapoints_missing.clear();
        m.alarms_firing.clear();
        for s in model.services.values() {
            let now = s.engine.now();
            let releases = s.engine.releases();
            // A halted release's bakes wait for an operator, not for time: none is counting down.
            let halted =
                |id| releases.iter().any(|r| r.id == id && r.status == rollwave_core::engine::ReleaseStatus::Halted);
            for bake in s.engine.bakes().into_iter().filter(|b| !halted(b.release)) {
                let labels = vec![
                    ("service".to_owned(), s.name.clone()),
                    ("release".to_owned(), s.engine.version_name(bake.release).to_owned()),
                    ("scope".to_owned(), rollwave_core::engine::render_scope(&s.plan, bake.scope)),
                ];
                let left = bake.until.duration_since(now).as_secs_f64().max(0.0);
                m.bake_seconds_left.get_or_create(&labels).set(left);
                m.bake_datapoints_missing.get_or_create(&labels).set(bake.need.saturating_sub(bake.seen) as i64);
            }
            let instances = s.alarm_instances();
            for alarm in &s.plan.manifest.alarms {
                let firing = instances.iter().filter(|i| i.alarm == alarm.name && i.state == AlarmState::Alarm).count();
                let labels = vec![("service".to_owned(), s.name.clone()), ("alarm".to_owned(), alarm.name.clone())];
                m.alarms_firing.get_or_create(&labels).set(firing as i64);
            }
            for r in &releases {
                let labels =
                    vec![("service".to_owned(), s.name.clone()), ("outcome".to_owned(), r.status.as_str().to_owned())];
                m.releases.get_or_create(&labels).inc();
            }
            for env in s.versions() {
                for (version, n) in env.versions {
                    let labels = vec![
                        ("service".to_owned(), s.name.clone()),
                        ("environment".to_owned(), env.environment.clone()),
                        ("version".to_owned(), version),
                    ];
                    m.hosts.get_or_create(&labels).set(n as i64);
                }
            }
        }
        model.services.keys().cloned().collect::<Vec<_>>()
    });
    for service in services {
        for hook in app.node.notifier.status(&service) {
            let labels = |result: Option<&str>| {
                let mut l = vec![("service".to_owned(), service.clone()), ("webhook".to_owned(), hook.url.clone())];
                l.extend(result.map(|r| ("result".to_owned(), r.to_owned())));
                l
            };
            crate::metrics::Metrics::count_up_to(&m.webhook_attempts, &labels(Some("delivered")), hook.delivered);
            crate::metrics::Metrics::count_up_to(&m.webhook_attempts, &labels(Some("failed")), hook.failed_attempts);
            crate::metrics::Metrics::count_up_to(&m.webhook_given_up, &labels(None), hook.given_up);
        }
    }
    let applied = app.node.read(|model| model.applied_seq);
    // A store that cannot be read leaves the last figures: the scrape still answers.
    if let Ok(last) = app.node.store.last_seq().await {
        // The oldest record not applied yet is read only when there is one.
        let oldest = if last > applied {
            app.node.store.read_log(applied, 1, None).await.ok().and_then(|r| r.first().map(|r| r.at_ms))
        } else {
            None
        };
        let now_ms = app.node.clock.now_ms();
        let (records, seconds) = crate::metrics::replication_lag(applied, last, oldest, now_ms);
        m.replication_lag_records.set(records);
        m.replication_lag_seconds.set(seconds);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], m.render()).into_response()
}

fn summary(s: &ServiceState) -> ServiceSummary {
    ServiceSummary {
        name: s.name.clone(),
        stages: s.plan.manifest.stages.iter().map(|st| st.name.clone()).collect(),
        hosts: s.plan.envs.iter().map(|e| e.hosts.len()).sum(),
        releases: s.engine.releases().len(),
        lead_time_s: s.plan.lead_time().as_secs(),
    }
}

async fn list_services(State(app): Shared, _: Reader) -> Json<Vec<ServiceSummary>> {
    Json(app.node.read(|m| m.services.values().map(summary).collect()))
}

async fn apply_service(
    State(app): Shared,
    caller: Caller,
    Body(req): Body<ApplyService>,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    let file = req.file.unwrap_or_else(|| "manifest.yaml".to_owned());
    // Read it here first, for the service's name and to answer errors without the leader;
    // a secret reference this server cannot resolve is refused here, not when it is needed.
    let manifest =
        rollwave_manifest::parse_manifest_checking_secrets(&file, &req.manifest, &crate::notify::check_reference)
            .map_err(crate::state::manifest_error)?;
    let service = manifest.service.clone();
    let existed = app.node.read(|m| m.services.contains_key(&service));
    let agents = app.node.config.driver == crate::node::Driver::Agent;
    app.node
        .submit(&service, LogInput::ApplyManifest { file, text: req.manifest, agents }, Actor::Token(caller))
        .await?;
    let body = app.node.read(|m| m.service(&service).map(summary))?;
    let status = if existed { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(body)).into_response())
}

fn holds(s: &ServiceState) -> Vec<String> {
    let (service, stages) = s.engine.holds();
    let mut out: Vec<String> = stages.iter().map(|st| s.plan.manifest.stages[st.idx()].name.clone()).collect();
    if service {
        out.insert(0, s.name.clone());
    }
    out
}

async fn get_service(
    State(app): Shared,
    _: Reader,
    Path(service): Path<String>,
) -> Result<Json<ServiceStatus>, ApiError> {
    let mut status = app.node.read(|m| m.service(&service).map(|s| s.status(holds(s))))?;
    status.notifications = app.node.notifier.status(&service);
    Ok(Json(status))
}

async fn list_releases(
    State(app): Shared,
    _: Reader,
    Path(service): Path<String>,
) -> Result<Json<Vec<ReleaseView>>, ApiError> {
    app.node.read(|m| m.service(&service).map(|s| Json(s.releases())))
}

fn release_of(s: &ServiceState, version: &str) -> Result<ReleaseView, ApiError> {
    s.releases()
        .into_iter()
        .find(|r| r.version == version)
        .ok_or_else(|| ApiError::not_found(format!("service {} has no release {version:?}", s.name)))
}

async fn create_release(
    State(app): Shared,
    caller: Caller,
    Path(service): Path<String>,
    Body(req): Body<CreateRelease>,
) -> Result<Response, ApiError> {
    caller.require(Role::Deployer)?;
    let release = crate::release::NewRelease::parse(&req)?;
    let input = LogInput::CreateRelease {
        version: release.version,
        artifact: release.artifact,
        sha256: release.sha256,
        flags: release.flags,
    };
    app.node.submit(&service, input, Actor::Token(caller)).await?;
    let view = app.node.read(|m| m.service(&service).and_then(|s| release_of(s, &req.version)))?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

async fn get_release(
    State(app): Shared,
    _: Reader,
    Path((service, version)): Path<(String, String)>,
) -> Result<Json<ReleaseDetail>, ApiError> {
    app.node.read(|m| {
        let s = m.service(&service)?;
        let release = release_of(s, &version)?;
        Ok(Json(ReleaseDetail {
            release,
            scopes: s.region_versions(),
            events: s
                .events
                .iter()
                .filter(|e| e.release.as_deref() == Some(version.as_str()))
                .map(|e| e.view(&s.name))
                .collect(),
        }))
    })
}

async fn release_action(
    State(app): Shared,
    caller: Caller,
    Path((service, version, action)): Path<(String, String, String)>,
    Body(req): Body<ActionRequest>,
) -> Result<Json<ReleaseView>, ApiError> {
    let Some(action) = OperatorAction::from_path(&action).filter(|a| a.is_release_action()) else {
        let action = action.replace('-', "_");
        return Err(ApiError::not_found(format!("no action {action:?}; use approve, rollback, retry or roll_forward")));
    };
    caller.require(action.required_role())?;
    let input = LogInput::Operator { action, release: Some(version.clone()), stage: req.stage };
    app.node.submit(&service, input, Actor::Token(caller)).await?;
    app.node.read(|m| m.service(&service).and_then(|s| release_of(s, &version))).map(Json)
}

async fn hold_or_resume(
    app: Arc<App>,
    caller: Caller,
    service: String,
    stage: Option<String>,
    action: OperatorAction,
) -> Result<Json<ServiceStatus>, ApiError> {
    caller.require(action.required_role())?;
    let input = LogInput::Operator { action, release: None, stage };
    app.node.submit(&service, input, Actor::Token(caller)).await?;
    app.node.read(|m| m.service(&service).map(|s| Json(s.status(holds(s)))))
}

async fn hold(
    State(app): Shared,
    caller: Caller,
    Path(service): Path<String>,
    Body(req): Body<ActionRequest>,
) -> Result<Json<ServiceStatus>, ApiError> {
    hold_or_resume(app, caller, service, req.stage, OperatorAction::Hold).await
}

async fn resume(
    State(app): Shared,
    caller: Caller,
    Path(service): Path<String>,
    Body(req): Body<ActionRequest>,
) -> Result<Json<ServiceStatus>, ApiError> {
    hold_or_resume(app, caller, service, req.stage, OperatorAction::Resume).await
}

async fn register_host(
    State(app): Shared,
    caller: Caller,
    Body(req): Body<RegisterHost>,
) -> Result<Json<Registered>, ApiError> {
    let (region, zone) = match (&req.region, &req.zone) {
        (Some(r), Some(z)) => (r.clone(), z.clone()),
        _ => return Err(ApiError::invalid("a host registers with its region and zone")),
    };
    let service = match &req.service {
        Some(s) => s.clone(),
        None => {
            // The one service whose environment has this zone.
            let candidates: Vec<String> = app.node.read(|m| {
                m.services
                    .values()
                    .filter(|s| {
                        s.env(&req.environment).is_ok_and(|e| {
                            (0..s.plan.env(e).zones.len() as u32)
                                .any(|z| s.plan.zone_name(e, rollwave_core::plan::ZoneId(z)) == zone)
                        })
                    })
                    .map(|s| s.name.clone())
                    .collect()
            });
            match candidates.as_slice() {
                [one] => one.clone(),
                [] => {
                    return Err(ApiError::not_found(format!(
                        "no service has zone {zone} in environment {}",
                        req.environment
                    )));
                }
                _ => {
                    return Err(ApiError::invalid(format!(
                        "several services have that zone ({}); name one",
                        candidates.join(", ")
                    )));
                }
            }
        }
    };
    caller.require_host(&service, &req.environment, &req.host)?;
    let input = LogInput::RegisterHost {
        environment: req.environment.clone(),
        host: req.host.clone(),
        region,
        zone,
        address: req.address.clone(),
    };
    app.node.submit(&service, input, Actor::Token(caller)).await?;
    app.node.heard_from(&service, &req.environment, &req.host);
    app.node.read(|m| {
        let s = m.service(&service)?;
        let (env, host) = s.host(&req.environment, &req.host)?;
        Ok(Json(Registered { service: service.clone(), host: req.host.clone(), desired: s.desired(env, host) }))
    })
}

#[derive(Deserialize)]
struct DesiredQuery {
    /// Answer at once if the host's command differs from this one; otherwise wait.
    #[serde(default)]
    after: Option<u64>,
    /// Seconds to wait for a change, at most 60.
    #[serde(default)]
    wait: Option<u64>,
    /// The flag command the agent has: a different one ends the wait too.
    #[serde(default)]
    flags_after: Option<u64>,
}

async fn desired(
    State(app): Shared,
    caller: Caller,
    Path((service, environment, host)): Path<(String, String, String)>,
    query: Result<Query<DesiredQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Desired>, ApiError> {
    // Only the host's own agent: its poll is a heartbeat and brings a lost host back.
    caller.require_host(&service, &environment, &host)?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let look = || {
        app.node.read(|m| m.service(&service).and_then(|s| s.host(&environment, &host).map(|(e, h)| s.desired(e, h))))
    };
    // Every poll is a heartbeat, and brings back a registered host that was lost.
    app.node.heard_from(&service, &environment, &host);
    let lost = app.node.read(|m| {
        m.service(&service).ok().and_then(|s| {
            let env = s.env(&environment).ok()?;
            let slot = *s.aliases.get(&(env, host.clone()))?;
            let zone = s.plan.host_zone(env, slot);
            (!s.engine.host_present(env, slot)).then(|| {
                (
                    s.plan.region_name(env, s.plan.zone_region(env, zone)).to_owned(),
                    s.plan.zone_name(env, zone).to_owned(),
                )
            })
        })
    });
    if let Some((region, zone)) = lost {
        let input = LogInput::RegisterHost {
            environment: environment.clone(),
            host: host.clone(),
            region,
            zone,
            address: None,
        };
        app.node.submit(&service, input, Actor::Token(caller)).await?;
    }
    let slot = app.node.read(|m| {
        m.service(&service).and_then(|s| s.host(&environment, &host).map(|(e, h)| s.plan.host_name(e, h).to_owned()))
    })?;
    let notify = app.node.waker(&service, &environment, &slot);
    let mut reset = app.node.reset.subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait.unwrap_or(0).min(60));
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let current = look()?;
        let flags_changed = q.flags_after.is_some() && current.flags.as_ref().map(|f| f.command) != q.flags_after;
        if q.after.is_none_or(|after| current.command != after) || flags_changed {
            return Ok(Json(current));
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = reset.changed() => {}
            _ = tokio::time::sleep_until(deadline) => return Ok(Json(current)),
        }
    }
}

async fn report(
    State(app): Shared,
    caller: Caller,
    Path((service, environment, host)): Path<(String, String, String)>,
    Body(req): Body<HostReport>,
) -> Result<Json<Accepted>, ApiError> {
    caller.require_host(&service, &environment, &host)?;
    app.node.heard_from(&service, &environment, &host);
    let input = LogInput::HostReport {
        environment,
        host,
        command: req.command,
        ok: req.ok,
        reason: req.reason,
        hooks: req.hooks,
        lane: req.lane,
    };
    app.node.submit(&service, input, Actor::Token(caller)).await?;
    Ok(Json(Accepted { ok: true }))
}

#[derive(Deserialize)]
struct EventsQuery {
    #[serde(default)]
    after: Option<i64>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    service: Option<String>,
}

fn parse_event(r: &rollwave_store::Record) -> Option<EventView> {
    let mut e: EventView = serde_json::from_str(&r.body).ok()?;
    e.seq = Some(r.seq);
    Some(e)
}

async fn events(
    State(app): Shared,
    _: Reader,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<EventPage>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let after = q.after.unwrap_or(0);
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let records = app.node.store.read_log(after, limit, Some(&[RecordKind::Event.as_str()])).await?;
    let next = records.last().map_or(after, |r| r.seq);
    let events =
        records.iter().filter(|r| q.service.as_ref().is_none_or(|s| *s == r.service)).filter_map(parse_event).collect();
    Ok(Json(EventPage { events, next }))
}

async fn stream(
    State(app): Shared,
    _: Reader,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl tokio_stream::Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    // A reconnecting browser says where it stopped.
    let resume = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i64>().ok());
    let after = resume.or(q.after).unwrap_or(i64::MAX);
    let live = tokio_stream::wrappers::BroadcastStream::new(app.node.events.subscribe());
    let backlog = if after == i64::MAX {
        Vec::new()
    } else {
        app.node
            .store
            .read_log(after, 10_000, Some(&[RecordKind::Event.as_str()]))
            .await?
            .iter()
            .filter_map(parse_event)
            .collect()
    };
    let last = backlog.last().and_then(|e: &EventView| e.seq).unwrap_or(if after == i64::MAX { 0 } else { after });
    let service = q.service.clone();
    let live = live.filter_map(move |r| r.ok().filter(|e| e.seq.unwrap_or(0) > last));
    let stream = tokio_stream::iter(backlog)
        .chain(live)
        .filter(move |e| service.as_ref().is_none_or(|s| *s == e.service))
        .map(|e| {
            let frame = SseEvent::default().id(e.seq.unwrap_or(0).to_string()).event(e.kind.as_str()).json_data(&e);
            // An event that cannot be encoded is told of as an error, never sent empty.
            Ok(frame.unwrap_or_else(|err| SseEvent::default().event("error").data(format!("event not encoded: {err}"))))
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

async fn create_token(State(app): Shared, caller: Caller, Body(req): Body<CreateToken>) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    let role = Role::parse(&req.role)
        .ok_or_else(|| ApiError::invalid(format!("unknown role {:?}; use one of {}", req.role, Role::names())))?;
    let scope = token_scope(role, &req)?;
    let secret = new_secret()?;
    let name = req.name.clone().unwrap_or_else(|| format!("{}-{}", role.as_str(), &secret[3..11]));
    check_token_name(&name)
        .map_err(|why| ApiError::invalid(why).with_details(serde_json::json!({ "field": "name" })))?;
    let expires_ms = match req.ttl_s {
        Some(0) => return Err(ApiError::invalid("ttl_s must be at least 1 second")),
        Some(s) => {
            Some(app.node.clock.now_ms().saturating_add(i64::try_from(s).unwrap_or(i64::MAX).saturating_mul(1000)))
        }
        None => None,
    };
    let (host, region) = match &scope {
        Scope::Global => (None, None),
        Scope::Host { service, environment, host } => (Some(format!("{service}/{environment}/{host}")), None),
        Scope::Region { service, environment, region } => (None, Some(format!("{service}/{environment}/{region}"))),
    };
    let hash = rollwave_store::hash_secret(&secret);
    let token = rollwave_store::NewToken {
        hash: &hash,
        name: &name,
        role: role.as_str(),
        host: host.as_deref(),
        region: region.as_deref(),
        expires_ms,
    };
    let audit = |id: i64| {
        rollwave_store::NewAudit {
        actor: caller.name.clone(),
        token_id: Some(caller.id),
        action: "create_token".into(),
        detail: serde_json::json!({ "id": id, "name": name, "role": role.as_str(), "host": host, "region": region, "expires_ms": expires_ms }).to_string(),
    }
    };
    let id = app.node.store.insert_token(&token, audit).await.map_err(|e| match e {
        rollwave_store::StoreError::Duplicate(what) => {
            ApiError::new(StatusCode::CONFLICT, "conflict", format!("{what}: token names are unique"))
                .with_details(serde_json::json!({ "field": "name" }))
        }
        e => e.into(),
    })?;
    let created = TokenCreated { token: secret, role, name: name.clone(), id, expires_ms };
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// The scope a new token of `role` gets from the request: agents a host, routers a region.
fn token_scope(role: Role, req: &CreateToken) -> Result<Scope, ApiError> {
    let scoped = |field: &str, text: &Option<String>, parse: fn(&str) -> Option<Scope>| {
        let text = text.as_deref().ok_or_else(|| {
            ApiError::invalid(format!("a {} token needs its {field}: service/environment/{field}", role.as_str()))
        })?;
        parse(text).ok_or_else(|| {
            ApiError::invalid(format!("{field} {text:?} is not service/environment/{field}"))
                .with_details(serde_json::json!({ "field": field }))
        })
    };
    let stray = |field: &str| ApiError::invalid(format!("a {} token has no {field}", role.as_str()));
    match role {
        Role::Agent if req.region.is_some() => Err(stray("region")),
        Role::Agent => scoped("host", &req.host, Scope::host),
        Role::Router if req.host.is_some() => Err(stray("host")),
        Role::Router => scoped("region", &req.region, Scope::region),
        _ if req.host.is_some() => Err(stray("host")),
        _ if req.region.is_some() => Err(stray("region")),
        _ => Ok(Scope::Global),
    }
}

async fn list_tokens(State(app): Shared, caller: Caller) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    caller.require(Role::Admin)?;
    let rows = app.node.store.tokens().await?;
    Ok(Json(
        rows.into_iter()
            .map(|t| TokenInfo {
                id: t.id,
                name: t.name,
                role: t.role,
                host: t.host,
                region: t.region,
                created_ms: t.created_ms,
                expires_ms: t.expires_ms,
                revoked_ms: t.revoked_ms,
                last_used_ms: t.last_used_ms,
            })
            .collect(),
    ))
}

async fn revoke_token(State(app): Shared, caller: Caller, Path(id): Path<String>) -> Result<Json<Accepted>, ApiError> {
    caller.require(Role::Admin)?;
    let id: i64 = id.parse().map_err(|_| ApiError::invalid(format!("token id {id:?} is not a number")))?;
    let audit = rollwave_store::NewAudit {
        actor: caller.name.clone(),
        token_id: Some(caller.id),
        action: "revoke_token".into(),
        detail: serde_json::json!({ "id": id }).to_string(),
    };
    if !app.node.store.revoke_token(id, &audit).await? {
        return Err(ApiError::not_found(format!("no token {id} that is not revoked already")));
    }
    app.tokens.forget(id);
    Ok(Json(Accepted { ok: true }))
}

async fn verify_audit(State(app): Shared, caller: Caller) -> Result<Json<AuditVerdict>, ApiError> {
    caller.require(Role::Admin)?;
    let database = rollwave_store::describe_url(&app.node.config.db);
    Ok(Json(match app.node.store.verify_audit().await? {
        Ok(rows) => AuditVerdict { intact: true, rows, problem: None, database },
        Err(problem) => AuditVerdict { intact: false, rows: 0, problem: Some(problem.to_string()), database },
    }))
}

async fn cluster(State(app): Shared, _: Reader) -> Result<Json<Cluster>, ApiError> {
    let lease = app.node.store.lease_status().await?;
    let own = app.node.lease.borrow().clone();
    Ok(Json(Cluster {
        node: app.node.config.node_id.clone(),
        leader: own.is_some(),
        term: own.map(|l| l.term),
        lease_holder: lease.as_ref().map(|l| l.0.clone()),
        lease_term: lease.as_ref().map(|l| l.1),
        applied_seq: app.node.read(|m| m.applied_seq),
    }))
}

#[derive(Deserialize)]
struct RoutesQuery {
    #[serde(default)]
    after: Option<i64>,
    #[serde(default)]
    wait: Option<u64>,
    /// The asking router's address (`host:port`): monitors probe the region through it.
    #[serde(default)]
    router: Option<String>,
}

/// A region's routing table; with `after`, waits (up to `wait` s) for a newer one. Its
/// region's router (whose address, with `router=`, monitors probe through) or a reader.
async fn routes(
    State(app): Shared,
    MaybeCaller(caller): MaybeCaller,
    Path((service, environment, region)): Path<(String, String, String)>,
    query: Result<Query<RoutesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Routes>, ApiError> {
    let own_router = caller.as_ref().is_some_and(|c| c.is_router_of(&service, &environment, &region));
    if !own_router {
        may_read(&app, &caller)?;
    }
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let look = || app.node.read(|m| m.service(&service).and_then(|s| s.routes(&environment, &region, m.applied_seq)));
    if let Some(router) = &q.router {
        if !own_router {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("only a router token of {service}/{environment}/{region} may give a router address"),
            ));
        }
        if router.parse::<axum::http::uri::Authority>().ok().filter(|a| a.port_u16().is_some()).is_none() {
            return Err(ApiError::invalid(format!("router {router:?} is not host:port")));
        }
        look()?;
        app.node.heard_from_router(&service, &environment, &region, router);
    }
    let same = |a: &Routes, b: &Routes| Routes { generation: 0, ..a.clone() } == Routes { generation: 0, ..b.clone() };
    long_poll(&app, q.after, q.wait, |r: &Routes| r.generation, same, look).await.map(Json)
}

/// Answers at once unless the caller has the answer at `after` (a generation); then
/// waits (up to `wait` s, at most 60) for one that differs by more than its generation.
async fn long_poll<T>(
    app: &App,
    after: Option<i64>,
    wait: Option<u64>,
    generation: impl Fn(&T) -> i64,
    same: impl Fn(&T, &T) -> bool,
    look: impl Fn() -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let mut changed = app.node.changed.subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait.unwrap_or(0).min(60));
    let first = look()?;
    if after.is_none_or(|after| after < generation(&first)) {
        return Ok(first);
    }
    loop {
        if tokio::time::timeout_at(deadline, changed.changed()).await.is_err() {
            return look();
        }
        let next = look()?;
        if !same(&next, &first) {
            return Ok(next);
        }
    }
}

/// The flag sets a region serves, for its relays; with `after`, waits (up to `wait` s)
/// for a newer answer. A router token of the region (relays use one) or a reader.
async fn region_flags(
    State(app): Shared,
    MaybeCaller(caller): MaybeCaller,
    Path((service, environment, region)): Path<(String, String, String)>,
    query: Result<Query<RoutesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<RegionFlags>, ApiError> {
    if !caller.as_ref().is_some_and(|c| c.is_router_of(&service, &environment, &region)) {
        may_read(&app, &caller)?;
    }
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if q.router.is_some() {
        return Err(ApiError::bad_request("router= is for routing tables"));
    }
    let look =
        || app.node.read(|m| m.service(&service).and_then(|s| s.region_flags(&environment, &region, m.applied_seq)));
    let same = |a: &RegionFlags, b: &RegionFlags| {
        RegionFlags { generation: 0, ..a.clone() } == RegionFlags { generation: 0, ..b.clone() }
    };
    long_poll(&app, q.after, q.wait, |r: &RegionFlags| r.generation, same, look).await.map(Json)
}

/// One flag-set version's document: for the service's agents (which serve it on their
/// host) and readers. `baseline` is the empty set.
async fn flag_set(
    State(app): Shared,
    MaybeCaller(caller): MaybeCaller,
    Path((service, version)): Path<(String, String)>,
) -> Result<Json<FlagSetDocument>, ApiError> {
    let own_agent = caller
        .as_ref()
        .is_some_and(|c| matches!((&c.role, &c.scope), (Role::Agent, Scope::Host { service: s, .. }) if *s == service));
    if !own_agent {
        may_read(&app, &caller)?;
    }
    app.node.read(|m| {
        let s = m.service(&service)?;
        let flags = s
            .flag_set(&version)
            .ok_or_else(|| ApiError::not_found(format!("service {service} has no flag release {version:?}")))?;
        Ok(Json(FlagSetDocument { version, flags }))
    })
}

/// Flag evaluations counted by a region's relay (a router token of the region) or by a
/// host's agent; only flags and versions the service has are counted, so a push cannot
/// grow the metrics without bound.
async fn push_flag_evaluations(
    State(app): Shared,
    caller: Caller,
    Body(push): Body<FlagEvaluationsPush>,
) -> Result<Json<Accepted>, ApiError> {
    let allowed = match (&caller.role, &caller.scope) {
        (Role::Admin, _) => true,
        (Role::Router, _) => caller.is_router_of(&push.service, &push.environment, &push.region),
        // An agent counts for its own host, so for its host's region only.
        (Role::Agent, Scope::Host { service, environment, host }) => {
            *service == push.service
                && *environment == push.environment
                && app.node.read(|m| {
                    let Ok(s) = m.service(service) else { return false };
                    let Ok((env, h)) = s.host(environment, host) else { return false };
                    s.plan.region_name(env, s.plan.zone_region(env, s.plan.host_zone(env, h))) == push.region
                })
        }
        _ => false,
    };
    if !allowed {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "token {:?} may not push flag evaluations for {}/{}/{}",
                caller.name, push.service, push.environment, push.region
            ),
        ));
    }
    app.node.read(|m| {
        let s = m.service(&push.service)?;
        let env = s.env(&push.environment)?;
        s.region(env, &push.region)?;
        for (i, c) in push.counts.iter().enumerate() {
            let known = s.flag_sets.get(&c.version).is_some_and(|doc| {
                doc.value().get("flags").and_then(|f| f.get(&c.flag)).is_some_and(|flag| {
                    c.variant.as_ref().is_none_or(|v| flag.get("variants").and_then(|vs| vs.get(v)).is_some())
                })
            });
            if !known {
                return Err(ApiError::invalid(format!(
                    "counts[{i}]: flag set {:?} of {} has no flag {:?} with variant {:?}",
                    c.version, push.service, c.flag, c.variant
                ))
                .with_details(serde_json::json!({ "index": i })));
            }
        }
        Ok(())
    })?;
    for c in &push.counts {
        let labels = vec![
            ("service".to_owned(), push.service.clone()),
            ("environment".to_owned(), push.environment.clone()),
            ("region".to_owned(), push.region.clone()),
            ("flag".to_owned(), c.flag.clone()),
            ("variant".to_owned(), c.variant.clone().unwrap_or_default()),
            ("version".to_owned(), c.version.clone()),
        ];
        app.node.metrics.flag_evaluations.get_or_create(&labels).inc_by(c.count);
    }
    Ok(Json(Accepted { ok: true }))
}

/// May `caller` push numbers for this host? An admin for any; an agent for its own host;
/// a router for the hosts of its region, traffic only.
fn may_push_for(
    caller: &Caller,
    s: &ServiceState,
    env: rollwave_core::plan::EnvId,
    host: rollwave_core::plan::HostId,
    gauge: bool,
) -> bool {
    let environment = s.plan.manifest.environments[env.idx()].name.as_str();
    match (&caller.role, &caller.scope) {
        (Role::Admin, _) => true,
        (Role::Agent, Scope::Host { service, environment: e, host: own }) => {
            *service == s.name && e == environment && s.host(e, own).is_ok_and(|(_, h)| h == host)
        }
        (Role::Router, Scope::Region { service, environment: e, region }) => {
            let zone = s.plan.host_zone(env, host);
            !gauge
                && *service == s.name
                && e == environment
                && s.plan.region_name(env, s.plan.zone_region(env, zone)) == region.as_str()
        }
        _ => false,
    }
}

async fn push_metrics(
    State(app): Shared,
    caller: Caller,
    Body(push): Body<MetricsPush>,
) -> Result<Json<Accepted>, ApiError> {
    if !matches!(caller.role, Role::Admin | Role::Agent | Role::Router) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "pushing metrics needs an agent or router token; token {:?} has {}",
                caller.name,
                caller.role.as_str()
            ),
        ));
    }
    // Every gauge is checked before anything is stored: a push is taken whole or not at all.
    for (i, g) in push.gauges.iter().enumerate() {
        if let Err(why) = check_gauge(g) {
            return Err(ApiError::invalid(format!("gauges[{i}] ({} of host {}): {why}", g.name, g.host))
                .with_details(serde_json::json!({ "index": i, "name": g.name, "host": g.host })));
        }
    }
    let refused = |what: &str, host: &str| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("token {:?} may not push {what} for host {host}", caller.name),
        )
    };
    let now = app.node.clock.now_ms();
    let gauges: Vec<rollwave_store::GaugeRow> = app.node.read(|m| {
        let s = m.service(&push.service)?;
        let env = s.env(&push.environment)?;
        push.gauges
            .iter()
            .map(|g| {
                let (_, host) = s.host(&push.environment, &g.host)?;
                if !may_push_for(&caller, s, env, host, true) {
                    return Err(refused("gauges", &g.host));
                }
                Ok(rollwave_store::GaugeRow {
                    service: push.service.clone(),
                    environment: push.environment.clone(),
                    host: s.plan.host_name(env, host).to_owned(),
                    version: g.version.clone(),
                    at_ms: now,
                    name: g.name.clone(),
                    value: g.value,
                })
            })
            .collect::<Result<Vec<_>, ApiError>>()
    })?;
    let rows: Vec<rollwave_store::MetricRow> = app.node.read(|m| {
        let s = m.service(&push.service)?;
        let env = s.env(&push.environment)?;
        let by_address: std::collections::HashMap<&str, rollwave_core::plan::HostId> =
            s.addresses.iter().filter(|((e, _), _)| *e == env).map(|((_, h), a)| (a.as_str(), *h)).collect();
        push.samples
            .iter()
            .map(|sample| {
                let host = match by_address.get(sample.host.as_str()) {
                    Some(&h) => h,
                    None => s.host(&push.environment, &sample.host)?.1,
                };
                if !may_push_for(&caller, s, env, host, false) {
                    return Err(refused("traffic", &sample.host));
                }
                Ok(rollwave_store::MetricRow {
                    service: push.service.clone(),
                    environment: push.environment.clone(),
                    host: s.plan.host_name(env, host).to_owned(),
                    version: sample.version.clone(),
                    at_ms: now,
                    requests: sample.requests as i64,
                    errors: sample.errors as i64,
                    buckets: sample.latency_buckets.iter().map(u64::to_string).collect::<Vec<_>>().join(","),
                    source: "traffic".into(),
                })
            })
            .collect::<Result<Vec<_>, ApiError>>()
    })?;
    app.node.store.insert_metrics(&rows).await?;
    app.node.store.insert_gauges(&gauges).await?;
    Ok(Json(Accepted { ok: true }))
}

/// A gauge reading is one of [`GAUGES`], with a value it can have.
fn check_gauge(g: &GaugeSample) -> Result<(), String> {
    if !GAUGES.contains(&g.name.as_str()) {
        return Err(format!("unknown gauge {:?}; use {}", g.name, GAUGES.join(", ")));
    }
    if !g.value.is_finite() {
        return Err(format!("the value {} is not a finite number", g.value));
    }
    if g.value < 0.0 {
        return Err(format!("the value {} is negative", g.value));
    }
    if g.name != "restarts" && g.value > 100.0 {
        return Err(format!("the value {} is over 100 (a percentage)", g.value));
    }
    Ok(())
}

#[derive(Deserialize)]
struct MetricsQuery {
    service: String,
    metric: String,
    /// `environment`, `environment/region`, `environment/region/zone` or `environment/host`.
    scope: String,
    #[serde(default)]
    version: Option<String>,
    /// Seconds back from now; default 1 hour.
    #[serde(default)]
    since: Option<u64>,
}

/// A built-in metric in 10 s bins.
async fn query_metrics(
    State(app): Shared,
    _: Reader,
    query: Result<Query<MetricsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<MetricSeries>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let gauge = crate::signals::is_gauge(&q.metric);
    let source = crate::signals::builtin_source(&q.metric);
    if source.is_none() && !gauge {
        return Err(ApiError::invalid(format!(
            "unknown metric {:?}; use {}, {}, monitor:NAME:success_rate or monitor:NAME:latency_ms",
            q.metric,
            crate::signals::BUILTIN.join(", "),
            GAUGES.join(", ")
        )));
    }
    let now = app.node.clock.now_ms();
    let from = now - q.since.unwrap_or(3600).min(7 * 86_400) as i64 * 1000;
    let (rows, gauges) = if gauge {
        (Vec::new(), app.node.store.gauges(&q.service, from, now + 1).await?)
    } else {
        (app.node.store.metrics(&q.service, from, now + 1).await?, Vec::new())
    };
    let bin = crate::signals::BIN_MS;
    let bin_of = |at_ms: i64| at_ms.div_euclid(bin) * bin;
    let points: Vec<(i64, f64)> = app.node.read(|m| {
        let s = m.service(&q.service)?;
        let scope = s.scope(&q.scope)?;
        let in_scope = |environment: &str, host: &str, version: &str| {
            if q.version.as_ref().is_some_and(|v| v != version) {
                return false;
            }
            let Ok((env, host)) = s.host(environment, host) else { return false };
            let zone = s.plan.host_zone(env, host);
            match scope {
                rollwave_core::engine::Scope::Environment(e) => e == env,
                rollwave_core::engine::Scope::Region(e, reg) => e == env && s.plan.zone_region(env, zone) == reg,
                rollwave_core::engine::Scope::Zone(e, z) => e == env && z == zone,
                rollwave_core::engine::Scope::Host(e, h) => e == env && h == host,
            }
        };
        let points = if gauge {
            let mut bins: std::collections::BTreeMap<i64, crate::signals::GaugeReadings> = Default::default();
            for g in gauges.iter().filter(|g| g.name == q.metric && in_scope(&g.environment, &g.host, &g.version)) {
                bins.entry(bin_of(g.at_ms)).or_default().add(g.value);
            }
            bins.into_iter().filter_map(|(t, readings)| readings.metric(&q.metric).map(|v| (t, v))).collect()
        } else {
            let mut bins: std::collections::BTreeMap<i64, crate::signals::Traffic> = Default::default();
            for r in rows.iter().filter(|r| Some(&r.source) == source.as_ref()) {
                if in_scope(&r.environment, &r.host, &r.version) {
                    bins.entry(bin_of(r.at_ms)).or_default().add(r);
                }
            }
            bins.into_iter()
                .filter_map(|(t, traffic)| traffic.metric(&q.metric, bin as f64 / 1000.0).map(|v| (t, v)))
                .collect()
        };
        Ok::<_, ApiError>(points)
    })?;
    Ok(Json(MetricSeries {
        service: q.service,
        metric: MetricRef::parse(&q.metric),
        scope: q.scope,
        version: q.version,
        points,
    }))
}
