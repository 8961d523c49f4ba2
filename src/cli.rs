//! The command line: thin wrappers over the library, each returning the process exit code.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config;

/// A declarative reconciler for Feishu/Lark chat feed-card buttons.
#[derive(Parser, Debug)]
#[command(name = "feedbuttons", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check a config directory and explain every error with file:line:column.
    Validate {
        /// The config directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// How to print the diagnostics.
        #[arg(long, value_enum, default_value_t = ValidateFormat::Text)]
        format: ValidateFormat,
    },
    /// Print the JSON Schema of one config file (for editors).
    Schema,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ValidateFormat {
    Text,
    Json,
}

/// Parses the process arguments, runs the command and returns its exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Validate { dir, format } => validate(&dir, format),
        Command::Schema => print(&config::schema::schema_text()),
    };
    ExitCode::from(code)
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn print(s: &str) -> u8 {
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("error: cannot write the output: {e}");
            1
        }
    }
}

fn validate(dir: &std::path::Path, format: ValidateFormat) -> u8 {
    let loaded = match config::load_dir(dir) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let ok = !loaded.report.has_errors();
    let text = match format {
        ValidateFormat::Json => {
            let mut s = serde_json::to_string_pretty(&loaded.report.to_json(&loaded.sources))
                .unwrap_or_default();
            s.push('\n');
            s
        }
        ValidateFormat::Text => {
            let mut s = loaded.report.render_text(&loaded.sources);
            s.push_str(&validate_summary(&loaded));
            s
        }
    };
    let written = print(&text);
    if ok { written } else { 1 }
}

fn validate_summary(loaded: &config::Loaded) -> String {
    let files = loaded.sources.files.len();
    let (errors, warnings) = (loaded.report.errors(), loaded.report.warnings());
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    match &loaded.desired {
        Some(d) => {
            let mut s = format!(
                "valid: {}, {}, {}",
                plural(files, "file", "files"),
                plural(d.chat_count(), "chat", "chats"),
                plural(d.targets.len(), "target", "targets"),
            );
            if warnings > 0 {
                s.push_str(&format!(" ({})", plural(warnings, "warning", "warnings")));
            }
            s.push('\n');
            s
        }
        None => format!(
            "invalid: {} and {} in {}\n",
            plural(errors, "error", "errors"),
            plural(warnings, "warning", "warnings"),
            plural(files, "file", "files"),
        ),
    }
}
