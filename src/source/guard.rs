//! The [`DeletionGuard`] lets an application that backs itself up in-process
//! remove external files while a backup pins them, without the backup losing the
//! version it must capture and without rockup ever touching a file the
//! application writes afterwards at the same path.
//!
//! While a backup holds the guard, a removal hard-links the file into the hold's
//! set-aside directory (in the backup's work directory) and then removes the
//! path at once: the application sees the file gone, a new file at the same path
//! is its own, and the backup pins the set-aside link (the version at its point
//! in time). Where that link is impossible (the work directory on another
//! filesystem), the removal is deferred and carried out when the last backup lets
//! go — only if the path still holds the same file (device and inode).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Lets an application remove external files safely while backups run.
///
/// Route every removal of an external file through [`DeletionGuard::remove`].
/// While a backup holds the guard (from just before its checkpoint until every
/// referenced file is pinned), the file is set aside for the backup before its
/// path is removed; otherwise it is removed at once. Either way, a file the
/// application creates later at the same path is never touched.
#[derive(Clone, Default)]
pub struct DeletionGuard {
    state: Arc<Mutex<GuardState>>,
}

#[derive(Default)]
struct GuardState {
    next_hold: u64,
    holds: BTreeMap<u64, SetAside>,
    /// Removals that could not be set aside.
    deferred: Vec<Deferred>,
}

/// A removal waiting for the last backup to let go: the path and the file it
/// named, held open so that its inode cannot be reused by a new file meanwhile.
struct Deferred {
    path: PathBuf,
    file: std::fs::File,
}

/// One hold's set-aside files: where each removed path's file is linked.
struct SetAside {
    dir: PathBuf,
    links: HashMap<PathBuf, PathBuf>,
    /// Links made so far (names them).
    made: u64,
}

impl DeletionGuard {
    /// A guard no backup holds yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Removes the file at `path`; while a backup holds the guard, only after
    /// setting it aside for that backup (see the module docs). Fails as
    /// `std::fs::remove_file` would when there is no file.
    pub fn remove(&self, path: impl AsRef<Path>) -> io::Result<()> {
        let path = path.as_ref();
        let mut state = self.lock();
        if state.holds.is_empty() {
            return std::fs::remove_file(path);
        }
        std::fs::symlink_metadata(path)?;
        let key = identity_key(path);
        let mut all_linked = true;
        for aside in state.holds.values_mut() {
            aside.made += 1;
            let link = aside.dir.join(aside.made.to_string());
            match std::fs::hard_link(path, &link) {
                // The first file removed from a path is the one the backup's
                // point in time saw; a later one was written after it.
                Ok(()) => {
                    aside.links.entry(key.clone()).or_insert(link);
                }
                Err(_) => all_linked = false,
            }
        }
        if all_linked {
            return std::fs::remove_file(path);
        }
        let file = open_no_follow(path)?;
        let path = path.to_path_buf();
        state.deferred.push(Deferred { path, file });
        Ok(())
    }

    /// Number of removals waiting for a backup to let go (those that could not
    /// be set aside).
    pub fn deferred(&self) -> usize {
        self.lock().deferred.len()
    }

    /// Holds the guard for one backup, setting removed files aside in
    /// `set_aside` (created; on the blob root's filesystem for links to work).
    pub(crate) fn hold(&self, set_aside: PathBuf) -> io::Result<GuardHold> {
        std::fs::create_dir_all(&set_aside)?;
        let mut state = self.lock();
        let id = state.next_hold;
        state.next_hold += 1;
        let aside = SetAside {
            dir: set_aside,
            links: HashMap::new(),
            made: 0,
        };
        state.holds.insert(id, aside);
        Ok(GuardHold {
            guard: self.clone(),
            id,
        })
    }

    fn lock(&self) -> MutexGuard<'_, GuardState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The key a removed file is set aside under: its path with the directory's
/// symlinks resolved, so that the application's spelling of the path and the
/// backup's (from the canonical blob root) meet.
fn identity_key(path: &Path) -> PathBuf {
    let parent = path.parent().and_then(|p| p.canonicalize().ok());
    match (parent, path.file_name()) {
        (Some(parent), Some(name)) => parent.join(name),
        _ => path.to_path_buf(),
    }
}

/// A backup's hold on a [`DeletionGuard`]; dropping it lets go: its set-aside
/// links are removed, and when no backup holds the guard any more, deferred
/// removals are carried out.
pub struct GuardHold {
    guard: DeletionGuard,
    id: u64,
}

impl GuardHold {
    /// Where the file removed from `path` during this hold is set aside, if it was.
    pub fn set_aside(&self, path: &Path) -> Option<PathBuf> {
        let state = self.guard.lock();
        state
            .holds
            .get(&self.id)?
            .links
            .get(&identity_key(path))
            .cloned()
    }
}

impl Drop for GuardHold {
    fn drop(&mut self) {
        let mut state = self.guard.lock();
        if let Some(aside) = state.holds.remove(&self.id) {
            if let Err(e) = std::fs::remove_dir_all(&aside.dir) {
                tracing::warn!(dir = %aside.dir.display(), error = %e, "could not remove set-aside files");
            }
        }
        if state.holds.is_empty() {
            for deferred in std::mem::take(&mut state.deferred) {
                deferred.remove_if_same_file();
            }
        }
    }
}

/// Opens the file at `path` itself (a symlink is not followed).
fn open_no_follow(path: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .or_else(|_| {
            // A file that cannot be read (a symlink, no permission): its identity
            // from the path, held by an O_PATH descriptor.
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
                .open(path)
        })
}

impl Deferred {
    /// Removes the path only if it still names the file that was removed.
    fn remove_if_same_file(self) {
        let (Ok(now), Ok(then)) = (std::fs::symlink_metadata(&self.path), self.file.metadata())
        else {
            return;
        };
        if now.dev() != then.dev() || now.ino() != then.ino() {
            tracing::debug!(path = %self.path.display(), "a new file took the removed one's place; left alone");
            return;
        }
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "deferred removal failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removals_while_held_are_set_aside_and_never_touch_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"a").unwrap();
        std::fs::write(&b, b"old b").unwrap();
        let guard = DeletionGuard::new();
        guard.remove(&a).unwrap();
        assert!(!a.exists(), "removed at once without a backup");

        let hold = guard.hold(dir.path().join("aside")).unwrap();
        guard.remove(&b).unwrap();
        assert!(!b.exists(), "the application sees it gone");
        let aside = hold.set_aside(&b).expect("set aside for the backup");
        assert_eq!(std::fs::read(&aside).unwrap(), b"old b");
        // The application writes a new file at the same path.
        std::fs::write(&b, b"new b").unwrap();
        assert!(
            guard.remove(&a).is_err(),
            "removing a missing file still fails"
        );
        drop(hold);
        assert_eq!(std::fs::read(&b).unwrap(), b"new b", "never touched");
        assert!(!dir.path().join("aside").exists());
        assert_eq!(guard.deferred(), 0);
    }

    #[test]
    fn deferred_removals_check_the_file_is_still_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let (same, replaced) = (dir.path().join("same"), dir.path().join("replaced"));
        std::fs::write(&same, b"x").unwrap();
        std::fs::write(&replaced, b"old").unwrap();
        let guard = DeletionGuard::new();
        let hold = guard.hold(dir.path().join("aside")).unwrap();
        // As when the set-aside directory is on another filesystem.
        std::fs::remove_dir(dir.path().join("aside")).unwrap();
        guard.remove(&same).unwrap();
        guard.remove(&replaced).unwrap();
        assert_eq!(guard.deferred(), 2);
        assert!(same.exists() && replaced.exists(), "deferred while held");
        std::fs::remove_file(&replaced).unwrap();
        std::fs::write(&replaced, b"new").unwrap();
        drop(hold);
        assert!(!same.exists(), "carried out on release");
        assert_eq!(std::fs::read(&replaced).unwrap(), b"new", "never touched");
    }

    #[test]
    fn the_first_file_removed_from_a_path_is_the_one_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let guard = DeletionGuard::new();
        let hold = guard.hold(dir.path().join("aside")).unwrap();
        std::fs::write(&path, b"at the point in time").unwrap();
        guard.remove(&path).unwrap();
        std::fs::write(&path, b"written later").unwrap();
        guard.remove(&path).unwrap();
        std::fs::write(&path, b"and again").unwrap();
        guard.remove(&path).unwrap();
        assert!(
            !path.exists() && guard.deferred() == 0,
            "every removal set aside"
        );
        let aside = hold.set_aside(&path).unwrap();
        assert_eq!(std::fs::read(aside).unwrap(), b"at the point in time");
    }
}
