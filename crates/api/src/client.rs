//! A small blocking client of the API, for the command line, agents, routers and tests.
//!
//! Blocking on purpose: the CLI and the agent are sequential, and the router talks to
//! the control plane from threads of its own (a long-poll for its table, a push every
//! interval), never from the tasks that proxy requests.

use crate::tls::Roots;
use crate::vocab::OperatorAction;
use crate::wire::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::io::BufRead;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error.
    #[error("{message} ({status} {code})")]
    Api { status: u16, code: String, message: String, details: serde_json::Value },
    /// The server could not be reached, or its answer could not be read.
    #[error("cannot talk to the server at {base}: {reason}")]
    Transport { base: String, reason: String },
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            ClientError::Transport { .. } => None,
        }
    }
}

pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
    timeout: Duration,
    roots: Roots,
}

fn http_agent(timeout: Option<Duration>, roots: &Roots) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(timeout)
        .tls_config(roots.tls_config())
        .build()
        .into()
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Self {
        Client::with_timeout(base, token, Duration::from_secs(90))
    }

    /// A client whose every call (a long-poll included) ends after `timeout`.
    pub fn with_timeout(base: &str, token: Option<String>, timeout: Duration) -> Self {
        let roots = Roots::default();
        let agent = http_agent(Some(timeout), &roots);
        Client { base: base.trim_end_matches('/').to_owned(), token, agent, timeout, roots }
    }

    /// The same client, trusting `roots` for `https`.
    pub fn trusting(self, roots: &Roots) -> Self {
        Client { agent: http_agent(Some(self.timeout), roots), roots: roots.clone(), ..self }
    }

    /// The server's URL, without a trailing `/`.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn transport(&self, e: impl std::fmt::Display) -> ClientError {
        ClientError::Transport { base: self.base.clone(), reason: e.to_string() }
    }

    fn finish<T: DeserializeOwned>(
        &self,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T, ClientError> {
        let mut response = response.map_err(|e| self.transport(e))?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().map_err(|e| self.transport(e))?;
        if status >= 400 {
            return Err(match serde_json::from_str::<ErrorBody>(&text) {
                Ok(b) => ClientError::Api { status, code: b.code, message: b.message, details: b.details },
                Err(_) => {
                    ClientError::Api { status, code: "http".into(), message: text, details: serde_json::Value::Null }
                }
            });
        }
        serde_json::from_str(&text).map_err(|e| self.transport(format!("unreadable answer: {e}")))
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let mut req = self.agent.get(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        self.finish(req.call())
    }

    pub fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, ClientError> {
        let mut req = self.agent.post(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        self.finish(req.send_json(body))
    }

    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let mut req = self.agent.delete(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        self.finish(req.call())
    }

    pub fn tokens(&self) -> Result<Vec<TokenInfo>, ClientError> {
        self.get("/v1/tokens")
    }

    pub fn revoke_token(&self, id: i64) -> Result<Accepted, ClientError> {
        self.delete(&format!("/v1/tokens/{id}"))
    }

    pub fn verify_audit(&self) -> Result<AuditVerdict, ClientError> {
        self.get("/v1/audit/verify")
    }

    pub fn apply(&self, file: &str, manifest: &str) -> Result<ServiceSummary, ClientError> {
        self.post("/v1/services", &ApplyService { manifest: manifest.to_owned(), file: Some(file.to_owned()) })
    }

    pub fn status(&self, service: &str) -> Result<ServiceStatus, ClientError> {
        self.get(&format!("/v1/services/{service}"))
    }

    pub fn services(&self) -> Result<Vec<ServiceSummary>, ClientError> {
        self.get("/v1/services")
    }

    pub fn create_release(&self, service: &str, req: &CreateRelease) -> Result<ReleaseView, ClientError> {
        self.post(&format!("/v1/services/{service}/releases"), req)
    }

    pub fn release(&self, service: &str, version: &str) -> Result<ReleaseDetail, ClientError> {
        self.get(&format!("/v1/services/{service}/releases/{version}"))
    }

    /// Takes a release action ([`OperatorAction::is_release_action`]) on `version`, or
    /// holds or resumes `service` (`version` is then not used).
    pub fn action(
        &self,
        service: &str,
        version: &str,
        action: OperatorAction,
        stage: Option<String>,
    ) -> Result<ReleaseView, ClientError> {
        self.post(&format!("/v1/services/{service}/releases/{version}/{action}"), &ActionRequest { stage })
    }

    pub fn hold(&self, service: &str, resume: bool, stage: Option<String>) -> Result<ServiceStatus, ClientError> {
        let action = if resume { OperatorAction::Resume } else { OperatorAction::Hold };
        self.post(&format!("/v1/services/{service}/{action}"), &ActionRequest { stage })
    }

    pub fn register_host(&self, req: &RegisterHost) -> Result<Registered, ClientError> {
        self.post("/v1/hosts/register", req)
    }

    pub fn push_metrics(&self, push: &MetricsPush) -> Result<Accepted, ClientError> {
        self.post("/v1/metrics", push)
    }

    /// The routing table of `service` in `environment`/`region`. With `after`, waits
    /// (up to `wait_s`) for a table newer than that generation; `router` is where the
    /// calling router takes traffic, told to the server for its monitors.
    pub fn routes(
        &self,
        service: &str,
        environment: &str,
        region: &str,
        after: Option<(i64, u64)>,
        router: Option<&str>,
    ) -> Result<Routes, ClientError> {
        let mut query: Vec<String> = Vec::new();
        if let Some((generation, wait_s)) = after {
            query.push(format!("after={generation}"));
            query.push(format!("wait={wait_s}"));
        }
        if let Some(r) = router {
            query.push(format!("router={r}"));
        }
        let base = format!("/v1/services/{service}/routes/{environment}/{region}");
        if query.is_empty() { self.get(&base) } else { self.get(&format!("{base}?{}", query.join("&"))) }
    }

    /// The flag sets `service` serves in `environment`/`region` (for relays). With
    /// `after`, waits (up to `wait_s`) for an answer newer than that generation.
    pub fn region_flags(
        &self,
        service: &str,
        environment: &str,
        region: &str,
        after: Option<(i64, u64)>,
    ) -> Result<RegionFlags, ClientError> {
        let base = format!("/v1/services/{service}/flags/{environment}/{region}");
        match after {
            Some((generation, wait_s)) => self.get(&format!("{base}?after={generation}&wait={wait_s}")),
            None => self.get(&base),
        }
    }

    pub fn push_flag_evaluations(&self, push: &FlagEvaluationsPush) -> Result<Accepted, ClientError> {
        self.post("/v1/flag-evaluations", push)
    }

    pub fn events(&self, after: i64, limit: i64) -> Result<EventPage, ClientError> {
        self.get(&format!("/v1/events?after={after}&limit={limit}"))
    }

    pub fn create_token(&self, req: &CreateToken) -> Result<TokenCreated, ClientError> {
        self.post("/v1/tokens", req)
    }

    /// Follows the live event stream, calling `each` per event until it returns false or
    /// the stream ends.
    pub fn follow(&self, after: Option<i64>, mut each: impl FnMut(EventView) -> bool) -> Result<(), ClientError> {
        let path = match after {
            Some(a) => format!("{}/v1/events/stream?after={a}", self.base),
            None => format!("{}/v1/events/stream", self.base),
        };
        // A stream has no end to wait for: no timeout.
        let agent = http_agent(None, &self.roots);
        let mut request = agent.get(path);
        if let Some(t) = &self.token {
            request = request.header("Authorization", format!("Bearer {t}"));
        }
        let mut response = request.call().map_err(|e| self.transport(e))?;
        if response.status().as_u16() >= 400 {
            return self.finish::<()>(Ok(response));
        }
        let reader = std::io::BufReader::new(response.body_mut().as_reader());
        for line in reader.lines() {
            let line = line.map_err(|e| self.transport(e))?;
            if let Some(data) = line.strip_prefix("data:")
                && let Ok(e) = serde_json::from_str::<EventView>(data.trim())
                && !each(e)
            {
                break;
            }
        }
        Ok(())
    }
}
