//! The applied-state store: what is recorded is what loads, across crashes, torn writes, a
//! second writer and the wrong app; and the `state` subcommand's list, show, rm and adopt.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use feedbuttons::feishu::wire::{ActionType, Button, ButtonType, MultiUrl, Text, UserIdType};
use feedbuttons::state::commands::{self, Adopted, Selector, ShowFormat};
use feedbuttons::state::{
    self, AppliedState, Binding, FileStore, Record, StateError, StateStore, StateWriter,
};
use feedbuttons::target::{ButtonList, Target};
use proptest::prelude::*;

use crate::util::Dir;

fn button(text: &str) -> Button {
    Button {
        multi_url: Some(MultiUrl {
            url: Some(format!("https://example.com/{text}")),
            ..MultiUrl::default()
        }),
        action_type: ActionType::UrlPage,
        text: Text {
            text: text.to_owned(),
        },
        button_type: Some(ButtonType::Primary),
        action_map: None,
    }
}

fn list(texts: &[&str]) -> ButtonList {
    texts.iter().map(|t| button(t)).collect()
}

fn user(chat: &str, id: &str) -> Target {
    Target::user(chat, UserIdType::OpenId, id)
}

fn set(target: Target, buttons: ButtonList) -> Record {
    Record::Set {
        target,
        buttons: Arc::new(buttons),
    }
}

fn feishu() -> Binding {
    Binding::new("https://open.feishu.cn", "cli_a1")
}

/// A file store at the default place under a fresh directory.
fn store(dir: &Dir) -> FileStore {
    FileStore::new(state::default_path(dir.path())).expect("a valid state path")
}

fn writer(store: &FileStore) -> Box<dyn StateWriter> {
    store.writer(&state::holder("test")).expect("take the lock")
}

fn snapshot_json(store: &FileStore) -> serde_json::Value {
    let bytes = std::fs::read(store.snapshot_path()).expect("read the snapshot");
    serde_json::from_slice(&bytes).expect("the snapshot is JSON")
}

/// The change with serial `serial` in the deterministic history the crash tests write: serial 1
/// binds, every later one sets a few users of one of three chats, and every fifth forgets one.
fn change(serial: u64) -> Vec<Record> {
    let chat = format!("oc_{}", serial % 3);
    let text = format!("r{serial}");
    let mut records: Vec<Record> = (0..4)
        .map(|u| {
            set(
                user(&chat, &format!("ou_{}", (serial + u) % 11)),
                list(&[text.as_str(), "Ack"]),
            )
        })
        .collect();
    if serial.is_multiple_of(5) {
        records.push(Record::Forget {
            target: user(&chat, &format!("ou_{}", (serial + 7) % 11)),
        });
    }
    records
}

/// Records the history's next change through `w`.
fn record_next(w: &mut dyn StateWriter) {
    let serial = w.state().serial + 1;
    if serial == 1 {
        w.bind(&feishu()).expect("bind");
    } else {
        w.record(&change(serial)).expect("record");
    }
}

/// The state the history leaves at `serial` (lineage aside).
fn history(serial: u64) -> AppliedState {
    let mut s = AppliedState::new();
    s.serial = serial;
    if serial >= 1 {
        s.binding = Some(feishu());
    }
    for n in 2..=serial {
        s.apply(&change(n));
    }
    s
}

/// Asserts that `loaded` is exactly the history's state at its own serial.
fn assert_is_history(loaded: &AppliedState) {
    let expected = history(loaded.serial);
    assert_eq!(
        loaded.binding, expected.binding,
        "at serial {}",
        loaded.serial
    );
    assert_eq!(
        loaded.targets, expected.targets,
        "at serial {}",
        loaded.serial
    );
}

#[test]
fn what_is_recorded_is_what_loads() {
    let dir = Dir::new();
    let store = store(&dir);
    let mut w = writer(&store);
    w.record(&[
        set(Target::everyone("oc_1"), list(&["Runbook"])),
        set(user("oc_1", "ou_a"), list(&["Runbook", "Ack"])),
        set(user("oc_2", "ou_b"), vec![]),
    ])
    .expect("record");
    w.record(&[Record::Forget {
        target: user("oc_1", "ou_a"),
    }])
    .expect("forget");
    let recorded = w.state().clone();
    assert_eq!(recorded.targets.len(), 2);
    assert_eq!(
        store.load().expect("load from snapshot + journal"),
        recorded
    );
    w.compact().expect("compact");
    assert_eq!(
        std::fs::metadata(store.journal_path())
            .expect("journal")
            .len(),
        0
    );
    drop(w);
    assert_eq!(store.load().expect("load from the snapshot"), recorded);
    // A second run carries on from there.
    let mut w = writer(&store);
    assert_eq!(w.state(), &recorded);
    w.record(&[set(user("oc_2", "ou_b"), list(&["Later"]))])
        .expect("record");
    assert_eq!(store.load().expect("load").serial, 3);
}

#[test]
fn lineage_is_made_once_and_serial_counts_changes() {
    let dir = Dir::new();
    let store = store(&dir);
    let empty = store.load().expect("a missing state loads as empty");
    assert_eq!(empty, AppliedState::new());
    assert_eq!((empty.lineage.as_str(), empty.serial), ("", 0));
    assert!(
        !dir.path().join(".feedbuttons").exists(),
        "reading creates nothing"
    );

    let mut w = writer(&store);
    w.record(&[]).expect("an empty batch");
    w.compact().expect("nothing to compact");
    drop(w);
    assert!(
        !store.snapshot_path().exists(),
        "a run that records nothing writes no state"
    );

    let mut w = writer(&store);
    w.record(&[set(Target::everyone("oc_1"), list(&["A"]))])
        .expect("record");
    let lineage = w.state().lineage.clone();
    assert_eq!(lineage.len(), 32, "{lineage}");
    assert!(lineage.bytes().all(|b| b.is_ascii_hexdigit()), "{lineage}");
    assert_eq!(w.state().serial, 1);
    w.bind(&feishu()).expect("bind");
    assert_eq!(w.state().serial, 2);
    w.bind(&feishu())
        .expect("binding again to the same app is a no-op");
    w.record(&[]).expect("an empty batch");
    assert_eq!(w.state().serial, 2, "no-ops change nothing");
    w.compact().expect("compact");
    drop(w);
    let loaded = store.load().expect("load");
    assert_eq!(
        (loaded.lineage.as_str(), loaded.serial),
        (lineage.as_str(), 2)
    );

    let other = Dir::new();
    let other_store = self::store(&other);
    let mut w = writer(&other_store);
    w.record(&[set(Target::everyone("oc_1"), list(&["A"]))])
        .expect("record");
    assert_ne!(
        w.state().lineage,
        lineage,
        "each new state has its own lineage"
    );
}

#[test]
fn identical_button_lists_are_stored_once() {
    let dir = Dir::new();
    let store = store(&dir);
    let mut w = writer(&store);
    // Two calls with the same list, and one with another: three batches, two distinct lists.
    for (chat, texts) in [
        ("oc_1", ["Runbook", "Ack"]),
        ("oc_2", ["Runbook", "Ack"]),
        ("oc_3", ["Dash", "Ack"]),
    ] {
        let records: Vec<Record> = (0..20)
            .map(|u| set(user(chat, &format!("ou_{u:02}")), list(&texts)))
            .collect();
        w.record(&records).expect("record");
    }
    w.compact().expect("compact");
    let recorded = w.state().clone();
    drop(w);

    let snapshot = snapshot_json(&store);
    let lists = snapshot["button_lists"].as_array().expect("a list table");
    assert_eq!(lists.len(), 2, "{lists:?}");
    // Sorted, so the same state writes the same bytes.
    assert_eq!(lists[0][0]["text"]["text"], "Dash");
    assert_eq!(snapshot["chats"][0]["chat_id"], "oc_1");
    assert_eq!(snapshot["chats"][0]["open_id"]["ou_00"], 1);
    assert_eq!(snapshot["chats"][2]["open_id"]["ou_19"], 0);

    // In memory too: a load shares one allocation per distinct list.
    let loaded = store.load().expect("load");
    assert_eq!(loaded, recorded);
    let first = &loaded.targets[&user("oc_1", "ou_00")];
    let second = &loaded.targets[&user("oc_2", "ou_05")];
    assert!(Arc::ptr_eq(
        first.shown.as_ref().expect("shown"),
        second.shown.as_ref().expect("shown")
    ));
    assert_eq!(loaded.distinct_button_lists(), 2);

    // The same state saved again gives the same bytes.
    let before = std::fs::read(store.snapshot_path()).expect("read");
    let mut w = writer(&store);
    w.record(&[set(Target::everyone("oc_9"), vec![])])
        .expect("record");
    w.record(&[Record::Forget {
        target: Target::everyone("oc_9"),
    }])
    .expect("forget");
    w.compact().expect("compact");
    drop(w);
    let after = std::fs::read(store.snapshot_path()).expect("read");
    let serial_field =
        |b: &[u8]| String::from_utf8_lossy(b).replacen(",\"serial\":5", ",\"serial\":3", 1);
    assert_eq!(serial_field(&after), String::from_utf8_lossy(&before));
}

#[test]
fn a_state_is_bound_to_its_app() {
    let dir = Dir::new();
    let store = store(&dir);
    let mut w = writer(&store);
    w.bind(&Binding::new("https://open.feishu.cn/", "cli_a1"))
        .expect("the first bind");
    drop(w);

    let loaded = store.load().expect("load");
    assert_eq!(
        loaded.binding,
        Some(feishu()),
        "a trailing slash is the same URL"
    );
    loaded.check_binding(&feishu()).expect("same app");

    let lark = Binding::new("https://open.larksuite.com", "cli_b2");
    let err = loaded.check_binding(&lark).expect_err("another app");
    assert!(matches!(err, StateError::BindingMismatch { .. }), "{err:?}");

    let mut w = writer(&store);
    let msg = w.bind(&lark).expect_err("another app").to_string();
    for part in [
        "open.feishu.cn",
        "cli_a1",
        "open.larksuite.com",
        "cli_b2",
        "state.json",
    ] {
        assert!(msg.contains(part), "{part} missing from: {msg}");
    }
    assert_eq!(w.state().binding, Some(feishu()), "nothing changed");
}

#[test]
fn a_second_writer_is_refused_and_told_who_holds_the_lock() {
    let dir = Dir::new();
    let store = store(&dir);
    let first = store
        .writer(&state::holder("apply"))
        .expect("the first writer");
    // Another store value, as another command in this process would open it.
    let again = FileStore::new(store.snapshot_path()).expect("path");
    let err = again
        .writer(&state::holder("watch"))
        .err()
        .expect("refused");
    let StateError::Locked { holder, location } = &err else {
        panic!("expected Locked, got {err:?}");
    };
    assert!(
        holder.starts_with(&format!(
            "feedbuttons apply (pid {}, host ",
            std::process::id()
        )),
        "{holder}"
    );
    assert!(holder.contains(" since 20"), "{holder}");
    assert!(location.ends_with("state.lock"), "{location:?}");
    assert!(
        err.to_string().contains("locked by feedbuttons apply"),
        "{err}"
    );
    // Readers need no lock.
    store.load().expect("a reader is not blocked");
    drop(first);
    again
        .writer(&state::holder("watch"))
        .expect("free again once the first writer is done");
}

/// Runs this test binary's `child_process_helper` as `role`, on the state at `path`.
fn spawn_child(role: &str, path: &Path) -> Child {
    Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "state::child_process_helper",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ROLE, role)
        .env(CHILD_STATE, path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the child")
}

const CHILD_ROLE: &str = "FEEDBUTTONS_TEST_STATE_CHILD";
const CHILD_STATE: &str = "FEEDBUTTONS_TEST_STATE_PATH";

/// Not a test: the other process for the tests below. As `holder` it takes the lock and keeps it
/// until its stdin closes; as `writer` it records the crash tests' history until it is killed,
/// compacting now and then, and prints each serial once it is durable.
#[test]
#[ignore = "run by the tests that need a second process"]
fn child_process_helper() {
    let (Ok(role), Some(path)) = (std::env::var(CHILD_ROLE), std::env::var_os(CHILD_STATE)) else {
        return;
    };
    let store = FileStore::new(PathBuf::from(path)).expect("path");
    let mut w = store.writer(&state::holder("child")).expect("lock");
    match role.as_str() {
        "holder" => {
            println!("CHILD LOCKED");
            let mut line = String::new();
            while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {}
        }
        "writer" => loop {
            record_next(w.as_mut());
            let serial = w.state().serial;
            println!("CHILD RECORDED {serial}");
            if serial.is_multiple_of(7) {
                w.compact().expect("compact");
            }
        },
        other => panic!("unknown child role {other}"),
    }
}

/// The child's stdout, line by line.
fn child_lines(child: &mut Child) -> std::io::Lines<BufReader<std::process::ChildStdout>> {
    BufReader::new(child.stdout.take().expect("piped stdout")).lines()
}

/// Reads lines until `wanted` accepts one.
fn read_until(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    mut wanted: impl FnMut(&str) -> bool,
) {
    loop {
        let line = lines
            .next()
            .expect("the child ended early")
            .expect("read the child's output");
        if wanted(&line) {
            return;
        }
    }
}

#[test]
fn a_lock_held_by_another_process_names_it() {
    let dir = Dir::new();
    let store = store(&dir);
    let mut child = spawn_child("holder", store.snapshot_path());
    let mut lines = child_lines(&mut child);
    read_until(&mut lines, |l| l.contains("CHILD LOCKED"));
    let err = store
        .writer(&state::holder("apply"))
        .err()
        .expect("refused");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("feedbuttons child (pid {}, host ", child.id())),
        "{msg}"
    );
    drop(child.stdin.take());
    // Read to the end, so that the child's last words do not meet a closed pipe.
    lines.for_each(drop);
    assert!(child.wait().expect("wait").success());
    store
        .writer(&state::holder("apply"))
        .expect("the lock went with the child");
}

#[test]
fn a_writer_killed_mid_record_leaves_a_state_that_loads() {
    let dir = Dir::new();
    let store = store(&dir);
    // Kill after a varying number of durable records, at a varying instant after the last.
    for (round, records) in [3u64, 12, 1, 30, 8, 20].into_iter().enumerate() {
        let mut child = spawn_child("writer", store.snapshot_path());
        let mut lines = child_lines(&mut child);
        let serial = |l: &str| -> Option<u64> {
            let n = l.split("CHILD RECORDED ").nth(1)?;
            Some(n.trim().parse().expect("a serial"))
        };
        let mut reported = 0;
        let mut seen = 0;
        read_until(&mut lines, |l| {
            if let Some(n) = serial(l) {
                reported = n;
                seen += 1;
            }
            seen >= records
        });
        std::thread::sleep(std::time::Duration::from_micros(300 * round as u64));
        child.kill().expect("SIGKILL the writer");
        child.wait().expect("reap");
        // What it reported as durable before it died.
        for line in lines {
            if let Some(n) = serial(&line.expect("read the child's output")) {
                reported = n;
            }
        }

        let loaded = store.load().expect("the state loads after a kill");
        assert!(
            loaded.serial == reported || loaded.serial == reported + 1,
            "durable up to {reported}, loaded {}: at most the record in flight may be missing",
            loaded.serial
        );
        assert_is_history(&loaded);
    }
    // And the next writer carries on from there.
    let mut w = writer(&store);
    record_next(w.as_mut());
    let serial = w.state().serial;
    drop(w);
    let loaded = store.load().expect("load");
    assert_eq!(loaded.serial, serial);
    assert_is_history(&loaded);
}

/// A state with a snapshot and a journal of several lines, and the state after each line.
fn journaled(dir: &Dir) -> (FileStore, Vec<AppliedState>) {
    let store = store(dir);
    let mut w = writer(&store);
    let mut states = Vec::new();
    // The first record writes an empty snapshot (serial 0) before its journal line.
    for _ in 0..6 {
        record_next(w.as_mut());
        states.push(w.state().clone());
    }
    let mut at_zero = AppliedState::new();
    at_zero.lineage = w.state().lineage.clone();
    states.insert(0, at_zero);
    (store, states)
}

#[test]
fn a_journal_cut_at_any_byte_loses_at_most_its_last_record() {
    let dir = Dir::new();
    let (store, states) = journaled(&dir);
    let journal = std::fs::read(store.journal_path()).expect("read the journal");
    assert_eq!(journal.iter().filter(|&&b| b == b'\n').count(), 6);
    for cut in 0..=journal.len() {
        std::fs::write(store.journal_path(), &journal[..cut]).expect("cut the journal");
        let whole_lines = journal[..cut].iter().filter(|&&b| b == b'\n').count();
        let loaded = store
            .load()
            .unwrap_or_else(|e| panic!("cut at byte {cut}: {e}"));
        assert_eq!(loaded, states[whole_lines], "cut at byte {cut}");
    }

    // A crash can also leave zeros or a garbled line where the last append was.
    let mut zeros = journal.clone();
    zeros.extend([0u8; 300]);
    std::fs::write(store.journal_path(), &zeros).expect("write");
    assert_eq!(store.load().expect("zeros at the end"), states[6]);
    let mut garbled = journal.clone();
    let last = garbled.len() - 5;
    garbled[last] ^= 0x20;
    std::fs::write(store.journal_path(), &garbled).expect("write");
    assert_eq!(store.load().expect("a garbled last line"), states[5]);

    // The next writer cuts the torn line off before appending, so its own lines stay readable.
    let mut w = writer(&store);
    assert_eq!(w.state(), &states[5]);
    record_next(w.as_mut());
    record_next(w.as_mut());
    drop(w);
    let loaded = store.load().expect("load");
    assert_eq!(loaded.serial, 7);
    assert_is_history(&loaded);
}

#[test]
fn damage_in_the_middle_of_the_journal_is_an_error_not_a_silent_loss() {
    let dir = Dir::new();
    let (store, _) = journaled(&dir);
    let journal = std::fs::read(store.journal_path()).expect("read");
    let second_line = journal.iter().position(|&b| b == b'\n').expect("a line") + 1;

    let mut flipped = journal.clone();
    flipped[second_line + 20] ^= 0x01;
    std::fs::write(store.journal_path(), &flipped).expect("write");
    let msg = store.load().expect_err("damaged").to_string();
    assert!(msg.contains("state.journal:2: "), "{msg}");
    assert!(msg.contains("fails its checksum"), "{msg}");
    assert!(msg.contains("intact lines follow"), "{msg}");
    let msg = store
        .writer(&state::holder("apply"))
        .err()
        .expect("a writer refuses too")
        .to_string();
    assert!(msg.contains("state.journal:2: "), "{msg}");

    let mut inserted = journal[..second_line].to_vec();
    inserted.extend(b"hello\n");
    inserted.extend(&journal[second_line..]);
    std::fs::write(store.journal_path(), &inserted).expect("write");
    let msg = store.load().expect_err("garbage line").to_string();
    assert!(msg.contains("state.journal:2: "), "{msg}");
    assert!(msg.contains("does not start with a checksum"), "{msg}");

    // A line dropped from the middle leaves a gap in the serials.
    let third_line = second_line
        + journal[second_line..]
            .iter()
            .position(|&b| b == b'\n')
            .expect("a line")
        + 1;
    let mut dropped = journal[..second_line].to_vec();
    dropped.extend(&journal[third_line..]);
    std::fs::write(store.journal_path(), &dropped).expect("write");
    let msg = store.load().expect_err("gap").to_string();
    assert!(msg.contains("a change is missing"), "{msg}");
}

#[test]
fn a_crash_between_snapshot_and_journal_truncation_loads_the_same_state() {
    let dir = Dir::new();
    let (store, states) = journaled(&dir);
    let journal = std::fs::read(store.journal_path()).expect("read");
    let mut w = writer(&store);
    w.compact().expect("compact");
    drop(w);
    // The compaction's rename landed; its journal truncation did not.
    std::fs::write(store.journal_path(), &journal).expect("put the old journal back");
    assert_eq!(store.load().expect("load"), states[6]);
    let mut w = writer(&store);
    assert_eq!(
        std::fs::metadata(store.journal_path())
            .expect("journal")
            .len(),
        0,
        "the writer empties a journal the snapshot already holds"
    );
    record_next(w.as_mut());
    drop(w);
    assert_is_history(&store.load().expect("load"));
}

#[test]
fn a_journal_without_its_snapshot_is_refused() {
    let dir = Dir::new();
    let (store, _) = journaled(&dir);
    let snapshot = std::fs::read(store.snapshot_path()).expect("read");
    std::fs::remove_file(store.snapshot_path()).expect("remove the snapshot");
    let msg = store.load().expect_err("no snapshot").to_string();
    assert!(msg.contains("snapshot"), "{msg}");
    assert!(msg.contains("is missing"), "{msg}");

    // Another state's snapshot next to this journal: the lineages differ.
    let other = Dir::new();
    let (other_store, _) = journaled(&other);
    std::fs::copy(other_store.snapshot_path(), store.snapshot_path()).expect("copy");
    let msg = store.load().expect_err("wrong snapshot").to_string();
    assert!(msg.contains("lineage"), "{msg}");

    std::fs::write(store.snapshot_path(), b"{\"format_version\":1,").expect("write");
    let msg = store.load().expect_err("a broken snapshot").to_string();
    assert!(
        msg.contains("state.json: not a feedbuttons state snapshot"),
        "{msg}"
    );
    std::fs::write(store.snapshot_path(), snapshot).expect("restore");
    store.load().expect("restored");
}

#[test]
fn the_journal_is_compacted_once_it_grows() {
    let dir = Dir::new();
    let store = store(&dir);
    let mut w = writer(&store);
    let mut compacted = false;
    let mut written = 0u64;
    let mut previous = 0;
    while written < 4 << 20 {
        record_next(w.as_mut());
        let len = std::fs::metadata(store.journal_path())
            .map(|m| m.len())
            .unwrap_or(0);
        if len < previous {
            compacted = true;
            break;
        }
        written += len - previous;
        previous = len;
    }
    assert!(compacted, "no compaction after {written} journal bytes");
    assert!(written > 512 << 10, "compacted early, at {written} bytes");
    let recorded = w.state().clone();
    drop(w);
    assert_eq!(store.load().expect("load"), recorded);
}

#[test]
fn readers_see_a_whole_state_while_a_writer_records_and_compacts() {
    let dir = Dir::new();
    let store = store(&dir);
    let done = Arc::new(AtomicBool::new(false));
    let writer_thread = {
        let store = store.clone();
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut w = writer(&store);
            for _ in 0..150 {
                record_next(w.as_mut());
                if w.state().serial.is_multiple_of(4) {
                    w.compact().expect("compact");
                }
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut loads = 0;
    let mut last_serial = 0;
    while !done.load(Ordering::SeqCst) {
        let loaded = store.load().expect("a reader always gets a whole state");
        assert!(loaded.serial >= last_serial, "serials never go back");
        last_serial = loaded.serial;
        assert_is_history(&loaded);
        loads += 1;
    }
    writer_thread.join().expect("the writer finished");
    assert!(loads > 10, "only {loads} loads overlapped the writer");
}

#[test]
fn a_postgres_url_opens_a_postgres_store_and_a_path_a_file() {
    let pg = state::open(Path::new("postgres://ci@db/feedbuttons")).expect("a PostgreSQL store");
    assert!(
        pg.location().starts_with("postgres://ci@db/feedbuttons"),
        "{}",
        pg.location()
    );
    let store = state::open(&state::default_path(Path::new("conf"))).expect("a file store");
    assert_eq!(
        store.location(),
        Path::new("conf")
            .join(".feedbuttons")
            .join("state.json")
            .display()
            .to_string()
    );
}

/// A small recorded state for the `state` subcommand tests.
fn small_state(dir: &Dir) -> FileStore {
    let store = store(dir);
    let mut w = writer(&store);
    w.bind(&feishu()).expect("bind");
    w.record(&[
        set(Target::everyone("oc_war"), list(&["Runbook"])),
        set(user("oc_war", "ou_b"), list(&["Runbook", "Ack, \"now\""])),
        set(
            Target::user("oc_war", UserIdType::UnionId, "on_c"),
            vec![Button {
                multi_url: None,
                action_type: ActionType::Webhook,
                text: Text { text: "Ack".into() },
                button_type: None,
                action_map: Some([("op".to_owned(), "ack".to_owned())].into()),
            }],
        ),
        set(user("oc_ops", "ou_a"), vec![]),
    ])
    .expect("record");
    store
}

#[test]
fn state_list_prints_one_sorted_line_per_target() {
    let dir = Dir::new();
    let store = small_state(&dir);
    let loaded = store.load().expect("load");
    assert_eq!(
        commands::list(&loaded, None),
        "\
oc_ops  open_id:ou_a   (no buttons)
oc_war  everyone       \"Runbook\"
oc_war  open_id:ou_b   \"Runbook\", \"Ack, \\\"now\\\"\"
oc_war  union_id:on_c  \"Ack\"
"
    );
    assert_eq!(
        commands::list(&loaded, Some("oc_ops")),
        "oc_ops  open_id:ou_a  (no buttons)\n"
    );
    assert_eq!(commands::list(&loaded, Some("oc_none")), "");
    let summary = commands::summary(&loaded, &store.location());
    assert!(
        summary.contains(&format!("lineage: {}, serial 2", loaded.lineage)),
        "{summary}"
    );
    assert!(
        summary.contains("bound to: base URL https://open.feishu.cn and app id cli_a1"),
        "{summary}"
    );
    assert!(
        summary.contains("targets: 4 in 2 chats, 4 distinct button lists"),
        "{summary}"
    );
}

#[test]
fn state_show_prints_a_chat_or_one_target_in_full() {
    let dir = Dir::new();
    let store = small_state(&dir);
    let loaded = store.load().expect("load");
    let location = store.location();
    let text = commands::show(
        &loaded,
        &location,
        &Selector::chat("oc_war"),
        ShowFormat::Text,
    )
    .expect("show");
    assert_eq!(
        text,
        "\
oc_war  everyone
  1. \"Runbook\"  url_page, primary
     url: https://example.com/Runbook
oc_war  open_id:ou_b
  1. \"Runbook\"  url_page, primary
     url: https://example.com/Runbook
  2. \"Ack, \\\"now\\\"\"  url_page, primary
     url: https://example.com/Ack, \"now\"
oc_war  union_id:on_c
  1. \"Ack\"  webhook
     action_map: {\"op\":\"ack\"}
"
    );
    // A bare id matches the user under any id type; `type:id` and `everyone` are exact.
    for (audience, count) in [
        ("on_c", 1),
        ("union_id:on_c", 1),
        ("open_id:on_c", 0),
        ("everyone", 1),
    ] {
        let found = Selector::audience("oc_war", audience).select(&loaded).len();
        assert_eq!(found, count, "{audience}");
    }
    let json = commands::show(
        &loaded,
        &location,
        &Selector::audience("oc_war", "ou_b"),
        ShowFormat::Json,
    )
    .expect("show");
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(
        v,
        serde_json::json!({"format_version": 1, "targets": [{
            "chat_id": "oc_war",
            "audience": {"kind": "user", "id_type": "open_id", "id": "ou_b"},
            "buttons": serde_json::to_value(list(&["Runbook", "Ack, \"now\""])).expect("json"),
        }]})
    );
    let err = commands::show(
        &loaded,
        &location,
        &Selector::audience("oc_war", "ou_zzz"),
        ShowFormat::Text,
    )
    .expect_err("no such target");
    assert!(
        err.to_string()
            .ends_with("no recorded target matches ou_zzz in chat oc_war"),
        "{err}"
    );
}

#[test]
fn state_rm_forgets_targets_durably() {
    let dir = Dir::new();
    let store = small_state(&dir);
    let mut w = writer(&store);
    let gone = commands::rm(w.as_mut(), &Selector::audience("oc_war", "ou_b")).expect("rm");
    assert_eq!(gone, vec![user("oc_war", "ou_b")]);
    let gone = commands::rm(w.as_mut(), &Selector::chat("oc_war")).expect("rm chat");
    assert_eq!(gone.len(), 2);
    let err = commands::rm(w.as_mut(), &Selector::chat("oc_war")).expect_err("nothing left");
    assert!(matches!(err, StateError::NotFound { .. }), "{err:?}");
    drop(w);
    let loaded = store.load().expect("load");
    assert_eq!(loaded.serial, 4);
    assert_eq!(
        loaded.targets.keys().cloned().collect::<Vec<_>>(),
        vec![user("oc_ops", "ou_a")]
    );
}

#[test]
fn state_adopt_records_targets_without_calling_the_api() {
    let dir = Dir::new();
    let store = small_state(&dir);
    let mut w = writer(&store);
    let desired = vec![
        (Target::everyone("oc_war"), Arc::new(list(&["Runbook"]))), // already recorded so
        (user("oc_war", "ou_b"), Arc::new(list(&["Runbook"]))),     // recorded with another list
        (user("oc_new", "ou_x"), Arc::new(list(&["Runbook"]))),     // new
    ];
    let pairs = || desired.iter().map(|(t, b)| (t, b));
    let done = commands::adopt(w.as_mut(), pairs()).expect("adopt");
    assert_eq!(
        done,
        Adopted {
            recorded: 2,
            unchanged: 1
        }
    );
    assert_eq!(w.state().serial, 3);
    let again = commands::adopt(w.as_mut(), pairs()).expect("adopt again");
    assert_eq!(again.recorded, 0);
    assert_eq!(w.state().serial, 3, "nothing to adopt records nothing");
    let recorded = w.state().clone();
    drop(w);
    let loaded = store.load().expect("load");
    assert_eq!(loaded, recorded);
    for (target, buttons) in &desired {
        assert_eq!(loaded.targets[target].shown(), Some(&**buttons));
    }
}

#[derive(Clone, Debug)]
enum Step {
    Record(Vec<(u8, u8, Option<u8>)>),
    Compact,
    Reopen,
}

fn step() -> impl Strategy<Value = Step> {
    // (chat, user or everyone, list or forget)
    let record = (0u8..3, 0u8..6, proptest::option::of(0u8..3));
    prop_oneof![
        4 => proptest::collection::vec(record, 0..6).prop_map(Step::Record),
        1 => Just(Step::Compact),
        1 => Just(Step::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whatever is recorded, compacted and reopened in whatever order, a load gives exactly what
    /// was recorded.
    #[test]
    fn any_history_loads_as_recorded(steps in proptest::collection::vec(step(), 1..14)) {
        let dir = Dir::new();
        let store = store(&dir);
        let mut model = AppliedState::new();
        let mut w = writer(&store);
        for s in steps {
            match s {
                Step::Record(records) => {
                    let records: Vec<Record> = records
                        .into_iter()
                        .map(|(chat, u, l)| {
                            let chat = format!("oc_{chat}");
                            let target = if u == 0 {
                                Target::everyone(chat)
                            } else {
                                user(&chat, &format!("ou_{u}"))
                            };
                            match l {
                                Some(l) => set(target, list(&[&format!("L{l}")])),
                                None => Record::Forget { target },
                            }
                        })
                        .collect();
                    if !records.is_empty() {
                        model.apply(&records);
                        model.serial += 1;
                    }
                    w.record(&records).expect("record");
                }
                Step::Compact => w.compact().expect("compact"),
                Step::Reopen => {
                    drop(w);
                    w = writer(&store);
                }
            }
            model.lineage = w.state().lineage.clone();
            prop_assert_eq!(w.state(), &model);
        }
        drop(w);
        prop_assert_eq!(store.load().expect("load"), model);
    }
}
