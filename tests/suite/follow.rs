//! `follow` beside a writer process (the held tests' writer: one batch per
//! step across three column families, each adding a record that references a
//! new file and deleting the record — and the file — 100 steps back). Every
//! restore to a point must be exactly the writer's state at the last batch at
//! or before it, with every live record's file present and byte-identical and
//! no other file.

use std::path::Path;
use std::time::Duration;

use rand::Rng;
use rockup::{FollowOptions, FollowStatus, PointInTime, Repository};

use super::fixture::*;
use super::held::{check_point_in_time, write_times, Writer};

/// The last sequence number of writer step `step`: three operations per
/// batch for the first 100 steps, four (a deletion too) after.
fn last_sequence_of(step: u64) -> u64 {
    match step {
        0..100 => 3 * (step + 1),
        _ => 300 + 4 * (step - 99),
    }
}

/// The step the writer was at when its WAL reached sequence number `n`.
fn step_at(n: u64) -> u64 {
    (0..)
        .take_while(|&s| last_sequence_of(s) <= n)
        .last()
        .expect("past the first step")
}

/// Runs `follow` on the writer's database until `stop` fires.
fn start_follow(repo: &Repository, writer: &Writer, work: &Path) -> Following {
    start_follow_with(repo, writer, work, |_| {})
}

/// The same, with options changed by `change`.
fn start_follow_with(
    repo: &Repository,
    writer: &Writer,
    work: &Path,
    change: impl FnOnce(&mut FollowOptions),
) -> Following {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let repo = repo.clone();
    let db = writer.db.clone();
    let options = with(FollowOptions::default(), |o| {
        o.backup = writer.options(work.to_path_buf());
        o.safepoint_file = Some(format!("{}.safepoint", writer.db.display()).into());
        o.interval = Duration::from_millis(200);
        o.merge_fan_in = 8;
        change(o);
    });
    let mut shipped = ShippedLog::open(&db);
    let task = tokio::spawn(async move {
        rockup::follow(&repo, &db, &options, |s| shipped.record(s), async {
            let _ = stopped.await;
        })
        .await
    });
    (stop, task)
}

/// `follow`'s own account of its progress, across its runs on one database
/// (`<db>.shipped`): after each poll, when everything up to the shipped
/// sequence number had been read.
struct ShippedLog(std::io::BufWriter<std::fs::File>);

impl ShippedLog {
    fn path(db: &Path) -> std::path::PathBuf {
        format!("{}.shipped", db.display()).into()
    }

    fn exists(db: &Path) -> bool {
        Self::path(db).exists()
    }

    fn open(db: &Path) -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(Self::path(db))
            .unwrap();
        Self(std::io::BufWriter::new(file))
    }

    fn record(&mut self, status: &FollowStatus) {
        use std::io::Write;
        let at = status.shipped_at.timestamp_nanos_opt().unwrap();
        writeln!(self.0, "{at} {}", status.shipped_sequence).unwrap();
        self.0.flush().unwrap();
    }

    /// The (time, sequence number) pairs recorded.
    fn read(db: &Path) -> Vec<(chrono::DateTime<chrono::Utc>, u64)> {
        let text = std::fs::read_to_string(Self::path(db)).unwrap();
        // Whole lines only: follow may be writing the next.
        text.split_inclusive('\n')
            .filter_map(|line| line.strip_suffix('\n'))
            .map(|line| {
                let (at, n) = line.split_once(' ').unwrap();
                let at = chrono::DateTime::from_timestamp_nanos(at.parse().unwrap());
                (at, n.parse().unwrap())
            })
            .collect()
    }
}

/// Stops `follow` and returns its last status (panics with its error).
async fn stop_follow(
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<rockup::Result<FollowStatus>>,
) -> FollowStatus {
    let _ = stop.send(());
    task.await
        .unwrap()
        .unwrap_or_else(|e| panic!("follow failed: {e}"))
}

/// Restores `to` into a new directory under `dir` and checks it is the
/// writer's state at the sequence number reached, each live record's file
/// restored or (at most `uncaptured` of them) reported as not captured;
/// returns the sequence number reached.
async fn restore_and_check(
    repo: &Repository,
    dir: &Path,
    to: PointInTime,
    uncaptured: usize,
) -> u64 {
    let target = dir.join("restored");
    let mut restore = restoring("latest", target.join("db"), Some(target.join("files")));
    restore.to = Some(to);
    let report = rockup::restore(repo, &restore)
        .await
        .unwrap_or_else(|e| panic!("restore to {to:?}: {e}"));
    let reached = report.sequence_number;
    let point = check_point_in_time(
        &target.join("db"),
        &target.join("files"),
        &report.unrestorable,
    )
    .unwrap_or_else(|why| panic!("restore to {to:?} (sequence {reached}): {why}"));
    assert_eq!(point.step, step_at(reached), "restore to {to:?}");
    if let PointInTime::Sequence(n) = to {
        assert!(
            reached <= n && step_at(reached) == step_at(n),
            "{reached} for {n}"
        );
    }
    let restored_files = tree(&target.join("files")).len();
    assert_eq!(
        restored_files, point.files_intact,
        "no file beyond the live records'"
    );
    assert!(
        point.files_reported <= uncaptured,
        "{} files not captured (and reported) at {to:?}",
        point.files_reported
    );
    std::fs::remove_dir_all(&target).unwrap();
    reached
}

/// Waits until `follow` (its [`ShippedLog`]) has shipped sequence number
/// `last`: a loaded machine may take long to work through what the writer
/// wrote at full speed.
async fn wait_until_shipped(db: &Path, last: u64) {
    for _ in 0..1200 {
        let shipped = ShippedLog::read(db).last().map_or(0, |(_, n)| *n);
        if shipped >= last {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("follow did not ship sequence number {last} within two minutes");
}

/// Waits until a `follow` run just started reports (its base backup is
/// committed or resumed): more lines in the [`ShippedLog`] than `before`.
async fn wait_for_a_status(db: &Path, before: usize) {
    for _ in 0..1200 {
        if ShippedLog::read(db).len() > before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("follow reported nothing within two minutes");
}

/// Starts `follow` and returns once it has reported.
async fn started_follow(repo: &Repository, writer: &Writer, work: &Path) -> Following {
    let before = ShippedLog::exists(&writer.db).then(|| ShippedLog::read(&writer.db).len());
    let following = start_follow(repo, writer, work);
    wait_for_a_status(&writer.db, before.unwrap_or(0)).await;
    following
}

/// The writer's last step, read from its database as RocksDB recovers it.
fn last_step(db: &Path) -> u64 {
    read_all(db)["meta"]
        .iter()
        .find(|(k, _)| k == b"step")
        .map(|(_, v)| String::from_utf8_lossy(v).parse::<u64>().unwrap())
        .unwrap()
}

/// Kills the writer (SIGKILL), lets `follow` ship what it wrote, stops it,
/// deletes the database, and checks restores to the last batch, to random
/// sequence numbers and to a time (at most `uncaptured` files per point
/// reported as not captured: the files created and deleted while no
/// `follow` ran).
async fn kill_and_check(
    repo: &Repository,
    dir: &Path,
    writer: Writer,
    (stop, task): Following,
    uncaptured: usize,
) -> FollowStatus {
    let db = writer.db.clone();
    drop(writer);
    let written = last_step(&db);
    wait_until_shipped(&db, last_sequence_of(written)).await;
    // A second of an idle database, whose polls report too.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let last = stop_follow(stop, task).await;
    assert_eq!(last.lag_sequences, 0, "{last:?}");
    eprintln!("follow's last status: {last:?}");
    std::fs::remove_dir_all(&db).unwrap();

    let latest = restore_and_check(repo, dir, PointInTime::Latest, 0).await;
    assert_eq!(
        step_at(latest),
        written,
        "latest is the writer's last batch"
    );
    let ranges = rockup::restorable(repo).await.unwrap();
    for pair in ranges.windows(2) {
        assert!(
            pair[0].last_sequence >= pair[1].first_sequence,
            "no hole between timelines: {ranges:?}"
        );
    }
    let (sequences, times) = points_to_check();
    let mut random = rand::rng();
    for _ in 0..sequences {
        let range = &ranges[random.random_range(0..ranges.len())];
        let n = random.random_range(range.first_sequence..=range.last_sequence);
        restore_and_check(repo, dir, PointInTime::Sequence(n), uncaptured).await;
    }
    let written = write_times(&db);
    let shipped = ShippedLog::read(&db);
    assert!(
        shipped.len() > 10,
        "follow reported its progress: {shipped:?}"
    );
    let from = ranges.iter().map(|r| r.from_time).min().unwrap();
    let to = ranges.iter().map(|r| r.to_time).max().unwrap();
    for _ in 0..times {
        let at = from + (to - from) * random.random_range(0..=1000) / 1000;
        let reached = restore_and_check(repo, dir, PointInTime::Time(at), uncaptured).await;
        check_time(&written, &shipped, reached, at);
    }
    let beyond = with(restoring("latest", dir.join("x/db"), None), |o| {
        o.to = Some(PointInTime::Sequence(latest + 10))
    });
    let refused = rockup::restore(repo, &beyond).await.unwrap_err();
    assert!(
        refused.to_string().contains("restorable ranges"),
        "{refused}"
    );
    last
}

/// How many random sequence numbers and times each run restores to:
/// `ROCKUP_FOLLOW_POINTS=S,T` (default 50 and 10).
fn points_to_check() -> (usize, usize) {
    let points = std::env::var("ROCKUP_FOLLOW_POINTS").unwrap_or("50,10".into());
    let (s, t) = points.split_once(',').expect("ROCKUP_FOLLOW_POINTS=S,T");
    (s.parse().unwrap(), t.parse().unwrap())
}

/// Checks a restore to time `at` that reached sequence number `reached`:
/// against the writer's log (`written[i]`: when step i was about to be
/// written), the step reached was written by then — never a later write;
/// against `follow`'s (`shipped`), it reached at least what `follow` had
/// read and shipped by then — what a time restore promises (how far that
/// lags the writer depends on the machine's load). A killed writer loses
/// its log's unflushed tail; a step beyond it was written after the last
/// logged one.
fn check_time(
    written: &[chrono::DateTime<chrono::Utc>],
    shipped: &[(chrono::DateTime<chrono::Utc>, u64)],
    reached: u64,
    at: chrono::DateTime<chrono::Utc>,
) {
    let step = step_at(reached) as usize;
    let logged = step.min(written.len() - 1);
    assert!(
        written[logged] <= at,
        "step {step} written after {} (step {logged}), after {at}",
        written[logged]
    );
    // Times are kept to the millisecond in segments.
    let margin = chrono::Duration::milliseconds(2);
    let read_by = shipped
        .iter()
        .filter(|(t, _)| *t + margin <= at)
        .map(|(_, n)| *n)
        .max();
    assert!(
        read_by.is_none_or(|n| reached >= n),
        "a restore to {at} reached {reached}; follow had shipped {read_by:?} read by then"
    );
}

/// Waits (a minute at most: a loaded machine ships slowly) until segments
/// continue two bases and some of them were merged.
async fn wait_for_merged_timelines(repo: &Repository) {
    let mut keys = vec![];
    for _ in 0..120 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        keys = list_keys(repo, "segments/").await;
        let bases: std::collections::BTreeSet<_> = keys
            .iter()
            .filter_map(|k| k.as_ref().split('/').nth(1).map(str::to_owned))
            .collect();
        let merged = keys.iter().any(|k| k.as_ref().contains("/1/"));
        if bases.len() >= 2 && merged && keys.len() > 5 {
            return;
        }
    }
    panic!("no merged segments on two bases within a minute: {keys:?}");
}

type Following = (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<rockup::Result<FollowStatus>>,
);

/// In an encrypted repository: restores to any point; everything `follow`
/// wrote verifies deeply and survives a prune; a missing segment is named
/// and no restore reads past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_restores_the_database_and_its_files_to_any_point() {
    let dir = tempfile::tempdir().unwrap();
    let writer = Writer::start_variant(dir.path(), "safepoint");
    let plain = Repository::open(&dir.path().join("repo").display().to_string(), &[]).unwrap();
    let repo = encrypted(plain).await;
    // A new base every 4 s: the old timeline continues up to it. Merging
    // every 2 segments: a loaded CI machine ships only 2 or 3 per timeline.
    let following = start_follow_with(&repo, &writer, &dir.path().join("work"), |o| {
        o.base_every = Some(Duration::from_secs(4));
        o.merge_fan_in = 2;
    });
    wait_for_merged_timelines(&repo).await;
    // The writer honours the safepoint: no file is missed.
    let last = kill_and_check(&repo, dir.path(), writer, following, 0).await;
    assert!(last.bases >= 2, "bases on schedule: {last:?}");
    let segments = list_keys(&repo, "segments/").await;
    let verified = verify(&repo, "all", true).await;
    assert!(verified.problems.is_empty(), "{:?}", verified.problems);

    // The first segment of the longest range goes missing (at every level):
    // verify names the gap, the range shrinks to its base, and a restore
    // past the base refuses rather than skipping records.
    let ranges = rockup::restorable(&repo).await.unwrap();
    let longest = ranges
        .iter()
        .max_by_key(|r| r.last_sequence - r.first_sequence)
        .unwrap();
    let (base, missing) = (&longest.base, longest.first_sequence + 1);
    assert!(missing < longest.last_sequence, "{longest:?}");
    let first = format!("segments/{base}/");
    let starting = format!("/{missing:020}-");
    for key in segments.iter().map(|k| k.as_ref()) {
        if key.starts_with(&first) && key.contains(&starting) {
            remove_object(&repo, key).await;
        }
    }
    let damaged = verify(&repo, "all", true).await;
    let named = format!("no segment holds sequence number {missing} of base {base}");
    assert!(
        damaged.problems.iter().any(|p| p.detail.contains(&named)),
        "{:?}",
        damaged.problems
    );
    let shrunk = rockup::restorable(&repo).await.unwrap();
    let shrunk = shrunk.iter().find(|r| r.base == *base).unwrap();
    assert_eq!(
        (shrunk.last_sequence, shrunk.segments),
        (longest.first_sequence, 0)
    );
    let past = with(restoring("latest", dir.path().join("x/db"), None), |o| {
        o.to = Some(PointInTime::Sequence(missing))
    });
    let refused = rockup::restore(&repo, &past).await.unwrap_err();
    assert!(
        refused.to_string().contains("restorable ranges"),
        "{refused}"
    );

    // Prune keeps the newest base; the segments of the others go, and so
    // do those merged segments cover.
    rockup::prune(&repo, &keep_last(1, Duration::ZERO, false))
        .await
        .unwrap();
    let left = list_keys(&repo, "segments/").await;
    assert!(left.len() < segments.len(), "merged-away segments pruned");
    let ranges = rockup::restorable(&repo).await.unwrap();
    assert_eq!(ranges.len(), 1, "one base kept: {ranges:?}");
    let latest = restore_and_check(&repo, dir.path(), PointInTime::Latest, 0).await;
    assert_eq!(latest, ranges[0].last_sequence);
}

/// With the WAL kept (`WAL_ttl_seconds`), `follow` stopped and started again
/// (three times) resumes its timeline where its last segment ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_resumes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let writer = Writer::start_variant(dir.path(), "wal-archive");
    let repo = Repository::open(&dir.path().join("repo").display().to_string(), &[]).unwrap();
    let work = dir.path().join("work");
    let (stop, task) = started_follow(&repo, &writer, &work).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let first = stop_follow(stop, task).await;
    assert_eq!(first.bases, 1);
    for _ in 0..2 {
        // Down for a moment while the writer goes on.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (stop, task) = started_follow(&repo, &writer, &work).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let again = stop_follow(stop, task).await;
        assert_eq!((again.bases, &again.base), (0, &first.base), "resumed");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let following = started_follow(&repo, &writer, &work).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = kill_and_check(&repo, dir.path(), writer, following, 100).await;
    assert_eq!(second.bases, 0, "resumed, not a new base: {second:?}");
    // Without the safepoint, files the writer deletes within ~50 ms are
    // caught by the watcher of new files (a poll every 200 ms alone would
    // miss most of them); every miss is reported by path and record.
    assert!(
        second.new_files_missed * 5 < second.files,
        "{} of {} new files missed",
        second.new_files_missed,
        second.files
    );
    assert_eq!(second.base, first.base);
}

/// The store refuses segments for a while: `follow` keeps what it read
/// (the metrics say it waits), catches up once the store answers, and loses
/// nothing (the writer, honouring the safepoint, kept its files meanwhile;
/// it recycles its WAL files).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_waits_out_a_store_outage() {
    let dir = tempfile::tempdir().unwrap();
    let writer = Writer::start_variant(dir.path(), "safepoint,recycle");
    let store = std::sync::Arc::new(super::stores::Faulty::default());
    let repo = Repository::from_store(store.clone(), "faulty://");
    let metrics = dir.path().join("follow.prom");
    let following = start_follow_with(&repo, &writer, &dir.path().join("work"), |o| {
        o.metrics_file = Some(metrics.clone())
    });
    wait_for_a_status(&writer.db, 0).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    use super::stores::{Fault, Op};
    store.inject(Op::Put, "segments/", Fault::Error, usize::MAX);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = std::fs::read_to_string(&metrics).unwrap();
    assert!(during.contains("rockup_follow_waiting{"), "{during}");
    let waiting = during
        .lines()
        .find(|l| l.starts_with("rockup_follow_waiting{"))
        .unwrap();
    assert!(waiting.ends_with(" 1"), "{waiting}");
    store.heal();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let last = kill_and_check(&repo, dir.path(), writer, following, 0).await;
    assert_eq!(last.bases, 1, "the outage is no gap: {last:?}");
    assert!(last.waiting.is_none());
}

/// `rockup follow` as operators run it: a process beside the application,
/// killed (SIGKILL) and started again, stopped with SIGTERM (exit 0, after
/// shipping what it read); `restore --to-latest` and `list` from the CLI.
#[test]
fn the_cli_follows_restarts_and_restores() {
    let dir = tempfile::tempdir().unwrap();
    let writer = Writer::start_variant(dir.path(), "safepoint,wal-archive");
    let repo = dir.path().join("repo");
    let follow = || {
        rockup_command()
            .args(["follow", "--repo", repo.to_str().unwrap(), "--db"])
            .arg(&writer.db)
            .args(blob_args(&writer.files))
            .args(["--allow-missing-blobs", "--interval", "200ms", "--json"])
            .arg("--safepoint-file")
            .arg(format!("{}.safepoint", writer.db.display()))
            .arg("--work-dir")
            .arg(dir.path().join("work"))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut first = follow();
    let mut statuses = StatusLines::of(&mut first);
    statuses.wait_for("with a segment", |s| s["segments"].as_u64() > Some(0));
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let mut second = follow();
    let mut statuses = StatusLines::of(&mut second);
    statuses.wait_for("of the second run", |_| true);
    std::thread::sleep(Duration::from_secs(2));
    let db = writer.db.clone();
    drop(writer);
    let written = last_step(&db);
    let shipped_all =
        |s: &serde_json::Value| s["shipped_sequence"].as_u64() >= Some(last_sequence_of(written));
    statuses.wait_for("with the writer's last batch", shipped_all);
    // SAFETY: signals our own child.
    unsafe { libc::kill(second.id() as i32, libc::SIGTERM) };
    let code = second.wait().unwrap().code();
    assert_eq!(code, Some(0), "follow exits 0 on SIGTERM");
    let statuses = statuses.rest();
    let last = statuses.last().expect("status lines");
    assert_eq!(last["bases"], 0, "resumed after SIGKILL: {last}");
    assert_eq!(last["lag_sequences"], 0, "{last}");
    std::fs::remove_dir_all(&db).unwrap();

    let target = dir.path().join("restored");
    let restored = rockup_command()
        .args([
            "restore",
            "--repo",
            repo.to_str().unwrap(),
            "--to-latest",
            "--db-dir",
        ])
        .arg(target.join("db"))
        .arg("--blob-root")
        .arg(target.join("files"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&restored.stderr);
    assert!(restored.status.success(), "{stderr}");
    let point = check_point_in_time(&target.join("db"), &target.join("files"), &[]).unwrap();
    assert_eq!(point.step, written);
    let listed = rockup_command()
        .args(["list", "--json", "--repo", repo.to_str().unwrap()])
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(
        listed["restorable"][0]["last_sequence"],
        last["shipped_sequence"]
    );
}

/// The `--json` status lines of a `rockup follow` process, read as they come.
struct StatusLines {
    lines: std::sync::mpsc::Receiver<serde_json::Value>,
    seen: Vec<serde_json::Value>,
}

impl StatusLines {
    fn of(child: &mut std::process::Child) -> Self {
        use std::io::BufRead;
        let stdout = std::io::BufReader::new(child.stdout.take().expect("piped"));
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let status = serde_json::from_str(&line.unwrap()).expect("a JSON line");
                if send.send(status).is_err() {
                    break;
                }
            }
        });
        Self {
            lines,
            seen: vec![],
        }
    }

    /// Waits (two minutes at most: a loaded machine is slow) for a status
    /// that `wanted` accepts.
    fn wait_for(
        &mut self,
        what: &str,
        wanted: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(status) if wanted(&status) => {
                    self.seen.push(status.clone());
                    return status;
                }
                Ok(status) => self.seen.push(status),
                Err(e) => panic!("no status {what} ({e}); the last: {:?}", self.seen.last()),
            }
        }
    }

    /// Every status line, up to the end of the output.
    fn rest(mut self) -> Vec<serde_json::Value> {
        self.seen.extend(self.lines.iter());
        self.seen
    }
}

/// A column family created while `follow` runs lives in the MANIFEST, not
/// the WAL: the first batch writing to it ends the timeline (its batches
/// could not be replayed onto the base), a new base takes it in, and a
/// restore to the latest point holds its records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_family_created_meanwhile_starts_a_new_base() {
    let dir = tempfile::tempdir().unwrap();
    let db_dir = dir.path().join("db");
    let mut db = rocksdb::DB::open(&db_options(), &db_dir).unwrap();
    db.put(b"before", b"1").unwrap();
    let repo = Repository::open(&dir.path().join("repo").display().to_string(), &[]).unwrap();
    let options = with(FollowOptions::default(), |o| {
        o.backup.work_dir = Some(dir.path().join("work"));
        o.interval = Duration::from_millis(100);
    });
    let follow = InProcess::start(&repo, &db_dir, options);
    db.put(b"followed", b"2").unwrap();
    follow.wait_until_shipped(&db, 1).await;

    db.create_cf("later", &rocksdb::Options::default()).unwrap();
    let later = db.cf_handle("later").unwrap();
    db.put_cf(&later, b"in-later", b"3").unwrap();
    db.put(b"after", b"4").unwrap();
    follow.wait_until_shipped(&db, 2).await;
    let last = follow.stop().await;
    assert_eq!(
        last.bases, 2,
        "a new base for the new column family: {last:?}"
    );
    drop(db);

    let target = dir.path().join("restored");
    let mut restore = restoring("latest", target.clone(), None);
    restore.to = Some(PointInTime::Latest);
    rockup::restore(&repo, &restore).await.unwrap();
    let records = read_all(&target);
    let keys = |cf: &str| -> Vec<Vec<u8>> { records[cf].iter().map(|(k, _)| k.clone()).collect() };
    assert_eq!(keys("later"), [b"in-later".to_vec()]);
    assert_eq!(
        keys("default"),
        [b"after".to_vec(), b"before".to_vec(), b"followed".to_vec()]
    );
}

/// A file whose content the repository held only for another source's
/// backup, forgotten and pruned while `follow` runs (it holds no lock
/// between its bases), is stored by follow, not taken for stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_stores_content_it_did_not_see_referenced() {
    let other = Fixture::new(3);
    // Large enough to be a content object of its own, not a pack entry.
    let size = 2 << 20;
    add_file(&open_rw(&other.db), &other.files, 7, size);
    let repo = other.local_repo();
    let other_options = with(other.options(), |o| o.source = Some("other".into()));
    let other_backup = rockup::backup(&repo, rockup::Source::Db(other.db.clone()), &other_options)
        .await
        .unwrap();

    let db_dir = other.path("db2");
    let files = other.path("files2");
    std::fs::create_dir_all(&files).unwrap();
    let db = open_rw(&db_dir);
    db.put(b"before", b"1").unwrap();
    let options = with(FollowOptions::default(), |o| {
        o.backup.external = Some(rockup::ExternalFiles::new(&files, "files", resolver()));
        o.backup.work_dir = Some(other.path("work2"));
        o.interval = Duration::from_millis(100);
    });
    let follow = InProcess::start(&repo, &db_dir, options);
    follow.wait_until_shipped(&db, 1).await;
    // While follow runs (no lock between its bases), the other backup is
    // forgotten and its content, unreferenced, deleted.
    let forget = with(rockup::PruneOptions::default(), |o| {
        o.forget = vec![other_backup.header.backup_id.clone()];
        o.grace = Duration::ZERO;
    });
    let pruned = rockup::prune(&repo, &forget).await.unwrap();
    assert!(pruned.deleted_objects > 0, "{pruned:?}");
    add_file(&db, &files, 7, size); // the same content

    follow.wait_until_shipped(&db, 1).await;
    let last = follow.stop().await;
    assert_eq!(last.files, 1, "{last:?}");
    drop(db);

    let target = other.path("restored");
    let mut restore = restoring("latest", target.join("db"), Some(target.join("files")));
    restore.to = Some(PointInTime::Latest);
    let report = rockup::restore(&repo, &restore).await.unwrap();
    assert!(report.unrestorable.is_empty(), "{:?}", report.unrestorable);
    let restored = std::fs::read(target.join("files/d2/f-7.bin")).unwrap();
    assert_eq!(restored, content(7, size));
}

/// `follow` run in this process on a database this test writes.
struct InProcess {
    statuses: std::sync::Arc<std::sync::Mutex<Vec<FollowStatus>>>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<rockup::Result<FollowStatus>>,
}

impl InProcess {
    fn start(repo: &Repository, db_dir: &Path, options: FollowOptions) -> Self {
        let statuses = std::sync::Arc::new(std::sync::Mutex::new(Vec::<FollowStatus>::new()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn({
            let (repo, db_dir, statuses) = (repo.clone(), db_dir.to_path_buf(), statuses.clone());
            async move {
                let record = |s: &FollowStatus| statuses.lock().unwrap().push(s.clone());
                let stop = async {
                    let _ = stopped.await;
                };
                rockup::follow(&repo, &db_dir, &options, record, stop).await
            }
        });
        Self {
            statuses,
            stop,
            task,
        }
    }

    /// Waits until follow has shipped everything `db` holds, on its
    /// `bases`-th base.
    async fn wait_until_shipped(&self, db: &rocksdb::DB, bases: u64) {
        let last = db.latest_sequence_number();
        for _ in 0..1200 {
            let reached = self.statuses.lock().unwrap().last().cloned();
            if reached.is_some_and(|s| s.shipped_sequence >= last && s.bases >= bases) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("follow did not ship {last} on base {bases} within two minutes");
    }

    async fn stop(self) -> FollowStatus {
        stop_follow(self.stop, self.task).await
    }
}
