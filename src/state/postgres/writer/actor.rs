//! The connection thread's side of the writer: it holds the lock's session, renews the lease,
//! and runs each request in its own fenced transaction.

use super::*;

/// The connection thread's side.
pub(super) struct Actor {
    pub(super) store: PgStore,
    pub(super) location: String,
    pub(super) holder: String,
    pub(super) generation: i64,
    pub(super) lost: watch::Sender<bool>,
    pub(super) in_flight: Arc<AtomicUsize>,
    pub(super) busy_in_db: bool,
    /// When the lease was last renewed.
    pub(super) renewed: Arc<Renewed>,
    /// Calls of the writer this one took over from can land until then: until it has passed,
    /// this writer says it is busy, so that a writer taking over from it waits for them too.
    pub(super) inherited_until: Option<Instant>,
}

/// The instant the last successful heartbeat or write was *sent* (the server's `now()` of that
/// transaction is later, so the lease never outlives the heartbeat a taker reads), shared with
/// the lease's watchdog.
pub(super) struct Renewed(std::sync::Mutex<Instant>);

impl Renewed {
    pub(super) fn new() -> Renewed {
        Renewed(std::sync::Mutex::new(Instant::now()))
    }

    fn at(&self) -> Instant {
        *crate::sync::guard(&self.0)
    }

    fn elapsed(&self) -> Duration {
        self.at().elapsed()
    }

    /// Renews the lease from `sent`, the instant the successful request was sent.
    fn renew(&self, sent: Instant) {
        let mut at = crate::sync::guard(&self.0);
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

    pub(super) async fn run(
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
                crate::state::LOCK_POLL.min(deadline.saturating_duration_since(Instant::now())),
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
                        &crate::state::host_name(),
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
