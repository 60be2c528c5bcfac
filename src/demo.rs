//! `rockup demo`: the whole story on an embedded default. Builds a sample database
//! (a `files` column family whose JSON records point to external files, plus other
//! data, some of it only in the WAL), backs it up to a local repository, verifies
//! it deeply, takes a second (incremental) backup, restores into fresh
//! directories, and compares the result record by record and byte by byte.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rocksdb::{ColumnFamilyDescriptor, IteratorMode, Options, DB};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::checkpoint::Source;
use crate::error::{Error, Result};
use crate::scan::{ExternalFiles, RefSource, ResolverConfig};
use crate::{backup, restore, verify, BackupOptions, Repository, RestoreOptions, VerifyOptions};

const FILES: usize = 300;

/// What the demo did and found.
#[derive(Debug, Serialize)]
pub struct DemoReport {
    pub dir: PathBuf,
    pub repository: String,
    pub backup_id: String,
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

/// The resolver the demo database needs.
pub fn demo_resolver() -> ResolverConfig {
    ResolverConfig {
        reference: RefSource::Json("/path".into()),
        key_prefix: Some("file:".into()),
        sha256_pointer: Some("/sha256".into()),
        size_pointer: Some("/size".into()),
    }
}

/// Runs the demo in `dir` (missing or empty).
pub async fn demo(dir: &Path) -> Result<DemoReport> {
    if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(Error::TargetNotEmpty {
            path: dir.to_path_buf(),
        });
    }
    let source_db = dir.join("source/db");
    let source_files = dir.join("source/files");
    let repo_dir = dir.join("repository");
    let restored_db = dir.join("restored/db");
    let restored_files = dir.join("restored/files");
    let (records, external_files, external_bytes) = {
        let (db, files) = (source_db.clone(), source_files.clone());
        tokio::task::spawn_blocking(move || build_sample(&db, &files))
            .await
            .map_err(|e| Error::io("<demo>", std::io::Error::other(e)))??
    };
    eprintln!(
        "built a sample database at {} ({records} records, {external_files} external files)",
        source_db.display()
    );

    let repo = Repository::open(&repo_dir.display().to_string(), &[])?;
    let options = BackupOptions {
        external: Some(ExternalFiles::new(&source_files, "files", demo_resolver())),
        work_dir: Some(dir.join("work")),
        ..Default::default()
    };
    let first = backup(&repo, Source::Db(source_db.clone()), &options).await?;
    eprintln!(
        "backup {} committed: {} DB files, {} external files, {} objects / {} bytes uploaded",
        first.header.backup_id,
        first.header.stats.db_files,
        first.header.stats.external_files,
        first.header.stats.uploaded_objects,
        first.header.stats.uploaded_bytes
    );
    let second = backup(&repo, Source::Db(source_db.clone()), &options).await?;
    eprintln!(
        "second backup {} (nothing changed): {} objects / {} bytes uploaded",
        second.header.backup_id,
        second.header.stats.uploaded_objects,
        second.header.stats.uploaded_bytes
    );
    let verified = verify(
        &repo,
        &VerifyOptions {
            backup: "all".into(),
            deep: true,
            jobs: 8,
        },
    )
    .await?
    .into_result()?;
    eprintln!(
        "verify --deep: {} objects re-hashed, no problems",
        verified.objects
    );
    let restored = restore(
        &repo,
        &RestoreOptions::new(
            first.header.backup_id.clone(),
            &restored_db,
            Some(restored_files.clone()),
        ),
    )
    .await?;
    eprintln!(
        "restored {} DB files and {} external files; {} references checked",
        restored.db_files, restored.external_files, restored.references_checked
    );
    let (records_compared, files_compared) = {
        let (a, b, c, d) = (
            source_db.clone(),
            restored_db.clone(),
            source_files.clone(),
            restored_files.clone(),
        );
        tokio::task::spawn_blocking(move || -> Result<(u64, u64)> {
            Ok((compare_databases(&a, &b)?, compare_trees(&c, &d)?))
        })
        .await
        .map_err(|e| Error::io("<demo>", std::io::Error::other(e)))??
    };
    eprintln!("compared {records_compared} records and {files_compared} files: identical");
    Ok(DemoReport {
        dir: dir.to_path_buf(),
        repository: repo.name().to_string(),
        backup_id: first.header.backup_id,
        sequence_number: first.header.sequence_number,
        records,
        external_files,
        external_bytes,
        second_backup_uploaded_objects: second.header.stats.uploaded_objects,
        second_backup_uploaded_bytes: second.header.stats.uploaded_bytes,
        verified_objects: verified.objects,
        restored_db,
        restored_files,
        records_compared,
        files_compared,
    })
}

/// Writes the sample database and its files; returns (records, files, bytes).
fn build_sample(db_dir: &Path, files_dir: &Path) -> Result<(u64, u64, u64)> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_compression_type(rocksdb::DBCompressionType::Snappy);
    let cfs = ["default", "files"].map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
    let db = DB::open_cf_descriptors(&opts, db_dir, cfs)
        .map_err(|e| Error::rocks("creating the demo database", e))?;
    let files_cf = db.cf_handle("files").expect("created above");
    let (mut records, mut count, mut bytes) = (0u64, 0u64, 0u64);
    for i in 0..FILES {
        // One file large enough for a multipart upload; the rest small.
        let size = if i == 7 {
            9 << 20
        } else {
            100 + (i * 997) % 40_000
        };
        let content: Vec<u8> = (0..size).map(|j| ((i * 31 + j * 7) % 251) as u8).collect();
        let rel = format!("{:02x}/file-{i}.bin", i % 16);
        let path = files_dir.join(&rel);
        std::fs::create_dir_all(path.parent().expect("has a parent"))
            .map_err(|e| Error::io(&path, e))?;
        std::fs::write(&path, &content).map_err(|e| Error::io(&path, e))?;
        let record = serde_json::json!({"path": rel, "size": size, "sha256": hex::encode(Sha256::digest(&content))});
        let put = db.put_cf(&files_cf, format!("file:{i:05}"), record.to_string());
        put.and_then(|_| db.put(format!("user:{i:05}"), format!("name-{i}")))
            .map_err(|e| Error::rocks("writing the demo database", e))?;
        records += 2;
        count += 1;
        bytes += size as u64;
        if i == FILES / 2 {
            db.flush_cf(&files_cf)
                .and_then(|_| db.flush())
                .map_err(|e| Error::rocks("flushing", e))?;
        }
    }
    // The application deletes a few files: record first, then the file.
    for i in (0..FILES).step_by(50).skip(1) {
        let rel = format!("{:02x}/file-{i}.bin", i % 16);
        db.delete_cf(&files_cf, format!("file:{i:05}"))
            .map_err(|e| Error::rocks("writing the demo database", e))?;
        let size = std::fs::metadata(files_dir.join(&rel))
            .map_err(|e| Error::io(&rel, e))?
            .len();
        std::fs::remove_file(files_dir.join(&rel)).map_err(|e| Error::io(&rel, e))?;
        records -= 1;
        count -= 1;
        bytes -= size;
    }
    // The newest writes stay in the WAL only (no flush before close).
    Ok((records, count, bytes))
}

/// Compares every column family of two databases record by record; returns the
/// number of records compared.
pub fn compare_databases(a: &Path, b: &Path) -> Result<u64> {
    type Records = BTreeMap<String, Vec<(Box<[u8]>, Box<[u8]>)>>;
    let read = |dir: &Path| -> Result<Records> {
        let opts = Options::default();
        let names = DB::list_cf(&opts, dir)
            .map_err(|e| Error::rocks(format!("listing {}", dir.display()), e))?;
        let db = DB::open_cf_for_read_only(&opts, dir, &names, false)
            .map_err(|e| Error::rocks(format!("opening {}", dir.display()), e))?;
        let mut all = BTreeMap::new();
        for name in &names {
            let cf = db.cf_handle(name).expect("listed");
            let records = db
                .iterator_cf(&cf, IteratorMode::Start)
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Error::rocks(format!("reading {}", dir.display()), e))?;
            all.insert(name.clone(), records);
        }
        Ok(all)
    };
    let (left, right) = (read(a)?, read(b)?);
    if left != right {
        return Err(Error::Usage(format!(
            "{} and {} differ",
            a.display(),
            b.display()
        )));
    }
    Ok(left.values().map(|r| r.len() as u64).sum())
}

/// Compares two directory trees byte by byte; returns the number of files.
pub fn compare_trees(a: &Path, b: &Path) -> Result<u64> {
    let files = |root: &Path| -> Result<BTreeMap<PathBuf, Vec<u8>>> {
        walkdir::WalkDir::new(root)
            .into_iter()
            .filter(|e| e.as_ref().map_or(true, |e| e.file_type().is_file()))
            .map(|e| {
                let e = e.map_err(|e| Error::io(root, e.into()))?;
                let bytes = std::fs::read(e.path()).map_err(|err| Error::io(e.path(), err))?;
                Ok((
                    e.path()
                        .strip_prefix(root)
                        .expect("under root")
                        .to_path_buf(),
                    bytes,
                ))
            })
            .collect()
    };
    let (left, right) = (files(a)?, files(b)?);
    if left != right {
        return Err(Error::Usage(format!(
            "{} and {} differ",
            a.display(),
            b.display()
        )));
    }
    Ok(left.len() as u64)
}
