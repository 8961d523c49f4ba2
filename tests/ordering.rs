//! Order within a chat, as apply sends it: the whole-chat call first, clears before lists, and a
//! whole-chat change recorded only once the chat's users have their own lists back.

use std::path::PathBuf;

use feedbuttons::apply::{self, ApplyReport};
use feedbuttons::emulator::{
    BUILTIN_APP_ID, BUILTIN_APP_SECRET, Emulator, EmulatorConfig, RunningEmulator,
};
use feedbuttons::feishu::client::{Client, ClientConfig, Secret};
use feedbuttons::plan::{self, PlanOptions, json::PlanDoc};
use feedbuttons::state::StateWriter;

use crate::util::Dir;

const CHAT: &str = "oc_room";

fn config(body: &str) -> feedbuttons::desired::DesiredState {
    let loaded = feedbuttons::config::load_texts(vec![(
        PathBuf::from("a.yaml"),
        format!("version: 1\n{body}"),
    )]);
    loaded
        .desired
        .unwrap_or_else(|| panic!("valid config: {:?}", loaded.report.diagnostics))
}

/// Plans `desired` against the state under `lock` and applies it, as `apply --yes` does.
async fn apply_config(
    emulator: &RunningEmulator,
    lock: &mut dyn StateWriter,
    desired: &feedbuttons::desired::DesiredState,
) -> (PlanDoc, ApplyReport) {
    let p = plan::plan(
        &desired.targets,
        &desired.chat_names,
        &lock.state().targets,
        &PlanOptions::default(),
    );
    let doc = PlanDoc::new(&p);
    let client = Client::new(ClientConfig {
        rate_limit: 0,
        ..ClientConfig::new(
            emulator.base_url(),
            BUILTIN_APP_ID,
            Secret::new(BUILTIN_APP_SECRET.to_owned()),
        )
    })
    .expect("client");
    let (_tx, stop) = tokio::sync::watch::channel(false);
    let report = apply::apply(&doc, &client, lock, 8, &mut apply::Quiet, stop).await;
    (doc, report)
}

async fn members(emulator: &RunningEmulator, members: serde_json::Value) {
    let answer = reqwest::Client::new()
        .put(emulator.url(&format!("/_emulator/chats/{CHAT}/members")))
        .json(&serde_json::json!({ "members": members }))
        .send()
        .await
        .expect("set members");
    assert!(answer.status().is_success());
}

/// The texts of the buttons `id` sees in the chat.
async fn sees(emulator: &RunningEmulator, id: &str) -> Vec<String> {
    let v: serde_json::Value =
        reqwest::get(emulator.url(&format!("/_emulator/chats/{CHAT}/users/{id}")))
            .await
            .expect("GET")
            .json()
            .await
            .expect("json");
    v["buttons"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b["text"]["text"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_a_chat_to_another_id_type_clears_the_old_ids_before_setting_the_new() {
    let emulator = Emulator::start(EmulatorConfig::default())
        .await
        .expect("emulator");
    // The same two people, known by an open id and a union id.
    members(
        &emulator,
        serde_json::json!([
            {"open_id": "ou_alice", "union_id": "on_alice"},
            {"open_id": "ou_bob", "union_id": "on_bob"}
        ]),
    )
    .await;
    let dir = Dir::new();
    let store = feedbuttons::state::open(&dir.path().join("state.json")).expect("open");
    let mut lock = store.writer("test").expect("lock");
    let buttons = "buttons:\n  ack: {text: Ack, action: webhook}\n";
    let union = config(&format!(
        "{buttons}chats:\n  - chat_id: {CHAT}\n    user_id_type: union_id\n    assign:\n      - users: [on_alice, on_bob]\n        buttons: [ack]\n"
    ));
    let (_, report) = apply_config(&emulator, lock.as_mut(), &union).await;
    assert!(report.complete(), "{report:?}");
    let open = config(&format!(
        "{buttons}chats:\n  - chat_id: {CHAT}\n    assign:\n      - users: [ou_alice, ou_bob]\n        buttons: [ack]\n"
    ));
    let (doc, report) = apply_config(&emulator, lock.as_mut(), &open).await;
    assert!(report.complete(), "{report:?}");
    // The clearing call (the old union ids) is planned, and sent, before the new list.
    assert_eq!(doc.requests.len(), 2);
    assert!(
        doc.requests[0].body.buttons.buttons.is_empty(),
        "{:?}",
        doc.requests[0]
    );
    assert_eq!(sees(&emulator, "ou_alice").await, ["Ack"]);
    assert_eq!(sees(&emulator, "ou_bob").await, ["Ack"]);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_chat_change_is_recorded_at_once_and_a_refused_user_alone_waits() {
    let emulator = Emulator::start(EmulatorConfig::default())
        .await
        .expect("emulator");
    members(&emulator, serde_json::json!(["ou_a"])).await;
    let dir = Dir::new();
    let store = feedbuttons::state::open(&dir.path().join("state.json")).expect("open");
    let mut lock = store.writer("test").expect("lock");
    let cfg = |status: &str| {
        config(&format!(
            "chats:\n  - chat_id: {CHAT}\n    assign:\n      - everyone: true\n        buttons: [{{text: {status}, action: webhook}}]\n      - users: [ou_a, ou_b]\n        buttons: [{{text: Mine, action: webhook}}]\n"
        ))
    };
    // ou_b is not in the chat: the API refuses ou_b alone. The whole-chat list is recorded as
    // soon as it is accepted, ou_a's list too; ou_b waits.
    let (_, report) = apply_config(&emulator, lock.as_mut(), &cfg("Status")).await;
    assert!(
        report.complete_but_waiting() && !report.complete(),
        "{report:?}"
    );
    assert_eq!(apply::exit_code(&report), 4);
    assert!(
        apply::summary(&report, 2).contains("Waiting (1 targets"),
        "{}",
        apply::summary(&report, 2)
    );
    let everyone = feedbuttons::target::Target::everyone(CHAT);
    let recorded = lock.state().targets.get(&everyone).expect("recorded");
    assert!(recorded.is_settled());
    let ou_b = feedbuttons::target::Target::user(
        CHAT,
        feedbuttons::feishu::wire::UserIdType::OpenId,
        "ou_b",
    );
    assert_eq!(
        lock.state().targets[&ou_b]
            .pending()
            .map(|p| p.status.label()),
        Some("waiting")
    );
    // Once ou_b joins, the next apply sends one call: ou_b's, not the whole chat again.
    members(&emulator, serde_json::json!(["ou_a", "ou_b"])).await;
    let (doc, report) = apply_config(&emulator, lock.as_mut(), &cfg("Status")).await;
    assert!(report.complete(), "{report:?}");
    assert_eq!(doc.requests.len(), 1, "{doc:?}");
    assert_eq!(
        doc.requests[0].body.user_ids.as_deref(),
        Some(&["ou_b".into()][..])
    );
    assert_eq!(sees(&emulator, "ou_a").await, ["Mine"]);
    assert_eq!(sees(&emulator, "ou_b").await, ["Mine"]);
    // Reverting the whole-chat list is a change the plan sees, and sends.
    let (doc, report) = apply_config(&emulator, lock.as_mut(), &cfg("Other")).await;
    assert!(report.complete(), "{report:?}");
    assert!(doc.requests[0].body.user_ids.is_none());
    let (doc, _) = apply_config(&emulator, lock.as_mut(), &cfg("Status")).await;
    assert!(doc.requests[0].body.user_ids.is_none(), "{doc:?}");
    emulator.shutdown().await;
}
