//! Library mode: an application backs itself up while writer threads keep adding
//! records (file first, then record) and deleting them (record first, then the
//! file, through the deletion guard). Every backup must restore to one point in
//! time, and no live record's file may be missing.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rockup::DeletionGuard;
use sha2::{Digest, Sha256};

use super::fixture::*;

const WRITERS: usize = 2;
/// Each writer keeps this many of its files alive.
const WINDOW: u64 = 20;

fn file_id(writer: usize, step: u64) -> u64 {
    writer as u64 * 1_000_000_000 + step
}

fn rel(id: u64) -> String {
    format!("w{}/f-{id}.bin", id / 1_000_000_000)
}

fn size_of(id: u64) -> usize {
    50 + (id as usize * 613) % 6000
}

/// One writer: each step adds a file and its record and, in the same batch,
/// deletes the record WINDOW steps back and advances the writer's step counter;
/// the old file is removed after the batch, through the guard.
fn writer(
    db: Arc<rocksdb::DB>,
    files: &Path,
    guard: DeletionGuard,
    w: usize,
    stop: Arc<AtomicBool>,
) {
    let files_cf = db.cf_handle("files").unwrap();
    let meta = db.cf_handle("meta").unwrap();
    let mut step = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let id = file_id(w, step);
        let data = content(id as usize, size_of(id));
        let path = files.join(rel(id));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &data).unwrap();
        let mut batch = rocksdb::WriteBatch::default();
        let record = serde_json::json!({"path": rel(id), "size": data.len(), "sha256": hex::encode(Sha256::digest(&data))});
        batch.put_cf(&files_cf, format!("file:{id}"), record.to_string());
        if step >= WINDOW {
            batch.delete_cf(&files_cf, format!("file:{}", file_id(w, step - WINDOW)));
        }
        batch.put_cf(&meta, format!("writer-{w}"), step.to_string());
        db.write(batch).unwrap();
        if step >= WINDOW {
            guard
                .remove(files.join(rel(file_id(w, step - WINDOW))))
                .unwrap();
        }
        if step % 300 == 299 {
            db.flush_cf(&files_cf).unwrap();
        }
        step += 1;
    }
}

/// The restored database is one point in time: for each writer whose counter is
/// at S, the files column family holds exactly its steps S-WINDOW+1..=S, and every
/// one of their files is restored with the recorded content.
fn check_point_in_time(db_dir: &Path, files: &Path) -> usize {
    let all = read_all(db_dir);
    let records: BTreeSet<String> = all["files"]
        .iter()
        .map(|(k, _)| String::from_utf8(k.clone()).unwrap())
        .collect();
    let mut expected = BTreeSet::new();
    for w in 0..WRITERS {
        let Some((_, last)) = all["meta"]
            .iter()
            .find(|(k, _)| k == format!("writer-{w}").as_bytes())
        else {
            continue;
        };
        let last: u64 = String::from_utf8(last.clone()).unwrap().parse().unwrap();
        for step in last.saturating_sub(WINDOW - 1)..=last {
            expected.insert(format!("file:{}", file_id(w, step)));
        }
    }
    let writer_records = records;
    assert_eq!(
        writer_records, expected,
        "column families are at one point in time"
    );
    for key in &writer_records {
        let id: u64 = key["file:".len()..].parse().unwrap();
        let restored = std::fs::read(files.join(rel(id)))
            .unwrap_or_else(|e| panic!("{key}: file missing: {e}"));
        assert_eq!(
            restored,
            content(id as usize, size_of(id)),
            "{key}: content"
        );
    }
    writer_records.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_backups_under_writers_lose_no_file() {
    let fx = Fixture::new(0);
    let db = Arc::new(open_rw(&fx.db));
    let guard = DeletionGuard::new();
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (db, files, guard, stop) =
                (db.clone(), fx.files.clone(), guard.clone(), stop.clone());
            std::thread::spawn(move || writer(db, &files, guard, w, stop))
        })
        .collect();
    let repo = fx.local_repo();
    let options = with(fx.options(), |o| o.guard = Some(guard.clone()));
    let mut ids = Vec::new();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let report = rockup::backup_live(&repo, &db, None, &options)
            .await
            .unwrap();
        assert!(
            report.problems.is_empty(),
            "no reference lost: {:?}",
            report.problems
        );
        ids.push(report.header.backup_id.clone());
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(guard.deferred(), 0, "deferred removals were carried out");
    for (n, id) in ids.iter().enumerate() {
        let (db_dir, files) = (
            fx.path(&format!("r{n}/db")),
            fx.path(&format!("r{n}/files")),
        );
        let report = rockup::restore(&repo, &restoring(id, &db_dir, Some(files.clone())))
            .await
            .unwrap();
        assert_eq!(report.known_problems, 0);
        let live = check_point_in_time(&db_dir, &files);
        assert!(live >= WINDOW as usize, "writers had written by backup {n}");
    }
}
