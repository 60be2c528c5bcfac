//! Deduplication, file by file: what each database file and each pinned external
//! file becomes in the repository, uploading only what is not there yet. Table
//! files by unique name (one LIST of `sst/`; hashes reused from the previous
//! manifest), tables without a session id by content; the other database files
//! and external files by content through the [`ContentStore`] (a pack entry
//! when small; what the indexes and content objects hold is not sent again);
//! and — unless `rehash` — external files whose path, size and mtime match the
//! previous backup are neither read nor uploaded. A damaged previous backup is
//! passed over; one the store fails to return stops the backup
//! ([`Error::PreviousUnreadable`]) rather than have it send everything again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::common::names::is_table_file;
use crate::common::spool::Spool;
use crate::common::tasks::blocking;
use crate::digest::Sha256;
use crate::error::{Error, Problem, Result};
use crate::repo::content::{ContentOptions, ContentStore};
use crate::repo::crypto::sealed::Kind;
use crate::repo::ids::{BackupId, Format};
use crate::repo::layout::{self, TableNaming};
use crate::repo::manifest::{DbFileEntry, ExternalEntry, SourceInfo};
use crate::repo::upload::{Content, Uploader};
use crate::repo::Repository;
use crate::source::{file_stamp, permission_bits, sst, Origin, Pinned, WorkDir};

use super::pin::Job;
use super::previous::Previous;
use super::BackupOptions;

/// What became of one job.
pub(super) enum Outcome {
    Db(DbFileEntry),
    External(ExternalEntry),
    Problem(Problem),
}

/// Everything the per-file decisions need, shared by all uploads of one backup.
pub(super) struct Dedup {
    pub content: ContentStore,
    backup_id: BackupId,
    /// The repository format written (1: per-backup database files).
    format: Format,
    checkpoint: PathBuf,
    /// The source directory, whose files' modes are recorded.
    origin: PathBuf,
    /// object key → (size, sha256) from the previous backup
    known_tables: HashMap<String, (u64, Sha256)>,
    /// object key → size, from one LIST of `sst/`
    existing_tables: HashMap<String, u64>,
    /// The previous backup's external entries by path, unless re-hashing.
    previous_external: Option<Spool<String, ExternalEntry>>,
}

impl Dedup {
    /// Loads what the repository and the previous backup of the same database
    /// (`identity`) already hold.
    pub async fn prepare(
        repo: &Repository,
        checkpoint: PathBuf,
        origin: &Origin,
        source: &SourceInfo,
        options: &BackupOptions,
        work: &WorkDir,
        backup_id: &BackupId,
    ) -> Result<Self> {
        let want_external = options.external.is_some() && !options.rehash;
        let previous = Previous::find(repo, (&source.id(), options), want_external, work).await?;
        let existing_tables = repo.list(layout::TABLES).await?;
        let content_options = ContentOptions {
            compression_level: options.compression_level,
            pack: options.format.packs(),
        };
        let uploader = Uploader::new(repo.clone(), options.memory_budget);
        let index_dir = work.path().join("content-index");
        Ok(Self {
            content: ContentStore::open(repo, uploader, &index_dir, content_options).await?,
            backup_id: backup_id.clone(),
            format: options.format,
            checkpoint,
            origin: origin.path.clone(),
            known_tables: previous.known_tables,
            existing_tables: existing_tables
                .into_iter()
                .map(|m| (m.location.to_string(), m.size))
                .collect(),
            previous_external: previous.external,
        })
    }

    /// Stores one job's file (unless the repository has it) and describes it.
    pub async fn run(&self, job: Job) -> Result<Outcome> {
        match job {
            Job::Db(name) => self.db_file(name).await.map(Outcome::Db),
            Job::External(pinned) => self.external_file(pinned).await,
            Job::Problem(problem) => Ok(Outcome::Problem(problem)),
        }
    }

    async fn db_file(&self, name: String) -> Result<DbFileEntry> {
        let path = self.checkpoint.join(&name);
        let size = std::fs::metadata(&path)
            .map_err(|e| Error::io(&path, e))?
            .len();
        let (object, sha256) = if is_table_file(&name) {
            let (object, sha256) = match session_of(&name, &path).await? {
                Some(session) => self.session_table(&name, &path, size, session).await?,
                None => self.content_table(&name, &path, size).await?,
            };
            (Some(object), sha256)
        } else if !self.format.packs() {
            let key = layout::backup_file(&self.backup_id, &name);
            let target = (Kind::Content, &key);
            let (sha256, _) = self.uploader().upload_file(&path, target, None).await?;
            (Some(key.to_string()), sha256)
        } else {
            (None, self.content.store_file(&path, size, None).await?)
        };
        // The mode of the file in the database (the checkpoint's copies of
        // MANIFEST, OPTIONS and WALs are rockup's own files).
        let mode = permission_bits(&self.origin.join(&name)).or(permission_bits(&path));
        Ok(DbFileEntry {
            name,
            size,
            sha256,
            object,
            mode,
        })
    }

    fn uploader(&self) -> &Uploader {
        self.content.uploader()
    }

    /// A table named by its session id: reused when the repository holds it
    /// (hash from the previous manifest, or read once), uploaded otherwise.
    async fn session_table(
        &self,
        name: &str,
        path: &Path,
        size: u64,
        session: String,
    ) -> Result<(String, Sha256)> {
        let naming = TableNaming::Session(session);
        let logical = layout::table(&layout::unique_table_name(name, size, &naming));
        let key = self.repo().object_key_of(&logical);
        let present = self.holds_table(&key, size);
        if let Some((known_size, sha256)) = self.known_tables.get(logical.as_ref()) {
            if present && *known_size == size {
                return Ok((logical.to_string(), *sha256));
            }
        }
        let sha256 = if present {
            self.uploader().load(path, size).await?.sha256()
        } else {
            self.uploader()
                .upload_file(path, (Kind::Table, &key), None)
                .await?
                .0
        };
        Ok((logical.to_string(), sha256))
    }

    /// A table without a session id (RocksDB blob files, old SSTs), named by
    /// content.
    async fn content_table(&self, name: &str, path: &Path, size: u64) -> Result<(String, Sha256)> {
        let content = self.uploader().load(path, size).await?;
        let naming = TableNaming::Content(content.sha256());
        let logical = layout::table(&layout::unique_table_name(name, size, &naming));
        let key = self.repo().object_key_of(&logical);
        if !self.holds_table(&key, size) {
            self.store_content(path, &key, &content).await?;
        }
        Ok((logical.to_string(), content.sha256()))
    }

    /// Whether the repository holds a table of `size` bytes at `key` (its
    /// key in the store, `Repository::object_key_of` its logical name).
    fn holds_table(&self, key: &object_store::path::Path, size: u64) -> bool {
        self.existing_tables.get(key.as_ref()) == Some(&self.repo().stored_len(size))
    }

    fn repo(&self) -> &Repository {
        self.uploader().repository()
    }

    async fn store_content(
        &self,
        path: &Path,
        key: &object_store::path::Path,
        content: &Content,
    ) -> Result<()> {
        let target = (Kind::Table, key);
        match content {
            Content::Small { .. } => self.uploader().put_small(target, content).await,
            Content::Large { sha256, .. } => self
                .uploader()
                .upload_file(path, target, Some(sha256))
                .await
                .map(drop),
        }
    }

    async fn external_file(&self, pinned: Pinned) -> Result<Outcome> {
        if let Some(previous) = self.unchanged_since_previous(&pinned)? {
            return Ok(match &pinned.expected_sha256 {
                Some(expected) if *expected != previous => {
                    Outcome::Problem(pinned.problem(Problem::mismatch(
                        &pinned.path,
                        format!("record says SHA-256 {expected}, file has {previous}"),
                    )))
                }
                _ => Outcome::External(external_entry(&pinned, previous)),
            });
        }
        Ok(match store_pinned(&self.content, &pinned).await? {
            Ok(entry) => Outcome::External(entry),
            Err(problem) => Outcome::Problem(problem),
        })
    }

    /// The previous backup's hash of this file, if path, size and mtime are unchanged.
    fn unchanged_since_previous(&self, pinned: &Pinned) -> Result<Option<Sha256>> {
        let Some(spool) = &self.previous_external else {
            return Ok(None);
        };
        let Some(previous) = spool.get(&pinned.path)? else {
            return Ok(None);
        };
        Ok(
            (previous.size == pinned.size && previous.mtime_ns == pinned.mtime_ns)
                .then_some(previous.sha256),
        )
    }
}

/// Stores a pinned file's content unless the repository holds it (backup and
/// `follow`): its entry, or the problem that kept it out — a hash other than
/// the record says, a file changed or gone while it was read.
pub(crate) async fn store_pinned(
    content: &ContentStore,
    pinned: &Pinned,
) -> Result<std::result::Result<ExternalEntry, Problem>> {
    let expected = pinned.expected_sha256.as_ref();
    let stored = match content
        .store_file(&pinned.read_from, pinned.size, expected)
        .await
    {
        Ok(sha256) => sha256,
        Err(Error::HashMismatch { actual, .. }) => {
            let problem = match &pinned.expected_sha256 {
                Some(expected) => Problem::mismatch(
                    &pinned.path,
                    format!("record says SHA-256 {expected}, file has {actual}"),
                ),
                None => Problem::changed(&pinned.path, "changed while it was read"),
            };
            return Ok(Err(pinned.problem(problem)));
        }
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            let problem = Problem::missing(&pinned.path, "vanished before it was read");
            return Ok(Err(pinned.problem(problem)));
        }
        Err(e) => return Err(e),
    };
    Ok(unchanged_while_read(pinned, stored))
}

fn external_entry(pinned: &Pinned, sha256: Sha256) -> ExternalEntry {
    ExternalEntry {
        path: pinned.path.clone(),
        size: pinned.size,
        sha256,
        mtime_ns: pinned.mtime_ns,
        mode: pinned.mode,
    }
}

/// The stored file, if size and mtime after reading are what was pinned.
fn unchanged_while_read(
    pinned: &Pinned,
    sha256: Sha256,
) -> std::result::Result<ExternalEntry, Problem> {
    match std::fs::metadata(&pinned.read_from).map(|m| file_stamp(&m)) {
        Ok((size, mtime_ns, _)) if size == pinned.size && mtime_ns == pinned.mtime_ns => {
            Ok(external_entry(pinned, sha256))
        }
        Ok(_) => Err(pinned.problem(Problem::changed(
            &pinned.path,
            "size or mtime changed while it was read",
        ))),
        Err(_) => Err(pinned.problem(Problem::missing(&pinned.path, "vanished while it was read"))),
    }
}

/// The session id of an SST (read from its properties block, no full read).
async fn session_of(name: &str, path: &Path) -> Result<Option<String>> {
    if !name.ends_with(".sst") {
        return Ok(None);
    }
    let path = path.to_path_buf();
    blocking(move || Ok(sst::session_id(&path))).await
}
