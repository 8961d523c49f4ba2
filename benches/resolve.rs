//! Resolve benchmark: the real binary (built by `cargo bench` in the release profile) runs
//! `feedbuttons resolve` on a config naming 5,000 people (4,000 by email, 1,000 by mobile) and
//! the members of 200 chats (150 each), against the in-process emulator with Feishu's directory
//! limits (50 calls a second and 1,000 a minute, per app and per API) and 100 ms latency.
//!
//! Prints, over several runs, the calls made per API next to the minimum (batch_get_id:
//! max(ceil(emails / 50), ceil(mobiles / 50)); chat members: the pages of 100 each chat needs),
//! the wall time of the whole process next to the rate limits' bound (the slowest API's calls
//! spaced at 50 a second, its minute's budget allowing), and the 429 answers.
//!
//! `cargo bench --bench resolve`. Exits 1 when a run makes more calls than the minimum, earns a
//! 429, or takes more than 25% over the bound.

use std::fmt::Write as _;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use feedbuttons::emulator::{
    BUILTIN_APP_ID, BUILTIN_APP_SECRET, DirectoryRateLimit, Emulator, EmulatorConfig, Fixtures,
};
use feedbuttons::feishu::windows;
use serde_json::Value;

const EMAILS: usize = 4_000;
const MOBILES: usize = 1_000;
const CHATS: usize = 200;
const MEMBERS: usize = 150;
const PAGE: usize = 100;
const PER_SECOND: u32 = 50;
const PER_MINUTE: u32 = 1_000;
const LATENCY: Duration = Duration::from_millis(100);
const RUNS: usize = 3;
const MAX_OVERRUN: f64 = 0.25;

const BATCH_GET_ID: &str = "/open-apis/contact/v3/users/batch_get_id";
const MEMBERS_PATH: &str = "/open-apis/im/v1/chats/";

fn person(i: usize) -> String {
    if i < EMAILS {
        format!("p{i}@example.com")
    } else {
        format!("+86139{i:08}")
    }
}

fn fixtures() -> String {
    let mut s = String::from("people:\n");
    for i in 0..EMAILS + MOBILES {
        let contact = if i < EMAILS {
            format!("email: {}", person(i))
        } else {
            format!("mobile: \"{}\"", person(i))
        };
        let _ = writeln!(s, "  - {{open_id: ou_p{i}, name: P{i}, {contact}}}");
    }
    s.push_str("chats:\n  - {chat_id: oc_all, members: everyone}\n");
    for c in 0..CHATS {
        let _ = writeln!(s, "  - chat_id: oc_team{c}\n    members:");
        for k in 0..MEMBERS {
            let _ = writeln!(s, "      - ou_p{}", (c * 37 + k * 13) % (EMAILS + MOBILES));
        }
    }
    s
}

fn config() -> String {
    let mut s = String::from(
        "version: 1\nbuttons:\n  runbook: {text: Runbook, url: \"https://wiki.example.com/runbook\"}\nuser_sets:\n  everybody:\n",
    );
    for i in 0..EMAILS + MOBILES {
        let _ = writeln!(s, "    - \"{}\"", person(i));
    }
    for c in 0..CHATS {
        let _ = writeln!(s, "  team{c}: [{{members_of: oc_team{c}}}]");
    }
    s.push_str("chats:\n  - chat_id: oc_all\n    assign:\n      - user_sets: [everybody]\n        buttons: [runbook]\n");
    for c in 0..CHATS {
        let _ = writeln!(
            s,
            "  - chat_id: oc_team{c}\n    assign:\n      - user_sets: [team{c}]\n        buttons: [runbook]"
        );
    }
    s
}

struct Run {
    wall: Duration,
    batch: usize,
    members: usize,
    throttled: usize,
}

async fn one_run(fixtures: &Fixtures, config: &str) -> Result<Run, String> {
    let emu = Emulator::start(EmulatorConfig {
        fixtures: Some(fixtures.clone()),
        rate_limit: 0,
        directory_rate_limit: DirectoryRateLimit {
            per_second: PER_SECOND,
            per_minute: PER_MINUTE,
        },
        latency: LATENCY,
        request_log_capacity: 100_000,
        ..EmulatorConfig::default()
    })
    .await
    .map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    std::fs::write(dir.path().join("people.yaml"), config).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_feedbuttons"));
    cmd.args(["resolve", "."])
        .current_dir(dir.path())
        .env("FEISHU_BASE_URL", emu.base_url())
        .env("FEISHU_APP_ID", BUILTIN_APP_ID)
        .env("FEISHU_APP_SECRET", BUILTIN_APP_SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let wall = started.elapsed();
    if !out.status.success() {
        return Err(format!(
            "resolve failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let log: Value = reqwest::get(emu.url("/_emulator/requests"))
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let requests = log["requests"].as_array().cloned().unwrap_or_default();
    let path_of = |r: &Value| r["path"].as_str().unwrap_or_default().to_owned();
    let answered = |r: &Value| r["status"].as_u64() != Some(429);
    let batch = requests
        .iter()
        .filter(|r| path_of(r) == BATCH_GET_ID && answered(r))
        .count();
    let members = requests
        .iter()
        .filter(|r| path_of(r).starts_with(MEMBERS_PATH) && answered(r))
        .count();
    let throttled = requests
        .iter()
        .filter(|r| r["status"].as_u64() == Some(429))
        .count();
    Ok(Run {
        wall,
        batch,
        members,
        throttled,
    })
}

async fn run() -> Result<bool, String> {
    let fixtures = Fixtures::parse(&fixtures()).map_err(|e| e.join("; "))?;
    let config = config();
    let min_batch = EMAILS.div_ceil(50).max(MOBILES.div_ceil(50));
    let min_members = CHATS * MEMBERS.div_ceil(PAGE);
    let bound = [min_batch, min_members]
        .into_iter()
        .map(|n| windows::bound(PER_SECOND, PER_MINUTE, n))
        .max()
        .unwrap_or_default();
    println!(
        "resolve {} people ({EMAILS} emails, {MOBILES} mobiles) and the members of {CHATS} chats ({MEMBERS} each), {PER_SECOND}/s and {PER_MINUTE}/min per API, {} ms latency",
        EMAILS + MOBILES,
        LATENCY.as_millis()
    );
    let mut ok = true;
    let mut walls = Vec::new();
    for i in 1..=RUNS {
        let r = one_run(&fixtures, &config).await?;
        let over = r.wall.as_secs_f64() / bound.as_secs_f64() - 1.0;
        println!(
            "run {i}: batch_get_id {} calls (minimum {min_batch}), chat members {} pages (minimum {min_members}), {} answered 429; {:.2} s against the bound {:.2} s ({:+.1}%)",
            r.batch,
            r.members,
            r.throttled,
            r.wall.as_secs_f64(),
            bound.as_secs_f64(),
            over * 100.0
        );
        ok &= r.batch == min_batch && r.members == min_members && r.throttled == 0;
        ok &= over <= MAX_OVERRUN;
        walls.push(r.wall);
    }
    walls.sort();
    let median = walls[walls.len() / 2];
    println!(
        "median: {:.2} s for {} calls against the bound {:.2} s; one call a person and a page would be {} calls",
        median.as_secs_f64(),
        min_batch + min_members,
        bound.as_secs_f64(),
        EMAILS + MOBILES + min_members
    );
    Ok(ok)
}

fn main() -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("resolve made more calls than the minimum, was throttled, or ran over");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
