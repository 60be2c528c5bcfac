//! The benchmark's data: a RocksDB database of incompressible values in SSTs
//! (snappy, as other bindings write them) and a `files` column family whose JSON
//! records (`file:<n>` → {"path", "size", "sha256"}) point to external files
//! under `files/`, and a change of a given share of both for incrementals.

use std::path::Path;

use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

/// How big a dataset is.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub db_mib: usize,
    pub files: usize,
    /// Average size of an external file (sizes vary from half to 1.5×).
    pub file_kib: usize,
}

/// rockup's resolver flags for this dataset's records.
pub const RESOLVER: &str =
    "--blob-cf files --blob-ref json:/path --blob-key-prefix file: --blob-sha256 json:/sha256";

const VALUE_LEN: usize = 4096;

/// Writes `dir/db` and `dir/files`.
pub fn generate(dir: &Path, shape: Shape) {
    let db = open(dir);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    put_values(&db, &mut rng, 0, (shape.db_mib << 20) / VALUE_LEN);
    for n in 0..shape.files {
        let len = shape.file_kib * 1024 / 2 + rng.random_range(0..shape.file_kib * 1024 + 1);
        write_file(&db, dir, n, len, &mut rng);
    }
    db.flush().expect("flush");
    db.flush_cf(&db.cf_handle("data").expect("cf"))
        .expect("flush");
}

/// Rewrites `percent` of the external files (same sizes, new content and
/// records) and adds `percent` of the database's volume as new values; writes
/// the bytes changed (files rewritten + values added) to `dir/changed-bytes`.
pub fn change(dir: &Path, shape: Shape, percent: f64, round: u64) {
    let mut changed = 0;
    let db = open(dir);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1000 + round);
    let every = (100.0 / percent).round().max(1.0) as usize;
    for n in (round as usize % every..shape.files).step_by(every) {
        let len = std::fs::metadata(dir.join("files").join(rel_path(n)))
            .expect("file")
            .len() as usize;
        write_file(&db, dir, n, len, &mut rng);
        changed += len;
    }
    let values = ((shape.db_mib << 20) as f64 * percent / 100.0) as usize / VALUE_LEN;
    changed += values * VALUE_LEN;
    std::fs::write(dir.join("changed-bytes"), changed.to_string()).expect("write");
    let first = (shape.db_mib << 20) / VALUE_LEN + round as usize * values;
    put_values(&db, &mut rng, first, values);
    db.flush().expect("flush");
    db.flush_cf(&db.cf_handle("data").expect("cf"))
        .expect("flush");
}

/// Deletes every other external file and its record.
pub fn delete_half(dir: &Path, shape: Shape) {
    let db = open(dir);
    let files = db.cf_handle("files").expect("cf");
    for n in (0..shape.files).step_by(2) {
        db.delete_cf(&files, format!("file:{n:08}"))
            .expect("delete");
        let _ = std::fs::remove_file(dir.join("files").join(rel_path(n)));
    }
    db.flush_cf(&files).expect("flush");
}

fn open(dir: &Path) -> rocksdb::DB {
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_compression_type(rocksdb::DBCompressionType::Snappy);
    opts.set_write_buffer_size(64 << 20);
    rocksdb::DB::open_cf(&opts, dir.join("db"), ["data", "files"]).expect("open the database")
}

fn put_values(db: &rocksdb::DB, rng: &mut impl Rng, first: usize, count: usize) {
    let data = db.cf_handle("data").expect("cf");
    let default = db.cf_handle("default").expect("cf");
    for i in first..first + count {
        let mut value = vec![0u8; VALUE_LEN];
        rng.fill(&mut value[..]);
        let cf = if i % 2 == 0 { &data } else { &default };
        db.put_cf(cf, format!("k{i:012}"), value).expect("put");
    }
}

fn rel_path(n: usize) -> String {
    format!("{:03x}/{n}.bin", n % 1024)
}

fn write_file(db: &rocksdb::DB, dir: &Path, n: usize, len: usize, rng: &mut impl Rng) {
    let mut content = vec![0u8; len];
    rng.fill(&mut content[..]);
    let rel = rel_path(n);
    let path = dir.join("files").join(&rel);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&path, &content).expect("write");
    let record = serde_json::json!({"path": rel, "size": len, "sha256": hex::encode(Sha256::digest(&content))});
    let files = db.cf_handle("files").expect("cf");
    db.put_cf(&files, format!("file:{n:08}"), record.to_string())
        .expect("put");
}
