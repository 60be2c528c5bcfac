//! A sample database with external files, and independent comparison helpers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, IteratorMode, Options, DB};
use sha2::{Digest, Sha256};

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};
use rockup::{ExternalFiles, Format, RefSource, Repository, ResolverConfig, RestoreOptions};

pub type Records = BTreeMap<String, Vec<(Vec<u8>, Vec<u8>)>>;
/// Relative path → bytes of every regular file under a root.
pub type Tree = BTreeMap<String, Vec<u8>>;

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
    pub files: PathBuf,
}

/// `file:<n>` records with JSON values `{"path", "size", "sha256"}`, as in the demo.
pub fn resolver() -> ResolverConfig {
    ResolverConfig::new(RefSource::Json("/path".into()))
        .with_key_prefix("file:")
        .with_sha256_pointer("/sha256")
        .with_size_pointer("/size")
}

/// The command-line flags of [`resolver`] for external files under `files`.
pub fn blob_args(files: &Path) -> Vec<String> {
    let files = files.to_str().unwrap();
    [
        "--blob-root",
        files,
        "--blob-cf",
        "files",
        "--blob-ref",
        "json:/path",
        "--blob-key-prefix",
        "file:",
        "--blob-sha256",
        "json:/sha256",
    ]
    .map(String::from)
    .to_vec()
}

/// `value` changed by `change`: rockup's option structs are
/// `#[non_exhaustive]`, built from a default by setting fields.
pub fn with<T>(mut value: T, change: impl FnOnce(&mut T)) -> T {
    change(&mut value);
    value
}

/// Backup options that keep rockup's work directory under `dir`.
pub fn options_in(dir: &Path) -> rockup::BackupOptions {
    with(rockup::BackupOptions::default(), |o| {
        o.work_dir = Some(dir.join("work"))
    })
}

/// Restores `backup` into `db` and, for its external files, `blob_root`.
pub fn restoring(
    backup: impl ToString,
    db: impl Into<PathBuf>,
    blob_root: Option<PathBuf>,
) -> RestoreOptions {
    with(RestoreOptions::default(), |o| {
        o.backup = backup.to_string();
        o.db_dir = db.into();
        o.blob_root = blob_root;
    })
}

pub fn db_options() -> Options {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts
}

pub fn open_rw(path: &Path) -> DB {
    let cfs = ["default", "files", "meta"].map(|n| {
        let mut o = Options::default();
        if n == "meta" {
            o.set_compression_type(rocksdb::DBCompressionType::Zstd);
        } else {
            o.set_compression_type(rocksdb::DBCompressionType::Snappy);
        }
        ColumnFamilyDescriptor::new(n, o)
    });
    DB::open_cf_descriptors(&db_options(), path, cfs).unwrap()
}

pub fn content(i: usize, size: usize) -> Vec<u8> {
    (0..size)
        .map(|j| ((i * 131 + j * 17 + j / 7) % 256) as u8)
        .collect()
}

/// Writes an external file and the record that references it (file first).
pub fn add_file(db: &DB, files: &Path, i: usize, size: usize) {
    let rel = format!("d{}/f-{i}.bin", i % 5);
    let data = content(i, size);
    let path = files.join(&rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &data).unwrap();
    let cf = db.cf_handle("files").unwrap();
    let value = serde_json::json!({"path": rel, "size": size, "sha256": hex::encode(Sha256::digest(&data))});
    db.put_cf(&cf, format!("file:{i:06}"), value.to_string())
        .unwrap();
}

impl Fixture {
    /// `n` external files; half the records flushed, the rest only in the WAL.
    pub fn new(n: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db_path = dir.path().join("db");
        let files = dir.path().join("files");
        std::fs::create_dir_all(&files).unwrap();
        {
            let db = open_rw(&db_path);
            let meta = db.cf_handle("meta").unwrap();
            for i in 0..n {
                add_file(&db, &files, i, 10 + (i * 7919) % 20_000);
                db.put_cf(&meta, format!("m{i}"), format!("meta-{i}"))
                    .unwrap();
                db.put(format!("user{i}"), vec![i as u8; 100]).unwrap();
                if i == n / 2 {
                    db.flush_cf(&db.cf_handle("files").unwrap()).unwrap();
                    db.flush_cf(&meta).unwrap();
                    db.flush().unwrap();
                }
            }
            db.put_cf(&meta, b"wal-only", b"this record lives only in the WAL")
                .unwrap();
        }
        Fixture {
            dir,
            db: db_path,
            files,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn external(&self) -> ExternalFiles {
        ExternalFiles::new(&self.files, "files", resolver())
    }

    pub fn options(&self) -> rockup::BackupOptions {
        with(rockup::BackupOptions::default(), |o| {
            o.external = Some(self.external());
            o.work_dir = Some(self.path("work"));
        })
    }

    pub fn local_repo(&self) -> Repository {
        Repository::open(&self.path("repo").display().to_string(), &[]).unwrap()
    }
}

pub fn memory_repo() -> Repository {
    Repository::from_store(
        Arc::new(object_store::memory::InMemory::new()),
        "memory://test",
    )
}

/// Every record of every column family, read-only, opened as the application
/// would: with the options of the database's OPTIONS file (RocksDB 11.8 crashes
/// opening a database that tracks WALs in its MANIFEST with other options), its
/// WAL files read from its own directory.
pub fn read_all(path: &Path) -> Records {
    let cache = rocksdb::Cache::new_lru_cache(8 << 20);
    let (mut opts, cfs) =
        Options::load_latest(path, rocksdb::Env::new().unwrap(), true, cache).unwrap();
    opts.set_wal_dir(path);
    let names: Vec<String> = cfs.iter().map(|cf| cf.name().to_string()).collect();
    let db = DB::open_cf_descriptors_read_only(&opts, path, cfs, false).unwrap();
    names
        .iter()
        .map(|name| {
            let cf = db.cf_handle(name).unwrap();
            let records = db.iterator_cf(&cf, IteratorMode::Start).map(|r| {
                let (k, v) = r.unwrap();
                (k.to_vec(), v.to_vec())
            });
            (name.clone(), records.collect())
        })
        .collect()
}

/// Every regular file under `root`, relative path → bytes (empty when missing).
pub fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    if !root.exists() {
        return BTreeMap::new();
    }
    walkdir::WalkDir::new(root)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (rel, std::fs::read(e.path()).unwrap())
        })
        .collect()
}

/// Lists a directory's entry names (empty when missing).
pub fn entries(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Prune options keeping the `n` newest backups of each source.
pub fn keep_last(n: usize, grace: std::time::Duration, dry_run: bool) -> rockup::PruneOptions {
    with(rockup::PruneOptions::default(), |o| {
        o.policy.keep_last = Some(n);
        o.grace = grace;
        o.dry_run = dry_run;
    })
}

/// Verifies `backup` (`latest`, `all` or an id), quick or deep.
pub async fn verify(repo: &Repository, backup: &str, deep: bool) -> rockup::VerifyReport {
    let options = with(rockup::VerifyOptions::default(), |o| {
        o.backup = backup.into();
        o.deep = deep;
        o.jobs = 4.into();
    });
    rockup::verify(repo, &options).await.unwrap()
}

// The repository layout as docs/FORMAT.md states it, written out here rather
// than taken from the code under test.

/// `backups/<id>/manifest.json`
pub fn manifest_key(backup_id: impl std::fmt::Display) -> String {
    format!("backups/{backup_id}/manifest.json")
}

/// `backups/<id>/parts/<sha256>`
pub fn part_key(backup_id: impl std::fmt::Display, sha256: impl std::fmt::Display) -> String {
    format!("backups/{backup_id}/parts/{sha256}")
}

/// `blobs/sha256/<aa>/<sha256>`
pub fn blob_key(sha256: impl std::fmt::Display) -> String {
    let sha256 = sha256.to_string();
    format!("blobs/sha256/{}/{sha256}", &sha256[..2])
}

/// A backup id for `time`: `<UTC time to the millisecond>-<8 hex digits>`,
/// unique within the test run.
pub fn backup_id_at(time: chrono::DateTime<chrono::Utc>) -> String {
    static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{n:08x}", time.format("%Y%m%dT%H%M%S%.3fZ"))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

// Raw object access, as an attacker, a failing disk or a killed run touches the
// repository: through the store, past rockup.

pub async fn get_object(repo: &Repository, key: &str) -> Option<Bytes> {
    match repo.store().get(&ObjectPath::from(key)).await {
        Ok(result) => Some(result.bytes().await.unwrap()),
        Err(object_store::Error::NotFound { .. }) => None,
        Err(e) => panic!("{key}: {e}"),
    }
}

pub async fn put_object(repo: &Repository, key: &str, bytes: impl Into<Bytes>) {
    let payload = PutPayload::from(bytes.into());
    repo.store()
        .put(&ObjectPath::from(key), payload)
        .await
        .unwrap();
}

/// Where content is stored, read independently of rockup's code: its blob
/// `(key, 0, size)`, or the pack holding it `(key, frame offset, frame length)`
/// as the pack indexes say.
pub async fn content_location(
    repo: &Repository,
    sha256: impl std::fmt::Display,
) -> (String, u64, u64) {
    let sha256 = sha256.to_string();
    if let Some(blob) = get_object(repo, &blob_key(&sha256)).await {
        return (blob_key(&sha256), 0, blob.len() as u64);
    }
    for key in list_keys(repo, "index").await {
        let index: serde_json::Value =
            serde_json::from_slice(&get_object(repo, key.as_ref()).await.unwrap()).unwrap();
        let entries = index["entries"].as_array().unwrap();
        if let Some(entry) = entries.iter().find(|e| e["sha256"] == sha256.as_str()) {
            let id = index["pack"].as_str().unwrap();
            let pack = format!("packs/{}/{id}", &id[..2]);
            return (
                pack,
                entry["offset"].as_u64().unwrap(),
                entry["length"].as_u64().unwrap(),
            );
        }
    }
    panic!("content {sha256} is stored nowhere")
}

/// Flips one byte of content where it is stored (the first byte of its blob,
/// or the first payload byte of its pack frame, after the 4-byte header);
/// returns the object's key.
pub async fn damage_content(repo: &Repository, sha256: impl std::fmt::Display) -> String {
    let (key, offset, length) = content_location(repo, sha256).await;
    let at = if key.starts_with("packs/") && length > 4 {
        offset + 4
    } else {
        offset
    };
    let mut bytes = get_object(repo, &key).await.unwrap().to_vec();
    bytes[at as usize] ^= 0xff;
    put_object(repo, &key, bytes).await;
    key
}

/// The fixture's options writing repository format 1 (an object per file).
pub fn format_1(options: rockup::BackupOptions) -> rockup::BackupOptions {
    with(options, |o| o.format = Format::V1)
}

/// A part's NDJSON from its stored bytes: a format-2 frame (`RK`, version 1,
/// codec 0 raw or 1 zstd) decoded independently of rockup's code, or format
/// 1's plain text.
pub fn part_ndjson(stored: &[u8]) -> Vec<u8> {
    match stored {
        [b'R', b'K', 1, 1, payload @ ..] => zstd::decode_all(payload).unwrap(),
        [b'R', b'K', 1, 0, payload @ ..] => payload.to_vec(),
        text => text.to_vec(),
    }
}

pub async fn remove_object(repo: &Repository, key: &str) {
    repo.store().delete(&ObjectPath::from(key)).await.unwrap();
}

/// Every object key under `prefix` (`""` for all).
pub async fn list_keys(repo: &Repository, prefix: &str) -> Vec<ObjectPath> {
    use futures::TryStreamExt;
    let prefix = (!prefix.is_empty()).then(|| ObjectPath::from(prefix));
    let listed: Vec<object_store::ObjectMeta> = repo
        .store()
        .list(prefix.as_ref())
        .try_collect()
        .await
        .unwrap();
    listed.into_iter().map(|m| m.location).collect()
}

/// Copies a backup's per-backup files (MANIFEST, CURRENT, WAL, …) under a new id.
pub async fn copy_backup_files(repo: &Repository, from: impl std::fmt::Display, to: &str) {
    let from = from.to_string();
    let from = from.as_str();
    for key in list_keys(repo, &format!("backups/{from}/files")).await {
        let bytes = get_object(repo, key.as_ref()).await.unwrap();
        let new_key = key.as_ref().replace(from, to);
        put_object(repo, &new_key, bytes).await;
    }
}

/// The lock a backup run of this host leaves when it is killed
/// (`locks/backup-<id>.json`, naming a process that no longer exists).
pub async fn leave_backup_lock(repo: &Repository, id: &str) {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = child.id();
    child.wait().unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let lock = serde_json::json!({
        "kind": "backup",
        "host": host.trim(),
        "pid": dead_pid,
        "created_at": chrono::Utc::now(),
    });
    put_object(repo, &format!("locks/backup-{id}.json"), lock.to_string()).await;
}

// Encrypted repositories.

/// The passphrase the encrypted tests use.
pub const PASSPHRASE: &str = "correct horse battery staple";

/// The cheapest Argon2id parameters rockup accepts (the tests unlock often).
pub fn fast_kdf() -> rockup::KdfParams {
    rockup::KdfParams {
        memory_kib: 19 * 1024,
        iterations: 2,
        parallelism: 1,
    }
}

/// `repo`, made an encrypted repository with one passphrase slot holding
/// [`PASSPHRASE`], and opened with it.
pub async fn encrypted(repo: Repository) -> Repository {
    let repo = with_passphrase(&repo, PASSPHRASE);
    let options = with(rockup::InitOptions::default(), |o| o.kdf = fast_kdf());
    rockup::init(&repo, &options).await.unwrap();
    repo
}

/// The same store opened with `passphrase` only.
pub fn with_passphrase(repo: &Repository, passphrase: &str) -> Repository {
    reopened(repo, rockup::Credentials::passphrase(passphrase))
}

/// The same store opened with other credentials (and no keys unlocked yet).
pub fn reopened(repo: &Repository, credentials: rockup::Credentials) -> Repository {
    repo.clone().with_credentials(credentials)
}

/// Every object of the repository: key and bytes.
pub async fn all_objects(repo: &Repository) -> BTreeMap<String, Bytes> {
    let mut objects = BTreeMap::new();
    for key in list_keys(repo, "").await {
        let bytes = get_object(repo, key.as_ref()).await.unwrap();
        objects.insert(key.to_string(), bytes);
    }
    objects
}

/// The variables that carry keys: removed from every rockup the tests run,
/// so that a developer's own (the README suggests exporting them) never
/// changes a test.
pub const SECRET_VARIABLES: [&str; 10] = [
    "ROCKUP_PASSWORD",
    "ROCKUP_PASSWORD_FILE",
    "ROCKUP_PASSWORD_COMMAND",
    "ROCKUP_IDENTITY_FILE",
    "ROCKUP_WRITE_KEY_FILE",
    "ROCKUP_NEW_PASSWORD_FILE",
    "ROCKUP_TO_PASSWORD",
    "ROCKUP_TO_PASSWORD_FILE",
    "ROCKUP_TO_PASSWORD_COMMAND",
    "ROCKUP_TO_IDENTITY_FILE",
];

/// The rockup binary with no repository and no key from the environment,
/// and stdin not a terminal (so it never prompts).
pub fn rockup_command() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_rockup"));
    // Every setting has a variable (profiles set them): none leaks in from
    // the shell that runs the tests.
    for (variable, _) in std::env::vars_os() {
        let name = variable.to_string_lossy();
        if name.starts_with("ROCKUP_") && !name.starts_with("ROCKUP_TEST") {
            command.env_remove(&variable);
        }
    }
    for variable in SECRET_VARIABLES {
        command.env_remove(variable);
    }
    command.stdin(std::process::Stdio::null());
    command
}
