//! The watch daemon as it runs: how long from a config file's write to the first API call it
//! causes, and what the daemon costs at idle (resident memory, CPU).
//!
//! `cargo bench --bench watch [-- --edits N --idle-secs S --small]`. Starts the in-process
//! emulator and `feedbuttons watch` as a child process, edits one chat's button `--edits` times
//! for a config of 1 chat and one of 1,000 chats (10,000 user targets), and reads the latency
//! from the emulator's request log (its `unix_ms` against the write's wall-clock time). Then,
//! unless `--small`, does the same for one file of the config (10,000 chats, 1,000,000
//! user targets in 100 files, all recorded as applied), beside the YAML parser's own time on
//! those files, and reads that daemon's idle memory. Then lets the daemon idle for
//! `--idle-secs` and reads /proc/PID/status (VmRSS) and /proc/PID/stat (utime + stime), for a
//! config of 20 chats and one of 1,000. Exits 1 when a latency reaches 1 s (100 ms beyond the
//! debounce at 1,000,000 targets), the idle daemon holds 30 MB or more (200 MB at 1,000,000
//! targets), or it used more than one clock tick per 10 s idle. Loopback only, bounded in time.

#[path = "common/gen.rs"]
mod generate;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use feedbuttons::emulator::{
    BUILTIN_APP_ID, BUILTIN_APP_SECRET, Emulator, EmulatorConfig, RunningEmulator,
};
use serde_json::Value;

const LATENCY_LIMIT_MS: u64 = 1000;
const RSS_LIMIT_KB: u64 = 30 * 1024;
/// The bound for the daemon holding 1,000,000 targets.
const LARGE_RSS_LIMIT_KB: u64 = 200 * 1024;
const WAIT: Duration = Duration::from_secs(60);

struct Options {
    edits: usize,
    idle_secs: u64,
    /// `--small`: skip the 1,000,000-target daemon.
    small_only: bool,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().collect();
    let mut o = Options {
        edits: 10,
        idle_secs: 10,
        small_only: args.iter().any(|a| a == "--small"),
    };
    for pair in args.windows(2) {
        // `cargo bench` adds `--bench`; anything not ours is ignored.
        match (pair[0].as_str(), pair[1].parse::<u64>()) {
            ("--edits", Ok(n)) => o.edits = n.max(1) as usize,
            ("--idle-secs", Ok(n)) => o.idle_secs = n.max(1),
            _ => {}
        }
    }
    o
}

/// `chats` chats with `users` users each; chat 0's whole-chat button says `text`.
fn config(chats: usize, users: usize, text: &str) -> String {
    let mut s = String::from("version: 1\nchats:\n");
    for c in 0..chats {
        let label = if c == 0 { text } else { "Runbook" };
        s.push_str(&format!(
            "  - chat_id: oc_bench{c:05}\n    assign:\n      - everyone: true\n        buttons:\n          - text: {label}\n            url: https://example.com/runbook\n"
        ));
        if users > 0 {
            s.push_str("      - users: [");
            for u in 0..users {
                if u > 0 {
                    s.push_str(", ");
                }
                s.push_str(&format!("ou_bench{c:05}u{u:03}"));
            }
            s.push_str(
                "]\n        buttons:\n          - text: Acknowledge\n            action: webhook\n",
            );
        }
    }
    s
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

struct Daemon {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_daemon(emu: &RunningEmulator, dir: &Path) -> Result<(Daemon, String), String> {
    start_daemon_with(emu, dir, &[])
}

fn start_daemon_with(
    emu: &RunningEmulator,
    dir: &Path,
    extra: &[&std::ffi::OsStr],
) -> Result<(Daemon, String), String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_feedbuttons"))
        .arg("watch")
        .arg(dir)
        .args(extra)
        // As good as unthrottled (0, which meant no limit, is refused since), so that the
        // large config's first apply is quick: it is not what is timed.
        .args([
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--rate-limit",
            "1000000",
        ])
        .env("FEISHU_BASE_URL", emu.base_url())
        .env("FEISHU_APP_ID", BUILTIN_APP_ID)
        .env("FEISHU_APP_SECRET", BUILTIN_APP_SECRET)
        .env_remove("FEEDBUTTONS_STATE")
        .env_remove("FEEDBUTTONS_LOG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start feedbuttons watch: {e}"))?;
    let lines = Arc::new(Mutex::new(Vec::new()));
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Ok(mut l) = sink.lock() {
                l.push(line);
            }
        }
    });
    let daemon = Daemon { child, lines };
    let deadline = Instant::now() + WAIT;
    loop {
        let addr = daemon.lines.lock().ok().and_then(|l| {
            l.iter().find_map(|line| {
                let v: Value = serde_json::from_str(line).ok()?;
                v["addr"].as_str().map(str::to_owned)
            })
        });
        if let Some(addr) = addr {
            return Ok((daemon, addr));
        }
        if Instant::now() > deadline {
            return Err("the daemon logged no address".to_owned());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

async fn get(url: &str) -> Result<reqwest::Response, String> {
    reqwest::get(url)
        .await
        .map_err(|e| format!("GET {url}: {e}"))
}

async fn call_times(emu: &RunningEmulator) -> Result<Vec<u64>, String> {
    let v: Value = get(&emu.url("/_emulator/requests?path=/open-apis/im/v2/chat_button"))
        .await?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    Ok(v["requests"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["unix_ms"].as_u64()).collect())
        .unwrap_or_default())
}

async fn wait_ready(addr: &str) -> Result<(), String> {
    let deadline = Instant::now() + WAIT;
    loop {
        if get(&format!("http://{addr}/readyz"))
            .await?
            .status()
            .is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("the daemon never became ready".to_owned());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes `text` to `file` and waits for the first call after it: milliseconds from the write
/// to that call.
async fn first_call_after(emu: &RunningEmulator, file: &Path, text: String) -> Result<u64, String> {
    let before = call_times(emu).await?.len();
    let written = unix_ms();
    std::fs::write(file, text).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(t) = call_times(emu).await?.get(before) {
            return Ok(t.saturating_sub(written));
        }
        if Instant::now() > deadline {
            return Err("the write caused no call".to_owned());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Latencies (ms) from a write to the first call, one per edit.
async fn latencies(chats: usize, users: usize, edits: usize) -> Result<Vec<u64>, String> {
    let emu = Emulator::start(EmulatorConfig {
        // The first apply of the large config is not what is measured: let it run unthrottled.
        rate_limit: 0,
        ..EmulatorConfig::default()
    })
    .await
    .map_err(|e| e.to_string())?;
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let file = tmp.path().join("buttons.yaml");
    std::fs::write(&file, config(chats, users, "Edit start")).map_err(|e| e.to_string())?;
    let (daemon, addr) = start_daemon(&emu, tmp.path())?;
    wait_ready(&addr).await?;
    let mut out = Vec::with_capacity(edits);
    for i in 0..edits {
        // Past the debounce and any settling of the previous edit.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let text = config(chats, users, &format!("Edit {i}"));
        match first_call_after(&emu, &file, text).await {
            Ok(ms) => out.push(ms),
            Err(e) => {
                let log = daemon
                    .lines
                    .lock()
                    .map(|l| l.join("\n"))
                    .unwrap_or_default();
                return Err(format!("edit {i}: {e}:\n{log}"));
            }
        }
    }
    drop(daemon);
    Ok(out)
}

/// The default `--debounce`: what a latency is beyond.
const DEBOUNCE_MS: u64 = 200;

/// The size: 10,000 chats and 1,000,000 user targets in 100 files, with a state that
/// records all of them as applied (the daemon starts with nothing to send). Each edit gives the
/// first assignment of one chat in one file another button list (50 users: 3 calls). Returns
/// the latencies (ms) and, after the edits and `idle_secs` of idling, VmRSS, VmHWM (kB) and the
/// CPU ticks of the idle time.
async fn large(edits: usize, idle_secs: u64) -> Result<(Vec<u64>, (u64, u64, u64)), String> {
    let emu = Emulator::start(EmulatorConfig {
        rate_limit: 0,
        ..EmulatorConfig::default()
    })
    .await
    .map_err(|e| e.to_string())?;
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let dir = tmp.path().join("config");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    generate::write_config(&dir, 100, 10_000, 100, 0);
    let state_path = tmp.path().join("state.json");
    {
        let desired = feedbuttons::config::load_dir(&dir)
            .map_err(|e| e.to_string())?
            .desired
            .ok_or("the generated config is invalid")?;
        let store = feedbuttons::state::open(&state_path).map_err(|e| e.to_string())?;
        let mut writer = store.writer("bench").map_err(|e| e.to_string())?;
        let records: Vec<feedbuttons::state::Record> = desired
            .targets
            .iter()
            .map(|(t, b)| feedbuttons::state::Record::Set {
                target: t.clone(),
                buttons: b.clone(),
            })
            .collect();
        writer.record(&records).map_err(|e| e.to_string())?;
        writer.compact().map_err(|e| e.to_string())?;
    }
    let (daemon, addr) =
        start_daemon_with(&emu, &dir, &["--state".as_ref(), state_path.as_os_str()])?;
    wait_ready(&addr).await?;
    let file = dir.join("team-042.yaml");
    let original = std::fs::read_to_string(&file).map_err(|e| e.to_string())?;
    // The file's first assignment line, to give other buttons.
    let first = original
        .lines()
        .find(|l| l.trim_start().starts_with("- buttons: ["))
        .ok_or("no assignment in the generated file")?
        .to_owned();
    let mut out = Vec::with_capacity(edits);
    for i in 0..edits {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let line = format!("      - buttons: [b{}, b{}]", 90 + i % 10, i % 7);
        let text = original.replacen(&first, &line, 1);
        out.push(
            first_call_after(&emu, &file, text)
                .await
                .map_err(|e| format!("edit {i}: {e}"))?,
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = daemon.child.id();
    let (_, _, before) = proc_figures(pid)?;
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let (rss, hwm, after) = proc_figures(pid)?;
    drop(daemon);
    Ok((out, (rss, hwm, after - before)))
}

/// VmRSS and VmHWM in kB, and utime + stime in clock ticks.
fn proc_figures(pid: u32) -> Result<(u64, u64, u64), String> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or(format!("no {key} in /proc/{pid}/status"))
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or("unreadable /proc/PID/stat".to_owned())
    };
    Ok((kb("VmRSS:")?, kb("VmHWM:")?, tick(11)? + tick(12)?))
}

fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

/// Settles, then measures resident memory and CPU over `secs` of idling.
async fn idle(secs: u64, chats: usize, users: usize) -> Result<(u64, u64, u64), String> {
    let emu = Emulator::start(EmulatorConfig {
        rate_limit: 0,
        ..EmulatorConfig::default()
    })
    .await
    .map_err(|e| e.to_string())?;
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    std::fs::write(
        tmp.path().join("buttons.yaml"),
        config(chats, users, "Idle"),
    )
    .map_err(|e| e.to_string())?;
    let (daemon, addr) = start_daemon(&emu, tmp.path())?;
    wait_ready(&addr).await?;
    // One scrape and probe, as a monitoring system would do, then quiet.
    get(&format!("http://{addr}/metrics")).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = daemon.child.id();
    let (_, _, before) = proc_figures(pid)?;
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (rss, hwm, after) = proc_figures(pid)?;
    Ok((rss, hwm, after - before))
}

fn summary(ms: &[u64]) -> (u64, u64, u64, f64) {
    let mut v = ms.to_vec();
    v.sort_unstable();
    let mean = v.iter().sum::<u64>() as f64 / v.len().max(1) as f64;
    (
        v.first().copied().unwrap_or(0),
        v.get(v.len() / 2).copied().unwrap_or(0),
        v.last().copied().unwrap_or(0),
        mean,
    )
}

fn main() -> ExitCode {
    let o = options();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut ok = true;
    for (chats, users, label) in [(1, 0, "1 chat"), (1000, 10, "1,000 chats, 11,000 targets")] {
        match rt.block_on(latencies(chats, users, o.edits)) {
            Ok(ms) => {
                let (min, median, max, mean) = summary(&ms);
                println!(
                    "write -> first call, {label}, {} edits: min {min} ms, median {median} ms, mean {mean:.0} ms, max {max} ms",
                    ms.len()
                );
                ok &= max < LATENCY_LIMIT_MS;
            }
            Err(e) => {
                eprintln!("latency ({label}): {e}");
                ok = false;
            }
        }
    }
    let tck = clock_ticks_per_second();
    if !o.small_only {
        let dir = tempfile::tempdir().ok();
        let bound = dir.as_ref().map_or(0.0, |d| {
            generate::write_config(d.path(), 100, 10_000, 100, 0);
            generate::parser_bound_secs(d.path(), 1)
        });
        drop(dir);
        match rt.block_on(large(o.edits, o.idle_secs)) {
            Ok((ms, (rss, hwm, ticks))) => {
                let (min, median, max, _) = summary(&ms);
                let beyond = |ms: u64| ms.saturating_sub(DEBOUNCE_MS);
                println!(
                    "write -> first call, 10,000 chats, 1,000,000 targets in 100 files, one file edited, {} edits: median {median} ms ({} ms beyond the {DEBOUNCE_MS} ms debounce; min {min}, max {max}); the YAML parser alone on all 100 files: {:.0} ms",
                    ms.len(),
                    beyond(median),
                    bound * 1e3
                );
                println!(
                    "idle over {} s after the edits, 1,000,000 targets: resident {:.1} MB (peak {:.1} MB), CPU {ticks} ticks",
                    o.idle_secs,
                    rss as f64 / 1024.0,
                    hwm as f64 / 1024.0,
                );
                ok &= beyond(median) <= 100 && rss <= LARGE_RSS_LIMIT_KB;
            }
            Err(e) => {
                eprintln!("1,000,000 targets: {e}");
                ok = false;
            }
        }
    }
    for (chats, users, label) in [(20, 10, "20 chats"), (1000, 10, "1,000 chats")] {
        match rt.block_on(idle(o.idle_secs, chats, users)) {
            Ok((rss, hwm, ticks)) => {
                let cpu_ms = ticks * 1000 / tck;
                println!(
                    "idle over {} s, {label}: resident {:.1} MB (peak {:.1} MB), CPU {ticks} ticks = {cpu_ms} ms ({:.2}%)",
                    o.idle_secs,
                    rss as f64 / 1024.0,
                    hwm as f64 / 1024.0,
                    cpu_ms as f64 / (o.idle_secs * 10) as f64
                );
                ok &= rss < RSS_LIMIT_KB && ticks <= o.idle_secs.div_ceil(10);
            }
            Err(e) => {
                eprintln!("idle ({label}): {e}");
                ok = false;
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        eprintln!("over a limit: write -> first call 1 s, idle 30 MB and no measurable CPU");
        ExitCode::FAILURE
    }
}
