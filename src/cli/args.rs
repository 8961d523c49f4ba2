//! The command line as clap parses it: raw flags, checked only for their shape (a duration, a
//! number). What they mean together (the state's location, the credentials, the client) is
//! resolved once by `crate::settings`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::settings::{DEFAULT_BASE_URL, Endpoint};

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
    /// When to colour what is printed, the diagnostics and the logs: `auto` (on a terminal,
    /// unless NO_COLOR is set), `always`, or `never`.
    #[arg(
        long,
        value_enum,
        value_name = "WHEN",
        default_value_t = ColorWhen::Auto,
        global = true
    )]
    pub color: ColorWhen,
}

/// `--color`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ColorWhen {
    Auto,
    Always,
    Never,
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
    /// Look up the emails, mobiles, chats (members_of) and departments the config names, and
    /// write their ids to DIR/feedbuttons.lock (or, with --check, say whether it is current).
    Resolve(ResolveArgs),
    /// Inspect the applied state, and repair it by hand.
    State(StateArgs),
    /// Keep the chats' buttons in line with a directory that something else keeps up to date:
    /// reconcile on every change, serve health and metrics.
    Watch(WatchArgs),
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
    /// The applied state: a file [default: DIR/.feedbuttons/state.json], or a PostgreSQL URL
    /// (postgres://USER@HOST:PORT/DB?sslmode=...; the password from the URL, PGPASSWORD or
    /// ~/.pgpass).
    #[arg(long, env = "FEEDBUTTONS_STATE", value_name = "PATH|URL")]
    pub state: Option<PathBuf>,
    /// The state's name in a PostgreSQL database, which holds several (say, one per
    /// repository) [default: default].
    #[arg(long, env = "FEEDBUTTONS_STATE_NAME", value_name = "NAME")]
    pub state_name: Option<String>,
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
    /// Calls per second the time estimate assumes (at least 1).
    #[arg(long, value_name = "N", default_value_t = crate::feishu::wire::api::RATE_LIMIT_PER_SECOND,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit: u32,
    /// The API base URL the state must have been applied with (checked when FEISHU_APP_ID is
    /// set; without it only the app id is compared).
    #[arg(long, env = "FEISHU_BASE_URL", value_name = "URL")]
    pub base_url: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct ResolveArgs {
    /// The config directory.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Write nothing: exit 1 when feedbuttons.lock is missing or differs from what the
    /// directory says now (printing the differences), 0 when it is current (for CI).
    #[arg(long)]
    pub check: bool,
    /// The API base URL (Lark: https://open.larksuite.com).
    #[arg(
        long,
        env = "FEISHU_BASE_URL",
        value_name = "URL",
        default_value = DEFAULT_BASE_URL
    )]
    pub base_url: String,
    /// Look-ups per second, per directory API (Feishu allows 50); 0 lifts it.
    #[arg(long, value_name = "N", default_value_t = crate::feishu::wire::directory::RATE_LIMIT_PER_SECOND)]
    pub directory_rate_limit: u32,
    /// Look-ups per minute, per directory API (Feishu allows 1000); 0 lifts it.
    #[arg(long, value_name = "N", default_value_t = crate::feishu::wire::directory::RATE_LIMIT_PER_MINUTE)]
    pub directory_rate_limit_per_minute: u32,
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
    /// Calls per second, never exceeded (at least 1; the API allows 10).
    #[arg(long, value_name = "N", default_value_t = crate::feishu::wire::api::RATE_LIMIT_PER_SECOND,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit: u32,
}

impl ApiArgs {
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            base_url: self.base_url.clone(),
            rate_limit: self.rate_limit,
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    /// The config directory.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// The applied state: a file [default: DIR/.feedbuttons/state.json], or a PostgreSQL URL
    /// (postgres://USER@HOST:PORT/DB?sslmode=...; the password from the URL, PGPASSWORD or
    /// ~/.pgpass).
    #[arg(long, env = "FEEDBUTTONS_STATE", value_name = "PATH|URL")]
    pub state: Option<PathBuf>,
    /// The state's name in a PostgreSQL database, which holds several (say, one per
    /// repository) [default: default].
    #[arg(long, env = "FEEDBUTTONS_STATE_NAME", value_name = "NAME")]
    pub state_name: Option<String>,
    /// Wait this long for another writer of the state to finish instead of failing at once
    /// (`30s`, `10m`).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = duration)]
    pub lock_timeout: Duration,
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
    /// How to print the plan and the result.
    #[arg(long, value_enum, default_value_t = ApplyFormat::Text)]
    pub format: ApplyFormat,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// `feedbuttons state`.
#[derive(clap::Args, Debug)]
pub struct StateArgs {
    #[command(subcommand)]
    pub command: StateCommand,
    /// The applied state: a file [default: DIR/.feedbuttons/state.json], or a PostgreSQL URL
    /// (postgres://USER@HOST:PORT/DB?sslmode=...; the password from the URL, PGPASSWORD or
    /// ~/.pgpass).
    #[arg(
        long,
        env = "FEEDBUTTONS_STATE",
        value_name = "PATH|URL",
        global = true
    )]
    pub state: Option<PathBuf>,
    /// The state's name in a PostgreSQL database, which holds several (say, one per
    /// repository) [default: default].
    #[arg(
        long,
        env = "FEEDBUTTONS_STATE_NAME",
        value_name = "NAME",
        global = true
    )]
    pub state_name: Option<String>,
    /// Wait this long for another writer of the state to finish instead of failing at once
    /// (`30s`, `10m`).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = duration, global = true)]
    pub lock_timeout: Duration,
    /// The config directory whose default state to use (`list` and `adopt` take it as their
    /// argument too) [default: .].
    #[arg(long = "dir", value_name = "DIR", global = true)]
    pub dir_flag: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum StateCommand {
    /// One line per recorded target: chat, audience, button texts.
    List {
        /// The config directory [default: .].
        dir: Option<PathBuf>,
        /// Only this chat.
        #[arg(long = "chat", value_name = "CHAT_ID")]
        chat: Option<String>,
        /// How to print the targets.
        #[arg(long, value_enum, default_value_t = StateFormat::Text)]
        format: StateFormat,
    },
    /// The recorded buttons of a chat, or of one audience in it.
    Show {
        chat_id: String,
        /// `everyone`, a user id, or `open_id:ou_...`.
        audience: Option<String>,
        /// How to print the targets.
        #[arg(long, value_enum, default_value_t = StateFormat::Text)]
        format: StateFormat,
    },
    /// Forget recorded targets (the chat's buttons are not touched; the next plan adds them again
    /// if the config still declares them).
    Rm {
        chat_id: String,
        /// `everyone`, a user id, or `open_id:ou_...` (default: every target of the chat).
        audience: Option<String>,
    },
    /// Copy a state between a file and PostgreSQL (either way), lineage and serial kept, into an
    /// empty destination; the source is left as it was.
    Migrate {
        /// Where the state is now: a file, or a PostgreSQL URL.
        #[arg(long, value_name = "PATH|URL")]
        from: PathBuf,
        /// Where it goes: a file, or a PostgreSQL URL.
        #[arg(long, value_name = "PATH|URL")]
        to: PathBuf,
        /// The state's name in the source database [default: --state-name, or default].
        #[arg(long, value_name = "NAME")]
        from_name: Option<String>,
        /// The state's name in the destination database [default: --state-name, or default].
        #[arg(long, value_name = "NAME")]
        to_name: Option<String>,
    },
    /// Record the config's targets as applied without calling the API: for buttons that were set
    /// before this tool managed them.
    Adopt {
        /// The config directory [default: .].
        dir: Option<PathBuf>,
        /// Only this chat (repeatable).
        #[arg(long = "chat", value_name = "CHAT_ID")]
        chats: Vec<String>,
    },
}

/// `state list|show --format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StateFormat {
    Text,
    Json,
}

/// `apply --format`: what apply prints on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ApplyFormat {
    /// The plan, then (on stderr) progress and the summary.
    Text,
    /// One JSON document at the end: the plan's summary and the result (the plan, progress and
    /// the summary for people go to stderr).
    Json,
}

/// `feedbuttons watch`: keep a chat's buttons in line with a directory that something else
/// keeps up to date.
#[derive(clap::Args, Debug)]
pub struct WatchArgs {
    /// The config directory (a checkout that a cron `git pull` or git-sync keeps current; a
    /// symbolic link to the current revision is followed when it is swapped).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// The applied state: a file [default: DIR/.feedbuttons/state.json], or a PostgreSQL URL
    /// (then several replicas may run: one leads, the others stand by). A file is required
    /// elsewhere when DIR's path passes through a symbolic link: a state inside a revision would
    /// vanish with it.
    #[arg(long, env = "FEEDBUTTONS_STATE", value_name = "PATH|URL")]
    pub state: Option<PathBuf>,
    /// The state's name in a PostgreSQL database, which holds several (say, one per
    /// repository) [default: default].
    #[arg(long, env = "FEEDBUTTONS_STATE_NAME", value_name = "NAME")]
    pub state_name: Option<String>,
    /// Wait this long for another writer of the state to finish instead of failing at once
    /// (`30s`, `10m`).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = duration)]
    pub lock_timeout: Duration,
    /// Where to serve /healthz, /readyz, /status and /metrics (port 0: any free port; the
    /// address is logged at start).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9464")]
    pub listen: String,
    /// Reconcile at least this often, in case a file event was missed (`30s`, `5m`, `1h`).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = positive_duration)]
    pub interval: Duration,
    /// Re-send every applied target once per DURATION, within half of --rate-limit (the API
    /// cannot be read, so this undoes changes made by anything else) [default: off].
    #[arg(long, value_name = "DURATION", value_parser = positive_duration)]
    pub resync: Option<Duration>,
    /// Wait until the directory has been quiet this long before reconciling.
    #[arg(long, value_name = "DURATION", default_value = "200ms", value_parser = duration)]
    pub debounce: Duration,
    /// Apply a plan that removes more than a quarter of the applied targets (or all of them)
    /// instead of holding it back.
    #[arg(long)]
    pub allow_mass_removal: bool,
    /// How long to wait before trying a user the API refused (not in the chat) again; the
    /// wait doubles with every refusal, up to an hour.
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = positive_duration)]
    pub retry_waiting: Duration,
    /// Look the members of the lock's chats (members_of) and departments up again this often
    /// (e.g. 10m), and apply membership changes without a commit; /status shows how far they
    /// drifted from the committed feedbuttons.lock. Off by default.
    #[arg(long, value_name = "DURATION", value_parser = positive_duration)]
    pub resolve_every: Option<Duration>,
    /// How to write the log on stderr: for people, or one JSON object a line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// The log's shape (`--log-format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
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

/// The longest duration a flag takes: a year. Longer ones would overflow the clock arithmetic
/// (an `Instant` plus the duration) and mean "never" anyway.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

fn duration(s: &str) -> Result<Duration, String> {
    let d =
        humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 200ms, 30s, 5m, 1h)"))?;
    if d > MAX_DURATION {
        return Err("must be at most a year (365d)".to_owned());
    }
    Ok(d)
}

fn positive_duration(s: &str) -> Result<Duration, String> {
    match duration(s)? {
        d if d.is_zero() => Err("must be longer than zero".to_owned()),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_parsed_and_bounded() {
        assert_eq!(duration("200ms"), Ok(Duration::from_millis(200)));
        assert!(positive_duration("0s").is_err());
        assert!(duration("500000000000years").is_err(), "no overflow later");
        assert!(duration("366d").is_err());
        assert!(duration("365d").is_ok());
    }

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(positive_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(positive_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(positive_duration("0s").is_err());
        assert!(duration("soon").is_err());
    }
}
