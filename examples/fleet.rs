//! A fleet sharing one repository (scripts/fleet.sh runs it against S3):
//!
//!     cargo run --example fleet -- REPO_URL [SOURCES] [ROUNDS] [FILES] [LIST_BACKUPS]
//!
//! SOURCES databases (16), each with FILES external files (40), half of them
//! identical across all databases, back up concurrently each round (4 rounds)
//! while prunes (`--keep-last 2`, grace 0) keep trying; between rounds every
//! database changes (a file added, one deleted, records written). Afterwards:
//! every kept backup of every source is restored and compared with what its
//! database held when it was taken, `verify --deep` must be clean, and shared
//! files must be stored once. Then the repository is filled up to LIST_BACKUPS
//! backups (1000) and `list` is timed. Prints the figures; exits 1 on any
//! mismatch.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use rocksdb::{ColumnFamilyDescriptor, IteratorMode, Options, DB};
use sha2::{Digest, Sha256};

use rockup::{
    BackupId, BackupOptions, ExternalFiles, PruneOptions, RefSource, Repository, ResolverConfig,
    RestoreOptions, Source,
};

type Digest32 = String;

/// One database of the fleet and what each of its backups must restore to.
struct Member {
    db: PathBuf,
    files: PathBuf,
    expected: HashMap<BackupId, (Digest32, Digest32)>,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize, default: usize| {
        args.get(i)
            .map_or(default, |a| a.parse().expect("a number"))
    };
    let url = args
        .first()
        .expect("usage: fleet REPO_URL [SOURCES] [ROUNDS] [FILES] [LIST_BACKUPS]");
    let (sources, rounds, files, list_backups) =
        (number(1, 16), number(2, 4), number(3, 40), number(4, 1000));
    let repo = Repository::open(url, &[]).expect("repository");
    let dir = tempfile::tempdir().expect("scratch directory");
    let mut fleet: Vec<Member> = (0..sources)
        .map(|s| Member::create(dir.path(), s, files))
        .collect();
    let source_bytes: u64 = fleet.iter().map(|m| tree_bytes(&m.files)).sum();

    let started = Instant::now();
    let (mut refused, mut pruned) = (0, 0);
    for round in 0..rounds {
        let (r, p) = run_round(&repo, &mut fleet, dir.path()).await;
        (refused, pruned) = (refused + r, pruned + p);
        for member in &mut fleet {
            member.change(round, files);
        }
    }
    let wall = started.elapsed();
    let mut failures = check_kept(&repo, &fleet, dir.path()).await;
    let (objects, stored_bytes, blobs) = stored(&repo).await;
    let contents = referenced_contents(&repo).await;
    if blobs != contents as u64 {
        eprintln!("{blobs} external-file objects stored for {contents} distinct contents");
        failures += 1;
    }
    println!("fleet: {sources} sources x {rounds} rounds, {files} files each (half shared)");
    println!(
        "  wall time {wall:.1?}; prunes: {pruned} ran, {refused} refused while backups held locks"
    );
    println!("  stored: {objects} objects, {stored_bytes} bytes; sources hold {source_bytes} bytes of external files");
    println!(
        "  external files stored: {blobs} objects for {contents} distinct contents referenced"
    );
    let (backups, list_time) = time_list(&repo, &fleet[0], dir.path(), list_backups).await;
    println!("  list of {backups} backups: {list_time:.2?}");
    if failures > 0 {
        eprintln!(
            "FAILED: {failures} kept backup(s) did not restore as taken, or verify found problems"
        );
        std::process::exit(1);
    }
    println!("  every kept backup of every source restored as taken; verify --deep clean");
}

impl Member {
    fn create(dir: &Path, s: usize, files: usize) -> Self {
        let (db, root) = (
            dir.join(format!("s{s}/db")),
            dir.join(format!("s{s}/files")),
        );
        let handle = open(&db);
        for i in 0..files {
            // The first half is the same in every database (a shared document store).
            let content = if i < files / 2 {
                content(0, i)
            } else {
                content(s + 1, i)
            };
            add_file(&handle, &root, &format!("f{i}"), &content);
        }
        Self {
            db,
            files: root,
            expected: HashMap::new(),
        }
    }

    /// Between rounds: one file added, the oldest unique one deleted, records written.
    fn change(&mut self, round: usize, files: usize) {
        let handle = open(&self.db);
        let name = format!("r{round}");
        add_file(
            &handle,
            &self.files,
            &name,
            &content(1000 + round, self.db.as_os_str().len()),
        );
        let victim = format!("f{}", files / 2 + round);
        let cf = handle.cf_handle("files").expect("files");
        handle
            .delete_cf(&cf, format!("file:{victim}"))
            .expect("delete");
        let _ = std::fs::remove_file(self.files.join(&victim));
        handle
            .put(format!("round-{round}"), b"changed")
            .expect("put");
    }

    fn options(&self, work: &Path) -> BackupOptions {
        let resolver =
            ResolverConfig::new(RefSource::Json("/path".into())).with_key_prefix("file:");
        let mut options = BackupOptions::default();
        options.external = Some(ExternalFiles::new(&self.files, "files", resolver));
        options.work_dir = Some(work.to_path_buf());
        options
    }
}

/// All backups at once while prunes keep trying; returns (refused, ran) prunes.
async fn run_round(repo: &Repository, fleet: &mut [Member], dir: &Path) -> (usize, usize) {
    let mut backups = Vec::new();
    for member in fleet.iter() {
        let (repo, db, options) = (
            repo.clone(),
            member.db.clone(),
            member.options(&dir.join("work")),
        );
        let expected = (records_digest(&member.db), tree_digest(&member.files));
        backups.push(tokio::spawn(async move {
            // A backup is refused while a prune runs; a fleet's hosts retry.
            for _ in 0..600 {
                match rockup::backup(&repo, Source::Db(db.clone()), &options).await {
                    Ok(report) => return (report.header.backup_id, expected),
                    Err(rockup::Error::Locked { .. }) => {
                        tokio::time::sleep(Duration::from_millis(100)).await
                    }
                    Err(e) => panic!("backup: {e}"),
                }
            }
            panic!("backup refused for a minute")
        }));
    }
    let prunes = tokio::spawn({
        let repo = repo.clone();
        async move {
            let (mut refused, mut ran) = (0, 0);
            for _ in 0..20 {
                match rockup::prune(&repo, &keep_two()).await {
                    Ok(_) => ran += 1,
                    // Locked while backups run; no repository before the first backup.
                    Err(rockup::Error::Locked { .. } | rockup::Error::Usage(_)) => refused += 1,
                    Err(e) => panic!("prune: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (refused, ran)
        }
    });
    for (member, backup) in fleet.iter_mut().zip(backups) {
        let (id, expected) = backup.await.expect("backup task");
        member.expected.insert(id, expected);
    }
    let (refused, ran) = prunes.await.expect("prune task");
    rockup::prune(repo, &keep_two())
        .await
        .expect("prune after the round");
    (refused, ran + 1)
}

fn keep_two() -> PruneOptions {
    let mut options = PruneOptions::default();
    options.policy.keep_last = Some(2);
    options.grace = Duration::ZERO;
    options
}

/// Restores every kept backup and compares it with its database at the time;
/// returns the failures (including verify's problems).
async fn check_kept(repo: &Repository, fleet: &[Member], dir: &Path) -> usize {
    let mut failures = 0;
    let expected: HashMap<&BackupId, &(Digest32, Digest32)> =
        fleet.iter().flat_map(|m| &m.expected).collect();
    for (n, listed) in rockup::list(repo).await.expect("list").iter().enumerate() {
        let target = dir.join(format!("restored-{n}"));
        let mut options = RestoreOptions::default();
        options.backup = listed.backup_id.to_string();
        options.db_dir = target.join("db");
        options.blob_root = Some(target.join("files"));
        rockup::restore(repo, &options).await.expect("restore");
        let got = (
            records_digest(&target.join("db")),
            tree_digest(&target.join("files")),
        );
        if expected.get(&listed.backup_id) != Some(&&got) {
            eprintln!(
                "backup {} restored differently from its database",
                listed.backup_id
            );
            failures += 1;
        }
    }
    let mut verify = rockup::VerifyOptions::default();
    verify.backup = "all".into();
    verify.deep = true;
    failures
        + rockup::verify(repo, &verify)
            .await
            .expect("verify")
            .problems
            .len()
}

/// Distinct external-file contents the kept backups reference.
async fn referenced_contents(repo: &Repository) -> usize {
    let mut contents = HashSet::new();
    for listed in rockup::list(repo).await.expect("list") {
        let header = listed.header.expect("readable");
        let entries: Vec<rockup::manifest::ExternalEntry> =
            header.entries(repo).await.expect("entries");
        contents.extend(entries.into_iter().map(|e| e.sha256));
    }
    contents.len()
}

/// (objects, bytes, external-file objects) in the repository.
async fn stored(repo: &Repository) -> (u64, u64, u64) {
    let all: Vec<object_store::ObjectMeta> =
        repo.store().list(None).try_collect().await.expect("list");
    let blobs = all
        .iter()
        .filter(|m| m.location.as_ref().starts_with("blobs/"))
        .count();
    (
        all.len() as u64,
        all.iter().map(|m| m.size).sum(),
        blobs as u64,
    )
}

/// Fills the repository up to `target` backups (one source, many at once),
/// then times `list`.
async fn time_list(
    repo: &Repository,
    member: &Member,
    dir: &Path,
    target: usize,
) -> (usize, Duration) {
    let have = rockup::list(repo).await.expect("list").len();
    let work = dir.join("work-fill");
    let options = Arc::new(member.options(&work));
    let fill = futures::stream::iter(have..target).map(|_| {
        let (repo, db, options) = (repo.clone(), member.db.clone(), options.clone());
        async move {
            rockup::backup(&repo, Source::Db(db), &options)
                .await
                .map(drop)
        }
    });
    use futures::StreamExt;
    fill.buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .expect("fill");
    let started = Instant::now();
    let listed = rockup::list(repo).await.expect("list");
    (listed.len(), started.elapsed())
}

fn open(db: &Path) -> DB {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    let cfs = ["default", "files"].map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
    DB::open_cf_descriptors(&opts, db, cfs).expect("database")
}

fn content(seed: usize, i: usize) -> Vec<u8> {
    (0..2048 + (seed * 7919 + i * 104_729) % 30_000)
        .map(|j| ((seed * 31 + i * 17 + j) % 251) as u8)
        .collect()
}

fn add_file(db: &DB, root: &Path, name: &str, content: &[u8]) {
    let path = root.join(name);
    std::fs::create_dir_all(root).expect("files directory");
    std::fs::write(&path, content).expect("file");
    let record = serde_json::json!({"path": name, "size": content.len()});
    let cf = db.cf_handle("files").expect("files");
    db.put_cf(&cf, format!("file:{name}"), record.to_string())
        .expect("record");
}

fn records_digest(db: &Path) -> Digest32 {
    let opts = Options::default();
    let names = DB::list_cf(&opts, db).expect("column families");
    let handle = DB::open_cf_for_read_only(&opts, db, &names, false).expect("open");
    let mut hasher = Sha256::new();
    for name in &names {
        let cf = handle.cf_handle(name).expect("listed");
        for item in handle.iterator_cf(&cf, IteratorMode::Start) {
            let (k, v) = item.expect("record");
            hasher.update(name.as_bytes());
            hasher.update((k.len() as u64).to_le_bytes());
            hasher.update(&k);
            hasher.update((v.len() as u64).to_le_bytes());
            hasher.update(&v);
        }
    }
    hex::encode(hasher.finalize())
}

fn tree_files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let entries = std::fs::read_dir(root)
        .map(|d| d.flatten().collect::<Vec<_>>())
        .unwrap_or_default();
    entries
        .iter()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).expect("read"),
            )
        })
        .collect()
}

/// Digest of the files the database's records reference (deleted ones are
/// gone from the tree and from the records alike).
fn tree_digest(root: &Path) -> Digest32 {
    let mut hasher = Sha256::new();
    for (name, bytes) in tree_files(root) {
        hasher.update(name.as_bytes());
        hasher.update(Sha256::digest(&bytes));
    }
    hex::encode(hasher.finalize())
}

fn tree_bytes(root: &Path) -> u64 {
    let unique: HashSet<Vec<u8>> = tree_files(root).into_values().collect();
    unique.iter().map(|b| b.len() as u64).sum()
}
