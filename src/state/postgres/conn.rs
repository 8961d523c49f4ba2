//! Reaching the database: a `postgres://` URL -> connection settings (the password from the
//! URL, `PGPASSWORD` or the password file), TLS with rustls, a connection, and the schema.
//!
//! URL parameters understood: `sslmode` (`disable`, `prefer` (the default), `require`,
//! `verify-ca`, `verify-full`: with TLS the server's certificate is always verified, against the
//! bundled web roots or `sslrootcert`), `sslrootcert` (a PEM file of CA certificates),
//! `connect_timeout` (seconds), `application_name`, `host` (a host or a Unix socket directory,
//! as libpq takes it) and `port`. Anything else is refused by name, so a typo never goes unseen.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Config};

/// How long connecting may take, unless the URL says otherwise.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long what a session sent may stay unacknowledged by the server before the session is
/// given up (Linux's `TCP_USER_TIMEOUT`; elsewhere the keepalives alone). A live server
/// acknowledges within milliseconds, also during a long load.
pub const TCP_USER_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a reader waits for each step of a load (a statement's whole answer, or the next
/// part of the targets it streams) before it gives up: a network that silently drops what
/// passes (a proxy or a firewall that stops forwarding, where the peer's kernel keeps
/// acknowledging) would otherwise hold `plan` or a daemon's load forever. The targets, the one
/// part that grows with the state, are timed part by part from the last one that arrived, so a
/// big state that keeps arriving is never cut; the schema step includes waiting for another
/// process's migration.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(15);

/// `step`, unless the server stays silent for [`STALL_TIMEOUT`]: then an error naming `what`.
pub async fn answered<T, E: std::fmt::Display>(
    what: &str,
    step: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(STALL_TIMEOUT, step).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "the database answered nothing for {} s while {what} (is the network to it cut, or a lock held?)",
            STALL_TIMEOUT.as_secs()
        )),
    }
}

/// Where a state database is and how to reach it. `Debug` and `display` never show the password.
#[derive(Clone)]
pub struct PgUrl {
    /// The URL with its password replaced, for messages.
    pub display: String,
    config: Config,
    tls: Tls,
}

#[derive(Clone)]
enum Tls {
    None,
    /// Try TLS, fall back to plain (`prefer`); or insist (`require` and up). Either way the
    /// certificate is verified against these roots.
    Rustls(Arc<rustls::ClientConfig>),
}

impl std::fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgUrl")
            .field("display", &self.display)
            .finish_non_exhaustive()
    }
}

/// Why a URL cannot be used; says what, never with the password.
pub type UrlError = String;

const PARAMS: &[&str] = &[
    "sslmode",
    "sslrootcert",
    "connect_timeout",
    "application_name",
    "host",
    "port",
];

impl PgUrl {
    /// Parses `url`; the password comes from it, else `PGPASSWORD`, else the password file
    /// (`PGPASSFILE`, or `~/.pgpass`).
    pub fn parse(url: &str) -> Result<PgUrl, UrlError> {
        let display = super::super::redact_url(url);
        let u = url::Url::parse(url).map_err(|e| format!("{display}: not a URL: {e}"))?;
        if !matches!(u.scheme(), "postgres" | "postgresql") {
            return Err(format!("{display}: expected postgres:// or postgresql://"));
        }
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(std::borrow::Cow::into_owned)
                .map_err(|_| format!("{display}: a part of the URL is not UTF-8"))
        };
        let mut config = Config::new();
        // Which process a session belongs to, for pg_stat_activity (and whoever must cut it).
        config.application_name(format!("feedbuttons pid {}", std::process::id()));
        config.connect_timeout(CONNECT_TIMEOUT);
        // Notice a dead server within seconds, not hours (the lock holder relies on it): an idle
        // session probes after 5 s and gives up after 3 unanswered probes 2 s apart; a session
        // waiting on a statement or a load whose packets are lost (a partition that drops them
        // instead of refusing) gives up once what it sent is unacknowledged for
        // `TCP_USER_TIMEOUT`. Either way the call fails with an error instead of hanging.
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(5));
        config.keepalives_interval(Duration::from_secs(2));
        config.keepalives_retries(3);
        config.tcp_user_timeout(TCP_USER_TIMEOUT);
        let user = match u.username() {
            "" => std::env::var("PGUSER").ok().filter(|s| !s.is_empty()),
            name => Some(decode(name)?),
        };
        let user = user.unwrap_or_else(|| "postgres".to_owned());
        config.user(&user);
        let mut hosts: Vec<String> = Vec::new();
        if let Some(h) = u.host_str().filter(|h| !h.is_empty()) {
            hosts.push(decode(h.trim_start_matches('[').trim_end_matches(']'))?);
        }
        let mut port = u.port();
        let dbname = decode(u.path().trim_start_matches('/'))?;
        let dbname = if dbname.is_empty() {
            user.clone()
        } else {
            dbname
        };
        config.dbname(&dbname);
        let mut sslmode = "prefer".to_owned();
        let mut root_cert: Option<PathBuf> = None;
        for (key, value) in u.query_pairs() {
            match key.as_ref() {
                "sslmode" => sslmode = value.into_owned(),
                "sslrootcert" => root_cert = Some(PathBuf::from(value.as_ref())),
                "connect_timeout" => {
                    let secs: u64 = value
                        .parse()
                        .map_err(|_| format!("{display}: connect_timeout must be whole seconds"))?;
                    config.connect_timeout(Duration::from_secs(secs.max(1)));
                }
                "application_name" => {
                    config.application_name(value.as_ref());
                }
                "host" => hosts.push(value.into_owned()),
                "port" => {
                    port = Some(
                        value
                            .parse()
                            .map_err(|_| format!("{display}: port must be a number"))?,
                    )
                }
                other => {
                    return Err(format!(
                        "{display}: unknown parameter {other:?} (known: {})",
                        PARAMS.join(", ")
                    ));
                }
            }
        }
        if hosts.is_empty() {
            hosts.push("localhost".to_owned());
        }
        for h in &hosts {
            if h.starts_with('/') {
                #[cfg(unix)]
                config.host_path(h);
                #[cfg(not(unix))]
                return Err(format!("{display}: Unix socket hosts need a Unix system"));
            } else {
                config.host(h);
            }
        }
        let port = port.unwrap_or(5432);
        config.port(port);
        let password = match u.password() {
            Some(p) => Some(decode(p)?),
            None => std::env::var("PGPASSWORD")
                .ok()
                .filter(|p| !p.is_empty())
                .or_else(|| pgpass(&hosts[0], port, &dbname, &user)),
        };
        if let Some(p) = password {
            config.password(p);
        }
        let tls = match sslmode.as_str() {
            "disable" => {
                config.ssl_mode(SslMode::Disable);
                Tls::None
            }
            "allow" | "prefer" => {
                config.ssl_mode(SslMode::Prefer);
                Tls::Rustls(rustls_config(root_cert.as_deref(), &display)?)
            }
            "require" | "verify-ca" | "verify-full" => {
                config.ssl_mode(SslMode::Require);
                Tls::Rustls(rustls_config(root_cert.as_deref(), &display)?)
            }
            other => {
                return Err(format!(
                    "{display}: sslmode {other:?} is not one of disable, prefer, require, verify-ca, verify-full"
                ));
            }
        };
        Ok(PgUrl {
            display,
            config,
            tls,
        })
    }

    /// A new connection, driven by a task on the current runtime.
    ///
    /// The connect timeout bounds the whole connection (TLS and authentication included), not
    /// only the TCP connect: a server that accepts connections but never answers (a stopped
    /// process, a proxy with nothing behind it) would otherwise hang every command.
    pub async fn connect(&self) -> Result<Client, String> {
        let per_host = self
            .config
            .get_connect_timeout()
            .copied()
            .unwrap_or(CONNECT_TIMEOUT);
        let hosts = u32::try_from(self.config.get_hosts().len().max(1)).unwrap_or(u32::MAX);
        let within = per_host.saturating_mul(hosts);
        match tokio::time::timeout(within, self.connect_unbounded()).await {
            Ok(connected) => connected,
            Err(_) => Err(format!(
                "the server did not complete the connection within {} s (it accepts connections but does not answer)",
                within.as_secs()
            )),
        }
    }

    async fn connect_unbounded(&self) -> Result<Client, String> {
        let describe = |e: tokio_postgres::Error| describe(&e);
        match &self.tls {
            Tls::None => {
                let (client, connection) = self
                    .config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(describe)?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                Ok(client)
            }
            Tls::Rustls(c) => {
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new((**c).clone());
                let (client, connection) = self.config.connect(tls).await.map_err(describe)?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                Ok(client)
            }
        }
    }
}

/// A database error with its causes, which name the server's message (never the password).
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    crate::text::with_causes(e)
}

/// The TLS settings: the bundled web roots, or the CA certificates of `root_cert`.
fn rustls_config(
    root_cert: Option<&Path>,
    display: &str,
) -> Result<Arc<rustls::ClientConfig>, UrlError> {
    let mut roots = rustls::RootCertStore::empty();
    match root_cert {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject as _;
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("{display}: sslrootcert {}: {e}", path.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{display}: sslrootcert {}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "{display}: sslrootcert {} holds no certificate",
                    path.display()
                ));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("{display}: sslrootcert {}: {e}", path.display()))?;
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("{display}: TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The password for (host, port, database, user) from the password file, as libpq reads it:
/// `PGPASSFILE` or `~/.pgpass`, lines `host:port:database:user:password`, `*` matching anything,
/// `\:` and `\\` escaped; the first match wins.
fn pgpass(host: &str, port: u16, dbname: &str, user: &str) -> Option<String> {
    let path = std::env::var_os("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pgpass")))?;
    let text = std::fs::read_to_string(path).ok()?;
    let host = if host.starts_with('/') {
        "localhost"
    } else {
        host
    };
    let port = port.to_string();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_pgpass(line);
        if fields.len() != 5 {
            continue;
        }
        let matches = |field: &str, value: &str| field == "*" || field == value;
        if matches(&fields[0], host)
            && matches(&fields[1], &port)
            && matches(&fields[2], dbname)
            && matches(&fields[3], user)
        {
            return Some(fields[4].clone());
        }
    }
    None
}

fn split_pgpass(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next()
                    && let Some(last) = fields.last_mut()
                {
                    last.push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => {
                if let Some(last) = fields.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    fields
}

/// The schema version this build writes (see `specs/state.md`).
pub const SCHEMA_VERSION: i32 = 1;

/// The migrations, in order: migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1
    "CREATE TABLE feedbuttons_states (
        name text PRIMARY KEY,
        lineage text NOT NULL,
        serial bigint NOT NULL DEFAULT 0,
        generation bigint NOT NULL DEFAULT 0,
        base_url text,
        app_id text,
        holder text,
        holder_command text,
        holder_host text,
        holder_pid integer,
        holder_since timestamptz,
        heartbeat timestamptz,
        busy boolean NOT NULL DEFAULT false
    );
    CREATE TABLE feedbuttons_lists (
        state text NOT NULL REFERENCES feedbuttons_states (name) ON DELETE CASCADE,
        id text NOT NULL,
        list text NOT NULL,
        PRIMARY KEY (state, id)
    );
    CREATE TABLE feedbuttons_targets (
        state text NOT NULL REFERENCES feedbuttons_states (name) ON DELETE CASCADE,
        chat_id text NOT NULL,
        audience text NOT NULL,
        shown text,
        extra text,
        PRIMARY KEY (state, chat_id, audience)
    );
    CREATE TABLE feedbuttons_rate_budget (
        app text PRIMARY KEY,
        next_slot timestamptz NOT NULL
    );",
];

/// A fixed advisory-lock key for migrations, so that two processes never migrate at once.
const MIGRATION_LOCK: i64 = 0x6665_6564_6275_7474; // "feedbutt"

/// Brings the schema up to [`SCHEMA_VERSION`]; refuses a database a newer build migrated.
pub async fn migrate(client: &mut Client, display: &str) -> Result<(), String> {
    let tx = client.transaction().await.map_err(|e| describe(&e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| describe(&e))?;
    // Not `CREATE TABLE IF NOT EXISTS`: PostgreSQL checks the right to create in the schema
    // even when the table exists, and a role that may only read and write the tables (as the
    // README allows once the schema exists) has no such right.
    let exists: bool = tx
        .query_one("SELECT to_regclass('feedbuttons_schema') IS NOT NULL", &[])
        .await
        .map_err(|e| describe(&e))?
        .get(0);
    if !exists {
        tx.batch_execute("CREATE TABLE feedbuttons_schema (version integer NOT NULL)")
            .await
            .map_err(|e| describe(&e))?;
    }
    let row = tx
        .query_opt("SELECT version FROM feedbuttons_schema", &[])
        .await
        .map_err(|e| describe(&e))?;
    let version: i32 = match row {
        Some(r) => r.get(0),
        None => {
            tx.execute("INSERT INTO feedbuttons_schema (version) VALUES (0)", &[])
                .await
                .map_err(|e| describe(&e))?;
            0
        }
    };
    if version > SCHEMA_VERSION {
        return Err(format!(
            "{display}: its schema is version {version}, newer than this feedbuttons knows ({SCHEMA_VERSION}); use the feedbuttons that migrated it"
        ));
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        tx.batch_execute(sql).await.map_err(|e| describe(&e))?;
        let to = from as i32 + 1;
        tx.execute("UPDATE feedbuttons_schema SET version = $1", &[&to])
            .await
            .map_err(|e| describe(&e))?;
        tracing::info!(schema = to, "migrated the state database schema");
    }
    tx.commit().await.map_err(|e| describe(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed_and_unknown_parameters_refused_without_the_password() {
        let u = PgUrl::parse("postgres://bot:s%40cret@db.example.com:6543/fb?sslmode=disable")
            .expect("a URL");
        assert_eq!(
            u.display,
            "postgres://bot:***@db.example.com:6543/fb?sslmode=disable"
        );
        assert_eq!(u.config.get_password(), Some(&b"s@cret"[..]));
        assert_eq!(u.config.get_ports(), [6543]);
        assert_eq!(u.config.get_dbname(), Some("fb"));
        assert!(!format!("{u:?}").contains("cret"));
        let err = PgUrl::parse("postgres://bot:hunter2@db/fb?sslmod=require").expect_err("typo");
        assert!(
            err.contains("\"sslmod\"") && !err.contains("hunter2"),
            "{err}"
        );
        let err = PgUrl::parse("postgres://db/fb?sslmode=maybe").expect_err("bad mode");
        assert!(err.contains("maybe"), "{err}");
    }

    #[test]
    fn the_password_file_is_read_as_libpq_reads_it() {
        let fields = split_pgpass(r"db\:1:5432:*:bot:pa\:ss\\word");
        assert_eq!(fields, ["db:1", "5432", "*", "bot", r"pa:ss\word"]);
    }
}
