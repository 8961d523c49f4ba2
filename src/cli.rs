//! The command line: thin wrappers over the library, each returning the process exit code.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::feishu::client::{Client, ClientConfig, RetryPolicy, Secret};
use crate::{config, plan, state};

/// Feishu's API (Lark's is `https://open.larksuite.com`).
pub const DEFAULT_BASE_URL: &str = "https://open.feishu.cn";

/// `0.1.0 (git 1a2b3c4d5e6f)`.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("FEEDBUTTONS_GIT_REV"),
    ")"
);

/// A declarative reconciler for Feishu/Lark chat feed-card buttons.
#[derive(Parser, Debug)]
#[command(name = "feedbuttons", version = VERSION, about, max_term_width = 100)]
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
    /// Show what apply would change: per chat, per user, and the calls it would make.
    Plan(PlanArgs),
    /// Make the chats' buttons match the config: send the plan's calls and record each success.
    Apply(ApplyArgs),
    /// Try the whole loop against an in-process emulator: plan, apply, show, plan again.
    Demo {
        /// The config directory [default: the quick-start example].
        dir: Option<PathBuf>,
    },
    /// Inspect the applied state, and repair it by hand.
    State {
        #[command(subcommand)]
        command: StateCommand,
        /// The applied state [default: DIR/.feedbuttons/state.json].
        #[arg(long, env = "FEEDBUTTONS_STATE", value_name = "PATH", global = true)]
        state: Option<PathBuf>,
        /// The config directory whose default state to use.
        #[arg(long, value_name = "DIR", default_value = ".", global = true)]
        dir: PathBuf,
    },
    /// Keep the chats' buttons in line with a directory that something else keeps up to date:
    /// reconcile on every change, serve health and metrics.
    Watch(crate::watch::WatchArgs),
    /// Serve a local stand-in for the Feishu chat-button API (no tenant needed).
    Emulator(crate::emulator::cli::EmulatorArgs),
    /// Print the JSON Schema of one config file (for editors).
    Schema,
    /// Print a shell completion script (e.g. `feedbuttons completions bash > /etc/bash_completion.d/feedbuttons`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(clap::Args, Debug)]
pub struct PlanArgs {
    /// The config directory.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// The applied state [default: DIR/.feedbuttons/state.json].
    #[arg(long, env = "FEEDBUTTONS_STATE", value_name = "PATH")]
    pub state: Option<PathBuf>,
    /// Compare with another config directory (say, the base branch's) instead of the state:
    /// what would change if this config were applied on top of that one. Needs no state and no
    /// credentials (a state given by --state or FEEDBUTTONS_STATE is not read).
    #[arg(long, value_name = "BASE_DIR", conflicts_with = "out")]
    pub base: Option<PathBuf>,
    /// How to print the plan.
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
    /// Save the plan for `apply --plan`: it is bound to the state it was made against.
    #[arg(long, value_name = "PLAN_FILE")]
    pub out: Option<PathBuf>,
    /// Exit 2 when there are changes, 0 when there are none (1 stays an error).
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Plan only this chat (repeatable).
    #[arg(long = "chat", value_name = "CHAT_ID")]
    pub chats: Vec<String>,
    /// Calls per second the time estimate assumes.
    #[arg(long, value_name = "N", default_value_t = crate::feishu::wire::api::RATE_LIMIT_PER_SECOND)]
    pub rate_limit: u32,
    /// The API base URL the state must have been applied with (checked when FEISHU_APP_ID is
    /// set; without it only the app id is compared).
    #[arg(long, env = "FEISHU_BASE_URL", value_name = "URL")]
    pub base_url: Option<String>,
}

/// Where the API is and how fast it may be called (apply, watch).
#[derive(clap::Args, Debug, Clone)]
pub struct ApiArgs {
    /// The API base URL (Lark: https://open.larksuite.com).
    #[arg(
        long,
        env = "FEISHU_BASE_URL",
        value_name = "URL",
        default_value = DEFAULT_BASE_URL
    )]
    pub base_url: String,
    /// Calls per second, never exceeded (the API allows 10).
    #[arg(long, value_name = "N", default_value_t = crate::feishu::wire::api::RATE_LIMIT_PER_SECOND)]
    pub rate_limit: u32,
}

#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    /// The config directory.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// The applied state [default: DIR/.feedbuttons/state.json].
    #[arg(long, env = "FEEDBUTTONS_STATE", value_name = "PATH")]
    pub state: Option<PathBuf>,
    /// Apply without asking (needed when not on a terminal, unless --plan is given).
    #[arg(long)]
    pub yes: bool,
    /// Apply exactly this saved plan (`plan --out`); refused if the state moved on since.
    #[arg(long, value_name = "PLAN_FILE", conflicts_with = "chats")]
    pub plan: Option<PathBuf>,
    /// Apply only this chat (repeatable).
    #[arg(long = "chat", value_name = "CHAT_ID")]
    pub chats: Vec<String>,
    /// Allow a plan that removes more than a quarter of the applied targets.
    #[arg(long)]
    pub allow_mass_removal: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Subcommand, Debug)]
pub enum StateCommand {
    /// One line per recorded target: chat, audience, button texts.
    List {
        /// Only this chat.
        #[arg(long = "chat", value_name = "CHAT_ID")]
        chat: Option<String>,
    },
    /// The recorded buttons of a chat, or of one audience in it.
    Show {
        chat_id: String,
        /// `everyone`, a user id, or `open_id:ou_...`.
        audience: Option<String>,
        #[arg(long, value_enum, default_value_t = ValidateFormat::Text)]
        format: ValidateFormat,
    },
    /// Forget recorded targets (the chat's buttons are not touched; the next plan adds them again
    /// if the config still declares them).
    Rm {
        chat_id: String,
        /// `everyone`, a user id, or `open_id:ou_...` (default: every target of the chat).
        audience: Option<String>,
    },
    /// Record the config's targets as applied without calling the API: for buttons that were set
    /// before this tool managed them.
    Adopt {
        /// Only this chat (repeatable).
        #[arg(long = "chat", value_name = "CHAT_ID")]
        chats: Vec<String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    Text,
    Markdown,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ValidateFormat {
    Text,
    Json,
    /// GitHub Actions workflow commands: one `::error file=...,line=...::` annotation per label.
    Github,
}

/// Parses the process arguments, runs the command and returns its exit code.
pub fn main() -> ExitCode {
    // A usage error is an error (exit 1), never 2: `plan --detailed-exitcode` means "changes" by 2.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            let code = match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => 0,
                _ => 1,
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    // The daemon's one summary line per reconcile is at info; other commands stay quiet.
    match &cli.command {
        Command::Watch(args) => init_logging(
            args.log_format == crate::watch::LogFormat::Json,
            "warn,feedbuttons=info",
        ),
        _ => init_logging(false, "warn"),
    }
    let code = match cli.command {
        Command::Validate { dir, format } => validate(&dir, format),
        Command::Plan(args) => plan(&args),
        Command::Apply(args) => apply(&args),
        Command::Watch(args) => crate::watch::run(args),
        Command::Demo { dir } => demo(dir),
        Command::State {
            command,
            state,
            dir,
        } => state_command(command, &state_path(&dir, state.as_deref()), &dir),
        Command::Emulator(args) => emulator(args),
        Command::Schema => print(&config::schema::schema_text()),
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            write_stdout(|w| {
                clap_complete::generate(shell, &mut Cli::command(), "feedbuttons", w);
                Ok(())
            })
        }
    };
    ExitCode::from(code)
}

/// Diagnostic logs on stderr, chosen with `FEEDBUTTONS_LOG` (or `RUST_LOG`), e.g. `debug` or
/// `feedbuttons=trace`; `default` otherwise. One JSON object a line when `json`. No level logs a
/// secret or a token.
fn init_logging(json: bool, default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("FEEDBUTTONS_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new(default));
    // Colour only on a terminal: a daemon's log goes to journald or a container runtime.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn print(s: &str) -> u8 {
    write_stdout(|w| w.write_all(s.as_bytes()))
}

/// Runs `write` on a buffered stdout; a closed pipe (`| head`) is not an error.
fn write_stdout(write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>) -> u8 {
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    match write(&mut out).and_then(|()| out.flush()) {
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
        ValidateFormat::Github => {
            let mut s = loaded.report.render_github(&loaded.sources);
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
    let plural = crate::text::count;
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

/// Whether stdout gets colour: a terminal, and `NO_COLOR` unset.
fn color() -> bool {
    use std::io::IsTerminal as _;
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
}

/// Loads a config for plan, apply or adopt: diagnostics go to stderr (the config text is dropped
/// once they are printed); `None` when the config has errors.
fn load_desired(dir: &Path, what: &str) -> Option<crate::desired::DesiredState> {
    load_desired_with_files(dir, what).map(|(d, _)| d)
}

/// [`load_desired`], with the paths of the files the config was read from.
fn load_desired_with_files(
    dir: &Path,
    what: &str,
) -> Option<(crate::desired::DesiredState, Vec<PathBuf>)> {
    let loaded = match config::load_dir(dir) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return None;
        }
    };
    if !loaded.report.diagnostics.is_empty() {
        eprint!("{}", loaded.report.render_text(&loaded.sources));
    }
    if loaded.desired.is_none() {
        eprintln!(
            "error: {what} {} has {} error(s); nothing was planned (run `feedbuttons validate {}`)",
            dir.display(),
            loaded.report.errors(),
            dir.display()
        );
    }
    let files = loaded.sources.files.into_iter().map(|f| f.path).collect();
    loaded.desired.map(|d| (d, files))
}

/// Refuses `--chat` ids that neither the config nor the record knows: a mistyped id would plan
/// nothing and look like "No changes".
fn check_chats_known(
    chats: &[String],
    desired: &crate::desired::DesiredState,
    recorded: impl Fn(&str) -> bool,
    record: &str,
) -> Result<(), String> {
    let unknown: Vec<&str> = chats
        .iter()
        .map(String::as_str)
        .filter(|c| {
            !recorded(c)
                && desired
                    .targets
                    .range(crate::target::Target::everyone(*c)..)
                    .next()
                    .is_none_or(|(t, _)| t.chat_id != *c)
        })
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(format!(
        "--chat {}: neither declared in the config nor recorded in {record}",
        unknown.join(", ")
    ))
}

/// The path with its parent resolved (symbolic links, `..`), for comparing where files land.
fn resolved(path: &Path) -> PathBuf {
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match (parent.canonicalize(), path.file_name()) {
        (Ok(p), Some(name)) => p.join(name),
        _ => path.to_path_buf(),
    }
}

/// Refuses a `plan --out` path that would overwrite what the plan was made from: the state's
/// files, or a config file (or a YAML file in the config directory, which the next run would
/// read as config).
fn check_plan_out(
    out: &Path,
    dir: &Path,
    state_path: &Path,
    config_files: &[PathBuf],
) -> Result<(), String> {
    let target = resolved(out);
    let refuse = |what: String| {
        Err(format!(
            "--out {}: that is {what}; save the plan somewhere else",
            out.display()
        ))
    };
    if let Ok(store) = state::FileStore::new(state_path) {
        for (p, what) in [
            (store.snapshot_path(), "the state snapshot"),
            (store.journal_path(), "the state journal"),
            (store.lock_path(), "the state lock"),
        ] {
            if resolved(p) == target {
                return refuse(what.to_owned());
            }
        }
        let mut temp = store.snapshot_path().as_os_str().to_owned();
        temp.push(".tmp");
        if resolved(Path::new(&temp)) == target {
            return refuse("the state's next snapshot".to_owned());
        }
    }
    if config_files.iter().any(|f| resolved(f) == target) {
        return refuse("a file of the config".to_owned());
    }
    let yaml = target
        .extension()
        .is_some_and(|e| e == "yaml" || e == "yml");
    if yaml && target.starts_with(resolved(dir)) {
        return refuse(
            "a YAML file in the config directory, which the next run would read as config"
                .to_owned(),
        );
    }
    Ok(())
}

/// The base of `plan --base`, loaded like `load_desired`, except that a base without a config
/// is an empty config (everything is an add): the first pull request, whose base branch has no
/// such directory yet, or has it without any config file. A base that exists and is invalid
/// (or is not a directory) stays an error.
fn load_base(dir: &Path) -> Option<crate::desired::DesiredState> {
    let empty = |why: &str| {
        eprintln!(
            "note: the base config {} {why}: planning against an empty base (everything is an add)",
            dir.display()
        );
        Some(crate::desired::DesiredState::default())
    };
    let loaded = match config::load_dir(dir) {
        Ok(l) if l.sources.files.is_empty() => return empty("holds no config files"),
        Ok(l) => l,
        Err(e) => {
            if matches!(std::fs::symlink_metadata(dir), Err(m) if m.kind() == std::io::ErrorKind::NotFound)
            {
                return empty("does not exist");
            }
            eprintln!("error: {e}");
            return None;
        }
    };
    if !loaded.report.diagnostics.is_empty() {
        eprint!("{}", loaded.report.render_text(&loaded.sources));
    }
    if loaded.desired.is_none() {
        eprintln!(
            "error: the base config {} has {} error(s); nothing was planned (run `feedbuttons validate {}`)",
            dir.display(),
            loaded.report.errors(),
            dir.display()
        );
    }
    loaded.desired
}

/// The state location: `--state`/`FEEDBUTTONS_STATE`, else `DIR/.feedbuttons/state.json`.
pub fn state_path(dir: &Path, flag: Option<&Path>) -> PathBuf {
    flag.map_or_else(|| state::default_path(dir), Path::to_path_buf)
}

fn plan(args: &PlanArgs) -> u8 {
    let Some((desired, config_files)) = load_desired_with_files(&args.dir, "the config") else {
        return 1;
    };
    let options = plan::PlanOptions {
        chats: args.chats.clone(),
        rate_limit: args.rate_limit,
        ..Default::default()
    };
    let (the_plan, state_ref) = match &args.base {
        Some(base_dir) => {
            let Some(base_desired) = load_base(base_dir) else {
                return 1;
            };
            let known = |c: &str| {
                base_desired
                    .targets
                    .range(crate::target::Target::everyone(c)..)
                    .next()
                    .is_some_and(|(t, _)| t.chat_id == c)
            };
            if let Err(e) = check_chats_known(&args.chats, &desired, known, "the base config") {
                eprintln!("error: {e}");
                return 1;
            }
            // Chats that only the base declares keep their names in the plan.
            let mut names = base_desired.chat_names.clone();
            names.extend(desired.chat_names.clone());
            (
                plan::plan(&desired.targets, &names, &base_desired.targets, &options),
                None,
            )
        }
        None => {
            let path = state_path(&args.dir, args.state.as_deref());
            if let Some(out) = &args.out
                && let Err(e) = check_plan_out(out, &args.dir, &path, &config_files)
            {
                eprintln!("error: {e}");
                return 1;
            }
            let applied = match state::open(&path).and_then(|s| s.load()) {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("error: {e}");
                    return 1;
                }
            };
            let known = |c: &str| applied.chat(c).next().is_some();
            if let Err(e) = check_chats_known(&args.chats, &desired, known, "the state") {
                eprintln!("error: {e}");
                return 1;
            }
            // With an app configured, a plan against another app's state would mislead.
            if let Ok(app_id) = std::env::var("FEISHU_APP_ID")
                && !app_id.is_empty()
            {
                // Without a base URL given, the app id alone is compared: a state applied with
                // `--base-url` is still the same app's.
                let base_url = match args.base_url.as_deref().filter(|u| !u.is_empty()) {
                    Some(u) => u.to_owned(),
                    None => applied
                        .binding
                        .as_ref()
                        .map_or_else(|| DEFAULT_BASE_URL.to_owned(), |b| b.base_url.clone()),
                };
                if let Err(e) = applied.check_binding(&state::Binding::new(base_url, app_id)) {
                    eprintln!("error: {e}");
                    return 1;
                }
            }
            let p = plan::plan(
                &desired.targets,
                &desired.chat_names,
                &applied.targets,
                &options,
            );
            let state_ref = plan::json::StateRef {
                lineage: applied.lineage.clone(),
                serial: applied.serial,
            };
            (p, Some(state_ref))
        }
    };
    if let (Some(out), Some(state_ref)) = (&args.out, state_ref)
        && let Err(e) = plan::json::PlanDoc::new(&the_plan).save(out, state_ref)
    {
        eprintln!("error: {e}");
        return 1;
    }
    let written = match args.format {
        PlanFormat::Text => print(&plan::render::text(
            &the_plan,
            plan::render::Style { color: color() },
        )),
        PlanFormat::Markdown => print(&plan::render::markdown(&the_plan)),
        PlanFormat::Json => write_stdout(|w| plan::json::write_json(&the_plan, w)),
    };
    if written != 0 {
        return written;
    }
    if let Some(out) = &args.out {
        eprintln!(
            "Saved the plan to {}; apply it with `feedbuttons apply --plan {}`.",
            out.display(),
            out.display()
        );
    }
    if args.detailed_exitcode && the_plan.has_changes() {
        2
    } else {
        0
    }
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match crate::runtime::build() {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            None
        }
    }
}

fn emulator(args: crate::emulator::cli::EmulatorArgs) -> u8 {
    let Some(rt) = runtime() else { return 1 };
    match rt.block_on(crate::emulator::cli::run(args)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// The app credentials, from the environment only (flags show up in process lists).
pub(crate) fn credentials() -> Result<(String, Secret), String> {
    let id = std::env::var("FEISHU_APP_ID").unwrap_or_default();
    let secret = std::env::var("FEISHU_APP_SECRET").unwrap_or_default();
    match (id.is_empty(), secret.is_empty()) {
        (false, false) => Ok((id, Secret::new(secret))),
        (true, true) => Err(
            "no credentials: set FEISHU_APP_ID and FEISHU_APP_SECRET (the app's id and secret)"
                .to_owned(),
        ),
        (true, false) => Err("no app id: set FEISHU_APP_ID".to_owned()),
        (false, true) => Err(
            "no app secret: set FEISHU_APP_SECRET (it is read from the environment only)"
                .to_owned(),
        ),
    }
}

fn apply(args: &ApplyArgs) -> u8 {
    // Everything that can refuse the run is checked before the first call.
    let (app_id, secret) = match credentials() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}; nothing was applied");
            return 1;
        }
    };
    let path = state_path(&args.dir, args.state.as_deref());
    let store = match state::open(&path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let mut lock = match store.writer(&state::holder("apply")) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}; nothing was applied");
            return 1;
        }
    };
    let binding = state::Binding::new(&args.api.base_url, &app_id);
    if let Err(e) = lock.state().check_binding(&binding) {
        eprintln!("error: {e}; nothing was applied");
        return 1;
    }
    let doc = match &args.plan {
        Some(plan_file) => {
            let doc = match plan::json::PlanDoc::load(plan_file) {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("error: {e}; nothing was applied");
                    return 1;
                }
            };
            let now = lock.state();
            if let Some(made) = &doc.state
                && (made.lineage != now.lineage || made.serial != now.serial)
            {
                eprintln!(
                    "error: the plan {} is stale: it was made against state serial {} but the state is now at serial {}{}; make a new plan; nothing was applied",
                    plan_file.display(),
                    made.serial,
                    now.serial,
                    if made.lineage != now.lineage {
                        " of another lineage"
                    } else {
                        ""
                    }
                );
                return 1;
            }
            let n = &doc.summary;
            println!(
                "Applying the saved plan {}: {} to add, {} to change, {} to remove; {} calls.",
                plan_file.display(),
                n.add,
                n.change,
                n.remove,
                n.requests
            );
            doc
        }
        None => {
            let Some(desired) = load_desired(&args.dir, "the config") else {
                return 1;
            };
            let options = plan::PlanOptions {
                chats: args.chats.clone(),
                rate_limit: args.api.rate_limit,
                ..Default::default()
            };
            let known = |c: &str| lock.state().chat(c).next().is_some();
            if let Err(e) = check_chats_known(&args.chats, &desired, known, "the state") {
                eprintln!("error: {e}; nothing was applied");
                return 1;
            }
            let p = plan::plan(
                &desired.targets,
                &desired.chat_names,
                &lock.state().targets,
                &options,
            );
            print(&plan::render::text(
                &p,
                plan::render::Style { color: color() },
            ));
            // Waiting targets the config no longer asks to change: nothing to send, only the
            // record to put right.
            if let Err(e) = lock.record(&p.settle) {
                eprintln!("error: {e}; nothing was applied");
                return 1;
            }
            plan::json::PlanDoc::new(&p)
        }
    };
    if let Some(m) = &doc.mass_removal
        && !args.allow_mass_removal
    {
        eprintln!(
            "error: mass removal refused: {}; pass --allow-mass-removal if this is intended; nothing was applied",
            m.reason
        );
        return 1;
    }
    if doc.requests.is_empty() {
        if args.plan.is_some() {
            println!("Nothing to do: the plan makes no calls.");
        }
        return 0;
    }
    if args.plan.is_none() && !args.yes {
        match confirm(doc.requests.len()) {
            Ok(true) => {}
            Ok(false) => {
                eprintln!("Not confirmed; nothing was applied.");
                return 1;
            }
            Err(e) => {
                eprintln!("error: {e}; nothing was applied");
                return 1;
            }
        }
    }
    let Some(rt) = runtime() else { return 1 };
    rt.block_on(async {
        let client = match make_client(&args.api, app_id, secret) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}; nothing was applied");
                return 1;
            }
        };
        if let Err(e) = client.check_credentials().await {
            eprintln!("error: {e}; nothing was applied");
            return 1;
        }
        if let Err(e) = lock.bind(&binding) {
            eprintln!("error: {e}; nothing was applied");
            return 1;
        }
        let stop = stop_on_signal();
        let mut progress = progress_for(doc.requests.len(), args.api.rate_limit);
        let report = crate::apply::apply(
            &doc,
            &client,
            lock.as_mut(),
            crate::apply::concurrency_for(args.api.rate_limit),
            progress.as_mut(),
            stop,
        )
        .await;
        if let Err(e) = lock.compact() {
            eprintln!(
                "warning: the state could not be compacted (the journal keeps every record): {e}"
            );
        }
        eprint!("{}", crate::apply::summary(&report, doc.requests.len()));
        crate::apply::exit_code(&report)
    })
}

pub(crate) fn make_client(
    api: &ApiArgs,
    app_id: String,
    app_secret: Secret,
) -> Result<Client, String> {
    Client::new(ClientConfig {
        base_url: api.base_url.clone(),
        app_id,
        app_secret,
        rate_limit: api.rate_limit,
        retry: RetryPolicy {
            max_attempts: CALL_ATTEMPTS,
            ..RetryPolicy::default()
        },
        timeout: std::time::Duration::from_secs(30),
    })
    .map_err(|e| e.to_string())
}

/// Tries per call: ten, not the client's default six. When a fifth of the answers are 5xx at
/// random, six tries all fail for one call in 15,600, so one 500-call apply in 30 ends partly
/// applied; ten tries fail for one call in ten million. The price: a call facing a hard outage
/// gives up after about a minute instead of half a minute.
const CALL_ATTEMPTS: u32 = 10;

/// Asks on the terminal; only `yes` confirms. Off a terminal, refuses with the way out.
fn confirm(calls: usize) -> Result<bool, String> {
    use std::io::IsTerminal as _;
    if !std::io::stdin().is_terminal() {
        return Err(
            "not on a terminal: pass --yes to apply, or apply a reviewed plan with --plan"
                .to_owned(),
        );
    }
    eprint!("Send these {calls} calls? Only 'yes' is accepted: ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| format!("cannot read the answer: {e}"))?;
    Ok(answer.trim() == "yes")
}

/// A watch that turns true on SIGINT or SIGTERM (never, if the handlers cannot be installed).
fn stop_on_signal() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    match crate::runtime::shutdown_signal() {
        Ok(signal) => {
            tokio::spawn(async move {
                signal.await;
                eprintln!("\nStopping: waiting for the calls in flight, then recording them...");
                let _ = tx.send(true);
            });
        }
        Err(e) => eprintln!("warning: cannot wait for SIGINT/SIGTERM: {e}"),
    }
    rx
}

/// A bar on a terminal, plain lines otherwise.
fn progress_for(total: usize, rate: u32) -> Box<dyn crate::apply::Progress> {
    use std::io::IsTerminal as _;
    Box::new(Progress {
        total,
        rate: rate.max(1),
        tty: std::io::stderr().is_terminal(),
        last_line: std::time::Instant::now(),
        started: std::time::Instant::now(),
    })
}

struct Progress {
    total: usize,
    rate: u32,
    tty: bool,
    last_line: std::time::Instant,
    started: std::time::Instant,
}

impl crate::apply::Progress for Progress {
    fn call_done(&mut self, done: usize, total: usize) {
        let total = total.max(self.total);
        let left = (total - done.min(total)) as u64;
        let eta = crate::text::human_duration(left.div_ceil(u64::from(self.rate)));
        if self.tty {
            let width = 30;
            let filled = done * width / total.max(1);
            eprint!(
                "\r[{}{}] {done}/{total} calls, about {eta} left  ",
                "=".repeat(filled),
                " ".repeat(width - filled)
            );
        } else if done == total || self.last_line.elapsed() >= std::time::Duration::from_secs(5) {
            self.last_line = std::time::Instant::now();
            eprintln!(
                "applied {done}/{total} calls ({:.0} s so far, about {eta} left)",
                self.started.elapsed().as_secs_f64()
            );
        }
    }

    fn finish(&mut self) {
        if self.tty {
            eprintln!();
        }
    }
}

fn demo(dir: Option<PathBuf>) -> u8 {
    let Some(rt) = runtime() else { return 1 };
    match rt.block_on(crate::demo::run(dir.as_deref(), color())) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

fn state_command(command: StateCommand, path: &Path, dir: &Path) -> u8 {
    use state::commands::{self, Selector, ShowFormat};
    let store = match state::open(path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let result: Result<String, String> = match command {
        StateCommand::List { chat } => store.load().map_err(|e| e.to_string()).map(|st| {
            let mut out = commands::summary(&st, &store.location());
            out.push('\n');
            out.push_str(&commands::list(&st, chat.as_deref()));
            out
        }),
        StateCommand::Show {
            chat_id,
            audience,
            format,
        } => {
            let selector = match audience {
                Some(a) => Selector::audience(chat_id, a),
                None => Selector::chat(chat_id),
            };
            let format = match format {
                ValidateFormat::Text | ValidateFormat::Github => ShowFormat::Text,
                ValidateFormat::Json => ShowFormat::Json,
            };
            store
                .load()
                .and_then(|st| commands::show(&st, &store.location(), &selector, format))
                .map_err(|e| e.to_string())
        }
        StateCommand::Rm { chat_id, audience } => {
            let selector = match audience {
                Some(a) => Selector::audience(chat_id, a),
                None => Selector::chat(chat_id),
            };
            store
                .writer(&state::holder("state rm"))
                .and_then(|mut lock| {
                    let removed = commands::rm(lock.as_mut(), &selector)?;
                    lock.compact()?;
                    Ok(removed)
                })
                .map(|removed| {
                    let mut out = format!(
                        "Forgot {} recorded target(s) of {selector}:\n",
                        removed.len()
                    );
                    for t in removed {
                        out.push_str(&format!("  {t}\n"));
                    }
                    out
                })
                .map_err(|e| e.to_string())
        }
        StateCommand::Adopt { chats } => {
            let Some(mut desired) = load_desired(dir, "the config") else {
                return 1;
            };
            desired.retain_chats(&chats);
            store
                .writer(&state::holder("state adopt"))
                .and_then(|mut lock| {
                    let adopted = commands::adopt(lock.as_mut(), desired.targets.iter().map(|(t, b)| (t, b.as_ref())))?;
                    lock.compact()?;
                    Ok(adopted)
                })
                .map(|a| {
                    format!(
                        "Adopted {} target(s) as applied ({} were already recorded with these buttons); no call was made.\n",
                        a.recorded, a.unchanged
                    )
                })
                .map_err(|e| e.to_string())
        }
    };
    match result {
        Ok(text) => print(&text),
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}
