//! The command layer: the clap definitions (`args`), one small file per command, and the
//! terminal side they share (`term`). Only the binary's entry (`src/main.rs`) uses it; the
//! library below it (the pipeline, the daemon, the emulator) never imports it. Each command
//! takes its raw flags, resolves what it runs with through `crate::settings`, and gives an exit
//! code, or an [`Error`] that the entry prints as `error: ...` with exit code 1.

mod apply;
pub mod args;
mod load;
mod plan;
mod resolve;
mod state;
pub mod term;
mod validate;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

pub use args::{
    ApiArgs, ApplyArgs, ApplyFormat, Cli, ColorWhen, Command, LogFormat, PlanArgs, PlanFormat,
    ResolveArgs, StateArgs, StateCommand, StateFormat, VERSION, ValidateFormat, WatchArgs,
};

/// Why a command failed before it could give an exit code of its own: exit code 1.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config directory cannot be read at all.
    #[error(transparent)]
    Load(#[from] crate::config::LoadError),
    /// The config has errors (their diagnostics were printed): nothing was planned.
    #[error(
        "{what} {} has {errors} error(s); nothing was planned (run `feedbuttons validate {}`)",
        dir.display(),
        dir.display()
    )]
    InvalidConfig {
        what: &'static str,
        dir: PathBuf,
        errors: usize,
    },
    /// The state cannot be opened, read, locked or written, or belongs to another app.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// No credentials, or no client for the base URL.
    #[error(transparent)]
    Settings(#[from] crate::settings::SettingsError),
    /// The lock's open_ids are another app's.
    #[error(transparent)]
    OtherAppsIds(#[from] crate::desired::OtherAppsIds),
    /// `--chat` names a chat that neither the config nor the record knows.
    #[error("--chat {chats}: neither declared in the config nor recorded in {record}")]
    UnknownChats { chats: String, record: &'static str },
    /// `plan --out` would overwrite what the plan is made from.
    #[error("--out {}: that is {what}; save the plan somewhere else", path.display())]
    PlanOut { path: PathBuf, what: &'static str },
    /// A saved plan cannot be written or read, or was altered.
    #[error(transparent)]
    PlanFile(#[from] crate::plan::json::PlanFileError),
    /// A saved plan was made against another state than the one there is now.
    #[error(
        "the plan {} is stale: it was made against state serial {made} but the state is now at serial {now}{}; make a new plan",
        path.display(),
        if *other_lineage { " of another lineage" } else { "" }
    )]
    StalePlan {
        path: PathBuf,
        made: u64,
        now: u64,
        other_lineage: bool,
    },
    /// The plan trips the mass-removal guard.
    #[error("mass removal refused: {reason}; pass --allow-mass-removal if this is intended")]
    MassRemoval { reason: String },
    /// apply needs a confirmation and there is no terminal to ask on.
    #[error("not on a terminal: pass --yes to apply, or apply a reviewed plan with --plan")]
    NotATerminal,
    /// The confirmation could not be read.
    #[error("cannot read the answer: {0}")]
    Prompt(#[source] std::io::Error),
    /// The credentials check against the API failed.
    #[error(transparent)]
    Call(#[from] crate::feishu::client::CallError),
    /// Something refused the run before its first call.
    #[error("{0}; nothing was applied")]
    NothingApplied(#[source] Box<Error>),
    /// The async runtime cannot start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The output cannot be written (other than a closed pipe).
    #[error("cannot write the output: {0}")]
    Output(#[source] std::io::Error),
    /// The emulator could not start, or stopped with an error.
    #[error(transparent)]
    Emulator(#[from] crate::emulator::EmulatorError),
    /// The demo could not run.
    #[error(transparent)]
    Demo(#[from] crate::demo::DemoError),
    /// The lock cannot be read or written.
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    /// A directory look-up failed for the whole run.
    #[error("{0}; nothing was written")]
    Resolve(#[from] crate::resolve::ResolveError),
    /// `state list DIR --dir OTHER`: two config directories.
    #[error(
        "two config directories: {} and --dir {}; give one",
        given.display(),
        flag.display()
    )]
    TwoDirs { given: PathBuf, flag: PathBuf },
}

/// Runs one parsed command line.
/// Leaves `value` to the process's exit instead of freeing it: the one-shot commands call it
/// on their largest values when they are done, just before the process ends. Freeing a
/// million targets, their plan and the state one allocation at a time took a tenth of a
/// plan's time, for memory the system takes back at once.
fn leave_to_exit<T>(value: T) {
    std::mem::forget(value);
}

pub fn run(cli: Cli) -> Result<ExitCode, Error> {
    // The daemon's one summary line per reconcile is at info; other commands stay quiet.
    let (json, default) = match &cli.command {
        Command::Watch(args) => (args.log_format == LogFormat::Json, "warn,feedbuttons=info"),
        _ => (false, "warn"),
    };
    term::set_color(cli.color);
    init_logging(json, default);
    match cli.command {
        Command::Validate { dir, format } => validate::run(&dir, format),
        Command::Plan(args) => plan::run(&args),
        Command::Apply(args) => apply::run(&args),
        Command::Watch(args) => Ok(watch::run(args)),
        Command::Demo { dir } => {
            let rt = crate::runtime::build().map_err(Error::Runtime)?;
            rt.block_on(crate::demo::run(dir.as_deref(), term::stdout_color()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Resolve(args) => resolve::run(&args),
        Command::State(args) => state::run(args),
        Command::Emulator(args) => {
            let rt = crate::runtime::build().map_err(Error::Runtime)?;
            rt.block_on(crate::emulator::cli::run(args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema => {
            term::print(&crate::config::schema::schema_text())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            term::write_stdout(|w| {
                clap_complete::generate(shell, &mut Cli::command(), "feedbuttons", w);
                Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The exit code of a command line clap refused, after printing why (or the help or version
/// asked for). A usage error is an error (exit 1), never 2: `plan --detailed-exitcode` means
/// "changes" by 2.
pub fn usage(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let _ = e.print();
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

/// Diagnostic logs on stderr, chosen with `FEEDBUTTONS_LOG` (or `RUST_LOG`), e.g. `debug` or
/// `feedbuttons=trace`; `default` otherwise. One JSON object a line when `json`. No level logs a
/// secret or a token.
fn init_logging(json: bool, default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("FEEDBUTTONS_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new(default));
    // Colour as `--color` says: by default only on a terminal, since a daemon's log goes to
    // journald or a container runtime, and never with NO_COLOR.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(term::stderr_color())
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}
