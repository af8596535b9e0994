//! Property tests of the unpacker against hostile archives: paths that climb out or are
//! absolute, symbolic and hard links (alone and in chains), special files, sizes larger
//! than the data, truncated and corrupted gzip. Whatever the archive, unpacking never
//! panics, never changes anything outside the release directory, and leaves no link
//! there that leads outside it.

use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

/// How deep the release directory sits in the test's sandbox: deeper than any chain of
/// the generated links can climb, so that an escape lands in the sandbox, where it is
/// seen, and never in the real file system.
const DEPTH: usize = 32;

#[derive(Clone, Debug)]
enum Kind {
    File(Vec<u8>),
    Dir,
    Symlink(String),
    Hardlink(String),
    Fifo,
    /// A file whose header claims far more bytes than follow.
    Huge,
}

#[derive(Clone, Debug)]
struct Entry {
    path: String,
    kind: Kind,
    mode: u32,
}

/// Paths over a few names, so that entries meet: links made under links, targets that
/// are other entries; now and then one that climbs out or is absolute.
fn entry_path() -> impl Strategy<Value = String> {
    let names = prop::collection::vec(prop::sample::select(&["a", "b", "c", "rollwave-hooks.yaml"][..]), 1..4);
    prop_oneof![
        12 => names.prop_map(|n| n.join("/")),
        1 => Just("../a".to_owned()),
        1 => Just("/tmp/a".to_owned()),
        1 => Just("a/../../b".to_owned()),
        1 => Just("./a/./b".to_owned()),
    ]
}

/// Link targets: climbs, names, climbs after names, the absolute.
fn link_target() -> impl Strategy<Value = String> {
    let step = prop::sample::select(&["..", "..", "a", "b", "c", "."][..]);
    prop_oneof![
        8 => prop::collection::vec(step, 1..4).prop_map(|s| s.join("/")),
        1 => Just("/etc".to_owned()),
        1 => Just("rollwave-hooks.yaml".to_owned()),
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    let kind = prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Kind::File),
        3 => Just(Kind::Dir),
        5 => link_target().prop_map(Kind::Symlink),
        2 => link_target().prop_map(Kind::Hardlink),
        1 => Just(Kind::Fifo),
        1 => Just(Kind::Huge),
    ];
    let mode = prop::sample::select(vec![0o644, 0o755, 0o777, 0o000, 0o4755]);
    (entry_path(), kind, mode).prop_map(|(path, kind, mode)| Entry { path, kind, mode })
}

#[derive(Clone, Debug)]
enum Damage {
    None,
    Truncate(prop::sample::Index),
    /// Keeps this many bytes.
    Cut(usize),
    Flip(prop::sample::Index, u8),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        6 => Just(Damage::None),
        1 => any::<prop::sample::Index>().prop_map(Damage::Truncate),
        1 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(at, byte)| Damage::Flip(at, byte)),
    ]
}

/// Copies `text` into a header field as it is: the archive may say anything.
fn raw_field(field: &mut [u8], text: &str) {
    let bytes = text.as_bytes();
    let n = bytes.len().min(field.len());
    field[..n].copy_from_slice(&bytes[..n]);
}

/// The `.tar.gz` of `entries`, written header by header, with no check of its own.
fn archive(entries: &[Entry], damage: &Damage) -> Vec<u8> {
    let mut tar = Vec::new();
    for e in entries {
        let mut header = tar::Header::new_old();
        raw_field(&mut header.as_old_mut().name, &e.path);
        header.set_mode(e.mode);
        let (kind, data): (tar::EntryType, &[u8]) = match &e.kind {
            Kind::File(data) => (tar::EntryType::Regular, data),
            Kind::Dir => (tar::EntryType::Directory, &[]),
            Kind::Symlink(target) | Kind::Hardlink(target) => {
                raw_field(&mut header.as_old_mut().linkname, target);
                let kind =
                    if matches!(e.kind, Kind::Symlink(_)) { tar::EntryType::Symlink } else { tar::EntryType::Link };
                (kind, &[])
            }
            Kind::Fifo => (tar::EntryType::Fifo, &[]),
            Kind::Huge => (tar::EntryType::Regular, b"only this"),
        };
        header.set_entry_type(kind);
        header.set_size(if matches!(e.kind, Kind::Huge) { 1 << 40 } else { data.len() as u64 });
        header.set_cksum();
        tar.extend_from_slice(header.as_bytes());
        tar.extend_from_slice(data);
        tar.resize(tar.len().next_multiple_of(512), 0);
    }
    tar.extend_from_slice(&[0; 1024]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let mut bytes = gz.finish().unwrap();
    match damage {
        Damage::None => {}
        Damage::Truncate(at) => bytes.truncate(at.index(bytes.len())),
        Damage::Cut(n) => bytes.truncate(*n),
        Damage::Flip(at, byte) => {
            let i = at.index(bytes.len());
            bytes[i] ^= byte | 1;
        }
    }
    bytes
}

/// Everything under `root` but `skip`: each path's type, permissions, size, content and
/// link target, without following links.
fn snapshot(root: &Path, skip: &Path) -> BTreeMap<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path == skip {
            continue;
        }
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mode = meta.permissions().mode();
        let what = if meta.is_symlink() {
            format!("link {mode:o} -> {:?}", std::fs::read_link(&path).unwrap())
        } else if meta.is_dir() {
            for child in std::fs::read_dir(&path).unwrap() {
                stack.push(child.unwrap().path());
            }
            format!("dir {mode:o}")
        } else {
            format!("file {mode:o} {:?}", std::fs::read(&path).unwrap())
        };
        out.insert(path.strip_prefix(root).unwrap().to_path_buf(), what);
    }
    out
}

/// Where a link leads on disk: through every link on the way, as far as the path
/// exists, then the rest of it as written.
fn leads_to(link: &Path) -> Option<PathBuf> {
    match std::fs::canonicalize(link) {
        Ok(path) => Some(path),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => None,
        Err(_) => {
            let target = std::fs::read_link(link).ok()?;
            let full = link.parent()?.join(target);
            let parts: Vec<Component> = full.components().collect();
            (0..parts.len()).rev().find_map(|keep| {
                let base = std::fs::canonicalize(parts[..keep].iter().collect::<PathBuf>()).ok()?;
                let mut path = base;
                for part in &parts[keep..] {
                    match part {
                        Component::ParentDir => {
                            path.pop();
                        }
                        Component::Normal(name) => path.push(name),
                        _ => {}
                    }
                }
                Some(path)
            })
        }
    }
}

/// Every link under `dest`, where it leads, when that is outside `dest`.
fn links_leading_out(dest: &Path) -> Vec<(PathBuf, PathBuf)> {
    let inside = std::fs::canonicalize(dest).unwrap();
    let mut out = Vec::new();
    let mut stack = vec![dest.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_symlink() {
            if let Some(to) = leads_to(&path).filter(|to| !to.starts_with(&inside)) {
                out.push((path, to));
            }
        } else if meta.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|c| c.unwrap().path()));
        }
    }
    out
}

/// Unpacks `entries` in a fresh sandbox and checks that nothing outside the release
/// directory changed and that no link in it leads out; returns the unpacker's answer.
fn unpack_checked(entries: &[Entry], damage: &Damage) -> Result<(), String> {
    let sandbox = tempfile::tempdir().unwrap();
    let mut deep = sandbox.path().to_path_buf();
    for _ in 0..DEPTH {
        deep.push("d");
    }
    let dest = deep.join("release");
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::write(sandbox.path().join("secret"), "not yours").unwrap();
    std::fs::write(deep.join("sibling"), "not yours either").unwrap();
    let archive_path = sandbox.path().join("artifact.tar.gz");
    std::fs::write(&archive_path, archive(entries, damage)).unwrap();

    let before = snapshot(sandbox.path(), &dest);
    let result = unpack(&archive_path, &dest).map_err(|e| e.to_string());
    let after = snapshot(sandbox.path(), &dest);
    assert_eq!(before, after, "something outside the release directory changed ({result:?})");
    let out = links_leading_out(&dest);
    assert!(out.is_empty(), "links lead out of the release directory: {out:?} ({result:?})");
    result
}

fn file(path: &str) -> Entry {
    Entry { path: path.into(), kind: Kind::File(b"x".to_vec()), mode: 0o644 }
}
fn dir(path: &str) -> Entry {
    Entry { path: path.into(), kind: Kind::Dir, mode: 0o777 }
}
fn symlink(path: &str, target: &str) -> Entry {
    Entry { path: path.into(), kind: Kind::Symlink(target.into()), mode: 0o777 }
}
fn hardlink(path: &str, target: &str) -> Entry {
    Entry { path: path.into(), kind: Kind::Hardlink(target.into()), mode: 0o644 }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn no_archive_changes_anything_outside_the_release_or_leaves_a_link_leading_out(
        entries in prop::collection::vec(entry(), 1..8),
        damage in damage(),
    ) {
        let _ = unpack_checked(&entries, &damage);
    }
}

#[test]
fn a_plain_release_unpacks_with_its_links_inside() {
    let entries = [
        dir("bin"),
        file("lib/libx.so.1"),
        symlink("lib/libx.so", "libx.so.1"),
        symlink("bin/x", "../lib/libx.so"),
        hardlink("lib/copy", "lib/libx.so.1"),
        file("rollwave-hooks.yaml"),
    ];
    assert_eq!(unpack_checked(&entries, &Damage::None), Ok(()));
}

#[test]
fn entries_that_climb_out_are_refused() {
    for entries in [
        vec![file("../x")],
        vec![file("/x")],
        vec![symlink("l", "../x")],
        vec![symlink("a/l", "../../x")],
        vec![symlink("l", "/etc")],
        vec![hardlink("h", "../sibling")],
    ] {
        assert!(unpack_checked(&entries, &Damage::None).is_err(), "{entries:?}");
    }
}

#[test]
fn a_link_placed_through_another_link_cannot_lead_out() {
    // `a/b` leads to the release itself, so `a/b/c`, which reads as one level down
    // (and its `..` as `a`), is really at the top, and its `..` is the parent directory;
    // a directory entry at `c` would then change the parent's permissions.
    for entries in [
        vec![symlink("a/b", ".."), symlink("a/b/c", "..")],
        vec![symlink("a/b", ".."), symlink("a/b/c", ".."), dir("c")],
        // The same, the link's target climbing through a link made after it.
        vec![symlink("x", "l/.."), symlink("l", ".")],
        vec![symlink("x", "l/.."), symlink("l", "."), dir("x")],
        // A file through a link that stays inside is refused all the same.
        vec![symlink("l", "a"), dir("a"), file("l/f")],
    ] {
        assert!(unpack_checked(&entries, &Damage::None).is_err(), "{entries:?}");
    }
}

#[test]
fn a_hard_link_to_a_link_cannot_move_it_to_where_it_leads_out() {
    // A hard link to a symbolic link is a second symbolic link with the same target,
    // here one level higher than the target was written for.
    for entries in [
        vec![symlink("a/up", ".."), hardlink("up", "a/up")],
        vec![symlink("a/up", ".."), hardlink("up", "a/up"), dir("up")],
    ] {
        assert!(unpack_checked(&entries, &Damage::None).is_err(), "{entries:?}");
    }
}

#[test]
fn truncated_or_oversized_archives_are_errors() {
    let entries = [file("a"), Entry { path: "b".into(), kind: Kind::Huge, mode: 0o644 }];
    let err = unpack_checked(&entries, &Damage::None).unwrap_err();
    assert!(err.contains("not a readable"), "{err}");
    let whole = archive(&[file("a")], &Damage::None).len();
    for cut in [10, whole / 2, whole - 4] {
        assert!(unpack_checked(&[file("a")], &Damage::Cut(cut)).is_err(), "cut at {cut} of {whole}");
    }
}
