//! Progress while a command runs, read from the repository handle's
//! [`rockup::Progress`]: on a terminal, a bar (bytes, files, rate, ETA when the
//! totals are known, a spinner while they are not); with `--json` or when
//! stderr is not a terminal, a log line every [`LOG_EVERY`] instead; nothing
//! with `--quiet` or `--no-progress`.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rockup::{Progress, ProgressSnapshot};

/// How often the bar is redrawn.
const DRAW_EVERY: Duration = Duration::from_millis(200);
/// How often a line is logged where there is no bar.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Where progress goes.
#[derive(Debug, Clone, Copy)]
pub enum Display {
    Bar,
    Log,
    Off,
}

impl Display {
    /// A bar on a terminal, unless the output is JSON; nothing when `off`.
    pub fn choose(json: bool, off: bool) -> Self {
        match (off, !json && std::io::stderr().is_terminal()) {
            (true, _) => Display::Off,
            (false, true) => Display::Bar,
            (false, false) => Display::Log,
        }
    }
}

/// Shows progress until dropped.
pub struct Shown {
    task: Option<tokio::task::JoinHandle<()>>,
    bar: Option<ProgressBar>,
}

impl Drop for Shown {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Starts showing `progress` as `display` says.
pub fn show(progress: &Arc<Progress>, display: Display) -> Shown {
    let progress = progress.clone();
    match display {
        Display::Bar => {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            let drawn = bar.clone();
            let task = tokio::spawn(async move {
                loop {
                    draw(&drawn, progress.snapshot());
                    tokio::time::sleep(DRAW_EVERY).await;
                }
            });
            Shown {
                task: Some(task),
                bar: Some(bar),
            }
        }
        Display::Log => Shown {
            task: Some(tokio::spawn(log_lines(progress))),
            bar: None,
        },
        Display::Off => Shown {
            task: None,
            bar: None,
        },
    }
}

fn draw(bar: &ProgressBar, now: ProgressSnapshot) {
    let files = match now.total_files {
        Some(total) => format!("{}/{total} files", now.files),
        None => format!("{} files", now.files),
    };
    if bar.length() != now.total_bytes {
        let template = match now.total_bytes {
            Some(_) => "{bar:30} {bytes}/{total_bytes} {msg} {bytes_per_sec} ETA {eta}",
            None => "{spinner} {bytes} {msg} {bytes_per_sec}",
        };
        bar.set_style(ProgressStyle::with_template(template).expect("valid template"));
        match now.total_bytes {
            Some(total) => bar.set_length(total),
            None => bar.unset_length(),
        }
    }
    bar.set_position(now.bytes);
    bar.set_message(files);
}

async fn log_lines(progress: Arc<Progress>) {
    let (mut last, mut at) = (progress.snapshot(), Instant::now());
    loop {
        tokio::time::sleep(LOG_EVERY).await;
        let now = progress.snapshot();
        let rate = (now.bytes.saturating_sub(last.bytes)) as f64 / at.elapsed().as_secs_f64();
        let total = |n: Option<u64>| n.map_or("?".to_string(), |n| n.to_string());
        tracing::info!(
            files = %format!("{}/{}", now.files, total(now.total_files)),
            bytes = %format!("{}/{}", now.bytes, total(now.total_bytes)),
            mib_per_sec = format!("{:.1}", rate / (1 << 20) as f64),
            "progress"
        );
        (last, at) = (now, Instant::now());
    }
}
