//! How a state is stored and written: the store and its one writer (a file, or PostgreSQL), what
//! can go wrong with them, `state migrate`, and where a state lives by default.

use std::path::{Path, PathBuf};

use super::{AppliedState, Binding, FileStore, Record, postgres};
use crate::target::{Audience, Target};

/// Reads and locks one applied state. Object-safe: the CLI holds a `Box<dyn StateStore>` chosen
/// by [`open`]: a file store or a PostgreSQL one.
pub trait StateStore: Send + Sync {
    /// Where the state lives, for messages: a path, or a URL without its password.
    fn location(&self) -> String;

    /// Reads the state without taking the lock (plan, `state list|show`). A missing state is an
    /// empty one. Always a consistent state: the snapshot plus a valid prefix of the journal.
    fn load(&self) -> Result<AppliedState, StateError>;

    /// Takes the one writer's lock and loads the state under it. While the lock is held, anyone
    /// else who tries gets [`StateError::Locked`] naming `holder` (see [`holder`]). The lock is
    /// released when the returned writer is dropped, or when its process dies.
    fn writer(&self, holder: &str) -> Result<Box<dyn StateWriter>, StateError>;

    /// [`StateStore::writer`], waiting up to `wait` for another writer to finish
    /// (`--lock-timeout`) instead of failing at once.
    fn writer_waiting(
        &self,
        holder: &str,
        wait: std::time::Duration,
    ) -> Result<Box<dyn StateWriter>, StateError> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            match self.writer(holder) {
                Err(StateError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(LOCK_POLL.min(deadline - std::time::Instant::now()));
                }
                other => return other,
            }
        }
    }
}

/// What `state migrate` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Migrated {
    pub lineage: String,
    pub serial: u64,
    pub targets: usize,
}

/// Copies the state of `from` into `to`, lineage, serial and binding kept, holding both
/// writers' locks so that neither changes meanwhile. `to` must hold no state yet; `from` is left
/// as it was.
pub fn migrate(
    from: &dyn StateStore,
    to: &dyn StateStore,
    holder: &str,
) -> Result<Migrated, StateError> {
    migrate_waiting(from, to, holder, std::time::Duration::ZERO)
}

/// [`migrate`], waiting up to `wait` for each store's writer (`--lock-timeout`).
pub fn migrate_waiting(
    from: &dyn StateStore,
    to: &dyn StateStore,
    holder: &str,
    wait: std::time::Duration,
) -> Result<Migrated, StateError> {
    let source = from.writer_waiting(holder, wait)?;
    let mut target = to.writer_waiting(holder, wait)?;
    let existing = target.state();
    if existing.serial > 0 || !existing.targets.is_empty() {
        return Err(StateError::InvalidPath {
            path: PathBuf::from(to.location()),
            why: format!(
                "it already holds a state (lineage {}, serial {}, {} targets); migrate into an empty one",
                existing.lineage,
                existing.serial,
                existing.targets.len()
            ),
        });
    }
    let state = source.state().clone();
    if state.lineage.is_empty() {
        return Err(StateError::NotFound {
            location: from.location(),
            selector: "a state (nothing was ever recorded there)".to_owned(),
        });
    }
    target.replace(&state)?;
    target.compact()?;
    Ok(Migrated {
        lineage: state.lineage,
        serial: state.serial,
        targets: state.targets.len(),
    })
}

/// How often a writer waiting for the lock tries again.
pub const LOCK_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// The one writer of a state, holding its lock. Every method that changes the state makes the
/// change durable before it returns; after an error the change may be missing, never half-made.
pub trait StateWriter: Send {
    /// Where the state lives, for messages (as [`StateStore::location`]).
    fn location(&self) -> String;

    /// The state as loaded under the lock, with everything recorded through this writer since.
    fn state(&self) -> &AppliedState;

    /// Binds an unbound state to `binding` (serial + 1). Does nothing when it is already bound to
    /// the same one; refuses with [`StateError::BindingMismatch`] when bound to another.
    fn bind(&mut self, binding: &Binding) -> Result<(), StateError>;

    /// Records one batch (one call's successes, or one hand repair) durably: serial + 1.
    /// An empty batch records nothing.
    fn record(&mut self, records: &[Record]) -> Result<(), StateError>;

    /// Folds everything recorded so far into a fresh snapshot. Done automatically when the
    /// journal grows large; call it once at the end of a run too.
    fn compact(&mut self) -> Result<(), StateError>;

    /// Replaces the whole state with `state`, lineage, serial and binding included (`state
    /// migrate`), durably.
    fn replace(&mut self, state: &AppliedState) -> Result<(), StateError>;

    /// Turns true when this writer has lost the lock (its connection to a shared store broke, or
    /// another writer took over): it can record nothing more, and must send nothing more.
    /// `None` for a store whose lock cannot be lost while the process lives (a file).
    fn lost(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        None
    }

    /// Told how many calls are on their way, before a call goes out and after one ends: a
    /// shared store records that this writer may have calls in flight, so that a writer taking
    /// over later waits for them.
    fn calls_in_flight(&mut self, _n: usize) -> Result<(), StateError> {
        Ok(())
    }

    /// When this writer may send its first call: a writer that took the lock over from one that
    /// may still have had calls in flight waits until none of them can still land.
    fn sends_from(&self) -> Option<std::time::Instant> {
        None
    }
}

/// Everything that can go wrong with an applied state. Each error names where the state lives.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A state file could not be read, written, synced or renamed.
    #[error("{}: cannot {action}: {source}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A state file holds something this tool would not have written (torn last journal lines
    /// are not this: they are dropped silently, as a crash leaves them).
    #[error("{}{}: {why}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Corrupt {
        path: PathBuf,
        /// The 1-based journal line, where the problem is in one line.
        line: Option<usize>,
        why: String,
    },
    /// Another writer holds the lock.
    #[error(
        "{location}: the state is locked by {holder}; wait for it to finish (the lock goes when that process exits), or wait for it with --lock-timeout"
    )]
    Locked { location: String, holder: String },
    /// The state was applied with another base URL or app id than the one asked for.
    #[error(
        "{location} was applied with {recorded}, but this run uses {wanted}; refusing to mix them \
         (use that app's state with --state or FEEDBUTTONS_STATE)"
    )]
    BindingMismatch {
        location: String,
        recorded: Binding,
        wanted: Binding,
    },
    /// The database could not be reached, or refused a query.
    #[error("{location}: cannot {action}: {why}")]
    Database {
        location: String,
        action: &'static str,
        why: String,
    },
    /// This writer lost the lock (its connection broke, or another writer took over): it
    /// records and sends nothing more. What it recorded before stands.
    #[error(
        "{location}: {why}; this writer stopped (what it recorded stands; the next run goes on)"
    )]
    Lost { location: String, why: String },
    /// The path cannot hold a state, for instance because it collides with a companion file.
    #[error("{}: {why}", path.display())]
    InvalidPath { path: PathBuf, why: String },
    /// No recorded target matches what `state show` or `state rm` was asked for.
    #[error("{location}: no recorded target matches {selector}")]
    NotFound { location: String, selector: String },
    /// An earlier write through this writer failed after changing the state in memory, so it
    /// refuses further writes; what is on disk is intact.
    #[error(
        "{}: an earlier write to the state failed; start a new run (what is on disk is intact)",
        path.display()
    )]
    Poisoned { path: PathBuf },
}

/// The default state path for config directory `dir`: `dir/.feedbuttons/state.json`.
pub fn default_path(dir: &Path) -> PathBuf {
    dir.join(".feedbuttons").join("state.json")
}

/// Opens the store named by `spec` (the `--state` value or FEEDBUTTONS_STATE): a file path, or
/// a `postgres://` URL (its state named `default`). Nothing is read or created until the store
/// is used.
pub fn open(spec: &Path) -> Result<Box<dyn StateStore>, StateError> {
    open_named(spec, None)
}

/// Whether `spec` names a PostgreSQL state rather than a file.
pub fn is_postgres(spec: &Path) -> bool {
    spec.to_str()
        .is_some_and(|s| s.starts_with("postgres://") || s.starts_with("postgresql://"))
}

/// [`open`], with the name of the state inside a shared store (`--state-name`; only a
/// PostgreSQL store holds several).
pub fn open_named(spec: &Path, name: Option<&str>) -> Result<Box<dyn StateStore>, StateError> {
    if is_postgres(spec) {
        let url = spec.to_str().unwrap_or_default();
        return Ok(Box::new(postgres::PgStore::new(
            url,
            name.unwrap_or(postgres::DEFAULT_NAME),
        )?));
    }
    if let Some(name) = name {
        return Err(StateError::InvalidPath {
            path: spec.to_path_buf(),
            why: format!(
                "--state-name {name:?} names a state inside a PostgreSQL store; a state file holds one state (name the file instead)"
            ),
        });
    }
    Ok(Box::new(FileStore::new(spec)?))
}

/// A lock holder's description for `command`: `feedbuttons apply (pid 123, host ci-4)`.
pub fn holder(command: &str) -> String {
    format!(
        "feedbuttons {command} (pid {}, host {})",
        std::process::id(),
        host_name()
    )
}

/// The machine's name, for lock holders; best effort, since std has no portable call for it.
pub(crate) fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// A URL fit for messages: its password replaced, since messages end up in CI logs.
/// A password in the query (`?password=...`, as libpq takes it) is hidden too.
pub fn redact_url(s: &str) -> String {
    match url::Url::parse(s) {
        Ok(mut u) => {
            if u.password().is_some() {
                // Only fails for URLs that cannot have a password, which this one has.
                let _ = u.set_password(Some("***"));
            }
            let secret = |key: &str| matches!(key, "password" | "sslpassword");
            if u.query_pairs().any(|(k, _)| secret(&k)) {
                let pairs: Vec<(String, String)> = u
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if secret(&k) { "***".into() } else { v };
                        (k.into_owned(), v.into_owned())
                    })
                    .collect();
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            u.to_string()
        }
        Err(_) => "(an unparsable database URL)".to_owned(),
    }
}

/// How a target's audience is written in listings and selectors: `everyone` or `open_id:ou_...`.
pub fn audience_spec(target: &Target) -> String {
    match &target.audience {
        Audience::Everyone => "everyone".to_owned(),
        Audience::User { id_type, id } => format!("{id_type}:{id}"),
    }
}
