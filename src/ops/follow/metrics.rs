//! `follow`'s figures as Prometheus text (the node_exporter textfile format),
//! written after every poll to a temporary file and renamed over the last,
//! so a scraper never reads half a file.

use std::fmt::Write as _;
use std::path::Path;

use crate::common::durable::{replace_file, STATUS_FILE_MODE};

use super::FollowStatus;

/// Writes `status` to `path` atomically.
pub(super) fn write(path: &Path, status: &FollowStatus) -> std::io::Result<()> {
    replace_file(path, render(status).as_bytes(), STATUS_FILE_MODE)
}

fn render(status: &FollowStatus) -> String {
    let traffic = &status.traffic;
    let gauges: [(&str, &str, f64); 6] = [
        (
            "shipped_sequence",
            "last sequence number shipped",
            status.shipped_sequence as f64,
        ),
        (
            "read_sequence",
            "last sequence number read from the WAL",
            status.read_sequence as f64,
        ),
        (
            "lag_sequences",
            "sequence numbers read but not shipped",
            status.lag_sequences as f64,
        ),
        (
            "lag_seconds",
            "seconds since the shipped state was the newest read",
            status.lag_seconds,
        ),
        (
            "shipped_timestamp_seconds",
            "when the shipped state was the newest read",
            status.shipped_at.timestamp_millis() as f64 / 1000.0,
        ),
        (
            "waiting",
            "1 while shipping waits for the store",
            f64::from(u8::from(status.waiting.is_some())),
        ),
    ];
    let counters: [(&str, &str, u64); 7] = [
        ("segments_total", "segments stored", status.segments),
        ("files_total", "external files captured", status.files),
        (
            "problems_total",
            "references that could not be captured",
            status.problems,
        ),
        ("bases_total", "base backups taken", status.bases),
        (
            "new_files_missed_total",
            "new files deleted before they could be linked",
            status.new_files_missed,
        ),
        (
            "uploaded_bytes_total",
            "bytes sent to the store",
            traffic.uploaded_bytes,
        ),
        (
            "downloaded_bytes_total",
            "bytes received from the store",
            traffic.downloaded_bytes,
        ),
    ];
    let mut out = String::new();
    let base = &status.base;
    for (name, help, value) in gauges {
        let _ = writeln!(out, "# HELP rockup_follow_{name} {help}\n# TYPE rockup_follow_{name} gauge\nrockup_follow_{name}{{base=\"{base}\"}} {value}");
    }
    for (name, help, value) in counters {
        let _ = writeln!(out, "# HELP rockup_follow_{name} {help}\n# TYPE rockup_follow_{name} counter\nrockup_follow_{name} {value}");
    }
    let _ = writeln!(out, "# HELP rockup_follow_requests_total store requests by kind\n# TYPE rockup_follow_requests_total counter");
    for (kind, value) in [
        ("put", traffic.put),
        ("get", traffic.get),
        ("head", traffic.head),
        ("list", traffic.list),
        ("delete", traffic.delete),
    ] {
        let _ = writeln!(
            out,
            "rockup_follow_requests_total{{kind=\"{kind}\"}} {value}"
        );
    }
    out
}
