//! The command line: the only module that knows clap. It parses flags into
//! [`args`] (what the user typed) and converts them into each command's
//! options (what the command needs), as ripgrep's low- and high-level
//! arguments do; [`execute`] hands them over.

mod args;
mod parse;

use anyhow::Result;
pub use args::{Cli, Command};

use crate::commands;

impl Cli {
    /// The log level when RUST_LOG does not say: `check`, `snapshot`, `top`,
    /// `replay` and `doctor` print their own report, and their log would only
    /// repeat it.
    pub fn default_log_level(&self) -> &'static str {
        match self.command {
            Command::Check(_)
            | Command::Snapshot(_)
            | Command::Top(_)
            | Command::Replay(_)
            | Command::Doctor(_) => "warn",
            Command::Run(_) | Command::Record(_) => "info",
        }
    }
}

/// Runs the command `cli` names.
pub fn execute(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(args) => commands::run::run(args.options(None)),
        Command::Record(args) => commands::run::run(args.run.options(Some(args.file))),
        Command::Replay(args) => commands::replay::run(&args.options()),
        Command::Snapshot(args) => commands::snapshot::run(&args.options()),
        Command::Top(args) => commands::top::run(&args.options()),
        Command::Check(args) => commands::check::run(&args.probes.options()),
        Command::Doctor(args) => {
            let status = commands::doctor::run(&args.options())?;
            if status != 0 {
                // The findings are printed; the status says how bad they are.
                std::process::exit(status);
            }
            Ok(())
        }
    }
}
