//! The agent against real artifacts, real processes and a real server in this process.

mod support;

use rollwave_agent::state::{Doing, InProgress, STATE_FILE};
use rollwave_agent::{Deployment, Fleet, FleetArgs, FleetConfig, Outcome, State, Step, Stopped};
use rollwave_api::{CreateRelease, CreateToken, Desired, MetricSeries, RegisterHost};
use rollwave_server::Driver;
use std::path::Path;
use std::time::Duration;
use support::*;

fn steps(outcome: &Outcome) -> Vec<Step> {
    outcome.hooks.iter().map(|h| h.step).collect()
}

const ALL_HOOKS: &str = "\
stop:           { run: ./hook.sh stop, timeout: 30s }
before_install: { run: ./hook.sh before_install }
after_install:  { run: ./hook.sh after_install }
start:          { run: ./hook.sh start }
validate:       { run: ./hook.sh validate, timeout: 30s }
";

/// A script that logs which hook ran and what it saw, to `log` and to its output.
fn logging_hook(log: &Path) -> String {
    format!(
        "#!/bin/sh\necho \"$1 version=$ROLLWAVE_VERSION previous=$ROLLWAVE_PREVIOUS_VERSION host=$ROLLWAVE_HOST_ID \
         region=$ROLLWAVE_REGION zone=$ROLLWAVE_ZONE dir=$ROLLWAVE_RELEASE_DIR pwd=$(pwd)\" | tee -a {}\n",
        log.display()
    )
}

#[test]
fn a_release_installs_with_every_hook_in_order_and_sees_its_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("hooks.log");
    let script = logging_hook(&log);
    let v1 = artifact(tmp.path(), "v1", ALL_HOOKS, &[("hook.sh", &script)]);
    let v2 = artifact(tmp.path(), "v2", ALL_HOOKS, &[("hook.sh", &script)]);
    let workdir = tmp.path().join("work");
    let mut installer = installer(&workdir);

    let first = installer.deploy(&deployment(1, "v1", &v1));
    assert!(first.ok, "{first:?}");
    assert_eq!(
        steps(&first),
        [Step::BeforeInstall, Step::AfterInstall, Step::Start, Step::Validate],
        "no stop at first"
    );
    assert_eq!(current_link(&workdir), Some("releases/v1".into()));
    let second = installer.deploy(&deployment(2, "v2", &v2));
    assert!(second.ok, "{second:?}");
    assert_eq!(steps(&second), Step::ALL, "the previous release's stop first");
    assert_eq!(current_link(&workdir), Some("releases/v2".into()));
    assert_eq!(installer.current(), Some("v2"));

    let dir1 = installer.release_dir("v1").display().to_string();
    let dir2 = installer.release_dir("v2").display().to_string();
    let line = |hook: &str, version: &str, previous: &str, dir: &str| {
        format!("{hook} version={version} previous={previous} host=h-1 region=r1 zone=z1 dir={dir} pwd={dir}")
    };
    let expected = [
        line("before_install", "v1", "", &dir1),
        line("after_install", "v1", "", &dir1),
        line("start", "v1", "", &dir1),
        line("validate", "v1", "", &dir1),
        line("stop", "v2", "v1", &dir1),
        line("before_install", "v2", "v1", &dir2),
        line("after_install", "v2", "v1", &dir2),
        line("start", "v2", "v1", &dir2),
        line("validate", "v2", "v1", &dir2),
    ];
    let logged = std::fs::read_to_string(&log).unwrap();
    assert_eq!(logged.lines().collect::<Vec<_>>(), expected);
    // Each hook's own output is reported with it.
    assert_eq!(second.hooks[0].output, format!("{}\n", expected[4]));
    assert!(second.hooks.iter().all(|h| h.ok && h.exit_code == Some(0) && !h.timed_out));
    // The outcome waits in the state file until the server acknowledges it.
    let state = State::load(&workdir.join(STATE_FILE)).unwrap();
    assert_eq!(state.unreported.as_ref(), Some(&second));
    assert_eq!((state.current.as_deref(), state.active.as_deref(), state.in_progress), (Some("v2"), Some("v2"), None));
}

#[test]
fn validate_http_passes_once_the_server_the_start_hook_left_running_answers() {
    let tmp = tempfile::tempdir().unwrap();
    // The server keeps the hook's output pipe open: the hook must still end.
    let start = |port: u16| {
        format!(
            "#!/bin/sh\npython3 -m http.server {port} --bind 127.0.0.1 &\necho $! > \"$ROLLWAVE_RELEASE_DIR/server.pid\"\n\
             echo started on {port}\n"
        )
    };
    let stop = "#!/bin/sh\nkill \"$(cat \"$ROLLWAVE_RELEASE_DIR/server.pid\")\"\necho stopped\n";
    let hooks = |port: u16| {
        format!(
            "start: {{ run: ./start.sh, timeout: 30s }}\nstop: {{ run: ./stop.sh, timeout: 30s }}\n\
             validate: {{ http: \"http://127.0.0.1:{port}/\", expect_status: 200, within: 30s }}\n"
        )
    };
    let (port1, port2) = (free_port(), free_port());
    let v1 = artifact(tmp.path(), "v1", &hooks(port1), &[("start.sh", &start(port1)), ("stop.sh", stop)]);
    let v2 = artifact(tmp.path(), "v2", &hooks(port2), &[("start.sh", &start(port2)), ("stop.sh", stop)]);
    let workdir = tmp.path().join("work");
    let mut installer = installer(&workdir);

    let first = installer.deploy(&deployment(1, "v1", &v1));
    assert!(first.ok, "{first:?}");
    assert!(first.hooks[0].output.contains(&format!("started on {port1}\n")), "{:?}", first.hooks[0]);
    let validate = &first.hooks[1];
    assert_eq!(validate.step, Step::Validate);
    assert!(validate.ok && validate.output.contains("answered 200"), "{validate:?}");
    let server1 = read_pid(&installer.release_dir("v1").join("server.pid"));
    assert!(!process_gone(server1), "the server the start hook launched keeps running");

    let second = installer.deploy(&deployment(2, "v2", &v2));
    assert!(second.ok, "{second:?}");
    assert_eq!(steps(&second), [Step::Stop, Step::Start, Step::Validate]);
    wait_until("v1's stop hook ended its server", || process_gone(server1));
    let server2 = read_pid(&installer.release_dir("v2").join("server.pid"));
    kill_and_wait(server2);
}

fn kill_and_wait(pid: u32) {
    let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
    wait_until("the test's server is gone", || process_gone(pid));
}

#[test]
fn a_checksum_mismatch_fails_before_anything_is_unpacked_or_run() {
    let tmp = tempfile::tempdir().unwrap();
    let marker = tmp.path().join("ran");
    let v1 = artifact(
        tmp.path(),
        "v1",
        "before_install: { run: ./touch.sh }\n",
        &[("touch.sh", &format!("#!/bin/sh\ntouch {}\n", marker.display()))],
    );
    let workdir = tmp.path().join("work");
    let mut installer = installer(&workdir);
    let wrong = "0".repeat(64);
    let outcome = installer.deploy(&Deployment { sha256: Some(wrong.clone()), ..deployment(1, "v1", &v1) });
    assert!(!outcome.ok);
    let reason = outcome.reason.unwrap();
    assert!(reason.contains(&v1.sha256) && reason.contains(&wrong), "{reason}");
    assert!(outcome.hooks.is_empty());
    assert!(!marker.exists());
    assert!(releases(&workdir).is_empty());
    assert_eq!(current_link(&workdir), None);
}

#[test]
fn corrupt_and_truncated_archives_fail_clearly_and_leave_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let big: String = (0..20_000).map(|i| format!("line {i} of some padding to make the archive long\n")).collect();
    let whole = tmp.path().join("whole.tar.gz");
    tar_gz(
        &whole,
        &[
            Entry::File { name: "rollwave-hooks.yaml", data: b"", mode: 0o644 },
            Entry::File { name: "data.txt", data: big.as_bytes(), mode: 0o644 },
        ],
    );
    let bytes = std::fs::read(&whole).unwrap();
    let truncated = tmp.path().join("truncated.tar.gz");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let garbage = tmp.path().join("garbage.tar.gz");
    std::fs::write(&garbage, b"this is not a gzip stream at all").unwrap();

    let workdir = tmp.path().join("work");
    let mut installer = installer(&workdir);
    for (command, path) in [(1, &truncated), (2, &garbage)] {
        let built = Built { path: path.clone(), sha256: sha256_of(path) };
        let outcome = installer.deploy(&deployment(command, "v1", &built));
        assert!(!outcome.ok);
        let reason = outcome.reason.unwrap();
        assert!(reason.contains("is not a readable .tar.gz"), "{reason}");
        assert!(releases(&workdir).is_empty(), "no release, not even a half-unpacked one");
    }
    let built = Built { path: whole.clone(), sha256: sha256_of(&whole) };
    assert!(installer.deploy(&deployment(3, "v1", &built)).ok, "the whole archive installs");
}

#[test]
fn entries_that_escape_the_release_directory_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let workdir = tmp.path().join("work");
    let mut installer = installer(&workdir);
    let absolute = format!("{}/absolute.txt", tmp.path().display());
    let cases: Vec<(&str, Entry<'_>, &str)> = vec![
        (
            "dotdot",
            Entry::Raw { name: b"../escaped.txt", kind: tar::EntryType::Regular, link: b"", data: b"x" },
            "\"../escaped.txt\" climbs out with \"..\"",
        ),
        (
            "absolute",
            Entry::Raw { name: absolute.as_bytes(), kind: tar::EntryType::Regular, link: b"", data: b"x" },
            "is an absolute path",
        ),
        ("symlink-up", Entry::Symlink { name: "lib/up", target: "../../outside" }, "links to \"../../outside\""),
        ("symlink-abs", Entry::Symlink { name: "etc", target: "/etc" }, "links to \"/etc\""),
        (
            "hardlink",
            Entry::Raw { name: b"passwd", kind: tar::EntryType::Link, link: b"/etc/passwd", data: b"" },
            "links to \"/etc/passwd\"",
        ),
    ];
    for (i, (name, bad, expected)) in cases.into_iter().enumerate() {
        let built = tar_gz(&tmp.path().join(format!("{name}.tar.gz")), &[hooks_entry(), bad]);
        let outcome = installer.deploy(&deployment(i as u64 + 1, "v1", &built));
        assert!(!outcome.ok, "{name}");
        let reason = outcome.reason.unwrap();
        assert!(reason.contains(expected) && reason.contains("stay inside the release directory"), "{name}: {reason}");
        assert!(releases(&workdir).is_empty(), "{name}");
    }
    assert!(!tmp.path().join("escaped.txt").exists() && !workdir.join("releases/escaped.txt").exists());
    assert!(!tmp.path().join("absolute.txt").exists());
    // A link that stays inside is fine.
    let inside = tar_gz(
        &tmp.path().join("inside.tar.gz"),
        &[hooks_entry(), Entry::Symlink { name: "bin/current-config", target: "../config/app.yaml" }],
    );
    let outcome = installer.deploy(&deployment(9, "v1", &inside));
    assert!(outcome.ok, "{outcome:?}");
}

fn hooks_entry() -> Entry<'static> {
    Entry::File { name: "rollwave-hooks.yaml", data: b"", mode: 0o644 }
}

#[test]
fn a_missing_or_invalid_hooks_file_fails_with_its_place() {
    let tmp = tempfile::tempdir().unwrap();
    let workdir = tmp.path().join("work");
    let mut installer = installer(&workdir);
    let none = tar_gz(&tmp.path().join("none.tar.gz"), &[Entry::File { name: "app", data: b"x", mode: 0o755 }]);
    let outcome = installer.deploy(&deployment(1, "v1", &none));
    assert!(!outcome.ok);
    assert!(outcome.reason.as_deref().unwrap().contains("has no rollwave-hooks.yaml at its root"), "{outcome:?}");

    let invalid = artifact(tmp.path(), "invalid", "start: { run: ./x, timout: 5s }\n", &[]);
    let outcome = installer.deploy(&deployment(2, "v1", &invalid));
    let reason = outcome.reason.unwrap();
    assert!(reason.contains("rollwave-hooks.yaml:1:20: unknown key \"timout\"; did you mean \"timeout\"?"), "{reason}");
    assert!(releases(&workdir).is_empty());
}

#[test]
fn a_hanging_hook_is_killed_at_its_timeout_with_its_whole_process_group() {
    let tmp = tempfile::tempdir().unwrap();
    let v1 = artifact(
        tmp.path(),
        "v1",
        "start: { run: ./hang.sh, timeout: 1s }\n",
        &[("hang.sh", "#!/bin/sh\nsleep 1000 &\necho $! > child.pid\necho waiting forever\nwait\n")],
    );
    let workdir = tmp.path().join("work");
    let mut installer = installer(&workdir);
    let outcome = installer.deploy(&deployment(1, "v1", &v1));
    assert!(!outcome.ok);
    assert_eq!(outcome.reason.as_deref(), Some("hook start failed: killed at its timeout of 1s"));
    let start = &outcome.hooks[0];
    assert!(start.timed_out && !start.ok && start.exit_code.is_none(), "{start:?}");
    assert_eq!(start.output, "waiting forever\n");
    let child = read_pid(&installer.release_dir("v1").join("child.pid"));
    wait_until("the hook's child is killed with its group", || process_gone(child));
    assert_eq!(current_link(&workdir), None);
}

#[test]
fn a_hook_printing_fifty_megabytes_keeps_only_the_last_64_kib() {
    let tmp = tempfile::tempdir().unwrap();
    let v1 = artifact(
        tmp.path(),
        "v1",
        "start: { run: ./loud.sh, timeout: 5m }\n",
        &[("loud.sh", "#!/bin/sh\nhead -c 52428800 /dev/zero | tr '\\0' x\necho started >&2\nprintf END\n")],
    );
    let workdir = tmp.path().join("work");
    let mut installer = installer(&workdir);
    let outcome = installer.deploy(&deployment(1, "v1", &v1));
    assert!(outcome.ok, "{:?}", outcome.reason);
    let output = &outcome.hooks[0].output;
    assert_eq!(output.len(), 64 * 1024);
    assert!(output.ends_with("xxxstarted\nEND"), "stdout and stderr together, in order");
    assert!(output[..output.len() - 11].bytes().all(|b| b == b'x'));
}

#[test]
fn current_switches_only_when_every_hook_passed_and_a_rollback_needs_no_download() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("hooks.log");
    let script = logging_hook(&log);
    let v1 = artifact(tmp.path(), "v1", ALL_HOOKS, &[("hook.sh", &script)]);
    let failing = ALL_HOOKS.replace("./hook.sh validate", "./hook.sh validate; exit 3");
    let v2 = artifact(tmp.path(), "v2", &failing, &[("hook.sh", &script)]);
    let workdir = tmp.path().join("work");
    let mut installer = installer(&workdir);
    assert!(installer.deploy(&deployment(1, "v1", &v1)).ok);

    let bad = installer.deploy(&deployment(2, "v2", &v2));
    assert!(!bad.ok);
    assert_eq!(bad.reason.as_deref(), Some("hook validate failed: exited with status 3"));
    assert_eq!(steps(&bad), Step::ALL);
    assert_eq!(bad.hooks[4].exit_code, Some(3));
    assert_eq!(current_link(&workdir), Some("releases/v1".into()), "current still points to the release that passed");
    assert!(!workdir.join(".current.tmp").exists());
    assert_eq!(installer.state().active.as_deref(), Some("v2"), "v2 was started, so it is what runs");

    // The rollback is a deployment of v1, from disk: its artifact is gone.
    std::fs::remove_file(&v1.path).unwrap();
    std::fs::write(&log, "").unwrap();
    let back = installer.deploy(&deployment(3, "v1", &v1));
    assert!(back.ok, "{back:?}");
    assert_eq!(steps(&back), Step::ALL, "v2's stop, then v1's hooks");
    let logged = std::fs::read_to_string(&log).unwrap();
    let first_words: Vec<&str> = logged.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(first_words, ["stop", "before_install", "after_install", "start", "validate"]);
    assert!(logged.lines().next().unwrap().contains(&format!("dir={}", installer.release_dir("v2").display())));
    assert_eq!(current_link(&workdir), Some("releases/v1".into()));

    // Asked again for what it runs, it succeeds without running anything.
    let again = installer.deploy(&deployment(4, "v1", &v1));
    assert!(again.ok && again.hooks.is_empty(), "{again:?}");
}

#[test]
fn only_the_last_three_releases_are_kept_and_never_current() {
    let tmp = tempfile::tempdir().unwrap();
    let workdir = tmp.path().join("work");
    let mut installer = installer(&workdir);
    let good = |name: &str| artifact(tmp.path(), name, "", &[]);
    for (command, version) in (1..).zip(["v1", "v2", "v3", "v4", "v5"]) {
        assert!(installer.deploy(&deployment(command, version, &good(version))).ok);
    }
    assert_eq!(releases(&workdir), ["v3", "v4", "v5"]);

    // Releases that fail do not push out the one that runs.
    let failing = |name: &str| artifact(tmp.path(), name, "validate: { run: \"false\" }\n", &[]);
    for (command, version) in (10..).zip(["v6", "v7", "v8"]) {
        assert!(!installer.deploy(&deployment(command, version, &failing(version))).ok);
    }
    assert_eq!(releases(&workdir), ["v5", "v6", "v7", "v8"]);
    assert_eq!(current_link(&workdir), Some("releases/v5".into()));
}

#[test]
fn an_interrupted_deployment_is_reported_as_failed_naming_its_hook() {
    let tmp = tempfile::tempdir().unwrap();
    let v1 = artifact(tmp.path(), "v1", "start: { run: \"true\" }\n", &[]);
    let workdir = tmp.path().join("work");
    let before = {
        let mut installer = installer(&workdir);
        assert!(installer.deploy(&deployment(1, "v1", &v1)).ok);
        installer.state().clone()
    };
    // What the agent had written when it was killed during v2's start hook, with an
    // unpacking of another release cut short too.
    let interrupted = State {
        in_progress: Some(InProgress {
            command: 2,
            version: "v2".into(),
            previous: Some("v1".into()),
            doing: Doing::Hook(Step::Start),
            hooks: Vec::new(),
        }),
        ..before
    };
    interrupted.save(&workdir.join(STATE_FILE)).unwrap();
    std::fs::create_dir_all(workdir.join("releases/.tmp-v3-3/bin")).unwrap();

    let installer = installer(&workdir);
    let outcome = installer.unreported().unwrap();
    assert_eq!((outcome.command, outcome.ok), (2, false));
    assert_eq!(
        outcome.reason.as_deref(),
        Some(
            "interrupted: the agent stopped (restarted or killed) during the start hook of v2; current still points to v1"
        )
    );
    assert_eq!(steps(outcome), [Step::Start]);
    assert_eq!(installer.last_command(), 2, "it is not run again");
    assert_eq!(installer.current(), Some("v1"));
    assert_eq!(releases(&workdir), ["v1"], "the half-unpacked release is removed");
    assert_eq!(State::load(&workdir.join(STATE_FILE)).unwrap().in_progress, None);
}

/// Run as a child process by [`a_kill_9_mid_hook_is_reported_truthfully_after_a_restart`]
/// (which passes what to deploy in its environment); does nothing otherwise.
#[test]
fn kill_9_child() {
    let (Ok(workdir), Ok(url), Ok(sha256)) = (
        std::env::var("ROLLWAVE_TEST_KILL9_WORKDIR"),
        std::env::var("ROLLWAVE_TEST_KILL9_URL"),
        std::env::var("ROLLWAVE_TEST_KILL9_SHA256"),
    ) else {
        return;
    };
    let deployment =
        Deployment { command: 2, version: "v2".into(), artifact: Some(url), sha256: Some(sha256), signatures: None };
    installer(Path::new(&workdir)).deploy(&deployment);
}

#[test]
fn a_kill_9_mid_hook_is_reported_truthfully_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let hook_pid = tmp.path().join("hook.pid");
    let v1 = artifact(tmp.path(), "v1", "start: { run: \"true\" }\n", &[]);
    let v2 = artifact(
        tmp.path(),
        "v2",
        "before_install: { run: \"echo checked\" }\nstart: { run: ./start.sh, timeout: 10m }\n",
        &[(
            "start.sh",
            &format!("#!/bin/sh\necho $$ > {0}.tmp && mv {0}.tmp {0}\nexec sleep 1000\n", hook_pid.display()),
        )],
    );
    let workdir = tmp.path().join("work");
    assert!(installer(&workdir).deploy(&deployment(1, "v1", &v1)).ok);

    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["kill_9_child", "--exact", "--nocapture", "--test-threads=1"])
        .env("ROLLWAVE_TEST_KILL9_WORKDIR", &workdir)
        .env("ROLLWAVE_TEST_KILL9_URL", v2.url())
        .env("ROLLWAVE_TEST_KILL9_SHA256", &v2.sha256)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the agent runs v2's start hook", || hook_pid.exists());
    child.kill().unwrap();
    child.wait().unwrap();
    // The hook was in a process group of its own; the test cleans it up.
    kill_and_wait(read_pid(&hook_pid));

    let installer = installer(&workdir);
    let outcome = installer.unreported().unwrap();
    assert_eq!((outcome.command, outcome.ok), (2, false));
    assert_eq!(
        outcome.reason.as_deref(),
        Some(
            "interrupted: the agent stopped (restarted or killed) during the start hook of v2; current still points to v1"
        )
    );
    assert_eq!(steps(outcome), [Step::BeforeInstall, Step::Start], "what ran before, and the hook it died in");
    assert_eq!(outcome.hooks[0].output, "checked\n");
    assert_eq!(current_link(&workdir), Some("releases/v1".into()));
    assert_eq!(installer.state().active.as_deref(), Some("v2"), "v2's start hook may have left it running");
}

const MANIFEST: &str = "\
service: shop
environments:
  prod: { regions: { r1: { zones: { z1: HOSTS } } } }
strategy:
  one_box: false
  rolling: { batch: 100%, zone_bake: 0s }
stages:
  - { name: prod, environment: prod, bake: 0s }
";

#[test]
fn agents_install_what_the_server_asks_and_the_server_sees_it() {
    let server = server();
    let admin = server.admin();
    admin.apply("shop.yaml", &MANIFEST.replace("HOSTS", "2")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let v1 = artifact(
        tmp.path(),
        "v1",
        "start: { run: ./start.sh }\nvalidate: { run: \"test -f started\" }\n",
        &[("start.sh", "#!/bin/sh\necho starting $ROLLWAVE_HOST_ID\ntouch started\n")],
    );
    let agents: Vec<RunningAgent> = (1..=2)
        .map(|n| {
            let id = format!("z1-{n}");
            RunningAgent::start(agent_config(&server, &id, "z1", &tmp.path().join(&id)))
        })
        .collect();
    let release =
        CreateRelease { version: "v1".into(), artifact: Some(v1.url()), sha256: Some(v1.sha256.clone()), flags: None };
    admin.create_release("shop", &release).unwrap();
    wait_until("both hosts run v1", || {
        admin.status("shop").unwrap().environments[0].versions.contains(&("v1".to_owned(), 2))
    });
    wait_until("the release completes", || {
        admin.release("shop", "v1").unwrap().release.outcome == rollwave_api::Outcome::Completed
    });
    let events = admin.release("shop", "v1").unwrap().events;
    let hooks: Vec<&str> =
        events.iter().filter(|e| e.kind == rollwave_api::EventKind::Hook).filter_map(|e| e.reason.as_deref()).collect();
    assert_eq!(hooks.len(), 4, "{hooks:?}");
    assert!(hooks.iter().filter(|r| r.starts_with("start: ok")).count() == 2, "{hooks:?}");
    assert!(
        events
            .iter()
            .any(|e| e.kind == rollwave_api::EventKind::Hook && e.output.as_deref() == Some("starting z1-1\n")),
        "{events:?}"
    );
    for n in 1..=2 {
        let workdir = tmp.path().join(format!("z1-{n}"));
        assert_eq!(current_link(&workdir), Some("releases/v1".into()));
        wait_until("the report is acknowledged", || {
            State::load(&workdir.join(STATE_FILE)).unwrap().unreported.is_none()
        });
    }
    drop(agents);
}

/// How many polls for its desired version the server has answered.
fn polls_answered(server: &TestServer) -> u64 {
    let labels =
        [("method", "GET"), ("route", "/v1/services/{service}/hosts/{environment}/{host}/desired"), ("status", "200")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .to_vec();
    server.node.metrics.request_seconds.get_or_create(&labels).count()
}

#[test]
fn a_hook_longer_than_the_host_timeout_does_not_make_the_host_look_lost() {
    const HOST_TIMEOUT: Duration = Duration::from_secs(30);
    let server = TestServer::builder().driver(Driver::Agent).host_timeout(HOST_TIMEOUT).start();
    let admin = server.admin();
    admin.apply("shop.yaml", &MANIFEST.replace("HOSTS", "1")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // The start hook runs until the test writes to its pipe.
    let (started, go) = (tmp.path().join("started"), tmp.path().join("go"));
    assert!(std::process::Command::new("mkfifo").arg(&go).status().unwrap().success());
    let script = format!("#!/bin/sh\ntouch {}\ncat {}\n", started.display(), go.display());
    let v1 = artifact(tmp.path(), "v1", "start: { run: ./start.sh }\n", &[("start.sh", &script)]);
    let mut config = agent_config(&server, "z1-1", "z1", &tmp.path().join("z1-1"));
    config.poll_wait = Duration::from_millis(50);
    let _agent = RunningAgent::start(config);
    let release =
        CreateRelease { version: "v1".into(), artifact: Some(v1.url()), sha256: Some(v1.sha256.clone()), flags: None };
    admin.create_release("shop", &release).unwrap();
    wait_until("the start hook runs", || started.exists());

    // While it runs, the server's clock moves on by two and a half host timeouts, half of
    // one at a time, each time once the agent has shown a sign of life at the time reached:
    // two polls answered after the clock moved, the second begun after the first ended.
    for _ in 0..5 {
        server.advance(HOST_TIMEOUT / 2);
        let before = polls_answered(&server);
        wait_until("the agent shows a sign of life", || polls_answered(&server) >= before + 2);
    }
    std::fs::write(&go, "go\n").unwrap();
    wait_until("the release ends", || {
        admin.release("shop", "v1").unwrap().release.outcome != rollwave_api::Outcome::InProgress
    });
    let detail = admin.release("shop", "v1").unwrap();
    assert_eq!(detail.release.outcome, rollwave_api::Outcome::Completed, "{:?}", detail.events);
    assert!(detail.events.iter().all(|e| e.kind != rollwave_api::EventKind::HostFailed), "{:?}", detail.events);
    let inputs = server.block_on(server.node.store.read_log(0, 10_000, Some(&["input"]))).unwrap();
    let lost = inputs.iter().filter(|r| {
        matches!(serde_json::from_str(&r.body).unwrap(), rollwave_server::state::LogInput::HostLost { .. })
    });
    assert_eq!(lost.count(), 0, "the host was never taken for lost");
}

#[test]
fn after_a_restart_mid_hook_the_agent_reports_the_command_as_failed() {
    let server = server();
    let admin = server.admin();
    admin.apply("shop.yaml", &MANIFEST.replace("HOSTS", "1")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let v2 = artifact(tmp.path(), "v2", "", &[]);
    // The host registered, was asked to deploy v2, and was killed in its start hook.
    let register = RegisterHost {
        service: None,
        environment: "prod".into(),
        host: "z1-1".into(),
        region: Some("r1".into()),
        zone: Some("z1".into()),
        address: None,
    };
    let _: rollwave_api::Registered = admin.post("/v1/hosts/register", &register).unwrap();
    let release =
        CreateRelease { version: "v2".into(), artifact: Some(v2.url()), sha256: Some(v2.sha256.clone()), flags: None };
    admin.create_release("shop", &release).unwrap();
    let desired: Desired = admin.get("/v1/services/shop/hosts/prod/z1-1/desired?after=0&wait=30").unwrap();
    assert_eq!(desired.version, "v2");
    let workdir = tmp.path().join("z1-1");
    std::fs::create_dir_all(&workdir).unwrap();
    let killed = State {
        in_progress: Some(InProgress {
            command: desired.command,
            version: "v2".into(),
            previous: None,
            doing: Doing::Hook(Step::Start),
            hooks: Vec::new(),
        }),
        ..State::default()
    };
    killed.save(&workdir.join(STATE_FILE)).unwrap();

    let _agent = RunningAgent::start(agent_config(&server, "z1-1", "z1", &workdir));
    wait_until("the server records the failure", || {
        admin.release("shop", "v2").unwrap().events.iter().any(|e| e.kind == rollwave_api::EventKind::HostFailed)
    });
    let events = admin.release("shop", "v2").unwrap().events;
    let failed = events.iter().find(|e| e.kind == rollwave_api::EventKind::HostFailed).unwrap();
    assert_eq!(
        failed.reason.as_deref(),
        Some(
            "interrupted: the agent stopped (restarted or killed) during the start hook of v2; current points to no release"
        )
    );
    assert!(events.iter().any(|e| e.kind == rollwave_api::EventKind::Hook
        && e.reason.as_deref().is_some_and(|r| r.starts_with("start: failed"))));
    assert_eq!(current_link(&workdir), None, "v2 was never switched to");
}

#[test]
fn a_fleet_starts_its_agents_and_stops_every_one_of_them() {
    let tmp = tempfile::tempdir().unwrap();
    let binary = fake_rollwave(tmp.path());
    let workdir = tmp.path().join("fleet");
    let config = FleetConfig {
        binary,
        server: "http://127.0.0.1:9".into(),
        token: Some("rw_token".into()),
        host_tokens: Default::default(),
        service: Some("shop".into()),
        environment: "prod".into(),
        region: "r1".into(),
        zones: vec!["a".into(), "b".into()],
        hosts_per_zone: 2,
        workdir: workdir.clone(),
    };
    let fleet = Fleet::start(&config).unwrap();
    let pids = fleet.pids();
    let ids: Vec<&str> = pids.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["a-1", "a-2", "b-1", "b-2"]);
    for id in &ids {
        wait_until("the agent started", || workdir.join(id).join("args").exists());
    }
    let args = std::fs::read_to_string(workdir.join("b-1/args")).unwrap();
    assert_eq!(
        args.trim(),
        format!(
            "agent --server http://127.0.0.1:9 --host-id b-1 --environment prod --region r1 --zone b --workdir {} \
             --ofrep-listen 127.0.0.1:0 --service shop token=rw_token",
            workdir.join("b-1").display()
        )
    );
    let children: Vec<u32> = ids.iter().map(|id| read_pid(&workdir.join(id).join("child.pid"))).collect();

    let stopped = fleet.stop(Duration::from_secs(1));
    assert_eq!(stopped, Stopped { already_exited: 0, terminated: 3, killed: 1 });
    for (id, pid) in &pids {
        assert!(process_gone(*pid), "agent {id} ({pid}) is gone");
    }
    for pid in children {
        wait_until("what the agents started is gone too", || process_gone(pid));
    }
}

/// Run as a child process by [`fleet_up_stops_every_agent_on_sigterm`]; does nothing
/// otherwise.
#[test]
fn fleet_up_child() {
    let (Ok(binary), Ok(workdir)) =
        (std::env::var("ROLLWAVE_TEST_FLEET_BINARY"), std::env::var("ROLLWAVE_TEST_FLEET_WORKDIR"))
    else {
        return;
    };
    let args = FleetArgs {
        server: "http://127.0.0.1:9".into(),
        token: Some("rw_token".into()),
        environment: "prod".into(),
        region: "r1".into(),
        zones: vec!["a".into(), "c".into()],
        hosts_per_zone: 2,
        workdir: workdir.into(),
        service: None,
        binary: Some(binary.into()),
    };
    rollwave_agent::fleet_main(args).unwrap();
}

#[test]
fn fleet_up_stops_every_agent_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let binary = fake_rollwave(tmp.path());
    let workdir = tmp.path().join("fleet");
    let mut fleet = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["fleet_up_child", "--exact", "--nocapture", "--test-threads=1"])
        .env("ROLLWAVE_TEST_FLEET_BINARY", &binary)
        .env("ROLLWAVE_TEST_FLEET_WORKDIR", &workdir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ids = ["a-1", "a-2", "c-1", "c-2"];
    for id in ids {
        wait_until("the agent started", || workdir.join(id).join("args").exists());
    }
    let agents: Vec<u32> = ids.iter().map(|id| read_pid(&workdir.join(id).join("pid"))).collect();
    let children: Vec<u32> = ids.iter().map(|id| read_pid(&workdir.join(id).join("child.pid"))).collect();
    assert!(agents.iter().all(|pid| !process_gone(*pid)));

    let _ = std::process::Command::new("kill").args(["-TERM", &fleet.id().to_string()]).status();
    let mut output = String::new();
    std::io::Read::read_to_string(fleet.stdout.as_mut().unwrap(), &mut output).unwrap();
    assert!(fleet.wait().unwrap().success());
    for pid in agents.iter().chain(&children) {
        wait_until("every agent and what it started is gone", || process_gone(*pid));
    }
    // Each agent's output, prefixed with its host id.
    for id in ids {
        assert!(output.lines().any(|l| l.ends_with(&format!("{id}: hello from {id}"))), "{output}");
    }
}

#[test]
fn the_count_of_starts_survives_a_restart_of_the_agent() {
    let tmp = tempfile::tempdir().unwrap();
    let workdir = tmp.path().join("h-1");
    let mut first = installer(&workdir);
    assert_eq!(first.restarts(), 0);
    assert_eq!(first.count_start().unwrap(), 1);
    assert_eq!(first.restarts(), 0, "the first start is no restart");
    drop(first);
    for starts in 2..=4 {
        let mut again = installer(&workdir);
        assert_eq!(again.restarts(), starts - 2, "as the run before left it");
        assert_eq!(again.count_start().unwrap(), starts);
        assert_eq!(again.restarts(), starts - 1);
    }
    assert_eq!(State::load(&workdir.join(STATE_FILE)).unwrap().starts, 4);
    // A state file written before starts were counted reads as none.
    std::fs::write(workdir.join(STATE_FILE), "{\"last_command\": 3}").unwrap();
    let mut old = installer(&workdir);
    assert_eq!((old.last_command(), old.count_start().unwrap(), old.restarts()), (3, 1, 0));
}

/// Run as a child process by [`a_real_agent_process_pushes_its_hosts_gauges`]: the
/// agent's own `main`, configured by its environment; does nothing otherwise.
#[test]
fn agent_process_child() {
    if std::env::var_os("ROLLWAVE_TEST_AGENT_CHILD").is_none() {
        return;
    }
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: rollwave_agent::AgentArgs,
    }
    let cli = <Cli as clap::Parser>::parse_from(["agent"]);
    rollwave_agent::agent_main(cli.args).unwrap();
}

/// A child process, killed (SIGKILL) and reaped when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_real_agent_process_pushes_its_hosts_gauges() {
    let server = server();
    let admin = server.admin();
    admin.apply("shop.yaml", &MANIFEST.replace("HOSTS", "1")).unwrap();
    let host = Some("shop/prod/z1-1".to_owned());
    let token = admin
        .create_token(&CreateToken { role: "agent".into(), name: None, host, ..Default::default() })
        .unwrap()
        .token;
    let tmp = tempfile::tempdir().unwrap();
    let workdir = tmp.path().join("z1-1");
    let start = || {
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["agent_process_child", "--exact", "--nocapture", "--test-threads=1"])
            .env("ROLLWAVE_TEST_AGENT_CHILD", "1")
            .env("ROLLWAVE_SERVER", &server.base)
            .env("ROLLWAVE_TOKEN", &token)
            .env("ROLLWAVE_HOST_ID", "z1-1")
            .env("ROLLWAVE_ENVIRONMENT", "prod")
            .env("ROLLWAVE_REGION", "r1")
            .env("ROLLWAVE_ZONE", "z1")
            .env("ROLLWAVE_WORKDIR", &workdir)
            .env("ROLLWAVE_METRICS_EVERY", "300ms")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Killed(child)
    };
    let points = |metric: &str| -> Vec<(i64, f64)> {
        let path = format!("/v1/metrics?service=shop&metric={metric}&scope=prod/z1-1&since=60");
        admin.get::<MetricSeries>(&path).unwrap().points
    };
    let agent = start();
    wait_until("the agent's memory reading reaches the server", || !points("memory_percent").is_empty());
    wait_until("its CPU reading too", || !points("cpu_percent").is_empty());
    for metric in ["memory_percent", "cpu_percent"] {
        let values = points(metric);
        assert!(values.iter().all(|(_, v)| (0.0..=100.0).contains(v)), "{metric}: {values:?}");
    }
    assert!(points("memory_percent").iter().all(|(_, v)| *v > 0.0));
    assert_eq!(points("restarts").last().map(|p| p.1), Some(0.0), "a first start");

    // Killed and started again (as a supervisor would): the restart is counted.
    drop(agent);
    let _again = start();
    wait_until("the restart is counted", || points("restarts").last().map(|p| p.1) == Some(1.0));
}

/// The signed-artifact fixtures (see `fixtures/signed/make.sh`): `dir` names a copy.
fn signed_fixture(dir: &str) -> (String, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/signed").join(dir).join("app.tar.gz");
    let sha256 = sha256_of(&path);
    (format!("file://{}", path.display()), sha256)
}

fn fixture_key(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/signed/{name}.pub"));
    std::fs::read_to_string(path).unwrap().lines().nth(1).unwrap().to_owned()
}

#[test]
fn where_signatures_are_required_an_agent_installs_a_signed_artifact_and_refuses_others_saying_why() {
    let server = server();
    let admin = server.admin();
    let manifest = MANIFEST.replace("HOSTS", "1").replace("  prod: {", "  prod: { require_signatures: true,")
        + &format!("signing_keys:\n  ci: {}\n", fixture_key("ci"));
    admin.apply("shop.yaml", &manifest).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let workdir = tmp.path().join("z1-1");
    let _agent = RunningAgent::start(agent_config(&server, "z1-1", "z1", &workdir));
    let release = |version: &str, dir: &str| {
        let (artifact, sha256) = signed_fixture(dir);
        let release =
            CreateRelease { version: version.into(), artifact: Some(artifact), sha256: Some(sha256), flags: None };
        admin.create_release("shop", &release).unwrap();
    };
    let settled = |version: &str| {
        let mut detail = None;
        wait_until("the release settles", || {
            let d = admin.release("shop", version).unwrap();
            let done = d.release.outcome != rollwave_api::Outcome::InProgress;
            detail = Some(d);
            done
        });
        detail.unwrap()
    };
    release("v1", "");
    assert_eq!(settled("v1").release.outcome, rollwave_api::Outcome::Completed);
    assert_eq!(current_link(&workdir), Some("releases/v1".into()));

    for (version, dir, why) in [
        ("v2", "unsigned", "is not signed"),
        ("v3", "tampered", "changed after it was signed"),
        // Signed, but by a key the manifest does not name.
        ("v4", "other-key", "by none of the keys the manifest names (ci)"),
    ] {
        release(version, dir);
        let detail = settled(version);
        assert_ne!(detail.release.outcome, rollwave_api::Outcome::Completed, "{version}: {:?}", detail.events);
        let failed = detail
            .events
            .iter()
            .find(|e| e.kind == rollwave_api::EventKind::HostFailed)
            .unwrap_or_else(|| panic!("{version}: no host failure in {:?}", detail.events));
        let reason = failed.reason.as_deref().unwrap_or_default();
        assert!(reason.contains(why), "{version}: the timeline says why: {reason}");
        assert_eq!(current_link(&workdir), Some("releases/v1".into()), "{version} is not installed");
        assert!(!releases(&workdir).contains(&version.to_owned()), "{version} was not even unpacked");
        if detail.release.outcome == rollwave_api::Outcome::Halted {
            admin.action("shop", version, rollwave_api::OperatorAction::Rollback, None).unwrap();
            wait_until("the rollback ends", || {
                admin.release("shop", version).unwrap().release.outcome == rollwave_api::Outcome::RolledBack
            });
        }
    }
}

#[test]
fn a_ca_bundle_is_whom_artifact_downloads_and_the_server_client_trust() {
    use rollwave_api::tls::Roots;
    use rollwave_testkit::{HttpsServer, tls_fixture};
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("www");
    std::fs::create_dir(&served).unwrap();
    let v1 = artifact(&served, "v1", "", &[]);
    std::fs::write(served.join("answer.json"), r#"{"ok":true}"#).unwrap();
    let https = HttpsServer::start(&served);
    let url = format!("{}/v1.tar.gz", https.base);
    let download = tmp.path().join("v1.part");
    let fetch = |roots: &Roots| rollwave_agent::artifact::fetch(&url, &download, roots);

    // Neither the WebPKI roots nor another private CA vouch for the server.
    let other = Roots::from_pem_file(&tls_fixture("other-ca.pem")).unwrap();
    for roots in [Roots::default(), other.clone()] {
        let err = fetch(&roots).unwrap_err().to_string();
        assert!(err.contains(&url) && err.to_lowercase().contains("certificate"), "{err}");
    }
    let bundle = Roots::from_pem_file(&tls_fixture("ca.pem")).unwrap();
    let local = fetch(&bundle).unwrap();
    assert_eq!(local.sha256, v1.sha256);

    // The API client, as the agent builds it, trusts the same bundle.
    let client = rollwave_api::Client::new(&https.base, None);
    assert!(client.get::<serde_json::Value>("/answer.json").is_err(), "not without the bundle");
    let answer: serde_json::Value = client.trusting(&bundle).get("/answer.json").unwrap();
    assert_eq!(answer, serde_json::json!({ "ok": true }));

    // A bundle that could trust nothing is refused when read, naming the file.
    let err = Roots::from_pem_file(&tls_fixture("server.key")).unwrap_err();
    assert!(err.contains("server.key") && err.contains("holds no certificate"), "{err}");
    let err = Roots::from_pem_file(&tmp.path().join("missing.pem")).unwrap_err();
    assert!(err.contains("missing.pem"), "{err}");
}
