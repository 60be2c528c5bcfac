//! Command-line definitions (clap) and their translation into the library's
//! option structs. Nothing here does work; `commands` runs what this parses.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use rockup::{
    BackupId, BackupOptions, CopyOptions, DataSubset, Error, ExternalFiles, FileMatch,
    FileSelection, FollowOptions, Format, GroupBy, Jobs, KdfParams, PointInTime, PruneOptions,
    RateLimiter, Recipient, RefSource, ResolverConfig, RestoreOptions, Result, VerifyOptions,
};

use crate::secrets::Secrets;

/// Consistent backups of a live RocksDB database and the external files its
/// records point to, to S3, GCS, Azure Blob or a local directory.
#[derive(Debug, Parser)]
#[command(name = "rockup", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Print one JSON document on stdout (a failure's on stderr, as one
    /// line); logs stay on stderr.
    #[arg(long, global = true)]
    pub json: bool,
    /// More detail in the logs (-v: debug, -vv: trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only warnings and errors on stderr: no summary, no progress.
    #[arg(short, long, global = true, env = "ROCKUP_QUIET")]
    pub quiet: bool,
    /// No progress bar or progress lines.
    #[arg(long, global = true, env = "ROCKUP_NO_PROGRESS")]
    pub no_progress: bool,
    /// Settings from a profile: NAME.toml in $XDG_CONFIG_HOME/rockup (else
    /// ~/.config/rockup), then /etc/rockup, or a file's path. Flags and the
    /// environment override it.
    #[arg(long, global = true, env = "ROCKUP_PROFILE", value_name = "NAME")]
    pub profile: Option<String>,
    /// Also append the logs to this file (created mode 0600; at least info,
    /// even with --quiet).
    #[arg(long, global = true, env = "ROCKUP_LOG_FILE", value_name = "FILE")]
    pub log_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a repository: encrypted (the default) or, with --no-encryption, plaintext.
    Init(InitArgs),
    /// Manage an encrypted repository's keys: list, add, remove, passwd, rotate, write-key.
    Key(KeyArgs),
    /// Back up a database (and the external files its records reference).
    Backup(BackupArgs),
    /// Protect a database continuously: a base backup, then its WAL and the
    /// files new records reference, shipped every --interval (runs until
    /// stopped; SIGINT/SIGTERM ship what was read, then exit 0).
    Follow(FollowArgs),
    /// List the backups in a repository, by source.
    List(ListArgs),
    /// List what a backup holds: its database files and external files (on stdout).
    Ls(LsArgs),
    /// Find the backups in which external files matching a pattern exist, newest first.
    Find(FindArgs),
    /// Show the files added, removed and changed between two backups.
    Diff(DiffArgs),
    /// Write one external file of a backup to stdout (or --target), verified.
    Dump(DumpArgs),
    /// Restore a backup into fresh directories, verified.
    Restore(RestoreArgs),
    /// Check that a backup's objects are present (and, with --deep, intact).
    Verify(VerifyArgs),
    /// Forget backups by a retention policy and delete what no backup references.
    Prune(PruneArgs),
    /// Forget the backups named and delete what no backup references any
    /// more (prune for chosen backups).
    Forget(ForgetArgs),
    /// Remove the locks of backups or prunes that were killed.
    Unlock(UnlockArgs),
    /// Copy committed backups to another repository, verified (3-2-1).
    Copy(CopyArgs),
    /// Back up, verify and restore a sample database with external files.
    Demo(DemoArgs),
    /// Show the settings in effect (from --profile and the environment).
    Config(ConfigArgs),
    /// Print the completion script for a shell (e.g. `rockup completions
    /// bash > /etc/bash_completion.d/rockup`).
    Completions(CompletionsArgs),
    /// Print the man page, or write one per command into a directory.
    Man(ManArgs),
}

#[derive(Debug, Args)]
pub struct RepoArgs {
    /// Repository: s3://bucket/prefix, gs://bucket/prefix, az://container/prefix,
    /// file:///abs/path or a local path.
    /// Also ROCKUP_REPO, the older name.
    #[arg(short = 'r', long, env = "ROCKUP_REPOSITORY", hide_env_values = true)]
    pub repo: String,
    /// Store setting as key=value (object_store config keys, e.g. region=eu-west-1);
    /// keep secrets in the environment (AWS_*, AZURE_*, GOOGLE_*), not in argv.
    #[arg(long = "store-option", env = "ROCKUP_STORE_OPTIONS", value_delimiter = ',', value_name = "KEY=VALUE", value_parser = parse_store_option, hide_env_values = true)]
    pub store_options: Vec<(String, String)>,
    #[command(flatten)]
    pub rates: RateArgs,
    #[command(flatten)]
    pub secrets: SecretArgs,
}

/// How fast a run may send and receive (unlimited by default; rates like
/// 20M, suffixes K, M, G being powers of 1024, in bytes per second).
#[derive(Debug, Args)]
pub struct RateArgs {
    /// Most bytes per second sent and received together.
    #[arg(long, env = "ROCKUP_RATE_LIMIT", value_name = "BYTES", value_parser = parse_rate)]
    pub rate_limit: Option<u64>,
    /// Most bytes per second sent.
    #[arg(long, env = "ROCKUP_LIMIT_UPLOAD", value_name = "BYTES", value_parser = parse_rate)]
    pub limit_upload: Option<u64>,
    /// Most bytes per second received.
    #[arg(long, env = "ROCKUP_LIMIT_DOWNLOAD", value_name = "BYTES", value_parser = parse_rate)]
    pub limit_download: Option<u64>,
}

impl RateArgs {
    /// The library's limiter for these rates.
    pub fn limiter(&self) -> RateLimiter {
        RateLimiter::new(self.rate_limit, self.limit_upload, self.limit_download)
    }
}

impl RepoArgs {
    /// The secrets this repository may be opened with.
    pub fn secrets(&self) -> Secrets<'_> {
        self.secrets.of(&self.repo, "ROCKUP_PASSWORD")
    }
}

/// The key of an encrypted repository (plaintext ones need none). The
/// passphrase itself may also be in ROCKUP_PASSWORD; without any of these,
/// it is asked for on the terminal.
#[derive(Debug, Args)]
pub struct SecretArgs {
    /// File holding the passphrase (its line ending is not part of it).
    #[arg(long, env = "ROCKUP_PASSWORD_FILE", value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Command printing the passphrase (run by sh -c), e.g. a secret manager's.
    #[arg(
        long,
        env = "ROCKUP_PASSWORD_COMMAND",
        value_name = "COMMAND",
        hide_env_values = true,
        conflicts_with = "password_file"
    )]
    pub password_command: Option<String>,
    /// X25519 identity file (age-keygen's, or `rockup key new-identity`'s)
    /// opening a recipient key slot.
    #[arg(long, env = "ROCKUP_IDENTITY_FILE", value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Write key file (`rockup key write-key`): back up, and read nothing back.
    #[arg(long, env = "ROCKUP_WRITE_KEY_FILE", value_name = "FILE")]
    pub write_key: Option<PathBuf>,
}

impl SecretArgs {
    fn of<'a>(&'a self, repo: &'a str, password_variable: &'static str) -> Secrets<'a> {
        Secrets {
            repo,
            password_file: self.password_file.as_deref(),
            password_command: self.password_command.as_deref(),
            password_variable,
            identity: self.identity.as_deref(),
            write_key: self.write_key.as_deref(),
        }
    }
}

#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// A plaintext repository: whoever reads the bucket reads the backups.
    #[arg(long, conflicts_with = "recipients")]
    pub no_encryption: bool,
    /// Also give this X25519 recipient (age1…) a key slot (repeatable). With
    /// recipients and no passphrase source, no passphrase slot is made.
    #[arg(long = "recipient", value_name = "AGE1…")]
    pub recipients: Vec<Recipient>,
    #[command(flatten)]
    pub kdf: KdfArgs,
}

/// How hard a new passphrase is stretched (Argon2id).
#[derive(Debug, Args)]
pub struct KdfArgs {
    /// Memory per passphrase try, in MiB (19 to 1024).
    #[arg(long, value_name = "MIB", default_value_t = KdfParams::default().memory_kib / 1024)]
    pub kdf_memory: u32,
    /// Passes over that memory (2 to 32).
    #[arg(long, value_name = "N", default_value_t = KdfParams::default().iterations)]
    pub kdf_iterations: u32,
    /// Lanes (1 to 16).
    #[arg(long, value_name = "N", default_value_t = KdfParams::default().parallelism)]
    pub kdf_parallelism: u32,
}

impl KdfArgs {
    pub fn params(&self) -> KdfParams {
        KdfParams {
            memory_kib: self.kdf_memory.saturating_mul(1024),
            iterations: self.kdf_iterations,
            parallelism: self.kdf_parallelism,
        }
    }
}

#[derive(Debug, Args)]
pub struct KeyArgs {
    #[command(subcommand)]
    pub command: KeyCommand,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// List the key slots (needs no key: the config is plaintext).
    List(RepoArgs),
    /// Add a key slot holding the current master key: a new passphrase, or --recipient.
    Add(KeyAddArgs),
    /// Remove a key slot (never the last): what opened it no longer opens the
    /// config; to revoke a key for good, `key rotate` afterwards.
    Remove(KeyRemoveArgs),
    /// Give a passphrase slot a new passphrase.
    Passwd(KeyPasswdArgs),
    /// A new master key for everything written from now on; what was written
    /// before stays readable, no data is re-encrypted.
    Rotate(KeyRotateArgs),
    /// Write the key a write-only host backs up with (into a new file, mode 0600).
    WriteKey(KeyOutArgs),
    /// Make a new X25519 identity (a new file, mode 0600) and print its recipient.
    NewIdentity(NewIdentityArgs),
}

/// Where a new passphrase comes from.
#[derive(Debug, Args)]
pub struct NewPassphraseArgs {
    /// File holding the new passphrase; without it, it is asked for twice on the terminal.
    #[arg(long, env = "ROCKUP_NEW_PASSWORD_FILE", value_name = "FILE")]
    pub new_password_file: Option<PathBuf>,
    #[command(flatten)]
    pub kdf: KdfArgs,
}

#[derive(Debug, Args)]
pub struct KeyAddArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// The new slot's name (default: passphrase-N or recipient-N).
    #[arg(long)]
    pub name: Option<String>,
    /// A recipient slot for this X25519 public key (age1…) instead of a passphrase.
    #[arg(long, value_name = "AGE1…")]
    pub recipient: Option<Recipient>,
    #[command(flatten)]
    pub new: NewPassphraseArgs,
}

#[derive(Debug, Args)]
pub struct KeyRemoveArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// The slot to remove (`rockup key list` names them).
    pub name: String,
}

#[derive(Debug, Args)]
pub struct KeyPasswdArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// The passphrase slot to change (default: the one that opened the repository).
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub new: NewPassphraseArgs,
}

#[derive(Debug, Args)]
pub struct KeyRotateArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Remove the passphrase slots other than the one in use: their
    /// passphrases are not known here, so they cannot hold the new master
    /// key (add them back with `rockup key add`). Without this, rotation
    /// refuses when there are any.
    #[arg(long)]
    pub remove_other_passphrases: bool,
}

#[derive(Debug, Args)]
pub struct KeyOutArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// The file to create (never replaced).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct NewIdentityArgs {
    /// The file to create (never replaced).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The repository to copy from.
    #[arg(long)]
    pub from: String,
    /// The repository to copy to (created if new).
    #[arg(long)]
    pub to: String,
    /// Backup id, latest, or all.
    #[arg(long, default_value = "latest")]
    pub backup: String,
    /// Only this source's backups (and whose `latest`).
    #[arg(long, env = "ROCKUP_SOURCE", value_name = "NAME")]
    pub source: Option<String>,
    /// Objects copied at once.
    #[arg(long, default_value_t = 8)]
    pub jobs: usize,
    #[command(flatten)]
    pub retry: RetryLockArg,
    /// For the two repositories together: what is received from --from and
    /// sent to --to.
    #[command(flatten)]
    pub rates: RateArgs,
    /// Store setting for both repositories, as key=value (see --repo's).
    #[arg(long = "store-option", value_name = "KEY=VALUE", value_parser = parse_store_option)]
    pub store_options: Vec<(String, String)>,
    /// Write Prometheus metrics (node_exporter textfile format) here after
    /// the run, atomically: last success time, duration, files, bytes,
    /// problems and requests.
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
    /// The key of --from, if it is encrypted.
    #[command(flatten)]
    pub from_secrets: SecretArgs,
    /// The key of --to, if it is encrypted (its passphrase may also be in
    /// ROCKUP_TO_PASSWORD).
    #[command(flatten)]
    pub to_secrets: TargetSecretArgs,
}

/// The key of the repository `copy` writes to.
#[derive(Debug, Args)]
pub struct TargetSecretArgs {
    /// File holding --to's passphrase.
    #[arg(long, env = "ROCKUP_TO_PASSWORD_FILE", value_name = "FILE")]
    pub to_password_file: Option<PathBuf>,
    /// Command printing --to's passphrase.
    #[arg(
        long,
        env = "ROCKUP_TO_PASSWORD_COMMAND",
        value_name = "COMMAND",
        hide_env_values = true,
        conflicts_with = "to_password_file"
    )]
    pub to_password_command: Option<String>,
    /// X25519 identity file opening a recipient slot of --to.
    #[arg(long, env = "ROCKUP_TO_IDENTITY_FILE", value_name = "FILE")]
    pub to_identity: Option<PathBuf>,
}

impl CopyArgs {
    /// The secrets of the repository copied from, and of the one copied to.
    pub fn secrets(&self) -> (Secrets<'_>, Secrets<'_>) {
        let to = &self.to_secrets;
        let target = Secrets {
            repo: &self.to,
            password_file: to.to_password_file.as_deref(),
            password_command: to.to_password_command.as_deref(),
            password_variable: "ROCKUP_TO_PASSWORD",
            identity: to.to_identity.as_deref(),
            write_key: None,
        };
        (self.from_secrets.of(&self.from, "ROCKUP_PASSWORD"), target)
    }
}

impl CopyArgs {
    pub fn options(&self) -> CopyOptions {
        let mut options = CopyOptions::default();
        options.backup = self.backup.clone();
        options.source = self.source.clone();
        options.jobs = Jobs::from(self.jobs);
        options.retry_lock = self.retry.wait;
        options
    }
}

#[derive(Debug, Args)]
pub struct UnlockArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Also remove locks whose holder may still be running (another host's, or
    /// a live process): a backup whose lock is removed then fails at its commit.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Database directory (opened read-only; another process may hold it open
    /// and keep writing).
    #[arg(
        long,
        env = "ROCKUP_DB",
        conflicts_with = "checkpoint",
        required_unless_present = "checkpoint"
    )]
    pub db: Option<PathBuf>,
    /// A checkpoint the application made (never written to or deleted).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    #[command(flatten)]
    pub external: ExternalArgs,
    /// Files read and uploaded at once (small files are latency-bound:
    /// more than there are cores).
    #[arg(long, env = "ROCKUP_BACKUP_JOBS", default_value_t = BackupOptions::default().jobs.get())]
    pub jobs: usize,
    /// Bytes of file content held in memory at once, across all uploads.
    #[arg(long, env = "ROCKUP_MEMORY_BUDGET", default_value_t = BackupOptions::default().memory_budget)]
    pub memory_budget: u64,
    /// Tag the backup (repeatable).
    #[arg(long = "tag", env = "ROCKUP_TAGS", value_delimiter = ',', value_name = "K=V", value_parser = parse_tag)]
    pub tags: Vec<(String, String)>,
    /// Commit even if references are missing or invalid: external files that
    /// could not be captured are recorded (exit code 3).
    #[arg(long, env = "ROCKUP_ALLOW_MISSING_BLOBS")]
    pub allow_missing_blobs: bool,
    /// Re-read every external file even if unchanged since the previous backup.
    #[arg(long)]
    pub rehash: bool,
    /// Resolve every reference and read every file, report what would be
    /// uploaded and what could not be captured (exit code 3), write nothing
    /// to the repository (which must exist).
    #[arg(long)]
    pub dry_run: bool,
    /// Base directory for rockup's working files (default: beside the database).
    #[arg(long, env = "ROCKUP_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
    /// With --db: do not hard-link the external files (the tree under
    /// --blob-root) into the work directory at the point in time (saves one
    /// link per file; files the application deletes during the backup are
    /// then more likely to be missed).
    #[arg(long, env = "ROCKUP_NO_PRELINK")]
    pub no_prelink: bool,
    /// zstd level for small files and database logs stored in packs (1–22;
    /// 0: no compression). Content that does not shrink is stored as is.
    #[arg(long, env = "ROCKUP_COMPRESSION_LEVEL", value_name = "LEVEL", default_value_t = rockup::DEFAULT_COMPRESSION_LEVEL, value_parser = clap::value_parser!(i32).range(0..=22))]
    pub compression_level: i32,
    /// Repository format to write: 2 (packs, compression) or 1 (an object per
    /// file, readable by rockup 0.1; a repository already at 2 stays at 2).
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=2))]
    pub format_version: u32,
    /// Name the source this backup belongs to (default: the database's
    /// IDENTITY); `latest` and retention apply per source.
    #[arg(long, env = "ROCKUP_SOURCE", value_name = "NAME")]
    pub source: Option<String>,
    #[command(flatten)]
    pub lease: LeaseArg,
    /// Write Prometheus metrics (node_exporter textfile format) here after
    /// the run, atomically: last success time, duration, files, bytes,
    /// problems and requests (follow: its own figures, after every poll).
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
    /// With --write-key: where this host records what it backed up, so that
    /// the next backup reads only changed files (default:
    /// $XDG_CACHE_HOME/rockup or ~/.cache/rockup).
    #[arg(long, env = "ROCKUP_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct FollowArgs {
    /// Base backups: every backup flag applies (--db is required).
    #[command(flatten)]
    pub backup: BackupArgs,
    /// How often the WAL is read and shipped.
    #[arg(long, env = "ROCKUP_INTERVAL", value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: std::time::Duration,
    /// A new base backup after this long ("never": only when the WAL cannot be continued).
    #[arg(long, env = "ROCKUP_BASE_EVERY", value_name = "DURATION", default_value = "24h", value_parser = parse_optional_duration)]
    pub base_every: OptionalDuration,
    /// Warn when the shipped state is older than this.
    #[arg(long, env = "ROCKUP_LAG_WARNING", value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub lag_warning: std::time::Duration,
    /// Publish the last shipped sequence number here after every poll, for
    /// an application that defers deleting files until it is shipped.
    #[arg(long, env = "ROCKUP_SAFEPOINT_FILE", value_name = "FILE")]
    pub safepoint_file: Option<PathBuf>,
    /// How long links of new files under --blob-root are kept for records
    /// not read yet (at least three intervals).
    #[arg(long, env = "ROCKUP_KEEP_NEW_FILES", value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub keep_new_files: std::time::Duration,
}

/// A duration, or "never".
#[derive(Debug, Clone, Copy)]
pub struct OptionalDuration(pub Option<std::time::Duration>);

fn parse_optional_duration(text: &str) -> std::result::Result<OptionalDuration, String> {
    match text {
        "never" => Ok(OptionalDuration(None)),
        _ => humantime::parse_duration(text)
            .map(|d| OptionalDuration(Some(d)))
            .map_err(|e| e.to_string()),
    }
}

impl FollowArgs {
    /// The library's follow options and the database followed.
    pub fn options(&self) -> Result<(FollowOptions, PathBuf)> {
        let db = self.backup.db.clone().ok_or_else(|| {
            Error::Usage("follow needs --db DIR (a checkpoint cannot be followed)".into())
        })?;
        let mut options = FollowOptions::default();
        options.backup = self.backup.options()?;
        options.interval = self.interval;
        options.base_every = self.base_every.0;
        options.lag_warning = self.lag_warning;
        options.metrics_file = self.backup.metrics_file.clone();
        options.safepoint_file = self.safepoint_file.clone();
        options.keep_new_files = self.keep_new_files;
        Ok((options, db))
    }
}

#[derive(Debug, Args)]
pub struct LeaseArg {
    /// How long this run's lock stays live if it stops renewing it (it renews
    /// every third of that); a lock not renewed for its lease is taken for a
    /// killed run's, ignored, and removed by the next prune.
    #[arg(long = "lease", env = "ROCKUP_LEASE", value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    pub duration: std::time::Duration,
    #[command(flatten)]
    pub retry: RetryLockArg,
}

#[derive(Debug, Args)]
pub struct RetryLockArg {
    /// When a prune (or, for a prune, a backup) holds the repository, try
    /// again for this long (after 2 s, 4 s, … up to a minute apart) instead
    /// of failing with exit code 7.
    #[arg(long = "retry-lock", env = "ROCKUP_RETRY_LOCK", value_name = "DURATION", default_value = "0s", value_parser = humantime::parse_duration)]
    pub wait: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Only this source's backups.
    #[arg(long, env = "ROCKUP_SOURCE", value_name = "NAME")]
    pub source: Option<String>,
}

/// Where the external files are and how records name them (the flags keep
/// their `--blob-` spelling).
#[derive(Debug, Args)]
pub struct ExternalArgs {
    /// Directory the records' external file paths are relative to.
    #[arg(long, env = "ROCKUP_BLOB_ROOT", requires = "blob_ref")]
    pub blob_root: Option<PathBuf>,
    /// Column family holding the records that reference external files.
    #[arg(long, env = "ROCKUP_BLOB_CF", default_value = "default")]
    pub blob_cf: String,
    /// Where the path is: key, value, or json:/pointer into a JSON value.
    #[arg(long, env = "ROCKUP_BLOB_REF", requires = "blob_root")]
    pub blob_ref: Option<RefSource>,
    /// Only keys with this prefix reference external files (stripped with
    /// --blob-ref key).
    #[arg(long, env = "ROCKUP_BLOB_KEY_PREFIX")]
    pub blob_key_prefix: Option<String>,
    /// json:/pointer to the external file's expected SHA-256 (hex) in the value.
    #[arg(long, env = "ROCKUP_BLOB_SHA256", value_parser = parse_json_pointer)]
    pub blob_sha256: Option<String>,
    /// json:/pointer to the external file's expected size in the value.
    #[arg(long, env = "ROCKUP_BLOB_SIZE", value_parser = parse_json_pointer)]
    pub blob_size: Option<String>,
}

/// A point in time to restore to, from a base backup and the segments
/// `rockup follow` shipped after it (instead of --backup).
#[derive(Debug, Args)]
#[group(multiple = false)]
pub struct ToArgs {
    /// The last write batch at or before this sequence number.
    #[arg(long, value_name = "N")]
    pub to_sequence: Option<u64>,
    /// The last write batch follow had read by this time (RFC 3339, e.g.
    /// 2026-12-03T14:03:07Z).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub to_time: Option<chrono::DateTime<chrono::Utc>>,
    /// The last write batch follow shipped.
    #[arg(long)]
    pub to_latest: bool,
}

impl ToArgs {
    fn point(&self) -> Option<PointInTime> {
        match (self.to_sequence, self.to_time, self.to_latest) {
            (Some(n), _, _) => Some(PointInTime::Sequence(n)),
            (_, Some(t), _) => Some(PointInTime::Time(t)),
            (_, _, true) => Some(PointInTime::Latest),
            _ => None,
        }
    }
}

fn parse_time(text: &str) -> std::result::Result<chrono::DateTime<chrono::Utc>, String> {
    let time = humantime::parse_rfc3339_weak(text)
        .map_err(|e| format!("{e}: give a UTC time like 2026-12-03T14:03:07Z"))?;
    Ok(time.into())
}

/// Which backup a command reads.
#[derive(Debug, Args)]
pub struct Which {
    /// Backup id, or latest.
    #[arg(long, default_value = "latest")]
    pub backup: String,
    /// Whose `latest` (needed where the repository holds several sources).
    #[arg(long, env = "ROCKUP_SOURCE", value_name = "NAME")]
    pub source: Option<String>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Backup id, or latest.
    pub backup: String,
    /// Only the external files in this directory under the blob root.
    pub prefix: Option<String>,
    /// Whose `latest` (needed where the repository holds several sources).
    #[arg(long, env = "ROCKUP_SOURCE", value_name = "NAME")]
    pub source: Option<String>,
    /// Also show each file's SHA-256.
    #[arg(short, long)]
    pub long: bool,
}

#[derive(Debug, Args)]
pub struct FindArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Path pattern: `*.jpg` matches names in any directory, `users/*/a.jpg`
    /// whole paths (`*` and `?` stop at `/`, `**` does not).
    pub pattern: String,
    /// Only this source's backups.
    #[arg(long, env = "ROCKUP_SOURCE", value_name = "NAME")]
    pub source: Option<String>,
    /// Only this backup (repeatable); every backup by default.
    #[arg(long = "backup", value_name = "ID")]
    pub backups: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// The older backup (id or latest).
    pub from: String,
    /// The newer backup (id or latest).
    pub to: String,
    /// Whose `latest` (needed where the repository holds several sources).
    #[arg(long, env = "ROCKUP_SOURCE", value_name = "NAME")]
    pub source: Option<String>,
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Backup id, or latest.
    pub backup: String,
    /// The file's path under the blob root, as `rockup ls` shows it.
    pub path: String,
    /// Whose `latest` (needed where the repository holds several sources).
    #[arg(long, env = "ROCKUP_SOURCE", value_name = "NAME")]
    pub source: Option<String>,
    /// Write the file here (it gets the backed-up mode and mtime) instead of to stdout.
    #[arg(long, value_name = "FILE")]
    pub target: Option<PathBuf>,
    /// Replace --target when it exists.
    #[arg(long, requires = "target")]
    pub overwrite: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    #[command(flatten)]
    pub which: Which,
    /// Where to put the database (missing or empty).
    #[arg(long, required_unless_present = "no_db")]
    pub db_dir: Option<PathBuf>,
    #[command(flatten)]
    pub to: ToArgs,
    /// Where to put the external files (missing or empty; with --include,
    /// --exclude, --record or --no-db it may hold other files).
    #[arg(long)]
    pub blob_root: Option<PathBuf>,
    /// Restore only the external files matching this pattern (a glob; without
    /// a `/` it matches the file name; repeatable).
    #[arg(long, value_name = "GLOB", conflicts_with = "db_only")]
    pub include: Vec<String>,
    /// Do not restore the external files matching this pattern (repeatable).
    #[arg(long, value_name = "GLOB", conflicts_with = "db_only")]
    pub exclude: Vec<String>,
    /// Restore only the files the record at this key (in the external-files
    /// column family) references in the backup (repeatable).
    #[arg(long, value_name = "KEY", conflicts_with = "db_only")]
    pub record: Vec<String>,
    /// Restore external files only, not the database.
    #[arg(long, conflicts_with = "db_only")]
    pub no_db: bool,
    /// Restore the database only, not its external files.
    #[arg(long)]
    pub db_only: bool,
    /// With --include, --exclude, --record or --no-db: replace files that
    /// exist under the blob root.
    #[arg(long)]
    pub overwrite: bool,
    /// Requests in flight (objects, or ranges of a large object).
    #[arg(long, default_value_t = rockup::RESTORE_JOBS)]
    pub jobs: usize,
}

#[derive(Debug, Args)]
#[command(mut_arg("backup", |a| a.help("Backup id, latest, or all")))]
pub struct VerifyArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    #[command(flatten)]
    pub which: Which,
    /// Download and re-hash every object. Exit code 3 when damage is found,
    /// 4 when the only problems are objects the store could not return
    /// (verify again later).
    #[arg(long)]
    pub deep: bool,
    /// Read and re-hash a share of the objects, as --deep does: N% (at
    /// random), n/m (group n of m by name: 1/7 … 7/7 cover everything once)
    /// or a size (about that many bytes, at random, e.g. 5G).
    #[arg(long, value_name = "N%|n/m|SIZE", value_parser = DataSubset::parse, conflicts_with = "deep")]
    pub read_data_subset: Option<DataSubset>,
    /// Downloads at once (with --deep).
    #[arg(long, default_value_t = 8)]
    pub jobs: usize,
    /// Write Prometheus metrics (node_exporter textfile format) here after
    /// the run, atomically: last success time, duration, files, bytes,
    /// problems and requests.
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Apply the retention rules to this source's backups only (garbage
    /// collection is repository-wide either way).
    #[arg(long, env = "ROCKUP_SOURCE", value_name = "NAME")]
    pub source: Option<String>,
    #[command(flatten)]
    pub retention: RetentionArgs,
    #[command(flatten)]
    pub collect: CollectArgs,
}

/// Which backups stay (restic's rules; a backup stays when any rule keeps
/// it, and each group's newest always stays). N may be `unlimited`;
/// durations count back from the group's newest backup, as restic's do.
#[derive(Debug, Args)]
pub struct RetentionArgs {
    /// Keep the N newest backups.
    #[arg(long, env = "ROCKUP_KEEP_LAST", value_name = "N", value_parser = parse_count)]
    pub keep_last: Option<usize>,
    /// Keep the newest backup of each of the N most recent hours (UTC) that have one.
    #[arg(long, env = "ROCKUP_KEEP_HOURLY", value_name = "N", value_parser = parse_count)]
    pub keep_hourly: Option<usize>,
    /// Keep the newest backup of each of the N most recent days (UTC) that have one.
    #[arg(long, env = "ROCKUP_KEEP_DAILY", value_name = "N", value_parser = parse_count)]
    pub keep_daily: Option<usize>,
    /// Keep the newest backup of each of the N most recent ISO weeks that have one.
    #[arg(long, env = "ROCKUP_KEEP_WEEKLY", value_name = "N", value_parser = parse_count)]
    pub keep_weekly: Option<usize>,
    /// Keep the newest backup of each of the N most recent months that have one.
    #[arg(long, env = "ROCKUP_KEEP_MONTHLY", value_name = "N", value_parser = parse_count)]
    pub keep_monthly: Option<usize>,
    /// Keep the newest backup of each of the N most recent years that have one.
    #[arg(long, env = "ROCKUP_KEEP_YEARLY", value_name = "N", value_parser = parse_count)]
    pub keep_yearly: Option<usize>,
    /// Keep every backup made less than this long before the newest (e.g. 7d,
    /// 36h, 2months; `m` is minutes).
    #[arg(long, env = "ROCKUP_KEEP_WITHIN", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub keep_within: Option<std::time::Duration>,
    /// Keep the newest backup of each hour less than this long before the newest.
    #[arg(long, env = "ROCKUP_KEEP_WITHIN_HOURLY", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub keep_within_hourly: Option<std::time::Duration>,
    /// Keep the newest backup of each day less than this long before the newest.
    #[arg(long, env = "ROCKUP_KEEP_WITHIN_DAILY", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub keep_within_daily: Option<std::time::Duration>,
    /// Keep the newest backup of each week less than this long before the newest.
    #[arg(long, env = "ROCKUP_KEEP_WITHIN_WEEKLY", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub keep_within_weekly: Option<std::time::Duration>,
    /// Keep the newest backup of each month less than this long before the newest.
    #[arg(long, env = "ROCKUP_KEEP_WITHIN_MONTHLY", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub keep_within_monthly: Option<std::time::Duration>,
    /// Keep the newest backup of each year less than this long before the newest.
    #[arg(long, env = "ROCKUP_KEEP_WITHIN_YEARLY", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub keep_within_yearly: Option<std::time::Duration>,
    /// Keep every backup with this tag (repeatable).
    #[arg(long = "keep-tag", env = "ROCKUP_KEEP_TAGS", value_delimiter = ',', value_name = "K=V", value_parser = parse_tag)]
    pub keep_tags: Vec<(String, String)>,
    /// Apply the rules to each group on its own: source (the default), tags,
    /// source,tags, or none (the whole repository as one group).
    #[arg(
        long,
        env = "ROCKUP_GROUP_BY",
        value_name = "KEYS",
        default_value = "source"
    )]
    pub group_by: GroupBy,
}

/// How forgetting is carried out and what is collected after it.
#[derive(Debug, Args)]
pub struct CollectArgs {
    /// Leave unreferenced objects younger than this (objects of interrupted backups).
    #[arg(long, env = "ROCKUP_GRACE", value_name = "DURATION", default_value = "24h", value_parser = humantime::parse_duration)]
    pub grace: std::time::Duration,
    /// Repack packs of which less than this percentage is still referenced
    /// (their live entries are copied into new packs, the old ones deleted);
    /// 0 never repacks.
    #[arg(long, env = "ROCKUP_REPACK_BELOW", value_name = "PERCENT", default_value_t = 70.0, value_parser = parse_percent)]
    pub repack_below: f64,
    /// Show what would be forgotten and deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub lease: LeaseArg,
    /// Write Prometheus metrics (node_exporter textfile format) here after
    /// the run, atomically: last success time, duration, files, bytes,
    /// problems and requests.
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ForgetArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// The backups to forget (ids as `rockup list` shows them).
    #[arg(required = true, value_name = "BACKUP-ID")]
    pub backups: Vec<BackupId>,
    #[command(flatten)]
    pub collect: CollectArgs,
}

impl PruneArgs {
    pub fn options(&self) -> PruneOptions {
        let mut options = self.collect.options();
        let (policy, rules) = (&mut options.policy, &self.retention);
        policy.keep_last = rules.keep_last;
        policy.keep_hourly = rules.keep_hourly;
        policy.keep_daily = rules.keep_daily;
        policy.keep_weekly = rules.keep_weekly;
        policy.keep_monthly = rules.keep_monthly;
        policy.keep_yearly = rules.keep_yearly;
        policy.keep_within = rules.keep_within;
        policy.keep_within_hourly = rules.keep_within_hourly;
        policy.keep_within_daily = rules.keep_within_daily;
        policy.keep_within_weekly = rules.keep_within_weekly;
        policy.keep_within_monthly = rules.keep_within_monthly;
        policy.keep_within_yearly = rules.keep_within_yearly;
        policy.keep_tags = rules.keep_tags.clone();
        options.group_by = rules.group_by;
        options.source = self.source.clone();
        options
    }
}

impl ForgetArgs {
    pub fn options(&self) -> PruneOptions {
        let mut options = self.collect.options();
        options.forget = self.backups.clone();
        options
    }
}

impl CollectArgs {
    fn options(&self) -> PruneOptions {
        let mut options = PruneOptions::default();
        options.grace = self.grace;
        options.dry_run = self.dry_run;
        options.lease = self.lease.duration;
        options.retry_lock = self.lease.retry.wait;
        options.repack_below = self.repack_below / 100.0;
        options
    }
}

/// A count of backups or periods, or `unlimited`.
fn parse_count(text: &str) -> std::result::Result<usize, String> {
    match text {
        "unlimited" => Ok(rockup::UNLIMITED),
        _ => text
            .parse()
            .map_err(|_| format!("{text:?} is not a count (a whole number, or unlimited)")),
    }
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub command: ConfigCommand,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print every setting in effect, where it came from (profile or
    /// environment) and the profile's schedule hints; secrets redacted.
    ///
    /// A profile is TOML. At the top: repository, store-options (a table),
    /// rate-limit, limit-upload, limit-download, password-file, password-command, identity, write-key,
    /// cache-dir, source, lease, retry-lock, log-file, quiet, no-progress.
    /// [backup]: db,
    /// blob-root, blob-cf, blob-ref, blob-key-prefix, blob-sha256,
    /// blob-size, tags (a list), jobs, memory-budget, work-dir,
    /// compression-level, no-prelink, allow-missing-blobs. [follow]:
    /// interval, base-every, lag-warning, safepoint-file, keep-new-files.
    /// [prune]: keep-last, keep-hourly … keep-yearly, keep-within,
    /// keep-within-hourly … keep-within-yearly, keep-tags, group-by, grace,
    /// repack-below. [schedule]: free-form hints, e.g. backup = "daily 02:15".
    Show,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write rockup.1, rockup-backup.1, … here (replacing them) instead of
    /// printing rockup.1.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory to work in (missing or empty; default: a new temporary directory).
    pub dir: Option<PathBuf>,
}

fn parse_tag(text: &str) -> std::result::Result<(String, String), String> {
    let (k, v) = text
        .split_once('=')
        .ok_or_else(|| format!("tag {text:?} is not K=V"))?;
    if k.is_empty() {
        return Err(format!("tag {text:?} has an empty key"));
    }
    Ok((k.to_string(), v.to_string()))
}

fn parse_json_pointer(text: &str) -> std::result::Result<String, String> {
    match text.parse::<RefSource>() {
        Ok(RefSource::Json(pointer)) => Ok(pointer),
        Ok(_) => Err(format!("{text:?} is not json:/pointer")),
        Err(e) => Err(e),
    }
}

/// Parses `key=value` store options as given on the command line.
/// `20M`, `512K`, `1.5G`, `100000` (bytes per second; an optional `B`, `iB`
/// or `/s` is accepted).
fn parse_rate(text: &str) -> std::result::Result<u64, String> {
    let bytes = rockup::parse_bytes(text.trim().trim_end_matches("/s"));
    bytes
        .filter(|&n| n >= 1)
        .ok_or_else(|| format!("{text:?} is not a rate in bytes per second (e.g. 20M, 512KiB/s)"))
}

fn parse_store_option(text: &str) -> std::result::Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("store option {text:?} is not key=value"))?;
    Ok((key.trim().to_ascii_lowercase(), value.to_string()))
}

impl BackupArgs {
    /// The database or checkpoint backed up, as text (the metrics' source
    /// label where --source is not given).
    pub fn source_path(&self) -> Option<&str> {
        self.db.as_ref().or(self.checkpoint.as_ref())?.to_str()
    }

    /// The library's backup options.
    pub fn options(&self) -> Result<BackupOptions> {
        let b = &self.external;
        let external = match (&b.blob_root, &b.blob_ref) {
            (Some(root), Some(reference)) => Some(ExternalFiles::new(
                root,
                &b.blob_cf,
                ResolverConfig {
                    reference: reference.clone(),
                    key_prefix: b.blob_key_prefix.clone(),
                    sha256_pointer: b.blob_sha256.clone(),
                    size_pointer: b.blob_size.clone(),
                },
            )),
            _ if b.blob_key_prefix.is_some() || b.blob_sha256.is_some() || b.blob_size.is_some() => {
                return Err(Error::Usage("--blob-key-prefix, --blob-sha256 and --blob-size need --blob-root and --blob-ref".into()))
            }
            _ => None,
        };
        let mut options = BackupOptions::default();
        options.external = external;
        options.jobs = Jobs::from(self.jobs);
        options.memory_budget = self.memory_budget;
        options.tags = self.tags.iter().cloned().collect::<BTreeMap<_, _>>();
        options.allow_missing_files = self.allow_missing_blobs;
        options.rehash = self.rehash;
        options.dry_run = self.dry_run;
        options.work_dir = self.work_dir.clone();
        options.prelink = !self.no_prelink;
        options.source = self.source.clone();
        options.lease = self.lease.duration;
        options.retry_lock = self.lease.retry.wait;
        options.format = Format::from_number(self.format_version).expect("clap checks the range");
        options.compression_level = self.compression_level;
        options.cache_dir = self.cache_dir.clone();
        Ok(options)
    }
}

impl RestoreArgs {
    pub fn options(&self) -> RestoreOptions {
        let mut options = RestoreOptions::default();
        options.backup = self.which.backup.clone();
        options.db_dir = self.db_dir.clone().unwrap_or_default();
        options.blob_root = self.blob_root.clone();
        options.jobs = Jobs::from(self.jobs);
        options.source = self.which.source.clone();
        options.to = self.to.point();
        options.database = !self.no_db;
        options.files = self.files();
        options.overwrite = self.overwrite;
        options
    }

    fn files(&self) -> FileSelection {
        let matching = FileMatch {
            include: self.include.clone(),
            exclude: self.exclude.clone(),
            records: self.record.iter().map(|k| k.as_bytes().to_vec()).collect(),
        };
        match (self.db_only, self.no_db) {
            (true, _) => FileSelection::None,
            (false, false) if matching == FileMatch::default() => FileSelection::All,
            _ => FileSelection::Matching(matching),
        }
    }
}

impl VerifyArgs {
    pub fn options(&self) -> VerifyOptions {
        let mut options = VerifyOptions::default();
        options.backup = self.which.backup.clone();
        options.source = self.which.source.clone();
        options.deep = self.deep;
        options.read_data_subset = self.read_data_subset;
        options.jobs = Jobs::from(self.jobs);
        options
    }
}

fn parse_percent(s: &str) -> Result<f64, String> {
    match s.trim_end_matches('%').parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("{s:?} is not a percentage from 0 to 100")),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_rate;

    #[test]
    fn rates_read_like_people_write_them() {
        assert_eq!(parse_rate("100000"), Ok(100_000));
        assert_eq!(parse_rate("20M"), Ok(20 << 20));
        assert_eq!(parse_rate("512KiB/s"), Ok(512 << 10));
        assert_eq!(parse_rate("1.5G"), Ok(3 << 29));
        assert_eq!(parse_rate("8MB"), Ok(8 << 20));
        for wrong in ["", "0", "-5M", "10X", "fast", "NaN"] {
            assert!(parse_rate(wrong).is_err(), "{wrong:?} accepted");
        }
    }
}
