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
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
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

/// The connection thread's side.
struct Actor {
    store: PgStore,
    location: String,
    holder: String,
    generation: i64,
    lost: watch::Sender<bool>,
    in_flight: Arc<AtomicUsize>,
    busy_in_db: bool,
    /// When the lease was last renewed.
    renewed: Arc<Renewed>,
    /// Calls of the writer this one took over from can land until then: until it has passed,
    /// this writer says it is busy, so that a writer taking over from it waits for them too.
    inherited_until: Option<Instant>,
}

/// The instant the last successful heartbeat or write was *sent* (the server's `now()` of that
/// transaction is later, so the lease never outlives the heartbeat a taker reads), shared with
/// the lease's watchdog.
struct Renewed(std::sync::Mutex<Instant>);

impl Renewed {
    fn new() -> Renewed {
        Renewed(std::sync::Mutex::new(Instant::now()))
    }

    fn at(&self) -> Instant {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn elapsed(&self) -> Duration {
        self.at().elapsed()
    }

    /// Renews the lease from `sent`, the instant the successful request was sent.
    fn renew(&self, sent: Instant) {
        let mut at = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *at = (*at).max(sent);
    }
}

impl Actor {
    fn db_error(&self, action: &'static str) -> impl Fn(String) -> StateError + '_ {
        move |why| StateError::Database {
            location: self.location.clone(),
            action,
            why,
        }
    }

    async fn run(
        mut self,
        wait: Duration,
        ready: std_mpsc::Sender<Result<Taken, StateError>>,
        mut requests: mpsc::UnboundedReceiver<Request>,
    ) {
        let mut client = match self.connect_and_lock(wait).await {
            Ok((client, taken)) => {
                let _ = ready.send(Ok(taken));
                client
            }
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        self.renewed.renew(Instant::now());
        // The lease runs out on time even while a heartbeat or a write hangs on a silent
        // network (a partition that resets nothing): then the user must stop sending at once,
        // not when the write gives up.
        let watchdog = tokio::spawn(watch_lease(
            Arc::clone(&self.renewed),
            self.lost.clone(),
            self.location.clone(),
        ));
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                request = requests.recv() => {
                    let Some(request) = request else { break };
                    self.handle(&mut client, request).await;
                }
                _ = tick.tick() => self.heartbeat(&client).await,
            }
        }
        watchdog.abort();
        self.release(&client).await;
    }

    /// Whether this writer may have calls in flight, or inherited some that can still land.
    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) > 0
            || self.inherited_until.is_some_and(|t| Instant::now() < t)
    }

    fn set_lost(&self, why: &str) {
        if !*self.lost.borrow() {
            tracing::warn!(state = %self.location, "{why}: this writer stops");
            let _ = self.lost.send(true);
        }
    }

    async fn connect_and_lock(&mut self, wait: Duration) -> Result<(Client, Taken), StateError> {
        let name = self.store.name().to_owned();
        let mut client = self
            .store
            .url()
            .connect()
            .await
            .map_err(self.db_error("connect"))?;
        migrate(&mut client, &self.store.url().display)
            .await
            .map_err(self.db_error("prepare the schema"))?;
        // The server notices a dead peer in seconds, so that a lock held by a machine that
        // vanished is freed soon (best effort: these need no privilege, but a pooler may refuse).
        let _ = client
            .batch_execute(
                "SET tcp_keepalives_idle = 2; SET tcp_keepalives_interval = 1; \
                 SET tcp_keepalives_count = 2; SET tcp_user_timeout = 5000",
            )
            .await;
        let deadline = Instant::now() + wait;
        loop {
            let got: bool = client
                .query_one(
                    &format!("SELECT pg_try_advisory_lock({})", lock_key_sql()),
                    &[&name],
                )
                .await
                .map_err(|e| self.db_error("take the lock")(describe(&e)))?
                .get(0);
            if got {
                break;
            }
            if Instant::now() >= deadline {
                let holder: Option<String> = client
                    .query_opt(
                        "SELECT holder || ' since ' || to_char(holder_since AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM feedbuttons_states WHERE name = $1",
                        &[&name],
                    )
                    .await
                    .ok()
                    .flatten()
                    .and_then(|r| r.get(0));
                return Err(StateError::Locked {
                    location: self.location.clone(),
                    holder: holder
                        .unwrap_or_else(|| "another process (it has not said who yet)".to_owned()),
                });
            }
            tokio::time::sleep(
                super::super::LOCK_POLL.min(deadline.saturating_duration_since(Instant::now())),
            )
            .await;
        }
        let lineage = format!("{:032x}", rand::random::<u128>());
        let (generation, wait) = {
            let tx = client
                .transaction()
                .await
                .map_err(|e| self.db_error("take the lock")(describe(&e)))?;
            tx.execute(
                "INSERT INTO feedbuttons_states (name, lineage) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                &[&name, &lineage],
            )
            .await
            .map_err(|e| self.db_error("create the state")(describe(&e)))?;
            let old = tx
                .query_one(
                    "SELECT busy, EXTRACT(EPOCH FROM (now() - heartbeat))::float8 FROM feedbuttons_states WHERE name = $1 FOR UPDATE",
                    &[&name],
                )
                .await
                .map_err(|e| self.db_error("take the lock")(describe(&e)))?;
            let busy: bool = old.get(0);
            let age: Option<f64> = old.get(1);
            let bound = LEASE + ATTEMPT_TIMEOUT + CLOCK_MARGIN;
            let wait = match (busy, age) {
                (true, Some(age)) => bound.saturating_sub(Duration::from_secs_f64(age.max(0.0))),
                _ => Duration::ZERO,
            };
            // While the old writer's calls can still land, this one counts as busy: a writer
            // taking over from it (this one stopped or killed during its wait) waits too.
            let inherits = !wait.is_zero();
            let row = tx
                .query_one(
                    "UPDATE feedbuttons_states SET generation = generation + 1, holder = $2,
                     holder_command = $3, holder_host = $4, holder_pid = $5,
                     holder_since = now(), heartbeat = now(), busy = $6
                     WHERE name = $1 RETURNING generation",
                    &[
                        &name,
                        &self.holder,
                        &holder_command(&self.holder),
                        &super::super::host_name(),
                        &(std::process::id() as i32),
                        &inherits,
                    ],
                )
                .await
                .map_err(|e| self.db_error("take the lock")(describe(&e)))?;
            tx.commit()
                .await
                .map_err(|e| self.db_error("take the lock")(describe(&e)))?;
            (row.get::<_, i64>(0), wait)
        };
        self.generation = generation;
        if !wait.is_zero() {
            self.inherited_until = Some(Instant::now() + wait);
            self.busy_in_db = true;
        }
        let loaded = codec::load(&client, &name)
            .await
            .map_err(self.db_error("load the state"))?;
        let (state, list_ids) = match loaded {
            Some(l) => (l.state, l.list_ids),
            None => (AppliedState::new(), HashSet::new()),
        };
        Ok((
            client,
            Taken {
                state,
                list_ids,
                wait,
            },
        ))
    }

    async fn handle(&mut self, client: &mut Client, request: Request) {
        if *self.lost.borrow() {
            let why = "it lost the state's lock".to_owned();
            match request {
                Request::Idle => {}
                Request::Record { reply, .. } | Request::Bind { reply, .. } => {
                    let _ = reply.send(Err(why));
                }
                Request::Replace { reply, .. }
                | Request::Busy { reply }
                | Request::Compact { reply, .. } => {
                    let _ = reply.send(Err(why));
                }
            }
            return;
        }
        match request {
            Request::Record { rows, reply } => {
                let out = self.write(client, None, Some(&rows), false).await;
                let _ = reply.send(out);
            }
            Request::Bind { binding, reply } => {
                let out = self.write(client, Some(&binding), None, false).await;
                let _ = reply.send(out);
            }
            Request::Busy { reply } => {
                let out = self.write(client, None, None, true).await.map(drop);
                let _ = reply.send(out);
            }
            Request::Replace { state, reply } => {
                let out = self.replace(client, &state).await;
                let _ = reply.send(out);
            }
            Request::Idle => {
                if self.busy_in_db && self.in_flight.load(Ordering::SeqCst) == 0 {
                    self.heartbeat(client).await;
                }
            }
            Request::Compact { keep, reply } => {
                let out = self.compact(client, &keep).await;
                let _ = reply.send(out);
            }
        }
    }

    /// One fenced transaction: the state's row first (serial + 1, our generation only), then
    /// the rows. A write whose fate is unknown (a timeout) ends the writer.
    async fn write(
        &mut self,
        client: &mut Client,
        binding: Option<&Binding>,
        rows: Option<&Rows>,
        busy: bool,
    ) -> Result<u64, String> {
        let name = self.store.name().to_owned();
        let generation = self.generation;
        let sent = Instant::now();
        let work = async {
            let tx = client.transaction().await.map_err(|e| describe(&e))?;
            // A write renews the lease, so it renews the heartbeat a taker reads too.
            let row = tx
                .query_opt(
                    "UPDATE feedbuttons_states SET
                       serial = serial + CASE WHEN $3 THEN 0 ELSE 1 END,
                       busy = busy OR $3, heartbeat = now(),
                       base_url = COALESCE($4, base_url), app_id = COALESCE($5, app_id)
                     WHERE name = $1 AND generation = $2 RETURNING serial",
                    &[
                        &name,
                        &generation,
                        &busy,
                        &binding.map(|b| b.base_url.as_str()),
                        &binding.map(|b| b.app_id.as_str()),
                    ],
                )
                .await
                .map_err(|e| describe(&e))?;
            let Some(row) = row else {
                return Err(WriteError::Fenced);
            };
            if let Some(rows) = rows {
                rows.write(&tx, &name).await?;
            }
            tx.commit().await.map_err(|e| describe(&e))?;
            Ok(row.get::<_, i64>(0))
        };
        match tokio::time::timeout(WRITE_TIMEOUT, work).await {
            Ok(Ok(serial)) => {
                self.renewed.renew(sent);
                if busy {
                    self.busy_in_db = true;
                }
                Ok(u64::try_from(serial).unwrap_or(0))
            }
            Ok(Err(WriteError::Fenced)) => {
                self.set_lost("another writer took the state over");
                Err("another writer took the state over".to_owned())
            }
            Ok(Err(WriteError::Db(why))) => {
                if self.renewed.elapsed() > LEASE || client.is_closed() {
                    self.set_lost("the connection to the state database broke");
                }
                Err(why)
            }
            Err(_) => {
                // It may have committed or not: the next writer finds out from the database.
                self.set_lost("a write to the state database did not finish in time");
                Err(format!(
                    "the write did not finish within {} s",
                    WRITE_TIMEOUT.as_secs()
                ))
            }
        }
    }

    async fn replace(&mut self, client: &mut Client, state: &AppliedState) -> Result<(), String> {
        let name = self.store.name().to_owned();
        let generation = self.generation;
        let records = codec::whole_state(state);
        let sent = Instant::now();
        let tx = client.transaction().await.map_err(|e| describe(&e))?;
        let updated = tx
            .execute(
                "UPDATE feedbuttons_states SET lineage = $3, serial = $4, base_url = $5, app_id = $6,
                 heartbeat = now()
                 WHERE name = $1 AND generation = $2",
                &[
                    &name,
                    &generation,
                    &state.lineage,
                    &i64::try_from(state.serial).unwrap_or(i64::MAX),
                    &state.binding.as_ref().map(|b| b.base_url.as_str()),
                    &state.binding.as_ref().map(|b| b.app_id.as_str()),
                ],
            )
            .await
            .map_err(|e| describe(&e))?;
        if updated == 0 {
            self.set_lost("another writer took the state over");
            return Err("another writer took the state over".to_owned());
        }
        for table in ["feedbuttons_targets", "feedbuttons_lists"] {
            tx.execute(&format!("DELETE FROM {table} WHERE state = $1"), &[&name])
                .await
                .map_err(|e| describe(&e))?;
        }
        let mut known = HashSet::new();
        for chunk in records.chunks(20_000) {
            let chunk_sent = Instant::now();
            let rows = Rows::of(chunk, &known);
            rows.write(&tx, &name).await?;
            known.extend(rows.new_lists().cloned());
            // The session answered, so it still holds the lock: a long replacement (a big
            // state migrated) does not run the lease out.
            self.renewed.renew(chunk_sent);
        }
        tx.commit().await.map_err(|e| describe(&e))?;
        self.renewed.renew(sent);
        Ok(())
    }

    async fn compact(&mut self, client: &mut Client, keep: &[String]) -> Result<(), String> {
        let name = self.store.name().to_owned();
        let keep = keep.to_vec();
        let generation = self.generation;
        let tx = client.transaction().await.map_err(|e| describe(&e))?;
        let ours = tx
            .execute(
                "SELECT 1 FROM feedbuttons_states WHERE name = $1 AND generation = $2 FOR UPDATE",
                &[&name, &generation],
            )
            .await
            .map_err(|e| describe(&e))?;
        if ours == 0 {
            self.set_lost("another writer took the state over");
            return Err("another writer took the state over".to_owned());
        }
        tx.execute(
            "DELETE FROM feedbuttons_lists WHERE state = $1 AND NOT (id = ANY($2))",
            &[&name, &keep],
        )
        .await
        .map_err(|e| describe(&e))?;
        tx.commit().await.map_err(|e| describe(&e))
    }

    /// Renews the lease and says whether calls are in flight; a lease that ran out, or a
    /// generation taken by another writer, ends the writer.
    async fn heartbeat(&mut self, client: &Client) {
        if *self.lost.borrow() {
            return;
        }
        let busy = self.busy();
        let name = self.store.name().to_owned();
        let generation = self.generation;
        let sent = Instant::now();
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&name, &generation, &busy];
        let beat = client.execute(
            "UPDATE feedbuttons_states SET heartbeat = now(), busy = $3 WHERE name = $1 AND generation = $2",
            &params,
        );
        match tokio::time::timeout(HEARTBEAT * 2, beat).await {
            Ok(Ok(1)) => {
                self.renewed.renew(sent);
                self.busy_in_db = busy;
            }
            Ok(Ok(_)) => self.set_lost("another writer took the state over"),
            Ok(Err(_)) | Err(_) => {
                if self.renewed.elapsed() > LEASE || client.is_closed() {
                    self.set_lost("the connection to the state database broke");
                }
            }
        }
        if self.renewed.elapsed() > LEASE {
            self.set_lost("the state database did not answer within the lease");
        }
    }

    /// Lets the lock go and says so (best effort: the session's end frees it anyway).
    async fn release(&self, client: &Client) {
        if *self.lost.borrow() || client.is_closed() {
            return;
        }
        let name = self.store.name();
        let busy = self.busy();
        let done = async {
            let _ = client
                .execute(
                    "UPDATE feedbuttons_states SET holder = NULL, busy = $3 WHERE name = $1 AND generation = $2",
                    &[&name, &self.generation, &busy],
                )
                .await;
            let _ = client
                .execute(
                    &format!("SELECT pg_advisory_unlock({})", lock_key_sql()),
                    &[&name],
                )
                .await;
        };
        let _ = tokio::time::timeout(HEARTBEAT * 2, done).await;
    }
}

/// Counts the writer lost once its lease has run out without a renewal, whatever the
/// connection's thread is waiting for.
async fn watch_lease(renewed: Arc<Renewed>, lost: watch::Sender<bool>, location: String) {
    loop {
        let expires = renewed.at() + LEASE;
        if Instant::now() >= expires {
            if !*lost.borrow() {
                tracing::warn!(state = %location, "the state database did not answer within the lease: this writer stops");
                let _ = lost.send(true);
            }
            return;
        }
        tokio::time::sleep_until(expires.into()).await;
    }
}

/// Why a write did not happen.
enum WriteError {
    /// Another writer took over.
    Fenced,
    Db(String),
}

impl From<String> for WriteError {
    fn from(s: String) -> WriteError {
        WriteError::Db(s)
    }
}

/// `apply` from `feedbuttons apply (pid 1, host h)`.
fn holder_command(holder: &str) -> String {
    holder
        .strip_prefix("feedbuttons ")
        .and_then(|rest| rest.split(" (").next())
        .unwrap_or(holder)
        .to_owned()
}
