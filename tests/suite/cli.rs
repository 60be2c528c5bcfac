//! The binary's contract: exit codes, `--json` on stdout (also on failure),
//! human output on stderr, and the demo.

use std::process::{Command, Output};

use serde_json::Value;

use super::fixture::*;

pub fn rockup(args: &[&str]) -> Output {
    rockup_command().args(args).output().unwrap()
}

pub fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A failure's JSON document: the last line on stderr, stdout left empty.
pub fn error_of(out: &Output) -> Value {
    assert!(out.stdout.is_empty(), "a failure wrote on stdout");
    let text = String::from_utf8_lossy(&out.stderr);
    let last = text.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("stderr does not end in JSON ({e}): {text}"))
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn demo_backs_up_restores_and_compares() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let out = rockup(&["demo", demo.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = json_of(&out);
    assert!(
        report["records_compared"].as_u64().unwrap() > 500,
        "{report}"
    );
    assert_eq!(report["files_compared"], report["external_files"]);
    assert!(report["external_files"].as_u64().unwrap() > 250);
    assert_eq!(
        tree(&demo.join("source/files")),
        tree(&demo.join("restored/files"))
    );
    assert_eq!(
        read_all(&demo.join("source/db")),
        read_all(&demo.join("restored/db"))
    );
    assert!(stderr(&out).contains("identical"));
    let config = std::fs::read_to_string(demo.join("repository/rockup.json")).unwrap();
    assert!(
        config.contains("\"encryption\""),
        "the demo's repository is encrypted"
    );
    let identity = std::path::PathBuf::from(report["identity_file"].as_str().unwrap());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&identity).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn exit_codes_and_json_documents() {
    let fx = Fixture::new(5);
    let repo = fx.path("repo");
    let repo = repo.to_str().unwrap();
    let db = fx.db.to_str().unwrap();
    let blob_args = blob_args(&fx.files);

    // usage errors: 2
    assert_eq!(rockup(&[]).status.code(), Some(2));
    assert_eq!(
        rockup(&["backup", "--repo", repo]).status.code(),
        Some(2),
        "needs --db or --checkpoint"
    );
    let bad_url = rockup(&["backup", "--repo", "nope://x", "--db", db, "--json"]);
    assert_eq!(bad_url.status.code(), Some(2));
    assert!(error_of(&bad_url)["error"]
        .as_str()
        .unwrap()
        .contains("nope://x"));
    assert_eq!(
        rockup(&[
            "backup",
            "--repo",
            repo,
            "--db",
            db,
            "--blob-ref",
            "json:path"
        ])
        .status
        .code(),
        Some(2)
    );

    // operational error: 1, named
    let missing = rockup(&[
        "backup",
        "--repo",
        repo,
        "--db",
        "/nonexistent/db",
        "--json",
    ]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(error_of(&missing)["error"]
        .as_str()
        .unwrap()
        .contains("/nonexistent/db"));

    // success: 0, one JSON document
    let mut args = vec![
        "backup", "--repo", repo, "--db", db, "--tag", "env=test", "--json",
    ];
    args.extend(blob_args.iter().map(String::as_str));
    let ok = rockup(&args);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    let doc = json_of(&ok);
    assert_eq!(doc["header"]["tags"]["env"], "test");
    assert_eq!(doc["header"]["stats"]["external_files"], 5);
    let id = doc["header"]["backup_id"].as_str().unwrap().to_string();

    let list = rockup(&["list", "--repo", repo, "--json"]);
    assert_eq!(list.status.code(), Some(0));
    assert_eq!(json_of(&list)["backups"][0]["backup_id"], id.as_str());
    assert!(!stderr(&list).contains(&id), "--json: no table");
    // Without --json the table is on stdout (`rockup list | grep` works),
    // with -r for --repo, or the repository from ROCKUP_REPOSITORY (or its
    // older name ROCKUP_REPO).
    let table = rockup(&["list", "-r", repo]);
    assert!(
        String::from_utf8_lossy(&table.stdout).contains(&id),
        "table on stdout"
    );
    for variable in ["ROCKUP_REPOSITORY", "ROCKUP_REPO"] {
        let listed = rockup_command()
            .arg("list")
            .env(variable, repo)
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&listed.stdout).contains(&id),
            "{variable}"
        );
    }

    // a repository that does not exist: 6, and nothing created
    let typo = fx.path("typo");
    let missing_repo = rockup(&["list", "--repo", typo.to_str().unwrap(), "--json"]);
    assert_eq!(
        missing_repo.status.code(),
        Some(6),
        "{}",
        stderr(&missing_repo)
    );
    assert!(error_of(&missing_repo)["error"]
        .as_str()
        .unwrap()
        .contains("rockup init"));
    assert!(!typo.exists(), "list created no directory");

    // restore without --blob-root: usage
    let target = fx.path("restored");
    let db_dir = target.join("db");
    let no_root = rockup(&[
        "restore",
        "--repo",
        repo,
        "--db-dir",
        db_dir.to_str().unwrap(),
    ]);
    assert_eq!(no_root.status.code(), Some(2), "{}", stderr(&no_root));
    let restored = rockup(&[
        "restore",
        "--repo",
        repo,
        "--backup",
        &id,
        "--db-dir",
        db_dir.to_str().unwrap(),
        "--blob-root",
        target.join("files").to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(restored.status.code(), Some(0), "{}", stderr(&restored));
    assert_eq!(json_of(&restored)["references_checked"], 5);
    assert_eq!(read_all(&fx.db), read_all(&db_dir));

    // problems: 3 (not committed), and with --allow-missing-blobs (committed)
    std::fs::remove_file(fx.files.join("d2/f-2.bin")).unwrap();
    let mut args = vec!["backup", "--repo", repo, "--db", db, "--json"];
    args.extend(blob_args.iter().map(String::as_str));
    let problems = rockup(&args);
    assert_eq!(problems.status.code(), Some(3), "{}", stderr(&problems));
    let doc = error_of(&problems);
    assert_eq!(doc["problems"][0]["path"], "d2/f-2.bin");
    assert_eq!(doc["problems"][0]["record_key"], "file:000002");
    args.push("--allow-missing-blobs");
    let allowed = rockup(&args);
    assert_eq!(allowed.status.code(), Some(3));
    assert_eq!(json_of(&allowed)["problems"][0]["kind"], "missing");
    assert_eq!(
        json_of(&rockup(&["list", "--repo", repo, "--json"]))["backups"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // verify: 0 when intact, 3 when an object is gone
    assert_eq!(
        rockup(&["verify", "--repo", repo, "--backup", "all", "--deep"])
            .status
            .code(),
        Some(0)
    );
    let pack = walkdir::WalkDir::new(fx.path("repo/packs"))
        .into_iter()
        .map(|e| e.unwrap())
        .find(|e| e.file_type().is_file())
        .unwrap();
    std::fs::remove_file(pack.path()).unwrap();
    let broken = rockup(&["verify", "--repo", repo, "--json"]);
    assert_eq!(broken.status.code(), Some(3));
    assert_eq!(error_of(&broken)["problems"][0]["kind"], "missing_object");
}

#[test]
fn sigterm_mid_backup_exits_143_and_removes_the_work_directory() {
    signal_mid_backup(libc::SIGTERM);
}

#[test]
fn sighup_and_sigquit_are_handled_like_sigterm() {
    signal_mid_backup(libc::SIGHUP);
    signal_mid_backup(libc::SIGQUIT);
}

/// Sends `signal` to a backup in the middle of pinning: it exits 143 having
/// removed its work directory and its lock, commits nothing, and says so in
/// its metrics file.
fn signal_mid_backup(signal: i32) {
    let fx = Fixture::new(3000);
    let work = fx.path("work");
    let repo = fx.path("repo");
    let metrics = fx.path("backup.prom");
    let mut child = rockup_command()
        .args([
            "backup",
            "--repo",
            repo.to_str().unwrap(),
            "--db",
            fx.db.to_str().unwrap(),
            "--jobs",
            "1",
        ])
        .args([
            "--blob-root",
            fx.files.to_str().unwrap(),
            "--blob-cf",
            "files",
            "--blob-ref",
            "json:/path",
        ])
        .args(["--work-dir", work.to_str().unwrap()])
        .args(["--metrics-file", metrics.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the backup is pinning files (from its pre-links, into the
    // `pinned` spool), i.e. in the middle of its work.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let pinning = || {
        entries(&work)
            .iter()
            .any(|run| work.join(run).join("pinned").exists())
    };
    while !pinning() {
        assert!(
            std::time::Instant::now() < deadline,
            "backup never started pinning"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "backup ended before it could be interrupted"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, signal) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{}", stderr(&out));
    assert!(entries(&repo.join("locks")).is_empty(), "lock removed");
    let metrics = std::fs::read_to_string(&metrics).unwrap();
    let exit_code = metrics
        .lines()
        .find(|l| l.starts_with("rockup_last_exit_code{"))
        .unwrap_or_else(|| panic!("exit code in the metrics: {metrics}"));
    assert!(exit_code.ends_with(" 143"), "{exit_code}");
    assert!(
        !metrics.contains("rockup_last_success_timestamp_seconds{"),
        "no success yet: {metrics}"
    );
    assert!(
        entries(&work).is_empty(),
        "work directory removed: {:?}",
        entries(&work)
    );
    assert!(
        json_of(&rockup(&[
            "list",
            "--repo",
            repo.to_str().unwrap(),
            "--json"
        ]))["backups"]
            .as_array()
            .unwrap()
            .is_empty(),
        "nothing committed"
    );
}

#[tokio::test]
async fn prune_and_unlock() {
    let fx = Fixture::new(3);
    let repo = fx.local_repo();
    for _ in 0..2 {
        rockup::backup(&repo, rockup::Source::Db(fx.db.clone()), &fx.options())
            .await
            .unwrap();
    }
    let url = fx.path("repo").display().to_string();
    let out = rockup(&["prune", "--repo", &url, "--json"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "no retention rule: {}",
        stderr(&out)
    );
    assert!(error_of(&out)["error"]
        .as_str()
        .unwrap()
        .contains("--keep-last"));

    // A lock left by a killed backup blocks prune until `unlock` removes it.
    leave_backup_lock(&repo, "killed").await;
    let out = rockup(&["prune", "--repo", &url, "--keep-last", "1", "--grace", "0s"]);
    assert_eq!(out.status.code(), Some(7), "locked");
    assert!(stderr(&out).contains("rockup unlock"), "{}", stderr(&out));
    let out = rockup(&["unlock", "--repo", &url, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json_of(&out)["removed"].as_array().unwrap().len(), 1);

    let out = rockup(&[
        "prune",
        "--repo",
        &url,
        "--keep-last",
        "1",
        "--grace",
        "0s",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = json_of(&out);
    assert_eq!(report["forgotten"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(rockup::list(&repo).await.unwrap().len(), 1);
}

#[test]
fn help_never_shows_environment_values() {
    let out = rockup_command()
        .args(["list", "--help"])
        .env("ROCKUP_REPO", "az://c/p?sv=2024&sig=SECRET-TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("ROCKUP_REPO"), "{help}");
    assert!(!help.contains("SECRET-TOKEN"), "{help}");
}

#[test]
fn sources_on_the_command_line() {
    let (a, b) = (Fixture::new(3), Fixture::new(3));
    let repo = a.path("repo");
    let url = repo.to_str().unwrap();
    let work = a.path("work");
    for (fx, name) in [(&a, "app-a"), (&b, "app-b")] {
        let mut args = vec!["backup", "--repo", url, "--db", fx.db.to_str().unwrap()];
        args.extend(["--source", name, "--work-dir", work.to_str().unwrap()]);
        let blobs = blob_args(&fx.files);
        args.extend(blobs.iter().map(String::as_str));
        let out = rockup(&args);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let out = rockup(&["list", "--repo", url, "--source", "app-b", "--json"]);
    let rows = json_of(&out)["backups"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["source"], "app-b");
    let target = a.path("restored");
    let db = target.join("db");
    let files = target.join("files");
    let restore = |source: Option<&str>| {
        let mut args = vec!["restore", "--repo", url, "--db-dir", db.to_str().unwrap()];
        args.extend(["--blob-root", files.to_str().unwrap()]);
        args.extend(source.map(|s| ["--source", s]).into_iter().flatten());
        rockup(&args)
    };
    let out = restore(None);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("app-a, app-b"), "{}", stderr(&out));
    let out = restore(Some("app-b"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(read_all(&db), read_all(&b.db));
}

/// A host whose clock runs two days ahead (libfaketime): prune refuses and
/// deletes nothing — not even a 1-second-old leftover a wrong clock would take
/// for older than the 24 h grace; a backup warns and still commits.
#[tokio::test]
async fn a_host_with_a_skewed_clock_never_prunes() {
    let faketime = std::path::Path::new("/usr/bin/faketime");
    assert!(
        faketime.exists(),
        "this test needs faketime (apt-get install faketime; scripts/test.sh installs it)"
    );
    let fx = Fixture::new(3);
    let repo = fx.local_repo();
    rockup::backup(&repo, rockup::Source::Db(fx.db.clone()), &fx.options())
        .await
        .unwrap();
    let leftover = blob_key("ee".repeat(32));
    put_object(&repo, &leftover, &b"of a backup still running"[..]).await;
    let url = fx.path("repo");
    let skewed = |args: &[&str]| {
        Command::new(faketime)
            .args(["-f", "+2d", env!("CARGO_BIN_EXE_rockup")])
            .args(args)
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .output()
            .unwrap()
    };
    let out = skewed(&[
        "prune",
        "--repo",
        url.to_str().unwrap(),
        "--keep-last",
        "1",
        "--grace",
        "24h",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("clock"), "{}", stderr(&out));
    assert!(
        get_object(&repo, &leftover).await.is_some(),
        "nothing deleted"
    );
    assert!(
        list_keys(&repo, "locks").await.is_empty(),
        "its lock removed"
    );

    let mut backup = vec![
        "backup",
        "--repo",
        url.to_str().unwrap(),
        "--db",
        fx.db.to_str().unwrap(),
    ];
    let work = fx.path("work");
    backup.extend(["--work-dir", work.to_str().unwrap()]);
    let blobs = blob_args(&fx.files);
    backup.extend(blobs.iter().map(String::as_str));
    let out = skewed(&backup);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("store's"), "warned: {}", stderr(&out));
}

#[test]
fn copy_on_the_command_line() {
    let fx = Fixture::new(3);
    let (from, to) = (fx.path("first"), fx.path("second"));
    let mut args = vec![
        "backup",
        "--repo",
        from.to_str().unwrap(),
        "--db",
        fx.db.to_str().unwrap(),
    ];
    let work = fx.path("work");
    args.extend(["--work-dir", work.to_str().unwrap()]);
    let blobs = blob_args(&fx.files);
    args.extend(blobs.iter().map(String::as_str));
    assert_eq!(rockup(&args).status.code(), Some(0));
    let copy = |what: &str| {
        let (from, to) = (from.to_str().unwrap(), to.to_str().unwrap());
        rockup(&[
            "copy", "--from", from, "--to", to, "--backup", what, "--json",
        ])
    };
    let out = copy("all");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json_of(&out)["copied"].as_array().unwrap().len(), 1);
    let out = rockup(&[
        "verify",
        "--repo",
        to.to_str().unwrap(),
        "--backup",
        "all",
        "--deep",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        json_of(&copy("latest"))["present"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}
