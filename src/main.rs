//! The `feedbuttons` binary: parse the command line, run the command, map the outcome to an
//! exit code. The commands (`feedbuttons::cli`) return their own exit codes (2, 3, 4, 130...)
//! or an error, printed here once as `error: ...` with exit code 1.

use std::process::ExitCode;

use clap::Parser as _;
use feedbuttons::cli::{self, Cli};

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            // Coloured as `--color` (set by the command) and NO_COLOR say.
            let red = anstyle::AnsiColor::Red.on_default().bold();
            anstream::eprintln!("{red}error:{red:#} {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return Ok(cli::usage(&e)),
    };
    Ok(cli::run(cli)?)
}
