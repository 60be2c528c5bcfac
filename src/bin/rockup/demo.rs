//! `rockup demo`: the whole story on an embedded default. Builds a sample database
//! (a `files` column family whose JSON records point to external files, plus other
//! data, some of it only in the WAL), backs it up to an encrypted local repository
//! (opened with a new X25519 identity, written beside it), takes a
//! second (incremental) backup, verifies both deeply, restores into fresh
//! directories, and compares the result record by record and byte by byte. A
//! difference is reported as problems (exit code 3), naming what differs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rocksdb::{ColumnFamilyDescriptor, IteratorMode, Options, DB};
use serde::Serialize;

use crate::output::say;
use rockup::{
    BackupId, BackupOptions, BackupReport, Credentials, Error, ExternalFiles, InitOptions, Problem,
    RefSource, Repository, ResolverConfig, RestoreOptions, Result, Source, VerifyOptions,
};

/// External files in the sample.
const FILES: usize = 300;

/// What the demo did and found.
#[derive(Debug, Serialize)]
pub struct DemoReport {
    pub dir: PathBuf,
    pub repository: String,
    pub identity_file: PathBuf,
    pub backup_id: BackupId,
    pub sequence_number: u64,
    pub records: u64,
    pub external_files: u64,
    pub external_bytes: u64,
    pub second_backup_uploaded_objects: u64,
    pub second_backup_uploaded_bytes: u64,
    pub verified_objects: u64,
    pub restored_db: PathBuf,
    pub restored_files: PathBuf,
    pub records_compared: u64,
    pub files_compared: u64,
}

/// The sample's directories, all under the demo directory.
struct Layout {
    source_db: PathBuf,
    source_files: PathBuf,
    restored_db: PathBuf,
    restored_files: PathBuf,
}

/// Runs the demo in `dir` (missing or empty).
pub async fn demo(dir: &Path) -> Result<DemoReport> {
    if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(Error::TargetNotEmpty {
            path: dir.to_path_buf(),
        });
    }
    let layout = Layout {
        source_db: dir.join("source/db"),
        source_files: dir.join("source/files"),
        restored_db: dir.join("restored/db"),
        restored_files: dir.join("restored/files"),
    };
    let (db, files) = (layout.source_db.clone(), layout.source_files.clone());
    let (records, external_files, external_bytes) =
        tokio::task::spawn_blocking(move || build_sample(&db, &files)).await??;
    say!(
        "built a sample database at {} ({records} records, {external_files} external files)",
        layout.source_db.display()
    );
    let identity_file = dir.join("identity.txt");
    let repo = encrypted_repository(&dir.join("repository"), &identity_file).await?;
    let (first, second) = back_up_twice(&repo, &layout, &dir.join("work")).await?;
    let verified_objects = verify_and_restore(&repo, &first, &layout).await?;
    let (records_compared, files_compared) = compare(&layout).await?;
    say!("compared {records_compared} records and {files_compared} files: identical");
    Ok(DemoReport {
        dir: dir.to_path_buf(),
        repository: repo.name().to_string(),
        identity_file,
        backup_id: first.header.backup_id,
        sequence_number: first.header.sequence_number,
        records,
        external_files,
        external_bytes,
        second_backup_uploaded_objects: second.header.stats.uploaded_objects,
        second_backup_uploaded_bytes: second.header.stats.uploaded_bytes,
        verified_objects,
        restored_db: layout.restored_db,
        restored_files: layout.restored_files,
        records_compared,
        files_compared,
    })
}

/// A new encrypted repository at `dir` with one recipient slot, for a new
/// identity written to `identity_file`; opened with it.
async fn encrypted_repository(dir: &Path, identity_file: &Path) -> Result<Repository> {
    let identity = rockup::keys::new_identity();
    crate::keys::write_identity(identity_file, &identity)?;
    let repo = Repository::open(&dir.display().to_string(), &[])?
        .with_credentials(Credentials::default().with_identity(identity.clone()));
    let mut init = InitOptions::default();
    init.recipients = vec![identity.recipient()];
    rockup::init(&repo, &init).await?;
    say!(
        "made an encrypted repository at {} (its identity: {}; try `rockup list --repo {} \
         --identity {}`)",
        dir.display(),
        identity_file.display(),
        dir.display(),
        identity_file.display()
    );
    Ok(repo)
}

/// `file:<n>` records with JSON values `{"path", "size", "sha256"}`.
fn resolver() -> ResolverConfig {
    ResolverConfig::new(RefSource::Json("/path".into()))
        .with_key_prefix("file:")
        .with_sha256_pointer("/sha256")
        .with_size_pointer("/size")
}

/// A full backup, then a second one with nothing changed.
async fn back_up_twice(
    repo: &Repository,
    layout: &Layout,
    work: &Path,
) -> Result<(BackupReport, BackupReport)> {
    let mut options = BackupOptions::default();
    options.external = Some(ExternalFiles::new(
        &layout.source_files,
        "files",
        resolver(),
    ));
    options.work_dir = Some(work.to_path_buf());
    let first = rockup::backup(repo, Source::Db(layout.source_db.clone()), &options).await?;
    let h = &first.header;
    say!(
        "backup {} committed: {} DB files, {} external files, {} objects / {} bytes uploaded",
        h.backup_id,
        h.stats.db_files,
        h.stats.external_files,
        h.stats.uploaded_objects,
        h.stats.uploaded_bytes
    );
    let second = rockup::backup(repo, Source::Db(layout.source_db.clone()), &options).await?;
    say!(
        "second backup {} (nothing changed): {} objects / {} bytes uploaded",
        second.header.backup_id,
        second.header.stats.uploaded_objects,
        second.header.stats.uploaded_bytes
    );
    Ok((first, second))
}

/// Deep-verifies every backup and restores the first; returns the objects verified.
async fn verify_and_restore(
    repo: &Repository,
    first: &BackupReport,
    layout: &Layout,
) -> Result<u64> {
    let mut everything = VerifyOptions::default();
    everything.backup = "all".into();
    everything.deep = true;
    let verified = rockup::verify(repo, &everything).await?.into_result()?;
    say!(
        "verify --deep: {} objects re-hashed, no problems",
        verified.objects
    );
    let mut options = RestoreOptions::default();
    options.backup = first.header.backup_id.to_string();
    options.db_dir = layout.restored_db.clone();
    options.blob_root = Some(layout.restored_files.clone());
    let restored = rockup::restore(repo, &options).await?;
    say!(
        "restored {} DB files and {} external files; {} references checked",
        restored.db_files,
        restored.external_files,
        restored.references_checked
    );
    Ok(verified.objects)
}

/// Compares source and restored copies; returns (records, files) compared.
async fn compare(layout: &Layout) -> Result<(u64, u64)> {
    let sources = [
        &layout.source_db,
        &layout.restored_db,
        &layout.source_files,
        &layout.restored_files,
    ];
    let [a, b, c, d] = sources.map(|p| p.to_path_buf());
    tokio::task::spawn_blocking(move || {
        let (records, mut problems) = compare_databases(&a, &b)?;
        let (files, differing) = compare_trees(&c, &d)?;
        problems.extend(differing);
        if !problems.is_empty() {
            return Err(Error::Problems {
                summary: format!(
                    "the restored copy differs from the source in {} place(s)",
                    problems.len()
                ),
                problems,
            });
        }
        Ok((records, files))
    })
    .await?
}

fn rocks(what: impl Into<String>) -> impl FnOnce(rocksdb::Error) -> Error {
    let what = what.into();
    move |source| Error::Rocks { what, source }
}

fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}

/// Writes the sample database and its files; returns (records, files, bytes).
fn build_sample(db_dir: &Path, files_dir: &Path) -> Result<(u64, u64, u64)> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_compression_type(rocksdb::DBCompressionType::Snappy);
    let cfs = ["default", "files"].map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
    let db =
        DB::open_cf_descriptors(&opts, db_dir, cfs).map_err(rocks("creating the demo database"))?;
    let (mut records, mut count, mut bytes) = (0u64, 0u64, 0u64);
    for i in 0..FILES {
        bytes += add_file(&db, files_dir, i)?;
        records += 2;
        count += 1;
        if i == FILES / 2 {
            let files_cf = db.cf_handle("files").expect("created above");
            db.flush_cf(&files_cf)
                .and_then(|_| db.flush())
                .map_err(rocks("flushing"))?;
        }
    }
    // The application deletes a few files: record first, then the file.
    for i in (0..FILES).step_by(50).skip(1) {
        bytes -= delete_file(&db, files_dir, i)?;
        records -= 1;
        count -= 1;
    }
    // The newest writes stay in the WAL only (no flush before close).
    Ok((records, count, bytes))
}

fn sample_path(i: usize) -> String {
    format!("{:02x}/file-{i}.bin", i % 16)
}

/// Writes external file `i`, its record and a user record; returns its size.
fn add_file(db: &DB, files_dir: &Path, i: usize) -> Result<u64> {
    // One file large enough for a multipart upload; the rest small.
    let size = if i == 7 {
        9 << 20
    } else {
        100 + (i * 997) % 40_000
    };
    let content: Vec<u8> = (0..size).map(|j| ((i * 31 + j * 7) % 251) as u8).collect();
    let rel = sample_path(i);
    let path = files_dir.join(&rel);
    std::fs::create_dir_all(path.parent().expect("has a parent")).map_err(io(&path))?;
    std::fs::write(&path, &content).map_err(io(&path))?;
    let sha256 = rockup::Sha256::of(&content).to_string();
    let record = serde_json::json!({"path": rel, "size": size, "sha256": sha256});
    let files_cf = db.cf_handle("files").expect("created above");
    db.put_cf(&files_cf, format!("file:{i:05}"), record.to_string())
        .and_then(|_| db.put(format!("user:{i:05}"), format!("name-{i}")))
        .map_err(rocks("writing the demo database"))?;
    Ok(size as u64)
}

/// Deletes file `i`'s record, then the file; returns its size.
fn delete_file(db: &DB, files_dir: &Path, i: usize) -> Result<u64> {
    let path = files_dir.join(sample_path(i));
    let files_cf = db.cf_handle("files").expect("created above");
    db.delete_cf(&files_cf, format!("file:{i:05}"))
        .map_err(rocks("writing the demo database"))?;
    let size = std::fs::metadata(&path).map_err(io(&path))?.len();
    std::fs::remove_file(&path).map_err(io(&path))?;
    Ok(size)
}

type Records = BTreeMap<String, Vec<(Box<[u8]>, Box<[u8]>)>>;

/// Every column family's records, read with default options.
fn read_records(dir: &Path) -> Result<Records> {
    let opts = Options::default();
    let names = DB::list_cf(&opts, dir).map_err(rocks(format!("listing {}", dir.display())))?;
    let db = DB::open_cf_for_read_only(&opts, dir, &names, false)
        .map_err(rocks(format!("opening {}", dir.display())))?;
    let mut all = BTreeMap::new();
    for name in &names {
        let cf = db.cf_handle(name).expect("listed");
        let records = db
            .iterator_cf(&cf, IteratorMode::Start)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(rocks(format!("reading {}", dir.display())))?;
        all.insert(name.clone(), records);
    }
    Ok(all)
}

/// Compares every column family of two databases record by record; returns the
/// number of records compared and a problem per column family that differs.
fn compare_databases(a: &Path, b: &Path) -> Result<(u64, Vec<Problem>)> {
    let (left, right) = (read_records(a)?, read_records(b)?);
    let records = left.values().map(|r| r.len() as u64).sum();
    Ok((
        records,
        differences(&left, &right, a, b, |name| name.clone()),
    ))
}

/// A problem for every key whose value differs between `left` (read from `a`)
/// and `right` (from `b`), or that only one side has.
fn differences<K: Ord, V: PartialEq>(
    left: &BTreeMap<K, V>,
    right: &BTreeMap<K, V>,
    a: &Path,
    b: &Path,
    name: impl Fn(&K) -> String,
) -> Vec<Problem> {
    let keys: std::collections::BTreeSet<&K> = left.keys().chain(right.keys()).collect();
    keys.into_iter()
        .filter(|key| left.get(*key) != right.get(*key))
        .map(|key| {
            let detail = format!("differs between {} and {}", a.display(), b.display());
            Problem::corrupt_object(name(key), detail)
        })
        .collect()
}

/// Every regular file under `root`, by relative path, with its bytes.
fn read_tree(root: &Path) -> Result<BTreeMap<PathBuf, Vec<u8>>> {
    let mut files = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root) {
        let entry = entry.map_err(|e| Error::Io {
            path: root.to_path_buf(),
            source: e.into(),
        })?;
        if entry.file_type().is_file() {
            let bytes = std::fs::read(entry.path()).map_err(io(entry.path()))?;
            let relative = entry.path().strip_prefix(root).expect("under root");
            files.insert(relative.to_path_buf(), bytes);
        }
    }
    Ok(files)
}

/// Compares two directory trees byte by byte; returns the number of files and a
/// problem per file that differs or is on one side only.
fn compare_trees(a: &Path, b: &Path) -> Result<(u64, Vec<Problem>)> {
    let (left, right) = (read_tree(a)?, read_tree(b)?);
    let problems = differences(&left, &right, a, b, |path| path.display().to_string());
    Ok((left.len() as u64, problems))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differing_trees_are_problems_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        for (root, content) in [(&a, "one"), (&b, "two")] {
            std::fs::create_dir_all(root.join("d")).unwrap();
            std::fs::write(root.join("d/same"), "same").unwrap();
            std::fs::write(root.join("d/changed"), content).unwrap();
        }
        std::fs::write(a.join("only-in-a"), "x").unwrap();
        let (files, problems) = compare_trees(&a, &b).unwrap();
        assert_eq!(files, 3);
        let named: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(named, ["d/changed", "only-in-a"]);
        let (_, none) = compare_trees(&a.join("d"), &a.join("d")).unwrap();
        assert!(none.is_empty());
    }
}
