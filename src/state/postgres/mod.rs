//! The PostgreSQL store: applied states shared by every machine that reaches one database. Takes
//! a `postgres://` URL and a state name; gives the `StateStore`, its one writer, and a rate budget
//! shared by every process that calls the API for one app.
//!
//! - `conn`: the URL, the password (URL, `PGPASSWORD`, the password file), TLS, the schema.
//! - `codec`: records <-> rows (one row per target, one per distinct button list).
//! - `writer`: the one writer: a session advisory lock on a connection of its own, a heartbeat,
//!   fencing by generation, and each record in one transaction.
//! - `budget`: the app's calls-per-second budget, shared through one row.
//!
//! Several independent states live in one database, each under its name (`--state-name`,
//! default `default`). The schema is created and migrated by whoever connects first
//! (`specs/state.md` documents it).

pub mod budget;
mod codec;
mod conn;
mod writer;

use std::future::Future;
use std::time::Duration;

use super::{AppliedState, StateError, StateStore, StateWriter};

pub use conn::{PgUrl, SCHEMA_VERSION, STALL_TIMEOUT};
pub use writer::{ATTEMPT_TIMEOUT, HEARTBEAT, LEASE, PgWriter};

/// The name of the state when none is given.
pub const DEFAULT_NAME: &str = "default";

/// A state in a PostgreSQL database.
#[derive(Clone, Debug)]
pub struct PgStore {
    url: PgUrl,
    name: String,
}

impl PgStore {
    /// The state `name` in the database at `url`. Nothing is connected yet.
    pub fn new(url: &str, name: &str) -> Result<PgStore, StateError> {
        let url = PgUrl::parse(url).map_err(|why| StateError::Database {
            location: super::redact_url(url),
            action: "use the state URL",
            why,
        })?;
        let plain = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !plain {
            return Err(StateError::Database {
                location: url.display.clone(),
                action: "name the state",
                why: format!(
                    "{name:?} is not a state name: use 1 to 64 letters, digits, '_', '-' or '.'"
                ),
            });
        }
        Ok(PgStore {
            url,
            name: name.to_owned(),
        })
    }

    /// The state's name in the database.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the database is (without the password).
    pub fn url(&self) -> &PgUrl {
        &self.url
    }

    fn error(&self, action: &'static str) -> impl Fn(String) -> StateError + '_ {
        move |why| StateError::Database {
            location: self.location(),
            action,
            why,
        }
    }
}

impl StateStore for PgStore {
    fn location(&self) -> String {
        format!("{} (state {:?})", self.url.display, self.name)
    }

    fn load(&self) -> Result<AppliedState, StateError> {
        let loaded = block_on(async {
            let mut client = self.url.connect().await.map_err(self.error("connect"))?;
            let schema = conn::migrate(&mut client, &self.url.display);
            conn::answered("preparing the schema", schema)
                .await
                .map_err(self.error("prepare the schema"))?;
            // One snapshot for the state's row, its lists and its targets: a writer may record
            // between the statements, and a reader takes no lock.
            let begin = async {
                let begin = client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
                begin.await.map_err(|e| conn::describe(&e))
            };
            conn::answered("starting to read the state", begin)
                .await
                .map_err(self.error("load the state"))?;
            let loaded = codec::load(&client, &self.name)
                .await
                .map_err(self.error("load the state"))?;
            let commit = async {
                client
                    .batch_execute("COMMIT")
                    .await
                    .map_err(|e| conn::describe(&e))
            };
            conn::answered("reading the state", commit)
                .await
                .map_err(self.error("load the state"))?;
            Ok(loaded)
        })
        .map_err(self.error("start the state connection"))??;
        Ok(loaded.map(|l| l.state).unwrap_or_default())
    }

    fn writer(&self, holder: &str) -> Result<Box<dyn StateWriter>, StateError> {
        self.writer_waiting(holder, Duration::ZERO)
    }

    fn writer_waiting(
        &self,
        holder: &str,
        wait: Duration,
    ) -> Result<Box<dyn StateWriter>, StateError> {
        Ok(Box::new(PgWriter::take(self, holder, wait)?))
    }
}

/// Runs `fut` to completion on a runtime of its own, on a thread of its own: the store's
/// methods are synchronous, and may be called from inside another runtime.
fn block_on<T: Send>(fut: impl Future<Output = T> + Send) -> Result<T, String> {
    std::thread::scope(|s| {
        let worker = s.spawn(|| {
            crate::runtime::on_this_thread()
                .map(|rt| rt.block_on(fut))
                .map_err(|e| e.to_string())
        });
        match worker.join() {
            Ok(out) => out,
            // A panic in the future is a bug, not a user's doing: let it be seen as one.
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}
