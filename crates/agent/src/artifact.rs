//! Getting an artifact onto the host and into a directory: download (or read a local
//! file), sha256, and a `.tar.gz` unpacked only when every entry stays inside.

use crate::error::DeployError;
use rollwave_api::tls::Roots;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// Where an artifact comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// An `http://` or `https://` URL.
    Url(String),
    /// A `file://` URL or a plain path.
    File(PathBuf),
}

impl Source {
    pub fn parse(artifact: &str) -> Source {
        if artifact.starts_with("http://") || artifact.starts_with("https://") {
            return Source::Url(artifact.to_owned());
        }
        if let Some(rest) = artifact.strip_prefix("file://") {
            let rest = rest.strip_prefix("localhost").unwrap_or(rest);
            return Source::File(PathBuf::from(percent_decode(rest)));
        }
        Source::File(PathBuf::from(artifact))
    }
}

/// `%41` → `A`; anything malformed is kept as it is.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An artifact on the local disk.
#[derive(Debug)]
pub struct Local {
    pub path: PathBuf,
    pub sha256: String,
    /// A download of ours, to delete once unpacked.
    pub downloaded: bool,
}

/// The HTTP client of downloads (artifacts and their signatures): statuses are answers,
/// not errors, and a stalled transfer ends, however long a whole one may take.
pub(crate) fn downloader(roots: &Roots) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .tls_config(roots.tls_config())
        .build()
        .into()
}

/// Makes the artifact available as a local file, with its sha256. Downloads go to
/// `download_to`.
pub fn fetch(artifact: &str, download_to: &Path, roots: &Roots) -> Result<Local, DeployError> {
    match Source::parse(artifact) {
        Source::File(path) => {
            let file = File::open(&path).map_err(|e| DeployError::Download {
                url: artifact.to_owned(),
                reason: format!("cannot open {}: {e}", path.display()),
            })?;
            let sha256 = copy_hashing(file, &mut std::io::sink())
                .map_err(|e| DeployError::Download { url: artifact.to_owned(), reason: e.to_string() })?;
            Ok(Local { path, sha256, downloaded: false })
        }
        Source::Url(url) => {
            let failed = |reason: String| DeployError::Download { url: url.clone(), reason };
            let mut response = downloader(roots).get(&url).call().map_err(|e| failed(e.to_string()))?;
            let status = response.status();
            if !status.is_success() {
                return Err(failed(format!("the server answered {status}")));
            }
            let mut out = File::create(download_to).map_err(|e| DeployError::io(download_to, e))?;
            let sha256 = copy_hashing(response.body_mut().as_reader(), &mut out).map_err(|e| failed(e.to_string()))?;
            out.sync_all().map_err(|e| DeployError::io(download_to, e))?;
            Ok(Local { path: download_to.to_owned(), sha256, downloaded: true })
        }
    }
}

/// Copies `from` into `to` and returns the sha256 of what passed, in lowercase hex.
fn copy_hashing(mut from: impl Read, to: &mut impl Write) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        to.write_all(&buf[..n])?;
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Why a path may not be unpacked, if it may not.
fn escapes(path: &Path) -> Option<&'static str> {
    for c in path.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => return Some("is an absolute path"),
            Component::ParentDir => return Some("climbs out with \"..\""),
            Component::CurDir | Component::Normal(_) => {}
        }
    }
    None
}

/// Whether a symlink at `link` (relative to the root) pointing at `target` stays inside.
/// The target may climb (`..`) only at its start, no higher than the link's directory
/// is deep, then go down: since no entry is unpacked through a link (see
/// [`through_link`]), the link's directory is a real one and every `..` climbs exactly
/// what it says, whatever links the archive makes before or after it. A `..` after a
/// name could climb out of wherever a link under that name leads.
fn symlink_stays_inside(link: &Path, target: &Path) -> bool {
    let depth = link.parent().map_or(0, |p| p.components().filter(|c| matches!(c, Component::Normal(_))).count());
    let mut climbs = 0;
    let mut descended = false;
    for c in target.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => return false,
            Component::ParentDir if descended => return false,
            Component::ParentDir => climbs += 1,
            Component::Normal(_) => descended = true,
            Component::CurDir => {}
        }
    }
    climbs <= depth
}

/// The first of `path`'s ancestors inside `dest`, or `path` itself, that is a symbolic
/// link already there. An entry unpacked through a link lands wherever the link leads
/// (tar refuses only files outside, not a directory's permissions nor a new link), and
/// a hard link to a link is a copy of it that may lead elsewhere from its new place.
fn through_link(dest: &Path, path: &Path) -> Option<PathBuf> {
    let mut at = PathBuf::new();
    for c in path.components() {
        if let Component::Normal(name) = c {
            at.push(name);
            if std::fs::symlink_metadata(dest.join(&at)).is_ok_and(|m| m.file_type().is_symlink()) {
                return Some(at);
            }
        }
    }
    None
}

/// Unpacks the `.tar.gz` at `archive` into `dest` (an empty directory). Every entry must
/// be a file, directory or link that stays inside `dest`; the first that does not stops
/// the unpacking with an error naming it. The whole gzip stream is read, so a truncated
/// or corrupt archive is an error even when the tar entries happen to end cleanly.
pub fn unpack(archive: &Path, dest: &Path) -> Result<(), DeployError> {
    let name = archive.display().to_string();
    let corrupt = |e: std::io::Error| DeployError::CorruptArchive { artifact: name.clone(), reason: e.to_string() };
    let file = File::open(archive).map_err(|e| DeployError::io(archive, e))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(file)));
    tar.set_overwrite(true);
    tar.set_preserve_permissions(false);
    for entry in tar.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let path = entry.path().map_err(corrupt)?.into_owned();
        let unsafe_entry = |why: &str| DeployError::UnsafeEntry { path: path.display().to_string(), why: why.into() };
        if let Some(why) = escapes(&path) {
            return Err(unsafe_entry(why));
        }
        if let Some(link) = through_link(dest, &path) {
            return Err(unsafe_entry(&format!("is or goes through the link {}, unpacked before it", link.display())));
        }
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Regular
            | tar::EntryType::Continuous
            | tar::EntryType::GNUSparse
            | tar::EntryType::Directory => {}
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry.link_name().map_err(corrupt)?.map(|t| t.into_owned()).unwrap_or_default();
                let inside = if kind == tar::EntryType::Symlink {
                    symlink_stays_inside(&path, &target)
                } else {
                    escapes(&target).is_none() && through_link(dest, &target).is_none()
                };
                if !inside {
                    return Err(unsafe_entry(&format!(
                        "links to {:?}, outside the release directory",
                        target.display().to_string()
                    )));
                }
            }
            tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => continue,
            _ => return Err(unsafe_entry("is a device, a FIFO or another special file")),
        }
        match entry.unpack_in(dest) {
            Ok(true) => {}
            Ok(false) => return Err(unsafe_entry("would be written outside the release directory")),
            Err(e) => {
                use std::io::ErrorKind::*;
                return Err(match e.kind() {
                    UnexpectedEof | InvalidData | InvalidInput | Other => corrupt(e),
                    _ => DeployError::io(dest, e),
                });
            }
        }
    }
    let mut rest = tar.into_inner();
    std::io::copy(&mut rest, &mut std::io::sink()).map_err(corrupt)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources() {
        assert_eq!(Source::parse("https://a/b.tar.gz"), Source::Url("https://a/b.tar.gz".into()));
        assert_eq!(Source::parse("file:///tmp/a%20b.tar.gz"), Source::File("/tmp/a b.tar.gz".into()));
        assert_eq!(Source::parse("file://localhost/tmp/x"), Source::File("/tmp/x".into()));
        assert_eq!(Source::parse("rel/x.tar.gz"), Source::File("rel/x.tar.gz".into()));
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn links_must_stay_inside() {
        assert!(symlink_stays_inside(Path::new("a/b"), Path::new("../c")));
        assert!(symlink_stays_inside(Path::new("a/b/c"), Path::new("../../d/e")));
        assert!(!symlink_stays_inside(Path::new("a/b"), Path::new("./c/../d")), "a .. after a name");
        assert!(!symlink_stays_inside(Path::new("a/b"), Path::new("../../c")));
        assert!(!symlink_stays_inside(Path::new("b"), Path::new("..")));
        assert!(!symlink_stays_inside(Path::new("b"), Path::new("/etc/passwd")));
        assert_eq!(escapes(Path::new("./a/b")), None);
        assert!(escapes(Path::new("a/../../b")).is_some());
        assert!(escapes(Path::new("/etc/x")).is_some());
    }
}

#[cfg(test)]
mod fuzz;
