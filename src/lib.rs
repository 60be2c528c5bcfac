//! # rockup
//!
//! Consistent, point-in-time backups of a live RocksDB database **and of the
//! external files its records point to**, streamed to object storage (S3 and
//! S3-compatible stores, GCS, Azure Blob, or a local directory) through
//! `object_store`, and verified restores onto a fresh host.
//!
//! The pipeline, one module per stage:
//!
//! | module | owns |
//! |---|---|
//! | [`checkpoint`] | the three ways in (DB directory, held or not; app-made checkpoint; live DB), the work directory |
//! | [`wal`] | WAL files copied up to their last complete record, sequence-number gap checks |
//! | [`scan`] | records → external file references, resolver rules, pre-links and pinning, the [`DeletionGuard`] |
//! | [`upload`] | streaming upload with hashing, dedup, multipart and a global memory budget |
//! | [`backup`] | orchestrates checkpoint → scan → upload → commit |
//! | [`manifest`] | the manifest header and its sorted parts; load, validate, commit |
//! | [`restore`] | parallel verified download, atomic placement, post-restore checks |
//! | [`verify`] | existence/size checks by LIST; `--deep` re-hashing |
//! | [`prune`] | retention policy and garbage collection with a grace period |
//! | [`lock`] | repository locks that keep `prune` and backups apart |
//! | [`store`] | URL + options → [`Repository`] (the one place stores are built) |
//! | [`layout`] | every object key, formatted and parsed in one place |
//!
//! ## Backing up from inside the application
//!
//! ```no_run
//! # async fn run(db: &rocksdb::DB) -> rockup::Result<()> {
//! use rockup::{BackupOptions, DeletionGuard, ExternalFiles, Repository, ResolverConfig};
//!
//! let guard = DeletionGuard::new(); // the app removes external files via guard.remove(path)
//! let repo = Repository::open("s3://bucket/backups", &[])?;
//! let options = BackupOptions {
//!     external: Some(ExternalFiles::new("/data/files", "files", ResolverConfig {
//!         reference: "json:/path".parse().unwrap(),
//!         key_prefix: None,
//!         sha256_pointer: None,
//!         size_pointer: None,
//!     })),
//!     guard: Some(guard.clone()),
//!     ..Default::default()
//! };
//! let report = rockup::backup_live(&repo, db, None, &options).await?;
//! println!("backup {} at sequence {}", report.header.backup_id, report.header.sequence_number);
//! # Ok(()) }
//! ```

pub mod backup;
pub mod checkpoint;
pub mod cli;
pub mod demo;
pub mod error;
pub mod layout;
pub mod lock;
pub mod manifest;
pub mod prune;
pub mod restore;
pub mod scan;
pub mod spool;
pub mod sst;
pub mod store;
pub mod upload;
pub mod verify;
pub mod wal;

pub use backup::{backup, backup_live, BackupOptions, BackupReport};
pub use checkpoint::Source;
pub use error::{Error, Problem, ProblemKind, Result};
pub use manifest::{list, Header, ListedBackup};
pub use restore::{restore, RestoreOptions, RestoreReport};
pub use scan::{
    DeletionGuard, ExternalFiles, RefSource, Reference, ReferenceExtractor, ResolverConfig,
};
pub use store::Repository;
pub use verify::{verify, VerifyOptions, VerifyReport};
