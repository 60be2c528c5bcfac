//! Repository locks that keep `prune` and `backup` apart: a backup may reuse an
//! object that is unreferenced until its manifest is committed, so garbage
//! collection must never run beside a backup.
//!
//! Each run writes `locks/<kind>-<id>.json`, then lists `locks/`: a backup that
//! sees a prune lock, or a prune that sees any other lock, removes its own and
//! stops. As every store here is strongly consistent for writes followed by
//! lists, two runs that start together see each other at least one way round, so
//! they never both proceed. Backups may run side by side.
//!
//! A lock is written once and never rewritten (a rewrite could bring back a
//! lock somebody just removed). `rockup unlock` removes only locks whose holder
//! is known to be gone — a process of this host that no longer exists — unless
//! forced. And a backup checks, right before it commits, that its own lock is
//! still there: if somebody removed it, a prune may have deleted objects the
//! backup reuses, so it fails rather than commit a backup that cannot be
//! restored.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use crate::common::cleanup;
use crate::common::names::hostname;
use crate::error::{Error, Result};
use crate::repo::layout;
use crate::repo::Repository;
use object_store::ObjectStoreExt;

/// Largest lock object read; anything larger is unreadable.
const LOCK_LIMIT: u64 = 64 << 10;

/// What holds a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockKind {
    /// A running backup: prune waits for it.
    Backup,
    /// A running prune: excludes every other run.
    Prune,
}

/// The content of a lock object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockInfo {
    /// What holds it.
    pub kind: LockKind,
    /// The holder's host.
    pub host: String,
    /// The holder's process id on that host.
    pub pid: u32,
    /// When it was taken (the holder's clock).
    pub created_at: DateTime<Utc>,
    /// Key of the lock object (not stored).
    #[serde(skip)]
    pub key: String,
}

impl std::fmt::Display for LockInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let age = (Utc::now() - self.created_at).num_seconds().max(0) as u64;
        write!(
            f,
            "{:?} lock {} of process {} on {}, {} old",
            self.kind,
            self.key,
            self.pid,
            self.host,
            humantime::format_duration(std::time::Duration::from_secs(age))
        )
    }
}

impl LockInfo {
    /// Why the holder may still be running, or `None` when it is known to be
    /// gone (a process of this host that no longer exists).
    pub fn alive(&self) -> Option<String> {
        if self.host != hostname() || self.pid == 0 {
            return Some(format!(
                "whether process {} on {} still runs cannot be checked from here",
                self.pid, self.host
            ));
        }
        process_exists(self.pid).then(|| format!("process {} is running", self.pid))
    }
}

/// Whether a process with this id exists on this host.
fn process_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let sent = unsafe { libc::kill(pid, 0) };
    sent == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// How far this host's clock may be off the store's before prune refuses to
/// run (retention and grace periods are measured by the store's clock).
pub const MAX_CLOCK_SKEW: std::time::Duration = std::time::Duration::from_secs(300);

/// A lock this process holds; released by
/// [`RepoLock::release`] or, best effort, when dropped inside a Tokio runtime
/// (e.g. a cancelled backup).
pub struct RepoLock {
    repo: Option<Repository>,
    key: Path,
    /// When the store says the lock was written: the store's "now".
    written_at: DateTime<Utc>,
    /// This host's clock minus the store's, measured when the lock was written.
    skew: chrono::Duration,
}

impl RepoLock {
    /// Takes a lock of `kind`, or fails naming the lock that is in the way.
    pub async fn acquire(repo: &Repository, kind: LockKind, id: &str) -> Result<Self> {
        let info = LockInfo {
            kind,
            host: hostname(),
            pid: std::process::id(),
            created_at: Utc::now(),
            key: String::new(),
        };
        let key = layout::lock(&format!("{}-{id}", kind_name(kind)));
        let bytes = Bytes::from(serde_json::to_vec_pretty(&info).expect("lock serializes"));
        let asked_at = Utc::now();
        repo.put(&key, bytes).await?;
        let mut lock = Self {
            repo: Some(repo.clone()),
            key,
            written_at: asked_at,
            skew: chrono::Duration::zero(),
        };
        match repo.store().head(&lock.key).await {
            Ok(meta) => {
                lock.written_at = meta.last_modified;
                lock.skew = asked_at - meta.last_modified;
            }
            Err(e) => {
                let _ = lock.release().await;
                return Err(repo.error(e));
            }
        }
        let others = match list(repo).await {
            Ok(others) => others,
            Err(e) => {
                if let Err(release) = lock.release().await {
                    tracing::warn!(error = %release, "could not remove this run's lock; `rockup unlock` removes it");
                }
                return Err(e);
            }
        };
        let blocking = others.into_iter().find(|other| {
            other.key != lock.key.as_ref()
                && (kind == LockKind::Prune || other.kind == LockKind::Prune)
        });
        if let Some(other) = blocking {
            lock.release().await?;
            return Err(Error::Locked {
                what: match kind {
                    LockKind::Backup => "back up while a prune runs",
                    LockKind::Prune => "prune while another backup or prune runs",
                },
                lock: other.to_string(),
            });
        }
        Ok(lock)
    }

    /// When the store wrote the lock: the store's clock at acquisition.
    pub fn written_at(&self) -> DateTime<Utc> {
        self.written_at
    }

    /// Fails when this host's clock was more than [`MAX_CLOCK_SKEW`] off the
    /// store's when the lock was written.
    pub fn check_clock(&self) -> Result<()> {
        let off = self.skew.abs().to_std().unwrap_or_default();
        if off <= MAX_CLOCK_SKEW {
            return Ok(());
        }
        Err(Error::ClockSkew {
            local: self.written_at + self.skew,
            store: self.written_at,
        })
    }

    /// Fails unless the lock is still in the repository: somebody removing it
    /// (`rockup unlock --force`) lets a prune run beside this backup.
    pub async fn check_held(&self) -> Result<()> {
        let repo = self.repo.as_ref().expect("held until released");
        match repo.get_if_exists(&self.key, LOCK_LIMIT).await? {
            Some(_) => Ok(()),
            None => Err(Error::LockLost {
                lock: self.key.to_string(),
            }),
        }
    }

    /// Removes the lock.
    pub async fn release(mut self) -> Result<()> {
        let repo = self.repo.take().expect("released once");
        repo.delete_all(std::slice::from_ref(&self.key)).await
    }
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        let Some(repo) = self.repo.take() else {
            return;
        };
        let key = self.key.clone();
        cleanup::spawn(async move {
            if let Err(e) = repo.delete_all(&[key]).await {
                tracing::warn!(error = %e, "could not remove this run's lock; `rockup unlock` removes it");
            }
        });
    }
}

fn kind_name(kind: LockKind) -> &'static str {
    match kind {
        LockKind::Backup => "backup",
        LockKind::Prune => "prune",
    }
}

/// Every lock in the repository (unreadable lock objects count as prune locks,
/// the cautious reading).
pub async fn list(repo: &Repository) -> Result<Vec<LockInfo>> {
    let mut locks = Vec::new();
    for meta in repo.list(layout::LOCKS).await? {
        let bytes = match repo.get_if_exists(&meta.location, LOCK_LIMIT).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => continue,                        // released meanwhile
            Err(Error::Manifest { .. }) => Bytes::new(), // too large: unreadable
            Err(e) => return Err(e),
        };
        let mut info = serde_json::from_slice::<LockInfo>(&bytes).unwrap_or(LockInfo {
            kind: LockKind::Prune,
            host: "unknown".into(),
            pid: 0,
            created_at: meta.last_modified,
            key: String::new(),
        });
        info.key = meta.location.to_string();
        locks.push(info);
    }
    Ok(locks)
}

/// What `unlock` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UnlockReport {
    /// Keys of the locks removed.
    pub removed: Vec<String>,
    /// Locks left because their holder may still be running, and why.
    pub refused: Vec<Refused>,
}

/// A lock `unlock` left in place.
#[derive(Debug, Clone, Serialize)]
pub struct Refused {
    /// The lock, described (kind, key, holder, age).
    pub lock: String,
    /// Why its holder may still be running.
    pub reason: String,
}

/// Removes the locks of runs that are gone (`rockup unlock`); with `force`,
/// every lock.
pub async fn unlock(repo: &Repository, force: bool) -> Result<UnlockReport> {
    repo.check_marker(false).await?;
    let mut report = UnlockReport::default();
    let mut keys = Vec::new();
    for lock in list(repo).await? {
        match lock.alive().filter(|_| !force) {
            Some(reason) => report.refused.push(Refused {
                lock: lock.to_string(),
                reason,
            }),
            None => {
                keys.push(Path::from(lock.key.as_str()));
                report.removed.push(lock.key);
            }
        }
    }
    repo.delete_all(&keys).await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn repo() -> Repository {
        Repository::from_store(Arc::new(object_store::memory::InMemory::new()), "memory://")
    }

    #[tokio::test]
    async fn prune_and_backup_exclude_each_other_and_backups_share() {
        let repo = repo();
        let first = RepoLock::acquire(&repo, LockKind::Backup, "a")
            .await
            .unwrap();
        let second = RepoLock::acquire(&repo, LockKind::Backup, "b")
            .await
            .unwrap();
        let err = RepoLock::acquire(&repo, LockKind::Prune, "p")
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("rockup unlock"), "{err}");
        assert_eq!(
            list(&repo).await.unwrap().len(),
            2,
            "the refused lock is gone"
        );
        first.release().await.unwrap();
        second.release().await.unwrap();

        let prune = RepoLock::acquire(&repo, LockKind::Prune, "p")
            .await
            .unwrap();
        let err = RepoLock::acquire(&repo, LockKind::Backup, "c")
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("Prune lock"), "{err}");
        prune.release().await.unwrap();
        assert!(list(&repo).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn unlock_removes_locks_left_by_killed_runs() {
        let repo = repo();
        repo.check_marker(true).await.unwrap();
        let lock = RepoLock::acquire(&repo, LockKind::Backup, "a")
            .await
            .unwrap();
        std::mem::forget(lock); // as after kill -9 — but this process still runs
        assert!(RepoLock::acquire(&repo, LockKind::Prune, "p")
            .await
            .is_err());
        let refused = unlock(&repo, false).await.unwrap();
        assert!(refused.removed.is_empty(), "{refused:?}");
        assert!(
            refused.refused[0].reason.contains("is running"),
            "{refused:?}"
        );
        assert_eq!(unlock(&repo, true).await.unwrap().removed.len(), 1);
        RepoLock::acquire(&repo, LockKind::Prune, "p")
            .await
            .unwrap();
    }
}
