//! `rollwave server` as a process running an `exec` environment's command: the command
//! gets the release's values as variables and none of the server's secrets.

use crate::kit::{Server, wait_for};
use rollwave_api::{CreateRelease, Outcome};
use std::time::Duration;

#[test]
fn an_exec_command_gets_the_values_and_not_the_servers_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("e.db").display());
    let server = Server::builder().db(&db).db_in_env().driver(None).cwd(dir.path()).start();
    let client = server.client();
    let wait = |what: &str, ok: &mut dyn FnMut() -> bool| wait_for(what, Duration::from_secs(30), ok);
    let manifest = "service: fn\n\
        environments:\n  prod:\n    regions: { r1: { zones: { z1: 1 } } }\n    exec: { deploy: 'env > env.out', timeout: 10s }\n\
        strategy:\n  one_box: false\n  rolling: { batch: 100%, zone_bake: 0s }\n\
        stages:\n  - { name: prod, environment: prod }\n";
    wait("the server takes a manifest", &mut || client.apply("fn.yaml", manifest).is_ok());
    let artifact = "https://e.x/a.tgz?sig=$(id)";
    let release = CreateRelease { version: "v2".into(), artifact: Some(artifact.into()), sha256: None, flags: None };
    client.create_release("fn", &release).unwrap();
    wait("v2 completes", &mut || client.release("fn", "v2").is_ok_and(|r| r.release.outcome == Outcome::Completed));
    drop(server);

    let env = std::fs::read_to_string(dir.path().join("env.out")).unwrap();
    let lines: Vec<&str> = env.lines().collect();
    assert!(lines.contains(&format!("ROLLWAVE_ARTIFACT={artifact}").as_str()), "{env}");
    assert!(lines.contains(&"ROLLWAVE_VERSION=v2") && lines.contains(&"ROLLWAVE_HOST=z1-1"), "{env}");
    assert!(!env.contains(Server::ADMIN), "the admin token reached the command: {env}");
    assert!(!env.contains(&db), "the database URL reached the command: {env}");
}
