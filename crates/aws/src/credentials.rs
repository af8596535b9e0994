//! Credentials from the standard chain, as the AWS CLI and SDKs read it: the environment
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), then the profile
//! (`AWS_PROFILE`, else `default`) in the shared credentials file
//! (`AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`) and then in the shared
//! config file (`AWS_CONFIG_FILE`, else `~/.aws/config`, where it is `[profile NAME]`).
//!
//! Not read: SSO, `role_arn` (assume-role), `credential_process`, and the instance or
//! container metadata endpoints. A profile that needs one of them is an error that says
//! so, not a silent fallback to other credentials.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A key pair, with a session token for temporary credentials. `Debug` never shows the
/// secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    /// Where they were found, for messages: `environment` or `profile NAME in PATH`.
    pub source: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialsError {
    #[error(
        "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or give profile {profile:?} \
         aws_access_key_id and aws_secret_access_key in {files}"
    )]
    NotFound { profile: String, files: String },
    #[error("profile {profile:?} in {file} uses {key}, which rollwave does not read; give it a key pair")]
    Unsupported { profile: String, file: String, key: String },
    #[error("profile {profile:?} in {file} has aws_access_key_id but no aws_secret_access_key")]
    Incomplete { profile: String, file: String },
}

/// What the chain reads, so tests can give it an environment of their own.
pub trait Environment {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process's environment.
pub struct ProcessEnvironment;

impl Environment for ProcessEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl<const N: usize> Environment for [(&str, &str); N] {
    fn var(&self, name: &str) -> Option<String> {
        self.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    }
}

impl Credentials {
    /// The first credentials of the chain.
    pub fn from_chain(env: &dyn Environment) -> Result<Credentials, CredentialsError> {
        if let (Some(id), Some(secret)) = (env.var("AWS_ACCESS_KEY_ID"), env.var("AWS_SECRET_ACCESS_KEY")) {
            return Ok(Credentials {
                access_key_id: id,
                secret_access_key: secret,
                session_token: env.var("AWS_SESSION_TOKEN"),
                source: "environment".to_owned(),
            });
        }
        let profile = env.var("AWS_PROFILE").unwrap_or_else(|| "default".to_owned());
        let home = env.var("HOME").map(PathBuf::from);
        let in_home = |rest: &str| home.as_ref().map(|h| h.join(rest));
        let credentials_file =
            env.var("AWS_SHARED_CREDENTIALS_FILE").map(PathBuf::from).or(in_home(".aws/credentials"));
        let config_file = env.var("AWS_CONFIG_FILE").map(PathBuf::from).or(in_home(".aws/config"));
        // The credentials file names sections by the profile; the config file says
        // `profile NAME`, except for `default`.
        let config_section = if profile == "default" { profile.clone() } else { format!("profile {profile}") };
        let places = [(credentials_file, profile.clone()), (config_file, config_section)];
        for (file, section) in &places {
            let Some(file) = file else { continue };
            let Ok(text) = std::fs::read_to_string(file) else { continue };
            let Some(keys) = ini_sections(&text).remove(section.as_str()) else { continue };
            if let Some(found) = from_section(&keys, &profile, file)? {
                return Ok(found);
            }
        }
        let files: Vec<String> =
            places.iter().filter_map(|(f, _)| f.as_ref()).map(|f| f.display().to_string()).collect();
        Err(CredentialsError::NotFound { profile, files: files.join(" or ") })
    }
}

fn from_section(
    keys: &BTreeMap<String, String>,
    profile: &str,
    file: &Path,
) -> Result<Option<Credentials>, CredentialsError> {
    let file_name = || file.display().to_string();
    match (keys.get("aws_access_key_id"), keys.get("aws_secret_access_key")) {
        (Some(id), Some(secret)) => Ok(Some(Credentials {
            access_key_id: id.clone(),
            secret_access_key: secret.clone(),
            session_token: keys.get("aws_session_token").cloned(),
            source: format!("profile {profile} in {}", file_name()),
        })),
        (Some(_), None) => Err(CredentialsError::Incomplete { profile: profile.to_owned(), file: file_name() }),
        _ => match ["role_arn", "credential_process", "sso_session", "sso_start_url", "credential_source"]
            .into_iter()
            .find(|k| keys.contains_key(*k))
        {
            Some(key) => Err(CredentialsError::Unsupported {
                profile: profile.to_owned(),
                file: file_name(),
                key: key.to_owned(),
            }),
            None => Ok(None),
        },
    }
}

/// The sections of an INI file as the AWS tools write it: `[name]` headers, `key = value`
/// lines, `#` and `;` comments. (Nested `key =` blocks such as `s3 =` are kept as empty
/// values; nothing here reads them.) Written out rather than taken from a crate: these
/// files need twenty lines of it.
fn ini_sections(text: &str) -> BTreeMap<&str, BTreeMap<String, String>> {
    let mut sections: BTreeMap<&str, BTreeMap<String, String>> = BTreeMap::new();
    let mut current: Option<&str> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            sections.entry(name).or_default();
            current = Some(name);
            continue;
        }
        if let (Some(section), Some((key, value))) = (current, line.split_once('=')) {
            sections.entry(section).or_default().insert(key.trim().to_owned(), value.trim().to_owned());
        }
    }
    sections
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_comes_first_then_the_profile_in_the_credentials_file_then_in_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let credentials = dir.path().join("credentials");
        let config = dir.path().join("config");
        std::fs::write(
            &credentials,
            "# keys\n[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = s1\n\n[ci]\n\
             aws_access_key_id=AKIDCI\naws_secret_access_key=s2\naws_session_token = t2\n",
        )
        .unwrap();
        std::fs::write(
            &config,
            "[profile deploy]\nregion = us-east-1\naws_access_key_id = AKIDCONFIG\naws_secret_access_key = s3\n\
             [profile sso]\nsso_session = corp\n",
        )
        .unwrap();
        let (c, f) = (credentials.to_str().unwrap(), config.to_str().unwrap());
        let env =
            [("AWS_ACCESS_KEY_ID", "AKIDENV"), ("AWS_SECRET_ACCESS_KEY", "s0"), ("AWS_SHARED_CREDENTIALS_FILE", c)];
        let found = Credentials::from_chain(&env).unwrap();
        assert_eq!((found.access_key_id.as_str(), found.source.as_str()), ("AKIDENV", "environment"));

        let found = Credentials::from_chain(&[("AWS_SHARED_CREDENTIALS_FILE", c), ("AWS_CONFIG_FILE", f)]).unwrap();
        assert_eq!(found.access_key_id, "AKIDDEFAULT");
        let found = Credentials::from_chain(&[
            ("AWS_PROFILE", "ci"),
            ("AWS_SHARED_CREDENTIALS_FILE", c),
            ("AWS_CONFIG_FILE", f),
        ])
        .unwrap();
        assert_eq!((found.access_key_id.as_str(), found.session_token.as_deref()), ("AKIDCI", Some("t2")));
        let found = Credentials::from_chain(&[
            ("AWS_PROFILE", "deploy"),
            ("AWS_SHARED_CREDENTIALS_FILE", c),
            ("AWS_CONFIG_FILE", f),
        ])
        .unwrap();
        assert_eq!(found.access_key_id, "AKIDCONFIG");
        assert!(!format!("{found:?}").contains("s3"), "Debug hides the secret: {found:?}");

        let sso = Credentials::from_chain(&[
            ("AWS_PROFILE", "sso"),
            ("AWS_SHARED_CREDENTIALS_FILE", c),
            ("AWS_CONFIG_FILE", f),
        ]);
        assert!(matches!(sso, Err(CredentialsError::Unsupported { ref key, .. }) if key == "sso_session"), "{sso:?}");
        let missing = Credentials::from_chain(&[
            ("AWS_PROFILE", "nobody"),
            ("AWS_SHARED_CREDENTIALS_FILE", c),
            ("AWS_CONFIG_FILE", f),
        ])
        .unwrap_err();
        assert!(missing.to_string().contains("profile \"nobody\""), "{missing}");
    }
}
