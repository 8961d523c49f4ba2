//! The app's calls-per-second budget, shared by every process that calls the API with one app
//! and keeps its state in one database: two repositories' CI jobs, a daemon and a CI job. Feishu
//! counts its limit per app, so they must share it.
//!
//! One row per app holds the time of the last slot handed out; taking a slot moves it on by one
//! interval (the rate limit's, with the client's slack), or to now when it lies in the past, and
//! says how long to wait for it, all in one statement on the database's clock. Callers are served
//! in the order they ask, whichever process they are in, and a process asks for its next slot
//! only once its last one is due (its calls queue in the process meanwhile): so processes take
//! turns slot by slot, rather than each taking as many slots ahead as it has calls in flight.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use tokio_postgres::{Client, Statement};

use super::conn::{PgUrl, describe};
use crate::feishu::client::Budget;

/// How long one slot may take to hand out (connecting included) before this process paces
/// itself alone for the call.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// After the database could not be reached, how long to pace alone before trying it again (so
/// that an outage costs one slow call, not one per call).
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// A budget shared through the database. It connects on first use, on the runtime that uses it,
/// and again after its connection breaks.
pub struct PgBudget {
    url: PgUrl,
    app: String,
    interval_ms: f64,
    conn: tokio::sync::Mutex<Conn>,
}

#[derive(Default)]
struct Conn {
    open: Option<(Client, Statement)>,
    /// No new connection before this instant.
    quiet_until: Option<Instant>,
    /// When the last slot this process took is due.
    last_slot: Option<tokio::time::Instant>,
}

const TAKE: &str =
    "INSERT INTO feedbuttons_rate_budget AS b (app, next_slot) VALUES ($1, clock_timestamp())
     ON CONFLICT (app) DO UPDATE SET next_slot =
       GREATEST(b.next_slot + $2 * interval '1 millisecond', clock_timestamp())
     RETURNING GREATEST(EXTRACT(EPOCH FROM (next_slot - clock_timestamp())) * 1000, 0)::float8";

impl PgBudget {
    /// The budget of the app `app_key` (its base URL and app id) at `per_second` calls a
    /// second. Nothing is connected until the first slot is asked for.
    pub fn new(url: &PgUrl, app_key: &str, per_second: u32) -> PgBudget {
        let interval = match per_second {
            0 => Duration::ZERO,
            n => (Duration::from_secs(1) + crate::feishu::ratelimit::WINDOW_SLACK) / n,
        };
        PgBudget {
            url: url.clone(),
            app: app_key.to_owned(),
            interval_ms: interval.as_secs_f64() * 1000.0,
            conn: tokio::sync::Mutex::new(Conn::default()),
        }
    }

    /// [`PgBudget::new`], connected now on the current runtime (an error if it cannot be).
    pub async fn connect(url: &PgUrl, app_key: &str, per_second: u32) -> Result<PgBudget, String> {
        let budget = PgBudget::new(url, app_key, per_second);
        let opened = budget.open().await?;
        budget.conn.lock().await.open = Some(opened);
        Ok(budget)
    }

    async fn open(&self) -> Result<(Client, Statement), String> {
        let mut client = self.url.connect().await?;
        super::conn::migrate(&mut client, &self.url.display).await?;
        let take = client.prepare(TAKE).await.map_err(|e| describe(&e))?;
        Ok((client, take))
    }

    async fn take(&self, conn: &mut Conn) -> Result<Duration, String> {
        if conn.open.as_ref().is_some_and(|(c, _)| c.is_closed()) {
            conn.open = None;
        }
        if conn.open.is_none() {
            if conn.quiet_until.is_some_and(|t| Instant::now() < t) {
                return Err("the state database could not be reached a moment ago".to_owned());
            }
            match self.open().await {
                Ok(opened) => conn.open = Some(opened),
                Err(why) => {
                    conn.quiet_until = Some(Instant::now() + RETRY_AFTER);
                    return Err(why);
                }
            }
        }
        let Some((client, take)) = &conn.open else {
            return Err("no connection to the state database".to_owned());
        };
        match client
            .query_one(take, &[&self.app, &self.interval_ms])
            .await
        {
            Ok(row) => {
                let wait_ms: f64 = row.get(0);
                Ok(Duration::from_secs_f64(wait_ms.max(0.0) / 1000.0))
            }
            Err(e) => {
                conn.open = None;
                Err(describe(&e))
            }
        }
    }
}

impl Budget for PgBudget {
    fn reserve(&self) -> Pin<Box<dyn Future<Output = Result<Duration, String>> + Send + '_>> {
        Box::pin(async move {
            // Callers of this process queue here in the order they came (the lock is fair).
            let mut conn = self.conn.lock().await;
            if let Some(due) = conn.last_slot {
                tokio::time::sleep_until(due).await;
            }
            match tokio::time::timeout(ANSWER_WITHIN, self.take(&mut conn)).await {
                Ok(Ok(wait)) => {
                    conn.last_slot = Some(tokio::time::Instant::now() + wait);
                    Ok(wait)
                }
                Ok(Err(why)) => Err(why),
                Err(_) => {
                    // A connection that hangs is dropped, and left alone for a while.
                    conn.open = None;
                    conn.quiet_until = Some(Instant::now() + RETRY_AFTER);
                    Err(format!(
                        "the state database did not hand out a slot within {} s",
                        ANSWER_WITHIN.as_secs()
                    ))
                }
            }
        })
    }
}
