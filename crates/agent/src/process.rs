//! Running one hook command: in a process group of its own, with a timeout that kills
//! the whole group, keeping only the tail of its output while it streams.

use std::collections::VecDeque;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How much of a hook's output is kept and reported: the last 64 KiB.
pub const OUTPUT_TAIL: usize = 64 * 1024;

/// A command to run as a hook.
#[derive(Clone, Debug)]
pub struct Spec<'a> {
    /// Run with `sh -c`.
    pub script: &'a str,
    pub dir: &'a Path,
    pub env: &'a [(String, String)],
    pub timeout: Duration,
    /// After the command exits, how long to wait for the rest of its output. Processes
    /// it left in the background may hold the output pipe open for good.
    pub output_grace: Duration,
}

/// How a command ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Finished {
    /// None when it was killed by a signal (its timeout included).
    pub exit_code: Option<i32>,
    pub duration: Duration,
    /// The last [`OUTPUT_TAIL`] bytes of stdout and stderr together.
    pub output: String,
    pub timed_out: bool,
}

/// The last `cap` bytes written to it.
struct Tail {
    bytes: VecDeque<u8>,
    cap: usize,
    /// Whether earlier bytes were dropped.
    cut: bool,
    /// Set once the reader stopped caring; later output is drained and dropped.
    detached: bool,
}

impl Tail {
    fn new(cap: usize) -> Self {
        Tail { bytes: VecDeque::with_capacity(cap), cap, cut: false, detached: false }
    }

    fn push(&mut self, chunk: &[u8]) {
        if self.detached {
            return;
        }
        self.cut |= chunk.len() > self.cap;
        let chunk = &chunk[chunk.len().saturating_sub(self.cap)..];
        let overflow = (self.bytes.len() + chunk.len()).saturating_sub(self.cap);
        self.cut |= overflow > 0;
        self.bytes.drain(..overflow);
        self.bytes.extend(chunk);
    }

    /// The tail as text; a character cut in half at the start is dropped.
    fn text(&self) -> String {
        let (a, b) = self.bytes.as_slices();
        let mut bytes = Vec::with_capacity(a.len() + b.len());
        bytes.extend_from_slice(a);
        bytes.extend_from_slice(b);
        let skip = if self.cut { bytes.iter().take(3).take_while(|b| (**b & 0xC0) == 0x80).count() } else { 0 };
        String::from_utf8_lossy(&bytes[skip..]).into_owned()
    }
}

/// A pipe whose ends are closed on exec (the child gets its own copies through dup2).
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sends `signal` to every process in the group `pgid`.
pub fn kill_group(pgid: u32, signal: libc::c_int) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else { return };
    if pgid > 1 {
        // SAFETY: kill has no memory-safety preconditions; a negative pid names a group.
        unsafe { libc::kill(-pgid, signal) };
    }
}

/// Runs `spec.script` with `sh -c` in its own process group, stdin from /dev/null and
/// stdout and stderr into one pipe of which only the tail is kept. At the timeout the
/// whole group gets SIGKILL. Returns once the command's main process has exited and its
/// output has been read (or the grace period for it has passed).
pub fn run(spec: &Spec<'_>) -> std::io::Result<Finished> {
    let (read_end, write_end) = pipe()?;
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(spec.script)
        .current_dir(spec.dir)
        .env_remove("ROLLWAVE_TOKEN")
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(write_end.try_clone()?))
        .stderr(Stdio::from(write_end))
        .process_group(0);
    let started = Instant::now();
    let mut child = command.spawn()?;
    // The command holds the parent's copies of the write end: close them, or the reader
    // would never see the end of the output.
    drop(command);
    let pid = child.id();

    let tail = Arc::new(Mutex::new(Tail::new(OUTPUT_TAIL)));
    let (read_done, output_ended) = mpsc::channel::<()>();
    {
        let tail = Arc::clone(&tail);
        let mut reader = std::fs::File::from(read_end);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => tail.lock().unwrap_or_else(|p| p.into_inner()).push(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = read_done.send(());
        });
    }

    let (exited, exit) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = exited.send(child.wait());
    });
    let (status, timed_out) = match exit.recv_timeout(spec.timeout) {
        Ok(status) => (status?, false),
        Err(_) => {
            kill_group(pid, libc::SIGKILL);
            let status = exit.recv().map_err(|_| std::io::Error::other("the hook's waiter thread ended"))??;
            (status, true)
        }
    };
    let duration = started.elapsed();
    let _ = output_ended.recv_timeout(spec.output_grace);
    let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
    let output = tail.text();
    // A background process may still write to the pipe: the reader keeps draining it
    // (closing it would kill that process with SIGPIPE) but keeps nothing.
    tail.detached = true;
    tail.bytes = VecDeque::new();
    Ok(Finished { exit_code: status.code(), duration, output, timed_out })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_last_bytes() {
        let mut t = Tail::new(4);
        t.push(b"ab");
        t.push(b"cdef");
        assert_eq!(t.text(), "cdef");
        t.push(b"0123456789");
        assert_eq!(t.text(), "6789");
        t.push(b"x");
        assert_eq!(t.text(), "789x");
    }

    #[test]
    fn a_character_cut_at_the_start_of_the_tail_is_dropped() {
        let mut t = Tail::new(4);
        t.push("aé€".as_bytes()); // 1 + 2 + 3 bytes: the tail starts inside "é".
        assert_eq!(t.text(), "€");
    }
}
