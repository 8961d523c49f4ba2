//! `feedbuttons emulator`: the command-line arguments, and serving until Ctrl-C or SIGTERM.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{
    BUILTIN_APP_ID, BUILTIN_APP_SECRET, DirectoryRateLimit, Emulator, EmulatorConfig,
    EmulatorError, Fixtures,
};

/// Run a local emulator of the Feishu chat-button API.
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
pub struct EmulatorArgs {
    /// Address to listen on (port 0 picks a free port and prints it).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8089")]
    pub listen: String,
    /// YAML (or JSON) file of apps, chats and members, people and departments; without it the
    /// built-in app is used, the bot is in every chat, every user is a member, and no email or
    /// mobile resolves.
    #[arg(long, value_name = "FILE")]
    pub fixtures: Option<PathBuf>,
    /// Chat-button calls per second per app (0 = unlimited).
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub rate_limit: u32,
    /// Directory calls (batch_get_id, chat members, find_by_department) per second per app,
    /// each API its own budget (0 = unlimited).
    #[arg(long, value_name = "N", default_value_t = crate::feishu::wire::directory::RATE_LIMIT_PER_SECOND)]
    pub directory_rate_limit: u32,
    /// The same, per minute; both limits apply (0 = unlimited).
    #[arg(long, value_name = "N", default_value_t = crate::feishu::wire::directory::RATE_LIMIT_PER_MINUTE)]
    pub directory_rate_limit_per_minute: u32,
    /// Milliseconds added before every Feishu API answer.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub latency_ms: u64,
    /// Lifetime of an issued tenant token, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 7200,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub token_ttl: u64,
    /// Do not print a line per request.
    #[arg(long)]
    pub quiet: bool,
}

impl EmulatorArgs {
    /// The emulator configuration these arguments describe (reads the fixtures file).
    pub async fn config(&self) -> Result<EmulatorConfig, EmulatorError> {
        let listen = resolve(&self.listen).await?;
        let fixtures = self.fixtures.as_deref().map(Fixtures::load).transpose()?;
        Ok(EmulatorConfig {
            listen,
            fixtures,
            rate_limit: self.rate_limit,
            directory_rate_limit: DirectoryRateLimit {
                per_second: self.directory_rate_limit,
                per_minute: self.directory_rate_limit_per_minute,
            },
            latency: Duration::from_millis(self.latency_ms),
            token_ttl: Duration::from_secs(self.token_ttl),
            print_requests: !self.quiet,
            ..EmulatorConfig::default()
        })
    }
}

async fn resolve(listen: &str) -> Result<SocketAddr, EmulatorError> {
    if let Ok(addr) = listen.parse() {
        return Ok(addr);
    }
    let invalid = || EmulatorError::ListenAddress {
        addr: listen.to_owned(),
    };
    tokio::net::lookup_host(listen)
        .await
        .map_err(|_| invalid())?
        .next()
        .ok_or_else(invalid)
}

/// Serves until Ctrl-C or SIGTERM, printing where and with which credentials to connect.
pub async fn run(args: EmulatorArgs) -> Result<(), EmulatorError> {
    run_until(args, stop_signal(), &mut std::io::stdout()).await
}

/// Serves until `stop` completes, writing the start-up banner to `out`.
pub async fn run_until(
    args: EmulatorArgs,
    stop: impl Future<Output = Result<(), EmulatorError>>,
    out: &mut impl Write,
) -> Result<(), EmulatorError> {
    let config = args.config().await?;
    let builtin = config.fixtures.as_ref().is_none_or(|f| f.apps.is_empty());
    let emulator = Emulator::start(config.clone()).await?;
    // A closed stdout (piped into `head`) must not stop the server.
    let _ = writeln!(
        out,
        "{}",
        banner(
            &args,
            &config,
            &emulator.base_url(),
            builtin,
            emulator.app_ids()
        )
    );
    let _ = out.flush();
    let result = stop.await;
    emulator.shutdown().await;
    result
}

fn banner(
    args: &EmulatorArgs,
    config: &EmulatorConfig,
    base_url: &str,
    builtin: bool,
    apps: &[String],
) -> String {
    let mut b = format!("feedbuttons emulator listening on {base_url}\n\n");
    if builtin {
        b.push_str(&format!(
            "Point feedbuttons at it with:\n  export FEISHU_BASE_URL={base_url}\n  export FEISHU_APP_ID={BUILTIN_APP_ID}\n  export FEISHU_APP_SECRET={BUILTIN_APP_SECRET}\n\n"
        ));
    } else {
        b.push_str(&format!(
            "Point feedbuttons at it with:\n  export FEISHU_BASE_URL={base_url}\n  and the app id and secret of one of the fixtures' apps: {}\n\n",
            apps.join(", ")
        ));
    }
    match &args.fixtures {
        None => b.push_str("No fixtures: the bot is in every chat and every user is a member.\n"),
        Some(path) => b.push_str(&format!("Fixtures: {}\n", path.display())),
    }
    match config.rate_limit {
        0 => b.push_str("Rate limit: none\n"),
        n => b.push_str(&format!("Rate limit: {n} requests per second per app\n")),
    }
    let per = |n: u32, unit: &str| match n {
        0 => format!("no limit per {unit}"),
        n => format!("{n} per {unit}"),
    };
    let d = config.directory_rate_limit;
    b.push_str(&format!(
        "Directory look-ups: {} and {} per app and API\n",
        per(d.per_second, "second"),
        per(d.per_minute, "minute")
    ));
    b.push_str(&format!(
        "Tokens live {} s; added latency {} ms\nSee what each user sees: {base_url}/_emulator/chats\nPress Ctrl-C to stop.",
        config.token_ttl.as_secs(),
        config.latency.as_millis()
    ));
    b
}

/// Ctrl-C, or SIGTERM where there is one.
async fn stop_signal() -> Result<(), EmulatorError> {
    crate::runtime::shutdown_signal()
        .map_err(EmulatorError::Signal)?
        .await;
    Ok(())
}
