use super::*;
use crate::feishu::wire::{ActionType, Button, MultiUrl, Text};
use crate::state::{OwedReason, Pending, PendingStatus};

fn button(text: &str) -> Button {
    Button {
        multi_url: Some(MultiUrl {
            url: Some(format!("https://example.com/{text}")),
            ..MultiUrl::default()
        }),
        action_type: ActionType::UrlPage,
        text: Text { text: text.into() },
        button_type: None,
        action_map: None,
    }
}

fn sample() -> AppliedState {
    let mut s = AppliedState {
        lineage: "0123abcd".into(),
        serial: 7,
        binding: Some(Binding::new("https://open.feishu.cn", "cli_x")),
        targets: BTreeMap::new(),
    };
    let a = Arc::new(vec![button("Runbook"), button("Ack")]);
    // An equal list in another allocation (as two recorded batches leave it) is stored once.
    let a2 = Arc::new(vec![button("Runbook"), button("Ack")]);
    let b = Arc::new(vec![button("Dash \"quoted\" \\ \n ü")]);
    let applied = |l: &Arc<ButtonList>| TargetRecord::applied(l.clone());
    s.targets.insert(Target::everyone("oc_2"), applied(&a));
    s.targets.insert(
        Target::user("oc_2", UserIdType::OpenId, "ou_b"),
        applied(&a),
    );
    s.targets.insert(
        Target::user("oc_2", UserIdType::OpenId, "ou_a"),
        applied(&b),
    );
    s.targets.insert(
        Target::user("oc_2", UserIdType::UserId, "x\"y"),
        applied(&Arc::new(vec![])),
    );
    s.targets.insert(
        Target::user("oc_1", UserIdType::UnionId, "on_a"),
        applied(&a2),
    );
    s.targets.insert(
        Target::user("oc_1", UserIdType::OpenId, "ou_a"),
        applied(&b),
    );
    s
}

/// [`sample`] with a target in each condition: a follower, uncertain, owed and waiting
/// (one that was never applied), whose lists are stored in the same table.
fn with_conditions() -> AppliedState {
    let mut s = sample();
    let only_in_pending = Arc::new(vec![button("Only pending")]);
    let c = Arc::new(vec![button("Runbook"), button("Ack")]);
    let put = |s: &mut AppliedState, id: &str, r: Option<TargetRecord>| {
        s.targets.insert(
            Target::user("oc_3", UserIdType::OpenId, id),
            r.expect("a record that says something"),
        );
    };
    put(
        &mut s,
        "ou_follower",
        TargetRecord::new(Some(c.clone()), true, None),
    );
    put(
        &mut s,
        "ou_uncertain",
        TargetRecord::new(
            Some(c.clone()),
            false,
            Some(Pending {
                status: PendingStatus::Uncertain {
                    sent: only_in_pending.clone(),
                },
                since: 1_764_000_000,
            }),
        ),
    );
    put(
        &mut s,
        "ou_owed",
        TargetRecord::new(
            Some(c.clone()),
            false,
            Some(Pending {
                status: PendingStatus::Owed {
                    reason: OwedReason::WholeChat,
                },
                since: 1_764_000_001,
            }),
        ),
    );
    put(
        &mut s,
        "ou_waiting",
        TargetRecord::new(
            None,
            false,
            Some(Pending {
                status: PendingStatus::Waiting {
                    goal: c,
                    goal_follows: false,
                    unsure: true,
                    reason: "The user is not in the chat".into(),
                    tries: 3,
                    last_try: 1_764_000_100,
                },
                since: 1_764_000_002,
            }),
        ),
    );
    s
}

#[test]
fn every_condition_roundtrips_and_shares_the_list_table() {
    let s = with_conditions();
    let bytes = encode(&s);
    assert_eq!(decode(&bytes, Path::new("s.json")).expect("decode"), s);
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    // Runbook+Ack, Dash, the empty list, and the list only a pending call carried.
    assert_eq!(v["button_lists"].as_array().map(Vec::len), Some(4));
    let chat = &v["chats"][2]["open_id"];
    assert_eq!(chat["ou_follower"]["follows"], true);
    assert_eq!(chat["ou_uncertain"]["pending"]["status"], "uncertain");
    assert_eq!(chat["ou_owed"]["pending"]["reason"], "whole_chat");
    assert_eq!(chat["ou_waiting"]["shown"], serde_json::Value::Null);
    assert_eq!(chat["ou_waiting"]["pending"]["tries"], 3);
}

#[test]
fn a_format_1_snapshot_loads_with_every_target_applied() {
    let v1 = br#"{"format_version":1,"lineage":"l","serial":3,"binding":null,"button_lists":[[]],
        "chats":[{"chat_id":"oc_1","everyone":0,"open_id":{"ou_a":0}}]}"#;
    let s = decode(v1, Path::new("s.json")).expect("a v1 snapshot");
    assert_eq!(s.targets.len(), 2);
    assert!(s.targets.values().all(|r| r.is_settled() && !r.follows()));
    // Saved again, it is format 2.
    assert!(encode(&s).starts_with(b"{\"format_version\":2,"));
}

#[test]
fn a_record_that_says_nothing_is_refused() {
    let empty = br#"{"format_version":2,"lineage":"l","serial":3,"button_lists":[],
        "chats":[{"chat_id":"oc_1","open_id":{"ou_a":{"shown":null}}}]}"#;
    let msg = decode(empty, Path::new("s.json"))
        .expect_err("nothing to keep")
        .to_string();
    assert!(msg.contains("ou_a") && msg.contains("neither"), "{msg}");
}

#[test]
fn roundtrip_and_determinism() {
    let s = sample();
    let bytes = encode(&s);
    let text = String::from_utf8(bytes.clone()).expect("utf-8");
    assert_eq!(decode(&bytes, Path::new("s.json")).expect("decode"), s);
    assert_eq!(encode(&s.clone()), bytes);
    // Valid JSON as a whole, one list and one chat per line, lists stored once.
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(v["button_lists"].as_array().map(Vec::len), Some(3));
    assert_eq!(text.lines().count(), 1 + 1 + 3 + 1 + 1 + 2 + 1);
}

#[test]
fn empty_state_roundtrips() {
    let s = AppliedState::new();
    let bytes = encode(&s);
    assert_eq!(decode(&bytes, Path::new("s.json")).expect("decode"), s);
}

#[test]
fn duplicates_and_bad_indexes_are_errors() {
    let dup = br#"{"format_version":1,"lineage":"l","serial":1,"binding":null,"button_lists":[[]],
        "chats":[{"chat_id":"oc_1","open_id":{"ou_a":0,"ou_a":0}}]}"#;
    let msg = decode(dup, Path::new("s.json"))
        .expect_err("dup")
        .to_string();
    assert!(msg.contains("listed twice"), "{msg}");
    let bad = br#"{"format_version":1,"lineage":"l","serial":1,"button_lists":[],
        "chats":[{"chat_id":"oc_1","everyone":3}]}"#;
    let msg = decode(bad, Path::new("s.json"))
        .expect_err("index")
        .to_string();
    assert!(msg.contains("button list 3"), "{msg}");
    let newer = br#"{"format_version":3,"something":"else"}"#;
    let msg = decode(newer, Path::new("s.json"))
        .expect_err("v2")
        .to_string();
    assert!(msg.contains("format_version 3"), "{msg}");
}
