//! Emulator throughput: chat-button calls per second with the rate limit lifted
//! (`--rate-limit 0`), from a tokio + reqwest client with many calls in flight.
//!
//! `cargo bench --bench emulator [-- --requests N --concurrency C]`. Prints the figure and exits
//! 1 when it is under the 5,000 calls a second the emulator promises. Loopback only, bounded in
//! count and time.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use feedbuttons::emulator::{
    BUILTIN_APP_ID, BUILTIN_APP_SECRET, Emulator, EmulatorConfig, RunningEmulator,
};
use serde_json::{Value, json};

const TARGET_PER_SECOND: f64 = 5_000.0;
const TIME_LIMIT: Duration = Duration::from_secs(120);

struct Options {
    requests: usize,
    concurrency: usize,
}

fn options() -> Options {
    let mut o = Options {
        requests: 40_000,
        concurrency: 64,
    };
    let args: Vec<String> = std::env::args().collect();
    for pair in args.windows(2) {
        // `cargo bench` adds `--bench`; anything not ours is ignored.
        match (pair[0].as_str(), pair[1].parse()) {
            ("--requests", Ok(n)) => o.requests = n,
            ("--concurrency", Ok(n)) => o.concurrency = n,
            _ => {}
        }
    }
    o.concurrency = o.concurrency.max(1);
    o
}

/// The i-th request body: 20 chats, one call in four for five users, the rest whole-chat.
fn body(i: usize) -> Value {
    let chat = format!("oc_bench_{}", i % 20);
    let buttons = json!({"buttons": [
        {"action_type": "url_page", "text": {"text": format!("Runbook {}", i % 7)},
         "button_type": "primary", "multi_url": {"url": "https://example.com/runbook"}},
        {"action_type": "webhook", "text": {"text": "Ack"}, "action_map": {"n": i.to_string()}}
    ]});
    if i.is_multiple_of(4) {
        let users: Vec<String> = (0..5)
            .map(|u| format!("ou_user_{}", (i + u) % 50))
            .collect();
        json!({"chat_id": chat, "user_ids": users, "buttons": buttons})
    } else {
        json!({"chat_id": chat, "buttons": buttons})
    }
}

async fn token(http: &reqwest::Client, emu: &RunningEmulator) -> Result<String, String> {
    let v: Value = http
        .post(emu.url("/open-apis/auth/v3/tenant_access_token/internal"))
        .json(&json!({"app_id": BUILTIN_APP_ID, "app_secret": BUILTIN_APP_SECRET}))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    v["tenant_access_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no token in {v}"))
}

struct Run {
    elapsed: Duration,
    latencies: Vec<Duration>,
    failures: usize,
}

/// Sends `requests` calls, `concurrency` at a time; each worker takes the next index.
async fn run(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    requests: usize,
    concurrency: usize,
) -> Run {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (http, url, next) = (http.clone(), url.to_owned(), next.clone());
            let auth = format!("Bearer {token}");
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut failures = 0;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= requests || started.elapsed() > TIME_LIMIT {
                        break;
                    }
                    let sent = Instant::now();
                    let ok = match http
                        .put(&url)
                        .header("Authorization", &auth)
                        .header("Content-Type", "application/json; charset=utf-8")
                        .body(body(i).to_string())
                        .send()
                        .await
                    {
                        Ok(resp) => {
                            let status = resp.status();
                            let text = resp.text().await.unwrap_or_default();
                            status.is_success() && text.starts_with("{\"code\":0")
                        }
                        Err(_) => false,
                    };
                    latencies.push(sent.elapsed());
                    failures += usize::from(!ok);
                }
                (latencies, failures)
            })
        })
        .collect();
    let mut all = Run {
        elapsed: Duration::ZERO,
        latencies: Vec::with_capacity(requests),
        failures: 0,
    };
    for w in workers {
        if let Ok((latencies, failures)) = w.await {
            all.latencies.extend(latencies);
            all.failures += failures;
        }
    }
    all.elapsed = started.elapsed();
    all.latencies.sort();
    all
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> ExitCode {
    let o = options();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let config = EmulatorConfig {
            rate_limit: 0,
            ..EmulatorConfig::default()
        };
        let emu = match Emulator::start(config).await {
            Ok(emu) => emu,
            Err(e) => {
                eprintln!("cannot start the emulator: {e}");
                return ExitCode::FAILURE;
            }
        };
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(o.concurrency)
            .build()
            .unwrap_or_default();
        let token = match token(&http, &emu).await {
            Ok(t) => t,
            Err(e) => {
                eprintln!("cannot get a token: {e}");
                return ExitCode::FAILURE;
            }
        };
        let url = emu.url("/open-apis/im/v2/chat_button");
        // Warm up: open the connections, fill the chats.
        run(&http, &url, &token, 2_000.min(o.requests), o.concurrency).await;
        let r = run(&http, &url, &token, o.requests, o.concurrency).await;
        emu.shutdown().await;

        let done = r.latencies.len();
        let per_second = done as f64 / r.elapsed.as_secs_f64();
        println!(
            "emulator: {done} chat-button calls in {:.2} s with {} in flight: {per_second:.0} calls/s \
             (p50 {:.2} ms, p99 {:.2} ms, {} failed)",
            r.elapsed.as_secs_f64(),
            o.concurrency,
            percentile(&r.latencies, 0.50).as_secs_f64() * 1e3,
            percentile(&r.latencies, 0.99).as_secs_f64() * 1e3,
            r.failures,
        );
        if r.failures > 0 || per_second < TARGET_PER_SECOND {
            println!("below the target of {TARGET_PER_SECOND:.0} successful calls/s");
            ExitCode::FAILURE
        } else {
            println!("meets the target of {TARGET_PER_SECOND:.0} calls/s");
            ExitCode::SUCCESS
        }
    })
}
