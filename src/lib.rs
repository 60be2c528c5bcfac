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
//! | `ops` | the operations: [`backup()`], [`follow()`], [`restore()`], [`verify()`], [`prune()`] |
//! | `source` | the database being backed up and its external files: checkpoints, WAL copies, references, pinning, the [`DeletionGuard`] — RocksDB and the filesystem, nothing of object storage |
//! | `repo` | the repository: [`Repository`], key layout, [`manifest`], locks, uploads — object storage and the format, nothing of RocksDB |
//! | `common` | helpers both sides share: file-name and path rules, [`ReferenceExtractor`], read-only opening, typed scratch spools, [`Jobs`] |
//! | `error`, `digest` | the bottom, importing nothing else of rockup's: [`Error`], [`Problem`], [`Sha256`] |
//!
//! The `rockup` binary (the `cli` feature, on by default) is a thin layer over
//! this API; a library user who does not want clap sets
//! `default-features = false`.
//!
//! ## Options
//!
//! Every operation takes an options struct built one way: its `default()`,
//! then the fields that differ. The structs are `#[non_exhaustive]`, so new
//! options never break a caller.
//!
//! Backing up from inside the application, with the application's own handle
//! and its deletion guard:
//!
//! ```no_run
//! # async fn run(db: &rocksdb::DB) -> rockup::Result<()> {
//! use rockup::{BackupOptions, DeletionGuard, ExternalFiles, RefSource, Repository, ResolverConfig};
//!
//! let guard = DeletionGuard::new(); // the app removes external files via guard.remove(path)
//! let repo = Repository::open("s3://bucket/backups", &[])?;
//! let resolver = ResolverConfig::new(RefSource::Json("/path".into()));
//! let mut options = BackupOptions::default();
//! options.external = Some(ExternalFiles::new("/data/files", "files", resolver));
//! options.guard = Some(guard.clone());
//! let report = rockup::backup_live(&repo, db, None, &options).await?;
//! println!("backup {} at sequence {}", report.header.backup_id, report.header.sequence_number);
//! # Ok(()) }
//! ```
//!
//! Restoring the latest backup, verifying all of them deeply, copying them to
//! a second repository, and pruning to a week of dailies:
//!
//! ```no_run
//! # async fn run(repo: &rockup::Repository, second: &rockup::Repository) -> rockup::Result<()> {
//! use rockup::{CopyOptions, PruneOptions, RestoreOptions, VerifyOptions};
//!
//! let mut restore = RestoreOptions::default(); // the latest backup
//! restore.db_dir = "/restore/db".into();
//! restore.blob_root = Some("/restore/files".into());
//! rockup::restore(repo, &restore).await?;
//!
//! let mut verify = VerifyOptions::default();
//! verify.backup = "all".into();
//! verify.deep = true;
//! let found = rockup::verify(repo, &verify).await?;
//! assert!(found.problems.is_empty(), "{:?}", found.problems);
//!
//! let mut copy = CopyOptions::default();
//! copy.backup = "all".into();
//! rockup::copy(repo, second, &copy).await?;
//!
//! let mut prune = PruneOptions::default(); // grace period 24 h
//! prune.policy.keep_daily = Some(7);
//! rockup::prune(repo, &prune).await?;
//! # Ok(()) }
//! ```
//!
//! ## Encrypted repositories
//!
//! [`init()`] makes one; a [`Repository`] opens it with
//! [`Credentials`]: a passphrase, an [`Identity`] (a recipient key slot), or
//! a [`WriteKey`] that backs up and reads nothing back. [`keys`] manages the
//! key slots and rotates the master key.
//!
//! ```no_run
//! # async fn run() -> rockup::Result<()> {
//! use rockup::{Credentials, InitOptions, Repository};
//!
//! let repo = Repository::open("s3://bucket/backups", &[])?
//!     .with_credentials(Credentials::passphrase("correct horse battery staple"));
//! rockup::init(&repo, &InitOptions::default()).await?;
//! let write_key = rockup::keys::write_key(&repo).await?; // for a backup host
//! let host = Repository::open("s3://bucket/backups", &[])?
//!     .with_credentials(Credentials::default().with_write_key(write_key));
//! # let _ = host; Ok(()) }
//! ```
//!
//! Errors say whether trying again may help ([`Error::retryable`]; store
//! failures carry a [`StoreErrorKind`] and object_store's error as their
//! source) and map to the CLI's exit codes ([`Error::exit_code`]).

#![warn(missing_docs)]

mod common;
mod digest;
mod error;
mod ops;
mod repo;
mod source;

pub use common::cleanup::wait as wait_for_cleanup;
pub use common::progress::{Progress, ProgressSnapshot};
pub use common::references::{RefSource, Reference, ReferenceExtractor, ResolverConfig};
pub use common::tasks::Jobs;
pub use common::units::parse_bytes;
pub use digest::Sha256;
pub use error::{
    escape_controls, Error, LockLoss, Problem, ProblemKind, Result, StoreErrorKind, StoreSource,
};
pub use ops::backup::{backup, backup_live, BackupOptions, BackupReport};
pub use ops::copy::{copy, CopyOptions, CopyReport};
pub use ops::follow::{follow, FollowOptions, FollowStatus};
pub use ops::inspect::{
    diff, find, ls, Change, ChangeKind, DiffOptions, DiffReport, DiffTotals, FindOptions,
    FindReport, Found, Item, LsOptions, Tally,
};
pub use ops::keys::{init, InitOptions, KeysReport, NewKey, SlotInfo};
pub use ops::prune::{
    prune, GroupBy, Kept, PruneOptions, PruneReport, RepackReport, RetentionPolicy,
    DEFAULT_REPACK_BELOW, UNLIMITED,
};
pub use ops::restore::{
    dump, restorable, restore, DumpOptions, DumpReport, FileMatch, FileSelection, PointInTime,
    Restorable, RestoreOptions, RestoreReport, RESTORE_JOBS,
};
pub use ops::verify::{verify, DataSubset, VerifyOptions, VerifyReport, MAX_UNREADABLE};
pub use repo::content::DEFAULT_COMPRESSION_LEVEL;
pub use repo::crypto::{Credentials, Identity, KdfParams, Recipient, WriteKey};
pub use repo::ids::{BackupId, Format, PackId};
pub use repo::lock::{unlock, LockInfo, LockKind, Refused, UnlockReport, DEFAULT_LEASE};
pub use repo::manifest::{list, ListedBackup};
pub use repo::{Created, RateLimiter, Repository, Traffic};
pub use source::{CheckpointStats, DeletionGuard, ExternalFiles, Source};

/// Files the command line writes as the library does: replaced atomically.
pub mod files {
    pub use crate::common::durable::{parent_dir, replace_file, STATUS_FILE_MODE};
}

/// Key management of an encrypted repository (`rockup key`).
pub mod keys {
    pub use crate::ops::keys::{add, list, new_identity, passwd, remove, rotate, write_key};
}

/// The repository format as a reader sees it: a backup's header, the entries
/// of its parts, and everything it needs from the repository
/// ([`Header::referenced`](manifest::Header::referenced); docs/FORMAT.md
/// describes the format).
pub mod manifest {
    pub use crate::repo::manifest::{
        load, DbFileEntry, Entry, ExternalEntry, ExternalInfo, Header, PartEntry, PartKind,
        PartRef, Referenced, SourceInfo, Stats, Stored,
    };
}
