//! Pre-links: out of process, where nothing can hold the application's
//! deletions back, the whole tree under the blob root is hard-linked into the
//! work directory just before and just after the backup's point in time is
//! fixed (before the slow part: opening the checkpoint and reading its
//! records); a referenced file deleted after that is pinned from its pre-link.

use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The tree under the blob root hard-linked into the work directory at one
/// moment: every regular file, reached without following symlinks.
pub struct Prelinks {
    dir: PathBuf,
    /// Files linked (`u64::MAX`: unknown, kept by somebody else).
    pub files: u64,
    /// Links proved impossible (another filesystem, EPERM): nothing more is tried.
    unlinkable: bool,
}

impl Prelinks {
    /// An empty set of pre-links in `dir` (created).
    pub fn new(dir: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(Self {
            dir,
            files: 0,
            unlinkable: false,
        })
    }

    /// The links another part of rockup keeps in `dir` (`follow`'s links of
    /// new files): looked up for every reference.
    pub fn kept_in(dir: PathBuf) -> Self {
        Self {
            dir,
            files: u64::MAX,
            unlinkable: false,
        }
    }

    /// Where the tree is linked.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Links every regular file under `root` not linked yet. Files that vanish
    /// during the walk are skipped; when links are impossible (another
    /// filesystem, EPERM) nothing is linked and references resolve from the live
    /// tree alone.
    pub fn link_tree(&mut self, root: &Path) -> Result<()> {
        if self.unlinkable {
            return Ok(());
        }
        for entry in walkdir::WalkDir::new(root).min_depth(1) {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e)
                    if e.io_error()
                        .is_some_and(|e| e.kind() == io::ErrorKind::NotFound) =>
                {
                    continue
                }
                Err(e) => return Err(Error::io(root, io::Error::other(e))),
            };
            let rel = entry.path().strip_prefix(root).expect("under the root");
            let target = self.dir.join(rel);
            let made = if entry.file_type().is_dir() {
                std::fs::create_dir_all(&target)
            } else if entry.file_type().is_file() {
                std::fs::hard_link(entry.path(), &target)
            } else {
                continue;
            };
            match made {
                Ok(()) => self.files += u64::from(entry.file_type().is_file()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EXDEV | libc::EPERM)) => {
                    tracing::warn!(root = %root.display(), error = %e, "cannot hard-link the tree under the blob root into the work directory (put --work-dir on the blob root's filesystem); files deleted during the backup may be missed");
                    self.files = 0;
                    self.unlinkable = true;
                    return Ok(());
                }
                Err(e) => return Err(Error::io(&target, e)),
            }
        }
        Ok(())
    }
}
