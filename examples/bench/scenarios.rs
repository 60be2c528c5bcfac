//! The phases of one round and their contenders, as shell scripts over a few
//! variables (`$SRC` the dataset, `$W` the round's scratch, `$ROCKUP`, `$BENCH`,
//! `$S3ROOT` the S3 server's directory), and the table at the end.

use std::collections::BTreeMap;
use std::path::Path;

use crate::measure::{self, Cost, Summary};
use crate::report;
use crate::{dataset, s3, Settings};

/// One tool doing one phase's job: `setup` unmeasured, then `script` measured.
struct Contender {
    name: &'static str,
    setup: String,
    script: String,
}

/// The name of rockup working on an encrypted repository, opened with the
/// X25519 identity in `$IDENTITY_FILE` (as a backup host would be, or with a
/// write key: no Argon2id run per command, unlike a passphrase).
const ROCKUP_ENCRYPTED: &str = "rockup encrypted";

impl Contender {
    /// The same job done by rockup on an encrypted repository of its own
    /// (`rockup-sealed`), made by `rockup init` before a full backup.
    fn encrypted(&self, phase: &str, s3: bool) -> Contender {
        // The key goes to the encrypted runs only: a handle given a key
        // refuses plaintext repositories.
        let swap = |script: &str| {
            let key = r#"export ROCKUP_IDENTITY_FILE="$IDENTITY_FILE"; "#;
            key.to_string()
                + &script
                    .replace("$W/rockup-repo", "$W/rockup-sealed")
                    .replace("s3://rockup ", "s3://rockup-sealed ")
                    .replace(r#"$S3ROOT/rockup""#, r#"$S3ROOT/rockup-sealed""#)
        };
        let repo = if s3 {
            "s3://rockup-sealed"
        } else {
            r#""$W/rockup-sealed""#
        };
        let mut setup = swap(&self.setup);
        if phase.starts_with("full backup") {
            let recipient = r#""$(grep -o 'age1[0-9a-z]*' "$IDENTITY_FILE")""#;
            setup +=
                &format!(r#"; "$ROCKUP" init --repo {repo} --recipient {recipient} >/dev/null"#);
        }
        Contender {
            name: ROCKUP_ENCRYPTED,
            setup,
            script: swap(&self.script),
        }
    }
}

/// A phase: what all its contenders do, in an order that rotates by round.
struct Phase {
    title: &'static str,
    s3: bool,
    contenders: Vec<Contender>,
}

const ROCKUP_BACKUP_LOCAL: &str = r#""$ROCKUP" backup --repo "$W/rockup-repo" --db "$SRC/db" --blob-root "$SRC/files" $RESOLVER --json >"$W/rockup.json"; sync"#;
const ROCKUP_BACKUP_S3: &str = r#""$ROCKUP" backup --repo s3://rockup --db "$SRC/db" --blob-root "$SRC/files" $RESOLVER --json >"$W/rockup.json""#;
const ENGINE_BACKUP: &str = r#""$BENCH" engine-backup "$SRC/db" "$W/engine"; cp -a -u "$SRC/files/." "$W/engine-files/"; sync"#;
const RCLONE_UP: &str = r#"rclone copy "$SRC" s3:rclone"#;
const RCLONE16_UP: &str = r#"rclone copy --transfers 16 "$SRC" s3:rclone16"#;
const AWS_UP: &str = r#"aws --endpoint-url "$AWS_ENDPOINT" s3 sync --quiet "$SRC" s3://aws"#;
const FRESH_OUT: &str = r#"rm -rf "$W/out"; sync"#;
const HALF_COPY: &str =
    r#"rm -rf "$W/half"; cp -a "$SRC" "$W/half"; "$BENCH" delete-half "$W/half" $SHAPE"#;
const ROCKUP_HALF_LOCAL: &str = r#""$ROCKUP" backup --repo "$W/rockup-repo" --db "$W/half/db" --blob-root "$W/half/files" $RESOLVER --json >"$W/rockup.json"; "$ROCKUP" prune --repo "$W/rockup-repo" --keep-last 1 --grace 0s --json >"$W/prune.json"; sync"#;
const ROCKUP_HALF_S3: &str = r#""$ROCKUP" backup --repo s3://rockup --db "$W/half/db" --blob-root "$W/half/files" $RESOLVER --json >"$W/rockup.json"; "$ROCKUP" prune --repo s3://rockup --keep-last 1 --grace 0s --json >"$W/prune.json""#;

/// Every phase, rockup's contender followed by its encrypted twin.
fn phases() -> Vec<Phase> {
    let mut phases = plaintext_phases();
    for phase in &mut phases {
        let twin = phase.contenders.iter().find(|c| c.name == "rockup");
        if let Some(twin) = twin.map(|c| c.encrypted(phase.title, phase.s3)) {
            phase.contenders.insert(1, twin);
        }
    }
    phases
}

/// The phases with rockup on a plaintext repository and the other tools.
fn plaintext_phases() -> Vec<Phase> {
    let c = |name, setup: &str, script: &str| Contender {
        name,
        setup: setup.into(),
        script: script.into(),
    };
    // Unchanged means unchanged since rockup's own last backup: BackupEngine
    // opens the database read-write (new MANIFEST and OPTIONS), so rockup's
    // unchanged run is preceded by an unmeasured one.
    let incremental = |title: &'static str, s3| Phase {
        title,
        s3,
        contenders: if s3 {
            let again = if title.starts_with("unchanged") {
                ROCKUP_BACKUP_S3
            } else {
                ""
            };
            vec![
                c("rockup", again, ROCKUP_BACKUP_S3),
                c("rclone copy --transfers 16", "", RCLONE16_UP),
                c("aws s3 sync", "", AWS_UP),
            ]
        } else {
            let again = if title.starts_with("unchanged") {
                ROCKUP_BACKUP_LOCAL
            } else {
                ""
            };
            vec![
                c("rockup", again, ROCKUP_BACKUP_LOCAL),
                c("BackupEngine + cp -a -u", "", ENGINE_BACKUP),
            ]
        },
    };
    vec![
        Phase {
            title: "full backup, local",
            s3: false,
            contenders: vec![
                c("rockup", r#"rm -rf "$W/rockup-repo""#, ROCKUP_BACKUP_LOCAL),
                c(
                    "BackupEngine + cp -a",
                    r#"rm -rf "$W/engine" "$W/engine-files"; mkdir -p "$W/engine-files""#,
                    ENGINE_BACKUP,
                ),
                c(
                    "cp -a + sync",
                    r#"rm -rf "$W/copy""#,
                    r#"cp -a "$SRC" "$W/copy"; sync"#,
                ),
            ],
        },
        Phase {
            title: "full backup, S3",
            s3: true,
            contenders: vec![
                c(
                    "rockup",
                    r#"rm -rf "$S3ROOT/rockup"; mkdir "$S3ROOT/rockup""#,
                    ROCKUP_BACKUP_S3,
                ),
                c(
                    "rclone copy",
                    r#"rm -rf "$S3ROOT/rclone"; mkdir "$S3ROOT/rclone""#,
                    RCLONE_UP,
                ),
                c(
                    "rclone copy --transfers 16",
                    r#"rm -rf "$S3ROOT/rclone16"; mkdir "$S3ROOT/rclone16""#,
                    RCLONE16_UP,
                ),
                c(
                    "aws s3 sync",
                    r#"rm -rf "$S3ROOT/aws"; mkdir "$S3ROOT/aws""#,
                    AWS_UP,
                ),
            ],
        },
        incremental("unchanged backup, local", false),
        incremental("unchanged backup, S3", true),
        Phase {
            title: "CHANGE",
            s3: false,
            contenders: vec![],
        },
        incremental("1%-changed backup, local", false),
        incremental("1%-changed backup, S3", true),
        Phase {
            title: "restore, local",
            s3: false,
            contenders: vec![
                c(
                    "rockup",
                    FRESH_OUT,
                    r#""$ROCKUP" restore --repo "$W/rockup-repo" --db-dir "$W/out/db" --blob-root "$W/out/files" --json >"$W/rockup.json""#,
                ),
                c(
                    "BackupEngine + cp -a",
                    FRESH_OUT,
                    r#""$BENCH" engine-restore "$W/engine" "$W/out/db"; cp -a "$W/engine-files" "$W/out/files"; sync"#,
                ),
                c(
                    "cp -a + sync",
                    FRESH_OUT,
                    r#"mkdir -p "$W/out"; cp -a "$SRC/db" "$SRC/files" "$W/out/"; sync"#,
                ),
            ],
        },
        Phase {
            title: "restore, S3",
            s3: true,
            contenders: vec![
                c(
                    "rockup",
                    FRESH_OUT,
                    r#""$ROCKUP" restore --repo s3://rockup --db-dir "$W/out/db" --blob-root "$W/out/files" --json >"$W/rockup.json""#,
                ),
                c(
                    "rclone copy",
                    FRESH_OUT,
                    r#"rclone copy s3:rclone "$W/out"; sync"#,
                ),
                c(
                    "rclone copy --transfers 16",
                    FRESH_OUT,
                    r#"rclone copy --transfers 16 s3:rclone16 "$W/out"; sync"#,
                ),
                c(
                    "aws s3 sync",
                    FRESH_OUT,
                    r#"aws --endpoint-url "$AWS_ENDPOINT" s3 sync --quiet s3://aws "$W/out"; sync"#,
                ),
            ],
        },
        Phase {
            title: "half the files deleted: backup + prune, local",
            s3: false,
            contenders: vec![c("rockup", HALF_COPY, ROCKUP_HALF_LOCAL)],
        },
        Phase {
            title: "half the files deleted: backup + prune, S3",
            s3: true,
            contenders: vec![c("rockup", HALF_COPY, ROCKUP_HALF_S3)],
        },
    ]
}

/// Generates the dataset, runs every round, prints the table.
pub fn run(settings: Settings) {
    let work = &settings.work;
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work).expect("work directory");
    let bench = std::env::current_exe().expect("own path");
    let shape_args = shape_args(&settings);
    let mut env = vec![
        ("SRC".into(), path(&work.join("src"))),
        ("W".into(), path(&work.join("round"))),
        ("ROCKUP".into(), path(&settings.rockup)),
        ("BENCH".into(), path(&bench)),
        ("RESOLVER".into(), dataset::RESOLVER.into()),
        ("S3ROOT".into(), path(&work.join("s3"))),
        ("SHAPE".into(), shape_args.clone()),
        ("IDENTITY_FILE".into(), path(&work.join("identity.txt"))),
    ];
    eprintln!("generating {:?} in {}", settings.shape, work.display());
    measure::run(&format!(r#""$BENCH" generate "$SRC" {shape_args}"#), &env);
    measure::run(
        r#""$ROCKUP" key new-identity --out "$IDENTITY_FILE" 2>/dev/null >&2"#,
        &env,
    );
    let server = start_server(&settings, &mut env);
    let aws = has_command("aws");
    let mut results: BTreeMap<(usize, &'static str), Vec<Cost>> = BTreeMap::new();
    let mut figures: BTreeMap<usize, String> = BTreeMap::new();
    let phases = phases();
    for round in 0..settings.rounds {
        measure::run(r#"rm -rf "$W"; mkdir -p "$W""#, &env);
        for (index, phase) in phases.iter().enumerate() {
            if phase.title == "CHANGE" {
                measure::run(
                    &format!(r#""$BENCH" change "$SRC" {shape_args} --round {round}"#),
                    &env,
                );
                continue;
            }
            if phase.s3 && server.is_none() || !phase.s3 && settings.only.as_deref() == Some("s3") {
                continue;
            }
            let count = phase.contenders.len();
            for k in 0..count {
                let contender = &phase.contenders[(k + round) % count];
                let left_out = settings
                    .without
                    .iter()
                    .any(|w| contender.name.contains(w.as_str()));
                if left_out || contender.name == "aws s3 sync" && !aws {
                    continue;
                }
                measure::run(&contender.setup, &env);
                let _ = std::fs::remove_file(work.join("round/rockup.json"));
                let cost = measure::measure(&contender.script, &env);
                if contender.name == "rockup" {
                    let line = rockup_figures(work, phase);
                    figures.insert(index, line);
                }
                eprintln!(
                    "round {round} | {} | {}: {:.2} s",
                    phase.title, contender.name, cost.secs
                );
                results
                    .entry((index, contender.name))
                    .or_default()
                    .push(cost);
            }
        }
    }
    drop(server);
    print_table(&settings, &phases, &results);
    print_figures(&phases, &figures);
    let _ = std::fs::remove_dir_all(work);
}

fn start_server(settings: &Settings, env: &mut Vec<(String, String)>) -> Option<s3::Server> {
    if settings.only.as_deref() == Some("local") {
        return None;
    }
    let binary = settings.s3_server.as_ref()?;
    let server = s3::Server::start(binary, &settings.work.join("s3"));
    env.extend(server.client_env());
    Some(server)
}

fn shape_args(settings: &Settings) -> String {
    let s = settings.shape;
    format!(
        "--db-mib {} --files {} --file-kib {}",
        s.db_mib, s.files, s.file_kib
    )
}

fn path(p: &Path) -> String {
    p.to_str().expect("UTF-8 path").to_string()
}

fn has_command(name: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {name} >/dev/null")])
        .status()
        .is_ok_and(|s| s.success())
}

fn print_table(
    settings: &Settings,
    phases: &[Phase],
    results: &BTreeMap<(usize, &'static str), Vec<Cost>>,
) {
    let s = settings.shape;
    println!(
        "\n# {} dataset: {} MiB database + {} external files of ~{} KiB; {} rounds; {}",
        settings.shape_name,
        s.db_mib,
        s.files,
        s.file_kib,
        settings.rounds,
        settings.rockup.display()
    );
    for (index, phase) in phases.iter().enumerate() {
        let Some(rockup) = results.get(&(index, "rockup")).map(|r| Summary::of(r)) else {
            continue;
        };
        println!("\n## {}\n", phase.title);
        println!(
            "| contender | best s | median s | CPU s | peak RSS MiB | rockup's time ÷ its time |"
        );
        println!("|---|---:|---:|---:|---:|---:|");
        for contender in &phase.contenders {
            let Some(runs) = results.get(&(index, contender.name)) else {
                continue;
            };
            let summary = Summary::of(runs);
            let ratio = rockup.best.secs / summary.best.secs;
            println!(
                "| {} | {:.2} | {:.2} | {:.1} | {:.0} | {:.2} |",
                contender.name,
                summary.best.secs,
                summary.median_secs,
                summary.best.cpu_secs,
                summary.best.peak_rss_mib,
                ratio
            );
        }
    }
}

/// rockup's requests and bytes for the run just measured, as a table row's
/// last cells; with what the phase is judged by (changed bytes, stored ÷ live).
fn rockup_figures(work: &Path, phase: &Phase) -> String {
    let round = work.join("round");
    let Some(f) = report::read(&round) else {
        return "| (no report) | | | |".into();
    };
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let mut note = match f.stored_new {
        Some((bytes, objects)) => format!("stored anew: {objects} objects, {:.1} MiB", mib(bytes)),
        None => String::new(),
    };
    if phase.title.starts_with("1%") {
        let changed: u64 = std::fs::read_to_string(work.join("src/changed-bytes"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let sent = f.stored_new.map_or(0, |(bytes, _)| bytes);
        note += &format!(
            "; changed {:.1} MiB, stored ÷ changed {:.2}",
            mib(changed),
            sent as f64 / changed.max(1) as f64
        );
    }
    if phase.title.starts_with("half") {
        let repo = match phase.s3 {
            true => work.join("s3/rockup"),
            false => round.join("rockup-repo"),
        };
        let (stored, live) = (report::disk_usage(&repo), f.live_bytes.unwrap_or(0));
        note += &format!(
            "; repository {:.1} MiB for {:.1} MiB live: {:.2}×; prune: {}",
            mib(stored),
            mib(live),
            stored as f64 / live.max(1) as f64,
            report::prune_summary(&round)
        );
    }
    format!(
        "| {} | {:.1} | {:.1} | {note} |",
        f.requests,
        mib(f.uploaded_bytes),
        mib(f.downloaded_bytes)
    )
}

fn print_figures(phases: &[Phase], figures: &BTreeMap<usize, String>) {
    println!("\n## rockup's requests and bytes (last round)\n");
    println!("| phase | requests | sent MiB | received MiB | notes |");
    println!("|---|---|---:|---:|---|");
    for (index, row) in figures {
        println!("| {} {row}", phases[*index].title);
    }
}
