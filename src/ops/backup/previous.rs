//! What the previous backup of a source tells the next one: its table files
//! (their hashes need not be read again) and its external entries (files
//! unchanged by path, size and mtime are neither read nor sent). A full-key
//! host reads them from the newest intact manifest. A write-only host cannot
//! read manifests back, so it keeps what it backed up last in a cache of its
//! own (`HostCache`: `<cache dir>/<repository id>/<source digest>.ndjson.zst`,
//! 0600 in a 0700 directory), written after each commit. It is used only
//! while the backup it records is still committed — a prune that forgot it
//! may have deleted its content — and a missing, outdated or damaged cache
//! only means that everything is read again (content the repository holds is
//! still not sent).

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::common::spool::Spool;
use crate::common::tasks::blocking;
use crate::digest::Sha256;
use crate::error::{Error, ReadFailure, Result};
use crate::repo::ids::BackupId;
use crate::repo::manifest::{self, DbFileEntry, ExternalEntry, Header};
use crate::repo::Repository;
use crate::source::WorkDir;
use crate::BackupOptions;

/// What the previous backup tells: its table files and, unless re-hashing,
/// its external entries.
#[derive(Default)]
pub(super) struct Previous {
    /// object key → (size, sha256)
    pub known_tables: HashMap<String, (u64, Sha256)>,
    /// External entries by path.
    pub external: Option<Spool<String, ExternalEntry>>,
}

impl Previous {
    /// The newest intact backup of the same source, else the newest intact
    /// one of any; none at all means no deduplication against a previous
    /// manifest. A damaged backup is passed over with a warning — it must
    /// never stop new backups — and `rockup verify` names the damage; one the
    /// store fails to return stops the backup.
    pub async fn find(
        repo: &Repository,
        (source, options): (&str, &BackupOptions),
        want_external: bool,
        work: &WorkDir,
    ) -> Result<Self> {
        if repo.is_write_only() {
            let Some(cache) = HostCache::of(repo, source, options) else {
                tracing::warn!(
                    "no cache directory (--cache-dir, ROCKUP_CACHE_DIR, XDG_CACHE_HOME or HOME): \
                     every file is read again (content the repository holds is still not sent)"
                );
                return Ok(Self::default());
            };
            return cache.load(repo, want_external, work).await;
        }
        let mut others = Vec::new();
        for id in manifest::committed_ids(repo).await?.iter().rev() {
            let Some(header) = readable(id, manifest::read(repo, id).await)? else {
                continue;
            };
            if header.source.id() != source {
                others.push(header);
                continue;
            }
            if let Some(previous) = Self::load(repo, &header, want_external, work).await? {
                return Ok(previous);
            }
        }
        for header in others {
            if let Some(previous) = Self::load(repo, &header, want_external, work).await? {
                return Ok(previous);
            }
        }
        Ok(Self::default())
    }

    /// Reads `header`'s parts; `None` (with a warning) when they are damaged.
    async fn load(
        repo: &Repository,
        header: &Header,
        want_external: bool,
        work: &WorkDir,
    ) -> Result<Option<Self>> {
        let id = &header.backup_id;
        let Some(db_entries) = readable(id, header.entries::<DbFileEntry>(repo).await)? else {
            return Ok(None);
        };
        let known_tables = db_entries
            .into_iter()
            .filter_map(|e| Some((e.object?, (e.size, e.sha256))))
            .collect();
        if !want_external {
            let external = None;
            return Ok(Some(Self {
                known_tables,
                external,
            }));
        }
        let spool = Spool::create(&work.path().join(format!("previous-{id}")))?;
        let spooled = header
            .for_each_entry(repo, |entry: ExternalEntry| {
                spool.put(&entry.path.clone(), &entry)
            })
            .await;
        Ok(readable(id, spooled)?.map(|()| Self {
            known_tables,
            external: Some(spool),
        }))
    }
}

/// What reading the previous backup `id` gave: `None` (with a warning) when
/// it is damaged, an error when the store failed to return it.
fn readable<T>(id: &BackupId, read: Result<T>) -> Result<Option<T>> {
    let error = match read {
        Ok(value) => return Ok(Some(value)),
        Err(e) => e,
    };
    match error.read_failure() {
        ReadFailure::Damaged => {
            tracing::warn!(backup = %id, %error, "a previous backup is damaged; deduplicating against an older one (`rockup verify --backup {id}` names the damage)");
            Ok(None)
        }
        ReadFailure::Unreadable => Err(Error::PreviousUnreadable {
            backup: id.to_string(),
            error: Box::new(error),
        }),
        ReadFailure::Other => Err(error),
    }
}

/// A write-only host's record of its last backup of one source.
pub(super) struct HostCache {
    path: PathBuf,
}

/// One line of the cache.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    /// The first line: which backup the rest describes.
    Backup(BackupId),
    Db(DbFileEntry),
    External(ExternalEntry),
}

impl HostCache {
    /// The cache of `source` in `repo`, where this host holds only a write
    /// key (`None` otherwise: manifests are read instead).
    pub fn of(repo: &Repository, source: &str, options: &BackupOptions) -> Option<Self> {
        if !repo.is_write_only() || repo.is_dry_run() {
            return None;
        }
        let crypt = repo.crypt()?;
        let base = options.cache_dir.clone().or_else(default_cache_dir)?;
        let file = format!("{}.ndjson.zst", Sha256::of(source.as_bytes()));
        Some(Self {
            path: base.join(crypt.keys.repo.to_string()).join(file),
        })
    }

    /// What the cache holds; nothing (with a note) when it is missing or
    /// damaged.
    async fn load(
        self,
        repo: &Repository,
        want_external: bool,
        work: &WorkDir,
    ) -> Result<Previous> {
        let spool = Spool::create(&work.path().join("previous-cache"))?;
        let path = self.path.clone();
        let read = blocking(move || Ok(read_cache(&path, want_external, spool))).await?;
        let why = match read {
            Ok((id, previous)) if manifest::is_committed(repo, &id).await? => return Ok(previous),
            Ok((id, _)) => format!("backup {id} it records is no longer committed (pruned)"),
            Err(why) => why,
        };
        tracing::info!(cache = %self.path.display(), %why, "no usable record of a previous backup on this host: every file is read");
        Ok(Previous::default())
    }

    /// Records committed backup `id`'s entries (replacing the previous record).
    pub async fn remember(
        self,
        id: BackupId,
        db: Vec<DbFileEntry>,
        external: Spool<String, ExternalEntry>,
    ) -> Result<()> {
        let path = self.path.clone();
        let written = blocking(move || Ok(write_cache(&path, &id, &db, &external))).await?;
        if let Err(e) = written {
            tracing::warn!(cache = %self.path.display(), error = %e, "could not record this backup for the next one: it will read every file again");
        }
        Ok(())
    }
}

/// `$XDG_CACHE_HOME/rockup`, else `~/.cache/rockup`.
fn default_cache_dir() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_CACHE_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    let home = || std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache"));
    Some(xdg.or_else(home)?.join("rockup"))
}

/// The cache's backup id and what it records.
fn read_cache(
    path: &std::path::Path,
    want_external: bool,
    spool: Spool<String, ExternalEntry>,
) -> std::result::Result<(BackupId, Previous), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| e.to_string())?;
    let decoder = zstd::stream::Decoder::new(file).map_err(|e| e.to_string())?;
    let mut lines = std::io::BufReader::new(decoder).lines();
    let mut parse = move || match lines.next() {
        Some(line) => {
            let line = line.map_err(|e| e.to_string())?;
            serde_json::from_str::<Line>(&line)
                .map(Some)
                .map_err(|e| e.to_string())
        }
        None => Ok(None),
    };
    let Some(Line::Backup(id)) = parse()? else {
        return Err("it does not start with the backup it records".into());
    };
    let mut known_tables = HashMap::new();
    while let Some(line) = parse()? {
        match line {
            Line::Backup(_) => return Err("it records two backups".into()),
            Line::Db(entry) => {
                if let Some(object) = entry.object {
                    known_tables.insert(object, (entry.size, entry.sha256));
                }
            }
            Line::External(entry) if want_external => {
                spool
                    .put(&entry.path.clone(), &entry)
                    .map_err(|e| e.to_string())?;
            }
            Line::External(_) => {}
        }
    }
    let previous = Previous {
        known_tables,
        external: want_external.then_some(spool),
    };
    Ok((id, previous))
}

fn write_cache(
    path: &std::path::Path,
    id: &BackupId,
    db: &[DbFileEntry],
    external: &Spool<String, ExternalEntry>,
) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path.parent().expect("a cache file has a directory");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let staged = path.with_extension("tmp");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&staged)?;
    let mut encoder = zstd::stream::Encoder::new(std::io::BufWriter::new(file), 3)?;
    let mut line = |entry: &Line| -> std::io::Result<()> {
        serde_json::to_writer(&mut encoder, entry)?;
        encoder.write_all(b"\n")
    };
    line(&Line::Backup(id.clone()))?;
    for entry in db {
        line(&Line::Db(entry.clone()))?;
    }
    for entry in external.iter() {
        let (_, entry) = entry.map_err(std::io::Error::other)?;
        line(&Line::External(entry))?;
    }
    encoder.finish()?.flush()?;
    std::fs::rename(&staged, path)
}
