//! `watch --resolve-every`: the daemon looks the committed lock's directory sources
//! (`members_of`, `department`) up again on a timer, and reconciles with their live members, so
//! that someone who joins the on-call chat gets its buttons without a commit. Emails and mobiles
//! stay as the lock has them (a person's id does not change). How far the live members are from
//! the committed lock is shown on `/status` (`lock_drift`) and as `feedbuttons_lock_drift_users`.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::config::people::Wanted;
use crate::feishu::client::directory::Directory;
use crate::lock::{LOCK_FILE, Lock};

/// How far the live directory sources are from the committed lock.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LockDrift {
    /// User ids the live sources hold and the committed lock does not, sorted.
    pub added: Vec<String>,
    /// User ids the committed lock holds and the live sources do not, sorted.
    pub removed: Vec<String>,
    /// The sources whose members differ (`members_of: oc_...`).
    pub sources: Vec<String>,
    /// When the directory was last asked (RFC 3339).
    pub resolved_at: String,
    /// Why the last look-up failed, if it did (the previous members stay in use).
    pub error: Option<String>,
}

impl LockDrift {
    pub fn users(&self) -> usize {
        self.added.len() + self.removed.len()
    }
}

/// The live members, and when to ask again.
pub struct LivePeople {
    every: Duration,
    directory: Arc<Directory>,
    next: Instant,
    /// The committed lock with its sources' members as last found; `None` before the first
    /// look-up or when the config has no lock.
    live: Option<Lock>,
}

/// What one look-up found, for [`LivePeople::take`].
pub struct Found {
    /// The lock to reconcile with from now on; `None` to keep the last (the look-up failed).
    live: Option<Option<Lock>>,
    drift: LockDrift,
}

impl Found {
    fn failed(drift: LockDrift) -> Found {
        Found { live: None, drift }
    }
}

impl LivePeople {
    pub fn new(every: Duration, directory: Directory) -> LivePeople {
        LivePeople {
            every,
            directory: Arc::new(directory),
            next: Instant::now(),
            live: None,
        }
    }

    /// When the next look-up is due.
    pub fn due_at(&self) -> Instant {
        self.next
    }

    /// The lock to reconcile with: the committed one with its sources' live members.
    pub fn lock(&self) -> Option<Lock> {
        self.live.clone()
    }

    /// Starts asking the directory again for the members of every source the committed lock
    /// (in `dir`) holds; the next look-up is due [`LivePeople::new`]'s `every` from now. The
    /// look-up borrows nothing: the daemon runs it as a task of its own, so that a directory
    /// that is slow or does not answer holds back no reconcile (they go on with the members
    /// last found) and no stop. Its result goes to [`LivePeople::take`].
    pub fn look_up(&mut self, dir: PathBuf) -> impl Future<Output = Found> + Send + 'static {
        self.next = Instant::now() + self.every;
        let directory = Arc::clone(&self.directory);
        let last = self.live.clone();
        async move { look_up(&directory, &dir, last.as_ref()).await }
    }

    /// Takes a look-up's result in. Says whether the members to reconcile with changed, and
    /// the drift.
    pub fn take(&mut self, found: Found) -> (bool, LockDrift) {
        match found.live {
            None => (false, found.drift),
            Some(live) => {
                let changed = self.live != live;
                self.live = live;
                (changed, found.drift)
            }
        }
    }
}

/// One look-up of the committed lock's sources in `dir`; `last` is the lock the daemon
/// reconciles with now (a source the directory lists as empty keeps its members there).
async fn look_up(directory: &Directory, dir: &Path, last: Option<&Lock>) -> Found {
    let resolved_at = crate::time::rfc3339_seconds(crate::time::unix_secs_now());
    let fail = |error: String| LockDrift {
        resolved_at: resolved_at.clone(),
        error: Some(error),
        ..LockDrift::default()
    };
    let committed = match Lock::load(dir) {
        Ok(Some(lock)) => lock,
        Ok(None) => {
            return Found {
                live: Some(None),
                drift: LockDrift {
                    resolved_at,
                    ..LockDrift::default()
                },
            };
        }
        Err(e) => return Found::failed(fail(e.to_string())),
    };
    let mut wanted = Wanted::default();
    for (source, by_type) in committed.sources() {
        wanted
            .sources
            .insert(source, by_type.keys().copied().collect());
    }
    let resolution = match crate::resolve::resolve(directory, &wanted).await {
        Ok(r) => r,
        Err(e) => return Found::failed(fail(e.to_string())),
    };
    let mut live = committed.clone();
    let mut failed: Vec<String> = resolution
        .failed_sources
        .iter()
        .map(|(s, why)| format!("{s}: {why}"))
        .collect();
    for (source, by_type) in resolution.lock.sources() {
        for (t, ids) in by_type {
            let had = |l: &Lock| l.source(&source).and_then(|m| m.get(t)).cloned();
            let committed_ids = had(&committed).unwrap_or_default();
            // A listing of nobody where the lock lists people is more likely a broken
            // answer than everyone leaving at once: taking it would take the buttons of
            // the whole set. The members last found stay; a committed lock can empty it.
            if ids.is_empty() && !committed_ids.is_empty() {
                failed.push(format!(
                    "{source}: the directory lists nobody ({t}), where {LOCK_FILE} lists {}; \
                         its members stay as they were (if it is empty, run `feedbuttons resolve` \
                         and commit the lock)",
                    crate::text::count(committed_ids.len(), "person", "people")
                ));
                let last = last.and_then(had).unwrap_or(committed_ids);
                live.set_source(&source, *t, last);
                continue;
            }
            live.set_source(&source, *t, ids.clone());
        }
    }
    live.names.extend(resolution.lock.names.clone());
    // Ids the directory gave that are not ids of their type (checked as a committed lock's are)
    // are its mistake: the members last found stay.
    if let Err(why) = live.check() {
        return Found::failed(fail(format!("the directory gave {why}")));
    }
    let mut drift = drift(&committed, &live);
    drift.resolved_at = resolved_at;
    if !failed.is_empty() {
        // Those sources keep the committed lock's members (an empty listing: the last).
        drift.error = Some(failed.join("; "));
    }
    Found {
        live: Some(Some(live)),
        drift,
    }
}

/// The lock to reconcile with: the committed lock in `dir` as it stands now (a pull may have
/// brought a new one since the last look-up, naming new people), each of its sources with the
/// members `live` (the last look-up) found for it, if any. `None` when `dir` has no lock or
/// one that cannot be read: the config's loading then reads it, and says so.
pub fn onto_committed(live: &Lock, dir: &Path) -> Option<Lock> {
    let mut lock = Lock::load(dir).ok()??;
    let found: Vec<_> = lock
        .sources()
        .flat_map(|(source, by_type)| {
            let live = live.source(&source);
            by_type
                .keys()
                .filter_map(|t| Some((source.clone(), *t, live?.get(t)?.clone())))
                .collect::<Vec<_>>()
        })
        .collect();
    for (source, t, ids) in found {
        lock.set_source(&source, t, ids);
    }
    for (id, name) in &live.names {
        lock.names.entry(id.clone()).or_insert_with(|| name.clone());
    }
    Some(lock)
}

/// The ids `live`'s sources add to and remove from `committed`'s, and which sources differ.
fn drift(committed: &Lock, live: &Lock) -> LockDrift {
    let ids = |l: &Lock| -> BTreeSet<String> {
        l.sources()
            .flat_map(|(_, by_type)| by_type.values().flatten().cloned().collect::<Vec<_>>())
            .collect()
    };
    let (old, new) = (ids(committed), ids(live));
    let sources = live
        .sources()
        .filter(|(s, by_type)| committed.source(s) != Some(by_type))
        .map(|(s, _)| s.to_string())
        .collect();
    LockDrift {
        added: new.difference(&old).cloned().collect(),
        removed: old.difference(&new).cloned().collect(),
        sources,
        resolved_at: String::new(),
        error: None,
    }
}
