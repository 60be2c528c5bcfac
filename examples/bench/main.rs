//! The speed benchmark (README: Benchmark). Generates a dataset, then measures
//! in one run, contenders alternating from round to round: full backup, the
//! unchanged and the 1%-changed incremental, and restore — to and from a local
//! directory and a native S3 server on loopback — for rockup, `cp -a` + `sync`,
//! RocksDB's BackupEngine + a file copy, `rclone copy` (default and
//! `--transfers 16`) and `aws s3 sync` where installed; last, half the files
//! deleted, rockup's backup + prune. Prints best and median of each, CPU
//! seconds, peak RSS, rockup's time as a ratio of each, and rockup's requests
//! and bytes per phase (from its `--json` report), with the changed bytes of
//! the 1% change and the repository's size against the live bytes.
//!
//!     bash scripts/bench.sh [--shape many-small|few-large] [--db-mib N]
//!         [--files N] [--file-kib N] [--rounds N] [--only local|s3]
//!         [--without NAME,…]   (e.g. --without aws: contenders whose name has it)
//!
//! (The script builds the release binaries and installs the S3 server and
//! rclone, then runs `bench run …`.) `bench engine-backup DB DIR`, `bench
//! engine-restore DIR DB`, `bench generate DIR …` and `bench change DIR …` are
//! the pieces it runs as child processes.

mod dataset;
mod engine;
mod measure;
mod report;
mod s3;
mod scenarios;

use std::path::PathBuf;

use dataset::Shape;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = |i: usize| PathBuf::from(args.get(i).expect("missing argument"));
    match args.first().map(String::as_str) {
        Some("engine-backup") => engine::backup(&path(1), &path(2)),
        Some("engine-restore") => engine::restore(&path(1), &path(2)),
        Some("generate") => dataset::generate(&path(1), shape(&args[2..])),
        Some("change") => {
            dataset::change(&path(1), shape(&args[2..]), 1.0, flag(&args, "--round", 0))
        }
        Some("delete-half") => dataset::delete_half(&path(1), shape(&args[2..])),
        Some("run") => scenarios::run(settings(&args[1..])),
        _ => {
            eprintln!("usage: bench run|generate|change|engine-backup|engine-restore … (see examples/bench/main.rs)");
            std::process::exit(2);
        }
    }
}

/// What `bench run` was asked to do.
pub struct Settings {
    pub shape: Shape,
    pub shape_name: String,
    pub rounds: usize,
    pub rockup: PathBuf,
    pub s3_server: Option<PathBuf>,
    pub only: Option<String>,
    /// Contenders left out (names containing any of these).
    pub without: Vec<String>,
    pub work: PathBuf,
}

fn settings(args: &[String]) -> Settings {
    let text = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let shape_name = text("--shape").unwrap_or_else(|| "many-small".into());
    Settings {
        shape: shape(args),
        rounds: flag(args, "--rounds", 3),
        rockup: PathBuf::from(text("--rockup").expect("--rockup PATH")),
        s3_server: text("--s3-server").map(PathBuf::from),
        only: text("--only"),
        without: text("--without")
            .map(|list| list.split(',').map(str::to_string).collect())
            .unwrap_or_default(),
        work: PathBuf::from(text("--work").unwrap_or_else(|| "/var/tmp/rockup-bench".into())),
        shape_name,
    }
}

/// The dataset's shape: a preset (`--shape`), each figure overridable.
fn shape(args: &[String]) -> Shape {
    let preset = match args
        .iter()
        .position(|a| a == "--shape")
        .map(|i| args[i + 1].as_str())
    {
        Some("few-large") => Shape {
            db_mib: 1024,
            files: 24,
            file_kib: 16 << 10,
        },
        Some("many-small") | None => Shape {
            db_mib: 1024,
            files: 20_000,
            file_kib: 16,
        },
        Some(other) => panic!("unknown shape {other}: many-small or few-large"),
    };
    Shape {
        db_mib: flag(args, "--db-mib", preset.db_mib),
        files: flag(args, "--files", preset.files),
        file_kib: flag(args, "--file-kib", preset.file_kib),
    }
}

fn flag<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} needs a number")),
        None => default,
    }
}
