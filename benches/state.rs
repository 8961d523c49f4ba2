//! Benchmark of the applied-state file store at scale: 1,000,000 user targets over 10,000 chats
//! (100 users each, plus each chat's whole-chat target), about 100 distinct button lists.
//! Saves (compacts) and loads it through the public store API and prints the timings.
//!
//! Run with `cargo bench --bench state`. The goal is under a second for each of save and load.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use feedbuttons::feishu::wire::{ActionType, Button, ButtonType, MultiUrl, Text, UserIdType};
use feedbuttons::state::{self, AppliedState, FileStore, Record, StateStore};
use feedbuttons::target::{ButtonList, Target};

const CHATS: usize = 10_000;
const USERS_PER_CHAT: usize = 100;
const LISTS: usize = 100;
const ROUNDS: usize = 3;

/// A small deterministic generator, so every run measures the same state.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A 32-hex-digit id with `prefix`, shaped like Feishu's.
    fn id(&mut self, prefix: &str) -> String {
        format!("{prefix}{:016x}{:016x}", self.next(), self.next())
    }
}

fn lists() -> Vec<ButtonList> {
    (0..LISTS)
        .map(|i| {
            let runbook = Button {
                multi_url: Some(MultiUrl {
                    url: Some(format!("https://wiki.example.com/runbooks/team-{i}")),
                    ..MultiUrl::default()
                }),
                action_type: ActionType::UrlPage,
                text: Text {
                    text: format!("Runbook {i}"),
                },
                button_type: Some(ButtonType::Primary),
                action_map: None,
            };
            let ack = Button {
                multi_url: None,
                action_type: ActionType::Webhook,
                text: Text {
                    text: "Acknowledge".into(),
                },
                button_type: None,
                action_map: Some(BTreeMap::from([("op".into(), format!("ack-{i}"))])),
            };
            match i % 3 {
                0 => vec![runbook],
                1 => vec![runbook, ack],
                _ => vec![ack, runbook],
            }
        })
        .collect()
}

/// The targets: in each chat, users come in assignments of ten sharing a list; ids are random,
/// so in target (sorted) order neighbouring users mostly have different lists.
fn targets() -> Vec<(Target, ButtonList)> {
    let lists = lists();
    let mut rng = SplitMix(42);
    let mut out = Vec::with_capacity(CHATS * (USERS_PER_CHAT + 1));
    for c in 0..CHATS {
        let chat = rng.id("oc_");
        out.push((Target::everyone(chat.clone()), lists[c % LISTS].clone()));
        for u in 0..USERS_PER_CHAT {
            let list = &lists[(c * 7 + u / 10) % LISTS];
            out.push((
                Target::user(chat.clone(), UserIdType::OpenId, rng.id("ou_")),
                list.clone(),
            ));
        }
    }
    out
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn time<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

/// Loads the state at `path` and prints the time and peak memory for the parent to read: run in
/// a fresh process, as the CLI runs, where every allocation is new memory from the OS.
fn load_in_this_process(path: &str) {
    let store = FileStore::new(path).expect("a valid state path");
    let (loaded, load) = time(|| store.load().expect("load"));
    let peak_kb: u64 = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0);
    println!("{} {peak_kb}", load.as_micros());
    // Freeing a million targets is work a CLI can skip at exit: not part of the figure.
    std::mem::forget(loaded);
}

/// Loads `path` in a fresh process: how long, and the peak memory in MB.
fn load_in_a_fresh_process(path: &Path) -> (Duration, u64) {
    let out = std::process::Command::new(std::env::current_exe().expect("this program"))
        .arg("--load-only")
        .arg(path)
        .output()
        .expect("run a fresh process");
    assert!(out.status.success(), "the fresh process failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut fields = text
        .split_whitespace()
        .map(|f| f.parse::<u64>().expect("a number"));
    let micros = fields.next().expect("the load time");
    let peak_kb = fields.next().expect("the peak memory");
    (Duration::from_micros(micros), peak_kb / 1024)
}

fn all(v: &[Duration]) -> String {
    v.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", ")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--load-only") {
        let path = args.get(i + 1).expect("--load-only PATH");
        load_in_this_process(path);
        return;
    }

    let tmp = tempfile::tempdir().expect("create a temporary directory");
    let path = tmp.path().join(".feedbuttons").join("state.json");
    let store = FileStore::new(&path).expect("a valid state path");

    let targets = targets();
    let users = targets.len() - CHATS;
    println!(
        "state: {users} user targets + {CHATS} whole-chat targets in {CHATS} chats, \
         {LISTS} distinct button lists"
    );

    // Adopting the whole state: one batch, too large to journal, so folded into a snapshot.
    let records: Vec<Record> = targets
        .into_iter()
        .map(|(target, buttons)| Record::Set {
            target,
            buttons: std::sync::Arc::new(buttons),
        })
        .collect();
    let mut writer = store.writer("bench").expect("lock");
    let ((), adopt) = time(|| writer.record(&records).expect("record"));
    drop(records);
    let size = std::fs::metadata(&path).expect("snapshot").len();
    println!("snapshot: {:.1} MB", size as f64 / 1e6);
    println!(
        "adopt (record all targets as one batch: in memory, then a snapshot): {}",
        ms(adopt)
    );

    // One call's successes: a journal append and an fsync.
    let call: Vec<Record> = writer
        .state()
        .targets
        .keys()
        .skip(1)
        .take(20)
        .map(|t| Record::Set {
            target: t.clone(),
            buttons: std::sync::Arc::default(),
        })
        .collect();
    let ((), one) = time(|| writer.record(&call).expect("record one call"));
    println!(
        "record one call (20 users: journal append + fsync): {}",
        ms(one)
    );

    let mut saves = Vec::new();
    for round in 0..ROUNDS {
        // Something to compact each round: one more recorded call.
        writer
            .record(&call[..1 + round])
            .expect("record before compacting");
        let ((), save) = time(|| writer.compact().expect("compact"));
        saves.push(save);
    }
    let saved: AppliedState = writer.state().clone();
    drop(writer);
    println!(
        "save (compact: encode, write, fsync, rename, fsync dir, empty journal): {}",
        all(&saves)
    );

    let mut loads = Vec::new();
    let mut frees = Vec::new();
    for _ in 0..ROUNDS {
        let (loaded, load) = time(|| store.load().expect("load"));
        assert_eq!(loaded, saved, "the loaded state is the saved one");
        loads.push(load);
        frees.push(time(|| drop(loaded)).1);
    }
    println!(
        "load in this process (read, decode): {} (freeing it after: {})",
        all(&loads),
        all(&frees)
    );
    let fresh: Vec<(Duration, u64)> = (0..ROUNDS)
        .map(|_| load_in_a_fresh_process(&path))
        .collect();
    println!(
        "load in a fresh process, as the CLI runs: {} (peak memory {} MB)",
        all(&fresh.iter().map(|f| f.0).collect::<Vec<_>>()),
        fresh.iter().map(|f| f.1).max().unwrap_or(0)
    );

    // The worst load: a journal just short of the size that triggers a compaction (a quarter
    // of the snapshot), recorded as calls of 20 users each.
    let mut writer = store.writer("bench").expect("lock");
    let journal_limit = size / 4 * 9 / 10;
    let users: Vec<Target> = saved
        .targets
        .keys()
        .filter(|t| t.user_id().is_some())
        .cloned()
        .collect();
    let mut calls = 0;
    while std::fs::metadata(store.journal_path()).map_or(0, |m| m.len()) < journal_limit {
        let buttons = std::sync::Arc::new(vec![Button {
            multi_url: None,
            action_type: ActionType::Webhook,
            text: Text {
                text: format!("Call {calls}"),
            },
            button_type: None,
            action_map: None,
        }]);
        let batch: Vec<Record> = users
            .iter()
            .skip(calls * 20)
            .take(20)
            .map(|t| Record::Set {
                target: t.clone(),
                buttons: buttons.clone(),
            })
            .collect();
        writer.record(&batch).expect("record a call");
        calls += 1;
    }
    drop(writer);
    let journal_size = std::fs::metadata(store.journal_path()).map_or(0, |m| m.len());
    let (_, here) = time(|| store.load().expect("load"));
    let (there, _) = load_in_a_fresh_process(&path);
    println!(
        "load with a full journal ({:.1} MB, {calls} calls): {} in this process, {} in a fresh one",
        journal_size as f64 / 1e6,
        ms(here),
        ms(there)
    );

    let (bytes, encode) = time(|| state::snapshot::encode(&saved));
    let (_, decode) = time(|| state::snapshot::decode(&bytes, &path).expect("decode"));
    println!(
        "of which snapshot encode only: {}, decode only: {}",
        ms(encode),
        ms(decode)
    );
}
