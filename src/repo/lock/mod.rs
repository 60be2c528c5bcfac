//! Repository locks that keep `prune` and `backup` apart: a backup may reuse an
//! object that is unreferenced until its manifest is committed, so garbage
//! collection must never run beside a backup.
//!
//! Each run writes `locks/<kind>-<id>.json`, then lists `locks/`: a backup that
//! sees a live prune lock, or a prune that sees any other live lock, removes its
//! own and stops. As every store here is strongly consistent for writes followed
//! by lists, two runs that start together see each other at least one way
//! round, so they never both proceed. Backups may run side by side. Nothing
//! relies on conditional writes.
//!
//! Leases: a lock is written once and never rewritten (a rewrite could bring
//! back a lock somebody removed); a running run renews it by rewriting its
//! lease object `locks/<kind>-<id>.lease` every third of its lease. A lock whose
//! newest write is older than its lease, by the store's clock, is stale: its
//! holder is gone. Stale locks are ignored, and the next prune removes them
//! before it reads any manifest.
//!
//! Every locked run goes through [`locked`]: acquire, run, release — a failed
//! release is logged, never put in place of the run's own result. A writer
//! commits through [`RepoLock::commit`]: its lock is checked before the
//! manifest is written and again after; if somebody removed it (a prune that
//! took it for stale, `rockup unlock --force`), a prune may have deleted
//! objects it reuses, so the manifest is withdrawn and the run fails
//! ([`Error::LockLost`] says which). As a prune removes stale locks before it
//! lists the manifests, a writer either committed before that listing (and is
//! kept) or finds its lock gone. A prune checks its own lock before each batch
//! of deletions.

mod listing;

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use object_store::path::Path;
use object_store::ObjectStoreExt;
use tokio::task::JoinHandle;

use crate::common::cleanup;
use crate::common::names::hostname;
use crate::error::{Error, LockLoss, Result};
use crate::repo::ids::BackupId;
use crate::repo::layout;
use crate::repo::{Created, Repository};

use listing::{keys_of, LOCK_LIMIT};
pub use listing::{list, remove_stale, unlock, LockInfo, LockKind, Refused, UnlockReport};

/// How long a lock stays live without being renewed, unless a run says
/// otherwise (`--lease`).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(5 * 60);
/// How far this host's clock may be off the store's before prune refuses to
/// run (retention and grace periods are measured by the store's clock).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);

/// The lock a run asks for.
#[derive(Debug, Clone)]
pub struct LockRequest {
    /// What it excludes.
    pub kind: LockKind,
    /// The run, as messages name it: `backup`, `copy`, `prune`.
    pub operation: &'static str,
    /// Names the lock: a backup's own id, or a new one for a copy or a prune.
    pub id: BackupId,
    /// How long the lock stays live without renewal.
    pub lease: Duration,
    /// How long to keep trying while a live lock is in the way (`--retry-lock`;
    /// zero fails at once).
    pub wait: Duration,
}

/// The first pause before trying a lock again; it doubles up to [`RETRY_AT_MOST`].
const FIRST_RETRY: Duration = Duration::from_secs(2);
const RETRY_AT_MOST: Duration = Duration::from_secs(60);

/// Runs `run` under the lock `request` asks for, then releases the lock: a
/// failed release is logged (the lease runs out; `rockup unlock` removes
/// it), never returned in place of what `run` returned.
pub async fn locked<T>(
    repo: &Repository,
    request: LockRequest,
    run: impl AsyncFnOnce(&RepoLock) -> Result<T>,
) -> Result<T> {
    let lock = RepoLock::acquire_waiting(repo, &request).await?;
    let result = run(&lock).await;
    if let Err(e) = lock.release().await {
        tracing::warn!(error = %e, operation = request.operation, "could not remove this run's lock; its lease runs out, or `rockup unlock` removes it");
    }
    result
}

/// A lock this process holds, renewed while it lives; released by
/// [`RepoLock::release`] or, best effort, when dropped inside a Tokio runtime
/// (e.g. a cancelled backup).
pub struct RepoLock {
    repo: Option<Repository>,
    kind: LockKind,
    operation: &'static str,
    key: Path,
    /// When the store says the lock was written: the store's "now".
    written_at: DateTime<Utc>,
    /// This host's clock minus the store's, measured when the lock was written.
    skew: chrono::Duration,
    renewal: Option<JoinHandle<()>>,
}

impl RepoLock {
    /// Takes the lock `request` asks for, trying again (after about 2 s, 4 s,
    /// … up to a minute, each pause stretched by up to a quarter at random so
    /// hosts that collided do not retry in step) while a live lock is in the way, for `request.wait` at most.
    async fn acquire_waiting(repo: &Repository, request: &LockRequest) -> Result<Self> {
        let deadline = tokio::time::Instant::now() + request.wait;
        let mut pause = FIRST_RETRY;
        loop {
            let error = match Self::acquire(repo, request).await {
                Err(e @ Error::Locked { .. }) => e,
                other => return other,
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(error);
            }
            let jitter = pause.mul_f64(rand::random::<f64>() / 4.0);
            let wait = (pause + jitter).min(left);
            tracing::info!(operation = request.operation, retry_in = ?wait, "{error}: waiting (--retry-lock)");
            tokio::time::sleep(wait).await;
            pause = (pause * 2).min(RETRY_AT_MOST);
        }
    }

    /// Takes the lock `request` asks for, renewed every third of its lease, or
    /// fails naming the live lock that is in the way.
    async fn acquire(repo: &Repository, request: &LockRequest) -> Result<Self> {
        let LockRequest {
            kind, id, lease, ..
        } = request;
        let (kind, lease) = (*kind, *lease);
        let info = LockInfo {
            kind,
            host: hostname(),
            pid: std::process::id(),
            created_at: Utc::now(),
            lease_secs: Some(lease.as_secs().max(1)),
            key: String::new(),
            renewed_at: None,
        };
        let name = format!("{}-{id}", kind_name(kind));
        let key = layout::lock(&name);
        let contents = serde_json::to_vec_pretty(&info).expect("lock serializes");
        let bytes = repo.seal_lock(&key, contents);
        let asked_at = Utc::now();
        repo.put(&key, bytes).await?;
        let mut lock = Self {
            repo: Some(repo.clone()),
            kind,
            operation: request.operation,
            key,
            written_at: asked_at,
            skew: chrono::Duration::zero(),
            renewal: None,
        };
        if let Err(e) = lock.settle(kind, asked_at).await {
            if let Err(release) = lock.release().await {
                tracing::warn!(error = %release, "could not remove this run's lock; `rockup unlock` removes it");
            }
            return Err(e);
        }
        let renew_every = (lease / 3).max(Duration::from_millis(200));
        let lease_key = layout::lease(&name);
        lock.renewal = Some(tokio::spawn(renew(repo.clone(), lease_key, renew_every)));
        Ok(lock)
    }

    /// Reads the store's time of the lock, then fails if a live lock is in the way.
    async fn settle(&mut self, kind: LockKind, asked_at: DateTime<Utc>) -> Result<()> {
        let repo = self.repo.as_ref().expect("held");
        let meta = repo
            .store()
            .head(&self.key)
            .await
            .map_err(|e| repo.error(e))?;
        self.written_at = meta.last_modified;
        self.skew = asked_at - meta.last_modified;
        let now = self.written_at;
        let blocking = list(repo).await?.locks.into_iter().find(|other| {
            other.key != self.key.as_ref()
                && !other.stale(now)
                && (kind == LockKind::Prune || other.kind == LockKind::Prune)
        });
        match blocking {
            Some(other) => Err(Error::Locked {
                what: match kind {
                    LockKind::Backup => "back up while a prune runs",
                    LockKind::Prune => "prune while another backup or prune runs",
                },
                lock: other.to_string(),
            }),
            None => Ok(()),
        }
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
    /// (a prune that found its lease run out, `rockup unlock --force`) lets a
    /// prune run beside this run.
    pub async fn check_held(&self) -> Result<()> {
        match self.repo().get_if_exists(&self.key, LOCK_LIMIT).await? {
            Some(_) => Ok(()),
            None if self.kind == LockKind::Prune => Err(self.lost(LockLoss::BeforeDeleting)),
            None => Err(self.lost(LockLoss::BeforeCommit)),
        }
    }

    /// Writes `bytes` once at `key` (a manifest: the commit point) while the
    /// lock is held: checked before, and after — a prune that removed the
    /// lock afterwards may have listed the manifests before this one existed.
    /// When the lock is gone (or cannot be checked) after the write, the
    /// manifest is withdrawn again.
    pub async fn commit(&self, key: &Path, bytes: Bytes) -> Result<Created> {
        self.check_held().await?;
        let created = self.repo().create(key, bytes).await?;
        let held = self.check_held().await;
        let Err(lost) = held else {
            return Ok(created);
        };
        let withdrawn = self.repo().delete_all(std::slice::from_ref(key)).await;
        if let Err(e) = &withdrawn {
            tracing::error!(%key, error = %e, "could not withdraw a manifest whose objects a prune may have deleted");
        }
        let key = key.to_string();
        let outcome = match (lost, withdrawn) {
            (Error::LockLost { .. }, Ok(())) => LockLoss::Withdrawn(key),
            (Error::LockLost { .. }, Err(e)) => LockLoss::NotWithdrawn(key, e.to_string()),
            (unchecked, withdrawn) => LockLoss::Unchecked {
                key,
                why: unchecked.to_string(),
                withdrawn: withdrawn.is_ok(),
            },
        };
        Err(self.lost(outcome))
    }

    fn repo(&self) -> &Repository {
        self.repo.as_ref().expect("held until released")
    }

    fn lost(&self, outcome: LockLoss) -> Error {
        Error::LockLost {
            operation: self.operation,
            lock: self.key.to_string(),
            outcome,
        }
    }

    /// Removes the lock and its lease.
    async fn release(mut self) -> Result<()> {
        if let Some(renewal) = self.renewal.take() {
            renewal.abort();
        }
        let repo = self.repo.take().expect("released once");
        repo.delete_all(&keys_of(self.key.as_ref())).await
    }
}

/// Rewrites the lease object every `every` while the lock is held. It never
/// touches the lock itself, so a removed lock stays removed.
async fn renew(repo: Repository, lease_key: Path, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = repo.put(&lease_key, Bytes::new()).await {
            tracing::warn!(lease = %lease_key, error = %e, "could not renew this run's lock");
        }
    }
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        if let Some(renewal) = self.renewal.take() {
            renewal.abort();
        }
        let Some(repo) = self.repo.take() else {
            return;
        };
        let keys = keys_of(self.key.as_ref());
        cleanup::spawn(async move {
            if let Err(e) = repo.delete_all(&keys).await {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn repo() -> Repository {
        Repository::from_store(Arc::new(object_store::memory::InMemory::new()), "memory://")
    }

    fn request(kind: LockKind) -> LockRequest {
        LockRequest {
            kind,
            operation: "test",
            id: BackupId::new(Utc::now()),
            lease: DEFAULT_LEASE,
            wait: Duration::ZERO,
        }
    }

    /// A repository with its marker, as every command but a first backup needs.
    async fn marked_repo() -> Repository {
        let repo = repo();
        repo.check_marker(Some(crate::repo::ids::Format::V2))
            .await
            .unwrap();
        repo
    }

    async fn take(repo: &Repository, kind: LockKind) -> Result<RepoLock> {
        RepoLock::acquire(repo, &request(kind)).await
    }

    #[tokio::test]
    async fn prune_and_backup_exclude_each_other_and_backups_share() {
        let repo = repo();
        let first = take(&repo, LockKind::Backup).await.unwrap();
        let second = take(&repo, LockKind::Backup).await.unwrap();
        let err = take(&repo, LockKind::Prune).await.err().unwrap();
        assert!(err.to_string().contains("rockup unlock"), "{err}");
        assert_eq!(
            list(&repo).await.unwrap().locks.len(),
            2,
            "the refused lock is gone"
        );
        first.release().await.unwrap();
        second.release().await.unwrap();

        let prune = take(&repo, LockKind::Prune).await.unwrap();
        let err = take(&repo, LockKind::Backup).await.err().unwrap();
        assert!(err.to_string().contains("Prune lock"), "{err}");
        prune.release().await.unwrap();
        assert!(list(&repo).await.unwrap().locks.is_empty());
    }

    #[tokio::test]
    async fn unlock_removes_locks_left_by_killed_runs() {
        let repo = marked_repo().await;
        let lock = take(&repo, LockKind::Backup).await.unwrap();
        std::mem::forget(lock); // as after kill -9 — but this process still runs
        assert!(take(&repo, LockKind::Prune).await.is_err());
        let refused = unlock(&repo, false).await.unwrap();
        assert!(refused.removed.is_empty(), "{refused:?}");
        assert!(
            refused.refused[0].reason.contains("is running"),
            "{refused:?}"
        );
        assert_eq!(unlock(&repo, true).await.unwrap().removed.len(), 1);
        take(&repo, LockKind::Prune).await.unwrap();
    }

    #[tokio::test]
    async fn a_commit_after_its_lock_is_gone_is_refused_and_a_release_never_hides_an_error() {
        let repo = marked_repo().await;
        let key = Path::from("backups/x/manifest.json");
        let result: Result<()> = locked(&repo, request(LockKind::Backup), async |lock| {
            lock.commit(&key, Bytes::from_static(b"first")).await?;
            unlock(&repo, true).await?;
            lock.commit(&Path::from("backups/y/manifest.json"), Bytes::new())
                .await
                .map(drop)
        })
        .await;
        let err = result.unwrap_err();
        assert!(
            matches!(
                &err,
                Error::LockLost {
                    outcome: LockLoss::BeforeCommit,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            repo.get_if_exists(&key, 100).await.unwrap().is_some(),
            "kept"
        );
        let failing: Result<()> = locked(&repo, request(LockKind::Backup), async |_| {
            Err(Error::Usage("the run's own error".into()))
        })
        .await;
        assert!(failing.unwrap_err().to_string().contains("own error"));
    }
}
