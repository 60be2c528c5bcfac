//! Work directories under kill -9: a backup killed while it removes its own
//! run directory, or while it removes one a killed run left, leaves a remnant
//! the next run removes — never an unmarked directory of pre-links (hard
//! links to the application's files) that nobody cleans.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::fixture::*;

/// Unreferenced files added to the blob tree: pre-links link the whole tree,
/// so removing a run directory takes long enough to be caught at it.
const EXTRA_FILES: usize = 30_000;

/// What a removal directory's name starts with (docs/ARCHITECTURE.md).
const REMOVING: &str = ".rockup-removing-";

fn fixture_with_many_files() -> Fixture {
    let fx = Fixture::new(20);
    for i in 0..EXTRA_FILES {
        let dir = fx.files.join(format!("extra/{}", i % 100));
        if i < 100 {
            std::fs::create_dir_all(&dir).unwrap();
        }
        std::fs::write(dir.join(format!("{i}")), b"x").unwrap();
    }
    fx
}

fn backup(fx: &Fixture, work: &Path) -> Command {
    let mut command = rockup_command();
    command
        .args(["backup", "--repo", fx.path("repo").to_str().unwrap()])
        .args(["--db", fx.db.to_str().unwrap()])
        .args(blob_args(&fx.files))
        .args(["--work-dir", work.to_str().unwrap()])
        .stderr(std::process::Stdio::null());
    command
}

/// Kills `child` with SIGKILL as soon as `caught` holds; returns whether it
/// was caught (rather than having finished first).
fn kill_when(mut child: Child, caught: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if caught() {
            child.kill().unwrap();
            child.wait().unwrap();
            return true;
        }
        if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
            let _ = child.kill();
            return false;
        }
    }
}

fn removals(work: &Path) -> Vec<String> {
    let names = entries(work).into_iter();
    names.filter(|n| n.starts_with(REMOVING)).collect()
}

/// Runs a backup to its end and checks that the work directory is empty.
fn next_run_cleans(fx: &Fixture, work: &Path) {
    let status = backup(fx, work).status().unwrap();
    assert!(status.success(), "the next backup runs");
    assert!(entries(work).is_empty(), "left: {:?}", entries(work));
}

#[test]
fn a_run_killed_while_removing_its_own_work_directory_is_cleaned_up_by_the_next() {
    let fx = fixture_with_many_files();
    let work = fx.path("work");
    std::fs::create_dir_all(&work).unwrap();
    let caught = (0..3).any(|_| {
        let child = backup(&fx, &work).spawn().unwrap();
        kill_when(child, || !removals(&work).is_empty())
    });
    assert!(caught, "a backup was killed during its own clean-up");
    assert!(!removals(&work).is_empty(), "a remnant was left");
    next_run_cleans(&fx, &work);
}

#[test]
fn a_run_killed_while_removing_a_stale_run_is_cleaned_up_by_the_next() {
    let fx = Fixture::new(5);
    let work = fx.path("work");
    let stale = leave_stale_run(&work);
    let child = backup(&fx, &work).spawn().unwrap();
    let caught = kill_when(child, || !stale.exists());
    assert!(
        caught,
        "the backup was killed while it removed the stale run"
    );
    let left = removals(&work);
    assert_eq!(left.len(), 1, "renamed before it was emptied: {left:?}");
    assert!(
        !tree(&work.join(&left[0])).is_empty(),
        "killed before the removal was done"
    );
    next_run_cleans(&fx, &work);
}

/// A run directory of this host whose run was killed: rockup's marker, a lock
/// nobody holds, and many pre-links.
fn leave_stale_run(work: &Path) -> PathBuf {
    let stale = work.join("run-killed");
    for i in 0..EXTRA_FILES {
        let dir = stale.join(format!("prelinks/{}", i % 100));
        if i < 100 {
            std::fs::create_dir_all(&dir).unwrap();
        }
        std::fs::write(dir.join(format!("{i}")), b"x").unwrap();
    }
    std::fs::write(stale.join("lock"), b"").unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let marker = serde_json::json!({"host": host.trim(), "pid": 1});
    std::fs::write(stale.join("rockup-run.json"), marker.to_string()).unwrap();
    stale
}
