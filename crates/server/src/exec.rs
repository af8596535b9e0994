//! The `exec` driver: runs an environment's deploy or rollback command for a target
//! that has no agent, with a timeout, keeping the tail of its output.
//!
//! A command never contains a value: the manifest's `{{name}}` templates become
//! references to environment variables (`"${ROLLWAVE_ARTIFACT}"`), and the values are
//! put in the child's environment, so no artifact URL or version can be read by the
//! shell as code, split into words or expanded as a glob.

use crate::api::HookReport;
use crate::state::ExecTarget;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// How much of a command's output is kept: its last 64 KiB.
pub const OUTPUT_TAIL: usize = 64 * 1024;

/// The server's own secrets, which its commands never inherit: their output is shown
/// in the timeline.
const SERVER_SECRETS: [&str; 2] = ["ROLLWAVE_BOOTSTRAP_TOKEN", "ROLLWAVE_DB"];

pub use rollwave_core::manifest::ExecTemplate as Template;

/// Where the shell is in a command as it reads it, as far as quoting goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Quoting {
    None,
    Single,
    Double,
}

/// The text `sh -c` runs for a manifest's command: each known `{{name}}` becomes a
/// quoted reference to its variable, quoted to suit where it stands (`"${V}"` in the
/// open, `${V}` inside double quotes, `'"${V}"'` inside single quotes). It depends on
/// the manifest's text alone (which names only known templates: the manifest is refused
/// otherwise).
pub fn command_text(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut quoting = Quoting::None;
    let mut rest = template;
    while let Some(c) = rest.chars().next() {
        if let Some((t, len)) = Template::at_start(rest) {
            let v = t.variable();
            match quoting {
                Quoting::None => out.push_str(&format!("\"${{{v}}}\"")),
                Quoting::Double => out.push_str(&format!("${{{v}}}")),
                Quoting::Single => out.push_str(&format!("'\"${{{v}}}\"'")),
            }
            rest = &rest[len..];
            continue;
        }
        let mut taken = c.len_utf8();
        quoting = match (quoting, c) {
            (Quoting::None, '\'') => Quoting::Single,
            (Quoting::None, '"') => Quoting::Double,
            (Quoting::Single, '\'') | (Quoting::Double, '"') => Quoting::None,
            (Quoting::None | Quoting::Double, '\\') => {
                // An escaped character is copied with its backslash and changes nothing.
                taken += rest[taken..].chars().next().map_or(0, char::len_utf8);
                quoting
            }
            (q, _) => q,
        };
        out.push_str(&rest[..taken]);
        rest = &rest[taken..];
    }
    out
}

/// Runs an `exec` target's command with its values in the environment.
pub async fn run_target(target: &ExecTarget) -> HookReport {
    let env: Vec<(&str, String)> = target.env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    run_with(&target.command, Duration::from_secs(target.timeout_s), &env).await
}

/// Runs `command` with `sh -c` in its own process group, with these variables added to
/// its environment (and the template variables it is not given and the server's
/// secrets removed from it); on timeout the whole group is killed.
pub async fn run_with(command: &str, timeout: Duration, env: &[(&str, String)]) -> HookReport {
    let started = Instant::now();
    let mut cmd = tokio::process::Command::new("sh");
    for name in Template::ALL.map(Template::variable).iter().chain(&SERVER_SECRETS) {
        cmd.env_remove(name);
    }
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    cmd.arg("-c").arg(command).stdin(std::process::Stdio::null()).stdout(std::process::Stdio::piped());
    cmd.stderr(std::process::Stdio::piped()).kill_on_drop(true);
    #[cfg(unix)]
    cmd.process_group(0);
    let report = |exit_code: Option<i32>, timed_out: bool, output: String, ok: bool| HookReport {
        name: "exec".into(),
        exit_code,
        duration_ms: started.elapsed().as_millis() as u64,
        output,
        timed_out,
        ok,
    };
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return report(None, false, format!("cannot start sh: {e}"), false),
    };
    let pid = child.id();
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return report(None, false, "no output pipes".into(), false);
    };
    let collect = async move {
        let mut tail: Vec<u8> = Vec::new();
        let (mut out_buf, mut err_buf) = ([0u8; 8192], [0u8; 8192]);
        let (mut out_open, mut err_open) = (true, true);
        while out_open || err_open {
            let n = tokio::select! {
                r = stdout.read(&mut out_buf), if out_open => match r { Ok(0) | Err(_) => { out_open = false; 0 } Ok(n) => { tail.extend_from_slice(&out_buf[..n]); n } },
                r = stderr.read(&mut err_buf), if err_open => match r { Ok(0) | Err(_) => { err_open = false; 0 } Ok(n) => { tail.extend_from_slice(&err_buf[..n]); n } },
            };
            if n > 0 && tail.len() > 2 * OUTPUT_TAIL {
                tail.drain(..tail.len() - OUTPUT_TAIL);
            }
        }
        if tail.len() > OUTPUT_TAIL {
            tail.drain(..tail.len() - OUTPUT_TAIL);
        }
        String::from_utf8_lossy(&tail).into_owned()
    };
    let waited = tokio::time::timeout(timeout, async {
        let output = collect.await;
        (child.wait().await, output)
    })
    .await;
    match waited {
        Ok((Ok(status), output)) => report(status.code(), false, output, status.success()),
        Ok((Err(e), output)) => report(None, false, format!("{output}\\nwaiting failed: {e}"), false),
        Err(_) => {
            #[cfg(unix)]
            if let Some(pid) = pid {
                // The negative pid names the process group: the command and all it started.
                let _ = std::process::Command::new("kill").args(["-KILL", &format!("-{pid}")]).status();
            }
            report(None, true, format!("killed after {} s", timeout.as_secs()), false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::command_text;

    #[test]
    fn templates_become_variables_quoted_for_where_they_stand() {
        assert_eq!(command_text("fetch {{artifact}} && ok"), r#"fetch "${ROLLWAVE_ARTIFACT}" && ok"#);
        assert_eq!(command_text(r#"echo "v={{version}}_x""#), r#"echo "v=${ROLLWAVE_VERSION}_x""#);
        assert_eq!(command_text("echo '{{host}}'"), r#"echo ''"${ROLLWAVE_HOST}"''"#);
        assert_eq!(command_text(r#"echo \"{{zone}}"#), r#"echo \""${ROLLWAVE_ZONE}""#);
        assert_eq!(command_text("echo {{nope}} {{share"), "echo {{nope}} {{share");
        assert_eq!(command_text("ünï {{service}}"), r#"ünï "${ROLLWAVE_SERVICE}""#);
    }
}
