//! The OpenAPI 3.1 description of the API, served at `/v1/openapi.json`.

use serde_json::{Value, json};

fn op(summary: &str, role: Option<&str>, body: Option<&str>, response: &str, codes: &[u16]) -> Value {
    let mut responses = serde_json::Map::new();
    responses.insert(
        "200".into(),
        json!({ "description": "OK", "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{response}") } } } }),
    );
    for code in codes {
        responses.insert(code.to_string(), json!({ "$ref": "#/components/responses/Error" }));
    }
    let mut o = json!({ "summary": summary, "responses": responses });
    if let Some(role) = role {
        o["security"] = json!([{ "bearer": [] }]);
        o["description"] = json!(format!("Needs a token with the `{role}` role or higher."));
    }
    if let Some(body) = body {
        o["requestBody"] = json!({
            "required": true,
            "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{body}") } } }
        });
    }
    o
}

fn string() -> Value {
    json!({ "type": "string" })
}

pub fn document() -> Value {
    let mutation = [400, 401, 403, 404, 409, 413, 422];
    let read = [404];
    json!({
        "openapi": "3.1.0",
        "info": { "title": "rollwave", "version": env!("CARGO_PKG_VERSION"),
                  "description": "Control plane of rollwave: services, releases, operator actions, hosts and events. Reads need a viewer token unless the server runs with --anonymous-read; changes need a bearer token of their role." },
        "paths": {
            "/v1/services": {
                "get": op("List services", None, None, "ServiceList", &[]),
                "post": op("Apply a manifest (creates or updates the service it names)", Some("admin"), Some("ApplyService"), "ServiceSummary", &mutation),
            },
            "/v1/services/{service}": { "get": op("A service's status: versions, releases, what is blocked and why", None, None, "ServiceStatus", &read) },
            "/v1/services/{service}/releases": {
                "get": op("List releases", None, None, "ReleaseList", &read),
                "post": op("Create a release", Some("deployer"), Some("CreateRelease"), "Release", &mutation),
            },
            "/v1/services/{service}/releases/{version}": { "get": op("A release with per-scope versions and its event timeline", None, None, "ReleaseDetail", &read) },
            "/v1/services/{service}/releases/{version}/{action}": {
                "post": op("approve (approver), rollback, retry or roll_forward (deployer)", Some("deployer"), Some("Action"), "Release", &mutation),
            },
            "/v1/services/{service}/hold": { "post": op("Hold the service, or one stage", Some("deployer"), Some("Action"), "ServiceStatus", &mutation) },
            "/v1/services/{service}/resume": { "post": op("Resume the service, or one stage", Some("deployer"), Some("Action"), "ServiceStatus", &mutation) },
            "/v1/hosts/register": { "post": op("Register a host; returns what it should run", Some("agent"), Some("RegisterHost"), "Desired", &mutation) },
            "/v1/services/{service}/hosts/{environment}/{host}/desired": {
                "get": op("Long-poll a host's desired version: answers when `command` differs from `after`, or after `wait` seconds", None, None, "Desired", &[400, 404]),
            },
            "/v1/services/{service}/hosts/{environment}/{host}/report": {
                "post": op("Report the outcome of a deployment command", Some("agent"), Some("HostReport"), "Accepted", &mutation),
            },
            "/v1/events": { "get": op("Events in log order, paged with `after` and `limit`", None, None, "EventPage", &[400]) },
            "/v1/events/stream": { "get": { "summary": "Live events as Server-Sent Events (`after` or Last-Event-ID to resume)",
                                            "responses": { "200": { "description": "text/event-stream of Event objects" } } } },
            "/v1/tokens": {
                "get": op("Every token, without secrets or hashes", Some("admin"), None, "TokenList", &[401, 403]),
                "post": op("Create a token; its secret is returned once", Some("admin"), Some("CreateToken"), "TokenCreated", &mutation),
            },
            "/v1/tokens/{id}": { "delete": op("Revoke a token: refused on every replica within a second", Some("admin"), None, "Accepted", &[401, 403, 404, 422]) },
            "/v1/tokens/{id}/revoke": { "post": op("Revoke a token (as DELETE /v1/tokens/{id})", Some("admin"), None, "Accepted", &[401, 403, 404, 422]) },
            "/v1/audit/verify": { "get": op("Check the audit log's hash chain and its head", Some("admin"), None, "AuditVerdict", &[401, 403]) },
            "/healthz": { "get": { "summary": "Liveness", "responses": { "200": { "description": "ok" } } } },
            "/readyz": { "get": { "summary": "Readiness: the log has been replayed", "responses": { "200": { "description": "ready" }, "503": { "description": "replaying" } } } },
            "/metrics": { "get": { "summary": "Prometheus metrics", "responses": { "200": { "description": "text format" } } } },
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "responses": {
                "Error": { "description": "An error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } }
            },
            "schemas": {
                "Error": { "type": "object", "required": ["code", "message"], "properties": {
                    "code": { "type": "string", "enum": ["bad_request", "unauthorized", "forbidden", "not_found", "conflict", "too_large", "invalid", "unavailable", "internal"] },
                    "message": string(),
                    "details": { "description": "For `invalid` manifests: a list of {line, col, message}" } } },
                "ApplyService": { "type": "object", "required": ["manifest"], "properties": { "manifest": string(), "file": string() } },
                "ServiceSummary": { "type": "object", "properties": { "name": string(), "stages": { "type": "array", "items": string() },
                    "hosts": { "type": "integer" }, "releases": { "type": "integer" }, "lead_time_s": { "type": "integer" } } },
                "ServiceList": { "type": "array", "items": { "$ref": "#/components/schemas/ServiceSummary" } },
                "ServiceStatus": { "type": "object", "properties": {
                    "service": string(),
                    "stages": { "type": "array", "items": { "type": "object" } },
                    "environments": { "type": "array", "items": { "type": "object", "properties": { "environment": string(), "versions": { "type": "array" } } } },
                    "releases": { "type": "array", "items": { "$ref": "#/components/schemas/Release" } },
                    "blocked": { "type": "array", "items": { "type": "object", "properties": { "release": string(), "scope": string(), "reason": string(), "since": string() } } },
                    "holds": { "type": "array", "items": string() } } },
                "CreateRelease": { "type": "object", "required": ["version"], "properties": {
                    "version": { "type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$" },
                    "artifact": { "type": "string", "format": "uri", "maxLength": 4096, "description": "an https, http or file URL" },
                    "sha256": { "type": "string", "pattern": "^[0-9a-fA-F]{64}$" } } },
                "Release": { "type": "object", "required": ["version", "outcome"], "properties": {
                    "version": string(),
                    "outcome": { "type": "string", "enum": ["in_progress", "halted", "completed", "rolled_back", "superseded"] },
                    "reason": string(), "created_at": string(), "completed_at": string(), "lead_time_s": { "type": "integer" },
                    "reached": { "type": "array", "items": string() }, "rolled_back_scopes": { "type": "array", "items": string() },
                    "at": string(), "waiting": { "type": "boolean" }, "artifact": string(), "sha256": string() } },
                "ReleaseList": { "type": "array", "items": { "$ref": "#/components/schemas/Release" } },
                "ReleaseDetail": { "allOf": [ { "$ref": "#/components/schemas/Release" }, { "type": "object", "properties": {
                    "scopes": { "type": "array" }, "events": { "type": "array", "items": { "$ref": "#/components/schemas/Event" } } } } ] },
                "Action": { "type": "object", "properties": { "stage": string() } },
                "RegisterHost": { "type": "object", "required": ["service", "environment", "host"], "properties": {
                    "service": string(), "environment": string(), "host": string(), "region": string(), "zone": string() } },
                "Desired": { "type": "object", "properties": { "command": { "type": "integer" }, "version": string(),
                    "artifact": string(), "sha256": string(), "purpose": { "type": "string", "enum": ["rollout", "rollback"] } } },
                "HostReport": { "type": "object", "required": ["command", "ok"], "properties": {
                    "command": { "type": "integer" }, "ok": { "type": "boolean" }, "reason": string() } },
                "Accepted": { "type": "object", "properties": { "ok": { "type": "boolean" } } },
                "Event": { "type": "object", "properties": { "seq": { "type": "integer" }, "t": string(), "service": string(),
                    "kind": string(), "release": { "type": ["string", "null"] }, "scope": string(), "reason": string() } },
                "EventPage": { "type": "object", "properties": { "events": { "type": "array", "items": { "$ref": "#/components/schemas/Event" } }, "next": { "type": "integer" } } },
                "CreateToken": { "type": "object", "required": ["role"], "properties": {
                    "role": { "type": "string", "enum": ["viewer", "deployer", "approver", "admin", "agent", "router"] },
                    "name": { "type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,63}$", "description": "unique; not clock, driver, signals or agent" },
                    "host": { "type": "string", "description": "service/environment/host, for agent tokens" },
                    "region": { "type": "string", "description": "service/environment/region, for router tokens" },
                    "ttl_s": { "type": "integer", "minimum": 1, "description": "seconds until it expires" } } },
                "TokenCreated": { "type": "object", "properties": { "token": string(), "role": string(), "name": string(),
                    "id": { "type": "integer" }, "expires_ms": { "type": ["integer", "null"] } } },
                "TokenInfo": { "type": "object", "properties": { "id": { "type": "integer" }, "name": string(), "role": string(),
                    "host": { "type": ["string", "null"] }, "region": { "type": ["string", "null"] }, "created_ms": { "type": "integer" },
                    "expires_ms": { "type": ["integer", "null"] }, "revoked_ms": { "type": ["integer", "null"] }, "last_used_ms": { "type": ["integer", "null"] } } },
                "TokenList": { "type": "array", "items": { "$ref": "#/components/schemas/TokenInfo" } },
                "AuditVerdict": { "type": "object", "properties": { "intact": { "type": "boolean" }, "rows": { "type": "integer" },
                    "problem": { "type": ["string", "null"] }, "database": string() } },
            }
        }
    })
}
