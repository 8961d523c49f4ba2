//! A real PostgreSQL server for the tests that need one: `initdb` into a temporary directory,
//! started on a free port, stopped when dropped. The binaries come from PATH or
//! `/usr/lib/postgresql/*/bin`. PostgreSQL refuses to run as root: as root, the server runs as
//! the `postgres` user (`runuser -u postgres`).
//!
//! Without a server to start, the tests that need one are skipped with a printed reason, unless
//! `FEEDBUTTONS_REQUIRE_POSTGRES` is set (CI sets it): then they fail.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running server, stopped when dropped.
pub struct PgServer {
    dir: tempfile::TempDir,
    pub port: u16,
    bin: PathBuf,
    as_postgres: bool,
}

/// Starts a server, or says why not: `None` (the test returns early) unless the environment
/// requires PostgreSQL, then it panics with the reason.
pub fn start() -> Option<PgServer> {
    start_with(false)
}

/// [`start`]; `durable`: with fsync and synchronous commits on, as a production server runs
/// (the tests run without, for speed; the benchmarks with).
pub fn start_with(durable: bool) -> Option<PgServer> {
    match try_start(durable) {
        Ok(s) => Some(s),
        Err(why) => {
            if std::env::var_os("FEEDBUTTONS_REQUIRE_POSTGRES").is_some_and(|v| !v.is_empty()) {
                panic!("FEEDBUTTONS_REQUIRE_POSTGRES is set, but PostgreSQL cannot start: {why}");
            }
            eprintln!("skipped: no PostgreSQL server can be started here ({why})");
            None
        }
    }
}

fn bin_dir() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                return Some(dir);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .is_some_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn try_start(durable: bool) -> Result<PgServer, String> {
    let bin =
        bin_dir().ok_or("initdb and pg_ctl are neither on PATH nor under /usr/lib/postgresql")?;
    let as_postgres = is_root();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    if as_postgres {
        let ok = Command::new("chown")
            .args(["postgres:", &dir.path().display().to_string()])
            .status()
            .map_err(|e| e.to_string())?
            .success();
        if !ok {
            return Err("cannot hand the data directory to the postgres user".to_owned());
        }
    }
    let server = PgServer {
        dir,
        port: free_port(),
        bin,
        as_postgres,
    };
    let data = server.data();
    server.run(
        "initdb",
        &[
            "-D",
            &data,
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        ],
    )?;
    let speed = if durable {
        ""
    } else {
        " -c fsync=off -c synchronous_commit=off"
    };
    let options = format!(
        "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200{speed}",
        server.port,
        server.dir.path().display()
    );
    let log = server.dir.path().join("server.log").display().to_string();
    server.run(
        "pg_ctl",
        &["-D", &data, "-o", &options, "-l", &log, "-w", "start"],
    )?;
    Ok(server)
}

impl PgServer {
    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<(), String> {
        let exe = self.bin.join(tool);
        let out = if self.as_postgres {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&exe)
                .args(args)
                .current_dir(self.dir.path())
                .output()
        } else {
            Command::new(&exe)
                .args(args)
                .current_dir(self.dir.path())
                .output()
        }
        .map_err(|e| format!("{tool}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{tool} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// A URL for database `db` (created by [`PgServer::create_db`], or `postgres`).
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    /// Runs SQL as the superuser, through psql; returns what it printed (unaligned, no headers).
    pub fn sql(&self, db: &str, sql: &str) -> String {
        self.try_sql(db, sql)
            .unwrap_or_else(|e| panic!("psql: {e}"))
    }

    /// [`PgServer::sql`], with psql's error instead of a panic (say, a table not made yet).
    pub fn try_sql(&self, db: &str, sql: &str) -> Result<String, String> {
        let psql = Some(self.bin.join("psql"))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("psql"));
        let out = Command::new(&psql)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-d", db, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .expect("run psql");
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Stops the server at once, as a crash would (`pg_ctl stop -m immediate`).
    pub fn stop_immediate(&self) {
        let data = self.data();
        self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"])
            .expect("stop the server");
    }

    /// Starts a stopped server again, on the same port, with the options it first had
    /// (`postmaster.opts`).
    pub fn start_again(&self) {
        let data = self.data();
        let opts = std::fs::read_to_string(self.dir.path().join("data/postmaster.opts"))
            .expect("the server's first options");
        // `postmaster.opts` is the command line: the binary, then its options (each quoted).
        let options: Vec<String> = opts
            .split_whitespace()
            .skip(1)
            .map(|o| o.trim_matches('"').to_owned())
            .filter(|o| !o.starts_with("-D") && !o.contains("/data"))
            .collect();
        let log = self.dir.path().join("server.log").display().to_string();
        let options = options.join(" ");
        self.run(
            "pg_ctl",
            &["-D", &data, "-o", &options, "-l", &log, "-w", "start"],
        )
        .expect("start the server again");
    }

    pub fn create_db(&self, db: &str) {
        self.sql("postgres", &format!("CREATE DATABASE {db}"));
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }
}
