//! `rockup follow`: runs until SIGINT or SIGTERM, which let it ship what it
//! has read and exit 0. After every poll its status goes out: with `--json`
//! as one JSON line on stdout, else as a line on stderr (rewritten in place on
//! a terminal, every [`LINE_EVERY`] otherwise).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::signal::unix::{signal, SignalKind};

use crate::args::FollowArgs;
use crate::commands::{document, repository_to_create};
use crate::output::say;
use crate::progress::Display;
use crate::secrets::Prompt;
use rockup::{FollowStatus, Result};

/// How often a status line is written where stderr is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(10);

pub async fn follow(args: FollowArgs, json: bool, display: Display) -> Result<(Value, i32)> {
    let repo = repository_to_create(&args.backup.repo, Prompt::Once)?;
    let (options, db) = args.options()?;
    let mut out = StatusOut::new(json, display);
    let stop = stopped();
    let last = rockup::follow(&repo, &db, &options, |s| out.show(s), stop).await?;
    out.finish();
    say!(
        "follow stopped: base {}, shipped through sequence {} ({} segments, {} files, {} problems this run)",
        last.base, last.shipped_sequence, last.segments, last.files, last.problems
    );
    // With --json the status lines were the output.
    let document = if json { Value::Null } else { document(&last) };
    Ok((document, 0))
}

/// Completes at the first SIGINT, SIGTERM or SIGHUP (the handlers are in
/// place from the moment this is called, before the future is first polled).
fn stopped() -> impl std::future::Future<Output = ()> {
    let handler = |kind| signal(kind).expect("a signal handler");
    let (mut interrupt, mut terminate, mut hangup) = (
        handler(SignalKind::interrupt()),
        handler(SignalKind::terminate()),
        handler(SignalKind::hangup()),
    );
    async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
            _ = hangup.recv() => {}
        }
        tracing::info!("stopping: shipping what was read");
    }
}

/// Where status lines go.
struct StatusOut {
    json: bool,
    display: Display,
    terminal: bool,
    last_line: Option<Instant>,
}

impl StatusOut {
    fn new(json: bool, display: Display) -> Self {
        Self {
            json,
            display,
            terminal: std::io::stderr().is_terminal(),
            last_line: None,
        }
    }

    fn show(&mut self, status: &FollowStatus) {
        if self.json {
            let line = serde_json::to_string(status).expect("status serializes");
            println!("{line}");
            return;
        }
        if matches!(self.display, Display::Off) {
            return;
        }
        let due = self.last_line.is_none_or(|at| at.elapsed() >= LINE_EVERY);
        if !self.terminal && !due {
            return;
        }
        self.last_line = Some(Instant::now());
        let waiting = status
            .waiting
            .as_deref()
            .map(|why| format!("; waiting for the store: {why}"))
            .unwrap_or_default();
        let line = format!(
            "shipped {} (read {}): {} behind, {:.1} s lag; {} segments, {} files{waiting}",
            status.shipped_sequence,
            status.read_sequence,
            status.lag_sequences,
            status.lag_seconds,
            status.segments,
            status.files,
        );
        match self.terminal {
            true => eprint!("\r\x1b[2K{line}"),
            false => eprintln!("{line}"),
        }
        let _ = std::io::stderr().flush();
    }

    fn finish(&self) {
        if self.terminal && !self.json && !matches!(self.display, Display::Off) {
            eprintln!();
        }
    }
}
