//! Why a deployment failed. The message is what the server records as the host's
//! failure reason, so each one names what went wrong and, where there is one, the fix.

use crate::hooks::{HOOKS_FILE, Step};
use rollwave_manifest::ManifestErrors;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeployError {
    #[error(
        "version {0:?} cannot name a release directory: use letters, digits, '-', '_' and '.', not starting with '.'"
    )]
    BadVersion(String),
    #[error("release {version} has no artifact and is not on this host; create the release with an artifact URL")]
    NoArtifact { version: String },
    #[error("cannot download the artifact {url}: {reason}")]
    Download { url: String, reason: String },
    #[error(
        "the artifact's sha256 is {actual}, but the release says {expected}: the download is corrupt or not this release's"
    )]
    ChecksumMismatch { expected: String, actual: String },
    #[error(
        "the artifact is not signed ({signature} is not there), and this environment requires a signature by one of \
         the manifest's signing keys ({keys}); sign it with minisign -S and publish the .minisig beside it"
    )]
    Unsigned { signature: String, keys: String },
    #[error("the artifact's signature {signature} {reason}; it is not installed")]
    BadSignature { signature: String, reason: String },
    #[error("the artifact {artifact} is not a readable .tar.gz: {reason}")]
    CorruptArchive { artifact: String, reason: String },
    #[error("the artifact's entry {path:?} {why}; every entry must stay inside the release directory")]
    UnsafeEntry { path: String, why: String },
    #[error("the artifact has no {HOOKS_FILE} at its root; add one (it may be empty: every hook is optional)")]
    MissingHooks,
    #[error("the artifact's {HOOKS_FILE} is invalid:\n{0}")]
    InvalidHooks(ManifestErrors),
    #[error(
        "release {version} on this host has sha256 {on_disk}, but the server asks for {asked}; it is running, so it is \
         not replaced: release under a new version"
    )]
    ReleaseConflict { version: String, on_disk: String, asked: String },
    #[error("hook {step} failed: {detail}")]
    HookFailed { step: Step, detail: String },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

impl DeployError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        DeployError::Io { path: path.display().to_string(), source }
    }
}
