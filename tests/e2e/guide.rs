//! `docs/guide.md`, followed on this machine: the server, three agents and a router
//! started from the systemd units' command lines and the guide's environment files (with
//! local ports and directories in place of the hosts'), then every `sh` block of the
//! guide run in order in one shell, as the operator's workstation. The guide's own
//! checks (`test "$code" -eq 4`) stop the shell, and so fail this test, if a release's
//! wait ends otherwise; the units are checked by `systemd-analyze verify`.

use crate::kit::{BIN, Proc, free_port, one_world_at_a_time, wait_for};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

const GUIDE: &str = include_str!("../../docs/guide.md");

/// A fenced block of the guide: its info string (`sh`, `sh host`, `ini file=…`) and text.
#[derive(Debug)]
struct Block {
    info: String,
    text: String,
    line: usize,
}

fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (n, line) in markdown.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => open = Some(Block { info: info.trim().to_owned(), text: String::new(), line: n + 1 }),
            (Some(_), Some("")) => out.extend(open.take()),
            (Some(block), _) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "docs/guide.md ends inside a code block");
    out
}

/// The file a block is shown as (`file=NAME`, up to a space).
fn file_of(block: &Block) -> Option<&str> {
    block.info.split_once("file=").map(|(_, rest)| rest.split(' ').next().unwrap_or(rest))
}

/// `KEY=VALUE` lines of an environment file (systemd's `EnvironmentFile=` syntax, as the
/// guide writes it: no quotes, `#` comments).
fn env_file(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A unit's `ExecStart=` words and `Environment=` settings.
fn unit(name: &str) -> (Vec<String>, BTreeMap<String, String>) {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging").join(name))
        .unwrap_or_else(|e| panic!("packaging/{name}: {e}"));
    let exec = text.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("an ExecStart line");
    let words = exec.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    let env = text.lines().filter_map(|l| l.strip_prefix("Environment=")).filter_map(|l| l.split_once('='));
    (words, env.map(|(k, v)| (k.to_owned(), v.to_owned())).collect())
}

/// The environment file block of the guide for this path, the first one shown.
fn guide_env(blocks: &[Block], path: &str) -> BTreeMap<String, String> {
    let block = blocks.iter().find(|b| file_of(b) == Some(path)).unwrap_or_else(|| panic!("the guide shows {path}"));
    env_file(&block.text)
}

/// Starts a unit's command as systemd would: its words, the unit's environment, then the
/// environment file, nothing inherited but `PATH`; `overrides` put this machine's ports
/// and directories in place of a host's.
fn start_unit(
    unit_name: &str,
    file: BTreeMap<String, String>,
    overrides: &[(&str, String)],
    log: &Path,
) -> (Proc, Vec<String>) {
    let (words, mut env) = unit(unit_name);
    assert_eq!(words[0], "/usr/local/bin/rollwave", "{unit_name} runs the installed binary");
    env.extend(file);
    for (k, v) in overrides {
        env.insert((*k).to_owned(), v.clone());
    }
    let mut args: Vec<String> = words[1..].to_vec();
    // The state directory the unit names is this machine's temporary one.
    if let Some(dir) = overrides.iter().find(|(k, _)| *k == "STATE_DIRECTORY") {
        for a in args.iter_mut().filter(|a| a.starts_with("/var/lib/")) {
            *a = dir.1.clone();
        }
    }
    let child = Command::new(BIN)
        .args(&args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().filter(|(k, _)| k.as_str() != "STATE_DIRECTORY"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .unwrap_or_else(|e| panic!("{unit_name}: {e}"));
    (Proc(child), args)
}

/// One shell that runs the guide's blocks in turn and keeps its variables between them.
struct Workstation {
    shell: Proc,
    stdin: std::process::ChildStdin,
    lines: mpsc::Receiver<String>,
    transcript: Arc<Mutex<String>>,
}

const DONE: &str = "__guide_block_done__";

impl Workstation {
    fn start(dir: &Path, env: &[(&str, String)]) -> Workstation {
        let mut child = Command::new("bash")
            .arg("--noprofile")
            .arg("--norc")
            .current_dir(dir)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bash starts");
        let stdin = child.stdin.take().expect("stdin");
        let transcript = Arc::new(Mutex::new(String::new()));
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        for (stream, tx) in [(Box::new(out) as Box<dyn std::io::Read + Send>, Some(tx)), (Box::new(err), None)] {
            let transcript = Arc::clone(&transcript);
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stream).lines().map_while(Result::ok) {
                    transcript.lock().unwrap().push_str(&format!("{line}\n"));
                    if let Some(tx) = &tx {
                        let _ = tx.send(line);
                    }
                }
            });
        }
        let mut w = Workstation { shell: Proc(child), stdin, lines, transcript };
        w.send("set -euo pipefail\n");
        w
    }

    fn send(&mut self, text: &str) {
        self.stdin.write_all(text.as_bytes()).and_then(|()| self.stdin.flush()).expect("the shell reads");
    }

    /// Runs a block and returns what it printed on stdout, once the shell has run it all.
    fn run(&mut self, block: &Block) -> String {
        self.transcript.lock().unwrap().push_str(&format!("$ # docs/guide.md:{}\n{}", block.line, block.text));
        self.send(&format!("{}\necho {DONE}\n", block.text));
        let mut printed = String::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(240);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line == DONE => return printed,
                Ok(line) => {
                    printed.push_str(&line);
                    printed.push('\n');
                }
                Err(_) => {
                    let status = self.shell.0.try_wait().ok().flatten();
                    panic!(
                        "the block at docs/guide.md:{} did not finish (shell: {status:?}); the session:\n{}",
                        block.line,
                        self.transcript.lock().unwrap()
                    )
                }
            }
        }
    }
}

/// Processes the hooks started (the guide's web server), stopped when the test ends.
struct HookProcesses(Vec<PathBuf>);

impl Drop for HookProcesses {
    fn drop(&mut self) {
        for file in &self.0 {
            if let Ok(pid) = std::fs::read_to_string(file) {
                let _ = Command::new("kill").arg(pid.trim()).status();
            }
        }
    }
}

#[test]
fn the_guide_takes_a_fleet_from_install_to_releases_from_ci_and_an_operators_day() {
    let _world = one_world_at_a_time();
    let blocks = blocks(GUIDE);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // What the hosts' administrators install is in the repository.
    for block in blocks.iter().filter(|b| b.info == "sh host") {
        for word in block.text.split_whitespace().filter(|w| w.starts_with("packaging/")) {
            assert!(root.join(word).exists(), "docs/guide.md:{} installs {word}, which is missing", block.line);
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("workstation");
    std::fs::create_dir_all(&work).unwrap();
    for block in &blocks {
        if let Some(name) = file_of(block).filter(|n| !n.starts_with('/')) {
            let path = work.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &block.text).unwrap();
        }
    }

    // The server, from its unit and the guide's environment file.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let server_dir = tmp.path().join("server");
    std::fs::create_dir_all(&server_dir).unwrap();
    let (_server, _) = start_unit(
        "rollwave-server.service",
        guide_env(&blocks, "/etc/rollwave/server.env"),
        &[("ROLLWAVE_LISTEN", format!("127.0.0.1:{port}")), ("ROLLWAVE_DATA_DIR", server_dir.display().to_string())],
        &tmp.path().join("server.log"),
    );
    let http: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    wait_for("the server to be ready", Duration::from_secs(30), || {
        http.get(format!("{base}/readyz")).call().is_ok_and(|r| r.status().as_u16() == 200)
    });

    let bin_dir = tmp.path().join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::os::unix::fs::symlink(BIN, bin_dir.join("rollwave")).unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let mut shell = Workstation::start(
        &work,
        &[("PATH", path), ("HOME", work.display().to_string()), ("GUIDE_SERVER", base.clone())],
    );

    // The hosts: started once the blocks before have made their tokens.
    let hosts =
        [("use2-az1-1", "prod", "use2-az1"), ("use2-az2-1", "prod", "use2-az2"), ("use2-az3-1", "staging", "use2-az3")];
    let mut agents = Vec::new();
    let mut router = None;
    let router_port = free_port();
    let hook_processes =
        HookProcesses(hosts.iter().map(|(host, ..)| tmp.path().join(format!("agent-{host}/app.pid"))).collect());
    let mut outputs = Vec::new();
    let script: Vec<&Block> = blocks.iter().filter(|b| b.info == "sh").collect();
    assert!(script.len() >= 8, "the guide's workstation blocks: {}", script.len());
    for block in script {
        let tokens_made = hosts.iter().all(|(h, ..)| work.join(format!("agent-{h}.token")).exists())
            && work.join("router-us-east-2.token").exists();
        if agents.is_empty() && tokens_made {
            for (host, environment, zone) in hosts {
                let token = std::fs::read_to_string(work.join(format!("agent-{host}.token"))).unwrap();
                let dir = tmp.path().join(format!("agent-{host}"));
                std::fs::create_dir_all(&dir).unwrap();
                let (agent, args) = start_unit(
                    "rollwave-agent.service",
                    guide_env(&blocks, "/etc/rollwave/agent.env"),
                    &[
                        ("ROLLWAVE_SERVER", base.clone()),
                        ("ROLLWAVE_TOKEN", token.trim().to_owned()),
                        ("ROLLWAVE_ENVIRONMENT", environment.to_owned()),
                        ("ROLLWAVE_ZONE", zone.to_owned()),
                        ("ROLLWAVE_HOST_ID", host.to_owned()),
                        ("ROLLWAVE_ADDRESS", format!("127.0.0.1:{}", free_port())),
                        ("STATE_DIRECTORY", dir.display().to_string()),
                    ],
                    &tmp.path().join(format!("agent-{host}.log")),
                );
                assert!(args.contains(&dir.display().to_string()), "the agent works in its state directory: {args:?}");
                agents.push(agent);
            }
            let token = std::fs::read_to_string(work.join("router-us-east-2.token")).unwrap();
            router = Some(
                start_unit(
                    "rollwave-router.service",
                    guide_env(&blocks, "/etc/rollwave/router.env"),
                    &[
                        ("ROLLWAVE_SERVER", base.clone()),
                        ("ROLLWAVE_TOKEN", token.trim().to_owned()),
                        ("ROLLWAVE_LISTEN", format!("127.0.0.1:{router_port}")),
                        ("ROLLWAVE_ADMIN", format!("127.0.0.1:{}", free_port())),
                    ],
                    &tmp.path().join("router.log"),
                )
                .0,
            );
        }
        outputs.push(shell.run(block));
    }
    assert_eq!(agents.len(), 3, "the guide made a token for every host and the router");
    assert!(router.is_some());
    let printed = outputs.concat();
    assert!(printed.contains("release.sh exited with 4"), "the bad release's wait exits halted:\n{printed}");
    // The router sends users to the production hosts, which serve v1's health page (v2,
    // which lacks it, never got there).
    let answer = wait_for("the router to answer through a production host", Duration::from_secs(30), || {
        let mut r = http.get(format!("http://127.0.0.1:{router_port}/healthz")).call().ok()?;
        (r.status().as_u16() == 200).then(|| r.body_mut().read_to_string().unwrap_or_default())
    });
    assert_eq!(answer, "ok\n");
    eprintln!("{}", shell.transcript.lock().unwrap());
    drop(hook_processes);
}

#[test]
fn the_units_pass_systemd_analyze_verify_and_are_hardened() {
    let Some(verify) = systemd_analyze() else { return };
    let dir = tempfile::tempdir().unwrap();
    // The most exposure `systemd-analyze security` may score each unit, in tenths (its
    // `--threshold`): the agent's hooks deploy services, so it keeps what deploying needs.
    for (name, most) in
        [("rollwave-server.service", 20), ("rollwave-router.service", 20), ("rollwave-agent.service", 45)]
    {
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging").join(name)).unwrap();
        for needed in ["ProtectSystem=strict", "NoNewPrivileges=", "EnvironmentFile=/etc/rollwave/"] {
            assert!(text.contains(needed), "{name} lacks {needed}");
        }
        assert!(text.contains("DynamicUser=yes") || text.contains("\nUser="), "{name} runs as root");
        // verify checks that the command exists: point it at the binary under test.
        let local = dir.path().join(name);
        std::fs::write(&local, text.replace("/usr/local/bin/rollwave", BIN)).unwrap();
        let out = Command::new(&verify).args(["verify", "--man=no"]).arg(&local).output().unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify {name}:\n{said}");
        let out = Command::new(&verify)
            .args(["security", "--offline=yes", &format!("--threshold={most}")])
            .arg(&local)
            .output();
        let out = out.unwrap();
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{name} scores above {most}:\n{}", report.lines().last().unwrap_or_default());
    }
    // A unit systemd would ignore a line of is refused, so the check above can fail.
    let broken = dir.path().join("broken.service");
    std::fs::write(&broken, format!("[Service]\nExecStart={BIN} server\nProtectSystem=everything\n")).unwrap();
    let out = Command::new(&verify).args(["verify", "--man=no"]).arg(&broken).output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).trim().is_empty(), "a bad setting goes unreported");
}

/// `systemd-analyze`, or `None` (saying so) where this machine has none; CI requires it.
fn systemd_analyze() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join("systemd-analyze")).find(|p| p.exists()));
    if found.is_none() {
        assert!(
            std::env::var("ROLLWAVE_TEST_SYSTEMD").as_deref() != Ok("required"),
            "systemd-analyze is required here (ROLLWAVE_TEST_SYSTEMD=required) and missing"
        );
        eprintln!("skipped: no systemd-analyze on this machine (install systemd)");
    }
    found
}
