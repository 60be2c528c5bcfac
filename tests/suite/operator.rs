//! The habits of backup operators, on the command line: quiet runs for
//! cron, logs kept in a file, shell completions and man pages.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::cli::{rockup, stderr};
use super::fixture::*;

/// A backup's arguments for `fx`, into `repo`.
fn backup_args(fx: &Fixture, repo: &str) -> Vec<String> {
    let work = fx.path("work");
    let args = ["backup", "-r", repo, "--db", fx.db.to_str().unwrap()];
    let mut args: Vec<String> = args.into_iter().map(String::from).collect();
    args.extend(["--work-dir".into(), work.display().to_string()]);
    args.extend(blob_args(&fx.files));
    args
}

fn run(args: &[String]) -> std::process::Output {
    rockup(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn quiet_runs_say_nothing_and_the_log_file_keeps_the_record() {
    let fx = Fixture::new(4);
    let repo = fx.path("repo");
    let log = fx.path("rockup.log");
    let mut args = backup_args(&fx, repo.to_str().unwrap());
    args.extend(["-q".into(), "--log-file".into(), log.display().to_string()]);
    let out = run(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stderr.is_empty(), "quiet: {}", stderr(&out));
    assert!(out.stdout.is_empty());
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("committed id="), "{logged}");
    assert!(!logged.contains("\x1b["), "no colours in the file");
    let mode = std::fs::metadata(&log).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // Appended, never replaced; a summary without -q.
    let args: Vec<String> = args.into_iter().filter(|a| a != "-q").collect();
    let out = run(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("backup "), "{}", stderr(&out));
    let again = std::fs::read_to_string(&log).unwrap();
    assert!(again.starts_with(&logged) && again.len() > logged.len());
}

#[test]
fn a_symlinked_log_file_is_refused() {
    let fx = Fixture::new(1);
    let target = fx.path("elsewhere");
    std::fs::write(&target, "keep me").unwrap();
    let log = fx.path("rockup.log");
    std::os::unix::fs::symlink(&target, &log).unwrap();
    let repo = fx.path("repo");
    let mut args = backup_args(&fx, repo.to_str().unwrap());
    args.extend(["--log-file".into(), log.display().to_string()]);
    let out = run(&args);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("rockup.log"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
    assert!(!repo.exists(), "nothing ran");
}

#[test]
fn completions_and_man_pages_come_from_the_binary() {
    for (shell, marker) in [
        ("bash", "_rockup()"),
        ("zsh", "#compdef rockup"),
        ("fish", "complete -c rockup"),
    ] {
        let out = rockup(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains(marker), "{shell}: {script:.200}");
        assert!(
            script.contains("read-data-subset"),
            "{shell} knows verify's flags"
        );
    }
    completes_in_bash();
    let page = rockup(&["man"]);
    assert_eq!(page.status.code(), Some(0));
    let page = String::from_utf8(page.stdout).unwrap();
    assert!(
        page.starts_with(".ie") || page.contains(".TH rockup"),
        "{page:.200}"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = rockup(&["man", "--out", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let backup = std::fs::read_to_string(dir.path().join("rockup-backup.1")).unwrap();
    assert!(backup.contains("blob\\-root"), "{backup:.300}");
    assert!(rockup(&["completions", "tcsh"]).status.code() == Some(2));
}

/// Loads the bash completions into bash and completes `rockup verify
/// --read-d` with them.
fn completes_in_bash() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("rockup.bash");
    std::fs::write(&script, rockup(&["completions", "bash"]).stdout).unwrap();
    let complete = r#"source "$1" && complete -p rockup >/dev/null &&
        COMP_WORDS=(rockup verify --read-d) && COMP_CWORD=2 &&
        COMP_LINE="rockup verify --read-d" && COMP_POINT=${#COMP_LINE} &&
        _rockup rockup --read-d verify && printf '%s\n' "${COMPREPLY[@]}""#;
    let out = std::process::Command::new("bash")
        .args(["-c", complete, "bash"])
        .arg(&script)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let offered = String::from_utf8(out.stdout).unwrap();
    assert_eq!(offered.trim(), "--read-data-subset", "{offered}");
}

/// The value of the metric line starting with `name{` in Prometheus text.
fn metric(text: &str, name: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .unwrap_or_else(|| panic!("no {name} in {text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Parses `file` with the Prometheus project's own Python parser
/// (`prometheus_client`, installed by scripts/test.sh): every family is
/// rockup's and has a sample, one HELP per name.
fn check_with_prometheus_parser(file: &Path) {
    let Ok(python) = std::env::var("ROCKUP_TEST_PYTHON") else {
        eprintln!(
            "metrics parser check SKIPPED: ROCKUP_TEST_PYTHON unset (scripts/test.sh sets it)"
        );
        return;
    };
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(open(sys.argv[1]).read()):
    print(family.name, family.type, len(family.samples))
"#;
    let out = std::process::Command::new(python)
        .args(["-c", script])
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let families = String::from_utf8(out.stdout).unwrap();
    let names: Vec<&str> = families
        .lines()
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert!(
        names.contains(&"rockup_last_success_timestamp_seconds"),
        "{families}"
    );
    assert!(names.contains(&"rockup_last_requests"), "{families}");
    for line in families.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        assert!(
            fields[0].starts_with("rockup_") && fields[1] == "gauge",
            "{line}"
        );
        assert_ne!(fields[2], "0", "{line}: a family without samples");
    }
}

#[test]
fn metrics_files_keep_the_last_success_across_a_failure() {
    let fx = Fixture::new(3);
    let repo = fx.path("repo");
    let metrics = fx.path("rockup-backup.prom");
    let mut args = backup_args(&fx, repo.to_str().unwrap());
    args.extend(["--source".into(), "app\"1".into()]);
    args.extend(["--metrics-file".into(), metrics.display().to_string()]);
    let out = run(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let first = std::fs::read_to_string(&metrics).unwrap();
    check_with_prometheus_parser(&metrics);
    assert!(
        first.contains(r#"{command="backup",source="app\"1"}"#),
        "{first}"
    );
    assert_eq!(metric(&first, "rockup_last_exit_code"), 0.0);
    assert!(metric(&first, "rockup_last_files") >= 3.0, "{first}");
    assert!(metric(&first, "rockup_last_bytes") > 0.0);
    assert!(metric(&first, "rockup_last_requests") > 0.0);
    let succeeded = metric(&first, "rockup_last_success_timestamp_seconds");
    assert_eq!(
        succeeded,
        metric(&first, "rockup_last_run_timestamp_seconds")
    );

    // The database gone: the run fails, the last success is kept.
    std::fs::rename(&fx.db, fx.path("db-moved")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let out = run(&args);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let failed = std::fs::read_to_string(&metrics).unwrap();
    assert_eq!(metric(&failed, "rockup_last_exit_code"), 1.0);
    assert_eq!(
        metric(&failed, "rockup_last_success_timestamp_seconds"),
        succeeded
    );
    assert!(metric(&failed, "rockup_last_run_timestamp_seconds") > succeeded);
    let leftovers: Vec<_> = std::fs::read_dir(fx.path(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".rockup-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let prune_metrics = fx.path("rockup-prune.prom");
    let out = rockup(&[
        "prune",
        "-r",
        repo.to_str().unwrap(),
        "--keep-last",
        "1",
        "--metrics-file",
        prune_metrics.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let pruned = std::fs::read_to_string(&prune_metrics).unwrap();
    assert!(
        pruned.contains(r#"rockup_last_exit_code{command="prune"} 0"#),
        "{pruned}"
    );
}

/// A profile holding what `fx`'s backups need, and a retention rule.
fn write_profile(fx: &Fixture, path: &std::path::Path) {
    let profile = format!(
        r#"# app1 on this host
repository = "{repo}"
store-options = {{ aws_secret_access_key = "s3cr3t", region = "eu-west-1" }}
source = "app1"

[backup]
db = "{db}"
blob-root = "{files}"
blob-cf = "files"
blob-ref = "json:/path"
blob-key-prefix = "file:"
blob-sha256 = "json:/sha256"
tags = ["env=test", "tier=gold"]
work-dir = "{work}"

[prune]
keep-last = 1

[schedule]
backup = "daily 02:15"
"#,
        repo = fx.path("repo").display(),
        db = fx.db.display(),
        files = fx.files.display(),
        work = fx.path("work").display(),
    );
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, profile).unwrap();
}

#[test]
fn a_profile_holds_the_settings_flags_and_the_environment_override_it() {
    let fx = Fixture::new(3);
    let config = fx.path("config");
    write_profile(&fx, &config.join("rockup/app1.toml"));
    let with_profile = |args: &[&str], env: &[(&str, &str)]| {
        let mut command = super::fixture::rockup_command();
        command
            .env("XDG_CONFIG_HOME", &config)
            .args(["--profile", "app1"])
            .args(args);
        for (k, v) in env {
            command.env(k, v);
        }
        command.output().unwrap()
    };
    for _ in 0..2 {
        let out = with_profile(&["backup", "--json"], &[]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let report = super::cli::json_of(&out);
        assert_eq!(report["header"]["stats"]["external_files"], 3);
        assert_eq!(report["header"]["tags"]["tier"], "gold");
    }
    // A flag beats the profile; the environment too.
    let dry = with_profile(&["prune", "--keep-last", "2", "--dry-run", "--json"], &[]);
    assert_eq!(
        super::cli::json_of(&dry)["forgotten"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let dry = with_profile(
        &["prune", "--dry-run", "--json"],
        &[("ROCKUP_KEEP_LAST", "2")],
    );
    assert_eq!(
        super::cli::json_of(&dry)["forgotten"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let pruned = with_profile(&["prune", "--json"], &[]);
    assert_eq!(pruned.status.code(), Some(0), "{}", stderr(&pruned));
    assert_eq!(
        super::cli::json_of(&pruned)["forgotten"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let shown = with_profile(&["config", "show"], &[("ROCKUP_GRACE", "1h")]);
    assert_eq!(shown.status.code(), Some(0), "{}", stderr(&shown));
    let text = String::from_utf8(shown.stdout).unwrap();
    assert!(text.contains("app1.toml"), "{text}");
    assert!(
        text.contains("backup.blob-root") && text.contains("(profile)"),
        "{text}"
    );
    assert!(
        text.contains("prune.grace") && text.contains("(environment)"),
        "{text}"
    );
    assert!(
        text.contains("aws_secret_access_key=REDACTED") && !text.contains("s3cr3t"),
        "{text}"
    );
    assert!(text.contains("region=eu-west-1"), "{text}");
    assert!(text.contains("daily 02:15"), "{text}");
}

#[test]
fn a_wrong_profile_is_refused_by_name() {
    let fx = Fixture::new(1);
    let file = fx.path("app.toml");
    let run_with = |text: &str| {
        std::fs::write(&file, text).unwrap();
        let out = rockup(&["--profile", file.to_str().unwrap(), "list"]);
        (out.status.code(), stderr(&out))
    };
    let (code, err) = run_with("[backup]\nkeep-daily = 7\n");
    assert_eq!(code, Some(2));
    assert!(
        err.contains("backup.keep-daily") && err.contains("[prune]"),
        "{err}"
    );
    let (code, err) = run_with("repository = [1, {a = 2}]\n");
    assert_eq!(code, Some(2));
    assert!(err.contains("repository"), "{err}");
    let (code, err) = run_with("repository = \"unterminated\n");
    assert_eq!(code, Some(2));
    assert!(err.contains("app.toml"), "{err}");
    std::fs::write(&file, "repository = \"/tmp/x\"\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = rockup(&["--profile", file.to_str().unwrap(), "list"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("chmod go-w"), "{}", stderr(&out));
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = rockup(&["--profile", "no-such-profile", "list"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/etc/rockup"), "{}", stderr(&out));
    // A value the flag's parser refuses is refused as the flag would be.
    let text = format!(
        "repository = {:?}\n[prune]\nkeep-last = \"many\"\n",
        fx.path("repo")
    );
    std::fs::write(&file, text).unwrap();
    let out = rockup(&["--profile", file.to_str().unwrap(), "prune"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("many") && err.contains("keep-last"), "{err}");
}

/// The `rockup …` command lines of contrib/: every ExecStart of the systemd
/// units and every cron line, as argument lists after the binary.
fn contrib_command_lines() -> Vec<(String, Vec<String>)> {
    let contrib = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib");
    let mut lines = Vec::new();
    for entry in walkdir::WalkDir::new(&contrib) {
        let entry = entry.unwrap();
        if !entry.file_type().is_file() {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            if let Some((_, command)) = line.split_once("/usr/local/bin/rockup ") {
                let args = command.split_whitespace().map(String::from).collect();
                lines.push((entry.path().display().to_string(), args));
            }
        }
    }
    lines
}

#[test]
fn contrib_command_lines_parse() {
    let fx = Fixture::new(1);
    let profile = fx.path("app1.toml");
    std::fs::write(&profile, format!("repository = {:?}\n", fx.path("repo"))).unwrap();
    let lines = contrib_command_lines();
    assert!(lines.len() >= 6, "{lines:?}");
    for (file, args) in lines {
        let mut args: Vec<String> = args
            .into_iter()
            .map(|a| match a.as_str() {
                "%i" | "app1" => profile.display().to_string(),
                _ => a.replace("%i", "app1"),
            })
            .collect();
        args.push("--help".into());
        let out = run(&args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{file}: {args:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn contrib_systemd_units_verify() {
    let Ok(version) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        eprintln!("systemd-analyze is not installed here: the units were not verified");
        return;
    };
    assert!(version.status.success());
    let units = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd");
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&units).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text.replace("/usr/local/bin/rockup", env!("CARGO_BIN_EXE_rockup"));
        std::fs::write(dir.path().join(path.file_name().unwrap()), text).unwrap();
    }
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let out = std::process::Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&path)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && said.trim().is_empty(),
            "{}: {said}",
            path.display()
        );
    }
}

#[test]
fn forget_on_the_command_line() {
    let fx = Fixture::new(2);
    let repo = fx.path("repo");
    let url = repo.to_str().unwrap();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let mut args = backup_args(&fx, url);
        args.push("--json".into());
        let out = run(&args);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let id = super::cli::json_of(&out)["header"]["backup_id"]
            .as_str()
            .unwrap()
            .to_string();
        ids.push(id);
    }
    assert_eq!(
        rockup(&["forget", "-r", url]).status.code(),
        Some(2),
        "needs ids"
    );
    let out = rockup(&["forget", "-r", url, &ids[0], "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(super::cli::json_of(&out)["forgotten"][0], ids[0].as_str());
    let listed = super::cli::json_of(&rockup(&["list", "-r", url, "--json"]));
    let left: Vec<&str> = listed["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["backup_id"].as_str().unwrap())
        .collect();
    assert_eq!(left, [ids[1].as_str()]);
    let again = rockup(&["forget", "-r", url, &ids[0]]);
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    assert!(stderr(&again).contains(&ids[0]), "{}", stderr(&again));
}

#[test]
fn copy_keeps_to_its_upload_limit() {
    let fx = Fixture::new(20);
    let repo = fx.path("repo");
    let out = run(&backup_args(&fx, repo.to_str().unwrap()));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let target = fx.path("copy");
    let rate = 16 * 1024;
    let started = std::time::Instant::now();
    let out = rockup(&[
        "copy",
        "--from",
        repo.to_str().unwrap(),
        "--to",
        target.to_str().unwrap(),
        "--limit-upload",
        "16K",
        "--json",
    ]);
    let took = started.elapsed().as_secs_f64();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // What was sent: the objects the target now holds (compressed, so
    // fewer bytes than the report's bytes_copied).
    let stored = walkdir::WalkDir::new(&target)
        .into_iter()
        .map(|e| e.unwrap());
    let stored: Vec<u64> = stored
        .filter(|e| e.file_type().is_file())
        .map(|e| e.metadata().unwrap().len())
        .collect();
    let (sent, largest) = (
        stored.iter().sum::<u64>() as f64,
        *stored.iter().max().unwrap() as f64,
    );
    assert!(
        sent - largest > rate as f64 / 2.0,
        "a copy worth pacing: {stored:?}"
    );
    // Every transfer waits for its slot: all but the last are paced.
    let paced = (sent - largest) / rate as f64;
    assert!(
        took >= paced * 0.9,
        "{sent} bytes in {took:.2} s at {rate} bytes/s"
    );
}
