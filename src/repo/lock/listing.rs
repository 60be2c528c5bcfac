//! Reading the locks in a repository and judging them: whose they are, whether
//! their holder may still be running (a live process of this host, a lease
//! renewed in time), and removing those of runs that are gone.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use crate::common::names::hostname;
use crate::error::{Error, Result};
use crate::repo::layout;
use crate::repo::Repository;

/// Largest lock object read; anything larger is unreadable.
pub(super) const LOCK_LIMIT: u64 = 64 << 10;

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
    /// The holder's lease: it renews the lock at least this often. Absent in
    /// locks of older versions, which never expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_secs: Option<u64>,
    /// Key of the lock object (not stored).
    #[serde(skip)]
    pub key: String,
    /// When it was last written or renewed, by the store's clock (not stored).
    #[serde(skip)]
    pub renewed_at: Option<DateTime<Utc>>,
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
            humantime::format_duration(Duration::from_secs(age))
        )
    }
}

impl LockInfo {
    /// Whether its lease ran out before `now` (the store's time): the holder
    /// stopped renewing it. A lock without a lease never runs out.
    pub fn stale(&self, now: DateTime<Utc>) -> bool {
        let (Some(lease), Some(renewed)) = (self.lease_secs, self.renewed_at) else {
            return false;
        };
        (now - renewed).num_seconds() > i64::try_from(lease).unwrap_or(i64::MAX)
    }

    /// Why the holder may still be running, or `None` when it is known to be
    /// gone: a process of this host that no longer exists, or a lease that ran
    /// out before `now`.
    pub fn alive(&self, now: DateTime<Utc>) -> Option<String> {
        if self.host == hostname() && self.pid > 0 {
            return process_exists(self.pid).then(|| format!("process {} is running", self.pid));
        }
        if self.lease_secs.is_some() {
            let renewed = self.renewed_at.map(|at| (now - at).num_seconds().max(0));
            return (!self.stale(now))
                .then(|| format!("renewed {}s ago, within its lease", renewed.unwrap_or(0)));
        }
        Some(format!(
            "whether process {} on {} still runs cannot be checked from here (a lock without a lease)",
            self.pid, self.host
        ))
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

/// The locks in a repository, and lease objects whose lock is gone.
pub struct Locks {
    /// Every lock (unreadable lock objects count as prune locks without a
    /// lease, the cautious reading).
    pub locks: Vec<LockInfo>,
    /// Lease objects without a lock (a renewal that raced a removal).
    pub orphan_leases: Vec<Path>,
}

/// Every lock in the repository, with when each was last renewed (one LIST).
pub async fn list(repo: &Repository) -> Result<Locks> {
    let listed = repo.list(layout::LOCKS).await?;
    let mut leases: HashMap<String, (Path, DateTime<Utc>)> = HashMap::new();
    for meta in &listed {
        if let Some(name) = meta.location.as_ref().strip_suffix(layout::LEASE_SUFFIX) {
            leases.insert(
                name.to_string(),
                (meta.location.clone(), meta.last_modified),
            );
        }
    }
    let mut locks = Vec::new();
    for meta in listed
        .iter()
        .filter(|m| m.location.as_ref().ends_with(".json"))
    {
        let Some(mut info) = read_lock(repo, &meta.location, meta.last_modified).await? else {
            continue; // released meanwhile
        };
        let name = meta.location.as_ref().trim_end_matches(".json");
        let lease = leases.remove(name).map(|(_, at)| at);
        info.renewed_at = Some(lease.map_or(meta.last_modified, |at| at.max(meta.last_modified)));
        locks.push(info);
    }
    let orphan_leases = leases.into_values().map(|(key, _)| key).collect();
    Ok(Locks {
        locks,
        orphan_leases,
    })
}

async fn read_lock(
    repo: &Repository,
    key: &Path,
    written: DateTime<Utc>,
) -> Result<Option<LockInfo>> {
    let bytes = match repo.get_if_exists(key, LOCK_LIMIT).await {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Ok(None),
        Err(Error::Manifest { .. }) => Bytes::new(), // too large: unreadable
        Err(e) => return Err(e),
    };
    // Sealed contents that do not open are unreadable, as garbage is.
    let bytes = repo.open_lock(key, bytes).unwrap_or_default();
    let mut info = serde_json::from_slice::<LockInfo>(&bytes).unwrap_or(LockInfo {
        kind: LockKind::Prune,
        host: "unknown".into(),
        pid: 0,
        created_at: written,
        lease_secs: None,
        key: String::new(),
        renewed_at: None,
    });
    info.key = key.to_string();
    Ok(Some(info))
}

/// The lock object and its lease object, by the lock's key.
pub(super) fn keys_of(lock_key: &str) -> [Path; 2] {
    let name = lock_key.trim_end_matches(".json");
    [
        Path::from(lock_key),
        Path::from(format!("{name}{}", layout::LEASE_SUFFIX)),
    ]
}

/// Removes the locks whose lease ran out before `now` (the store's time) and
/// lease objects without a lock; returns the locks removed.
pub async fn remove_stale(repo: &Repository, now: DateTime<Utc>) -> Result<Vec<String>> {
    let listing = list(repo).await?;
    let stale: Vec<&LockInfo> = listing.locks.iter().filter(|l| l.stale(now)).collect();
    let mut keys: Vec<Path> = stale.iter().flat_map(|l| keys_of(&l.key)).collect();
    keys.extend(listing.orphan_leases);
    repo.delete_all(&keys).await?;
    for lock in &stale {
        tracing::info!(%lock, "removed a lock whose lease ran out");
    }
    Ok(stale.iter().map(|l| l.key.clone()).collect())
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
    repo.check_marker(None).await?;
    let mut report = UnlockReport::default();
    let mut keys = Vec::new();
    let now = Utc::now();
    for lock in list(repo).await?.locks {
        match lock.alive(now).filter(|_| !force) {
            Some(reason) => report.refused.push(Refused {
                lock: lock.to_string(),
                reason,
            }),
            None => {
                keys.extend(keys_of(&lock.key));
                report.removed.push(lock.key);
            }
        }
    }
    repo.delete_all(&keys).await?;
    Ok(report)
}
