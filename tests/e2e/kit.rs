//! What every end-to-end test needs, once: the binary under test, a free port, a child
//! process that cannot outlive its test, a server process that is ready when it is
//! returned, and one way to wait for a condition a real process has to reach.

use rollwave_api::Client;
pub use rollwave_testkit::{Proc, free_port, wait_for};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The `rollwave` binary these tests run.
pub const BIN: &str = env!("CARGO_BIN_EXE_rollwave");

/// Held by a test that starts a whole world (a server, agents, routers, users) and judges
/// releases on what they measure in real time: two of them at once on a small machine
/// starve each other's pushes and bakes, and each starts two dozen processes on ports
/// picked by binding and releasing. The other tests run beside them.
pub fn one_world_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static WORLD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    WORLD.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `rollwave` with these arguments, its output discarded.
pub fn rollwave_process(args: &[&str], env: &[(&str, &str)]) -> Proc {
    let child = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("rollwave starts");
    Proc(child)
}

/// `rollwave server` started the way a test needs it, ready when returned; see
/// [`ServerBuilder`].
pub struct Server {
    pub process: Proc,
    pub base: String,
    pub port: u16,
    pub db: String,
    builder: ServerBuilder,
    _dir: Option<tempfile::TempDir>,
}

/// How to start a server: a database (by default a new SQLite file of its own), a driver
/// (`noop` by default), a node id, extra arguments and environment. The admin token is
/// [`Server::ADMIN`] unless another is given.
#[derive(Clone)]
pub struct ServerBuilder {
    db: Option<String>,
    driver: Option<String>,
    node_id: Option<String>,
    port: Option<u16>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: Option<PathBuf>,
    stderr: bool,
    db_in_env: bool,
}

impl Server {
    pub const ADMIN: &'static str = "rw_e2e_admin_token";

    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            db: None,
            driver: Some("noop".into()),
            node_id: None,
            port: None,
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            stderr: false,
            db_in_env: false,
        }
    }

    /// An admin's client of this server.
    pub fn client(&self) -> Client {
        Client::new(&self.base, Some(Self::ADMIN.to_owned()))
    }

    /// Waits for the process to end (after it was killed) and starts it again, with the
    /// same database, port and arguments.
    pub fn restart(&mut self) {
        let _ = self.process.0.wait();
        // The first start's directory holds the database: it lives as long as the server.
        let dir = self._dir.take();
        let restarted = self.builder.clone().db(&self.db).port(self.port).start();
        *self = Server { _dir: dir, ..restarted };
    }

    /// `kill -9`, and waits for the process to be gone.
    pub fn kill9(&mut self) {
        self.process.signal("-KILL");
        let _ = self.process.0.wait();
    }
}

impl ServerBuilder {
    pub fn db(mut self, db: &str) -> Self {
        self.db = Some(db.to_owned());
        self
    }

    /// `--driver`; `None` leaves the server's default.
    pub fn driver(mut self, driver: Option<&str>) -> Self {
        self.driver = driver.map(str::to_owned);
        self
    }

    pub fn node_id(mut self, id: &str) -> Self {
        self.node_id = Some(id.to_owned());
        self
    }

    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The server's working directory.
    pub fn cwd(mut self, dir: &Path) -> Self {
        self.cwd = Some(dir.to_owned());
        self
    }

    /// Names the database in `ROLLWAVE_DB` instead of `--db`.
    pub fn db_in_env(mut self) -> Self {
        self.db_in_env = true;
        self
    }

    /// Lets the server's log through to the test's output.
    pub fn show_log(mut self) -> Self {
        self.stderr = true;
        self
    }

    pub fn start(self) -> Server {
        let (dir, db) = match &self.db {
            Some(db) => (None, db.clone()),
            None => {
                let dir = tempfile::tempdir().unwrap();
                let db = format!("sqlite://{}", dir.path().join("server.db").display());
                (Some(dir), db)
            }
        };
        let port = self.port.unwrap_or_else(free_port);
        let listen = format!("127.0.0.1:{port}");
        let mut command = Command::new(BIN);
        command.args(["server", "--listen", &listen]);
        if self.db_in_env {
            command.env("ROLLWAVE_DB", &db);
        } else {
            command.args(["--db", &db]);
        }
        if let Some(driver) = &self.driver {
            command.args(["--driver", driver]);
        }
        if let Some(id) = &self.node_id {
            command.args(["--node-id", id]);
        }
        command
            .args(&self.args)
            .env("ROLLWAVE_BOOTSTRAP_TOKEN", Server::ADMIN)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(if self.stderr { Stdio::inherit() } else { Stdio::null() });
        if let Some(cwd) = &self.cwd {
            command.current_dir(cwd);
        }
        let process = Proc(command.spawn().expect("rollwave server starts"));
        let base = format!("http://127.0.0.1:{port}");
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        // Ready: this replica has caught up with the log and can answer.
        let probe = format!("{base}/readyz");
        wait_for(&format!("the server on port {port} to be ready"), Duration::from_secs(30), || {
            agent.get(&probe).call().is_ok_and(|r| r.status().as_u16() == 200)
        });
        Server { process, base, port, db, builder: self, _dir: dir }
    }
}
