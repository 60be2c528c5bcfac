//! Builds a sample database with external files for benchmarks and manual tests:
//!
//!     cargo run --example make_sample -- DIR DB_MIB FILES FILE_KIB
//!
//! DIR/db gets about DB_MIB MiB of incompressible values in two column families
//! (flushed into SSTs, snappy), plus a `files` column family whose JSON records
//! (`file:<n>` → {"path", "size", "sha256"}) point to FILES files of about
//! FILE_KIB KiB each under DIR/files.

use std::path::PathBuf;

use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 4 {
        eprintln!("usage: make_sample DIR DB_MIB FILES FILE_KIB");
        std::process::exit(2);
    }
    let dir = PathBuf::from(&args[0]);
    let db_mib: usize = args[1].parse().expect("DB_MIB");
    let files: usize = args[2].parse().expect("FILES");
    let file_kib: usize = args[3].parse().expect("FILE_KIB");

    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_compression_type(rocksdb::DBCompressionType::Snappy);
    opts.set_write_buffer_size(64 << 20);
    let db = rocksdb::DB::open_cf(&opts, dir.join("db"), ["data", "files"]).expect("open");
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let data = db.cf_handle("data").expect("cf");
    let value_len = 4096;
    for i in 0..(db_mib << 20) / value_len {
        let mut value = vec![0u8; value_len];
        rng.fill(&mut value[..]);
        let cf = if i % 2 == 0 {
            &data
        } else {
            &db.cf_handle("default").expect("cf")
        };
        db.put_cf(cf, format!("k{i:012}"), value).expect("put");
    }
    let files_cf = db.cf_handle("files").expect("cf");
    let root = dir.join("files");
    for n in 0..files {
        let mut content = vec![0u8; file_kib * 1024 / 2 + rng.random_range(0..file_kib * 1024 + 1)];
        rng.fill(&mut content[..]);
        let rel = format!("{:03}/{n}.bin", n % 256);
        std::fs::create_dir_all(root.join(&rel).parent().expect("parent")).expect("mkdir");
        std::fs::write(root.join(&rel), &content).expect("write");
        let record = serde_json::json!({"path": rel, "size": content.len(), "sha256": hex::encode(Sha256::digest(&content))});
        db.put_cf(&files_cf, format!("file:{n:08}"), record.to_string())
            .expect("put");
    }
    db.flush_cf(&data).expect("flush");
    db.flush().expect("flush");
    println!("sample at {}", dir.display());
}
