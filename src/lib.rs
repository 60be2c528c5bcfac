//! # rockup
//!
//! Consistent, point-in-time backups of a live RocksDB database **and of the
//! external files its records point to**, streamed to object storage (S3 and
//! S3-compatible stores, GCS, Azure Blob, or a local directory) through
//! `object_store`, and verified restores onto a fresh host.
//!
//! The crate is layered; each layer imports only from the ones below it:
//!
//! | layer | owns |
//! |---|---|
//! | `ops` | the operations: [`backup()`], [`restore()`], [`verify()`], [`prune()`] |
//! | `source` | the database being backed up and its external files: checkpoints, WAL copies, references, pinning, the [`DeletionGuard`] — RocksDB and the filesystem, nothing of object storage |
//! | `repo` | the repository: [`Repository`], key layout, [`manifest`], locks, uploads — object storage and the format, nothing of RocksDB |
//! | `common` | helpers both sides share: file-name and path rules, [`ReferenceExtractor`], read-only opening, scratch spools |
//!
//! The `rockup` binary (the `cli` feature, on by default) is a thin layer over
//! this API; a library user who does not want clap sets
//! `default-features = false`.
//!
//! ## Backing up from inside the application
//!
//! ```no_run
//! # async fn run(db: &rocksdb::DB) -> rockup::Result<()> {
//! use rockup::{BackupOptions, DeletionGuard, ExternalFiles, RefSource, Repository, ResolverConfig};
//!
//! let guard = DeletionGuard::new(); // the app removes external files via guard.remove(path)
//! let repo = Repository::open("s3://bucket/backups", &[])?;
//! let resolver = ResolverConfig::new(RefSource::Json("/path".into()));
//! let options = BackupOptions {
//!     external: Some(ExternalFiles::new("/data/files", "files", resolver)),
//!     guard: Some(guard.clone()),
//!     ..Default::default()
//! };
//! let report = rockup::backup_live(&repo, db, None, &options).await?;
//! println!("backup {} at sequence {}", report.header.backup_id, report.header.sequence_number);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod common;
mod error;
mod ops;
mod repo;
mod source;

pub use common::cleanup::wait as wait_for_cleanup;
pub use common::names::escape_controls;
pub use common::progress::{Progress, ProgressSnapshot};
pub use common::references::{RefSource, Reference, ReferenceExtractor, ResolverConfig};
pub use error::{Error, Problem, ProblemKind, Result, StoreErrorKind};
pub use ops::backup::{backup, backup_live, BackupOptions, BackupReport};
pub use ops::copy::{copy, CopyOptions, CopyReport};
pub use ops::prune::{
    prune, Kept, PruneOptions, PruneReport, RepackReport, RetentionPolicy, DEFAULT_REPACK_BELOW,
};
pub use ops::restore::{restore, RestoreOptions, RestoreReport, RESTORE_JOBS};
pub use ops::verify::{verify, VerifyOptions, VerifyReport};
pub use repo::content::DEFAULT_COMPRESSION_LEVEL;
pub use repo::lock::{unlock, LockInfo, LockKind, Refused, UnlockReport, DEFAULT_LEASE};
pub use repo::manifest::{list, ListedBackup};
pub use repo::{Created, Repository, Traffic};
pub use source::{CheckpointStats, DeletionGuard, ExternalFiles, Source};

/// The repository format as a reader sees it: a backup's header and the entries
/// of its parts (docs/FORMAT.md describes both).
pub mod manifest {
    pub use crate::repo::manifest::{
        load, DbFileEntry, ExternalEntry, ExternalInfo, Header, PartEntry, PartKind, PartRef,
        SourceInfo, Stats,
    };
}
