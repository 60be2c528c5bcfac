//! Files under a root reached without following any symlink, and hard links
//! made from an open descriptor: what is checked is what is linked, whatever
//! the tree does meanwhile (a directory swapped for a symlink is never
//! followed).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::Path;

/// Opens `relative` (a normalized `/`-separated path) under `root` as an
/// `O_PATH` descriptor, following no symlink on the way; a symlink as the last
/// component is opened as itself. `ELOOP`/`ENOTDIR` tell a symlinked directory.
pub fn open_beneath(root: &Path, relative: &str) -> io::Result<File> {
    let mut at = open_path(libc::AT_FDCWD, root.as_os_str().as_encoded_bytes(), true)?;
    let parts: Vec<&str> = relative.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        let directory = i + 1 < parts.len();
        at = open_path(at.as_raw_fd(), part.as_bytes(), directory)?;
    }
    Ok(at)
}

fn open_path(at: libc::c_int, name: &[u8], directory: bool) -> io::Result<File> {
    let name = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut flags = libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    if directory {
        flags |= libc::O_DIRECTORY;
    }
    // SAFETY: `name` is NUL-terminated and outlives the call; `at` is open.
    let fd = unsafe { libc::openat(at, name.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Hard-links the file open as `file` to `link` (through `/proc/self/fd`, so
/// it works for any user and names exactly this inode).
pub fn link_open_file(file: &File, link: &Path) -> io::Result<()> {
    let from = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    let to = CString::new(link.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: both paths are NUL-terminated and outlive the call.
    let done = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether `err` says a symlink was met where none is followed.
pub fn is_symlink_refusal(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_are_never_followed_and_links_name_the_opened_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("real")).unwrap();
        std::fs::write(root.join("real/f"), b"inside").unwrap();
        std::fs::create_dir_all(dir.path().join("outside")).unwrap();
        std::fs::write(dir.path().join("outside/f"), b"outside").unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside"), root.join("linked")).unwrap();

        let err = open_beneath(&root, "linked/f").unwrap_err();
        assert!(is_symlink_refusal(&err), "{err}");
        let opened = open_beneath(&root, "real/f").unwrap();
        // The directory is swapped for a symlink after the check: the link
        // still names the file that was opened.
        std::fs::rename(root.join("real"), root.join("moved")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside"), root.join("real")).unwrap();
        link_open_file(&opened, &dir.path().join("pin")).unwrap();
        assert_eq!(std::fs::read(dir.path().join("pin")).unwrap(), b"inside");
    }
}
