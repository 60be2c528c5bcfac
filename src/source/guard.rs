//! The [`DeletionGuard`] lets an application that backs itself up in-process defer
//! its removals of external files while a backup is between its checkpoint and
//! the end of pinning, which makes the captured file set exact.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Lets an application defer removals of external files while a backup pins them.
///
/// Route every removal of an external file through [`DeletionGuard::remove`]. While
/// a backup holds the guard (from just before its checkpoint until every
/// referenced file is pinned), removals are recorded and carried out when the
/// backup lets go; otherwise they happen at once. A file "removed" during a backup
/// is therefore still there for the backup to pin, and gone right after.
#[derive(Clone, Default)]
pub struct DeletionGuard {
    state: Arc<Mutex<GuardState>>,
}

#[derive(Default)]
struct GuardState {
    holds: usize,
    deferred: Vec<PathBuf>,
}

impl DeletionGuard {
    /// A guard no backup holds yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Removes `path` now, or when the backup that holds the guard lets go.
    pub fn remove(&self, path: impl AsRef<Path>) -> io::Result<()> {
        let path = path.as_ref();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.holds == 0 {
            return std::fs::remove_file(path);
        }
        std::fs::symlink_metadata(path)?;
        state.deferred.push(path.to_path_buf());
        Ok(())
    }

    /// Number of removals waiting for a backup to let go.
    pub fn deferred(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .deferred
            .len()
    }

    pub(crate) fn hold(&self) -> GuardHold {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).holds += 1;
        GuardHold {
            guard: self.clone(),
        }
    }
}

/// A backup's hold on a [`DeletionGuard`]; dropping it carries out deferred removals.
pub struct GuardHold {
    guard: DeletionGuard,
}

impl Drop for GuardHold {
    fn drop(&mut self) {
        let mut state = self.guard.state.lock().unwrap_or_else(|e| e.into_inner());
        state.holds -= 1;
        if state.holds == 0 {
            for path in std::mem::take(&mut state.deferred) {
                if let Err(e) = std::fs::remove_file(&path) {
                    if e.kind() != io::ErrorKind::NotFound {
                        tracing::warn!(path = %path.display(), error = %e, "deferred removal failed");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_defers_removals_while_held() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"a").unwrap();
        std::fs::write(&b, b"b").unwrap();
        let guard = DeletionGuard::new();
        guard.remove(&a).unwrap();
        assert!(!a.exists());
        let hold = guard.hold();
        guard.remove(&b).unwrap();
        assert!(b.exists(), "deferred while held");
        assert_eq!(guard.deferred(), 1);
        assert!(
            guard.remove(&a).is_err(),
            "removing a missing file still fails"
        );
        drop(hold);
        assert!(!b.exists(), "carried out on release");
    }
}
