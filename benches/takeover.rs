//! Benchmark (issue: the PostgreSQL state): how long a standby replica of `watch` takes to lead
//! after the leader is killed (SIGKILL), and then to apply an edit. Two
//! release binaries against the emulator and a real (durable) PostgreSQL; the leader is idle when
//! killed, as a daemon mostly is. Run with `cargo bench --bench takeover`; without a PostgreSQL to
//! start it says why and does nothing.

#[path = "../tests/pgserver.rs"]
mod pgserver;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use feedbuttons::emulator::{
    BUILTIN_APP_ID, BUILTIN_APP_SECRET, Emulator, EmulatorConfig, RunningEmulator,
};
use serde_json::Value;

const ROUNDS: usize = 10;
const WAIT: Duration = Duration::from_secs(30);

struct Replica {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    addr: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(text: &str) -> String {
    format!(
        "version: 1\nchats:\n  - chat_id: oc_takeover\n    assign:\n      - everyone: true\n        buttons:\n          - text: {text}\n            url: https://example.com/t\n"
    )
}

fn replica(emu: &RunningEmulator, dir: &Path, url: &str) -> Result<Replica, String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_feedbuttons"))
        .arg("watch")
        .arg(dir)
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(["--debounce", "50ms", "--state", url])
        .env("FEISHU_BASE_URL", emu.base_url())
        .env("FEISHU_APP_ID", BUILTIN_APP_ID)
        .env("FEISHU_APP_SECRET", BUILTIN_APP_SECRET)
        .env_remove("FEEDBUTTONS_STATE_NAME")
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
    let deadline = Instant::now() + WAIT;
    loop {
        let addr = lines.lock().ok().and_then(|l| {
            l.iter().find_map(|line| {
                let v: Value = serde_json::from_str(line).ok()?;
                v["addr"].as_str().map(str::to_owned)
            })
        });
        if let Some(addr) = addr {
            return Ok(Replica { child, lines, addr });
        }
        if Instant::now() > deadline {
            return Err("the daemon logged no address".to_owned());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

async fn status(r: &Replica) -> Result<Value, String> {
    reqwest::get(format!("http://{}/status", r.addr))
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())
}

async fn chat_text(emu: &RunningEmulator) -> Option<String> {
    let v: Value = reqwest::get(emu.url("/_emulator/chats/oc_takeover"))
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    v["chat_buttons"][0]["text"]["text"]
        .as_str()
        .map(str::to_owned)
}

async fn until<F, Fut>(what: &str, mut check: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !check().await {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// One round: (kill -> the standby leads, an edit written then -> applied by it).
async fn round(emu: &RunningEmulator, url: &str, n: usize) -> Result<(Duration, Duration), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let file = dir.path().join("a.yaml");
    let first = format!("Before{n}");
    std::fs::write(&file, config(&first)).map_err(|e| e.to_string())?;
    let mut leader = replica(emu, dir.path(), url)?;
    until("the leader's apply", || async {
        chat_text(emu).await.as_deref() == Some(first.as_str())
    })
    .await?;
    let standby = replica(emu, dir.path(), url)?;
    until("the standby", || async {
        status(&standby).await.is_ok_and(|s| s["role"] == "standby")
    })
    .await?;
    // Idle: the leader's last call ended over a second ago. The kill lands at a different
    // point of the standby's 1 s polling each round (spread evenly over the rounds).
    let phase = 1000 * n as u64 / ROUNDS as u64;
    tokio::time::sleep(Duration::from_millis(1500 + phase)).await;
    leader.child.kill().map_err(|e| e.to_string())?;
    let killed = Instant::now();
    let _ = leader.child.wait();
    // No edit yet: a file event would wake the standby early.
    until("the standby to lead", || async {
        status(&standby).await.is_ok_and(|s| s["role"] == "leader")
    })
    .await
    .map_err(|e| {
        let log = standby
            .lines
            .lock()
            .map(|l| l.join("\n"))
            .unwrap_or_default();
        format!("{e}; the standby's log:\n{log}")
    })?;
    let led = killed.elapsed();
    // Then an edit, applied by the new leader.
    let next = format!("After{n}");
    let written = Instant::now();
    std::fs::write(&file, config(&next)).map_err(|e| e.to_string())?;
    until("the new leader to apply the edit", || async {
        chat_text(emu).await.as_deref() == Some(next.as_str())
    })
    .await?;
    Ok((led, written.elapsed()))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() -> ExitCode {
    let Some(pg) = pgserver::start_with(true) else {
        return ExitCode::SUCCESS;
    };
    let url = pg.url("postgres");
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let out = rt.block_on(async {
        let emu = Emulator::start(EmulatorConfig::default())
            .await
            .map_err(|e| e.to_string())?;
        let (mut led, mut applied) = (Vec::new(), Vec::new());
        for n in 0..ROUNDS {
            let (l, a) = round(&emu, &url, n).await?;
            println!(
                "round {n}: the standby led {:.0} ms after the kill; an edit then was applied after {:.0} ms",
                l.as_secs_f64() * 1000.0,
                a.as_secs_f64() * 1000.0
            );
            led.push(l);
            applied.push(a);
        }
        Ok::<_, String>((led, applied))
    });
    match out {
        Ok((led, applied)) => {
            println!(
                "takeover after SIGKILL of an idle leader, {ROUNDS} rounds: the standby leads after {:.0} ms (median; {:.0}-{:.0} ms; it tries every 1 s, or at once on a file event), and applies an edit written then after {:.0} ms (median)",
                median(led.clone()).as_secs_f64() * 1000.0,
                led.iter().min().copied().unwrap_or_default().as_secs_f64() * 1000.0,
                led.iter().max().copied().unwrap_or_default().as_secs_f64() * 1000.0,
                median(applied).as_secs_f64() * 1000.0,
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
