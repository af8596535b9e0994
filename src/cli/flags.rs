//! `rollwave flags`: check a flagd flag definition file, and evaluate one flag in it.

use anyhow::Result;
use clap::Subcommand;
use rollwave_flags::{Context, Evaluation, FlagSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand)]
pub(super) enum FlagsCommand {
    /// Check a flagd flag definition (JSON or YAML); print a one-line summary, or every
    /// error as FILE:LINE:COL: message.
    Validate { file: PathBuf },
    /// Evaluate one flag for a context; exit 1 when the evaluation is an error.
    Eval {
        file: PathBuf,
        key: String,
        /// The evaluation context, a JSON object (`targetingKey` and attributes).
        #[arg(long, default_value = "{}")]
        context: String,
        /// Print the OFREP evaluation object instead of a line of text.
        #[arg(long)]
        json: bool,
    },
}

pub(super) fn run(command: FlagsCommand, out: &mut impl Write) -> Result<ExitCode> {
    match command {
        FlagsCommand::Validate { file } => {
            let Some(set) = load(&file)? else { return Ok(ExitCode::from(1)) };
            writeln!(
                out,
                "{}: {} flags ({} with targeting), {} evaluators",
                file.display(),
                set.len(),
                set.targeted(),
                set.evaluators()
            )?;
        }
        FlagsCommand::Eval { file, key, context, json } => {
            let Some(set) = load(&file)? else { return Ok(ExitCode::from(1)) };
            let ctx = match serde_json::from_str(&context)
                .map_err(|e| e.to_string())
                .and_then(|v| Context::from_value(&v).map_err(|e| format!("{}: {e}", e.code())))
            {
                Ok(ctx) => ctx,
                Err(e) => {
                    eprintln!("rollwave: --context: {e}");
                    return Ok(ExitCode::from(1));
                }
            };
            let evaluation = set.evaluate(&key, &ctx);
            if json {
                writeln!(out, "{}", evaluation.to_ofrep(&key))?;
            } else {
                writeln!(out, "{}", describe(&key, &evaluation))?;
            }
            if evaluation.error.is_some() {
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads and parses a flag definition; on errors prints them all and returns `None`.
fn load(path: &Path) -> Result<Option<FlagSet>> {
    let text = super::read(path)?;
    match FlagSet::parse(&path.display().to_string(), &text) {
        Ok(set) => Ok(Some(set)),
        Err(errors) => {
            let mut err = std::io::stderr().lock();
            for e in errors {
                writeln!(err, "{e}")?;
            }
            Ok(None)
        }
    }
}

/// One line: `KEY: variant "on" = true (TARGETING_MATCH)`.
fn describe(key: &str, e: &Evaluation<'_>) -> String {
    if let Some((code, details)) = &e.error {
        return format!("{key}: {code}: {details}");
    }
    match (e.variant, e.value) {
        (Some(variant), Some(value)) => format!("{key}: variant {variant:?} = {value} ({})", e.reason),
        _ => format!("{key}: no variant; the caller's default applies ({})", e.reason),
    }
}
