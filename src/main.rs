//! `rollwave`: one binary for the whole system. Each subcommand is a thin shell over a
//! library crate; this file turns their errors into messages and exit codes.
//!
//! Exit codes: 0 success; 1 the input was read but is invalid (a manifest, scenario or
//! flag definition error, with every problem listed as `FILE:LINE:COL: message`, or a flag
//! evaluation that is an error); 2 bad usage or a file
//! that cannot be read. A closed output pipe ends quietly.

mod cli;

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::run() {
        Ok(code) => code,
        Err(err) => {
            if let Some(io) = err.downcast_ref::<std::io::Error>()
                && io.kind() == std::io::ErrorKind::BrokenPipe
            {
                return ExitCode::SUCCESS;
            }
            let _ = writeln!(std::io::stderr(), "rollwave: {err:#}");
            ExitCode::from(2)
        }
    }
}
