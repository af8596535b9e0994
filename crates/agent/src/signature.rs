//! Checking an artifact's minisign signature (ed25519) against the keys the manifest
//! names. The signature is the file minisign writes beside what it signs,
//! `ARTIFACT.minisig`, fetched from where the artifact came from; it is checked over the
//! very bytes about to be unpacked, after their sha256.

use crate::artifact::{Local, Source};
use crate::error::DeployError;
use minisign_verify::{PublicKey, Signature};
use rollwave_api::tls::Roots;
use std::io::Read;
use std::path::Path;

/// The keys a deployment's artifact may be signed with, from the manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signatures {
    /// Whether the host's environment refuses an artifact with no signature.
    pub required: bool,
    /// (name, base64 public key).
    pub keys: Vec<(String, String)>,
}

/// What a signature check found on an artifact it let through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checked {
    /// Signed by this key of the manifest; minisign's trusted comment beside it.
    SignedBy { key: String, comment: String },
    /// No signature, where none is required.
    Unsigned,
}

/// minisign's signature files are four short lines; anything longer is not one.
const MAX_SIGNATURE_BYTES: u64 = 16 * 1024;

/// Where the signature of `artifact` is: beside it, with `.minisig` appended.
fn signature_location(artifact: &str) -> String {
    format!("{artifact}.minisig")
}

/// Checks `local`, fetched from `artifact`, against `signatures`. A signature that is
/// there but does not verify is refused whether or not one is required: it means the
/// artifact was changed or signed by a key nobody named.
pub fn check(artifact: &str, local: &Local, signatures: &Signatures, roots: &Roots) -> Result<Checked, DeployError> {
    let location = signature_location(artifact);
    let Some(text) = fetch_signature(&location, roots)? else {
        if signatures.required {
            return Err(DeployError::Unsigned { signature: location, keys: names(signatures) });
        }
        return Ok(Checked::Unsigned);
    };
    let bad = |reason: String| DeployError::BadSignature { signature: location.clone(), reason };
    let signature = Signature::decode(&text).map_err(|_| bad("is not a minisign signature".into()))?;
    let mut legacy = false;
    for (name, base64) in &signatures.keys {
        let key = PublicKey::from_base64(base64)
            .map_err(|_| bad(format!("cannot be checked: the manifest's key {name:?} is not a minisign public key")))?;
        let mut verifier = match key.verify_stream(&signature) {
            Ok(v) => v,
            Err(minisign_verify::Error::UnsupportedLegacyMode) => {
                legacy = true;
                continue;
            }
            // Signed by another key: try the next one.
            Err(_) => continue,
        };
        let file = std::fs::File::open(&local.path).map_err(|e| DeployError::io(&local.path, e))?;
        for_each_chunk(file, |chunk| verifier.update(chunk)).map_err(|e| DeployError::io(&local.path, e))?;
        return match verifier.finalize() {
            Ok(()) => Ok(Checked::SignedBy { key: name.clone(), comment: signature.trusted_comment().to_owned() }),
            Err(_) => Err(bad(format!(
                "by key {name:?} does not match the artifact: it was changed after it was signed, or the signature is another file's"
            ))),
        };
    }
    if legacy {
        return Err(bad("is in minisign's legacy format (minisign -l); sign without -l".into()));
    }
    Err(bad(format!("is by none of the keys the manifest names ({})", names(signatures))))
}

fn names(signatures: &Signatures) -> String {
    signatures.keys.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
}

fn for_each_chunk(mut from: impl Read, mut each: impl FnMut(&[u8])) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => each(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The signature's text; `None` when there is none (no such file, or a 404).
fn fetch_signature(location: &str, roots: &Roots) -> Result<Option<String>, DeployError> {
    let failed = |reason: String| DeployError::Download { url: location.to_owned(), reason };
    let mut text = String::new();
    match Source::parse(location) {
        Source::File(path) => match std::fs::File::open(&path) {
            Ok(file) => {
                read_limited(file, &mut text, &path)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(failed(format!("cannot open {}: {e}", path.display()))),
        },
        Source::Url(url) => {
            let mut response =
                crate::artifact::downloader(roots).get(&url).call().map_err(|e| failed(e.to_string()))?;
            match response.status().as_u16() {
                404 | 410 => return Ok(None),
                s if !(200..300).contains(&s) => {
                    return Err(failed(format!("the server answered {}", response.status())));
                }
                _ => {}
            }
            read_limited(response.body_mut().as_reader(), &mut text, Path::new(&url))?;
        }
    }
    Ok(Some(text))
}

fn read_limited(from: impl Read, into: &mut String, path: &Path) -> Result<(), DeployError> {
    let mut limited = from.take(MAX_SIGNATURE_BYTES + 1);
    limited.read_to_string(into).map_err(|e| DeployError::io(path, e))?;
    if into.len() as u64 > MAX_SIGNATURE_BYTES {
        return Err(DeployError::BadSignature {
            signature: path.display().to_string(),
            reason: format!("is over {MAX_SIGNATURE_BYTES} bytes: not a minisign signature"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/signed")
    }

    fn key(name: &str) -> (String, String) {
        let text = std::fs::read_to_string(fixtures().join(format!("{name}.pub"))).unwrap();
        (name.to_owned(), text.lines().nth(1).unwrap().to_owned())
    }

    fn local(path: &Path) -> Local {
        Local { path: path.to_owned(), sha256: String::new(), downloaded: false }
    }

    fn check_fixture(dir: &str, keys: &[&str], required: bool) -> Result<Checked, DeployError> {
        let path = fixtures().join(dir).join("app.tar.gz");
        let signatures = Signatures { required, keys: keys.iter().map(|k| key(k)).collect() };
        check(path.to_str().unwrap(), &local(&path), &signatures, &Roots::default())
    }

    #[test]
    fn an_artifact_signed_by_a_named_key_passes_and_says_by_which() {
        let checked = check_fixture("", &["other", "ci"], true).unwrap();
        assert_eq!(
            checked,
            Checked::SignedBy { key: "ci".into(), comment: "rollwave fixture: app.tar.gz".into() },
            "the key that signed it, not the first named"
        );
    }

    #[test]
    fn a_changed_artifact_or_another_key_is_refused_even_where_signatures_are_not_required() {
        let err = check_fixture("tampered", &["ci"], false).unwrap_err().to_string();
        assert!(err.contains("tampered/app.tar.gz.minisig") && err.contains("changed after it was signed"), "{err}");
        let err = check_fixture("other-key", &["ci"], false).unwrap_err().to_string();
        assert!(err.contains("by none of the keys the manifest names (ci)"), "{err}");
        let err = check_fixture("legacy", &["ci"], true).unwrap_err().to_string();
        assert!(err.contains("legacy format") && err.contains("without -l"), "{err}");
    }

    #[test]
    fn no_signature_is_refused_only_where_one_is_required() {
        assert_eq!(check_fixture("unsigned", &["ci"], false).unwrap(), Checked::Unsigned);
        let err = check_fixture("unsigned", &["ci", "other"], true).unwrap_err().to_string();
        assert!(err.contains("unsigned/app.tar.gz.minisig") && err.contains("ci, other"), "{err}");
    }

    #[test]
    fn what_is_not_a_signature_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let artifact = dir.path().join("app.tar.gz");
        std::fs::copy(fixtures().join("app.tar.gz"), &artifact).unwrap();
        let signatures = Signatures { required: false, keys: vec![key("ci")] };
        let check_with = |sig: &[u8]| {
            std::fs::write(dir.path().join("app.tar.gz.minisig"), sig).unwrap();
            check(artifact.to_str().unwrap(), &local(&artifact), &signatures, &Roots::default())
                .unwrap_err()
                .to_string()
        };
        assert!(check_with(b"untrusted comment: x\nnot base64\n").contains("is not a minisign signature"));
        assert!(check_with(&vec![b'a'; 20_000]).contains("is over 16384 bytes"));
    }
}
