//! `feedbuttons resolve`: look up the people the config names and write `feedbuttons.lock`,
//! or (`--check`) say whether the committed lock is still what the directory says.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use super::args::ResolveArgs;
use super::{Error, term};
use crate::config::people::People;
use crate::config::{self, LoadError};
use crate::feishu::client::directory::{Directory, DirectoryApi};
use crate::lock::{LOCK_FILE, Lock};
use crate::resolve::{self, Resolution};
use crate::settings::{Connection, Credentials, Endpoint};
use crate::text::count;

/// Exit 0 when the lock was written (or, with `--check`, is current); 1 when a person or a
/// source cannot be resolved (nothing is written), the lock is stale (`--check`), or on error.
pub fn run(args: &ResolveArgs) -> Result<ExitCode, Error> {
    let dir = &args.dir;
    // A lock that cannot be read is written anew (and is stale for `--check`).
    let mut unreadable = false;
    let old = Lock::load(dir).unwrap_or_else(|e| {
        eprintln!("note: {e}; resolving as if there were none");
        unreadable = true;
        None
    });
    // A first pass notes everything the config asks for; its diagnostics wait for the second.
    let noting = People::noting(Lock::default(), Default::default(), Default::default());
    let loaded = config::load_dir_with(dir, &noting)?;
    if loaded.sources.files.is_empty() {
        term::eprint_diagnostics(&loaded);
        return Err(LoadError::NotADirectory {
            path: dir.to_path_buf(),
        }
        .into());
    }
    // Other errors are worth fixing before asking the directory anything: said now, with the
    // first pass's own unresolved entries (it had an empty lock) left out.
    let mut loaded = loaded;
    loaded
        .report
        .diagnostics
        .retain(|d| !matches!(d.code, "unresolved-user" | "unresolved-source"));
    if loaded.report.has_errors() {
        term::eprint_diagnostics(&loaded);
        eprintln!(
            "the config has {}; nothing was looked up and {LOCK_FILE} was not written.",
            count(loaded.report.errors(), "error", "errors")
        );
        return Ok(ExitCode::FAILURE);
    }
    let wanted = noting.asked();
    // An unreadable lock fails every `validate` and `plan` until it is written again, even
    // when the config names nobody.
    if wanted.is_empty() && old.is_none() && !unreadable {
        eprintln!(
            "The config names no emails, mobiles, chats (members_of) or departments: it needs no {LOCK_FILE}."
        );
        return Ok(ExitCode::SUCCESS);
    }

    let started = Instant::now();
    let (resolution, stats, app_id) = if wanted.is_empty() {
        (Resolution::default(), None, None)
    } else {
        let endpoint = Endpoint {
            base_url: args.base_url.clone(),
            rate_limit: 0,
        };
        let credentials = Credentials::from_env().map_err(crate::settings::SettingsError::from)?;
        let app_id = credentials.app_id().to_owned();
        let connection = Connection::new(&endpoint, credentials)
            .map_err(crate::settings::SettingsError::from)?;
        let directory = Directory::new(
            connection.client,
            args.directory_rate_limit,
            args.directory_rate_limit_per_minute,
        );
        let rt = crate::runtime::build().map_err(Error::Runtime)?;
        let resolution = rt.block_on(resolve::resolve(&directory, &wanted))?;
        (resolution, Some(directory.stats()), Some(app_id))
    };

    // The second pass reports what did not resolve at the places that name it.
    let checked = People::noting(
        resolution.lock.clone(),
        resolution.failed_people.clone(),
        resolution.failed_sources.clone(),
    );
    let loaded = config::load_dir_with(dir, &checked)?;
    term::eprint_diagnostics(&loaded);
    if loaded.report.has_errors() {
        let unresolved = resolution.failed_people.len() + resolution.failed_sources.len();
        if unresolved > 0 {
            eprintln!(
                "{} could not be resolved; {LOCK_FILE} was not written.",
                count(unresolved, "person or source", "people or sources")
            );
        } else {
            eprintln!(
                "the config has {}; {LOCK_FILE} was not written (see `feedbuttons validate`).",
                count(loaded.report.errors(), "error", "errors")
            );
        }
        return Ok(ExitCode::FAILURE);
    }

    // Open ids are per app: a lock that holds any says whose they are (union and user ids are
    // the same under every app of a tenant, and a lock of those alone names none).
    let holds_open_ids = resolution.lock.holds_open_ids();
    let new = Lock {
        app_id: app_id.filter(|_| holds_open_ids),
        ..resolution.lock
    };
    // Every id is checked as `validate` will check it when it reads the lock: an answer that
    // holds something else is the directory's mistake, and is not written.
    if let Err(why) = new.check() {
        eprintln!("the directory gave {why}; {LOCK_FILE} was not written.");
        return Ok(ExitCode::FAILURE);
    }
    let changes = match &old {
        Some(old) => old.diff(&new),
        None => Lock::default().diff(&new),
    };
    let summary = summary(&wanted, stats, started.elapsed());
    if args.check {
        let current = old.as_ref() == Some(&new);
        if current {
            eprintln!("{LOCK_FILE} is up to date ({summary}).");
            return Ok(ExitCode::SUCCESS);
        }
        let mut out = String::new();
        for line in &changes {
            out.push_str(line);
            out.push('\n');
        }
        term::print(&out)?;
        let what = if unreadable {
            format!("{LOCK_FILE} cannot be read")
        } else if old.is_none() {
            format!("{} has no {LOCK_FILE}", dir.display())
        } else {
            format!(
                "{LOCK_FILE} is stale ({})",
                count(changes.len(), "difference", "differences")
            )
        };
        eprintln!(
            "{what}: run `feedbuttons resolve {}` and commit the lock.",
            dir.display()
        );
        return Ok(ExitCode::FAILURE);
    }
    if old.as_ref() == Some(&new) {
        eprintln!("{LOCK_FILE} is up to date ({summary}); nothing written.");
        return Ok(ExitCode::SUCCESS);
    }
    new.save(dir)?;
    let mut out = String::new();
    for line in &changes {
        out.push_str(line);
        out.push('\n');
    }
    term::print(&out)?;
    eprintln!(
        "Wrote {} ({}; {summary}).",
        lock_path(dir),
        count(changes.len(), "change", "changes")
    );
    Ok(ExitCode::SUCCESS)
}

fn lock_path(dir: &Path) -> String {
    dir.join(LOCK_FILE).display().to_string()
}

/// `12 people and 3 sources; 5 calls (2 batch_get_id, ...) in 0.4 s`.
fn summary(
    wanted: &crate::config::people::Wanted,
    stats: Option<crate::feishu::client::directory::DirectoryStats>,
    elapsed: std::time::Duration,
) -> String {
    let mut s = format!(
        "{} and {}",
        count(wanted.people.len(), "person", "people"),
        count(wanted.sources.len(), "source", "sources")
    );
    if let Some(stats) = stats {
        let total: u64 = stats.requests.iter().sum();
        let parts: Vec<String> = DirectoryApi::ALL
            .iter()
            .zip(stats.requests)
            .filter(|(_, n)| *n > 0)
            .map(|(api, n)| format!("{n} {}", api.as_str()))
            .collect();
        s.push_str(&format!(
            "; {} ({}) in {:.1} s",
            count(total as usize, "call", "calls"),
            parts.join(", "),
            elapsed.as_secs_f64()
        ));
        if stats.rate_limited > 0 {
            s.push_str(&format!(", {} throttled", stats.rate_limited));
        }
    }
    s
}
