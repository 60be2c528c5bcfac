//! The RocksDB BackupEngine contender (from the rocksdb crate rockup builds on):
//! `engine-backup DB DIR` opens the database and backs it up incrementally into
//! DIR; `engine-restore DIR DB` restores the latest backup. Both with two
//! background threads (this machine's cores) and the engine's default fsyncs.

use std::path::Path;

use rocksdb::backup::{BackupEngine, BackupEngineOptions, RestoreOptions};

fn engine(dir: &Path) -> BackupEngine {
    let mut options = BackupEngineOptions::new(dir).expect("backup engine options");
    options.set_max_background_operations(2);
    let env = rocksdb::Env::new().expect("env");
    BackupEngine::open(&options, &env).expect("open the backup engine")
}

pub fn backup(db_dir: &Path, backup_dir: &Path) {
    let opts = rocksdb::Options::default();
    let families = rocksdb::DB::list_cf(&opts, db_dir).expect("list column families");
    let db = rocksdb::DB::open_cf(&opts, db_dir, families).expect("open the database");
    engine(backup_dir)
        .create_new_backup(&db)
        .expect("create a backup");
}

pub fn restore(backup_dir: &Path, db_dir: &Path) {
    std::fs::create_dir_all(db_dir).expect("create the database directory");
    engine(backup_dir)
        .restore_from_latest_backup(db_dir, db_dir, &RestoreOptions::default())
        .expect("restore");
}
