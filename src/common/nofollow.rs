//! Files under a root reached without following any symlink, hard links
//! made from an open descriptor, and files renamed into a directory reached
//! the same way: what is checked is what is linked or written into, whatever
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

/// `name` as a C string (a NUL inside it is invalid input).
fn c_name(name: &[u8]) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// The result of a libc call that returns 0 on success and sets `errno`.
fn done(returned: libc::c_int) -> io::Result<()> {
    match returned {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

fn open_path(at: libc::c_int, name: &[u8], directory: bool) -> io::Result<File> {
    let name = c_name(name)?;
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

/// Opens the directory `relative` (a normalized `/`-separated path, or empty
/// for `root` itself) under `root`, following no symlink, creating the
/// directories that are missing (`0777` less the umask); returns it and the
/// directories it created, outermost first. A symlink or a file on the way
/// is `ELOOP`/`ENOTDIR`.
pub fn open_dir_creating(root: &Path, relative: &str) -> io::Result<(File, Vec<String>)> {
    open_dir(root, relative, true)
}

/// Opens the directory `relative` under `root` as [`open_dir_creating`]
/// does, creating nothing (when `create` is not set).
fn open_dir(root: &Path, relative: &str, create: bool) -> io::Result<(File, Vec<String>)> {
    let mut at = open_path(libc::AT_FDCWD, root.as_os_str().as_encoded_bytes(), true)?;
    let mut created = Vec::new();
    let mut walked = String::new();
    for part in relative.split('/').filter(|p| !p.is_empty()) {
        walked = if walked.is_empty() {
            part.to_string()
        } else {
            format!("{walked}/{part}")
        };
        at = match open_path(at.as_raw_fd(), part.as_bytes(), true) {
            Err(e) if create && e.kind() == io::ErrorKind::NotFound => {
                make_dir(&at, part)?;
                created.push(walked.clone());
                open_path(at.as_raw_fd(), part.as_bytes(), true)?
            }
            opened => opened?,
        };
    }
    Ok((at, created))
}

fn make_dir(at: &File, name: &str) -> io::Result<()> {
    let name = c_name(name.as_bytes())?;
    // SAFETY: `name` is NUL-terminated and outlives the call; `at` is open.
    done(unsafe { libc::mkdirat(at.as_raw_fd(), name.as_ptr(), 0o777) })
}

/// Renames `from` to `name` in the directory open as `dir` (a descriptor from
/// [`open_dir_creating`]): replacing what is there (a file, or a symlink
/// itself — never what it points to) only when `replace` is set, and never
/// a directory.
pub fn rename_into(from: &Path, dir: &File, name: &str, replace: bool) -> io::Result<()> {
    rename_at(from, dir.as_raw_fd(), name.as_bytes(), replace)
}

/// Renames `from` to `to` unless `to` exists (atomically where the filesystem
/// supports `RENAME_NOREPLACE`).
pub fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    rename_at(
        from,
        libc::AT_FDCWD,
        to.as_os_str().as_encoded_bytes(),
        false,
    )
}

fn rename_at(from: &Path, dir: libc::c_int, to: &[u8], replace: bool) -> io::Result<()> {
    let (from_c, to_c) = (c_name(from.as_os_str().as_encoded_bytes())?, c_name(to)?);
    // SAFETY: both names are NUL-terminated and outlive the call; `dir` is
    // open (or AT_FDCWD).
    let rename = |flags| {
        done(unsafe { libc::renameat2(libc::AT_FDCWD, from_c.as_ptr(), dir, to_c.as_ptr(), flags) })
    };
    if replace {
        return rename(0);
    }
    match rename(libc::RENAME_NOREPLACE) {
        // A filesystem without RENAME_NOREPLACE: check, then rename.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => match open_path(dir, to, false) {
            Ok(_) => Err(io::Error::from(io::ErrorKind::AlreadyExists)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => rename(0),
            Err(e) => Err(e),
        },
        renamed => renamed,
    }
}

/// Removes the file (or, with `directory`, the empty directory) `relative`
/// under `root`, following no symlink on the way.
pub fn remove_beneath(root: &Path, relative: &str, directory: bool) -> io::Result<()> {
    let (parent, name) = relative.rsplit_once('/').unwrap_or(("", relative));
    let (dir, _) = open_dir(root, parent, false)?;
    let name = c_name(name.as_bytes())?;
    let flags = if directory { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: `name` is NUL-terminated and outlives the call; `dir` is open.
    done(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) })
}

/// Hard-links the file open as `file` to `link` (through `/proc/self/fd`, so
/// it works for any user and names exactly this inode).
pub fn link_open_file(file: &File, link: &Path) -> io::Result<()> {
    let from = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    let to = c_name(link.as_os_str().as_encoded_bytes())?;
    // SAFETY: both paths are NUL-terminated and outlive the call.
    done(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    })
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
