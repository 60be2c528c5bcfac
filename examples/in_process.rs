//! An application that backs itself up while it keeps writing, without losing an
//! external file: it routes every removal of an external file through a
//! `DeletionGuard` that the backup holds between its checkpoint and the end of
//! pinning.
//!
//!     cargo run --example in_process [REPOSITORY]
//!
//! REPOSITORY defaults to a new local directory; any URL `rockup` accepts works
//! (s3://bucket/prefix with AWS_* in the environment, …).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rockup::{
    BackupOptions, DeletionGuard, ExternalFiles, RefSource, Repository, ResolverConfig,
    RestoreOptions,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files)?;
    let repo_url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| dir.path().join("repo").display().to_string());

    // The application's database: file metadata in the "files" column family.
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    let db = Arc::new(rocksdb::DB::open_cf(
        &opts,
        dir.path().join("db"),
        ["files"],
    )?);
    let guard = DeletionGuard::new();

    // The application at work: add a file (file first, then record), and delete
    // an old one (record first, then the file — through the guard).
    let stop = Arc::new(AtomicBool::new(false));
    let app = {
        let (db, guard, files, stop) = (db.clone(), guard.clone(), files.clone(), stop.clone());
        std::thread::spawn(move || {
            let cf = db.cf_handle("files").expect("created");
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("upload-{n}.bin");
                std::fs::write(files.join(&name), format!("content of upload {n}"))
                    .expect("write file");
                db.put_cf(
                    &cf,
                    format!("upload:{n}"),
                    serde_json::json!({ "path": name }).to_string(),
                )
                .expect("put");
                if n >= 10 {
                    db.delete_cf(&cf, format!("upload:{}", n - 10))
                        .expect("delete");
                    guard
                        .remove(files.join(format!("upload-{}.bin", n - 10)))
                        .expect("remove file");
                }
                n += 1;
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;

    let repo = Repository::open(&repo_url, &[])?;
    let resolver = ResolverConfig {
        reference: RefSource::Json("/path".into()),
        key_prefix: Some("upload:".into()),
        sha256_pointer: None,
        size_pointer: None,
    };
    let mut options = BackupOptions::default();
    options.external = Some(ExternalFiles::new(&files, "files", resolver));
    options.guard = Some(guard.clone());
    options.work_dir = Some(dir.path().join("work"));
    let report = rockup::backup_live(&repo, &db, None, &options).await?;
    stop.store(true, Ordering::Relaxed);
    let written = app.join().expect("writer");
    println!(
        "backup {} at sequence {}: {} external files, {} problems (the app wrote {written} files meanwhile)",
        report.header.backup_id,
        report.header.sequence_number,
        report.header.stats.external_files,
        report.problems.len()
    );

    let restored = dir.path().join("restored");
    let mut restore = RestoreOptions::default();
    restore.backup = report.header.backup_id.to_string();
    restore.db_dir = restored.join("db");
    restore.blob_root = Some(restored.join("files"));
    let result = rockup::restore(&repo, &restore).await?;
    println!(
        "restored {} DB files and {} external files; every one of {} references resolves",
        result.db_files, result.external_files, result.references_checked
    );
    Ok(())
}
