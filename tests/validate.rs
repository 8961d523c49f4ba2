//! `feedbuttons validate`: loading a config directory and explaining what is wrong with it.

use std::path::{Path, PathBuf};

use proptest::prelude::*;

use crate::util::{self, Dir};

/// Every stable diagnostic code a fixture directory can be named after.
const CODES: &[&str] = &[
    "assignment-no-audience",
    "button-text-control",
    "button-text-empty",
    "button-text-too-long",
    "duplicate-assignment",
    "duplicate-button",
    "duplicate-key",
    "duplicate-user-set",
    "everyone-with-users",
    "file-not-regular",
    "file-not-utf8",
    "file-too-large",
    "file-unreadable",
    "invalid-chat-id",
    "invalid-user-id",
    "missing-field",
    "too-many-buttons",
    "undefined-button",
    "undefined-user-set",
    "unknown-action",
    "unknown-field",
    "unknown-style",
    "unknown-user-id-type",
    "url-invalid",
    "url-missing",
    "url-not-https",
    "url-too-long",
    "version-missing",
    "version-unsupported",
    "wrong-type",
    "yaml-syntax",
    "yaml-too-deep",
    "yaml-too-many-aliases",
];

fn invalid_root() -> PathBuf {
    util::root().join("tests/fixtures/invalid")
}

fn invalid_cases() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(invalid_root())
        .expect("list tests/fixtures/invalid")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n != "no-config-files")
        .collect();
    names.sort();
    names
}

/// The code a fixture is named after: the longest known code its name starts with.
fn expected_code(case: &str) -> Option<&'static str> {
    CODES
        .iter()
        .copied()
        .filter(|c| case.starts_with(c))
        .max_by_key(|c| c.len())
}

#[test]
fn there_are_at_least_thirty_invalid_configs() {
    assert!(
        invalid_cases().len() >= 30,
        "only {} invalid configs",
        invalid_cases().len()
    );
}

#[test]
fn every_invalid_config_exits_1_and_points_at_file_line_column() {
    for case in invalid_cases() {
        let out = util::run(&invalid_root(), &["validate", &case]);
        let stdout = util::stdout(&out);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{case} should be invalid:\n{stdout}"
        );
        let place = regex_lite_place(&stdout, &case);
        assert!(place, "{case}: no `--> {case}/FILE:LINE:COL` in:\n{stdout}");
        match expected_code(&case) {
            Some(code) => assert!(
                stdout.contains(&format!("error[{code}]")),
                "{case}: expected error[{code}] in:\n{stdout}"
            ),
            None => {
                assert!(
                    case.starts_with("multi"),
                    "{case} is named after no known code"
                );
                let errors =
                    stdout.matches("\nerror[").count() + usize::from(stdout.starts_with("error["));
                assert!(
                    errors >= 3,
                    "{case}: expected several errors at once:\n{stdout}"
                );
            }
        }
        insta::assert_snapshot!(format!("invalid__{case}"), stdout);
    }
}

/// Whether `out` holds `--> CASE/<file>:<line>:<col>` with numbers.
fn regex_lite_place(out: &str, case: &str) -> bool {
    out.lines().any(|l| {
        let Some(rest) = l.trim_start().strip_prefix("--> ") else {
            return false;
        };
        let Some(rest) = rest.strip_prefix(&format!("{case}/")) else {
            return false;
        };
        let mut parts = rest.rsplitn(3, ':');
        let col = parts.next().unwrap_or("");
        let line = parts.next().unwrap_or("");
        let file = parts.next().unwrap_or("");
        !file.is_empty()
            && line.parse::<u32>().is_ok_and(|n| n > 0)
            && col.parse::<u32>().is_ok_and(|n| n > 0)
    })
}

#[test]
fn every_code_is_in_the_readme_rules_table() {
    let readme = std::fs::read_to_string(util::root().join("README.md")).expect("README.md");
    let rules = readme
        .split("### The rules")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("the README has a rules section");
    let warnings = ["duplicate-user", "unused-user-set", "chat-name-conflict"];
    for code in CODES.iter().chain(&warnings).chain(&["no-config-files"]) {
        assert!(
            rules.contains(&format!("`{code}`")),
            "{code} is not in the README's rules table"
        );
    }
}

#[test]
fn a_directory_without_config_files_is_an_error() {
    let out = util::run(&invalid_root(), &["validate", "no-config-files"]);
    assert_eq!(out.status.code(), Some(1));
    insta::assert_snapshot!(util::stdout(&out));
}

#[test]
fn a_missing_directory_is_an_error() {
    let dir = Dir::new();
    let out = util::run(dir.path(), &["validate", "does-not-exist"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        util::stderr(&out).contains("does-not-exist does not exist"),
        "{}",
        util::stderr(&out)
    );
}

#[test]
fn json_output_names_code_severity_message_and_every_label() {
    let out = util::run(
        &invalid_root(),
        &["validate", "duplicate-button", "--format", "json"],
    );
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("validate --format json prints JSON");
    assert_eq!(v["valid"], false);
    assert_eq!(v["errors"], 1);
    let d = &v["diagnostics"][0];
    assert_eq!(d["code"], "duplicate-button");
    assert_eq!(d["severity"], "error");
    assert_eq!(d["file"], "duplicate-button/b.yaml");
    assert_eq!(d["line"], 3);
    assert_eq!(d["column"], 3);
    let labels = d["labels"].as_array().expect("labels");
    assert_eq!(labels.len(), 2, "a duplicate shows both places");
    assert_eq!(labels[1]["file"], "duplicate-button/a.yaml");
    assert_eq!(labels[1]["line"], 3);
}

#[test]
fn the_examples_are_valid() {
    for example in ["examples/quickstart", "examples/teams"] {
        let out = util::run(&util::root(), &["validate", example]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{example}:\n{}",
            util::stdout(&out)
        );
        assert!(
            util::stdout(&out).starts_with("valid: "),
            "{}",
            util::stdout(&out)
        );
    }
    let out = util::run(&util::root(), &["validate", "examples/teams"]);
    insta::assert_snapshot!(util::stdout(&out), @"valid: 3 files, 3 chats, 14 targets\n");
}

#[test]
fn warnings_alone_keep_a_config_valid() {
    let dir = Dir::new()
        .file(
            "a.yaml",
            "version: 1\nuser_sets:\n  spare: [ou_abc]\nchats:\n  - chat_id: oc_abc\n    name: One\n    assign:\n      - users: [ou_def]\n        buttons: []\n",
        )
        .file("b.yaml", "version: 1\nchats:\n  - chat_id: oc_abc\n    name: Two\n    assign: []\n");
    let out = util::run(dir.path(), &["validate"]);
    let stdout = util::stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("warning[unused-user-set]: user set `spare` is never used"),
        "{stdout}"
    );
    assert!(stdout.contains("warning[chat-name-conflict]"), "{stdout}");
    assert!(
        stdout.ends_with("valid: 2 files, 1 chat, 1 target (2 warnings)\n"),
        "{stdout}"
    );
}

#[test]
fn hidden_files_and_folders_and_other_extensions_are_skipped() {
    let broken = "this is: [not valid";
    let dir = Dir::new()
        .file("a.yml", "version: 1\n")
        .file(".hidden.yaml", broken)
        .file(".feedbuttons/state.yaml", broken)
        .file(".git/x.yaml", broken)
        .file("notes.txt", broken)
        .file("sub/deeper/b.yaml", "version: 1\n");
    let out = util::run(dir.path(), &["validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", util::stdout(&out));
    assert_eq!(util::stdout(&out), "valid: 2 files, 0 chats, 0 targets\n");
}

#[test]
fn the_checked_in_schema_is_up_to_date() {
    let out = util::run(&util::root(), &["schema"]);
    assert_eq!(out.status.code(), Some(0));
    let checked_in = std::fs::read_to_string(util::root().join("specs/feedbuttons.schema.json"))
        .expect("specs/feedbuttons.schema.json exists");
    assert!(
        util::stdout(&out) == checked_in,
        "specs/feedbuttons.schema.json is out of date: run `cargo run -- schema > specs/feedbuttons.schema.json`"
    );
}

#[test]
fn every_example_file_points_editors_at_the_schema() {
    let mut files = Vec::new();
    // Every config example (CI and deployment files, and the emulator's tenants, under
    // examples/ are not configs).
    for dir in std::fs::read_dir(util::root().join("examples")).expect("list examples") {
        let dir = dir.expect("entry").path();
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if dir.is_dir() && !["ci", "deploy", "emulator"].contains(&name.as_str()) {
            collect_yaml(&dir, &mut files);
        }
    }
    assert!(!files.is_empty());
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read example");
        let first = text.lines().next().unwrap_or_default();
        let rel = first
            .strip_prefix("# yaml-language-server: $schema=")
            .unwrap_or_else(|| panic!("{} does not start with the schema line", f.display()));
        let schema = f.parent().expect("parent").join(rel);
        assert!(
            schema.is_file(),
            "{}: {} does not exist",
            f.display(),
            schema.display()
        );
        assert!(
            schema.ends_with("specs/feedbuttons.schema.json"),
            "{}",
            f.display()
        );
    }
}

fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("list") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            collect_yaml(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
}

/// Runs the binary like [`util::run`], failing the test instead of hanging past `secs`.
fn run_within(cwd: &Path, args: &[&str], secs: u64) -> std::process::Output {
    let mut child = std::process::Command::new(util::bin())
        .args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run feedbuttons");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while child.try_wait().expect("poll feedbuttons").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("feedbuttons {args:?} did not finish within {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect the output")
}

/// The parsed `validate --format json` output for `dir`.
fn validate_json(cwd: &Path, dir: &str) -> serde_json::Value {
    let out = run_within(cwd, &["validate", dir, "--format", "json"], 30);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}):\n{}\n{}",
            util::stdout(&out),
            util::stderr(&out)
        )
    })
}

#[test]
fn a_bad_indent_in_a_shared_file_is_the_one_error_and_names_wait_on_it() {
    // The cascade: a tab in the shared file's indentation, whose buttons and user sets
    // two teams use. It was reported a line too early with no help, followed by an `undefined`
    // error for each use and an `unused` warning for the set only the shared file uses.
    let v = validate_json(&invalid_root(), "yaml-syntax-indentation-cascade");
    assert_eq!(v["errors"], 1, "{v:#}");
    assert_eq!(v["warnings"], 0, "{v:#}");
    let d = &v["diagnostics"][0];
    assert_eq!(d["code"], "yaml-syntax");
    assert_eq!(d["file"], "yaml-syntax-indentation-cascade/shared.yaml");
    assert_eq!(
        (d["line"].as_u64(), d["column"].as_u64()),
        (Some(9), Some(1)),
        "{d:#}"
    );
    assert!(
        d["help"].as_str().is_some_and(|h| h.contains("spaces")),
        "{d:#}"
    );
    let waiting: Vec<(String, String)> = d["labels"]
        .as_array()
        .expect("labels")
        .iter()
        .skip(1)
        .map(|l| {
            (
                l["file"].as_str().unwrap_or_default().to_owned(),
                l["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(waiting.len(), 2, "{waiting:?}");
    assert_eq!(
        waiting[0].0,
        "yaml-syntax-indentation-cascade/payments.yaml"
    );
    assert_eq!(waiting[1].0, "yaml-syntax-indentation-cascade/sre.yaml");
    assert!(
        waiting[1]
            .1
            .starts_with("`sre-oncall`, `runbook`, `dashboards`, `sre-leads` wait on this error"),
        "{waiting:?}"
    );
}

#[test]
fn a_name_that_the_unparsed_file_does_not_hold_is_still_undefined() {
    let dir = Dir::new()
        .file(
            "shared.yaml",
            "version: 1\nbuttons:\n  runbook:\n    text: Runbook\n\turl: https://a.example.com\n",
        )
        .file(
            "team.yaml",
            "version: 1\nchats:\n  - chat_id: oc_a\n    assign:\n      - users: [ou_a]\n        buttons: [runbook, runbok]\n",
        );
    let v = validate_json(dir.path(), ".");
    assert_eq!(v["errors"], 2, "{v:#}");
    let undefined: Vec<&str> = v["diagnostics"]
        .as_array()
        .expect("diagnostics")
        .iter()
        .filter(|d| d["code"] == "undefined-button")
        .filter_map(|d| d["message"].as_str())
        .collect();
    assert_eq!(undefined, ["button `runbok` is not defined"], "{v:#}");
}

#[cfg(unix)]
#[test]
fn a_fifo_named_yaml_is_an_error_not_a_hang_and_its_names_wait_on_it() {
    let dir = Dir::new().file(
        "team.yaml",
        "version: 1\nuser_sets:\n  spare: [ou_b]\nchats:\n  - chat_id: oc_a\n    assign:\n      - users: [ou_a]\n        buttons: [runbook]\n",
    );
    let fifo = dir.path().join("shared.yaml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success());
    let v = validate_json(dir.path(), ".");
    // Nothing of the FIFO is known, so `runbook` waits on it and `spare` may be used there.
    assert_eq!(
        (v["errors"].as_u64(), v["warnings"].as_u64()),
        (Some(1), Some(0)),
        "{v:#}"
    );
    let d = &v["diagnostics"][0];
    assert_eq!(d["code"], "file-not-regular");
    assert_eq!(d["file"], "shared.yaml");
    assert_eq!(
        d["message"],
        "`shared.yaml` is a named pipe (FIFO), not a regular file"
    );
    assert_eq!(d["labels"][1]["file"], "team.yaml");
    assert_eq!(d["labels"][1]["line"], 8);
    assert_eq!(
        d["labels"][1]["message"],
        "`runbook` waits on this error: no other file defines it"
    );
}

#[cfg(unix)]
#[test]
fn a_socket_or_a_link_to_a_fifo_named_yaml_is_an_error() {
    let dir = Dir::new().file("a.yaml", "version: 1\n");
    let _socket = std::os::unix::net::UnixListener::bind(dir.path().join("s.yaml")).expect("bind");
    let made = std::process::Command::new("mkfifo")
        .arg(dir.path().join("pipe"))
        .status()
        .expect("run mkfifo");
    assert!(made.success());
    std::os::unix::fs::symlink("pipe", dir.path().join("p.yml")).expect("symlink");
    let v = validate_json(dir.path(), ".");
    let messages: Vec<&str> = v["diagnostics"]
        .as_array()
        .expect("diagnostics")
        .iter()
        .filter(|d| d["code"] == "file-not-regular")
        .filter_map(|d| d["message"].as_str())
        .collect();
    assert_eq!(
        messages,
        [
            "`p.yml` is a symbolic link to `pipe`, which is a named pipe (FIFO), not a regular file",
            "`s.yaml` is a socket, not a regular file",
        ],
        "{v:#}"
    );
}

#[test]
fn a_file_that_is_not_utf8_is_reported_at_its_first_bad_byte() {
    let dir = Dir::new().file("a.yaml", "");
    std::fs::write(
        dir.path().join("a.yaml"),
        b"version: 1\nbuttons:\n  a:\n    text: caf\xe9\n",
    )
    .expect("write");
    let v = validate_json(dir.path(), ".");
    let d = &v["diagnostics"][0];
    assert_eq!(d["code"], "file-not-utf8");
    assert_eq!(
        (d["line"].as_u64(), d["column"].as_u64()),
        (Some(4), Some(14)),
        "{d:#}"
    );
    assert_eq!(
        d["message"],
        "the file is not UTF-8 (byte 0xE9 cannot start or continue a character)"
    );
}

#[test]
fn duplicate_users_in_one_assignment_are_a_warning_with_both_places() {
    let dir = Dir::new().file(
        "a.yaml",
        "version: 1
user_sets:
  oncall: [ou_a, ou_b, ou_a]
  leads: [ou_b, ou_c]
chats:
  - chat_id: oc_x
    assign:
      - users: [ou_d, ou_e, ou_d]
        buttons: []
      - users: [ou_b]
        user_sets: [oncall, leads]
        buttons: []
",
    );
    let out = util::run(dir.path(), &["validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", util::stdout(&out));
    // `oncall` and `leads` share `ou_b`: overlapping sets are not warned about.
    insta::assert_snapshot!(util::stdout(&out));
}

/// YAML-shaped text built from the tokens a config uses, to reach deep into the decoder.
fn yamlish() -> impl Strategy<Value = String> {
    let token = prop::sample::select(vec![
        "version: 1\n",
        "version: x\n",
        "buttons:\n",
        "  b:\n",
        "    text: T\n",
        "    url: https://a.example.com\n",
        "    url:\n      pc: x\n",
        "    action: webhook\n",
        "    action_map: {a: 1}\n",
        "user_sets:\n",
        "  s: [ou_a, on_b]\n",
        "chats:\n",
        "  - chat_id: oc_a\n",
        "    assign:\n",
        "      - users: [ou_a]\n",
        "        buttons: [b, b, b]\n",
        "      - everyone: true\n",
        "        buttons: []\n",
        "        user_sets: [s]\n",
        "- ",
        "[",
        "]",
        "{",
        "}",
        ": ",
        "&a ",
        "*a ",
        "!!str ",
        "'",
        "\"",
        "\t",
        "\n",
        "---\n",
        "? ",
        "|\n",
        "<<: *a\n",
        "~\n",
        "null\n",
        "1e999\n",
        "0x1F\n",
    ]);
    prop::collection::vec(token, 0..40).prop_map(|t| t.concat())
}

/// Fails when a message shows the parser's API or a Debug form instead of plain words.
fn no_parser_internals(loaded: &feedbuttons::config::Loaded) -> Result<(), TestCaseError> {
    for d in &loaded.report.diagnostics {
        let texts = std::iter::once(&d.message)
            .chain(d.help.iter())
            .chain(d.labels.iter().map(|l| &l.message));
        for t in texts {
            for internal in [
                "from_str",
                "budget breached",
                " { ",
                "Error",
                "serde",
                " at line ",
            ] {
                prop_assert!(!t.contains(internal), "{:?}: {}", d.code, t);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_give_diagnostics_or_a_config_never_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let loaded = feedbuttons::config::load_texts(vec![(PathBuf::from("a.yaml"), text)]);
        prop_assert_eq!(loaded.desired.is_some(), !loaded.report.has_errors());
        no_parser_internals(&loaded)?;
        let _ = loaded.report.render_text(&loaded.sources);
    }

    #[test]
    fn arbitrary_yaml_gives_diagnostics_or_a_config_never_a_panic(a in yamlish(), b in yamlish()) {
        let loaded = feedbuttons::config::load_texts(vec![(PathBuf::from("a.yaml"), a), (PathBuf::from("b.yaml"), b)]);
        prop_assert_eq!(loaded.desired.is_some(), !loaded.report.has_errors());
        no_parser_internals(&loaded)?;
        for d in &loaded.report.diagnostics {
            for l in &d.labels {
                prop_assert!(l.pos.line >= 1, "{:?}", d);
            }
        }
        let _ = loaded.report.render_text(&loaded.sources);
        let _ = loaded.report.to_json(&loaded.sources);
    }
}

#[test]
fn nesting_up_to_the_depth_limit_is_a_diagnostic_never_a_stack_overflow() {
    // The depth limit (64) exists so that a deep file is reported, not a crash. Nested flow
    // mappings, or lists of mappings, took more stack per level than a parser thread had (in
    // a debug build): the process aborted ("has overflowed its stack", exit 134) before the
    // limit was reached.
    let deep_maps = format!("version: 1\nx: {}1{}\n", "{a: ".repeat(64), "}".repeat(64));
    let deep_mixed = format!(
        "version: 1\nx: {}1{}\n",
        "[{a: ".repeat(40),
        "}]".repeat(40)
    );
    let mut block = String::from("version: 1\n");
    for level in 0..100 {
        block.push_str(&format!("{}a:\n", "  ".repeat(level)));
    }
    block.push_str(&format!("{}1\n", "  ".repeat(100)));
    for (name, text) in [
        ("maps.yaml", deep_maps),
        ("mixed.yaml", deep_mixed),
        ("block.yaml", block),
    ] {
        let dir = Dir::new().file(name, &text);
        let out = run_within(dir.path(), &["validate", "."], 30);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", util::stderr(&out));
        assert!(
            util::stdout(&out).contains("error[yaml-too-deep]")
                || util::stderr(&out).contains("error[yaml-too-deep]"),
            "{name}:\n{}{}",
            util::stdout(&out),
            util::stderr(&out)
        );
    }
}
