//! The app's calls-per-second budget, shared by every process that calls the API with one app
//! and keeps its state in one database: two repositories' CI jobs, a daemon and a CI job. Feishu
//! counts its limit per app, so they must share it.
//!
//! One row per app holds the time of the last slot handed out; taking a slot moves it on by one
//! interval (the rate limit's, with the client's slack), or to now when it lies in the past, and
//! says how long to wait for it, all in one statement on the database's clock. Callers are served
//! in the order they ask, whichever process they are in, so the budget is shared fairly.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio_postgres::{Client, Statement};

use super::conn::{PgUrl, describe};
use crate::feishu::client::Budget;

/// A budget shared through the database.
pub struct PgBudget {
    client: Client,
    take: Statement,
    app: String,
    interval_ms: f64,
}

impl PgBudget {
    /// The budget of the app `app_key` (its base URL and app id) at `per_second` calls a
    /// second, through a connection of its own on the current runtime.
    pub async fn connect(url: &PgUrl, app_key: &str, per_second: u32) -> Result<PgBudget, String> {
        let mut client = url.connect().await?;
        super::conn::migrate(&mut client, &url.display).await?;
        let take = client
            .prepare(
                "INSERT INTO feedbuttons_rate_budget AS b (app, next_slot) VALUES ($1, clock_timestamp())
                 ON CONFLICT (app) DO UPDATE SET next_slot =
                   GREATEST(b.next_slot + $2 * interval '1 millisecond', clock_timestamp())
                 RETURNING GREATEST(EXTRACT(EPOCH FROM (next_slot - clock_timestamp())) * 1000, 0)::float8",
            )
            .await
            .map_err(|e| describe(&e))?;
        let interval = match per_second {
            0 => Duration::ZERO,
            n => (Duration::from_secs(1) + crate::feishu::ratelimit::WINDOW_SLACK) / n,
        };
        Ok(PgBudget {
            client,
            take,
            app: app_key.to_owned(),
            interval_ms: interval.as_secs_f64() * 1000.0,
        })
    }
}

impl Budget for PgBudget {
    fn reserve(&self) -> Pin<Box<dyn Future<Output = Result<Duration, String>> + Send + '_>> {
        Box::pin(async move {
            let row = tokio::time::timeout(
                Duration::from_secs(2),
                self.client
                    .query_one(&self.take, &[&self.app, &self.interval_ms]),
            )
            .await
            .map_err(|_| "the state database did not answer within 2 s".to_owned())?
            .map_err(|e| describe(&e))?;
            let wait_ms: f64 = row.get(0);
            Ok(Duration::from_secs_f64(wait_ms.max(0.0) / 1000.0))
        })
    }
}
