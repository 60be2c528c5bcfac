//! Staging directories (`0700`, inside each target) and placement: durability
//! comes at the end, not per file — one `syncfs` per target's filesystem before
//! placement. Placement renames everything staged into the targets, all or
//! nothing: a failure halfway removes what was already placed; then each target
//! directory is fsynced. A partial restore *merges* its files into a target
//! that holds others: file by file, through directories reached without
//! following a symlink, never over an existing file unless asked.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::common::{durable, nofollow};
use crate::error::{Error, Result};

/// A staging directory inside a restore target; removed unless placed.
pub(super) struct Staging {
    target: PathBuf,
    /// Whether this restore created the target (its mode is then ours to set).
    created_target: bool,
    pub path: PathBuf,
}

/// What one staging directory placed into its target, so it can be undone.
#[derive(Debug)]
pub(super) struct Placed {
    pub target: PathBuf,
    pub created_target: bool,
    names: Vec<std::ffi::OsString>,
}

impl Staging {
    pub fn create(target: &Path, backup_id: &str) -> Result<Self> {
        let created_target = !target.exists();
        std::fs::create_dir_all(target).map_err(|e| Error::io(target, e))?;
        let path = target.join(format!(".rockup-restore-{backup_id}"));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(Self {
            target: target.to_path_buf(),
            created_target,
            path,
        })
    }

    /// Where the file at `relative` (a validated, normalized path) is staged,
    /// its directories created.
    pub fn mkdir_for(&self, relative: &str) -> Result<PathBuf> {
        let dest = self.path.join(relative);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        Ok(dest)
    }

    /// Renames everything staged into the target; on a failure, removes what
    /// it had moved and returns the error (the staging directory goes on drop).
    fn place(self) -> Result<Placed> {
        let mut placed = Placed {
            target: self.target.clone(),
            created_target: self.created_target,
            names: Vec::new(),
        };
        if let Err(e) = self.move_entries(&mut placed) {
            placed.roll_back();
            return Err(e);
        }
        std::fs::remove_dir(&self.path).map_err(|e| Error::io(&self.path, e))?;
        durable::sync_dir(&self.target).map_err(|e| Error::io(&self.target, e))?;
        Ok(placed)
    }

    fn move_entries(&self, placed: &mut Placed) -> Result<()> {
        for entry in std::fs::read_dir(&self.path).map_err(|e| Error::io(&self.path, e))? {
            let entry = entry.map_err(|e| Error::io(&self.path, e))?;
            let dest = self.target.join(entry.file_name());
            nofollow::rename_no_replace(&entry.path(), &dest).map_err(|e| Error::io(&dest, e))?;
            placed.names.push(entry.file_name());
        }
        Ok(())
    }
}

/// What a merge placed into a target that already held files.
struct Merged {
    target: PathBuf,
    /// Files placed where nothing was (relative to the target).
    files: Vec<String>,
    /// Directories created, outermost first.
    dirs: Vec<String>,
}

impl Staging {
    /// Places every staged file at its path under the target, which may
    /// hold other files. Without `overwrite`, an existing file (or symlink)
    /// at any of the paths refuses the whole merge before anything moves;
    /// with it, files and symlinks are replaced (a symlink itself, never what
    /// it points to), never a directory. A symlink or a file where a
    /// directory belongs is refused. Everything is durable before and after.
    pub fn merge(self, overwrite: bool) -> Result<()> {
        let staged = self.staged_files()?;
        if !overwrite {
            if let Some(existing) = staged
                .iter()
                .find(|r| self.target.join(r).symlink_metadata().is_ok())
            {
                return Err(Error::TargetExists {
                    path: self.target.join(existing),
                });
            }
        }
        durable::sync_filesystem(&self.path).map_err(|e| Error::io(&self.path, e))?;
        let mut merged = Merged {
            target: self.target.clone(),
            files: Vec::new(),
            dirs: Vec::new(),
        };
        self.move_files(&staged, overwrite, &mut merged)
            .inspect_err(|_| merged.roll_back())
    }

    /// The staged files' paths, relative and sorted.
    fn staged_files(&self) -> Result<Vec<String>> {
        let mut files = Vec::new();
        for entry in walkdir::WalkDir::new(&self.path)
            .min_depth(1)
            .sort_by_file_name()
        {
            let entry = entry.map_err(|e| Error::io(&self.path, e.into()))?;
            if entry.file_type().is_file() {
                let relative = entry
                    .path()
                    .strip_prefix(&self.path)
                    .expect("under the staging directory");
                files.push(relative.to_string_lossy().into_owned());
            }
        }
        Ok(files)
    }

    fn move_files(&self, staged: &[String], overwrite: bool, merged: &mut Merged) -> Result<()> {
        let mut open: Option<(&str, std::fs::File)> = None;
        let mut touched = Vec::new();
        for relative in staged {
            let (parent, name) = relative.rsplit_once('/').unwrap_or(("", relative));
            let dest = self.target.join(relative);
            if open.as_ref().is_none_or(|(p, _)| *p != parent) {
                let (dir, created) = nofollow::open_dir_creating(&self.target, parent)
                    .map_err(|e| not_through_symlinks(&self.target.join(parent), e))?;
                merged.dirs.extend(created);
                touched.push(self.target.join(parent));
                open = Some((parent, dir));
            }
            let (_, dir) = open.as_ref().expect("opened above");
            let existed = overwrite && dest.symlink_metadata().is_ok();
            nofollow::rename_into(&self.path.join(relative), dir, name, overwrite)
                .map_err(|e| Error::io(&dest, e))?;
            if !existed {
                merged.files.push(relative.clone());
            }
        }
        for dir in touched {
            durable::sync_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        Ok(())
    }
}

/// The error for a directory of the target that is a symlink or a file.
fn not_through_symlinks(dir: &Path, e: std::io::Error) -> Error {
    match nofollow::is_symlink_refusal(&e) {
        true => Error::Usage(format!(
            "{} is a symlink or a file, not a directory: nothing is restored through it; move it aside",
            dir.display()
        )),
        false => Error::io(dir, e),
    }
}

impl Merged {
    /// Removes the files this merge placed where nothing was, and the
    /// directories it created (files it replaced stay replaced).
    fn roll_back(&self) {
        let files = self.files.iter().map(|f| (f, false));
        let dirs = self.dirs.iter().rev().map(|d| (d, true));
        for (relative, directory) in files.chain(dirs) {
            if let Err(e) = nofollow::remove_beneath(&self.target, relative, directory) {
                tracing::warn!(path = %self.target.join(relative).display(), error = %e, "could not undo a partial restore");
            }
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

impl Placed {
    /// Removes what this restore placed (and nothing else).
    pub fn roll_back(&self) {
        for name in &self.names {
            let path = self.target.join(name);
            let removed = match path.symlink_metadata() {
                Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&path),
                Ok(_) => std::fs::remove_file(&path),
                Err(_) => continue,
            };
            if let Err(e) = removed {
                tracing::warn!(path = %path.display(), error = %e, "could not undo a partial restore");
            }
        }
    }
}

/// Places every staging directory, all or nothing: when one fails, what the
/// others placed is removed again. Everything staged is made durable first —
/// one `syncfs` per target's filesystem rather than an fsync per file on the
/// download path — so nothing is renamed into place before it is on disk.
pub(super) fn place_all(stages: Vec<Staging>) -> Result<Vec<Placed>> {
    for stage in &stages {
        durable::sync_filesystem(&stage.path).map_err(|e| Error::io(&stage.path, e))?;
    }
    let mut placed: Vec<Placed> = Vec::new();
    for stage in stages {
        match stage.place() {
            Ok(done) => placed.push(done),
            Err(e) => {
                placed.iter().for_each(Placed::roll_back);
                return Err(e);
            }
        }
    }
    Ok(placed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn placement_is_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (db, files) = (dir.path().join("db"), dir.path().join("files"));
        let db_stage = Staging::create(&db, "id").unwrap();
        std::fs::write(db_stage.path.join("CURRENT"), "x").unwrap();
        let files_stage = Staging::create(&files, "id").unwrap();
        for name in ["a", "b", "c"] {
            std::fs::create_dir(files_stage.path.join(name)).unwrap();
            std::fs::write(files_stage.path.join(name).join("f"), name).unwrap();
        }
        // Something else appears in the target meanwhile: placement must fail
        // there, and undo what it placed, in both targets.
        std::fs::write(files.join("b"), "not ours").unwrap();
        let err = place_all(vec![db_stage, files_stage]).unwrap_err();
        assert!(err.to_string().contains("exists"), "{err}");
        assert!(names(&db).is_empty(), "{:?}", names(&db));
        assert_eq!(names(&files), ["b"]);
        assert_eq!(std::fs::read(files.join("b")).unwrap(), b"not ours");
    }
}
