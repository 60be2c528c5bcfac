//! rockup's own figures for a phase, from the `--json` report the phase's
//! script leaves in `$W/rockup.json`: requests by kind, bytes each way, what
//! the backup says it uploaded — and, for the half-deleted phase, the
//! repository's size against the live bytes.

use std::path::Path;

use serde_json::Value;

/// What rockup reported for one run.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub requests: String,
    pub uploaded_bytes: u64,
    pub downloaded_bytes: u64,
    /// The backup's `stats.uploaded_bytes` / objects (what it stored anew).
    pub stored_new: Option<(u64, u64)>,
    /// Bytes of the backed-up database and files (the backup's stats).
    pub live_bytes: Option<u64>,
}

/// Reads `dir/rockup.json`, if the run left one.
pub fn read(dir: &Path) -> Option<Figures> {
    let json: Value = serde_json::from_slice(&std::fs::read(dir.join("rockup.json")).ok()?).ok()?;
    let traffic = &json["traffic"];
    let count = |kind: &str| traffic[kind].as_u64().unwrap_or(0);
    let requests = ["put", "get", "head", "list", "delete"]
        .map(|kind| format!("{} {}", count(kind), kind.to_uppercase()))
        .join(", ");
    let stats = &json["header"]["stats"];
    let stat = |name: &str| stats[name].as_u64();
    Some(Figures {
        requests,
        uploaded_bytes: count("uploaded_bytes"),
        downloaded_bytes: count("downloaded_bytes"),
        stored_new: stat("uploaded_bytes").zip(stat("uploaded_objects")),
        live_bytes: stat("db_bytes")
            .zip(stat("external_bytes"))
            .map(|(d, e)| d + e),
    })
}

/// Total size of the files under `dir`.
pub fn disk_usage(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// What the prune of `dir/prune.json` repacked and deleted, in words.
pub fn prune_summary(dir: &Path) -> String {
    let Some(json) = std::fs::read(dir.join("prune.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
    else {
        return "(no report)".into();
    };
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let mib = |v: &Value| n(v) as f64 / (1 << 20) as f64;
    let repack = &json["repack"];
    format!(
        "{} objects ({:.1} MiB) deleted, {} packs ({:.1} MiB) repacked into {:.1} MiB",
        n(&json["deleted_objects"]),
        mib(&json["deleted_bytes"]),
        n(&repack["packs_repacked"]),
        mib(&repack["bytes_repacked"]),
        mib(&repack["bytes_uploaded"])
    )
}
