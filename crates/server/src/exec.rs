//! The `exec` driver: runs an environment's deploy or rollback command for a target
//! that has no agent, with a timeout, keeping the tail of its output.

use crate::api::HookReport;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// How much of a command's output is kept: its last 64 KiB.
pub const OUTPUT_TAIL: usize = 64 * 1024;

/// Runs `command` with `sh -c` in its own process group; on timeout the whole group is killed.
pub async fn run(command: &str, timeout: Duration) -> HookReport {
    run_with(command, timeout, &[]).await
}

/// [`run`], with these variables added to the command's environment.
pub async fn run_with(command: &str, timeout: Duration, env: &[(&str, String)]) -> HookReport {
    let started = Instant::now();
    let mut cmd = tokio::process::Command::new("sh");
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
