//! Generates large config directories (and applied states) for the benchmarks.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::path::Path;

/// A deterministic pseudo-random id of 32 hex digits.
pub fn hex_id(prefix: &str, n: u64) -> String {
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    x ^= x >> 29;
    let y = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    format!("{prefix}{x:016x}{y:016x}")
}

/// Writes `files` files holding `chats` chats with `users_per_chat` users each; `salt` changes
/// which users and lists a chat gets (0 and 1 give two different configs of the same size).
pub fn write_config(
    dir: &Path,
    files: usize,
    chats: usize,
    users_per_chat: usize,
    salt: u64,
) -> u64 {
    let mut bytes = 0u64;
    let chats_per_file = chats / files;
    for f in 0..files {
        let mut s = String::with_capacity(chats_per_file * users_per_chat * 45);
        s.push_str("version: 1\n");
        if f == 0 {
            s.push_str("buttons:\n");
            for b in 0..100 {
                let _ = writeln!(
                    s,
                    "  b{b}:\n    text: Button {b}\n    url: https://wiki.example.com/page/{b}"
                );
            }
        }
        s.push_str("chats:\n");
        for c in 0..chats_per_file {
            let chat = f * chats_per_file + c;
            let _ = writeln!(
                s,
                "  - chat_id: {}\n    name: Chat {chat}\n    assign:",
                hex_id("oc_", chat as u64)
            );
            // Two assignments per chat: half the users get one pair of buttons, half another.
            for half in 0..2u64 {
                let b1 = (chat as u64 + half + salt) % 100;
                let b2 = (chat as u64 * 7 + half + salt * 3) % 100;
                let _ = writeln!(s, "      - buttons: [b{b1}, b{b2}]\n        users:");
                for u in 0..users_per_chat / 2 {
                    // The first half of a chat's users are the same for every salt (their lists differ),
                    // the second half are other users.
                    let id =
                        (chat * users_per_chat + u * 2) as u64 + half + half * salt * 5_000_000;
                    let _ = writeln!(s, "          - {}", hex_id("ou_", id));
                }
            }
        }
        bytes += s.len() as u64;
        let _ = std::fs::write(dir.join(format!("team-{f:03}.yaml")), s);
    }
    bytes
}

/// Peak resident memory of this process so far, in MiB (Linux).
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_owned)
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Median of a few timings, in seconds.
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// The YAML parser's own time on every config file of `dir`, in seconds (median of `rounds`):
/// serde-saphyr reading each file into nothing (`IgnoredAny`), with the loader's limits, on
/// as many threads as the loader parses files on. No load of the same files can beat it: it is
/// the bound each figure is shown beside.
pub fn parser_bound_secs(dir: &Path, rounds: usize) -> f64 {
    let mut texts = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths {
            if p.extension().is_some_and(|e| e == "yaml") {
                texts.push(std::fs::read_to_string(&p).unwrap_or_default());
            }
        }
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(texts.len().max(1));
    let limits =
        feedbuttons::config::syntax::Limits::for_nodes(feedbuttons::config::MAX_NODES_PER_FILE);
    let times = (0..rounds.max(1))
        .map(|_| {
            let next = std::sync::atomic::AtomicUsize::new(0);
            let t = std::time::Instant::now();
            std::thread::scope(|scope| {
                for _ in 0..threads {
                    scope.spawn(|| {
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(text) = texts.get(i) else { break };
                            let options = serde_saphyr::options! {
                                budget: Some(limits.budget()),
                                with_snippet: false,
                            };
                            let parsed = serde_saphyr::from_str_with_options::<
                                serde::de::IgnoredAny,
                            >(text, options);
                            assert!(parsed.is_ok(), "the generated files parse");
                        }
                    });
                }
            });
            t.elapsed().as_secs_f64()
        })
        .collect();
    median(times)
}

/// Runs `cmd` to its end with its output thrown away, giving its wall time in seconds and its
/// peak resident memory in MiB (the child's own, from `wait4`; Linux). Panics if it fails.
#[expect(
    clippy::zombie_processes,
    reason = "the child is reaped by wait4, which also gives its peak memory"
)]
pub fn run_measured(cmd: &mut std::process::Command) -> (f64, f64) {
    let t = std::time::Instant::now();
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the command");
    let pid = child.id() as libc::pid_t;
    let mut stderr = child.stderr.expect("piped stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let mut status = 0;
    // SAFETY: an all-zero `rusage` is a valid value of the plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own child, not yet waited for (`child` gave up its handle above
    // without waiting); `status` and `usage` are valid for writes.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let secs = t.elapsed().as_secs_f64();
    let err = reader.join().unwrap_or_default();
    assert_eq!(waited, pid, "wait4");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the command failed ({status}): {err}"
    );
    // ru_maxrss is in KiB on Linux.
    (secs, usage.ru_maxrss as f64 / 1024.0)
}
