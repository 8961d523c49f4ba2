//! A hard outage: when call after call gives up, apply stops sending instead of spending every
//! remaining call's retries, and what it did apply stays recorded.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use feedbuttons::emulator::{BUILTIN_APP_ID, BUILTIN_APP_SECRET, Emulator, EmulatorConfig};
use feedbuttons::feishu::client::{Client, ClientConfig, RetryPolicy, Secret};
use feedbuttons::feishu::wire::{ActionType, Button, Text, UserIdType};
use feedbuttons::plan::{self, PlanOptions, json::PlanDoc};
use feedbuttons::target::{ButtonList, Target};

use crate::util::Dir;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_stops_the_run_after_a_few_calls_give_up() {
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
    // 40 chats, one call each.
    let desired: BTreeMap<Target, Arc<ButtonList>> = (0..40)
        .map(|c| {
            (
                Target::user(format!("oc_{c:02}"), UserIdType::OpenId, "ou_a"),
                list.clone(),
            )
        })
        .collect();
    let applied: BTreeMap<Target, Arc<ButtonList>> = BTreeMap::new();
    let p = plan::plan(
        &desired,
        &BTreeMap::new(),
        &applied,
        &PlanOptions {
            chats: vec![],
            rate_limit: 0,
        },
    );
    let doc = PlanDoc::new(&p);
    assert_eq!(doc.requests.len(), 40);

    let client = Client::new(ClientConfig {
        rate_limit: 0,
        retry: RetryPolicy {
            max_attempts: 2,
            min_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(10),
        },
        timeout: Duration::from_secs(5),
        ..ClientConfig::new(
            emulator.base_url(),
            BUILTIN_APP_ID,
            Secret::new(BUILTIN_APP_SECRET.to_owned()),
        )
    })
    .expect("client");
    client.check_credentials().await.expect("credentials");
    let faults = reqwest::Client::new()
        .put(emulator.url("/_emulator/faults"))
        .json(&serde_json::json!({"server_error_rate": 1.0}))
        .send()
        .await
        .expect("switch faults on");
    assert!(faults.status().is_success());

    let dir = Dir::new();
    let store = feedbuttons::state::open(&dir.path().join("state.json")).expect("open");
    let mut lock = store.lock("test").expect("lock");
    let (_tx, stop) = tokio::sync::watch::channel(false);
    let report = feedbuttons::apply::apply(
        &doc,
        &client,
        lock.as_mut(),
        2,
        &mut feedbuttons::apply::Quiet,
        stop,
    )
    .await;
    let fatal = report.fatal.as_deref().unwrap_or_default();
    assert!(fatal.contains("the API kept failing"), "{report:?}");
    assert!(report.calls_not_sent >= 30, "it stopped early: {report:?}");
    assert_eq!(report.targets_applied, 0);
    assert_eq!(
        feedbuttons::apply::exit_code(&report),
        1,
        "nothing was applied"
    );
    assert!(lock.state().targets.is_empty());
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_expiring_again_and_again_mid_run_do_not_fail_calls() {
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
    let desired: BTreeMap<Target, Arc<ButtonList>> = (0..120)
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
    let client = Client::new(ClientConfig {
        rate_limit: 50,
        retry: RetryPolicy {
            max_attempts: 10,
            min_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
        },
        ..ClientConfig::new(
            emulator.base_url(),
            BUILTIN_APP_ID,
            Secret::new(BUILTIN_APP_SECRET.to_owned()),
        )
    })
    .expect("client");
    let http = reqwest::Client::new();
    http.put(emulator.url("/_emulator/faults"))
        .json(&serde_json::json!({"server_error_rate": 0.2, "seed": 7}))
        .send()
        .await
        .expect("faults on");
    // Expire every issued token every 300 ms while the run goes on.
    let expirer = {
        let (http, url) = (http.clone(), emulator.url("/_emulator/tokens/expire"));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let _ = http.post(&url).send().await;
            }
        })
    };
    let dir = Dir::new();
    let store = feedbuttons::state::open(&dir.path().join("state.json")).expect("open");
    let mut lock = store.lock("test").expect("lock");
    let (_tx, stop) = tokio::sync::watch::channel(false);
    let report = feedbuttons::apply::apply(
        &doc,
        &client,
        lock.as_mut(),
        8,
        &mut feedbuttons::apply::Quiet,
        stop,
    )
    .await;
    expirer.abort();
    assert!(report.complete(), "{report:?}");
    assert_eq!(report.targets_applied, 120);
    assert!(
        client.stats().tokens_refused >= 2,
        "tokens were refused and replaced: {:?}",
        client.stats()
    );
    emulator.shutdown().await;
}
