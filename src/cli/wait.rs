//! `rollwave release wait` and `release create --wait`: follow a release until it
//! settles, printing a line per step, and tell how it ended by the exit code, so that a
//! CI job can gate on it.

use super::remote::{self, Format, Remote};
use rollwave_api::client::{Client, ClientError};
use rollwave_api::{EventView, Outcome, ReleaseView};
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How a wait ended, each with an exit code of its own (1 and 3 are the client
/// commands' codes for a refusal and an unreachable server; 2 is a usage error).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitEnd {
    /// It completed, or reached the stage `--until` names: 0.
    Reached,
    /// It halted (an alarm, a monitor, a judge or a failed deployment): 4.
    Halted,
    /// It was rolled back everywhere: 5.
    RolledBack,
    /// A newer release took its place before it got there: 6.
    Superseded,
    /// `--timeout` passed first: 7.
    TimedOut,
}

impl WaitEnd {
    pub fn code(self) -> u8 {
        match self {
            WaitEnd::Reached => 0,
            WaitEnd::Halted => 4,
            WaitEnd::RolledBack => 5,
            WaitEnd::Superseded => 6,
            WaitEnd::TimedOut => 7,
        }
    }

    fn says(self) -> &'static str {
        match self {
            WaitEnd::Reached => "reached",
            WaitEnd::Halted => "halted",
            WaitEnd::RolledBack => "rolled back",
            WaitEnd::Superseded => "superseded",
            WaitEnd::TimedOut => "timed out",
        }
    }
}

/// What the wait is for: the release's end, or one stage (or `stage/wave`) done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Until {
    Completed,
    Reached(String),
}

impl Until {
    pub fn parse(s: Option<&str>) -> Until {
        match s {
            None | Some("completed") => Until::Completed,
            Some(stage) => Until::Reached(stage.to_owned()),
        }
    }
}

/// Whether the release has settled for this wait; `None` while it is still on its way.
/// A stage reached counts even if the release halted later on, since the wait got what
/// it asked for.
pub fn settled(release: &ReleaseView, until: &Until) -> Option<WaitEnd> {
    if let Until::Reached(stage) = until
        && release.reached.iter().any(|r| r == stage)
    {
        return Some(WaitEnd::Reached);
    }
    match release.outcome {
        Outcome::InProgress => None,
        Outcome::Completed => Some(WaitEnd::Reached),
        Outcome::Halted => Some(WaitEnd::Halted),
        Outcome::RolledBack => Some(WaitEnd::RolledBack),
        Outcome::Superseded => Some(WaitEnd::Superseded),
    }
}

/// The names `--until` may take for a service: `completed`, each stage and each
/// `stage/wave`.
fn until_names(client: &Client, service: &str) -> Result<Vec<String>, ClientError> {
    let status = client.status(service)?;
    let mut names = vec!["completed".to_owned()];
    for stage in &status.stages {
        names.push(stage.name.clone());
        names.extend(stage.waves.iter().map(|w| format!("{}/{w}", stage.name)));
    }
    Ok(names)
}

pub struct WaitArgs {
    pub service: String,
    pub version: String,
    pub until: Until,
    pub timeout: Option<Duration>,
    /// How often the release is read.
    pub every: Duration,
}

/// An unreachable server (a failover, a restart) is retried for this long in a row
/// before the wait gives up with exit code 3.
const UNREACHABLE_FOR: Duration = Duration::from_secs(60);

/// Follows the release to its end. Progress goes to stderr, a line per event of the
/// release and per change of where it waits; the release as it ended goes to stdout in
/// the chosen format.
pub fn wait(remote: &Remote, args: WaitArgs) -> ExitCode {
    let client = remote.client();
    if let Until::Reached(stage) = &args.until {
        match until_names(&client, &args.service) {
            Ok(names) if names.contains(stage) => {}
            Ok(names) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "rollwave: --until {stage}: {} has no such stage; use one of {}",
                    args.service,
                    names.join(", ")
                );
                return ExitCode::from(1);
            }
            Err(e) => return remote::exit_for(&e),
        }
    }
    let started = Instant::now();
    let mut shown_events: i64 = -1;
    let mut shown_place: Option<String> = None;
    let mut unreachable_since: Option<Instant> = None;
    loop {
        match client.release(&args.service, &args.version) {
            Ok(detail) => {
                unreachable_since = None;
                shown_events = progress(&detail.events, shown_events);
                let place = detail.release.at.as_ref().map(|at| {
                    if detail.release.waiting == Some(true) { format!("waiting at {at}") } else { format!("in {at}") }
                });
                if place != shown_place {
                    if let Some(p) = &place {
                        let _ = writeln!(std::io::stderr(), "{} {p}", detail.release.version);
                    }
                    shown_place = place;
                }
                if let Some(end) = settled(&detail.release, &args.until) {
                    return finish(remote, &detail.release, end, &args.until);
                }
            }
            Err(e @ ClientError::Api { status, .. }) if status < 500 => return remote::exit_for(&e),
            Err(e) => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= UNREACHABLE_FOR {
                    return remote::exit_for(&e);
                }
                let _ = writeln!(std::io::stderr(), "rollwave: {e}; trying again");
            }
        }
        if let Some(timeout) = args.timeout
            && started.elapsed() + args.every > timeout
        {
            let _ = writeln!(
                std::io::stderr(),
                "rollwave: {}@{} timed out after {}",
                args.service,
                args.version,
                rollwave_core::format_duration(timeout)
            );
            return ExitCode::from(WaitEnd::TimedOut.code());
        }
        std::thread::sleep(args.every);
    }
}

/// Prints the events after `shown` (by sequence number) and returns the last one shown.
fn progress(events: &[EventView], shown: i64) -> i64 {
    let mut last = shown;
    let mut err = std::io::stderr().lock();
    for (i, e) in events.iter().enumerate() {
        // Events without a sequence number are counted by their place in the timeline.
        let seq = e.seq.unwrap_or(i as i64);
        if seq > last {
            let _ = writeln!(err, "{}", remote::print_event(e));
            last = seq;
        }
    }
    last
}

fn finish(remote: &Remote, release: &ReleaseView, end: WaitEnd, until: &Until) -> ExitCode {
    let what = match (end, until) {
        (WaitEnd::Reached, Until::Reached(stage)) => format!("reached {stage}"),
        (WaitEnd::Reached, Until::Completed) => "completed".to_owned(),
        _ => end.says().to_owned(),
    };
    let _ = writeln!(std::io::stderr(), "{} {what}", release.version);
    match remote.output {
        Format::Table => {
            let _ = writeln!(std::io::stdout(), "{}", remote::print_release(release));
        }
        format => {
            let _ = remote::print(format, release);
        }
    }
    ExitCode::from(end.code())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(outcome: Outcome, reached: &[&str]) -> ReleaseView {
        ReleaseView {
            version: "v2".into(),
            outcome,
            reason: None,
            created_at: "2026-12-01T00:00:00Z".into(),
            completed_at: None,
            lead_time_s: None,
            reached: reached.iter().map(|s| s.to_string()).collect(),
            rolled_back_scopes: vec![],
            at: None,
            waiting: None,
            artifact: None,
            sha256: None,
            lane: Default::default(),
        }
    }

    #[test]
    fn a_release_in_progress_has_not_settled_until_it_reaches_the_stage_waited_for() {
        let gamma = Until::Reached("gamma".into());
        assert_eq!(settled(&release(Outcome::InProgress, &["alpha", "beta/one"]), &gamma), None);
        assert_eq!(settled(&release(Outcome::InProgress, &["alpha", "gamma"]), &gamma), Some(WaitEnd::Reached));
        assert_eq!(settled(&release(Outcome::InProgress, &["alpha", "gamma"]), &Until::Completed), None);
        let wave = Until::Reached("prod/wave-1".into());
        assert_eq!(settled(&release(Outcome::InProgress, &["prod/wave-1"]), &wave), Some(WaitEnd::Reached));
    }

    #[test]
    fn each_end_of_a_release_has_its_own_exit_code() {
        let ends = [
            (Outcome::Completed, WaitEnd::Reached),
            (Outcome::Halted, WaitEnd::Halted),
            (Outcome::RolledBack, WaitEnd::RolledBack),
            (Outcome::Superseded, WaitEnd::Superseded),
        ];
        for (outcome, end) in ends {
            assert_eq!(settled(&release(outcome, &[]), &Until::Completed), Some(end));
        }
        let mut codes: Vec<u8> = ends.iter().map(|(_, e)| e.code()).collect();
        codes.push(WaitEnd::TimedOut.code());
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), 5, "codes must differ: {codes:?}");
        assert!(!codes[1..].iter().any(|c| [1, 2, 3].contains(c)), "1, 2 and 3 mean refused, usage, unreachable");
    }

    #[test]
    fn a_release_that_halts_after_the_stage_waited_for_has_still_reached_it() {
        let gamma = Until::Reached("gamma".into());
        assert_eq!(settled(&release(Outcome::Halted, &["gamma"]), &gamma), Some(WaitEnd::Reached));
        assert_eq!(settled(&release(Outcome::Halted, &["beta"]), &gamma), Some(WaitEnd::Halted));
    }
}
