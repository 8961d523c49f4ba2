//! Apply under a failing API: a hard outage stops the run instead of spending every remaining
//! call's retries; tokens that expire again and again mid-run cost no calls.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use feedbuttons::apply::{self, ApplyReport};
use feedbuttons::emulator::{
    BUILTIN_APP_ID, BUILTIN_APP_SECRET, Emulator, EmulatorConfig, RunningEmulator,
};
use feedbuttons::feishu::client::{Client, ClientConfig, RetryPolicy, Secret};
use feedbuttons::feishu::wire::{ActionType, Button, Text, UserIdType};
use feedbuttons::plan::{self, PlanOptions, json::PlanDoc};
use feedbuttons::target::{ButtonList, Target};

use crate::util::Dir;

/// An emulator without a rate limit, and a plan of `chats` calls (one user in each chat).
async fn setup(chats: usize) -> (RunningEmulator, PlanDoc) {
    let emulator = Emulator::start(EmulatorConfig {
        rate_limit: 0,
        ..EmulatorConfig::default()
    })
    .await
    .expect("start the emulator");
    let list: Arc<ButtonList> = Arc::new(vec![Button {
        multi_url: None,
        action_type: ActionType::Webhook,
        text: Text {
            text: "Ack".to_owned(),
        },
        button_type: None,
        action_map: None,
    }]);
    let desired: BTreeMap<Target, Arc<ButtonList>> = (0..chats)
        .map(|c| {
            (
                Target::user(format!("oc_{c:03}"), UserIdType::OpenId, "ou_a"),
                list.clone(),
            )
        })
        .collect();
    let applied: BTreeMap<Target, Arc<ButtonList>> = BTreeMap::new();
    let doc = PlanDoc::new(&plan::plan(
        &desired,
        &BTreeMap::new(),
        &applied,
        &PlanOptions::default(),
    ));
    assert_eq!(doc.requests.len(), chats);
    (emulator, doc)
}

fn client(emulator: &RunningEmulator, rate_limit: u32, max_attempts: u32) -> Client {
    Client::new(ClientConfig {
        rate_limit,
        retry: RetryPolicy {
            max_attempts,
            min_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
        },
        timeout: Duration::from_secs(5),
        ..ClientConfig::new(
            emulator.base_url(),
            BUILTIN_APP_ID,
            Secret::new(BUILTIN_APP_SECRET.to_owned()),
        )
    })
    .expect("client")
}

async fn faults(emulator: &RunningEmulator, spec: serde_json::Value) {
    let answer = reqwest::Client::new()
        .put(emulator.url("/_emulator/faults"))
        .json(&spec)
        .send()
        .await
        .expect("switch faults on");
    assert!(answer.status().is_success());
}

/// Applies `doc` with a fresh state; returns the report and the number of targets recorded.
async fn run(doc: &PlanDoc, client: &Client, concurrency: usize) -> (ApplyReport, usize) {
    let dir = Dir::new();
    let store = feedbuttons::state::open(&dir.path().join("state.json")).expect("open");
    let mut lock = store.writer("test").expect("lock");
    let (_tx, stop) = tokio::sync::watch::channel(false);
    let report = apply::apply(
        doc,
        client,
        lock.as_mut(),
        concurrency,
        &mut apply::Quiet,
        stop,
    )
    .await;
    // Targets recorded as applied: the unanswered ones are only marked uncertain.
    let recorded = lock
        .state()
        .targets
        .values()
        .filter(|r| r.is_settled())
        .count();
    (report, recorded)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_stops_the_run_after_a_few_calls_give_up() {
    let (emulator, doc) = setup(40).await;
    let client = client(&emulator, 0, 2);
    client.check_credentials().await.expect("credentials");
    faults(&emulator, serde_json::json!({"server_error_rate": 1.0})).await;
    let (report, recorded) = run(&doc, &client, 2).await;
    let fatal = report.fatal.as_deref().unwrap_or_default();
    assert!(fatal.contains("the API kept failing"), "{report:?}");
    assert!(report.calls_not_sent >= 30, "it stopped early: {report:?}");
    assert_eq!(report.targets_applied, 0);
    assert_eq!(apply::exit_code(&report), 1, "nothing was applied");
    assert_eq!(recorded, 0);
    // Each call that went out and got only 5xx answers may have applied: its targets are
    // uncertain, so that the next plan sends them whatever the config says then.
    assert!(!report.uncertain.is_empty(), "{report:?}");
    assert!(report.failures.is_empty(), "{report:?}");
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_expiring_again_and_again_mid_run_do_not_fail_calls() {
    let (emulator, doc) = setup(120).await;
    let client = client(&emulator, 50, 10);
    faults(
        &emulator,
        serde_json::json!({"server_error_rate": 0.2, "seed": 7}),
    )
    .await;
    // Expire every issued token every 300 ms while the run goes on.
    let expirer = {
        let url = emulator.url("/_emulator/tokens/expire");
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            loop {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let _ = http.post(&url).send().await;
            }
        })
    };
    let (report, recorded) = run(&doc, &client, 8).await;
    expirer.abort();
    assert!(report.complete(), "{report:?}");
    assert_eq!((report.targets_applied, recorded), (120, 120));
    assert!(
        client.stats().tokens_refused >= 2,
        "tokens were refused and replaced: {:?}",
        client.stats()
    );
    emulator.shutdown().await;
}
