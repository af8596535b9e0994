//! A whole deployment world on one machine, made of real processes: a server on SQLite,
//! one agent per host of the manifest, one router per region, and the artifacts of the
//! versions to ship (each a `.tar.gz` whose hooks run `rollwave sample-app`).
//!
//! Every child is the leader of its own process group (so a Ctrl-C at the terminal
//! reaches only the demo, which then stops them in order) and gets SIGTERM if the demo
//! dies. The sample apps, started by hooks and so not the demo's children, are told the
//! demo's pid (`--exit-with`) and exit when it is gone.

use anyhow::{Context, Result, bail};
use rollwave_api::client::Client;
use rollwave_api::{CreateToken, Role};
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How one version of the sample app behaves once deployed.
#[derive(Clone, Debug)]
pub struct Version {
    pub name: String,
    /// Share of requests answered with a 500.
    pub error_rate: f64,
    pub latency_ms: u64,
    /// The errors begin this long after the process starts (a latent defect).
    pub fail_after: Option<Duration>,
    /// The errors happen only while this file exists (a latent defect switched on at will).
    pub fail_while: Option<PathBuf>,
}

impl Version {
    pub fn good(name: &str) -> Version {
        Version { name: name.into(), error_rate: 0.0, latency_ms: 2, fail_after: None, fail_while: None }
    }
}

/// What to start.
#[derive(Clone, Debug)]
pub struct WorldSpec {
    /// The service's manifest (YAML); its environments say which hosts to run.
    pub manifest: String,
    pub versions: Vec<Version>,
    /// How often routers push their traffic to the server.
    pub push_every: Duration,
    /// Passed to the server (`--host-timeout`).
    pub host_timeout: Duration,
    /// Passed to the server (`--datapoint-bin`).
    pub datapoint_bin: Duration,
    /// A version (of `versions`) every host runs before the story starts: it is shipped
    /// everywhere at once with a pipeline of the same hosts without bakes or alarms,
    /// then the real manifest replaces that pipeline.
    pub starting_version: Option<String>,
}

/// The manifest's hosts, shipped to with no bakes, no one-box and no alarms: how the
/// world gets to its starting version quickly.
pub fn starting_manifest(m: &rollwave_core::manifest::Manifest) -> String {
    let mut out = format!("service: {}\nenvironments:\n", m.service);
    for env in &m.environments {
        let _ = writeln!(out, "  {}:\n    regions:", env.name);
        for region in &env.regions {
            let zones: Vec<String> = region.zones.iter().map(|z| format!("{}: {}", z.name, z.hosts)).collect();
            let _ = writeln!(out, "      {}: {{ zones: {{ {} }} }}", region.name, zones.join(", "));
        }
    }
    out.push_str("strategy:\n  rolling: { batch: 100%, zone_bake: 0s }\nstages:\n");
    for env in &m.environments {
        let _ = writeln!(out, "  - {{ name: {0}, environment: {0}, one_box: false }}", env.name);
    }
    out
}

/// One host: its agent, and where its sample app answers.
#[derive(Clone, Debug)]
pub struct HostInfo {
    pub environment: String,
    pub region: String,
    pub zone: String,
    pub id: String,
    pub address: String,
    pub workdir: PathBuf,
}

/// One router, fronting the hosts of a region.
#[derive(Clone, Debug)]
pub struct RouterInfo {
    pub environment: String,
    pub region: String,
    /// Base URL for traffic, e.g. `http://127.0.0.1:41000`.
    pub url: String,
    pub admin: String,
}

/// An artifact built for a version.
#[derive(Clone, Debug)]
pub struct Artifact {
    pub url: String,
    pub sha256: String,
}

struct Proc {
    name: String,
    child: Child,
}

/// The running world. Dropping it stops everything.
pub struct World {
    pub dir: PathBuf,
    pub service: String,
    pub base: String,
    pub admin_token: String,
    pub hosts: Vec<HostInfo>,
    pub routers: Vec<RouterInfo>,
    pub artifacts: Vec<(String, Artifact)>,
    server: Option<Proc>,
    agents: Vec<Proc>,
    router_procs: Vec<Proc>,
}

pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?.local_addr()?.port())
}

/// A port for a host's app, below the range the kernel hands out to outgoing connections:
/// an app gives its port up on every deployment, and in that moment a router's, a
/// monitor's or an SDK's outgoing connection could otherwise take it, and the new version
/// would not start.
fn app_port(taken: &mut std::collections::HashSet<u16>) -> Result<u16> {
    let ephemeral_from = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    const FROM: u16 = 10_000;
    if ephemeral_from <= FROM + 1_000 {
        return free_port();
    }
    let span = u32::from(ephemeral_from - FROM);
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    for i in 0..span {
        let port = FROM + ((seed.wrapping_add(i)) % span) as u16;
        if !taken.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            taken.insert(port);
            return Ok(port);
        }
    }
    free_port()
}

fn spawn(binary: &Path, name: &str, args: &[String], envs: &[(&str, String)], log: &Path) -> Result<Proc> {
    let out = std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let err = out.try_clone()?;
    let mut command = Command::new(binary);
    command.args(args).stdin(Stdio::null()).stdout(out).stderr(err).process_group(0);
    for (k, v) in envs {
        command.env(k, v);
    }
    // SAFETY: prctl is async-signal-safe; it only asks the kernel to signal the child
    // when this process dies.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let child = command.spawn().with_context(|| format!("cannot start {name} ({})", binary.display()))?;
    Ok(Proc { name: name.to_owned(), child })
}

fn random_token() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        bytes[..16].copy_from_slice(&nanos.as_nanos().to_le_bytes());
    }
    format!("rw_demo_{}", hex::encode(bytes))
}

/// Waits for `ok`, checking `every`, for at most `limit`.
pub fn wait_until(limit: Duration, every: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if ok() {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(every);
    }
}

const HOOKS: &str = "\
stop:     { run: ./stop.sh, timeout: 30s }
start:    { run: ./start.sh, timeout: 30s }
validate: { run: ./validate.sh, timeout: 30s }
";

/// Starts the sample app on the host's port in the background; its pid is kept next to
/// the releases so `stop` (of this or a later release) can find it.
fn start_script(v: &Version) -> String {
    let mut fail_after = v.fail_after.map(|d| format!(" --fail-after {}", d.as_secs())).unwrap_or_default();
    if let Some(file) = &v.fail_while {
        fail_after.push_str(&format!(" --fail-while '{}'", file.display()));
    }
    format!(
        "#!/bin/sh\n\
         cd \"$ROLLWAVE_WORKDIR\" || exit 1\n\
         nohup \"$ROLLWAVE_DEMO_BIN\" sample-app --listen \"127.0.0.1:$ROLLWAVE_DEMO_PORT\" \
         --version \"$ROLLWAVE_VERSION\" --host-id \"$ROLLWAVE_HOST_ID\" --error-rate {} --latency-ms {}{} \
         --failing-flag new-checkout \
         --exit-with \"$ROLLWAVE_DEMO_PID\" >>app.log 2>&1 &\n\
         echo $! > app.pid\n\
         echo \"sample-app $ROLLWAVE_VERSION started on port $ROLLWAVE_DEMO_PORT (pid $!)\"\n",
        v.error_rate, v.latency_ms, fail_after
    )
}

/// Stops whichever release's app runs, and waits for its port to be free. The routers
/// stop sending new requests to a host as soon as its deployment starts (it is marked
/// draining); the pause lets them hear of it and lets requests in flight finish.
const STOP: &str = "#!/bin/sh
cd \"$ROLLWAVE_WORKDIR\" || exit 1
[ -f app.pid ] || { echo 'nothing running'; exit 0; }
pid=$(cat app.pid)
sleep \"${ROLLWAVE_DEMO_DRAIN:-0.5}\"
kill \"$pid\" 2>/dev/null
i=0
while kill -0 \"$pid\" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
kill -9 \"$pid\" 2>/dev/null
rm -f app.pid
echo \"stopped pid $pid\"
";

/// Healthy once `/health` answers 200 (bash's /dev/tcp: no curl needed).
const VALIDATE: &str = "#!/bin/bash
for i in $(seq 1 100); do
  if exec 3<>\"/dev/tcp/127.0.0.1/$ROLLWAVE_DEMO_PORT\" 2>/dev/null; then
    printf 'GET /health HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3
    status=$(head -n 1 <&3)
    exec 3>&-
    case \"$status\" in *' 200 '*) echo \"healthy: $status\"; exit 0;; esac
  fi
  sleep 0.1
done
echo \"no healthy answer on port $ROLLWAVE_DEMO_PORT\"
exit 1
";

fn build_artifact(dir: &Path, v: &Version) -> Result<Artifact> {
    let path = dir.join(format!("sample-app-{}.tar.gz", v.name));
    let file = std::fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(file, flate2::Compression::fast()));
    let start = start_script(v);
    for (name, body, mode) in [
        ("rollwave-hooks.yaml", HOOKS, 0o644),
        ("start.sh", start.as_str(), 0o755),
        ("stop.sh", STOP, 0o755),
        ("validate.sh", VALIDATE, 0o755),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, name, body.as_bytes())?;
    }
    tar.into_inner()?.finish()?.flush()?;
    use sha2::Digest;
    let sha256 = hex::encode(sha2::Sha256::digest(std::fs::read(&path)?));
    Ok(Artifact { url: format!("file://{}", path.display()), sha256 })
}

impl World {
    /// Starts everything and waits until every agent has registered and every router has
    /// its table. `binary` is the `rollwave` executable the children run.
    pub fn start(spec: &WorldSpec, dir: &Path, binary: &Path) -> Result<World> {
        let manifest = rollwave_manifest::parse_manifest("demo.yaml", &spec.manifest)
            .map_err(|e| anyhow::anyhow!("the demo's manifest is invalid:\n{e}"))?;
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        let artifacts_dir = dir.join("artifacts");
        std::fs::create_dir_all(&artifacts_dir)?;
        let artifacts = spec
            .versions
            .iter()
            .map(|v| Ok((v.name.clone(), build_artifact(&artifacts_dir, v)?)))
            .collect::<Result<Vec<_>>>()?;

        let admin_token = random_token();
        let port = free_port()?;
        let base = format!("http://127.0.0.1:{port}");
        let db = format!("sqlite://{}", dir.join("rollwave.db").display());
        let server = spawn(
            binary,
            "server",
            &[
                "server".into(),
                "--db".into(),
                db,
                "--listen".into(),
                format!("127.0.0.1:{port}"),
                "--host-timeout".into(),
                format!("{}s", spec.host_timeout.as_secs().max(1)),
                "--datapoint-bin".into(),
                format!("{}ms", spec.datapoint_bin.as_millis()),
                // The dashboard URL the demo prints opens without logging in; changes
                // still need the admin token it prints.
                "--anonymous-read".into(),
            ],
            &[("ROLLWAVE_BOOTSTRAP_TOKEN", admin_token.clone())],
            &logs.join("server.log"),
        )?;
        let mut world = World {
            dir: dir.to_owned(),
            service: manifest.service.clone(),
            base: base.clone(),
            admin_token: admin_token.clone(),
            hosts: Vec::new(),
            routers: Vec::new(),
            artifacts,
            server: Some(server),
            agents: Vec::new(),
            router_procs: Vec::new(),
        };
        let client = world.client();
        if !wait_until(Duration::from_secs(30), Duration::from_millis(100), || client.services().is_ok()) {
            bail!("the server did not answer within 30 s; see {}", logs.join("server.log").display());
        }
        let first = match &spec.starting_version {
            Some(_) => starting_manifest(&manifest),
            None => spec.manifest.clone(),
        };
        client.apply("start.yaml", &first).map_err(|e| anyhow::anyhow!("cannot apply the manifest: {e}"))?;

        let demo_pid = std::process::id().to_string();
        // What agents and routers both say: the server, and the place they serve.
        let place = |command: &str, env: &str, region: &str| -> Vec<String> {
            [command, "--server", &base, "--service", &manifest.service, "--environment", env, "--region", region]
                .map(String::from)
                .to_vec()
        };
        let mut app_ports = std::collections::HashSet::new();
        for env in &manifest.environments {
            for region in &env.regions {
                for zone in &region.zones {
                    for n in 1..=zone.hosts {
                        let id = format!("{}-{n}", zone.name);
                        let workdir = dir.join("hosts").join(&env.name).join(&id);
                        std::fs::create_dir_all(&workdir)?;
                        let app_port = app_port(&mut app_ports)?;
                        let address = format!("127.0.0.1:{app_port}");
                        let mut args = place("agent", &env.name, &region.name);
                        args.extend(["--zone", &zone.name, "--host-id", &id, "--address", &address].map(String::from));
                        // Every agent of this machine serves its host's flags on a port of its own.
                        args.extend(["--ofrep-listen", "127.0.0.1:0"].map(String::from));
                        let name = format!("agent {}/{id}", env.name);
                        let host = format!("{}/{}/{id}", manifest.service, env.name);
                        let token =
                            world.scoped_token(Role::Agent, CreateToken { host: Some(host), ..Default::default() })?;
                        let log = logs.join(format!("agent-{}-{id}.log", env.name));
                        world.agents.push(spawn(
                            binary,
                            &name,
                            &args,
                            &[
                                ("ROLLWAVE_TOKEN", token),
                                // As the environment, not --workdir, so the hooks see it too.
                                ("ROLLWAVE_WORKDIR", workdir.display().to_string()),
                                ("ROLLWAVE_DEMO_BIN", binary.display().to_string()),
                                ("ROLLWAVE_DEMO_PORT", app_port.to_string()),
                                ("ROLLWAVE_DEMO_PID", demo_pid.clone()),
                            ],
                            &log,
                        )?);
                        world.hosts.push(HostInfo {
                            environment: env.name.clone(),
                            region: region.name.clone(),
                            zone: zone.name.clone(),
                            id,
                            address,
                            workdir,
                        });
                    }
                }
                let (listen, admin) = (free_port()?, free_port()?);
                let mut args = place("router", &env.name, &region.name);
                args.extend(
                    [
                        "--listen",
                        &format!("127.0.0.1:{listen}"),
                        "--admin",
                        &format!("127.0.0.1:{admin}"),
                        "--push-every",
                        &format!("{}ms", spec.push_every.as_millis()),
                        "--workers",
                        "1",
                        "--reload-every",
                        "100ms",
                    ]
                    .map(String::from),
                );
                let log = logs.join(format!("router-{}-{}.log", env.name, region.name));
                let scope = format!("{}/{}/{}", manifest.service, env.name, region.name);
                let token =
                    world.scoped_token(Role::Router, CreateToken { region: Some(scope), ..Default::default() })?;
                world.router_procs.push(spawn(
                    binary,
                    &format!("router {}/{}", env.name, region.name),
                    &args,
                    &[("ROLLWAVE_TOKEN", token)],
                    &log,
                )?);
                world.routers.push(RouterInfo {
                    environment: env.name.clone(),
                    region: region.name.clone(),
                    url: format!("http://127.0.0.1:{listen}"),
                    admin: format!("http://127.0.0.1:{admin}"),
                });
            }
        }

        let expected = world.hosts.len();
        if !wait_until(Duration::from_secs(60), Duration::from_millis(200), || world.present_hosts() >= expected) {
            bail!(
                "only {} of {expected} agents registered within 60 s; see the logs in {}",
                world.present_hosts(),
                logs.display()
            );
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .new_agent();
        for r in &world.routers {
            let healthy = wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
                agent.get(format!("{}/healthz", r.admin)).call().is_ok_and(|r| r.status() == 200)
            });
            if !healthy {
                bail!("the router of {}/{} did not start; see its log in {}", r.environment, r.region, logs.display());
            }
        }
        world.check_children()?;
        if let Some(version) = &spec.starting_version {
            let a = world.artifact(version).with_context(|| format!("no artifact for {version}"))?.clone();
            let req = rollwave_api::CreateRelease {
                version: version.clone(),
                artifact: Some(a.url),
                sha256: Some(a.sha256),
                flags: None,
            };
            client.create_release(&world.service, &req).map_err(|e| anyhow::anyhow!("cannot create {version}: {e}"))?;
            let done = wait_until(Duration::from_secs(120), Duration::from_millis(200), || {
                client
                    .release(&world.service, version)
                    .is_ok_and(|d| d.release.outcome != rollwave_api::Outcome::InProgress)
            });
            let outcome = client.release(&world.service, version).ok().map(|d| d.release.outcome);
            if !done || outcome != Some(rollwave_api::Outcome::Completed) {
                let outcome = outcome.map_or("unknown", rollwave_api::Outcome::as_str);
                bail!("the starting version {version} did not reach every host ({outcome}); see {}", logs.display());
            }
            client.apply("demo.yaml", &spec.manifest).map_err(|e| anyhow::anyhow!("cannot apply the manifest: {e}"))?;
        }
        Ok(world)
    }

    pub fn client(&self) -> Client {
        Client::new(&self.base, Some(self.admin_token.clone()))
    }

    /// A token of `role` scoped as `scope` says (an agent's host, a router's region).
    fn scoped_token(&self, role: Role, scope: CreateToken) -> Result<String> {
        let request = CreateToken { role: role.as_str().to_owned(), ..scope };
        let created =
            self.client().create_token(&request).map_err(|e| anyhow::anyhow!("cannot create a {role} token: {e}"))?;
        Ok(created.token)
    }

    /// Hosts the routers are told about: registered, with an address.
    pub fn present_hosts(&self) -> usize {
        let client = self.client();
        self.routers
            .iter()
            .map(|r| {
                let path = format!("/v1/services/{}/routes/{}/{}", self.service, r.environment, r.region);
                client.get::<rollwave_api::Routes>(&path).map_or(0, |t| t.hosts.len())
            })
            .sum()
    }

    pub fn artifact(&self, version: &str) -> Option<&Artifact> {
        self.artifacts.iter().find(|(v, _)| v == version).map(|(_, a)| a)
    }

    /// Fails, naming it and its log, if a child has exited.
    pub fn check_children(&mut self) -> Result<()> {
        for p in self.server.iter_mut().chain(&mut self.agents).chain(&mut self.router_procs) {
            if let Ok(Some(status)) = p.child.try_wait() {
                bail!("{} exited ({status}); its log is under {}", p.name, self.dir.join("logs").display());
            }
        }
        Ok(())
    }

    /// Pids of every process of the world still running: children, and sample apps.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> =
            self.server.iter().chain(&self.agents).chain(&self.router_procs).map(|p| p.child.id()).collect();
        for h in &self.hosts {
            if let Some(pid) =
                std::fs::read_to_string(h.workdir.join("app.pid")).ok().and_then(|s| s.trim().parse().ok())
            {
                pids.push(pid);
            }
        }
        pids
    }

    /// Stops everything: agents first (no new hooks start), then the sample apps, the
    /// routers and the server. SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) -> String {
        let mut report = String::new();
        let mut agents = std::mem::take(&mut self.agents);
        stop_all(&mut agents, grace, &mut report);
        for h in &self.hosts {
            let pid_file = h.workdir.join("app.pid");
            let Some(pid) = std::fs::read_to_string(&pid_file).ok().and_then(|s| s.trim().parse::<i32>().ok()) else {
                continue;
            };
            // SAFETY: plain kill(2) on a pid this world's hooks recorded.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let gone = wait_until(grace, Duration::from_millis(20), || !alive(pid as u32));
            if !gone {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            let _ = std::fs::remove_file(pid_file);
        }
        let mut routers = std::mem::take(&mut self.router_procs);
        stop_all(&mut routers, grace, &mut report);
        let mut server: Vec<Proc> = self.server.take().into_iter().collect();
        stop_all(&mut server, grace, &mut report);
        report
    }
}

/// Whether a process runs (a zombie, dead but not yet reaped, does not).
pub fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // The state follows the command name, which is in parentheses and may hold spaces.
    stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()).is_some_and(|state| state != "Z")
}

fn stop_all(procs: &mut [Proc], grace: Duration, report: &mut String) {
    for p in procs.iter() {
        // SAFETY: each child leads its own process group; signal the whole group.
        unsafe { libc::kill(-(p.child.id() as i32), libc::SIGTERM) };
    }
    let deadline = Instant::now() + grace;
    for p in procs.iter_mut() {
        loop {
            match p.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    unsafe { libc::kill(-(p.child.id() as i32), libc::SIGKILL) };
                    let _ = p.child.wait();
                    let _ = writeln!(report, "{} had to be killed", p.name);
                    break;
                }
            }
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(2));
    }
}
