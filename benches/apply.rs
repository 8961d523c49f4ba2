//! Apply benchmark: the real binary (built by `cargo bench` in the release profile) applies a
//! config needing exactly 300 calls to the in-process emulator limited to 10 calls a second
//! with 200 ms latency, as Feishu is. Prints the wall time of the whole `feedbuttons apply`
//! process next to the ideal 300 / 10 = 30 s, the overrun, and the 429 answers in the
//! emulator's request log. Then counts the calls the plan makes for 1,000 users across 10 chats
//! in 2 button lists, next to one call per user (a hand-written script) and the minimum,
//! sum(ceil(n / 20)) over each chat's lists.
//!
//! `cargo bench --bench apply`. Exits 1 when the apply takes more than 5% over 30 s, when any
//! call was answered 429, or when the plan makes more calls than the minimum.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use feedbuttons::emulator::{BUILTIN_APP_ID, BUILTIN_APP_SECRET, Emulator, EmulatorConfig};
use feedbuttons::target::{ButtonList, Target};
use serde_json::Value;

const RATE: u32 = 10;
const LATENCY: Duration = Duration::from_millis(200);
const CALLS: usize = 300;
const MAX_OVERRUN: f64 = 0.05;
const USERS_PER_CALL: usize = 20;

/// `chats` chats, each with `lists` per-user lists (different buttons) of `users` users.
fn config(chats: usize, lists: usize, users: usize) -> String {
    let mut s = String::from(
        "version: 1
buttons:
  runbook:
    text: Runbook
    style: primary
    url: https://wiki.example.com/runbook
  ack:
    text: Acknowledge
    action: webhook
    action_map:
      op: ack
  dash:
    text: Dashboards
    url: https://grafana.example.com
chats:
",
    );
    let lists_of = [["runbook", "ack"], ["dash", "runbook"], ["ack", "dash"]];
    for c in 0..chats {
        let _ = writeln!(s, "  - chat_id: oc_bench{c}\n    assign:");
        for l in 0..lists {
            let _ = writeln!(
                s,
                "      - buttons: [{}]\n        users:",
                lists_of[l % lists_of.len()].join(", ")
            );
            for u in 0..users {
                let _ = writeln!(s, "          - ou_bench_c{c}_l{l}_u{u}");
            }
        }
    }
    s
}

/// The calls a first apply of the config in `dir` makes.
fn planned_calls(dir: &Path) -> Result<usize, String> {
    let loaded = feedbuttons::config::load_dir(dir).map_err(|e| e.to_string())?;
    let desired = loaded
        .desired
        .ok_or_else(|| "the generated config is invalid".to_owned())?;
    let nothing: BTreeMap<Target, std::sync::Arc<ButtonList>> = BTreeMap::new();
    let plan = feedbuttons::plan::plan(
        &desired.targets,
        &desired.chat_names,
        &nothing,
        &feedbuttons::plan::PlanOptions::default(),
    );
    Ok(plan.requests.len())
}

fn write_config(text: &str) -> Result<tempfile::TempDir, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    std::fs::write(dir.path().join("buttons.yaml"), text).map_err(|e| e.to_string())?;
    Ok(dir)
}

struct Timed {
    elapsed: Duration,
    calls: Vec<Value>,
}

/// Runs `feedbuttons apply DIR --yes` at the default 10 calls a second against an emulator
/// limited the same way; returns its wall time and the emulator's log of chat-button calls.
async fn timed_apply(dir: &Path) -> Result<Timed, String> {
    let emu = Emulator::start(EmulatorConfig {
        rate_limit: RATE,
        latency: LATENCY,
        ..EmulatorConfig::default()
    })
    .await
    .map_err(|e| e.to_string())?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_feedbuttons"));
    cmd.args(["apply", ".", "--yes"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .env("NO_COLOR", "1")
        .env("FEISHU_BASE_URL", emu.base_url())
        .env("FEISHU_APP_ID", BUILTIN_APP_ID)
        .env("FEISHU_APP_SECRET", BUILTIN_APP_SECRET)
        .env_remove("FEEDBUTTONS_STATE")
        .env_remove("FEEDBUTTONS_LOG");
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot run feedbuttons: {e}"))?;
    let elapsed = started.elapsed();
    if !out.status.success() {
        return Err(format!(
            "apply failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let log: Value = reqwest::get(emu.url("/_emulator/requests?path=/open-apis/im/v2/chat_button"))
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let calls = log["requests"].as_array().ok_or("no request log")?.clone();
    emu.shutdown().await;
    Ok(Timed { elapsed, calls })
}

async fn run() -> Result<bool, String> {
    let mut ok = true;

    // 10 chats x 2 lists x 300 users: 10 x 2 x 15 = 300 calls.
    let dir = write_config(&config(10, 2, 300))?;
    let planned = planned_calls(dir.path())?;
    if planned != CALLS {
        return Err(format!("the config needs {planned} calls, not {CALLS}"));
    }
    let timed = timed_apply(dir.path()).await?;
    let ideal = CALLS as f64 / f64::from(RATE);
    let secs = timed.elapsed.as_secs_f64();
    let overrun = secs / ideal - 1.0;
    let throttled = timed.calls.iter().filter(|r| r["status"] == 429).count();
    let applied = timed
        .calls
        .iter()
        .filter(|r| r["status"] == 200 && r["code"] == 0)
        .count();
    let ms: Vec<u64> = timed
        .calls
        .iter()
        .filter_map(|r| r["unix_ms"].as_u64())
        .collect();
    let span = ms.last().zip(ms.first()).map_or(0, |(l, f)| l - f);
    let busiest = ms
        .iter()
        .enumerate()
        .map(|(i, t)| ms[i..].iter().take_while(|u| **u < t + 1000).count())
        .max()
        .unwrap_or(0);
    println!(
        "apply, {CALLS} calls at {RATE}/s with {} ms latency (the feedbuttons process, start to exit):",
        LATENCY.as_millis()
    );
    println!("  elapsed        {secs:.2} s (ideal {ideal:.0} s)");
    println!(
        "  overrun        {:+.2}% (limit +{:.0}%)",
        overrun * 100.0,
        MAX_OVERRUN * 100.0
    );
    println!("  429 answers    {throttled}");
    println!(
        "  calls applied  {applied}; first to last call {:.2} s; at most {busiest} in any 1 s",
        span as f64 / 1000.0
    );
    if overrun > MAX_OVERRUN {
        println!("  FAIL: more than {:.0}% over", MAX_OVERRUN * 100.0);
        ok = false;
    }
    if throttled > 0 || applied != CALLS {
        println!("  FAIL: {throttled} calls throttled, {applied} of {CALLS} applied");
        ok = false;
    }

    // 1,000 users across 10 chats in 2 lists: 50 users per list.
    let (chats, lists, users) = (10, 2, 50);
    let dir = write_config(&config(chats, lists, users))?;
    let planned = planned_calls(dir.path())?;
    let per_user = chats * lists * users;
    let minimum = chats * lists * users.div_ceil(USERS_PER_CALL);
    println!(
        "calls for {per_user} users across {chats} chats in {lists} button lists ({users} users a list):"
    );
    println!("  feedbuttons plan   {planned}");
    println!("  one call per user  {per_user}");
    println!("  minimum            {minimum} (sum of ceil(n / {USERS_PER_CALL}))");
    println!(
        "  at {RATE} calls/s    {} s vs {} s",
        planned.div_ceil(RATE as usize),
        per_user.div_ceil(RATE as usize)
    );
    if planned != minimum {
        println!("  FAIL: the plan is not minimal");
        ok = false;
    }
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
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
