//! Benchmark (issue: config format v1): validate a generated config of 10,000 chats and
//! 1,000,000 user targets split over 100 files. Run with `cargo bench --bench validate`.

#[path = "common/gen.rs"]
mod generate;

use std::time::Instant;

fn main() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let t = Instant::now();
    let bytes = generate::write_config(dir.path(), 100, 10_000, 100, 0);
    println!(
        "generated 100 files, {:.1} MB, in {:.2} s",
        bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    breakdown(dir.path());
    let mut times = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let loaded = feedbuttons::config::load_dir(dir.path()).expect("load");
        let secs = t.elapsed().as_secs_f64();
        let desired = loaded.desired.expect("the generated config is valid");
        assert_eq!(desired.targets.len(), 1_000_000);
        assert_eq!(desired.chat_count(), 10_000);
        times.push(secs);
    }
    let m = generate::median(times.clone());
    let bound = generate::parser_bound_secs(dir.path(), 3);
    println!(
        "validate: 10,000 chats, 1,000,000 targets, 100 files: median {m:.3} s of {times:.3?} ({:.0} MB/s); peak RSS {:.0} MiB; the YAML parser alone on the same files: {bound:.3} s",
        bytes as f64 / 1e6 / m,
        generate::peak_rss_mib()
    );
}

/// Where the time goes: parsing alone (one thread, one file), for the breakdown in the README.
fn breakdown(dir: &std::path::Path) {
    let text = std::fs::read_to_string(dir.join("team-000.yaml")).expect("read");
    let t = Instant::now();
    let mut report = feedbuttons::config::diag::Report::default();
    let node = feedbuttons::config::parse(0, &text, &mut report).expect("parse");
    let parse = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let raw = feedbuttons::config::raw::decode_file(0, &node, &mut report);
    let decode = t.elapsed().as_secs_f64();
    drop(raw);
    println!(
        "one file ({:.1} MB) on one thread: parse {:.0} ms ({:.0} MB/s), decode {:.0} ms",
        text.len() as f64 / 1e6,
        parse * 1e3,
        text.len() as f64 / 1e6 / parse,
        decode * 1e3
    );
}
