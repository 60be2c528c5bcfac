//! One function per subcommand: open the repository, call the library, print a
//! human summary on stderr, and return the JSON document and the exit code.

use std::path::PathBuf;

use serde::Serialize;
use serde_json::{json, Value};

use crate::args::{
    BackupArgs, Command, CopyArgs, ListArgs, RepoArgs, RestoreArgs, UnlockArgs, VerifyArgs,
};
use crate::demo;
use crate::inspect;
use crate::keys;
use crate::metrics::Run;
use crate::output::say;
use crate::progress::{self, Display};
use crate::secrets::Prompt;
use rockup::{
    escape_controls, BackupReport, Error, ListedBackup, PruneOptions, Repository, Result, Source,
    Traffic,
};

/// Runs one command; returns its JSON document (null when it streamed its
/// output itself) and exit code.
pub async fn run(command: Command, display: Display, json: bool) -> Result<(Value, i32)> {
    match command {
        Command::Init(args) => keys::init(args).await,
        Command::Key(args) => keys::key(args).await,
        Command::Backup(args) => backup(args, display).await,
        Command::Follow(_) => unreachable!("main runs follow under its own signal handling"),
        Command::Config(_) => unreachable!("main shows the settings it loaded"),
        Command::List(args) => list(args, json).await,
        Command::Ls(args) => inspect::ls(args, json).await,
        Command::Find(args) => inspect::find(args, json).await,
        Command::Diff(args) => inspect::diff(args, json).await,
        Command::Dump(args) => inspect::dump(args, json).await,
        Command::Restore(args) => restore(args, display).await,
        Command::Verify(args) => verify(args, display).await,
        Command::Prune(args) => prune(&args.repo, args.options(), display).await,
        Command::Forget(args) => prune(&args.repo, args.options(), display).await,
        Command::Unlock(args) => unlock(args).await,
        Command::Copy(args) => copy(args).await,
        Command::Demo(args) => demo(args.dir).await,
        Command::Completions(args) => crate::generate::completions(args),
        Command::Man(args) => crate::generate::man(args),
    }
}

/// The measurement of `command`'s run for `--metrics-file`, for the commands
/// that take it; started outside the command so that a run a signal ends is
/// recorded too.
pub fn measured(command: &Command) -> Option<Run> {
    let (name, file, source) = match command {
        Command::Backup(a) => {
            let source = a.source.as_deref().or(a.source_path());
            ("backup", a.metrics_file.as_deref(), source)
        }
        Command::Verify(a) => (
            "verify",
            a.metrics_file.as_deref(),
            a.which.source.as_deref(),
        ),
        Command::Prune(a) => (
            "prune",
            a.collect.metrics_file.as_deref(),
            a.source.as_deref(),
        ),
        Command::Forget(a) => ("forget", a.collect.metrics_file.as_deref(), None),
        Command::Copy(a) => ("copy", a.metrics_file.as_deref(), a.source.as_deref()),
        _ => return None,
    };
    Some(Run::start(name, file, source))
}

/// The repository `args` name, with its secrets; `prompt` says whether a
/// missing passphrase is asked for on the terminal.
/// The repository `args` name, which must exist.
pub fn repository(args: &RepoArgs, prompt: Prompt) -> Result<Repository> {
    opened(
        args,
        prompt,
        Repository::open_existing(&args.repo, &args.store_options)?,
    )
}

/// The repository `args` name, its local directory created if missing
/// (`init`, and the commands that create a plaintext repository on their
/// first write: backup, follow, copy's target).
pub fn repository_to_create(args: &RepoArgs, prompt: Prompt) -> Result<Repository> {
    opened(
        args,
        prompt,
        Repository::open(&args.repo, &args.store_options)?,
    )
}

fn opened(args: &RepoArgs, prompt: Prompt, repo: Repository) -> Result<Repository> {
    let credentials = args.secrets().credentials(prompt)?;
    let repo = repo.with_credentials(credentials);
    Ok(limited(repo, args.rates.limiter()))
}

/// `repo`, paced by `limits` if they set any rate.
fn limited(repo: Repository, limits: rockup::RateLimiter) -> Repository {
    match limits.is_unlimited() {
        true => repo,
        false => repo.with_rate_limits(limits),
    }
}

pub fn print_traffic(traffic: &Traffic) {
    let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
    say!(
        "  requests: {} PUT, {} GET, {} HEAD, {} LIST, {} DELETE; {:.1} MiB sent, {:.1} MiB received",
        traffic.put, traffic.get, traffic.head, traffic.list, traffic.delete,
        mib(traffic.uploaded_bytes), mib(traffic.downloaded_bytes)
    );
}

pub fn document(report: &impl Serialize) -> Value {
    serde_json::to_value(report).expect("report serializes")
}

async fn backup(args: BackupArgs, display: Display) -> Result<(Value, i32)> {
    let repo = match args.dry_run {
        true => repository(&args.repo, Prompt::Once)?,
        false => repository_to_create(&args.repo, Prompt::Once)?,
    };
    let shown = progress::show(repo.progress(), display);
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
    drop(shown);
    print_backup(&report, args.dry_run);
    let code = if report.problems.is_empty() { 0 } else { 3 };
    Ok((document(&report), code))
}

fn print_backup(report: &BackupReport, dry_run: bool) {
    let h = &report.header;
    let (done, uploaded) = match dry_run {
        true => ("dry run, nothing written", "would upload"),
        false => ("committed", "uploaded"),
    };
    say!(
        "backup {} {done}: sequence {}, {} DB files ({} bytes), {} external files ({} bytes); {uploaded} {} objects, {} bytes",
        h.backup_id, h.sequence_number, h.stats.db_files, h.stats.db_bytes, h.stats.external_files,
        h.stats.external_bytes, h.stats.uploaded_objects, h.stats.uploaded_bytes
    );
    print_traffic(&report.traffic);
    for problem in &report.problems {
        // Warnings, shown under --quiet too (it exits 3 for them).
        tracing::warn!("recorded problem: {problem}");
    }
}

/// Backups grouped by source (oldest first within each); unreadable ones last.
async fn list(args: ListArgs, json: bool) -> Result<(Value, i32)> {
    let repo = repository(&args.repo, Prompt::Once)?;
    let mut rows = rockup::list(&repo).await?;
    if let Some(source) = &args.source {
        rows.retain(|row| row.source.as_ref() == Some(source));
    }
    rows.sort_by(|a, b| (a.source.is_none(), &a.source).cmp(&(b.source.is_none(), &b.source)));
    let mut ranges = rockup::restorable(&repo).await?;
    ranges.retain(|range| {
        range.segments > 0 && args.source.as_ref().is_none_or(|s| range.source == *s)
    });
    if !json {
        crate::inspect::print_lines(&table(&rows, &ranges))?;
    }
    Ok((json!({"backups": rows, "restorable": ranges}), 0))
}

/// The backups and restorable ranges as a table.
fn table(rows: &[ListedBackup], ranges: &[rockup::Restorable]) -> Vec<String> {
    let mut lines = vec![format!(
        "{:<26} {:<20} {:>12} {:>7} {:>13} {:>13}  host:path / tags",
        "backup", "created", "sequence", "files", "bytes", "new bytes"
    )];
    let mut current = None;
    for row in rows {
        if row.source.is_some() && row.source != current {
            current = row.source.clone();
            let source = current.as_deref().unwrap_or_default();
            lines.push(format!("source {}", escape_controls(source)));
        }
        lines.push(listed(row));
    }
    if !ranges.is_empty() {
        lines.push(
            "restorable to any point (rockup follow; restore --to-sequence/--to-time):".into(),
        );
    }
    for r in ranges {
        lines.push(format!(
            "  source {}: sequence {}..={} ({} .. {}), base {}, {} segment(s)",
            escape_controls(&r.source),
            r.first_sequence,
            r.last_sequence,
            r.from_time.format("%Y-%m-%d %H:%M:%S"),
            r.to_time.format("%Y-%m-%d %H:%M:%S%.3f"),
            r.base,
            r.segments
        ));
    }
    lines
}

fn listed(row: &ListedBackup) -> String {
    let Some(h) = &row.header else {
        let error = row.error.as_deref().unwrap_or("");
        return format!("{:<26} unreadable: {error}", row.backup_id);
    };
    let tags: Vec<String> = h.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let problems = match h.problem_count {
        0 => String::new(),
        n => format!(" ({n} problems)"),
    };
    format!(
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
        problems
    )
}

async fn restore(args: RestoreArgs, display: Display) -> Result<(Value, i32)> {
    let repo = repository(&args.repo, Prompt::Once)?;
    let shown = progress::show(repo.progress(), display);
    let report = rockup::restore(&repo, &args.options()).await?;
    drop(shown);
    let into = [&args.db_dir, &args.blob_root]
        .into_iter()
        .flatten()
        .map(|dir| dir.display().to_string())
        .collect::<Vec<_>>()
        .join(" and ");
    say!(
        "restored backup {} (sequence {}): {} DB files, {} external files into {into}; {} references checked",
        report.backup_id, report.sequence_number, report.db_files, report.external_files,
        report.references_checked
    );
    print_traffic(&report.traffic);
    if report.known_problems > 0 {
        say!(
            "  the backup recorded {} reference(s) it could not capture",
            report.known_problems
        );
    }
    for problem in &report.unrestorable {
        tracing::warn!("not restored (the backup could not capture it): {problem}");
    }
    Ok((document(&report), 0))
}

async fn verify(args: VerifyArgs, display: Display) -> Result<(Value, i32)> {
    let repo = repository(&args.repo, Prompt::Once)?;
    let shown = progress::show(repo.progress(), display);
    let report = rockup::verify(&repo, &args.options())
        .await?
        .into_result()?;
    drop(shown);
    say!(
        "verified {} backup(s): {} objects, {} bytes; {} objects ({} bytes) read and re-hashed; no problems",
        report.backups.len(),
        report.objects,
        report.bytes,
        report.read_objects,
        report.read_bytes,
    );
    print_traffic(&report.traffic);
    Ok((document(&report), 0))
}

async fn prune(repo: &RepoArgs, options: PruneOptions, display: Display) -> Result<(Value, i32)> {
    let repo = repository(repo, Prompt::Once)?;
    let shown = progress::show(repo.progress(), display);
    let report = rockup::prune(&repo, &options).await?;
    drop(shown);
    let (verb, deleted) = match report.dry_run {
        true => ("would forget", "would delete"),
        false => ("forgot", "deleted"),
    };
    say!(
        "kept {} backup(s), {verb} {}; {deleted} {} unreferenced objects ({} bytes); {} younger than --grace left",
        report.kept.len(),
        report.forgotten.len(),
        report.deleted_objects,
        report.deleted_bytes,
        report.young_unreferenced
    );
    let repack = &report.repack;
    if repack.packs_repacked > 0 {
        let repacked = if report.dry_run {
            "would repack"
        } else {
            "repacked"
        };
        say!(
            "  {repacked} {} pack(s) of {} bytes, their live entries re-uploaded in {} bytes",
            repack.packs_repacked,
            repack.bytes_repacked,
            repack.bytes_uploaded
        );
    }
    for damaged in &repack.damaged_entries {
        say!("  kept a pack with a damaged entry (`rockup verify --deep` names it): {damaged}");
    }
    print_traffic(&report.traffic);
    for id in &report.forgotten {
        say!("  {verb} {id}");
    }
    for lock in &report.stale_locks_removed {
        say!("  removed {lock}: its lease had run out");
    }
    if report.foreign_objects > 0 {
        say!(
            "  left {} object(s) that are not rockup's (not in its layout)",
            report.foreign_objects
        );
    }
    Ok((document(&report), 0))
}

async fn copy(args: CopyArgs) -> Result<(Value, i32)> {
    let (from_secrets, to_secrets) = args.secrets();
    let limits = args.rates.limiter();
    let from = Repository::open_existing(&args.from, &args.store_options)?
        .with_credentials(from_secrets.credentials(Prompt::Once)?);
    let to = Repository::open(&args.to, &args.store_options)?
        .with_credentials(to_secrets.credentials(Prompt::Once)?);
    let (from, to) = (limited(from, limits.clone()), limited(to, limits));
    let report = rockup::copy(&from, &to, &args.options()).await?;
    say!(
        "copied {} backup(s) ({} already there): {} objects, {} bytes sent; {} objects the target had",
        report.copied.len(),
        report.present.len(),
        report.objects_copied,
        report.bytes_copied,
        report.objects_present
    );
    Ok((document(&report), 0))
}

async fn unlock(args: UnlockArgs) -> Result<(Value, i32)> {
    let repo = repository(&args.repo, Prompt::Once)?;
    let report = rockup::unlock(&repo, args.force).await?;
    for key in &report.removed {
        say!("removed {key}");
    }
    for refused in &report.refused {
        tracing::warn!("left {}: {}", refused.lock, refused.reason);
    }
    say!("{} lock(s) removed", report.removed.len());
    if report.refused.is_empty() {
        return Ok((document(&report), 0));
    }
    say!(
        "{} lock(s) left: their holders may still be running; if they are gone, pass --force",
        report.refused.len()
    );
    Ok((document(&report), 1))
}

async fn demo(dir: Option<PathBuf>) -> Result<(Value, i32)> {
    let dir = match dir {
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
    let report = demo::demo(&dir).await?;
    say!("demo complete in {}", report.dir.display());
    Ok((document(&report), 0))
}
