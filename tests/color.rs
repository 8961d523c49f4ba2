//! `--color auto|always|never` and `NO_COLOR`: what is printed, the diagnostics, the logs and
//! the error line all follow them.

use crate::util::{self, Dir};

const ESC: char = '\u{1b}';

/// A config with one error.
fn invalid() -> Dir {
    Dir::new().file(
        "buttons.yaml",
        "version: 1\nbuttons:\n  a: {text: A, stlye: primary, url: 'https://a.example.com'}\n",
    )
}

#[test]
fn validate_colours_its_diagnostics_only_when_asked_or_on_a_terminal() {
    let dir = invalid();
    // util::run sets NO_COLOR: auto means no colour, off a terminal anyway.
    let auto = util::run(dir.path(), &["validate"]);
    assert!(
        !util::stdout(&auto).contains(ESC),
        "{}",
        util::stdout(&auto)
    );
    let never = util::run(dir.path(), &["validate", "--color", "never"]);
    assert!(!util::stdout(&never).contains(ESC));
    // An explicit `always` wins over NO_COLOR.
    let always = util::run(dir.path(), &["--color", "always", "validate"]);
    let out = util::stdout(&always);
    assert!(out.contains(ESC), "{out}");
    assert!(out.contains("unknown field"), "{out}");
    assert_eq!(always.status.code(), Some(1));
}

#[test]
fn the_diagnostics_plan_prints_on_stderr_and_the_error_line_follow_color() {
    let dir = invalid();
    let plain = util::run(dir.path(), &["plan"]);
    assert!(util::stderr(&plain).contains("error[unknown-field]"));
    assert!(
        !util::stderr(&plain).contains(ESC),
        "{}",
        util::stderr(&plain)
    );
    let coloured = util::run(dir.path(), &["plan", "--color", "always"]);
    let err = util::stderr(&coloured);
    assert!(err.contains(ESC), "{err}");
    // The last line, `error: the config ... has 1 error(s)`, is coloured too.
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with(ESC) && last.contains("error:"), "{last:?}");
}

#[test]
fn logs_follow_color_and_no_color() {
    let dir = invalid();
    // No credentials: the daemon logs one error line and exits 1.
    let plain = util::run(dir.path(), &["watch", "--listen", "127.0.0.1:0"]);
    assert_eq!(plain.status.code(), Some(1));
    let log = util::stderr(&plain);
    assert!(log.contains("no credentials"), "{log}");
    assert!(!log.contains(ESC), "{log}");
    let coloured = util::run(
        dir.path(),
        &["watch", "--listen", "127.0.0.1:0", "--color", "always"],
    );
    let log = util::stderr(&coloured);
    assert!(log.contains("no credentials") && log.contains(ESC), "{log}");
}
