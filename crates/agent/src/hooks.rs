//! The hooks file an artifact declares at its root, `rollwave-hooks.yaml`: which
//! command runs at each step of a deployment. Any hook may be left out.
//!
//! ```yaml
//! before_install: { run: ./scripts/migrate-check.sh, timeout: 2m }
//! start:          { run: ./bin/start.sh, timeout: 30s }
//! stop:           { run: ./bin/stop.sh, timeout: 30s }
//! validate:       { http: "http://127.0.0.1:8080/health", expect_status: 200, within: 30s }
//! ```

use rollwave_manifest::ManifestErrors;
use rollwave_manifest::yaml::{Decoder, Mapping, Node};

use std::time::Duration;

/// The file name, at the root of every artifact.
pub const HOOKS_FILE: &str = "rollwave-hooks.yaml";

/// A `run` hook's timeout when it names none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// How long an `http` check may retry when it names no `within`.
pub const DEFAULT_WITHIN: Duration = Duration::from_secs(30);

/// The steps of a deployment that may run a hook, in the order they run: the wire's
/// hook steps, so a report names each exactly as the server reads it.
pub use rollwave_api::HookStep as Step;

/// What a hook does.
#[derive(Clone, Debug, PartialEq)]
pub enum Hook {
    /// `sh -c COMMAND` in the release directory, killed (with its whole process group)
    /// at the timeout.
    Run { command: String, timeout: Duration },
    /// `GET URL`, retried until it answers `expect_status` or `within` has passed. Only
    /// `validate` may be one.
    Http { url: String, expect_status: u16, within: Duration },
}

/// The hooks of one release.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Hooks {
    pub stop: Option<Hook>,
    pub before_install: Option<Hook>,
    pub after_install: Option<Hook>,
    pub start: Option<Hook>,
    pub validate: Option<Hook>,
}

impl Hooks {
    pub fn get(&self, step: Step) -> Option<&Hook> {
        match step {
            Step::Stop => self.stop.as_ref(),
            Step::BeforeInstall => self.before_install.as_ref(),
            Step::AfterInstall => self.after_install.as_ref(),
            Step::Start => self.start.as_ref(),
            Step::Validate => self.validate.as_ref(),
        }
    }

    /// Reads a hooks file; `file` names it in errors (`FILE:LINE:COL: message`).
    pub fn parse(file: &str, text: &str) -> Result<Hooks, ManifestErrors> {
        let mut d = Decoder::new(file);
        let hooks = d.parse_document(text).and_then(|root| {
            let names: Vec<&str> = Step::ALL.iter().map(|s| s.as_str()).collect();
            let map = d.mapping(&root, &names)?;
            let mut hooks = Hooks::default();
            for step in Step::ALL {
                let hook = d.optional(&map, step.as_str(), |d, node| hook(d, node, step));
                match step {
                    Step::Stop => hooks.stop = hook,
                    Step::BeforeInstall => hooks.before_install = hook,
                    Step::AfterInstall => hooks.after_install = hook,
                    Step::Start => hooks.start = hook,
                    Step::Validate => hooks.validate = hook,
                }
            }
            Some(hooks)
        });
        d.finish(hooks)
    }
}

const HOOK_KEYS: &[&str] = &["run", "timeout", "http", "expect_status", "within"];

fn hook(d: &mut Decoder, node: &Node, step: Step) -> Option<Hook> {
    let map = d.mapping(node, HOOK_KEYS)?;
    let run = d.optional(&map, "run", Decoder::string);
    let http = d.optional(&map, "http", |d, n| {
        d.parsed(n, "a URL", |s| {
            if s.starts_with("http://") || s.starts_with("https://") {
                Ok(s.to_owned())
            } else {
                Err(format!("{s:?} is not an http:// or https:// URL"))
            }
        })
    });
    let only = |d: &mut Decoder, map: &Mapping<'_>, keys: &[&str], kind: &str| {
        for key in keys {
            if let Some(k) = map.key(key) {
                d.error(k, format!("{key:?} does not belong to a {kind} hook"));
            }
        }
    };
    match (map.get("run").is_some(), map.get("http").is_some()) {
        (true, false) => {
            only(d, &map, &["expect_status", "within"], "run");
            let timeout = d.optional(&map, "timeout", Decoder::positive_duration);
            Some(Hook::Run { command: run?, timeout: timeout.unwrap_or(DEFAULT_TIMEOUT) })
        }
        (false, true) => {
            if step != Step::Validate {
                d.error(map, format!("{step}: only validate may be an http check; use run: COMMAND"));
                return None;
            }
            only(d, &map, &["timeout"], "http");
            let expect_status = d.optional(&map, "expect_status", |d, n| {
                d.parsed(n, "an HTTP status", |s| match s.trim().parse::<u16>() {
                    Ok(v) if (100..=599).contains(&v) => Ok(v),
                    _ => Err(format!("{s:?} is not an HTTP status (100 to 599)")),
                })
            });
            let within = d.optional(&map, "within", Decoder::positive_duration);
            Some(Hook::Http {
                url: http?,
                expect_status: expect_status.unwrap_or(200),
                within: within.unwrap_or(DEFAULT_WITHIN),
            })
        }
        (true, true) => {
            d.error(map, format!("{step}: a hook has either run: or http:, not both"));
            None
        }
        (false, false) => {
            let what = if step == Step::Validate { "run: COMMAND or http: URL" } else { "run: COMMAND" };
            d.error(map, format!("{step}: the hook needs {what}"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_example_reads() {
        let hooks = Hooks::parse(
            HOOKS_FILE,
            "before_install: { run: ./scripts/migrate-check.sh, timeout: 2m }\n\
             start:          { run: ./bin/start.sh, timeout: 30s }\n\
             stop:           { run: ./bin/stop.sh }\n\
             validate:       { http: \"http://127.0.0.1:8080/health\", expect_status: 200, within: 30s }\n",
        )
        .unwrap();
        assert_eq!(
            hooks.before_install,
            Some(Hook::Run { command: "./scripts/migrate-check.sh".into(), timeout: Duration::from_secs(120) })
        );
        assert_eq!(hooks.stop, Some(Hook::Run { command: "./bin/stop.sh".into(), timeout: DEFAULT_TIMEOUT }));
        assert_eq!(
            hooks.validate,
            Some(Hook::Http {
                url: "http://127.0.0.1:8080/health".into(),
                expect_status: 200,
                within: Duration::from_secs(30)
            })
        );
        assert_eq!(hooks.after_install, None);
        assert_eq!(Hooks::parse(HOOKS_FILE, "").unwrap(), Hooks::default());
    }

    #[test]
    fn every_mistake_is_located() {
        let errors = Hooks::parse(
            HOOKS_FILE,
            "strat: { run: x }\n\
             start: { run: x, within: 3s }\n\
             stop: { http: \"http://x/\" }\n\
             validate: { run: x, http: \"http://x/\" }\n\
             after_install: { timeout: 5s }\n\
             before_install: { run: x, timeout: soon }\n",
        )
        .unwrap_err()
        .to_string();
        let lines: Vec<&str> = errors.lines().collect();
        assert_eq!(lines.len(), 6, "{errors}");
        assert!(lines[0].starts_with("rollwave-hooks.yaml:1:1: unknown key \"strat\""), "{errors}");
        assert!(lines[1].starts_with("rollwave-hooks.yaml:2:18: \"within\" does not belong to a run hook"), "{errors}");
        assert!(lines[2].contains("3:7: stop: only validate may be an http check"), "{errors}");
        assert!(lines[3].contains("4:11: validate: a hook has either run: or http:, not both"), "{errors}");
        assert!(lines[4].contains("5:16: after_install: the hook needs run: COMMAND"), "{errors}");
        assert!(lines[5].contains("6:36: invalid duration \"soon\""), "{errors}");
    }
}

#[cfg(test)]
mod fuzz;
