//! End to end with real processes: a server on SQLite, six agents started by
//! `rollwave fleet up` in two regions of three zones, real artifacts whose `start` hook
//! runs a tiny HTTP service. v2 goes through a two-wave pipeline; in one zone its
//! `validate` hook fails, and that zone is rolled back while the timeline shows why.

use crate::kit::{BIN, Proc, Server, free_port, one_world_at_a_time, wait_for};
use rollwave_api::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const MANIFEST: &str = "\
service: web
environments:
  prod:
    regions:
      ra: { zones: { a1: 1, a2: 1, a3: 1 } }
      rb: { zones: { b1: 1, b2: 1, b3: 1 } }
strategy:
  one_box: { hosts: 1, max_share: 10%, bake: 1s }
  rolling: { batch: 33%, zone_bake: 1s, deploy_timeout: 2m }
stages:
  - name: prod
    environment: prod
    waves:
      - { name: wave-1, regions: [ra], bake: 1s }
      - { name: wave-2, regions: [rb], bake: 1s }
";

const HOOKS: &str = "\
start:    { run: ./start.sh, timeout: 30s }
stop:     { run: ./stop.sh, timeout: 30s }
validate: { run: ./validate.sh, timeout: 30s }
";

/// Serves the release directory on the port the test gave this host.
const START: &str = "#!/bin/sh
port=$(cat ../../port)
nohup python3 -m http.server \"$port\" --bind 127.0.0.1 >../../http.log 2>&1 &
echo $! > ../../http.pid
echo \"started $ROLLWAVE_VERSION on $ROLLWAVE_HOST_ID port $port\"
";

const STOP: &str = "#!/bin/sh
[ -f ../../http.pid ] && kill \"$(cat ../../http.pid)\" 2>/dev/null
rm -f ../../http.pid
echo stopped
";

/// Healthy everywhere but in zone b2.
const VALIDATE: &str = "#!/bin/sh
if [ \"$ROLLWAVE_ZONE\" = b2 ]; then echo \"health check failed in $ROLLWAVE_ZONE\"; exit 1; fi
exec python3 - <<'PY'
import time, urllib.request
port = open('../../port').read().strip()
for _ in range(100):
    try:
        urllib.request.urlopen('http://127.0.0.1:%s/' % port, timeout=2)
        print('healthy on port', port)
        raise SystemExit(0)
    except OSError:
        time.sleep(0.1)
raise SystemExit('no answer on port ' + port)
PY
";

fn artifact(dir: &Path, version: &str) -> (PathBuf, String) {
    let path = dir.join(format!("{version}.tar.gz"));
    let file = std::fs::File::create(&path).unwrap();
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(file, flate2::Compression::fast()));
    for (name, body, mode) in [
        ("rollwave-hooks.yaml", HOOKS, 0o644),
        ("start.sh", START, 0o755),
        ("stop.sh", STOP, 0o755),
        ("validate.sh", VALIDATE, 0o755),
        ("index.html", "hello\n", 0o644),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(mode);
        header.set_cksum();
        tar.append_data(&mut header, name, body.as_bytes()).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap().flush().unwrap();
    use sha2::Digest;
    let sha = hex::encode(sha2::Sha256::digest(std::fs::read(&path).unwrap()));
    (path, sha)
}

fn pids_with(needle: &str) -> Vec<String> {
    let out = Command::new("pgrep").args(["-f", needle]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

#[test]
fn six_agents_roll_out_v2_in_two_waves_and_a_failing_zone_is_rolled_back() {
    let _alone = one_world_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::builder().driver(Some("agent")).start();
    let base = server.base.clone();
    let client = server.client();
    client.apply("web.yaml", MANIFEST).unwrap();

    // Each host's own port, where its start hook serves.
    let fleet_dir = dir.path().join("fleet");
    for zone in ["a1", "a2", "a3", "b1", "b2", "b3"] {
        let host_dir = fleet_dir.join(format!("{zone}-1"));
        std::fs::create_dir_all(&host_dir).unwrap();
        std::fs::write(host_dir.join("port"), free_port().to_string()).unwrap();
    }
    let fleet = |region: &str, zones: &str| {
        Proc(
            Command::new(BIN)
                // With --service, each agent gets a token of its own host, made with ADMIN.
                .args([
                    "fleet",
                    "up",
                    "--server",
                    &base,
                    "--service",
                    "web",
                    "--environment",
                    "prod",
                    "--region",
                    region,
                ])
                .args(["--zones", zones, "--hosts-per-zone", "1", "--workdir", fleet_dir.to_str().unwrap()])
                .env("ROLLWAVE_TOKEN", Server::ADMIN)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let fleet_a = fleet("ra", "a1,a2,a3");
    let fleet_b = fleet("rb", "b1,b2,b3");

    let (path, sha256) = artifact(dir.path(), "v2");
    let release = CreateRelease {
        version: "v2".into(),
        artifact: Some(format!("file://{}", path.display())),
        sha256: Some(sha256),
        flags: None,
    };
    client.create_release("web", &release).unwrap();
    wait_for("v2 to halt in zone b2", Duration::from_secs(180), || {
        client.release("web", "v2").is_ok_and(|r| r.release.outcome == rollwave_api::Outcome::Halted)
    });
    wait_for("the rollback of b2 to finish", Duration::from_secs(60), || {
        client.release("web", "v2").unwrap().events.iter().any(|e| e.kind == rollwave_api::EventKind::RollbackCompleted)
    });

    let detail = client.release("web", "v2").unwrap();
    assert!(detail.release.reached.contains(&"prod/wave-1".to_owned()), "{:?}", detail.release);
    assert_eq!(detail.release.rolled_back_scopes, ["prod/rb/b2"]);
    let versions: Vec<(String, Vec<(String, u64)>)> =
        detail.scopes.iter().map(|s| (s.scope.clone(), s.versions.clone())).collect();
    assert_eq!(
        versions,
        [
            ("prod/ra".to_owned(), vec![("v2".to_owned(), 3)]),
            ("prod/rb".to_owned(), vec![("baseline".to_owned(), 2), ("v2".to_owned(), 1)]),
        ],
        "ra runs v2; in rb only b1 (the one-box zone) does"
    );
    // The timeline shows the hooks: each start, and the validate that failed in b2.
    let hooks: Vec<&EventView> = detail.events.iter().filter(|e| e.kind == rollwave_api::EventKind::Hook).collect();
    let failed_validate = hooks
        .iter()
        .find(|e| {
            e.scope == "prod/rb/b2/b2-1" && e.reason.as_deref().is_some_and(|r| r.starts_with("validate: exit 1"))
        })
        .expect("b2's failed validate is in the timeline");
    assert_eq!(failed_validate.output.as_deref(), Some("health check failed in b2\n"));
    let starts = hooks.iter().filter(|e| e.reason.as_deref().is_some_and(|r| r.starts_with("start: ok"))).count();
    assert_eq!(starts, 5, "a1..a3, b1 and b2 started v2");
    let failed = detail.events.iter().find(|e| e.kind == rollwave_api::EventKind::HostFailed).unwrap();
    assert!(failed.reason.as_deref().unwrap().contains("validate"), "{failed:?}");
    // The rolled-back host stopped v2's service and points at no release.
    let b2 = fleet_dir.join("b2-1");
    assert!(!b2.join("current").exists(), "b2-1 runs nothing rollwave installed");
    assert!(!b2.join("http.pid").exists(), "v2's stop hook ran on b2-1");
    assert!(fleet_dir.join("a1-1/current").read_link().unwrap().ends_with("releases/v2"));

    // Each agent spoke with a token of its own host alone, never the admin's.
    let mut hosts: Vec<Option<String>> =
        client.tokens().unwrap().into_iter().filter(|t| t.role == "agent").map(|t| t.host).collect();
    hosts.sort();
    let expected: Vec<Option<String>> =
        ["a1", "a2", "a3", "b1", "b2", "b3"].iter().map(|z| Some(format!("web/prod/{z}-1"))).collect();
    assert_eq!(hosts, expected);
    wait_for("every agent token to show its use", Duration::from_secs(20), || {
        client.tokens().unwrap().iter().filter(|t| t.role == "agent").all(|t| t.last_used_ms.is_some())
    });

    // Stopping the fleets stops every agent (and nothing is left behind).
    for f in [fleet_a, fleet_b] {
        let _ = Command::new("kill").args(["-TERM", &f.0.id().to_string()]).status();
        let mut f = f;
        let _ = f.0.wait();
    }
    wait_for("every agent to exit", Duration::from_secs(20), || pids_with(fleet_dir.to_str().unwrap()).is_empty());
    // The HTTP services the start hooks left running are the hosts' business; end them.
    for zone in ["a1", "a2", "a3", "b1", "b3"] {
        if let Ok(pid) = std::fs::read_to_string(fleet_dir.join(format!("{zone}-1/http.pid"))) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}
