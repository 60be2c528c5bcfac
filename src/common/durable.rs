//! Durability in batches: rather than an fsync per file on the data path,
//! one `syncfs` of the filesystem at a commit point, and an fsync of the
//! directories whose entries must survive; and small files replaced
//! atomically (a reader sees the old content or the new, never half).

use std::os::fd::AsRawFd;
use std::path::Path;

/// Flushes every dirty file and directory of the filesystem holding `dir`.
pub fn sync_filesystem(dir: &Path) -> std::io::Result<()> {
    let handle = std::fs::File::open(dir)?;
    // SAFETY: the descriptor is open for the duration of the call.
    if unsafe { libc::syncfs(handle.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Flushes the entries of directory `dir`.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all())
}

/// The mode of the status files rockup replaces (metrics, safepoint):
/// readable by others, such as a metrics collector running as another user
/// or the application reading the safepoint.
pub const STATUS_FILE_MODE: u32 = 0o644;

/// The directory holding `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Replaces the file at `path` with `bytes` atomically: written to a new
/// file of a random name beside it (created exclusively, so nothing planted
/// there is followed), given `mode`, synced, then renamed over `path` — a
/// reader, or a crash, leaves the old content or the new, never half.
pub fn replace_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut staged = tempfile::Builder::new()
        .prefix(".rockup-")
        .tempfile_in(parent_dir(path))?;
    std::io::Write::write_all(&mut staged, bytes)?;
    staged
        .as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    staged.as_file().sync_all()?;
    staged.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_replaced_file_has_the_new_bytes_and_mode_and_no_symlink_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("status");
        std::fs::write(&file, "old").unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, "keep").unwrap();
        // A link where the old scheme staged its writes.
        std::os::unix::fs::symlink(&elsewhere, dir.path().join("status.rockup-tmp")).unwrap();
        replace_file(&file, b"new", 0o644).unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"new");
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        assert_eq!(std::fs::read(&elsewhere).unwrap(), b"keep");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 3, "no staged file left: {left:?}");
    }

    #[test]
    fn a_bare_name_lives_in_the_current_directory() {
        assert_eq!(parent_dir(Path::new("x")), Path::new("."));
        assert_eq!(parent_dir(Path::new("/a/x")), Path::new("/a"));
    }
}
