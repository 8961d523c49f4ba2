//! Applied state: the record of what was applied and succeeded. Takes the records of successful
//! calls (and hand repairs); gives back the `AppliedState` that plans are diffed against.
//!
//! The store sits behind two small traits so that a PostgreSQL store can follow the file store:
//! [`StateStore`] reads and locks, and the [`StateWriter`] it hands out is the one writer, which
//! records each call's successes durably before the next call goes out.
//!
//! - `file`: the file store (snapshot + journal + lock file beside each other).
//! - `snapshot`: the snapshot's JSON format (one copy of each distinct button list).
//! - `journal`: the journal's checksummed lines (one per recorded batch).
//! - `commands`: what `feedbuttons state list|show|rm|adopt` does, as pure functions.

pub mod commands;
pub mod file;
mod journal;
pub mod postgres;
pub mod snapshot;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::target::{Audience, ButtonList, Target};

pub use file::FileStore;

/// What was applied and what is known about it: every target's record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppliedState {
    /// A random id made when the state is first written; empty until then. Two states with
    /// different lineages are different histories, even at the same serial.
    pub lineage: String,
    /// Grows by one with every recorded change (a batch of records, a binding); 0 when new.
    pub serial: u64,
    /// The API endpoint and app the state was applied with; `None` until the first apply binds it.
    pub binding: Option<Binding>,
    /// Every target the tool sent something for and has not forgotten since. Equal lists share
    /// one allocation (all of them after a load, those of one batch after a record): a million
    /// targets typically hold a few hundred lists, not a million.
    pub targets: BTreeMap<Target, TargetRecord>,
}

/// What the state knows about one target: the list Feishu is known to show, and, rarely, that
/// the target follows its chat's whole-chat buttons or that something about it is pending.
///
/// A record with neither a shown list nor anything pending says nothing, and is not kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetRecord {
    /// The list the API last accepted for the target; `None` when it never accepted one (a
    /// target that is only pending).
    pub shown: Option<Arc<ButtonList>>,
    /// Boxed: almost every target has none, and a million targets stay 16 bytes each.
    pub extra: Option<Box<Extra>>,
}

/// The rare part of a [`TargetRecord`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extra {
    /// The target left the config and now shows its chat's whole-chat buttons (or none, when
    /// the chat has none): it keeps following them when they change.
    pub follows: bool,
    pub pending: Option<Pending>,
}

/// Why a target must be sent again whatever the config says, or is waiting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    pub status: PendingStatus,
    /// When it began, in Unix seconds.
    pub since: u64,
}

/// The three conditions a target can be in besides "applied".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PendingStatus {
    /// A call carrying `sent` went out and its answer never came (the process was killed, the
    /// connection dropped, no answer settled it): Feishu shows the recorded list or `sent`.
    /// Written before the call is sent.
    Uncertain { sent: Arc<ButtonList> },
    /// What the API accepted may have been overwritten since by another call of the tool, so
    /// the target is owed a re-send.
    Owed { reason: OwedReason },
    /// The API refused the user (listed in `failed_user_reasons`, e.g. not in the chat), so
    /// `goal` was not applied. Retried (by `watch` with a backoff) until the user can take it.
    Waiting {
        goal: Arc<ButtonList>,
        /// The refused call would have made the target a follower.
        goal_follows: bool,
        /// The API's reason, as it gave it.
        reason: String,
        /// What Feishu shows for it is not known: an earlier call went unanswered, or a
        /// whole-chat call may have overwritten it, before the API refused the user. Then the
        /// target is sent even when the config asks for the recorded list again.
        unsure: bool,
        /// Refusals so far.
        tries: u32,
        /// When the last refusal came, in Unix seconds.
        last_try: u64,
    },
}

/// Why a target is owed a re-send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OwedReason {
    /// Its chat's whole-chat buttons were sent, and the API does not say whether a whole-chat
    /// call overwrites users' own lists.
    WholeChat,
    /// A call for another id type in its chat (an old id's clear, during a move to another
    /// `user_id_type`) may have reached the same person.
    IdTypeMove,
}

impl OwedReason {
    pub fn as_str(self) -> &'static str {
        match self {
            OwedReason::WholeChat => "whole_chat",
            OwedReason::IdTypeMove => "id_type_move",
        }
    }

    /// For people: why the target is owed.
    pub fn describe(self) -> &'static str {
        match self {
            OwedReason::WholeChat => "the chat's whole-chat buttons were sent after it",
            OwedReason::IdTypeMove => {
                "a call under another id type in the chat may have reached the same person"
            }
        }
    }
}

impl PendingStatus {
    /// `uncertain`, `owed` or `waiting`.
    pub fn label(&self) -> &'static str {
        match self {
            PendingStatus::Uncertain { .. } => "uncertain",
            PendingStatus::Owed { .. } => "owed",
            PendingStatus::Waiting { .. } => "waiting",
        }
    }
}

impl TargetRecord {
    /// A target showing `list`, as the API accepted it, with nothing pending.
    pub fn applied(list: Arc<ButtonList>) -> TargetRecord {
        TargetRecord {
            shown: Some(list),
            extra: None,
        }
    }

    /// A record from its parts; `None` when it would say nothing (no list, nothing pending).
    pub fn new(
        shown: Option<Arc<ButtonList>>,
        follows: bool,
        pending: Option<Pending>,
    ) -> Option<TargetRecord> {
        if shown.is_none() && pending.is_none() {
            return None;
        }
        let extra = (follows || pending.is_some()).then(|| Box::new(Extra { follows, pending }));
        Some(TargetRecord { shown, extra })
    }

    /// The list the API last accepted, if any.
    pub fn shown(&self) -> Option<&ButtonList> {
        self.shown.as_deref()
    }

    /// Whether the target left the config and follows its chat's whole-chat buttons.
    pub fn follows(&self) -> bool {
        self.extra.as_ref().is_some_and(|e| e.follows)
    }

    /// What is pending, if anything.
    pub fn pending(&self) -> Option<&Pending> {
        self.extra.as_ref().and_then(|e| e.pending.as_ref())
    }

    /// Applied, with nothing pending: what the state records is what Feishu shows.
    pub fn is_settled(&self) -> bool {
        self.pending().is_none()
    }

    /// The same record with `pending` instead of what it had.
    pub fn with_pending(&self, pending: Option<Pending>) -> Option<TargetRecord> {
        TargetRecord::new(self.shown.clone(), self.follows(), pending)
    }
}

/// The base URL and app id a state belongs to (never the secret: secrets are not stored).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Binding {
    pub base_url: String,
    pub app_id: String,
}

impl Binding {
    /// A binding, with trailing slashes cut from the base URL so that `https://x/` and `https://x`
    /// are the same endpoint.
    pub fn new(base_url: impl Into<String>, app_id: impl Into<String>) -> Binding {
        let base_url: String = base_url.into();
        Binding {
            base_url: base_url.trim_end_matches('/').to_owned(),
            app_id: app_id.into(),
        }
    }
}

impl std::fmt::Display for Binding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "base URL {} and app id {}", self.base_url, self.app_id)
    }
}

/// One change to record: part of one call's outcome, or a hand repair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// The target shows `buttons`, as the API accepted them, and nothing about it is pending
    /// (an empty list: it was cleared, and is still tracked).
    Set { target: Target, buttons: ButtonList },
    /// The target's whole record is `record` (a follower, or something pending).
    Put {
        target: Target,
        record: TargetRecord,
    },
    /// The target is no longer tracked (its whole-chat buttons were cleared, or it was removed
    /// by hand).
    Forget { target: Target },
}

impl Record {
    /// The target the record is about.
    pub fn target(&self) -> &Target {
        match self {
            Record::Set { target, .. } | Record::Put { target, .. } | Record::Forget { target } => {
                target
            }
        }
    }

    /// `Put` for a record, `Forget` when there is none left to keep.
    pub fn put_or_forget(target: Target, record: Option<TargetRecord>) -> Record {
        match record {
            Some(record) => Record::Put { target, record },
            None => Record::Forget { target },
        }
    }
}

impl AppliedState {
    /// A state nothing was applied to yet: no lineage, serial 0, unbound, no targets.
    pub fn new() -> AppliedState {
        AppliedState::default()
    }

    /// Refuses to use this state with an endpoint or app other than the one it was applied with.
    /// An unbound state accepts any binding (the first apply binds it).
    pub fn check_binding(&self, wanted: &Binding) -> Result<(), StateError> {
        match &self.binding {
            Some(recorded) if recorded != wanted => Err(StateError::BindingMismatch {
                location: "the applied state".to_owned(),
                recorded: recorded.clone(),
                wanted: wanted.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Applies one batch of records in memory (the store makes it durable first). Equal button
    /// lists in the batch (one call's users) share one allocation.
    pub fn apply(&mut self, records: &[Record]) {
        let mut lists = Interner::default();
        for record in records {
            match record {
                Record::Set { target, buttons } => {
                    let buttons = lists.intern(buttons);
                    self.targets
                        .insert(target.clone(), TargetRecord::applied(buttons));
                }
                Record::Put { target, record } => {
                    self.targets
                        .insert(target.clone(), lists.intern_record(record));
                }
                Record::Forget { target } => {
                    self.targets.remove(target);
                }
            }
        }
    }

    /// The targets of one chat, whole-chat target first, then users in id order.
    pub fn chat<'a>(
        &'a self,
        chat_id: &'a str,
    ) -> impl Iterator<Item = (&'a Target, &'a TargetRecord)> + 'a {
        self.targets
            .range(Target::everyone(chat_id)..)
            .take_while(move |(t, _)| t.chat_id == chat_id)
    }

    /// The list the API last accepted for `target`, if it is recorded with one.
    pub fn shown(&self, target: &Target) -> Option<&ButtonList> {
        self.targets.get(target).and_then(TargetRecord::shown)
    }

    /// The distinct chat ids, sorted.
    pub fn chat_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = Vec::new();
        for t in self.targets.keys() {
            if ids.last() != Some(&t.chat_id.as_str()) {
                ids.push(&t.chat_id);
            }
        }
        ids
    }

    /// How many distinct button lists the targets show (each is stored once).
    pub fn distinct_button_lists(&self) -> usize {
        let mut by_pointer: HashMap<*const ButtonList, &ButtonList> = HashMap::new();
        for list in self.targets.values().filter_map(|r| r.shown.as_ref()) {
            by_pointer.insert(Arc::as_ptr(list), list);
        }
        by_pointer
            .into_values()
            .collect::<std::collections::HashSet<_>>()
            .len()
    }

    /// Targets by condition: followers, and targets uncertain, owed or waiting.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for record in self.targets.values() {
            let Some(extra) = &record.extra else { continue };
            c.followers += usize::from(extra.follows);
            match extra.pending.as_ref().map(|p| &p.status) {
                Some(PendingStatus::Uncertain { .. }) => c.uncertain += 1,
                Some(PendingStatus::Owed { .. }) => c.owed += 1,
                Some(PendingStatus::Waiting { .. }) => c.waiting += 1,
                None => {}
            }
        }
        c
    }
}

/// How many recorded targets are in each condition (see [`AppliedState::counts`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub followers: usize,
    pub uncertain: usize,
    pub owed: usize,
    pub waiting: usize,
}

/// Hands out one shared copy of each distinct button list it is given.
#[derive(Default)]
struct Interner {
    // A fast hash: a batch of a million records looks up a million lists.
    lists: foldhash::HashMap<ButtonList, Arc<ButtonList>>,
    /// The last list handed out: neighbouring records mostly carry the same list, and comparing
    /// is cheaper than hashing.
    last: Option<Arc<ButtonList>>,
}

impl Interner {
    fn intern(&mut self, list: &ButtonList) -> Arc<ButtonList> {
        if let Some(last) = &self.last
            && **last == *list
        {
            return Arc::clone(last);
        }
        let shared = match self.lists.get(list) {
            Some(shared) => Arc::clone(shared),
            None => {
                let shared = Arc::new(list.clone());
                self.lists.insert(list.clone(), Arc::clone(&shared));
                shared
            }
        };
        self.last = Some(Arc::clone(&shared));
        shared
    }

    /// `record` with its lists shared.
    fn intern_record(&mut self, record: &TargetRecord) -> TargetRecord {
        let mut out = record.clone();
        if let Some(shown) = &record.shown {
            out.shown = Some(self.intern(shown));
        }
        if let Some(pending) = out.extra.as_mut().and_then(|e| e.pending.as_mut()) {
            match &mut pending.status {
                PendingStatus::Uncertain { sent } => *sent = self.intern(sent),
                PendingStatus::Waiting { goal, .. } => *goal = self.intern(goal),
                PendingStatus::Owed { .. } => {}
            }
        }
        out
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_urls_name_their_store_without_the_password() {
        let store = open(Path::new(
            "postgres://bot:hunter2@db.example.com/feedbuttons",
        ))
        .expect("a PostgreSQL store");
        let location = store.location();
        assert!(location.contains("db.example.com"), "{location}");
        assert!(location.contains("\"default\""), "{location}");
        assert!(!location.contains("hunter2"), "{location}");
    }

    #[test]
    fn binding_ignores_trailing_slashes() {
        assert_eq!(
            Binding::new("https://open.feishu.cn/", "cli_a"),
            Binding::new("https://open.feishu.cn", "cli_a")
        );
    }

    #[test]
    fn check_binding_names_both() {
        let mut state = AppliedState::new();
        let a = Binding::new("https://open.feishu.cn", "cli_a");
        let b = Binding::new("https://open.larksuite.com", "cli_b");
        assert!(
            state.check_binding(&a).is_ok(),
            "an unbound state accepts any"
        );
        state.binding = Some(a.clone());
        assert!(state.check_binding(&a).is_ok());
        let msg = state.check_binding(&b).expect_err("mismatch").to_string();
        for part in ["open.feishu.cn", "cli_a", "open.larksuite.com", "cli_b"] {
            assert!(msg.contains(part), "{msg}");
        }
    }
}
