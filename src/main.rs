//! The `rockup` binary: parse arguments, set up logging, run one command of the
//! library under SIGINT/SIGTERM handling, print the result (human text on stderr,
//! or one JSON document on stdout with --json), and exit with the documented code:
//! 0 clean, 1 operational error, 2 usage, 3 problems found, 130/143 interrupted.

use std::path::PathBuf;

use clap::Parser;
use serde_json::{json, Value};
use tokio::signal::unix::{signal, SignalKind};

use rockup::cli::{Cli, Command};
use rockup::{Error, Repository, Source};

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            if code != 0 && std::env::args().any(|a| a == "--json") {
                let message = e.kind().to_string();
                println!(
                    "{}",
                    json!({"error": format!("usage: {message}"), "exit_code": code})
                );
            }
            std::process::exit(code);
        }
    };
    init_tracing(cli.verbose);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime starts");
    let json = cli.json;
    let result = runtime.block_on(run_until_signal(cli.command));
    if matches!(result, Err(Error::Interrupted(_))) {
        // Let cancelled work finish cleaning up: multipart aborts (spawned tasks)
        // and blocking tasks that share the work directory, which is removed
        // when the last of them lets go.
        runtime.block_on(async { tokio::time::sleep(std::time::Duration::from_millis(200)).await });
        runtime.shutdown_timeout(std::time::Duration::from_secs(30));
    }
    let code = match result {
        Ok((value, code)) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&value).expect("JSON output")
                );
            }
            code
        }
        Err(error) => {
            eprintln!("rockup: error: {error}");
            if let Error::Problems { problems, .. } = &error {
                for problem in problems.iter().take(50) {
                    eprintln!("  {problem}");
                }
                if problems.len() > 50 {
                    eprintln!("  … and {} more", problems.len() - 50);
                }
            }
            if json {
                let mut doc = json!({"error": error.to_string(), "exit_code": error.exit_code()});
                if let Error::Problems { problems, .. } = &error {
                    doc["problems"] = json!(problems);
                }
                println!(
                    "{}",
                    serde_json::to_string_pretty(&doc).expect("JSON output")
                );
            }
            error.exit_code()
        }
    };
    std::process::exit(code);
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "rockup=info,warn",
        1 => "rockup=debug,info",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

async fn run_until_signal(command: Command) -> rockup::Result<(Value, i32)> {
    let mut interrupt = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        result = run(command) => result,
        _ = interrupt.recv() => Err(Error::Interrupted("SIGINT")),
        _ = terminate.recv() => Err(Error::Interrupted("SIGTERM")),
    }
}

fn repository(args: &rockup::cli::RepoArgs) -> rockup::Result<Repository> {
    Repository::open(&args.repo, &args.store_options)
}

async fn run(command: Command) -> rockup::Result<(Value, i32)> {
    match command {
        Command::Backup(args) => {
            let repo = repository(&args.repo)?;
            let options = args.options()?;
            let source = match (&args.db, &args.checkpoint) {
                (Some(db), _) => Source::Db(db.clone()),
                (None, Some(path)) => Source::Checkpoint {
                    path: path.clone(),
                    options: None,
                },
                (None, None) => unreachable!("clap requires --db or --checkpoint"),
            };
            let report = rockup::backup(&repo, source, &options).await?;
            let h = &report.header;
            eprintln!(
                "backup {} committed: sequence {}, {} DB files ({} bytes), {} external files ({} bytes); uploaded {} objects, {} bytes",
                h.backup_id, h.sequence_number, h.stats.db_files, h.stats.db_bytes, h.stats.external_files,
                h.stats.external_bytes, h.stats.uploaded_objects, h.stats.uploaded_bytes
            );
            for problem in &report.problems {
                eprintln!("  recorded problem: {problem}");
            }
            let code = if report.problems.is_empty() { 0 } else { 3 };
            Ok((
                serde_json::to_value(&report).expect("report serializes"),
                code,
            ))
        }
        Command::List(args) => {
            let repo = repository(&args)?;
            let rows = rockup::list(&repo).await?;
            eprintln!(
                "{:<26} {:<20} {:>12} {:>7} {:>13} {:>13}  source / tags",
                "backup", "created", "sequence", "files", "bytes", "new bytes"
            );
            for row in &rows {
                match &row.header {
                    Some(h) => {
                        let tags: Vec<String> =
                            h.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        eprintln!(
                            "{:<26} {:<20} {:>12} {:>7} {:>13} {:>13}  {}:{} {}{}",
                            h.backup_id,
                            h.created_at.format("%Y-%m-%d %H:%M:%S"),
                            h.sequence_number,
                            h.stats.db_files + h.stats.external_files,
                            h.stats.db_bytes + h.stats.external_bytes,
                            h.stats.uploaded_bytes,
                            h.source.host,
                            h.source.path,
                            tags.join(","),
                            if h.problem_count > 0 {
                                format!(" ({} problems)", h.problem_count)
                            } else {
                                String::new()
                            }
                        );
                    }
                    None => eprintln!(
                        "{:<26} unreadable: {}",
                        row.backup_id,
                        row.error.as_deref().unwrap_or("")
                    ),
                }
            }
            Ok((json!({"backups": rows}), 0))
        }
        Command::Restore(args) => {
            let repo = repository(&args.repo)?;
            let report = rockup::restore(&repo, &args.options()).await?;
            eprintln!(
                "restored backup {} (sequence {}): {} DB files, {} external files into {}; {} references checked",
                report.backup_id, report.sequence_number, report.db_files, report.external_files,
                args.db_dir.display(), report.references_checked
            );
            if report.known_problems > 0 {
                eprintln!(
                    "  the backup recorded {} reference(s) it could not capture",
                    report.known_problems
                );
            }
            Ok((serde_json::to_value(&report).expect("report serializes"), 0))
        }
        Command::Verify(args) => {
            let repo = repository(&args.repo)?;
            let report = rockup::verify(&repo, &args.options())
                .await?
                .into_result()?;
            eprintln!(
                "verified {} backup(s): {} objects, {} bytes{}; no problems",
                report.backups.len(),
                report.objects,
                report.bytes,
                if args.deep { ", re-hashed" } else { "" }
            );
            Ok((serde_json::to_value(&report).expect("report serializes"), 0))
        }
        Command::Prune(args) => {
            let repo = repository(&args.repo)?;
            let report = rockup::prune::prune(&repo, &args.options()).await?;
            let (verb, deleted) = match report.dry_run {
                true => ("would forget", "would delete"),
                false => ("forgot", "deleted"),
            };
            eprintln!(
                "kept {} backup(s), {verb} {}; {deleted} {} unreferenced objects ({} bytes); {} younger than --grace left",
                report.kept.len(),
                report.forgotten.len(),
                report.deleted_objects,
                report.deleted_bytes,
                report.young_unreferenced
            );
            for id in &report.forgotten {
                eprintln!("  {verb} {id}");
            }
            Ok((serde_json::to_value(&report).expect("report serializes"), 0))
        }
        Command::Unlock(args) => {
            let repo = repository(&args)?;
            let removed = rockup::lock::unlock(&repo).await?;
            for lock in &removed {
                eprintln!("removed {lock}");
            }
            eprintln!("{} lock(s) removed", removed.len());
            let keys: Vec<&str> = removed.iter().map(|l| l.key.as_str()).collect();
            Ok((serde_json::json!({ "removed": keys }), 0))
        }
        Command::Demo(args) => {
            let dir = match args.dir {
                Some(dir) => dir,
                None => tempfile::Builder::new()
                    .prefix("rockup-demo-")
                    .tempdir()
                    .map_err(|source| Error::Io {
                        path: std::env::temp_dir(),
                        source,
                    })?
                    .keep(),
            };
            let report = rockup::demo::demo(&dir).await?;
            eprintln!("demo complete in {}", PathBuf::from(&report.dir).display());
            Ok((serde_json::to_value(&report).expect("report serializes"), 0))
        }
    }
}
