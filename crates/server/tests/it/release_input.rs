//! A release's version and artifact are hostile input: they are checked where a release
//! comes in, and an `exec` command gets them only as environment variables.

use crate::support;
use rollwave_server::log::LogInput;

use rollwave_server::Driver;
use rollwave_server::api::*;
use std::path::Path;
use support::{ADMIN, TestServer};

/// A service whose one `exec` environment runs `deploy` on 2 hosts.
fn exec_service(s: &TestServer, deploy: &str) {
    let manifest = format!(
        "service: fn\n\
         environments:\n\
         \x20 prod:\n\
         \x20   regions: {{ r1: {{ zones: {{ z1: 2 }} }} }}\n\
         \x20   exec: {{ deploy: {deploy:?}, timeout: 10s }}\n\
         strategy:\n\
         \x20 one_box: false\n\
         \x20 rolling: {{ batch: 100%, zone_bake: 0s }}\n\
         stages:\n\
         \x20 - {{ name: prod, environment: prod }}\n"
    );
    s.client(Some(ADMIN)).apply("fn.yaml", &manifest).unwrap();
}

fn create(s: &TestServer, version: &str, artifact: Option<&str>) -> (u16, ErrorBody) {
    let body = serde_json::json!({ "version": version, "artifact": artifact }).to_string();
    s.raw("POST", "/v1/services/fn/releases", Some(ADMIN), body.as_bytes())
}

fn marker(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

#[test]
fn an_artifact_with_a_shell_command_is_refused_and_runs_nothing() {
    let s = TestServer::start(Driver::Agent);
    let dir = s.dir();
    exec_service(&s, &format!("echo {{{{artifact}}}} > {}; echo deployed", marker(dir, "out")));
    let before = s.applied_seq();
    let injected = format!("https://e.x/a.tgz; id > {}; #", marker(dir, "pwned"));

    let (status, body) = create(&s, "v2", Some(&injected));

    assert_eq!((status, body.code.as_str()), (422, "invalid"), "{}", body.message);
    assert_eq!(body.details["field"], "artifact");
    assert!(body.message.starts_with("artifact: "), "{}", body.message);
    for refused in ["ftp://e.x/a.tgz", "a.tgz", "https://user:secret@e.x/a.tgz"] {
        let (status, body) = create(&s, "v2", Some(refused));
        assert_eq!((status, &body.details["field"]), (422, &serde_json::json!("artifact")), "{refused}");
    }
    // Nothing of theirs was logged (the leader's ticks go on meanwhile).
    let logged = s.block_on(s.node.store.read_log(before, 1000, Some(&["input"]))).unwrap();
    let inputs: Vec<LogInput> = logged.iter().map(|r| serde_json::from_str(&r.body).unwrap()).collect();
    assert!(inputs.iter().all(|i| *i == LogInput::Tick), "{inputs:?}");
    let (status, _) = s.raw("GET", "/v1/services/fn/releases/v2", Some(ADMIN), b"");
    assert_eq!(status, 404, "no release was created");
    assert!(!dir.join("pwned").exists() && !dir.join("out").exists(), "no command ran");
}

#[test]
fn an_accepted_artifact_reaches_the_command_only_as_a_variable() {
    let s = TestServer::start(Driver::Agent);
    let dir = s.dir();
    // Valid URL characters that a shell would read as commands if the URL were pasted in.
    let artifact = format!(
        "https://e.x/a.tgz?x=$(touch$IFS{})&y=;touch$IFS{}",
        marker(dir, "substituted"),
        marker(dir, "chained")
    );
    let deploy = format!(
        "echo {{{{artifact}}}} >> {templated}; echo \"$ROLLWAVE_ARTIFACT\" >> {variable}; \
         echo \"$ROLLWAVE_SERVICE $ROLLWAVE_ENVIRONMENT $ROLLWAVE_REGION $ROLLWAVE_ZONE $ROLLWAVE_HOST \
         $ROLLWAVE_VERSION $ROLLWAVE_SHARE\" '{{{{host}}}}' \"{{{{version}}}}\" >> {names}",
        templated = marker(dir, "templated"),
        variable = marker(dir, "variable"),
        names = marker(dir, "names"),
    );
    exec_service(&s, &deploy);
    let admin = s.client(Some(ADMIN));

    let (status, body) = create(&s, "v2", Some(&artifact));
    assert_eq!(status, 201, "{}", body.message);
    s.wait_for("v2 completes through exec", || {
        admin.release("fn", "v2").unwrap().release.outcome == rollwave_api::Outcome::Completed
    });

    assert!(!dir.join("substituted").exists(), "a command substitution in the URL ran");
    assert!(!dir.join("chained").exists(), "a command chained in the URL ran");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    let twice = format!("{artifact}\n{artifact}\n");
    assert_eq!(read("templated"), twice, "{{{{artifact}}}} is the artifact, exactly");
    assert_eq!(read("variable"), twice, "ROLLWAVE_ARTIFACT is the artifact, exactly");
    let mut names: Vec<String> = read("names").lines().map(str::to_owned).collect();
    names.sort();
    assert_eq!(names, ["fn prod r1 z1 z1-1 v2 100 z1-1 v2", "fn prod r1 z1 z1-2 v2 100 z1-2 v2"]);
}

#[test]
fn versions_that_read_as_paths_or_options_are_refused_with_the_field_named() {
    let s = TestServer::start(Driver::Noop { delay: std::time::Duration::from_millis(20) });
    exec_service(&s, "true");
    let before = s.applied_seq();
    let long = "v".repeat(129);
    for version in [".", "..", "-rf", "--help", ".v2", long.as_str(), "v$2", "v 2", ""] {
        let (status, body) = create(&s, version, None);
        assert_eq!((status, body.code.as_str()), (422, "invalid"), "{version:?}: {}", body.message);
        assert_eq!(body.details["field"], "version", "{version:?}");
    }
    // Nothing of theirs was logged (the leader's ticks go on meanwhile).
    let logged = s.block_on(s.node.store.read_log(before, 1000, Some(&["input"]))).unwrap();
    let inputs: Vec<LogInput> = logged.iter().map(|r| serde_json::from_str(&r.body).unwrap()).collect();
    assert!(inputs.iter().all(|i| *i == LogInput::Tick), "{inputs:?}");
    let (status, body) = create(&s, &"v".repeat(128), None);
    assert_eq!(status, 201, "128 characters are allowed: {}", body.message);
}
