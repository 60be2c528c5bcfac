//! Where output goes: results on stdout; summaries, progress and logs on
//! stderr (summaries silenced by `--quiet`), and the logs also appended to
//! `--log-file`.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tracing_subscriber::prelude::*;
use tracing_subscriber::{fmt, EnvFilter};

use rockup::{Error, Result};

static QUIET: AtomicBool = AtomicBool::new(false);

/// A summary line on stderr, unless `--quiet`.
macro_rules! say {
    ($($arg:tt)*) => {
        if !$crate::output::quiet() {
            eprintln!($($arg)*);
        }
    };
}
pub(crate) use say;

/// Whether `--quiet` silenced summaries.
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// How much the logs say and where they go.
pub struct Logging<'a> {
    pub verbose: u8,
    pub quiet: bool,
    pub log_file: Option<&'a Path>,
}

impl Logging<'_> {
    /// Installs the logger: stderr at the level `-v`/`-q` ask for, the log
    /// file at least at info (`RUST_LOG` overrides both).
    pub fn init(&self) -> Result<()> {
        QUIET.store(self.quiet, Ordering::Relaxed);
        let level = match (self.quiet, self.verbose) {
            (true, 0) => "warn",
            (_, 0) => "rockup=info,warn",
            (_, 1) => "rockup=debug,info",
            _ => "trace",
        };
        let file_level = if self.quiet {
            "rockup=info,warn"
        } else {
            level
        };
        let stderr = fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            .with_filter(filter(level));
        let file = match self.log_file {
            Some(path) => Some(
                fmt::layer()
                    .with_writer(Mutex::new(open_log(path)?))
                    .with_ansi(false)
                    .with_target(false)
                    .with_filter(filter(file_level)),
            ),
            None => None,
        };
        tracing_subscriber::registry()
            .with(stderr)
            .with(file)
            .init();
        Ok(())
    }
}

fn filter(default: &str) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default))
}

/// The log file, appended to (created with mode 0600: logs name paths and
/// keys). A symlink is not followed, and anything but a regular file (a FIFO
/// would block, a device take the logs elsewhere) is refused.
fn open_log(path: &Path) -> Result<std::fs::File> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(io)?;
    if !file.metadata().map_err(io)?.is_file() {
        return Err(Error::Usage(format!(
            "--log-file {}: not a regular file; give the path of a file to append the logs to",
            path.display()
        )));
    }
    Ok(file)
}
