//! What the daemon tells its monitoring: `/metrics` (its own series, the API client's, the
//! build and the process) and why each reconcile ran, in its JSON summary line and its
//! metrics. The daemon runs as a real process against the in-process emulator.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use feedbuttons::emulator::{Emulator, EmulatorConfig, Fixtures, RunningEmulator};
use serde_json::Value;

use crate::util::Dir;
use crate::watch::{Daemon, chat_text, config, emulator, write};

/// `/metrics` made comparable: each family's samples sorted (their order is a hash map's),
/// values that depend on time or the build replaced by `<v>`, and the `process_*` families
/// left out (they exist only on Linux; `the_process_is_measured` checks them).
fn comparable(metrics: &str) -> String {
    let varies = [
        "feedbuttons_reconcile_duration_seconds_bucket",
        "feedbuttons_reconcile_duration_seconds_sum",
        "feedbuttons_last_success_timestamp_seconds",
    ];
    let mut out = Vec::new();
    let mut samples: Vec<String> = Vec::new();
    let mut skipping = false;
    let flush = |samples: &mut Vec<String>, out: &mut Vec<String>| {
        samples.sort();
        out.append(samples);
    };
    for line in metrics.lines() {
        if line.starts_with("# HELP ") {
            flush(&mut samples, &mut out);
            skipping = line.starts_with("# HELP process_");
        }
        if skipping {
            continue;
        }
        if line.starts_with('#') {
            out.push(line.to_owned());
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or((line, ""));
        let series = match series.split_once("revision=\"") {
            Some((head, rest)) => {
                let tail = rest.split_once('"').map_or("", |(_, t)| t);
                format!("{head}revision=\"<rev>\"{tail}")
            }
            None => series.to_owned(),
        };
        let value = if varies.iter().any(|v| series.starts_with(v)) {
            "<v>"
        } else {
            value
        };
        samples.push(format!("{series} {value}"));
    }
    flush(&mut samples, &mut out);
    out.join("\n") + "\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_hold_the_reconciles_the_api_clients_requests_and_the_build() {
    let emu = emulator(Duration::ZERO).await;
    let dir = Dir::new().file(
        "buttons.yaml",
        &config(&[("oc_m1", "One"), ("oc_m2", "Two")]),
    );
    let d = Daemon::start(&emu, dir.path(), &[]);
    d.eventually("ready", || async {
        (d.readyz().await.0 == 200).then_some(())
    })
    .await;
    let answer = reqwest::get(d.url("/metrics")).await.expect("GET /metrics");
    let content_type = answer
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let text = answer.text().await.expect("metrics text");
    // Two whole-chat calls and one token, each a request that succeeded.
    for line in [
        "feedbuttons_api_requests_total{endpoint=\"chat_button\",outcome=\"success\"} 2",
        "feedbuttons_api_requests_total{endpoint=\"token\",outcome=\"success\"} 1",
        "feedbuttons_api_retries_total{endpoint=\"chat_button\"} 0",
        "feedbuttons_reconcile_reasons_total{reason=\"start\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line}:\n{text}");
    }
    insta::assert_snapshot!("metrics_after_a_first_apply", comparable(&text));
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_is_measured() {
    let emu = emulator(Duration::ZERO).await;
    let dir = Dir::new().file("buttons.yaml", &config(&[("oc_p", "One")]));
    let d = Daemon::start(&emu, dir.path(), &[]);
    let text = d.metrics().await;
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    };
    assert!(value("process_resident_memory_bytes") > 1e6);
    assert!(value("process_virtual_memory_bytes") > 1e6);
    assert!(value("process_open_fds") >= 3.0);
    assert!(value("process_max_fds") >= value("process_open_fds"));
    assert!(value("process_cpu_seconds_total") >= 0.0);
    let started = value("process_start_time_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    assert!(
        (now - started).abs() < 120.0,
        "started {started}, now {now}"
    );
}

/// The summary lines of a JSON log, in order.
fn summaries(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["outcome"].is_string() && v["reason"].is_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reconcile_says_why_it_ran_in_its_json_line_and_its_metrics() {
    // ou_out is not in oc_w: the first reconcile leaves it waiting, and retries come for it.
    let emu: RunningEmulator = Emulator::start(EmulatorConfig {
        fixtures: Some(
            Fixtures::parse(
                "chats:\n  - chat_id: oc_w\n    members: [ou_in]\n  - chat_id: oc_r\n    members: everyone\n",
            )
            .expect("fixtures"),
        ),
        ..EmulatorConfig::default()
    })
    .await
    .expect("start the emulator");
    let revision = |text: &str| {
        format!(
            "{}  - chat_id: oc_w\n    assign:\n      - users: [ou_in, ou_out]\n        buttons: [{{text: Mine, action: webhook}}]\n",
            config(&[("oc_r", text)])
        )
    };
    let root = Dir::new()
        .file("rev-a/buttons.yaml", &revision("A"))
        .file("rev-b/buttons.yaml", &revision("B"));
    let link = root.path().join("current");
    std::os::unix::fs::symlink("rev-a", &link).expect("symlink");
    let state = root.path().join("state/state.json");
    let d = Daemon::start(
        &emu,
        &link,
        &[
            "--state",
            state.to_str().expect("UTF-8 path"),
            "--log-format",
            "json",
            "--retry-waiting",
            "1s",
            "--interval",
            "2s",
        ],
    );
    let reasons_seen = || -> BTreeSet<String> {
        summaries(&d.log())
            .iter()
            .filter_map(|v| v["reason"].as_str().map(str::to_owned))
            .collect()
    };
    // The start, then the retry of the waiting user (due 1 s later, sooner than the interval).
    d.eventually("start and retry", || async {
        let seen = reasons_seen();
        (seen.contains("start") && seen.contains("retry")).then_some(())
    })
    .await;
    // An edit in the current revision.
    write(&root.path().join("rev-a/buttons.yaml"), &revision("A2"));
    d.eventually("the edit", || async {
        (chat_text(&emu, "oc_r").await.as_deref() == Some("A2")).then_some(())
    })
    .await;
    // git-sync's swap: a new link renamed over the old one.
    let tmp = root.path().join("current.tmp");
    std::os::unix::fs::symlink("rev-b", &tmp).expect("symlink");
    std::fs::rename(&tmp, &link).expect("swap the link");
    d.eventually("revision B", || async {
        (chat_text(&emu, "oc_r").await.as_deref() == Some("B")).then_some(())
    })
    .await;
    // The waiting user's backoff grows past --interval: then the interval comes first.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !reasons_seen().contains("interval") {
        assert!(
            Instant::now() < deadline,
            "no interval reconcile:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let seen = reasons_seen();
    for reason in ["start", "retry", "file_change", "link_swap", "interval"] {
        assert!(
            seen.contains(reason),
            "{reason} missing from {seen:?}:\n{}",
            d.log()
        );
    }
    let lines = summaries(&d.log());
    assert_eq!(lines[0]["reason"], "start", "{}", d.log());
    for v in &lines {
        let words = v["reason"].as_str().unwrap_or_default().replace('_', " ");
        let message = v["message"].as_str().unwrap_or_default();
        assert!(message.contains(&format!("({words})")), "{v}");
    }
    let metrics = d.metrics().await;
    for reason in ["start", "retry", "file_change", "link_swap", "interval"] {
        let series = format!("feedbuttons_reconcile_reasons_total{{reason=\"{reason}\"}}");
        let n = metrics
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str())?.trim().parse::<u64>().ok())
            .unwrap_or(0);
        assert!(n >= 1, "{series} is {n}:\n{metrics}");
    }
    // /status says why the last reconcile ran, in the same words.
    let status = crate::watch::get_json(&d.url("/status")).await;
    assert_eq!(status["format_version"], 1, "{status}");
    assert!(status["last_reconcile"]["reason"].is_string(), "{status}");
}
