//! The OpenAPI document the server serves against the routes it really serves (from the
//! router's own table), its path parameters, and an outside validator
//! (`openapi-spec-validator`, from PyPI) when one is installed.

use crate::support;

use rollwave_server::Driver;
use std::collections::BTreeSet;
use std::time::Duration;
use support::TestServer;

const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

fn served_document(s: &TestServer) -> serde_json::Value {
    let mut response = ureq::get(format!("{}/v1/openapi.json", s.base)).call().unwrap();
    assert_eq!(response.status().as_u16(), 200);
    serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap()
}

/// `METHOD PATH` of every operation of the document.
fn documented(doc: &serde_json::Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, _) in item.as_object().unwrap() {
            assert!(METHODS.contains(&method.as_str()), "{path}: {method:?} is not an HTTP method");
            out.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    out
}

#[test]
fn the_document_covers_exactly_the_api_routes_the_router_serves() {
    let s = TestServer::start(Driver::Noop { delay: Duration::from_millis(20) });
    let doc = served_document(&s);
    let served: BTreeSet<String> = rollwave_server::http::served_routes().into_iter().collect();
    let dashboard: BTreeSet<String> = rollwave_server::http::dashboard_routes().into_iter().collect();
    assert!(dashboard.is_subset(&served), "the dashboard's routes are served");
    let api: BTreeSet<String> = served.difference(&dashboard).cloned().collect();
    let documented = documented(&doc);
    let missing: Vec<_> = api.difference(&documented).collect();
    let stray: Vec<_> = documented.difference(&api).collect();
    assert!(missing.is_empty(), "served but not documented: {missing:?}");
    assert!(stray.is_empty(), "documented but not served: {stray:?}");
    for route in ["GET /healthz", "GET /readyz", "GET /metrics", "POST /v1/tokens", "GET /v1/events/stream"] {
        assert!(documented.contains(route), "{route}");
    }
}

#[test]
fn every_operation_declares_the_parameters_of_its_path_and_its_statuses() {
    let s = TestServer::start(Driver::Noop { delay: Duration::from_millis(20) });
    let doc = served_document(&s);
    let mut wrong = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let in_path: BTreeSet<&str> = rollwave_server::openapi::path_params(path).into_iter().collect();
        for (method, op) in item.as_object().unwrap() {
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let declared: BTreeSet<String> = params
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| {
                    assert_eq!(p["required"], true, "{method} {path}: path parameters are required");
                    p["name"].as_str().unwrap().to_owned()
                })
                .collect();
            let declared: BTreeSet<&str> = declared.iter().map(String::as_str).collect();
            if declared != in_path {
                wrong.push(format!("{method} {path}: declares {declared:?}, the path has {in_path:?}"));
            }
            let responses = op["responses"].as_object().unwrap();
            if !responses.keys().any(|k| k.starts_with('2')) {
                wrong.push(format!("{method} {path}: no success status"));
            }
            if op["security"] != serde_json::json!([]) && !responses.contains_key("401") {
                wrong.push(format!("{method} {path}: needs a token but does not say it answers 401"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // What the handlers answer, as the document says: a token is created with 201.
    let created = &doc["paths"]["/v1/tokens"]["post"]["responses"];
    assert!(created.get("201").is_some() && created.get("200").is_none(), "{created}");
}

/// `openapi-spec-validator` from `ROLLWAVE_OPENAPI_SPEC_VALIDATOR` or PATH.
fn validator() -> Option<std::path::PathBuf> {
    if let Ok(path) = std::env::var("ROLLWAVE_OPENAPI_SPEC_VALIDATOR") {
        return Some(path.into());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join("openapi-spec-validator")).find(|p| p.is_file())
}

#[test]
fn the_document_passes_openapi_spec_validator() {
    let required = std::env::var("ROLLWAVE_TEST_OPENAPI").is_ok_and(|v| v == "required");
    let Some(validator) = validator() else {
        assert!(!required, "ROLLWAVE_TEST_OPENAPI=required but openapi-spec-validator is not installed");
        eprintln!("SKIPPED: openapi-spec-validator is not on PATH (pip install openapi-spec-validator)");
        return;
    };
    let s = TestServer::start(Driver::Noop { delay: Duration::from_millis(20) });
    let doc = served_document(&s);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let out = std::process::Command::new(&validator)
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", validator.display()));
    assert!(
        out.status.success(),
        "openapi-spec-validator refuses the document:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
