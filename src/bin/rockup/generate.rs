//! Shell completions and man pages, generated from the command-line
//! definitions at run time so they never drift from the binary.

use clap::CommandFactory;
use serde_json::Value;

use crate::args::{Cli, CompletionsArgs, ManArgs};
use crate::inspect::io_error;
use crate::output::say;
use rockup::Result;

/// Prints the completion script for a shell on stdout.
pub fn completions(args: CompletionsArgs) -> Result<(Value, i32)> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "rockup", &mut script);
    crate::inspect::print_bytes(&script)?;
    Ok((Value::Null, 0))
}

/// Prints rockup(1) on stdout or, with --out, writes a page per command
/// (rockup.1, rockup-backup.1, …) into that directory.
pub fn man(args: ManArgs) -> Result<(Value, i32)> {
    let Some(dir) = args.out else {
        let mut page = Vec::new();
        clap_mangen::Man::new(Cli::command())
            .render(&mut page)
            .map_err(|e| io_error("man page", e))?;
        crate::inspect::print_bytes(&page)?;
        return Ok((Value::Null, 0));
    };
    std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
    clap_mangen::generate_to(Cli::command(), &dir).map_err(|e| io_error(&dir, e))?;
    let pages = std::fs::read_dir(&dir)
        .map_err(|e| io_error(&dir, e))?
        .filter_map(|entry| entry.ok())
        .filter(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name.starts_with("rockup") && name.ends_with(".1")
        })
        .count();
    say!(
        "man pages written to {} ({pages} rockup pages)",
        dir.display()
    );
    Ok((Value::Null, 0))
}
