//! The `rockup` binary: parse arguments, set up logging, run one command of the
//! library under signal handling, print the result (human text on stderr, or one
//! JSON document on stdout with --json; a failure's JSON document on stderr),
//! and exit with the documented code:
//! 0 clean, 1 operational error, 2 usage, 3 problems found, 4 only unreadable
//! objects, 5 a key missing, wrong or write-only, 6 no repository there, 7 the
//! repository locked, 130/143 interrupted.

mod args;
mod commands;
mod demo;
mod follow;
mod generate;
mod inspect;
mod keys;
mod metrics;
mod output;
mod profile;
mod progress;
mod secrets;

use clap::Parser;
use serde_json::{json, Value};
use tokio::signal::unix::{signal, SignalKind};

use args::{Cli, Command};
use rockup::{escape_controls, Error};

/// How long clean-up may take after a signal.
const CLEANUP_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);
/// Problems listed on stderr at most.
const PROBLEMS_SHOWN: usize = 50;

/// Threads for blocking work (file I/O, hashing, compression).
const BLOCKING_THREADS: usize = 64;

/// `ROCKUP_REPO`, the older name of `ROCKUP_REPOSITORY`, still works.
fn accept_older_variable_names() {
    if std::env::var_os("ROCKUP_REPOSITORY").is_none() {
        if let Some(repo) = std::env::var_os("ROCKUP_REPO") {
            // SAFETY: called first in main, before any other thread exists.
            unsafe { std::env::set_var("ROCKUP_REPOSITORY", repo) };
        }
    }
}

fn main() {
    return_large_buffers_to_the_system();
    accept_older_variable_names();
    let args: Vec<String> = std::env::args().collect();
    // SAFETY: no other thread exists yet.
    let profile = match unsafe { profile::load(&args) } {
        Ok(profile) => profile,
        Err(e) => std::process::exit(report_error(&e, args.iter().any(|a| a == "--json"))),
    };
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => exit_on_parse_error(e),
    };
    let logging = output::Logging {
        verbose: cli.verbose,
        quiet: cli.quiet,
        log_file: cli.log_file.as_deref(),
    };
    if let Err(e) = logging.init() {
        std::process::exit(report_error(&e, cli.json));
    }
    // File I/O, hashing and decoding run as blocking tasks, a few per request
    // in flight; tokio's default of up to 512 threads let a restore of many
    // small files grow to hundreds of threads, each with its own stack and
    // allocator cache.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
        .expect("tokio runtime starts");
    let json = cli.json;
    let display = progress::Display::choose(json, cli.quiet || cli.no_progress);
    let result = match cli.command {
        // follow stops itself on a signal, after shipping what it read.
        Command::Follow(args) => runtime.block_on(follow::follow(args, json, display)),
        Command::Config(_) => profile::show(&profile, json),
        command => runtime.block_on(run_until_signal(command, display, json)),
    };
    if matches!(result, Err(Error::Interrupted(_))) {
        // Let cancelled work clean up — lock removal and multipart aborts, with
        // their retries — within a bound, then blocking tasks that share the
        // work directory (removed when the last of them lets go).
        let left = runtime.block_on(rockup::wait_for_cleanup(CLEANUP_LIMIT));
        if left > 0 {
            eprintln!("rockup: {left} clean-up request(s) unfinished after {CLEANUP_LIMIT:?}; `rockup unlock` removes a lock left behind");
        }
        runtime.shutdown_timeout(CLEANUP_LIMIT);
    }
    let code = match result {
        Ok((value, code)) => {
            if json && !value.is_null() {
                print_json(&value);
            }
            code
        }
        Err(error) => report_error(&error, json),
    };
    std::process::exit(code);
}

/// Usage errors exit 2 (followed by a JSON line on stderr under --json);
/// --help and --version exit 0.
fn exit_on_parse_error(e: clap::Error) -> ! {
    let code = if e.use_stderr() { 2 } else { 0 };
    let _ = e.print();
    if code != 0 && std::env::args().any(|a| a == "--json") {
        let message = e.kind().to_string();
        eprintln!(
            "{}",
            json!({"error": format!("usage: {message}"), "exit_code": code})
        );
    }
    std::process::exit(code);
}

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON output")
    );
}

/// Prints `error` and the problems it carries on stderr (as one JSON line
/// under --json); returns its exit code.
fn report_error(error: &Error, json: bool) -> i32 {
    if json {
        let mut doc = json!({"error": error.to_string(), "exit_code": error.exit_code()});
        if let Error::Problems { problems, .. } = error {
            doc["problems"] = json!(problems);
        }
        eprintln!("{doc}");
        return error.exit_code();
    }
    eprintln!("rockup: error: {}", escape_controls(&error.to_string()));
    let problems = match error {
        Error::Problems { problems, .. } => problems.as_slice(),
        _ => &[],
    };
    for problem in problems.iter().take(PROBLEMS_SHOWN) {
        eprintln!("  {problem}");
    }
    if problems.len() > PROBLEMS_SHOWN {
        eprintln!("  … and {} more", problems.len() - PROBLEMS_SHOWN);
    }
    error.exit_code()
}

/// File contents pass through buffers of up to 8 MiB on many threads. glibc
/// raises its mmap threshold after such a buffer is freed, so later ones come
/// from per-thread heaps that keep the memory: peak RSS measured 177 MiB for a
/// backup with a 32 MiB budget. A fixed threshold keeps large buffers mmapped
/// and returned when freed (70 MiB, the same speed).
fn return_large_buffers_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// Runs `command` until it ends or a signal stops it: SIGINT (exit 130), or
/// SIGTERM, SIGHUP or SIGQUIT (exit 143, like SIGTERM).
async fn run_until_signal(
    command: Command,
    display: progress::Display,
    json: bool,
) -> rockup::Result<(Value, i32)> {
    let handler = |kind, name| signal(kind).unwrap_or_else(|e| panic!("{name} handler: {e}"));
    let mut interrupt = handler(SignalKind::interrupt(), "SIGINT");
    let mut terminate = handler(SignalKind::terminate(), "SIGTERM");
    let mut hangup = handler(SignalKind::hangup(), "SIGHUP");
    let mut quit = handler(SignalKind::quit(), "SIGQUIT");
    let measured = commands::measured(&command);
    let result = tokio::select! {
        result = commands::run(command, display, json) => result,
        _ = interrupt.recv() => Err(Error::Interrupted("SIGINT")),
        _ = terminate.recv() => Err(Error::Interrupted("SIGTERM")),
        _ = hangup.recv() => Err(Error::Interrupted("SIGHUP")),
        _ = quit.recv() => Err(Error::Interrupted("SIGQUIT")),
    };
    match measured {
        Some(run) => run.finish(result),
        None => result,
    }
}
