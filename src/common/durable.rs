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

/// Replaces the file at `path` with `bytes` atomically: written beside it
/// under a temporary name, then renamed over it.
pub fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut staged = path.as_os_str().to_owned();
    staged.push(".rockup-tmp");
    std::fs::write(&staged, bytes)?;
    std::fs::rename(&staged, path)
}
