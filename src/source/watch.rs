//! New files under the blob root, hard-linked the moment they appear (inotify:
//! a file closed after writing or moved in; a new directory is watched and its
//! files linked at once). `follow` ships the records that reference a file up
//! to an interval after the application wrote it; an application that
//! references a file and deletes it within that window (or overwrites it)
//! would leave nothing to capture. The links, in a tree under rockup's work
//! directory shaped like the blob root, are what pinning finds first
//! ([`Prelinks`](crate::source::Prelinks)); they are kept for a while
//! ([`NewFiles::expire`]) and then removed.
//!
//! Files are opened beneath the root without following any symlink and linked
//! from that descriptor; nothing outside the root is ever linked.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};

use crate::common::nofollow::{link_open_file, open_beneath};
use crate::error::{Error, Result};

/// How long the watcher waits for events before looking at its stop flag.
const POLL_MS: i32 = 100;

/// A link made, to be removed once it expires (unless a newer link of the
/// same path replaced it).
struct Made {
    at: Instant,
    link: PathBuf,
    inode: u64,
}

/// What the watcher and its owner share.
#[derive(Default)]
struct Shared {
    made: Mutex<VecDeque<Made>>,
    stop: AtomicBool,
    linked: AtomicU64,
    /// Files gone before they could be linked.
    missed: AtomicU64,
    /// Times the kernel's event queue overflowed (events were lost).
    overflows: AtomicU64,
}

/// Counts of what the watcher did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct WatchStats {
    /// New files linked.
    pub linked: u64,
    /// New files deleted before they could be linked.
    pub missed: u64,
    /// Times events were lost (the kernel's queue overflowed).
    pub overflows: u64,
}

/// The watcher of one blob root, linking new files into `links`.
pub struct NewFiles {
    links: PathBuf,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl NewFiles {
    /// Watches every directory under `root` and links new files into `links`
    /// (created; on the root's filesystem).
    pub fn start(root: &Path, links: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&links).map_err(|e| Error::io(&links, e))?;
        let root = root.canonicalize().map_err(|e| Error::io(root, e))?;
        let inotify = Inotify::init().map_err(|e| Error::io(&root, e))?;
        let shared = Arc::new(Shared::default());
        let mut watcher = Watcher {
            inotify,
            dirs: HashMap::new(),
            root,
            links: links.clone(),
            shared: shared.clone(),
        };
        watcher.watch_tree("")?;
        let thread = std::thread::Builder::new()
            .name("rockup-watch".into())
            .spawn(move || watcher.run())
            .map_err(|e| Error::io(&links, e))?;
        Ok(Self {
            links,
            shared,
            thread: Some(thread),
        })
    }

    /// Where the links are: a tree shaped like the blob root's.
    pub fn dir(&self) -> &Path {
        &self.links
    }

    /// Removes the links made before `before` (those a newer link of the same
    /// path replaced are left to it).
    pub fn expire(&self, before: Instant) {
        let mut made = self.shared.made.lock().expect("not poisoned");
        while made.front().is_some_and(|m| m.at < before) {
            let old = made.pop_front().expect("a front");
            let current = std::fs::symlink_metadata(&old.link).map(|m| m.ino());
            if current.is_ok_and(|inode| inode == old.inode) {
                let _ = std::fs::remove_file(&old.link);
            }
        }
    }

    /// What the watcher did so far.
    pub fn stats(&self) -> WatchStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        WatchStats {
            linked: read(&self.shared.linked),
            missed: read(&self.shared.missed),
            overflows: read(&self.shared.overflows),
        }
    }
}

impl Drop for NewFiles {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The watching thread's state: a watch per directory, by its path under the root.
struct Watcher {
    inotify: Inotify,
    dirs: HashMap<WatchDescriptor, String>,
    root: PathBuf,
    links: PathBuf,
    shared: Arc<Shared>,
}

impl Watcher {
    fn run(mut self) {
        let mut buffer = vec![0u8; 64 << 10];
        while !self.shared.stop.load(Ordering::Relaxed) {
            if !readable(&self.inotify) {
                continue;
            }
            let events: Vec<(WatchDescriptor, EventMask, Option<String>)> = match self
                .inotify
                .read_events(&mut buffer)
            {
                Ok(events) => events
                    .map(|e| (e.wd, e.mask, e.name.and_then(name_of)))
                    .collect(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "watching the blob root failed; new files are no longer linked as they appear");
                    return;
                }
            };
            for (wd, mask, name) in events {
                self.handle(&wd, mask, name);
            }
        }
    }

    fn handle(&mut self, wd: &WatchDescriptor, mask: EventMask, name: Option<String>) {
        if mask.contains(EventMask::Q_OVERFLOW) {
            self.shared.overflows.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("the blob root's watch lost events (fs.inotify.max_queued_events); files created meanwhile are captured only if they still exist when referenced");
            return;
        }
        let (Some(dir), Some(name)) = (self.dirs.get(wd), name) else {
            return;
        };
        let rel = match dir.is_empty() {
            true => name,
            false => format!("{dir}/{name}"),
        };
        if mask.contains(EventMask::ISDIR) {
            if let Err(e) = self.watch_tree(&rel) {
                tracing::warn!(error = %e, dir = %rel, "a new directory under the blob root is not watched");
            }
        } else if mask.intersects(EventMask::CLOSE_WRITE | EventMask::MOVED_TO) {
            self.link(&rel);
        }
    }

    /// Watches the directory `rel` and every directory under it, linking the
    /// files already there (created before the watch could see them), except
    /// for the root itself at the start.
    fn watch_tree(&mut self, rel: &str) -> Result<()> {
        let top = self.root.join(rel);
        for entry in walkdir::WalkDir::new(&top).follow_links(false) {
            let Ok(entry) = entry else { continue };
            let under = entry
                .path()
                .strip_prefix(&self.root)
                .expect("under the root");
            let Some(under) = under.to_str().map(str::to_string) else {
                continue;
            };
            if entry.file_type().is_dir() {
                let mask = WatchMask::CLOSE_WRITE
                    | WatchMask::MOVED_TO
                    | WatchMask::CREATE
                    | WatchMask::ONLYDIR
                    | WatchMask::DONT_FOLLOW;
                match self.inotify.watches().add(entry.path(), mask) {
                    Ok(wd) => {
                        self.dirs.insert(wd, under);
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(entry.path(), e)),
                }
            } else if entry.file_type().is_file() && !rel.is_empty() {
                self.link(&under);
            }
        }
        Ok(())
    }

    /// Links the file at `rel` (opened beneath the root, never through a
    /// symlink) into the links tree, replacing an older link of the path.
    fn link(&self, rel: &str) {
        match self.try_link(rel) {
            Ok(Some(made)) => {
                self.shared.linked.fetch_add(1, Ordering::Relaxed);
                self.shared
                    .made
                    .lock()
                    .expect("not poisoned")
                    .push_back(made);
            }
            Ok(None) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.shared.missed.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::debug!(error = %e, path = %rel, "a new file could not be linked"),
        }
    }

    fn try_link(&self, rel: &str) -> io::Result<Option<Made>> {
        let file = open_beneath(&self.root, rel)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Ok(None);
        }
        let link = self.links.join(rel);
        let parent = link.parent().expect("under the links");
        std::fs::create_dir_all(parent)?;
        let staged = parent.join(format!(".rockup-link-{}", meta.ino()));
        let _ = std::fs::remove_file(&staged);
        link_open_file(&file, &staged)?;
        std::fs::rename(&staged, &link)?;
        Ok(Some(Made {
            at: Instant::now(),
            link,
            inode: meta.ino(),
        }))
    }
}

/// Waits up to [`POLL_MS`] for `inotify` to have events (so a watching thread
/// looks at its stop flag that often).
pub(crate) fn readable(inotify: &Inotify) -> bool {
    let mut poll = libc::pollfd {
        fd: inotify.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for the duration of the call.
    unsafe { libc::poll(&mut poll, 1, POLL_MS) > 0 }
}

fn name_of(name: &OsStr) -> Option<String> {
    name.to_str()
        .filter(|n| !n.starts_with(".rockup-"))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn wait_for(what: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !what() {
            assert!(Instant::now() < deadline, "timed out");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn files_deleted_at_once_are_still_linked_and_links_expire() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("a")).unwrap();
        let watched = NewFiles::start(&root, dir.path().join("links")).unwrap();
        // Deleted a moment after it was written (a record made and dropped).
        std::fs::write(root.join("a/one"), b"first").unwrap();
        std::thread::sleep(Duration::from_millis(30));
        std::fs::remove_file(root.join("a/one")).unwrap();
        // A new directory, and a file in it written before its watch exists.
        std::fs::create_dir_all(root.join("b/c")).unwrap();
        std::fs::write(root.join("b/c/two"), b"second").unwrap();
        let outside = dir.path().join("secret");
        std::fs::write(&outside, b"not under the root").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("a/link")).unwrap();
        let links = watched.dir().to_path_buf();
        wait_for(|| links.join("a/one").exists() && links.join("b/c/two").exists());
        assert_eq!(std::fs::read(links.join("a/one")).unwrap(), b"first");
        assert_eq!(std::fs::read(links.join("b/c/two")).unwrap(), b"second");
        assert!(!links.join("a/link").exists(), "symlinks are never linked");
        watched.expire(Instant::now());
        assert!(!links.join("a/one").exists());
        assert!(watched.stats().linked >= 2);
    }
}
