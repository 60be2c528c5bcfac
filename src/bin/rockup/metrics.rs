//! `--metrics-file` for backup, prune, verify and copy: after each run its
//! figures in Prometheus text format (node_exporter's textfile collector),
//! taken from the run's JSON report, written to a temporary file beside the
//! target and renamed over it so a scrape never reads half a file. The time
//! of the last successful run is carried over from the file a failed run
//! replaces, so "no success in 26 h" can be alerted on.

use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::Value;

use rockup::{files, Error, Result};

/// The metric carried over from run to run (after `rockup_`).
const LAST_SUCCESS: &str = "last_success_timestamp_seconds";
/// The most of an earlier file read back.
const PREVIOUS_LIMIT: u64 = 1 << 20;

/// One run being measured.
pub struct Run {
    command: &'static str,
    file: Option<PathBuf>,
    labels: String,
    started: Instant,
}

impl Run {
    /// Starts measuring `command` (labelled with `source` if given), to be
    /// written to `file` if given.
    pub fn start(command: &'static str, file: Option<&Path>, source: Option<&str>) -> Self {
        let mut labels = format!("command=\"{command}\"");
        if let Some(source) = source {
            let _ = write!(labels, ",source=\"{}\"", label_value(source));
        }
        Self {
            command,
            file: file.map(Path::to_path_buf),
            labels,
            started: Instant::now(),
        }
    }

    /// Writes the metrics of `result` (a warning if they cannot be written)
    /// and hands it on.
    pub fn finish(self, result: Result<(Value, i32)>) -> Result<(Value, i32)> {
        if let Some(file) = &self.file {
            let text = self.render(&result, previous_success(file));
            if let Err(e) = files::replace_file(file, text.as_bytes(), files::STATUS_FILE_MODE) {
                tracing::warn!(file = %file.display(), error = %e, "metrics not written");
            }
        }
        result
    }

    fn render(&self, result: &Result<(Value, i32)>, previous: Option<f64>) -> String {
        let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
        let (report, code) = match result {
            Ok((report, code)) => (Some(report), *code),
            Err(e) => (None, e.exit_code()),
        };
        let last_success = if code == 0 { Some(now) } else { previous };
        let mut gauges = vec![
            (
                "last_run_timestamp_seconds",
                "when the last run ended",
                Some(now),
            ),
            (
                LAST_SUCCESS,
                "when the last run that exited 0 ended",
                last_success,
            ),
            (
                "last_exit_code",
                "the last run's exit code",
                Some(f64::from(code)),
            ),
            (
                "last_duration_seconds",
                "how long the last run took",
                Some(self.started.elapsed().as_secs_f64()),
            ),
        ];
        let figures = report.map(|r| figures(self.command, r)).unwrap_or_default();
        let problems = match result {
            Err(Error::Problems { problems, .. }) => Some(problems.len() as f64),
            _ => figures.problems,
        };
        // One HELP text per metric name whatever the command: collectors
        // reject files that give one metric two (node_exporter does).
        gauges.extend([
            (
                "last_files",
                "what the last run handled: files backed up; objects deleted, checked or copied",
                figures.files,
            ),
            (
                "last_bytes",
                "bytes the last run uploaded, deleted, re-hashed or copied",
                figures.bytes,
            ),
            (
                "last_problems",
                "problems the last run found or recorded",
                problems,
            ),
        ]);
        let mut out = String::new();
        for (name, help, value) in gauges {
            let Some(value) = value else { continue };
            let _ = writeln!(out, "# HELP rockup_{name} {help}\n# TYPE rockup_{name} gauge\nrockup_{name}{{{}}} {value}", self.labels);
        }
        if let Some(traffic) = report.and_then(|r| r.get("traffic")) {
            self.render_traffic(&mut out, traffic);
        }
        out
    }

    fn render_traffic(&self, out: &mut String, traffic: &Value) {
        let count = |key: &str| traffic.get(key).and_then(Value::as_u64).unwrap_or(0);
        let _ = writeln!(out, "# HELP rockup_last_requests store requests of the last run by kind\n# TYPE rockup_last_requests gauge");
        for kind in ["put", "get", "head", "list", "delete"] {
            let _ = writeln!(
                out,
                "rockup_last_requests{{{},kind=\"{kind}\"}} {}",
                self.labels,
                count(kind)
            );
        }
        for (name, key) in [("sent", "uploaded_bytes"), ("received", "downloaded_bytes")] {
            let _ = writeln!(out, "# HELP rockup_last_{name}_bytes bytes {name} by the last run\n# TYPE rockup_last_{name}_bytes gauge\nrockup_last_{name}_bytes{{{}}} {}", self.labels, count(key));
        }
    }
}

/// What a command's report says it did.
#[derive(Default)]
struct Figures {
    files: Option<f64>,
    bytes: Option<f64>,
    problems: Option<f64>,
}

fn figures(command: &str, report: &Value) -> Figures {
    let number = |pointer: &str| report.pointer(pointer).and_then(Value::as_u64);
    let sum = |a: &str, b: &str| Some((number(a)? + number(b)?) as f64);
    let (files, bytes) = match command {
        "backup" => (
            sum("/header/stats/db_files", "/header/stats/external_files"),
            number("/header/stats/uploaded_bytes"),
        ),
        "prune" | "forget" => (
            number("/deleted_objects").map(|n| n as f64),
            number("/deleted_bytes"),
        ),
        "verify" => (number("/objects").map(|n| n as f64), number("/read_bytes")),
        _ => (
            number("/objects_copied").map(|n| n as f64),
            number("/bytes_copied"),
        ),
    };
    let problems = report
        .get("problems")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    Figures {
        files,
        bytes: bytes.map(|n| n as f64),
        problems: Some(problems as f64),
    }
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn label_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The last success time in the file a run replaces (a regular file read
/// within a bound; anything unreadable counts as none).
fn previous_success(file: &Path) -> Option<f64> {
    let meta = std::fs::symlink_metadata(file).ok()?;
    if !meta.is_file() {
        return None;
    }
    let mut text = String::new();
    std::fs::File::open(file)
        .ok()?
        .take(PREVIOUS_LIMIT)
        .read_to_string(&mut text)
        .ok()?;
    let name = format!("rockup_{LAST_SUCCESS}{{");
    let line = text.lines().find(|l| l.starts_with(&name))?;
    let value: f64 = line.rsplit(' ').next()?.parse().ok()?;
    (value.is_finite() && value > 0.0).then_some(value)
}
