//! The one writer of a PostgreSQL state. Takes the store and a holder's description; gives a
//! `StateWriter` whose every record is one transaction, and which stops at once when it can no
//! longer be sure it is the only writer.
//!
//! How it stays the only writer:
//! - **The lock** is a session advisory lock, taken on a connection of its own (a session lock
//!   taken through a pool would leak to the next borrower) and held for as long as that session
//!   lives: a crashed process, a killed connection (`pg_terminate_backend`) or a server that
//!   notices a dead peer (the session asks for TCP keepalives of a few seconds) frees it.
//! - **The generation**, bumped by every writer that takes the lock, fences writes: every
//!   transaction first updates the state's row *where the generation is still ours*, so a writer
//!   that lost its session without noticing can record nothing once another took over.
//! - **The lease**: a heartbeat every [`HEARTBEAT`] renews it; a writer whose last successful
//!   heartbeat or write is older than [`LEASE`] (or whose generation was taken) counts itself
//!   lost, and tells its user, which stops sending (no new attempt starts).
//! - **Calls in flight**: before its first call goes out, a writer records `busy`; the heartbeat
//!   clears it once nothing is in flight. A writer taking over from a busy one waits until none
//!   of the old one's calls can still land: the old heartbeat, plus the lease (no attempt starts
//!   after it), plus [`ATTEMPT_TIMEOUT`] (the longest an attempt lasts), plus a second for clocks.
//!
//! The connection lives on a thread of its own with its own runtime: the writer's methods are
//! synchronous, called from the apply loop and from plain commands alike.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_postgres::Client;

use super::super::{AppliedState, Binding, Record, StateError, StateStore, StateWriter};
use super::PgStore;
use super::codec::{self, Rows};
use super::conn::{describe, migrate};

mod actor;
use actor::{Actor, Renewed};

/// How often the writer renews its lease.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a lease lasts without a successful heartbeat or write.
pub const LEASE: Duration = Duration::from_secs(3);
/// The longest one API attempt may take (the client's per-attempt timeout).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a write may take before the writer gives up on the database.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Margin for the clocks of two machines.
const CLOCK_MARGIN: Duration = Duration::from_secs(1);

enum Request {
    Record {
        rows: Rows,
        reply: std_mpsc::Sender<Result<u64, String>>,
    },
    Bind {
        binding: Binding,
        reply: std_mpsc::Sender<Result<u64, String>>,
    },
    Replace {
        state: Box<AppliedState>,
        reply: std_mpsc::Sender<Result<(), String>>,
    },
    Busy {
        reply: std_mpsc::Sender<Result<(), String>>,
    },
    Compact {
        keep: Vec<String>,
        reply: std_mpsc::Sender<Result<(), String>>,
    },
    /// Nothing is in flight any more: say so now rather than at the next heartbeat, so that a
    /// writer taking over from an idle one need not wait (nobody waits for the answer).
    Idle,
}

/// The one writer of a PostgreSQL state.
pub struct PgWriter {
    location: String,
    state: AppliedState,
    /// Ids of the lists the database holds for this state.
    list_ids: HashSet<String>,
    requests: Option<mpsc::UnboundedSender<Request>>,
    lost: watch::Receiver<bool>,
    in_flight: Arc<AtomicUsize>,
    busy_recorded: bool,
    sends_from: Option<Instant>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for PgWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgWriter")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// What the connection thread reports once it holds the lock.
struct Taken {
    state: AppliedState,
    list_ids: HashSet<String>,
    wait: Duration,
}

/// The session advisory lock key of a state.
fn lock_key_sql() -> &'static str {
    "hashtextextended('feedbuttons state ' || $1, 0)"
}

impl PgWriter {
    /// Takes the lock of `store`'s state (waiting up to `wait` for another writer to finish)
    /// and loads the state under it.
    pub fn take(store: &PgStore, holder: &str, wait: Duration) -> Result<PgWriter, StateError> {
        let location = store.location();
        let (ready_tx, ready_rx) = std_mpsc::channel::<Result<Taken, StateError>>();
        let (req_tx, req_rx) = mpsc::unbounded_channel::<Request>();
        let (lost_tx, lost_rx) = watch::channel(false);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let actor = Actor {
            store: store.clone(),
            location: location.clone(),
            holder: holder.to_owned(),
            generation: 0,
            lost: lost_tx,
            in_flight: Arc::clone(&in_flight),
            busy_in_db: false,
            renewed: Arc::new(Renewed::new()),
            inherited_until: None,
        };
        let thread = std::thread::Builder::new()
            .name("feedbuttons-state".to_owned())
            .spawn(move || {
                let rt = match crate::runtime::on_this_thread() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(StateError::Database {
                            location: actor.location.clone(),
                            action: "start the state connection",
                            why: e.to_string(),
                        }));
                        return;
                    }
                };
                rt.block_on(actor.run(wait, ready_tx, req_rx));
            })
            .map_err(|e| StateError::Database {
                location: location.clone(),
                action: "start the state connection",
                why: e.to_string(),
            })?;
        let taken = match ready_rx.recv() {
            Ok(Ok(taken)) => taken,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(StateError::Database {
                    location,
                    action: "take the lock",
                    why: "the state connection ended unexpectedly".to_owned(),
                });
            }
        };
        if !taken.wait.is_zero() {
            tracing::info!(
                wait_ms = taken.wait.as_millis() as u64,
                "took the state over from a writer that may still have calls in flight; waiting before the first call"
            );
        }
        Ok(PgWriter {
            location,
            state: taken.state,
            list_ids: taken.list_ids,
            requests: Some(req_tx),
            lost: lost_rx,
            in_flight,
            busy_recorded: false,
            sends_from: (!taken.wait.is_zero()).then(|| Instant::now() + taken.wait),
            thread: Some(thread),
        })
    }

    fn lost_error(&self) -> StateError {
        StateError::Lost {
            location: self.location.clone(),
            why: "it lost the state's lock (the connection broke, or another writer took over)"
                .to_owned(),
        }
    }

    /// Sends a request to the connection thread and waits for its answer.
    fn ask<T>(
        &mut self,
        action: &'static str,
        make: impl FnOnce(std_mpsc::Sender<Result<T, String>>) -> Request,
    ) -> Result<T, StateError> {
        if *self.lost.borrow() {
            return Err(self.lost_error());
        }
        let (tx, rx) = std_mpsc::channel();
        let sent = self
            .requests
            .as_ref()
            .is_some_and(|r| r.send(make(tx)).is_ok());
        if !sent {
            return Err(self.lost_error());
        }
        match rx.recv() {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(why)) if *self.lost.borrow() => Err(StateError::Lost {
                location: self.location.clone(),
                why,
            }),
            Ok(Err(why)) => Err(StateError::Database {
                location: self.location.clone(),
                action,
                why,
            }),
            Err(_) => Err(self.lost_error()),
        }
    }
}

/// The ids of every list `state` refers to.
fn referenced_ids(state: &AppliedState) -> HashSet<String> {
    let mut by_pointer: std::collections::HashMap<*const crate::target::ButtonList, String> =
        Default::default();
    let mut ids = HashSet::new();
    let mut note = |l: &Arc<crate::target::ButtonList>| {
        let id = by_pointer
            .entry(Arc::as_ptr(l))
            .or_insert_with(|| codec::list_id(l));
        ids.insert(id.clone());
    };
    for r in state.targets.values() {
        if let Some(s) = &r.shown {
            note(s);
        }
        if let Some(p) = r.pending() {
            match &p.status {
                super::super::PendingStatus::Uncertain { sent } => note(sent),
                super::super::PendingStatus::Waiting { goal, .. } => note(goal),
                super::super::PendingStatus::Owed { .. } => {}
            }
        }
    }
    ids
}

impl StateWriter for PgWriter {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn state(&self) -> &AppliedState {
        &self.state
    }

    fn bind(&mut self, binding: &Binding) -> Result<(), StateError> {
        match &self.state.binding {
            Some(b) if b == binding => return Ok(()),
            Some(b) => {
                return Err(StateError::BindingMismatch {
                    location: self.location.clone(),
                    recorded: b.clone(),
                    wanted: binding.clone(),
                });
            }
            None => {}
        }
        let binding = binding.clone();
        let b = binding.clone();
        let serial = self.ask("bind the state", |reply| Request::Bind {
            binding: b,
            reply,
        })?;
        self.state.binding = Some(binding);
        self.state.serial = serial;
        Ok(())
    }

    fn record(&mut self, records: &[Record]) -> Result<(), StateError> {
        if records.is_empty() {
            return Ok(());
        }
        let rows = Rows::of(records, &self.list_ids);
        let new_lists: Vec<String> = rows.new_lists().cloned().collect();
        let serial = self.ask("record", |reply| Request::Record { rows, reply })?;
        self.list_ids.extend(new_lists);
        self.state.apply(records);
        self.state.serial = serial;
        Ok(())
    }

    fn compact(&mut self) -> Result<(), StateError> {
        let keep: Vec<String> = referenced_ids(&self.state).into_iter().collect();
        let kept: HashSet<String> = keep.iter().cloned().collect();
        self.ask("clean up unused button lists", |reply| Request::Compact {
            keep,
            reply,
        })?;
        self.list_ids = kept;
        Ok(())
    }

    fn replace(&mut self, state: &AppliedState) -> Result<(), StateError> {
        let boxed = Box::new(state.clone());
        self.ask("replace the state", |reply| Request::Replace {
            state: boxed,
            reply,
        })?;
        self.state = state.clone();
        self.list_ids = referenced_ids(&self.state);
        Ok(())
    }

    fn lost(&self) -> Option<watch::Receiver<bool>> {
        Some(self.lost.clone())
    }

    fn calls_in_flight(&mut self, n: usize) -> Result<(), StateError> {
        self.in_flight.store(n, Ordering::SeqCst);
        if n == 0 {
            if std::mem::take(&mut self.busy_recorded)
                && let Some(requests) = &self.requests
            {
                // Recorded on the connection's thread without waiting for it (the heartbeat
                // would record it within a second anyway).
                let _ = requests.send(Request::Idle);
            }
            return Ok(());
        }
        if !self.busy_recorded {
            self.ask("record calls in flight", |reply| Request::Busy { reply })?;
            self.busy_recorded = true;
        }
        Ok(())
    }

    fn sends_from(&self) -> Option<Instant> {
        self.sends_from
    }
}

impl Drop for PgWriter {
    fn drop(&mut self) {
        // Closing the channel ends the connection thread, which unlocks and disconnects.
        self.requests = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
