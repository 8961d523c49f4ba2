//! Red-team findings for exact records: each test is one way a user with bad luck ends up with a
//! state that disagrees with Feishu (or another broken promise), asserting what they would
//! expect. They fail until the bug is fixed.

use std::path::Path;
use std::time::{Duration, Instant};

use feedbuttons::emulator::RunningEmulator;
use serde_json::json;

use crate::apply::{Admin, Background, apply, apply_cmd, feedbuttons, run, with_fixtures};
use crate::util::Dir;

const CALLS: &str = "/_emulator/requests?path=/open-apis/im/v2/chat_button";

/// One chat `oc_r` with one user `ou_r1` whose buttons are one webhook button `text`.
fn one_user(text: &str) -> String {
    format!(
        "version: 1\nchats:\n  - chat_id: oc_r\n    assign:\n      - users: [ou_r1]\n        buttons: [{{text: {text}, action: webhook}}]\n"
    )
}

fn write(dir: &Path, yaml: &str) {
    std::fs::write(dir.join("buttons.yaml"), yaml).expect("write the config");
}

/// The texts of the buttons `user` has of their own in `chat` (shown, or kept while out of
/// the chat); `None` when they have no list of their own.
async fn own_texts(admin: &Admin, chat: &str, user: &str) -> Option<Vec<String>> {
    let v = admin
        .get(&format!("/_emulator/chats/{chat}/users/{user}"))
        .await;
    let list = if v["source"] == "user" {
        v["buttons"].clone()
    } else if !v["kept"].is_null() {
        v["kept"].clone()
    } else {
        return None;
    };
    Some(
        list.as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| b["text"]["text"].as_str().map(str::to_owned))
            .collect(),
    )
}

/// How many chat-button requests the emulator has logged.
async fn logged_calls(admin: &Admin) -> usize {
    admin.get(CALLS).await["requests"]
        .as_array()
        .map_or(0, Vec::len)
}

async fn wait_for_logged(admin: &Admin, n: usize) {
    let started = Instant::now();
    while logged_calls(admin).await < n {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no {n} calls logged"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn plan_text(emu: &RunningEmulator, dir: &Path) -> String {
    run(feedbuttons(emu, dir, &["plan", "."])).await.stdout
}

// ---------------------------------------------------------------- 1. a lost answer, then a refusal

/// The first attempt of a call applies but its answer is lost; the retry is refused (here the
/// bot was taken out of the chat in between; a gateway's 4xx or an echoed-credentials refusal
/// do the same). The first attempt's effect is not undone by the refusal, so the target must
/// stay uncertain. Instead it goes back to its old record: Feishu shows "New", the state says
/// "Old", and once the config is reverted `plan` says "No changes".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_refused_after_a_lost_answer_leaves_the_target_uncertain() {
    let emu = with_fixtures("chats:\n  - chat_id: oc_r\n    members: [ou_r1]\n").await;
    let admin = Admin::of(&emu);
    let dir = Dir::new();
    write(dir.path(), &one_user("Old"));
    apply(&emu, dir.path(), &[]).await.assert_code(0);

    write(dir.path(), &one_user("New"));
    admin
        .faults(json!({"drops_next": 1, "drop_after_processing": true}))
        .await;
    let before = logged_calls(&admin).await;
    let run_ = Background::spawn(apply_cmd(&emu, dir.path(), &[]));
    // The first attempt applied and lost its answer; the bot leaves before the retry.
    wait_for_logged(&admin, before + 1).await;
    admin
        .send(
            reqwest::Method::PUT,
            "/_emulator/chats/oc_r/bot",
            json!({"member": false}),
        )
        .await;
    let out = run_.wait().await;
    assert_ne!(out.code, Some(0), "{out:?}");
    assert_eq!(
        own_texts(&admin, "oc_r", "ou_r1").await,
        Some(vec!["New".to_owned()]),
        "the first attempt applied"
    );

    // The bot is back and the config reverted: Feishu shows "New", so a plan must send "Old".
    admin
        .send(
            reqwest::Method::PUT,
            "/_emulator/chats/oc_r/bot",
            json!({"member": true}),
        )
        .await;
    write(dir.path(), &one_user("Old"));
    let plan = plan_text(&emu, dir.path()).await;
    assert!(
        !plan.contains("No changes"),
        "Feishu shows \"New\" but the plan says:\n{plan}\nstate:\n{}",
        run(feedbuttons(&emu, dir.path(), &["state", "list"]))
            .await
            .stdout
    );
}

// ---------------------------------------------------------------- 2. a hand-edited serial at its limit

/// A state whose `serial` was hand-edited to the largest number JSON carries loads (plan and
/// `state list` accept it), but the next record computes `serial + 1`: a debug build panics
/// before the first call, a release build wraps to 0, writes journal lines numbered 0, 1,
/// 2..., and a load before the end-of-run compaction skips every one of them as "already in
/// the snapshot" (a run killed mid-way loses its uncertain marks). Either refuse such a state
/// at load with a clear message, or record the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_at_the_largest_serial_is_refused_or_recorded_never_a_crash() {
    let emu = with_fixtures("chats:\n  - chat_id: oc_r\n    members: [ou_r1]\n").await;
    let admin = Admin::of(&emu);
    let dir = Dir::new();
    write(dir.path(), &one_user("Old"));
    apply(&emu, dir.path(), &[]).await.assert_code(0);
    let snapshot = dir.path().join(".feedbuttons/state.json");
    let text = std::fs::read_to_string(&snapshot).expect("read the snapshot");
    let mut doc: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    doc["serial"] = json!(u64::MAX);
    std::fs::write(&snapshot, doc.to_string()).expect("write the snapshot");

    write(dir.path(), &one_user("New"));
    let before = logged_calls(&admin).await;
    let out = apply(&emu, dir.path(), &[]).await;
    match out.code {
        // Refused before anything was sent.
        Some(1) => assert_eq!(logged_calls(&admin).await, before, "{out:?}"),
        Some(0) => {
            assert_eq!(
                own_texts(&admin, "oc_r", "ou_r1").await,
                Some(vec!["New".to_owned()])
            );
            let listing = run(feedbuttons(&emu, dir.path(), &["state", "list"]))
                .await
                .stdout;
            assert!(listing.contains("\"New\""), "{listing}");
        }
        _ => panic!("apply crashed on a state at the largest serial: {out:?}"),
    }
}

// ---------------------------------------------------------------- 3. credentials quoted in a refused user's reason

/// A gateway (or the API) that quotes the request's `Authorization` header back: in an error
/// message it is cut out (`***`), but the same quote in a refused user's
/// `failed_user_reasons[].error_message` is kept verbatim as the target's waiting reason: it is
/// printed in the summary, written into `state.json`, and shown by `state list` and `plan`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_quoted_in_a_refused_users_reason_is_never_printed_or_stored() {
    let emu = crate::apply::fast().await;
    let admin = Admin::of(&emu);
    let token = admin
        .token((
            feedbuttons::emulator::BUILTIN_APP_ID,
            feedbuttons::emulator::BUILTIN_APP_SECRET,
        ))
        .await;
    admin
        .faults(json!({"echo_credentials_to_users_next": 1}))
        .await;
    let dir = Dir::new();
    write(dir.path(), &one_user("Old"));
    let applied = apply(&emu, dir.path(), &[]).await;
    assert_eq!(applied.code, Some(4), "{applied:?}");
    assert!(
        applied.stderr.contains("echoed by the emulator"),
        "{applied:?}"
    );
    let listed = run(feedbuttons(&emu, dir.path(), &["state", "list"])).await;
    let planned = run(feedbuttons(&emu, dir.path(), &["plan", "."])).await;
    let mut stored = String::new();
    for f in ["state.json", "state.journal"] {
        stored +=
            &std::fs::read_to_string(dir.path().join(".feedbuttons").join(f)).unwrap_or_default();
    }
    assert!(
        listed.stdout.contains("echoed by the emulator"),
        "{listed:?}"
    );
    for (what, text) in [
        (
            "apply's output",
            format!("{}{}", applied.stdout, applied.stderr),
        ),
        ("state list", listed.stdout),
        ("plan", planned.stdout),
        ("the state files", stored),
    ] {
        assert!(!text.contains(&token), "the token is in {what}:\n{text}");
    }
}

// ---------------------------------------------------------------- 4. a lost answer, then the user leaves

/// The same lost answer as in 1., but the retry is accepted with the user refused (they left
/// the chat between the two attempts). The first attempt applied "New", which they keep while
/// out of the chat; the record says "Old", waiting, and not unsure. Reverted to "Old", the
/// waiting record is settled without a call, and `plan` says "No changes" while Feishu holds
/// "New" for them (they see it again when they rejoin).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_refused_after_a_lost_answer_is_not_settled_as_the_old_list() {
    let emu = with_fixtures("chats:\n  - chat_id: oc_r\n    members: [ou_r1, ou_r2]\n").await;
    let admin = Admin::of(&emu);
    let dir = Dir::new();
    write(dir.path(), &one_user("Old"));
    apply(&emu, dir.path(), &[]).await.assert_code(0);

    write(dir.path(), &one_user("New"));
    admin
        .faults(json!({"drops_next": 1, "drop_after_processing": true}))
        .await;
    let before = logged_calls(&admin).await;
    let run_ = Background::spawn(apply_cmd(&emu, dir.path(), &[]));
    wait_for_logged(&admin, before + 1).await;
    admin
        .send(
            reqwest::Method::DELETE,
            "/_emulator/chats/oc_r/members/ou_r1",
            json!({}),
        )
        .await;
    let out = run_.wait().await;
    assert_eq!(out.code, Some(4), "{out:?}");
    assert_eq!(
        own_texts(&admin, "oc_r", "ou_r1").await,
        Some(vec!["New".to_owned()]),
        "the first attempt applied; the user keeps it while out of the chat"
    );

    write(dir.path(), &one_user("Old"));
    let plan = plan_text(&emu, dir.path()).await;
    assert!(
        !plan.contains("No changes"),
        "Feishu holds \"New\" for ou_r1 but the plan says:\n{plan}\nstate:\n{}",
        run(feedbuttons(&emu, dir.path(), &["state", "list"]))
            .await
            .stdout
    );
}
