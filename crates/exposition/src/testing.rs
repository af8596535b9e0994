//! Support for tests that check a `/metrics` body with Prometheus's own linter.

use std::io::Write;
use std::process::{Command, Stdio};

/// The environment variable that, set to `required`, makes a missing promtool a failure
/// instead of a skip (continuous integration sets it).
pub const PROMTOOL_ENV: &str = "ROLLWAVE_TEST_PROMTOOL";

/// What `promtool check metrics` made of a body.
#[derive(Debug)]
pub struct Verdict {
    /// It exited 0.
    pub accepted: bool,
    /// Everything it printed: each problem it found, on a line of its own.
    pub said: String,
}

/// Runs `promtool check metrics` (Debian's `prometheus` package) on `text`. `None`, after
/// saying so on stderr, when promtool is not installed and [`PROMTOOL_ENV`] is not
/// `required`; with it `required`, a missing promtool panics.
pub fn promtool_check(test: &str, text: &str) -> Option<Verdict> {
    let required = std::env::var(PROMTOOL_ENV).is_ok_and(|v| v == "required");
    let spawned = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            assert!(
                !required,
                "{PROMTOOL_ENV}=required but promtool cannot be started ({e}); install Debian's prometheus"
            );
            // Written straight to stderr, past the test harness's capture, so a skip is seen.
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: install Debian's prometheus package for promtool");
            return None;
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes()).unwrap_or_else(|e| panic!("cannot write to promtool: {e}"));
    }
    let output = child.wait_with_output().unwrap_or_else(|e| panic!("promtool did not finish: {e}"));
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    Some(Verdict { accepted: output.status.success(), said })
}
