//! The command line: thin wrappers over the library, each returning the process exit code.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A declarative reconciler for Feishu/Lark chat feed-card buttons.
#[derive(Parser, Debug)]
#[command(name = "feedbuttons", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {}

/// Parses the process arguments, runs the command and returns its exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {}
}
