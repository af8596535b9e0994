//! Reads rollwave's YAML pipeline manifest into the resolved domain types of
//! [`rollwave_core::manifest`], reporting every problem found (not just the first) as
//! `file:line:col: message`, and emits the manifest's JSON Schema.
//!
//! ```
//! let text = "\
//! service: checkout
//! environments:
//!   prod: { regions: { us-east-2: { zones: { use2-az1: 3 } } } }
//! stages:
//!   - { name: prod, environment: prod }
//! ";
//! let manifest = rollwave_manifest::parse_manifest("pipeline.yaml", text).unwrap();
//! assert_eq!(manifest.stages[0].waves[0].name, "wave-1");
//!
//! let err = rollwave_manifest::parse_manifest("pipeline.yaml", "servce: checkout\n").unwrap_err();
//! assert!(err.to_string().starts_with(
//!     "pipeline.yaml:1:1: unknown key \"servce\"; did you mean \"service\"?"
//! ));
//! ```
//!
//! The [`yaml`] module holds the reusable pieces (a [`yaml::Decoder`] that collects
//! located errors, and scalar grammars such as [`yaml::parse_duration`]) so that other
//! YAML files, like the simulator's scenarios, are read with the same conventions.

mod decode;
mod grammar;
mod keys;
mod schema;
pub mod yaml;

use std::fmt;

pub use decode::{MONITOR_METHODS, SecretCheck, SecretRef, SecretUse, redacted_url};
pub use schema::manifest_schema;

/// A position in the source text, both 1-based, as editors count them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// One problem in a YAML document, at the node that causes it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct ManifestError {
    pub location: Location,
    pub message: String,
}

/// Every problem found in one file, in document order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestErrors {
    pub file: String,
    pub errors: Vec<ManifestError>,
}

impl fmt::Display for ManifestErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}:{error}", self.file)?;
        }
        Ok(())
    }
}

impl std::error::Error for ManifestErrors {}

/// Parses a manifest and resolves it: references become indexes, defaults and
/// overrides (wave over stage over `strategy`, field by field) are applied.
///
/// `file` only names the source in error messages. On failure every error found is
/// returned, sorted by position.
pub fn parse_manifest(file: &str, text: &str) -> Result<rollwave_core::manifest::Manifest, ManifestErrors> {
    parse_manifest_checking_secrets(file, text, &decode::no_secret_check)
}

/// [`parse_manifest`], where every secret reference (`{ env: NAME }`, `{ file: PATH }`)
/// is also given to `check`, with what it stands for, whose error is reported at the
/// reference. The server uses it to refuse a manifest whose secrets it could not read.
pub fn parse_manifest_checking_secrets(
    file: &str,
    text: &str,
    check: SecretCheck<'_>,
) -> Result<rollwave_core::manifest::Manifest, ManifestErrors> {
    let mut decoder = yaml::Decoder::new(file);
    let manifest = decoder.parse_document(text).and_then(|root| decode::manifest(&mut decoder, &root, check));
    decoder.finish(manifest)
}
