//! Pinning: each reference is checked against the blob root's rules and captured
//! at once. A reference resolves from what rockup already holds first — the
//! file the deletion guard set aside, or its pre-link (one link per file, made
//! at the point in time), read from there as it is — then from the live tree,
//! hard-linked into rockup's work directory, or, where a link is impossible
//! (another filesystem, EPERM), read later with a before/after size+mtime check. What
//! cannot be captured becomes a [`Problem`] naming the path and the record key,
//! never a silent skip.

use std::collections::HashSet;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::common::names::{display_key, normalize_relative_path};
use crate::common::nofollow::{is_symlink_refusal, link_open_file, open_beneath};
use crate::common::references::Reference;
use crate::digest::Sha256;
use crate::error::{Error, Problem, Result};
use crate::source::{GuardHold, Prelinks};

/// An external file captured at the backup's point in time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pinned {
    /// Normalized path relative to the blob root.
    pub path: String,
    /// Where to read it: the pin (hard link) or, unlinked, the live file.
    pub read_from: PathBuf,
    /// Size when pinned.
    pub size: u64,
    /// Modification time when pinned, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Permission bits.
    pub mode: u32,
    /// What the record says the file should hash to.
    pub expected_sha256: Option<Sha256>,
    /// The record referencing it, for problems.
    pub record_key: String,
}

impl Pinned {
    /// `problem` (about this file) naming the record that references it.
    pub fn problem(&self, problem: Problem) -> Problem {
        problem.in_record(self.record_key.clone())
    }
}

/// Size, mtime and mode of a file, as compared before and after reading it.
pub fn file_stamp(meta: &std::fs::Metadata) -> (u64, i64, u32) {
    (
        meta.len(),
        meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        meta.mode() & 0o7777,
    )
}

/// Pins referenced files into a directory on the blob root's filesystem.
pub struct Pinner {
    root: PathBuf,
    pins: PathBuf,
    link: bool,
    /// The paths pinned so far, by the first 16 bytes of their SHA-256
    /// (16 MiB for a million files; a collision is beyond reach).
    seen: HashSet<[u8; 16]>,
    prelinks: Option<Prelinks>,
    /// The application's deletion guard, held until pinning ends.
    guard: Option<GuardHold>,
    /// Files pinned from their pre-link because the live file was gone.
    pub rescued: u64,
}

/// What became of one reference.
pub enum Pin {
    /// Newly captured (boxed: the other outcomes are small).
    Captured(Box<Pinned>),
    /// Already captured for an earlier record (and nothing new to check).
    Duplicate,
    /// Could not be captured.
    Problem(Problem),
}

/// Why a path through a symlink is not pinned.
const SYMLINK_REFUSED: &str =
    "a symlink on its path under the blob root: rockup never follows symlinks there";

/// Where a referenced file was found.
enum Found {
    /// Set aside by the deletion guard (removed when the guard is let go).
    SetAside(PathBuf),
    /// rockup's pre-link (kept as long as the work directory), and whether
    /// the live file is gone (rescued by the pre-link).
    Prelinked(PathBuf, bool),
    /// The live file, opened without following symlinks, and its path.
    Live(std::fs::File, PathBuf),
}

/// One reference being pinned: its normalized path, its record, what it expects.
struct Wanted {
    path: String,
    record_key: String,
    reference: Reference,
}

impl Wanted {
    fn problem(&self, problem: fn(String, String) -> Problem, detail: impl Into<String>) -> Pin {
        Pin::Problem(problem(self.path.clone(), detail.into()).in_record(self.record_key.clone()))
    }
}

impl Pinner {
    /// A pinner for files under `root`, linking into `pins` (created) when both are
    /// on one filesystem.
    pub fn new(root: &Path, pins: PathBuf) -> Result<Self> {
        let root = root.canonicalize().map_err(|e| Error::io(root, e))?;
        std::fs::create_dir_all(&pins).map_err(|e| Error::io(&pins, e))?;
        let device = |dir: &Path| {
            std::fs::metadata(dir)
                .map(|m| m.dev())
                .map_err(|e| Error::io(dir, e))
        };
        Ok(Self {
            link: device(&root)? == device(&pins)?,
            root,
            pins,
            seen: HashSet::new(),
            prelinks: None,
            guard: None,
            rescued: 0,
        })
    }

    /// Resolves references from `prelinks` first, then from the live tree.
    pub fn with_prelinks(mut self, prelinks: Option<Prelinks>) -> Self {
        self.prelinks = prelinks.filter(|p| p.files > 0);
        self
    }

    /// Resolves references from the files the application removed through
    /// `guard` first (set aside as they were), and holds it until [`Pinner::finish`].
    pub fn with_guard(mut self, guard: Option<GuardHold>) -> Self {
        self.guard = guard;
        self
    }

    /// Ends pinning: lets go of the deletion guard; returns the files rescued
    /// by pre-links.
    pub fn finish(self) -> u64 {
        self.rescued
    }

    /// Checks one reference against the rules and pins the file.
    pub fn pin(&mut self, record_key: &[u8], reference: Reference) -> Pin {
        let record_key = display_key(record_key);
        let path = match normalize_relative_path(&reference.path) {
            Ok(path) => path,
            Err(reason) => {
                let problem = Problem::invalid(reference.path, reason);
                return Pin::Problem(problem.in_record(record_key));
            }
        };
        let wanted = Wanted {
            path,
            record_key,
            reference,
        };
        let found = match self.resolve(&wanted) {
            Ok(found) => found,
            Err(pin) => return pin,
        };
        self.pin_found(wanted, found)
    }

    /// Where the file is: set aside by the deletion guard, its pre-link (both
    /// rockup's own links to the file as it was at the point in time), or the
    /// live file, opened under the root without following any symlink.
    fn resolve(&mut self, wanted: &Wanted) -> std::result::Result<Found, Pin> {
        let set_aside = self
            .guard
            .as_ref()
            .and_then(|g| g.set_aside(&self.root.join(&wanted.path)));
        if let Some(link) = set_aside {
            return Ok(Found::SetAside(link));
        }
        if let Some(link) = self.prelinked(&wanted.path) {
            let gone = std::fs::symlink_metadata(self.root.join(&wanted.path)).is_err();
            return Ok(Found::Prelinked(link, gone));
        }
        let file = match open_beneath(&self.root, &wanted.path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(wanted.problem(Problem::missing, "file does not exist"))
            }
            Err(e) if is_symlink_refusal(&e) => {
                return Err(wanted.problem(Problem::invalid, SYMLINK_REFUSED))
            }
            Err(e) => return Err(wanted.problem(Problem::missing, e.to_string())),
        };
        match file.metadata() {
            Ok(meta) if meta.is_symlink() => Err(wanted.problem(Problem::invalid, SYMLINK_REFUSED)),
            Ok(meta) if !meta.is_file() => {
                Err(wanted.problem(Problem::invalid, "not a regular file"))
            }
            Ok(_) => Ok(Found::Live(file, self.root.join(&wanted.path))),
            Err(e) => Err(wanted.problem(Problem::missing, e.to_string())),
        }
    }

    /// The pre-link of `path`, if the tree had a regular file there.
    fn prelinked(&self, path: &str) -> Option<PathBuf> {
        let link = self.prelinks.as_ref()?.dir().join(path);
        std::fs::symlink_metadata(&link)
            .is_ok_and(|m| m.is_file())
            .then_some(link)
    }

    /// Captures a resolved file: a pre-link already holds it as it was and
    /// lasts as long as the work directory, so it is read from there; a live or
    /// set-aside file (the guard removes those when let go) is hard-linked into
    /// the pins, or read from its path where links are impossible. A path seen
    /// before is a duplicate.
    fn pin_found(&mut self, wanted: Wanted, found: Found) -> Pin {
        let digest: [u8; 16] = Sha256::of(wanted.path.as_bytes()).as_bytes()[..16]
            .try_into()
            .expect("16 bytes");
        let first = self.seen.insert(digest);
        let (linked, path) = match found {
            Found::Prelinked(path, gone) => {
                self.rescued += u64::from(first && gone);
                return self.first_or_duplicate(first, wanted, path);
            }
            Found::SetAside(path) | Found::Live(_, path) if !self.link => {
                return self.first_or_duplicate(first, wanted, path)
            }
            _ if !first => return self.duplicate(wanted, self.pin_path(&digest)),
            Found::SetAside(path) => (std::fs::hard_link(&path, self.pin_path(&digest)), path),
            Found::Live(file, path) => (link_open_file(&file, &self.pin_path(&digest)), path),
        };
        match linked {
            Ok(()) => self.captured(wanted, self.pin_path(&digest)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                wanted.problem(Problem::missing, "deleted before it could be pinned")
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EXDEV | libc::EPERM)) => {
                self.link = false;
                self.captured(wanted, path)
            }
            Err(e) => wanted.problem(Problem::missing, format!("cannot pin: {e}")),
        }
    }

    fn pin_path(&self, digest: &[u8; 16]) -> PathBuf {
        self.pins.join(hex::encode(digest))
    }

    fn first_or_duplicate(&self, first: bool, wanted: Wanted, read_from: PathBuf) -> Pin {
        match first {
            true => self.captured(wanted, read_from),
            false => self.duplicate(wanted, read_from),
        }
    }

    /// A file an earlier record already referenced: nothing more to capture,
    /// unless this record states a size or hash of its own to check.
    fn duplicate(&self, wanted: Wanted, read_from: PathBuf) -> Pin {
        if wanted.reference.sha256.is_none() && wanted.reference.size.is_none() {
            return Pin::Duplicate;
        }
        self.captured(wanted, read_from)
    }

    fn captured(&self, wanted: Wanted, read_from: PathBuf) -> Pin {
        let meta = match std::fs::symlink_metadata(&read_from) {
            Ok(meta) => meta,
            Err(e) => {
                return wanted.problem(Problem::missing, format!("vanished while pinning: {e}"))
            }
        };
        if !meta.is_file() {
            return wanted.problem(Problem::invalid, "not a regular file");
        }
        let (size, mtime_ns, mode) = file_stamp(&meta);
        if let Some(expected) = wanted.reference.size.filter(|&e| e != size) {
            return wanted.problem(
                Problem::mismatch,
                format!("record says {expected} bytes, file has {size}"),
            );
        }
        Pin::Captured(Box::new(Pinned {
            path: wanted.path,
            read_from,
            size,
            mtime_ns,
            mode,
            expected_sha256: wanted.reference.sha256,
            record_key: wanted.record_key,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ProblemKind;

    #[test]
    fn pinning_rejects_symlink_escapes_and_non_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(dir.path().join("secret"), b"s").unwrap();
        std::fs::write(root.join("ok.bin"), b"data").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("escape")).unwrap();
        let mut pinner = Pinner::new(&root, dir.path().join("pins")).unwrap();
        let reference = |p: &str| Reference {
            path: p.into(),
            sha256: None,
            size: None,
        };
        let kind = |pin: Pin| match pin {
            Pin::Problem(p) => Some(p.kind),
            _ => None,
        };
        assert_eq!(
            kind(pinner.pin(b"k", reference("escape"))),
            Some(ProblemKind::Invalid)
        );
        assert_eq!(
            kind(pinner.pin(b"k", reference("sub"))),
            Some(ProblemKind::Invalid)
        );
        assert_eq!(
            kind(pinner.pin(b"k", reference("nope"))),
            Some(ProblemKind::Missing)
        );
        assert_eq!(
            kind(pinner.pin(b"k", reference("../secret"))),
            Some(ProblemKind::Invalid)
        );
        match pinner.pin(b"k", reference("./ok.bin")) {
            Pin::Captured(p) => {
                assert_eq!(p.path, "ok.bin");
                assert_eq!(std::fs::read(&p.read_from).unwrap(), b"data");
            }
            _ => panic!("ok.bin not captured"),
        }
        assert!(matches!(
            pinner.pin(b"k2", reference("ok.bin")),
            Pin::Duplicate
        ));
        let checked_again = Reference {
            path: "ok.bin".into(),
            sha256: None,
            size: Some(4),
        };
        assert!(
            matches!(pinner.pin(b"k3", checked_again), Pin::Captured(_)),
            "a duplicate with its own expectations is checked"
        );
        let wrong_size = Reference {
            path: "ok.bin".into(),
            sha256: None,
            size: Some(9),
        };
        let mut fresh = Pinner::new(&root, dir.path().join("pins2")).unwrap();
        assert_eq!(
            kind(fresh.pin(b"k", wrong_size)),
            Some(ProblemKind::Mismatch)
        );
    }

    #[test]
    fn a_file_removed_through_the_guard_is_pinned_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("f"), b"at the point in time").unwrap();
        let guard = crate::source::DeletionGuard::new();
        let hold = guard.hold(dir.path().join("aside")).unwrap();
        let mut pinner = Pinner::new(&root, dir.path().join("pins"))
            .unwrap()
            .with_guard(Some(hold));
        // The application removes the file and writes a new one at its path.
        guard.remove(root.join("f")).unwrap();
        std::fs::write(root.join("f"), b"written later").unwrap();
        let reference = Reference {
            path: "f".into(),
            sha256: None,
            size: None,
        };
        let Pin::Captured(pinned) = pinner.pin(b"k", reference) else {
            panic!("not captured")
        };
        // Letting go of the guard removes what it set aside: the pin holds on.
        pinner.finish();
        assert_eq!(
            std::fs::read(&pinned.read_from).unwrap(),
            b"at the point in time"
        );
        assert_eq!(std::fs::read(root.join("f")).unwrap(), b"written later");
    }

    #[test]
    fn prelinked_files_are_read_from_their_prelink_without_a_second_link() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::write(root.join("d/f"), b"at the point in time").unwrap();
        let mut prelinks = Prelinks::new(dir.path().join("prelinks")).unwrap();
        prelinks.link_tree(&root).unwrap();
        std::fs::remove_file(root.join("d/f")).unwrap();
        let pins = dir.path().join("pins");
        let mut pinner = Pinner::new(&root, pins.clone())
            .unwrap()
            .with_prelinks(Some(prelinks));
        let reference = || Reference {
            path: "d/f".into(),
            sha256: None,
            size: None,
        };
        let Pin::Captured(pinned) = pinner.pin(b"k1", reference()) else {
            panic!("not captured")
        };
        assert!(pinned.read_from.starts_with(dir.path().join("prelinks")));
        assert_eq!(
            std::fs::read(&pinned.read_from).unwrap(),
            b"at the point in time"
        );
        assert!(matches!(pinner.pin(b"k2", reference()), Pin::Duplicate));
        assert_eq!(pinner.finish(), 1, "rescued from its pre-link");
        assert_eq!(
            std::fs::read_dir(&pins).unwrap().count(),
            0,
            "no second link"
        );
    }

    #[test]
    fn a_symlink_inside_the_root_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("real")).unwrap();
        std::fs::write(root.join("real/f"), b"data").unwrap();
        std::os::unix::fs::symlink(root.join("real"), root.join("alias")).unwrap();
        std::os::unix::fs::symlink(root.join("real/f"), root.join("f-link")).unwrap();
        let mut pinner = Pinner::new(&root, dir.path().join("pins")).unwrap();
        for path in ["alias/f", "f-link"] {
            let reference = Reference {
                path: path.into(),
                sha256: None,
                size: None,
            };
            match pinner.pin(b"k", reference) {
                Pin::Problem(p) => {
                    assert_eq!(p.kind, ProblemKind::Invalid, "{path}");
                    assert!(p.detail.contains("symlink"), "{p}");
                }
                _ => panic!("{path} was followed"),
            }
        }
    }
}
