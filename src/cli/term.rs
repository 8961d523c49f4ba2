//! The terminal side of the commands: writing results on stdout, whether to colour them, asking
//! for confirmation, and apply's progress.

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

use anstream::{AutoStream, ColorChoice};

use super::Error;
use super::args::ColorWhen;
use crate::config::Loaded;
use crate::text::human_duration;

/// Writes `s` to stdout.
pub fn print(s: &str) -> Result<(), Error> {
    write_stdout(|w| w.write_all(s.as_bytes()))
}

/// Runs `write` on a buffered stdout. A closed pipe (`| head`) is not an error: the reader took
/// what it wanted, and the command's verdict (its exit code) still stands.
pub fn write_stdout(
    write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> Result<(), Error> {
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    match write(&mut out).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::Output(e)),
    }
}

/// Sets `--color` for the whole process: what is printed, the diagnostics and the logs.
pub fn set_color(when: ColorWhen) {
    let choice = match when {
        ColorWhen::Auto => ColorChoice::Auto,
        ColorWhen::Always => ColorChoice::Always,
        ColorWhen::Never => ColorChoice::Never,
    };
    choice.write_global();
}

/// Whether stdout gets colour: `--color always|never`, else (`auto`) anstream's rules: not
/// with `NO_COLOR` set, always with `CLICOLOR_FORCE`, otherwise on a terminal.
pub fn stdout_color() -> bool {
    AutoStream::choice(&std::io::stdout()) != ColorChoice::Never
}

/// Whether stderr gets colour (diagnostics, logs, errors), by the same rules.
pub fn stderr_color() -> bool {
    AutoStream::choice(&std::io::stderr()) != ColorChoice::Never
}

/// A config's diagnostics on stderr, coloured when stderr is.
pub fn eprint_diagnostics(loaded: &Loaded) {
    if loaded.report.diagnostics.is_empty() {
        return;
    }
    let text = if stderr_color() {
        loaded.report.render_styled(&loaded.sources)
    } else {
        loaded.report.render_text(&loaded.sources)
    };
    eprint!("{text}");
}

/// Asks on the terminal whether to send `calls` calls; only `yes` confirms. Off a terminal,
/// refuses with the way out.
pub fn confirm(calls: usize) -> Result<bool, Error> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::NotATerminal);
    }
    eprint!("Send these {calls} calls? Only 'yes' is accepted: ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(Error::Prompt)?;
    Ok(answer.trim() == "yes")
}

/// Apply's progress on stderr: a bar on a terminal, a line every 5 s otherwise.
pub struct Progress {
    total: usize,
    rate: u32,
    tty: bool,
    last_line: Instant,
    started: Instant,
}

impl Progress {
    /// For `total` calls sent at `rate` calls a second.
    pub fn new(total: usize, rate: u32) -> Progress {
        Progress {
            total,
            rate: rate.max(1),
            tty: std::io::stderr().is_terminal(),
            last_line: Instant::now(),
            started: Instant::now(),
        }
    }
}

impl crate::apply::Progress for Progress {
    fn call_done(&mut self, done: usize, total: usize) {
        let total = total.max(self.total);
        let left = (total - done.min(total)) as u64;
        let eta = human_duration(left.div_ceil(u64::from(self.rate)));
        if self.tty {
            let width = 30;
            let filled = done * width / total.max(1);
            eprint!(
                "\r[{}{}] {done}/{total} calls, about {eta} left  ",
                "=".repeat(filled),
                " ".repeat(width - filled)
            );
        } else if done == total || self.last_line.elapsed() >= Duration::from_secs(5) {
            self.last_line = Instant::now();
            eprintln!(
                "applied {done}/{total} calls ({:.0} s so far, about {eta} left)",
                self.started.elapsed().as_secs_f64()
            );
        }
    }

    fn finish(&mut self) {
        if self.tty {
            eprintln!();
        }
    }
}
