//! The HTTP/JSON API under `/v1`, plus `/healthz`, `/readyz` and `/metrics`; the
//! dashboard's pages (see [`crate::dashboard`]) are merged in.

use crate::api::*;
use crate::auth::{Actor, Role, Tokens, new_secret};
use crate::error::ApiError;
use crate::node::Node;
use crate::state::{LogInput, OPERATOR_ACTIONS, ServiceState};
use axum::body::Bytes;
use axum::extract::{FromRequest, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
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

type Shared = State<Arc<App>>;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(|| async { Json(crate::openapi::document()) }))
        .route("/v1/services", get(list_services).post(apply_service))
        .route("/v1/services/{service}", get(get_service))
        .route("/v1/services/{service}/releases", get(list_releases).post(create_release))
        .route("/v1/services/{service}/releases/{version}", get(get_release))
        .route("/v1/services/{service}/releases/{version}/{action}", post(release_action))
        .route("/v1/services/{service}/hold", post(hold))
        .route("/v1/services/{service}/resume", post(resume))
        .route("/v1/hosts/register", post(register_host))
        .route("/v1/services/{service}/hosts/{environment}/{host}/desired", get(desired))
        .route("/v1/services/{service}/hosts/{environment}/{host}/report", post(report))
        .route("/v1/events", get(events))
        .route("/v1/events/stream", get(stream))
        .route("/v1/tokens", post(create_token))
        .route("/v1/cluster", get(cluster))
        .route("/v1/services/{service}/routes/{environment}/{region}", get(routes))
        .route("/v1/metrics", get(query_metrics).post(push_metrics))
        .merge(crate::dashboard::routes())
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

async fn actor(app: &App, headers: &HeaderMap) -> Result<Actor, ApiError> {
    app.tokens.authenticate(&app.node.store, headers).await
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
    app.node.read(|model| {
        m.releases.clear();
        for s in model.services.values() {
            for r in s.engine.releases() {
                let labels =
                    vec![("service".to_owned(), s.name.clone()), ("outcome".to_owned(), r.status.as_str().to_owned())];
                m.releases.get_or_create(&labels).inc();
            }
        }
    });
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

async fn list_services(State(app): Shared) -> Json<Vec<ServiceSummary>> {
    Json(app.node.read(|m| m.services.values().map(summary).collect()))
}

async fn apply_service(
    State(app): Shared,
    headers: HeaderMap,
    Body(req): Body<ApplyService>,
) -> Result<Response, ApiError> {
    let actor = actor(&app, &headers).await?;
    actor.require(Role::Admin)?;
    let file = req.file.unwrap_or_else(|| "manifest.yaml".to_owned());
    // Read it here first, for the service's name and to answer errors without the leader;
    // a secret reference this server cannot resolve is refused here, not when it is needed.
    let manifest =
        rollwave_manifest::parse_manifest_checking_secrets(&file, &req.manifest, &crate::notify::check_reference)
            .map_err(crate::state::manifest_error)?;
    let service = manifest.service.clone();
    let existed = app.node.read(|m| m.services.contains_key(&service));
    let agents = app.node.config.driver == crate::node::Driver::Agent;
    app.node.submit(&service, LogInput::ApplyManifest { file, text: req.manifest, agents }, &actor.name).await?;
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

async fn get_service(State(app): Shared, Path(service): Path<String>) -> Result<Json<ServiceStatus>, ApiError> {
    let mut status = app.node.read(|m| m.service(&service).map(|s| s.status(holds(s))))?;
    status.notifications = app.node.notifier.status(&service);
    Ok(Json(status))
}

async fn list_releases(State(app): Shared, Path(service): Path<String>) -> Result<Json<Vec<ReleaseView>>, ApiError> {
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
    headers: HeaderMap,
    Path(service): Path<String>,
    Body(req): Body<CreateRelease>,
) -> Result<Response, ApiError> {
    let actor = actor(&app, &headers).await?;
    actor.require(Role::Deployer)?;
    let release = crate::release::NewRelease::parse(&req)?;
    let input =
        LogInput::CreateRelease { version: release.version, artifact: release.artifact, sha256: release.sha256 };
    app.node.submit(&service, input, &actor.name).await?;
    let view = app.node.read(|m| m.service(&service).and_then(|s| release_of(s, &req.version)))?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

async fn get_release(
    State(app): Shared,
    Path((service, version)): Path<(String, String)>,
) -> Result<Json<ReleaseDetail>, ApiError> {
    app.node.read(|m| {
        let s = m.service(&service)?;
        let release = release_of(s, &version)?;
        Ok(Json(ReleaseDetail {
            release,
            scopes: s.region_versions(),
            events: s.events.iter().filter(|e| e.release.as_deref() == Some(version.as_str())).cloned().collect(),
        }))
    })
}

async fn release_action(
    State(app): Shared,
    headers: HeaderMap,
    Path((service, version, action)): Path<(String, String, String)>,
    Body(req): Body<ActionRequest>,
) -> Result<Json<ReleaseView>, ApiError> {
    let action = action.replace('-', "_");
    if !OPERATOR_ACTIONS[..4].contains(&action.as_str()) {
        return Err(ApiError::not_found(format!("no action {action:?}; use approve, rollback, retry or roll_forward")));
    }
    let actor = actor(&app, &headers).await?;
    actor.require(if action == "approve" { Role::Approver } else { Role::Deployer })?;
    let input = LogInput::Operator { action, release: Some(version.clone()), stage: req.stage };
    app.node.submit(&service, input, &actor.name).await?;
    app.node.read(|m| m.service(&service).and_then(|s| release_of(s, &version))).map(Json)
}

async fn hold_or_resume(
    app: Arc<App>,
    headers: HeaderMap,
    service: String,
    stage: Option<String>,
    action: &str,
) -> Result<Json<ServiceStatus>, ApiError> {
    let actor = actor(&app, &headers).await?;
    actor.require(Role::Deployer)?;
    let input = LogInput::Operator { action: action.to_owned(), release: None, stage };
    app.node.submit(&service, input, &actor.name).await?;
    app.node.read(|m| m.service(&service).map(|s| Json(s.status(holds(s)))))
}

async fn hold(
    State(app): Shared,
    headers: HeaderMap,
    Path(service): Path<String>,
    Body(req): Body<ActionRequest>,
) -> Result<Json<ServiceStatus>, ApiError> {
    hold_or_resume(app, headers, service, req.stage, "hold").await
}

async fn resume(
    State(app): Shared,
    headers: HeaderMap,
    Path(service): Path<String>,
    Body(req): Body<ActionRequest>,
) -> Result<Json<ServiceStatus>, ApiError> {
    hold_or_resume(app, headers, service, req.stage, "resume").await
}

async fn register_host(
    State(app): Shared,
    headers: HeaderMap,
    Body(req): Body<RegisterHost>,
) -> Result<Json<Registered>, ApiError> {
    let actor = actor(&app, &headers).await?;
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
    actor.require_host(&format!("{service}/{}/{}", req.environment, req.host))?;
    let input = LogInput::RegisterHost {
        environment: req.environment.clone(),
        host: req.host.clone(),
        region,
        zone,
        address: req.address.clone(),
    };
    app.node.submit(&service, input, &actor.name).await?;
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
}

async fn desired(
    State(app): Shared,
    Path((service, environment, host)): Path<(String, String, String)>,
    query: Result<Query<DesiredQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Desired>, ApiError> {
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
        app.node.submit(&service, input, "agent").await?;
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
        if q.after.is_none_or(|after| current.command != after) {
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
    headers: HeaderMap,
    Path((service, environment, host)): Path<(String, String, String)>,
    Body(req): Body<HostReport>,
) -> Result<Json<Accepted>, ApiError> {
    let actor = actor(&app, &headers).await?;
    actor.require_host(&format!("{service}/{environment}/{host}"))?;
    app.node.heard_from(&service, &environment, &host);
    let input = LogInput::HostReport {
        environment,
        host,
        command: req.command,
        ok: req.ok,
        reason: req.reason,
        hooks: req.hooks,
    };
    app.node.submit(&service, input, &actor.name).await?;
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
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<EventPage>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let after = q.after.unwrap_or(0);
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let records = app.node.store.read_log(after, limit, Some(&["event"])).await?;
    let next = records.last().map_or(after, |r| r.seq);
    let events =
        records.iter().filter(|r| q.service.as_ref().is_none_or(|s| *s == r.service)).filter_map(parse_event).collect();
    Ok(Json(EventPage { events, next }))
}

async fn stream(
    State(app): Shared,
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
        app.node.store.read_log(after, 10_000, Some(&["event"])).await?.iter().filter_map(parse_event).collect()
    };
    let last = backlog.last().and_then(|e: &EventView| e.seq).unwrap_or(if after == i64::MAX { 0 } else { after });
    let service = q.service.clone();
    let live = live.filter_map(move |r| r.ok().filter(|e| e.seq.unwrap_or(0) > last));
    let stream = tokio_stream::iter(backlog)
        .chain(live)
        .filter(move |e| service.as_ref().is_none_or(|s| *s == e.service))
        .map(|e| {
            let frame = SseEvent::default().id(e.seq.unwrap_or(0).to_string()).event(e.kind.clone()).json_data(&e);
            // An event that cannot be encoded is told of as an error, never sent empty.
            Ok(frame.unwrap_or_else(|err| SseEvent::default().event("error").data(format!("event not encoded: {err}"))))
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

async fn create_token(
    State(app): Shared,
    headers: HeaderMap,
    Body(req): Body<CreateToken>,
) -> Result<Response, ApiError> {
    let actor = actor(&app, &headers).await?;
    actor.require(Role::Admin)?;
    let role = Role::parse(&req.role).ok_or_else(|| {
        ApiError::invalid(format!("unknown role {:?}; use one of {}", req.role, Role::NAMES.join(", ")))
    })?;
    if role == Role::Agent && req.host.is_none() {
        return Err(ApiError::invalid("an agent token needs the host it speaks for: service/environment/host"));
    }
    let secret = new_secret()?;
    let name = req.name.unwrap_or_else(|| format!("{}-{}", role.as_str(), &secret[3..11]));
    app.node
        .store
        .insert_token(&rollwave_store::hash_secret(&secret), &name, role.as_str(), req.host.as_deref())
        .await?;
    let detail = serde_json::json!({ "name": name, "role": role.as_str(), "host": req.host }).to_string();
    app.node.store.audit(&actor.name, "create_token", &detail).await?;
    Ok((StatusCode::CREATED, Json(TokenCreated { token: secret, role: role.as_str().to_owned(), name }))
        .into_response())
}

async fn cluster(State(app): Shared) -> Result<Json<Cluster>, ApiError> {
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

/// A region's routing table; with `after`, waits (up to `wait` s) for a newer one.
async fn routes(
    State(app): Shared,
    Path((service, environment, region)): Path<(String, String, String)>,
    query: Result<Query<RoutesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Routes>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let look = || app.node.read(|m| m.service(&service).and_then(|s| s.routes(&environment, &region, m.applied_seq)));
    if let Some(router) = &q.router {
        if router.parse::<axum::http::uri::Authority>().ok().filter(|a| a.port_u16().is_some()).is_none() {
            return Err(ApiError::invalid(format!("router {router:?} is not host:port")));
        }
        look()?;
        app.node.heard_from_router(&service, &environment, &region, router);
    }
    let mut changed = app.node.changed.subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait.unwrap_or(0).min(60));
    let first = look()?;
    if q.after.is_none_or(|after| after < first.generation) {
        return Ok(Json(first));
    }
    // The caller has this table: answer when it changes (generations alone do not count).
    let same = |a: &Routes, b: &Routes| Routes { generation: 0, ..a.clone() } == Routes { generation: 0, ..b.clone() };
    loop {
        if tokio::time::timeout_at(deadline, changed.changed()).await.is_err() {
            return look().map(Json);
        }
        let next = look()?;
        if !same(&next, &first) {
            return Ok(Json(next));
        }
    }
}

async fn push_metrics(
    State(app): Shared,
    headers: HeaderMap,
    Body(push): Body<MetricsPush>,
) -> Result<Json<Accepted>, ApiError> {
    let actor = actor(&app, &headers).await?;
    let own = actor.role == Role::Agent
        && actor.host.as_deref().is_some_and(|h| h.starts_with(&format!("{}/", push.service)));
    if !own {
        actor.require(Role::Deployer)?;
    }
    // Every gauge is checked before anything is stored: a push is taken whole or not at all.
    for (i, g) in push.gauges.iter().enumerate() {
        if let Err(why) = check_gauge(g) {
            return Err(ApiError::invalid(format!("gauges[{i}] ({} of host {}): {why}", g.name, g.host))
                .with_details(serde_json::json!({ "index": i, "name": g.name, "host": g.host })));
        }
    }
    let now = rollwave_store::now_ms();
    let gauges: Vec<rollwave_store::GaugeRow> = app.node.read(|m| {
        let s = m.service(&push.service)?;
        let env = s.env(&push.environment)?;
        // An agent's token speaks for its own host's gauges only.
        let own = match (actor.role, &actor.host) {
            (Role::Agent, Some(own)) => {
                let host = own.strip_prefix(&format!("{}/{}/", push.service, push.environment));
                Some(host.and_then(|h| s.host(&push.environment, h).ok()).map(|(_, h)| h))
            }
            _ => None,
        };
        push.gauges
            .iter()
            .map(|g| {
                let (_, host) = s.host(&push.environment, &g.host)?;
                if own.is_some_and(|own| own != Some(host)) {
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "forbidden",
                        format!("token {:?} may not push gauges for host {}", actor.name, g.host),
                    ));
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
    let now = rollwave_store::now_ms();
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
    Ok(Json(MetricSeries { service: q.service, metric: q.metric, scope: q.scope, version: q.version, points }))
}
