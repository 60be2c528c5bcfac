//! Profiles: the settings a host keeps for one repository and database, in a
//! TOML file (`--profile NAME` or `ROCKUP_PROFILE`: `NAME.toml` in
//! `$XDG_CONFIG_HOME/rockup/`, else `~/.config/rockup/`, then
//! `/etc/rockup/`; a name with a `/` is the file itself).
//!
//! Every setting stands for one environment variable (`ROCKUP_…`, listed in
//! [`SETTINGS`]), which the profile sets before the command line is parsed
//! unless the environment already has it: a flag on the command line wins,
//! then the environment, then the profile, then the default. So a profile is
//! checked by the same parsers as the flags, and `config show` can say where
//! each value came from.

use std::path::{Path, PathBuf};

use serde::Serialize;

use rockup::{Error, Result};

/// A profile setting: its table (`""` for the top level), its name, and the
/// variable it sets.
struct Setting {
    table: &'static str,
    key: &'static str,
    variable: &'static str,
}

macro_rules! settings {
    ($($table:literal $key:literal => $variable:literal),* $(,)?) => {
        &[$(Setting { table: $table, key: $key, variable: $variable }),*]
    };
}

/// Every setting a profile may hold.
const SETTINGS: &[Setting] = settings![
    "" "repository" => "ROCKUP_REPOSITORY",
    "" "store-options" => "ROCKUP_STORE_OPTIONS",
    "" "rate-limit" => "ROCKUP_RATE_LIMIT",
    "" "limit-upload" => "ROCKUP_LIMIT_UPLOAD",
    "" "limit-download" => "ROCKUP_LIMIT_DOWNLOAD",
    "" "password-file" => "ROCKUP_PASSWORD_FILE",
    "" "password-command" => "ROCKUP_PASSWORD_COMMAND",
    "" "identity" => "ROCKUP_IDENTITY_FILE",
    "" "write-key" => "ROCKUP_WRITE_KEY_FILE",
    "" "cache-dir" => "ROCKUP_CACHE_DIR",
    "" "source" => "ROCKUP_SOURCE",
    "" "lease" => "ROCKUP_LEASE",
    "" "retry-lock" => "ROCKUP_RETRY_LOCK",
    "" "log-file" => "ROCKUP_LOG_FILE",
    "" "quiet" => "ROCKUP_QUIET",
    "" "no-progress" => "ROCKUP_NO_PROGRESS",
    "backup" "db" => "ROCKUP_DB",
    "backup" "blob-root" => "ROCKUP_BLOB_ROOT",
    "backup" "blob-cf" => "ROCKUP_BLOB_CF",
    "backup" "blob-ref" => "ROCKUP_BLOB_REF",
    "backup" "blob-key-prefix" => "ROCKUP_BLOB_KEY_PREFIX",
    "backup" "blob-sha256" => "ROCKUP_BLOB_SHA256",
    "backup" "blob-size" => "ROCKUP_BLOB_SIZE",
    "backup" "tags" => "ROCKUP_TAGS",
    "backup" "jobs" => "ROCKUP_BACKUP_JOBS",
    "backup" "memory-budget" => "ROCKUP_MEMORY_BUDGET",
    "backup" "work-dir" => "ROCKUP_WORK_DIR",
    "backup" "compression-level" => "ROCKUP_COMPRESSION_LEVEL",
    "backup" "no-prelink" => "ROCKUP_NO_PRELINK",
    "backup" "allow-missing-blobs" => "ROCKUP_ALLOW_MISSING_BLOBS",
    "follow" "interval" => "ROCKUP_INTERVAL",
    "follow" "base-every" => "ROCKUP_BASE_EVERY",
    "follow" "lag-warning" => "ROCKUP_LAG_WARNING",
    "follow" "safepoint-file" => "ROCKUP_SAFEPOINT_FILE",
    "follow" "keep-new-files" => "ROCKUP_KEEP_NEW_FILES",
    "prune" "keep-last" => "ROCKUP_KEEP_LAST",
    "prune" "keep-hourly" => "ROCKUP_KEEP_HOURLY",
    "prune" "keep-daily" => "ROCKUP_KEEP_DAILY",
    "prune" "keep-weekly" => "ROCKUP_KEEP_WEEKLY",
    "prune" "keep-monthly" => "ROCKUP_KEEP_MONTHLY",
    "prune" "keep-yearly" => "ROCKUP_KEEP_YEARLY",
    "prune" "keep-within" => "ROCKUP_KEEP_WITHIN",
    "prune" "keep-within-hourly" => "ROCKUP_KEEP_WITHIN_HOURLY",
    "prune" "keep-within-daily" => "ROCKUP_KEEP_WITHIN_DAILY",
    "prune" "keep-within-weekly" => "ROCKUP_KEEP_WITHIN_WEEKLY",
    "prune" "keep-within-monthly" => "ROCKUP_KEEP_WITHIN_MONTHLY",
    "prune" "keep-within-yearly" => "ROCKUP_KEEP_WITHIN_YEARLY",
    "prune" "keep-tags" => "ROCKUP_KEEP_TAGS",
    "prune" "group-by" => "ROCKUP_GROUP_BY",
    "prune" "grace" => "ROCKUP_GRACE",
    "prune" "repack-below" => "ROCKUP_REPACK_BELOW",
];

/// Settings that exclude one another (clap refuses both at once): the
/// profile's is left out when the command line or the environment gives its
/// rival, so `--password-command` overrides a profile's `password-file`.
const RIVALS: &[(&str, &str)] = &[
    ("password-file", "password-command"),
    ("password-command", "password-file"),
    ("db", "checkpoint"),
];

/// The table of free-form hints for the scheduler (`config show` prints them).
const SCHEDULE: &str = "schedule";
/// The largest profile read.
const PROFILE_LIMIT: u64 = 1 << 20;

/// A profile as loaded: where it is, what it set, what it left to the
/// environment, and its schedule hints.
#[derive(Debug, Default, Serialize)]
pub struct Loaded {
    pub file: Option<PathBuf>,
    pub settings: Vec<Effective>,
    pub schedule: Vec<(String, String)>,
}

/// One setting's value and where it came from.
#[derive(Debug, Serialize)]
pub struct Effective {
    pub setting: String,
    pub variable: &'static str,
    pub value: String,
    pub from: &'static str,
}

/// Loads the profile named by `--profile` or `ROCKUP_PROFILE` (if any) into
/// the environment, and records every setting's effective value.
///
/// # Safety
/// Sets environment variables: call it before any other thread exists.
pub unsafe fn load(args: &[String]) -> Result<Loaded> {
    let mut loaded = Loaded::default();
    let mut in_profile = Vec::new();
    if let Some(name) = profile_name(args) {
        let file = find(&name)?;
        let table = read(&file)?;
        for (setting, value) in settings_of(&table, &file)? {
            let overridden =
                std::env::var_os(setting.variable).is_some() || rival_given(setting, args);
            if !overridden {
                // SAFETY: the caller guarantees no other thread exists.
                unsafe { std::env::set_var(setting.variable, &value) };
            }
            in_profile.push((setting.variable, overridden));
        }
        loaded.schedule = schedule_of(&table, &file)?;
        loaded.file = Some(file);
    }
    loaded.settings = effective(&in_profile);
    Ok(loaded)
}

/// Whether the command line or the environment gives a setting that excludes
/// `setting`.
fn rival_given(setting: &Setting, args: &[String]) -> bool {
    let rivals = RIVALS.iter().filter(|(key, _)| *key == setting.key);
    rivals.map(|(_, rival)| *rival).any(|rival| {
        let flag = format!("--{rival}");
        let on_command_line = args
            .iter()
            .take_while(|a| *a != "--")
            .any(|a| *a == flag || a.starts_with(&format!("{flag}=")));
        let variable = SETTINGS.iter().find(|s| s.key == rival);
        on_command_line || variable.is_some_and(|s| std::env::var_os(s.variable).is_some())
    })
}

/// `--profile NAME` (or `--profile=NAME`) before any `--`, else `ROCKUP_PROFILE`.
fn profile_name(args: &[String]) -> Option<String> {
    let mut args = args.iter().skip(1).take_while(|a| *a != "--");
    while let Some(arg) = args.next() {
        if arg == "--profile" {
            return args.next().cloned();
        }
        if let Some(name) = arg.strip_prefix("--profile=") {
            return Some(name.to_string());
        }
    }
    std::env::var("ROCKUP_PROFILE")
        .ok()
        .filter(|n| !n.is_empty())
}

/// The profile's file: a path as given, or `NAME.toml` in the first
/// directory of the search that has it.
fn find(name: &str) -> Result<PathBuf> {
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    if name.is_empty() || name.starts_with('.') {
        return Err(Error::Usage(format!("{name:?} is not a profile name")));
    }
    let searched = search_path();
    let file_name = format!("{name}.toml");
    searched
        .iter()
        .map(|dir| dir.join(&file_name))
        .find(|file| file.is_file())
        .ok_or_else(|| {
            let dirs: Vec<String> = searched.iter().map(|d| d.display().to_string()).collect();
            Error::Usage(format!(
                "no profile {name:?}: {file_name} is in none of {}; create it there, or give the file's path",
                dirs.join(", ")
            ))
        })
}

/// Where profiles are looked for, in order.
fn search_path() -> Vec<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let user = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
        .or_else(|| home.map(|h| h.join(".config")));
    let mut dirs: Vec<PathBuf> = user.into_iter().map(|d| d.join("rockup")).collect();
    dirs.push(PathBuf::from("/etc/rockup"));
    dirs
}

fn read(file: &Path) -> Result<toml::Table> {
    use std::io::Read;
    let io = |source| Error::Io {
        path: file.to_path_buf(),
        source,
    };
    let opened = std::fs::File::open(file).map_err(io)?;
    refuse_unsafe_ownership(file, &opened.metadata().map_err(io)?)?;
    // Whoever may write the directory may replace the file.
    let dir = rockup::files::parent_dir(file);
    let dir_io = |source| Error::Io {
        path: dir.to_path_buf(),
        source,
    };
    refuse_unsafe_ownership(dir, &std::fs::metadata(dir).map_err(dir_io)?)?;
    let mut text = String::new();
    opened
        .take(PROFILE_LIMIT + 1)
        .read_to_string(&mut text)
        .map_err(io)?;
    if text.len() as u64 > PROFILE_LIMIT {
        return Err(Error::Usage(format!(
            "{}: larger than 1 MiB; is it a profile?",
            file.display()
        )));
    }
    text.parse::<toml::Table>()
        .map_err(|e| Error::Usage(format!("{}: {e}", file.display())))
}

/// A profile names commands rockup runs (`password-command`) and where keys
/// are: one that another user owns or that others may write is refused, as
/// ssh refuses such configs.
fn refuse_unsafe_ownership(file: &Path, meta: &std::fs::Metadata) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(Error::Usage(format!(
            "{}: owned by user {}, neither root nor the user running rockup ({euid}), and a profile says which commands rockup runs; `chown` it",
            file.display(),
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 == 0 {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "{}: writable by group or others (mode {:o}), and a profile says which commands rockup runs and which keys it reads (whoever may write its directory may replace it); `chmod go-w` it",
        file.display(),
        meta.mode() & 0o7777
    )))
}

/// Each setting in `table` with the variable's value it stands for; an
/// unknown key, or one in the wrong table, is refused by name.
fn settings_of(table: &toml::Table, file: &Path) -> Result<Vec<(&'static Setting, String)>> {
    let mut found = Vec::new();
    for (key, value) in table {
        match value {
            toml::Value::Table(_) if key == SCHEDULE => continue,
            toml::Value::Table(inner) if key != "store-options" => {
                for (inner_key, value) in inner {
                    found.push((lookup(key, inner_key, file)?, value));
                }
            }
            _ => found.push((lookup("", key, file)?, value)),
        }
    }
    found
        .into_iter()
        .map(|(setting, value)| Ok((setting, variable_value(setting, value, file)?)))
        .collect()
}

fn lookup(table: &str, key: &str, file: &Path) -> Result<&'static Setting> {
    SETTINGS
        .iter()
        .find(|s| s.table == table && s.key == key)
        .ok_or_else(|| {
            let name = full_name(table, key);
            let home = SETTINGS.iter().find(|s| s.key == key);
            let hint = match home {
                Some(s) => format!("it belongs in [{}]", s.table),
                None => "`rockup config show --help` lists the settings".into(),
            };
            Error::Usage(format!(
                "{}: unknown setting {name:?}; {hint}",
                file.display()
            ))
        })
}

fn full_name(table: &str, key: &str) -> String {
    match table {
        "" => key.to_string(),
        _ => format!("{table}.{key}"),
    }
}

/// A TOML value as the variable's text: lists joined by commas, a table of
/// store options as `key=value` pairs.
fn variable_value(setting: &Setting, value: &toml::Value, file: &Path) -> Result<String> {
    let scalar = |value: &toml::Value| match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(n) => Some(n.to_string()),
        toml::Value::Float(x) => Some(x.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    };
    let joined = match value {
        toml::Value::Array(items) => items
            .iter()
            .map(scalar)
            .collect::<Option<Vec<_>>>()
            .map(|v| v.join(",")),
        toml::Value::Table(pairs) if setting.key == "store-options" => pairs
            .iter()
            .map(|(k, v)| scalar(v).map(|v| format!("{k}={v}")))
            .collect::<Option<Vec<_>>>()
            .map(|v| v.join(",")),
        other => scalar(other),
    };
    joined.ok_or_else(|| {
        Error::Usage(format!(
            "{}: {} has a value of the wrong shape (a string, number, boolean or list of them)",
            file.display(),
            full_name(setting.table, setting.key)
        ))
    })
}

fn schedule_of(table: &toml::Table, file: &Path) -> Result<Vec<(String, String)>> {
    let Some(schedule) = table.get(SCHEDULE) else {
        return Ok(Vec::new());
    };
    let wrong = || {
        Error::Usage(format!(
            "{}: [schedule] holds strings, e.g. backup = \"daily 02:15\"",
            file.display()
        ))
    };
    let schedule = schedule.as_table().ok_or_else(wrong)?;
    schedule
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.as_str().ok_or_else(wrong)?.to_string())))
        .collect()
}

/// Every setting that has a value, and whether the profile (`in_profile`:
/// the variables it holds, and whether the environment overrode each) or
/// the environment gave it.
fn effective(in_profile: &[(&'static str, bool)]) -> Vec<Effective> {
    SETTINGS
        .iter()
        .filter_map(|setting| {
            let value = std::env::var(setting.variable).ok()?;
            let from = match in_profile.iter().find(|(v, _)| *v == setting.variable) {
                Some((_, false)) => "profile",
                Some((_, true)) => "environment, over the profile",
                None => "environment",
            };
            Some(Effective {
                setting: full_name(setting.table, setting.key),
                variable: setting.variable,
                value: redacted(setting, &value),
                from,
            })
        })
        .collect()
}

/// Words in a store option's key that mark its value as a secret.
const SECRET_WORDS: [&str; 7] = [
    "secret",
    "key",
    "token",
    "password",
    "sas",
    "signature",
    "credential",
];

/// `value` with what may be secret replaced: a repository URL's user info
/// and query, and store options whose key names a secret.
fn redacted(setting: &Setting, value: &str) -> String {
    match setting.key {
        "repository" => match url::Url::parse(value) {
            Ok(mut url) if url.query().is_some() || !url.username().is_empty() => {
                let _ = url.set_username("");
                let _ = url.set_password(None);
                if url.query().is_some() {
                    url.set_query(Some("REDACTED"));
                }
                url.to_string()
            }
            _ => value.to_string(),
        },
        "store-options" => value
            .split(',')
            .map(|pair| match pair.split_once('=') {
                Some((k, _))
                    if SECRET_WORDS
                        .iter()
                        .any(|w| k.to_ascii_lowercase().contains(w)) =>
                {
                    format!("{k}=REDACTED")
                }
                _ => pair.to_string(),
            })
            .collect::<Vec<_>>()
            .join(","),
        _ => value.to_string(),
    }
}

/// `rockup config show`: the profile file, every setting in effect (secrets
/// redacted) with where it came from, and the schedule hints — on stdout.
pub fn show(loaded: &Loaded, json: bool) -> Result<(serde_json::Value, i32)> {
    if json {
        let document = serde_json::to_value(loaded).expect("settings serialize");
        return Ok((document, 0));
    }
    let mut lines = vec![match &loaded.file {
        Some(file) => format!("profile {}", file.display()),
        None => "no profile (--profile NAME or ROCKUP_PROFILE names one)".to_string(),
    }];
    for e in &loaded.settings {
        lines.push(format!(
            "{:<28} {:<40} {} ({})",
            e.setting, e.value, e.variable, e.from
        ));
    }
    for (what, when) in &loaded.schedule {
        lines.push(format!("schedule.{what:<19} {when}"));
    }
    crate::inspect::print_lines(&lines)?;
    Ok((serde_json::Value::Null, 0))
}
