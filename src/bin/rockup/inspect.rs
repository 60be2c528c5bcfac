//! `ls`, `find`, `diff` and `dump`: what the library streams goes to stdout
//! as it comes — one line a file, or with --json one JSON object a line
//! (NDJSON) — so that `rockup ls … | grep` works at millions of files; the
//! totals follow (a last `{"summary": …}` line under --json). A reader that
//! closes the pipe early (`| head`) ends the command quietly.

use std::io::{BufWriter, Write};

use chrono::DateTime;
use serde::Serialize;
use serde_json::{json, Value};

use crate::args::{DiffArgs, DumpArgs, FindArgs, LsArgs};
use crate::commands::{print_traffic, repository};
use crate::output::say;
use crate::secrets::Prompt;
use rockup::manifest::{DbFileEntry, ExternalEntry};
use rockup::{
    escape_controls, Change, ChangeKind, DiffOptions, DumpOptions, Error, FindOptions, Item,
    LsOptions, Result,
};

/// Lines on stdout, buffered.
struct Lines {
    out: BufWriter<std::io::StdoutLock<'static>>,
    json: bool,
}

impl Lines {
    fn new(json: bool) -> Self {
        Self {
            out: BufWriter::new(std::io::stdout().lock()),
            json,
        }
    }

    /// One line: `record` as JSON under --json, else `human()`.
    fn line(&mut self, record: &impl Serialize, human: impl FnOnce() -> String) -> Result<()> {
        let text = match self.json {
            true => serde_json::to_string(record).expect("records serialize"),
            false => human(),
        };
        written(writeln!(self.out, "{text}"))
    }

    /// The totals, last: `{"summary": record}` under --json, else `human`.
    fn summary(mut self, record: &impl Serialize, human: &[String]) -> Result<()> {
        if self.json {
            let text = serde_json::to_string(&json!({ "summary": record })).expect("serializes");
            written(writeln!(self.out, "{text}"))?;
        } else {
            for text in human {
                written(writeln!(self.out, "{text}"))?;
            }
        }
        written(self.out.flush())
    }
}

/// Prints `lines` on stdout (tables of commands that only read).
pub fn print_lines(lines: &[String]) -> Result<()> {
    let mut out = BufWriter::new(std::io::stdout().lock());
    for line in lines {
        written(writeln!(out, "{line}"))?;
    }
    written(out.flush())
}

/// Writes `bytes` on stdout.
pub fn print_bytes(bytes: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    written(out.write_all(bytes).and_then(|()| out.flush()))
}

/// A closed pipe ends the command quietly: every command writing to stdout
/// only reads the repository, and holds nothing to clean up.
fn written(result: std::io::Result<()>) -> Result<()> {
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        other => other.map_err(|e| io_error("stdout", e)),
    }
}

pub async fn ls(args: LsArgs, json: bool) -> Result<(Value, i32)> {
    let repo = repository(&args.repo, Prompt::Once)?;
    let mut options = LsOptions::default();
    options.backup = args.backup.clone();
    options.source = args.source.clone();
    options.prefix = args.prefix.clone();
    let mut lines = Lines::new(json);
    let long = args.long;
    let header = rockup::ls(&repo, &options, |item| {
        lines.line(&item, || describe(&item, long))
    })
    .await?;
    lines.summary(&header.stats, &[])?;
    let s = &header.stats;
    say!(
        "backup {}: {} DB files ({} bytes), {} external files ({} bytes)",
        header.backup_id,
        s.db_files,
        s.db_bytes,
        s.external_files,
        s.external_bytes
    );
    Ok((Value::Null, 0))
}

/// One file as a line: kind, mode, size, mtime, (SHA-256,) name.
fn describe(item: &Item, long: bool) -> String {
    let (kind, mode, size, mtime, sha256, name) = match item {
        Item::Db(DbFileEntry {
            name,
            size,
            sha256,
            mode,
            ..
        }) => ("db", mode.unwrap_or(0o600), size, None, sha256, name),
        Item::External(ExternalEntry {
            path,
            size,
            sha256,
            mtime_ns,
            mode,
            ..
        }) => ("file", *mode, size, Some(*mtime_ns), sha256, path),
        _ => unreachable!("every kind of item is described"),
    };
    let mtime = mtime.map_or_else(|| "-".to_string(), time);
    let hash = match long {
        true => format!("{sha256}  "),
        false => String::new(),
    };
    format!(
        "{kind:<4} {} {size:>12} {mtime:<19}  {hash}{}",
        mode_string(mode),
        escape_controls(name)
    )
}

/// `-rw-r--r--` for 0o644.
fn mode_string(mode: u32) -> String {
    let bits = ["r", "w", "x"];
    let mut text = String::from("-");
    for shift in (0..9).rev() {
        let set = mode & (1 << shift) != 0;
        text.push_str(if set { bits[2 - shift % 3] } else { "-" });
    }
    text
}

/// An mtime (nanoseconds since the epoch) as UTC to the second.
fn time(ns: i64) -> String {
    DateTime::from_timestamp_nanos(ns)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

pub async fn find(args: FindArgs, json: bool) -> Result<(Value, i32)> {
    let repo = repository(&args.repo, Prompt::Once)?;
    let mut options = FindOptions::default();
    options.pattern = args.pattern.clone();
    options.source = args.source.clone();
    options.backups = args.backups.clone();
    let mut lines = Lines::new(json);
    let report = rockup::find(&repo, &options, |found| {
        lines.line(&found, || {
            let e = &found.entry;
            format!(
                "{}  {} {:>12} {}  {}",
                found.backup_id,
                found.created_at.format("%Y-%m-%d %H:%M:%S"),
                e.size,
                time(e.mtime_ns),
                escape_controls(&e.path)
            )
        })
    })
    .await?;
    for (id, why) in &report.unreadable {
        say!("  not searched: backup {id}: {}", escape_controls(why));
    }
    lines.summary(&report, &[])?;
    say!(
        "{} file(s) matching {:?} in {} backup(s) searched",
        report.found,
        args.pattern,
        report.backups
    );
    Ok((Value::Null, 0))
}

pub async fn diff(args: DiffArgs, json: bool) -> Result<(Value, i32)> {
    let repo = repository(&args.repo, Prompt::Once)?;
    let mut options = DiffOptions::default();
    options.from = args.from.clone();
    options.to = args.to.clone();
    options.source = args.source.clone();
    let mut lines = Lines::new(json);
    let report = rockup::diff(&repo, &options, |change| {
        lines.line(&change, || describe_change(&change))
    })
    .await?;
    let totals = [("database", &report.db), ("external", &report.external)].map(|(what, t)| {
        format!(
            "{what} files: {} added ({} bytes), {} removed ({} bytes), {} modified ({} bytes), {} with new metadata, {} unchanged",
            t.added.files, t.added.bytes, t.removed.files, t.removed.bytes,
            t.modified.files, t.modified.bytes, t.metadata.files, t.unchanged.files
        )
    });
    lines.summary(&report, &totals)?;
    Ok((Value::Null, 0))
}

/// `+`, `-`, `M` (content) or `U` (metadata), as restic shows them.
fn describe_change(change: &Change) -> String {
    let sign = match change.change {
        ChangeKind::Added => "+",
        ChangeKind::Removed => "-",
        ChangeKind::Modified => "M",
        ChangeKind::Metadata => "U",
    };
    let (kind, size, name) = match &change.item {
        Item::Db(db) => ("db", db.size, &db.name),
        Item::External(file) => ("file", file.size, &file.path),
        _ => unreachable!("every kind of item is described"),
    };
    format!("{sign} {kind:<4} {size:>12}  {}", escape_controls(name))
}

pub async fn dump(args: DumpArgs, json: bool) -> Result<(Value, i32)> {
    let repo = repository(&args.repo, Prompt::Once)?;
    let scratch = stdout_staging(&args)?;
    let mut options = DumpOptions::default();
    options.backup = args.backup.clone();
    options.source = args.source.clone();
    options.path = args.path.clone();
    options.overwrite = args.overwrite;
    options.target = match (&args.target, &scratch) {
        (Some(target), _) => target.clone(),
        (None, Some(dir)) => dir.path().join("file"),
        (None, None) => unreachable!("a scratch directory without --target"),
    };
    let report = rockup::dump(&repo, &options).await?;
    if args.target.is_none() {
        let mut file =
            std::fs::File::open(&options.target).map_err(|e| io_error(&options.target, e))?;
        let mut out = std::io::stdout().lock();
        written(std::io::copy(&mut file, &mut out).and_then(|_| out.flush()))?;
    }
    let e = &report.entry;
    say!(
        "{} of backup {}: {} bytes, SHA-256 {} verified{}",
        escape_controls(&e.path),
        report.backup_id,
        e.size,
        e.sha256,
        args.target
            .as_ref()
            .map_or(String::new(), |t| format!(", written to {}", t.display()))
    );
    print_traffic(&report.traffic);
    // With the content on stdout, the JSON report goes to stderr.
    if json && args.target.is_none() {
        eprintln!(
            "{}",
            serde_json::to_string(&report).expect("report serializes")
        );
        return Ok((Value::Null, 0));
    }
    Ok((crate::commands::document(&report), 0))
}

pub fn io_error(path: impl Into<std::path::PathBuf>, source: std::io::Error) -> Error {
    Error::Io {
        path: path.into(),
        source,
    }
}

/// Where a dump to stdout is staged and verified first.
fn stdout_staging(args: &DumpArgs) -> Result<Option<tempfile::TempDir>> {
    match args.target {
        Some(_) => Ok(None),
        None => tempfile::Builder::new()
            .prefix("rockup-dump-")
            .tempdir()
            .map(Some)
            .map_err(|e| io_error(std::env::temp_dir(), e)),
    }
}
