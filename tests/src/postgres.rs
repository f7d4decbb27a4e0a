//! A real PostgreSQL server (Debian's PostgreSQL 15) for one test.
//!
//! PostgreSQL will not run as root, so when the test runs as root, initdb
//! and the server run as the `postgres` system user, which owns the
//! temporary directory.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::free_port;

const DEFAULT_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

/// A PostgreSQL server on 127.0.0.1 with trust authentication and fsync off.
/// It is stopped when dropped.
pub struct PostgresServer {
    child: Option<Child>,
    port: u16,
    bin_dir: PathBuf,
    /// User and group ids the server runs as when the test runs as root.
    run_as: Option<(u32, u32)>,
    dir: TempDir,
}

impl PostgresServer {
    /// Runs initdb in a temporary directory, starts the server on a free
    /// port and waits until it accepts connections.
    pub async fn start() -> Self {
        let bin_dir = std::env::var_os("VOCA_PG_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_BIN_DIR));
        assert!(
            bin_dir.join("initdb").is_file(),
            "{} not found; install Debian's postgresql package (scripts/test does) or set VOCA_PG_BIN",
            bin_dir.join("initdb").display()
        );
        let dir = tempfile::tempdir().expect("creating PostgreSQL directory");
        let run_as = if running_as_root() {
            let ids = postgres_user_ids();
            std::os::unix::fs::chown(dir.path(), Some(ids.0), Some(ids.1))
                .expect("giving the PostgreSQL directory to the postgres user");
            Some(ids)
        } else {
            None
        };
        let mut server = Self {
            child: None,
            port: free_port(),
            bin_dir,
            run_as,
            dir,
        };
        let data = server.data_dir();
        let output = server
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "--no-sync"])
            .args(["--encoding=UTF8", "--locale=C"])
            .output()
            .expect("running initdb");
        assert_success("initdb", &output);
        // Another process can take the free port before the server binds
        // it, so a bind failure is retried on a new port.
        for _ in 0..5 {
            if server.spawn().await {
                return server;
            }
            server.port = free_port();
        }
        panic!(
            "PostgreSQL found its port taken 5 times; its log:\n{}",
            server.log()
        );
    }

    /// Starts the server process and waits until it accepts connections.
    /// Returns false when the server exited because its port was taken.
    async fn spawn(&mut self) -> bool {
        let log = std::fs::File::create(self.log_path()).expect("creating PostgreSQL log");
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ))
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting postgres");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.is_ready().await {
            let exited = self
                .child
                .as_mut()
                .is_some_and(|child| matches!(child.try_wait(), Ok(Some(_))));
            if exited && self.log().contains("Address already in use") {
                self.child = None;
                return false;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not accept connections within 30 s; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        true
    }

    /// Checks with pg_isready, waiting at most 1 s, whether the server
    /// accepts connections.
    async fn is_ready(&self) -> bool {
        tokio::process::Command::new(self.bin_dir.join("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-t", "1"])
            .stdout(Stdio::null())
            .status()
            .await
            .is_ok_and(|status| status.success())
    }

    /// Port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates a database and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
        self.url(name)
    }

    /// URL of a database on this server, as user `postgres` with no
    /// password.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Runs one SQL command with psql and returns its rows, one a line,
    /// with columns separated by `|`.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let output = Command::new(self.bin_dir.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", database])
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .expect("running psql");
        assert_success("psql", &output);
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// Stops the server at once, without a checkpoint.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let stopped = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["stop", "-m", "immediate", "-w", "-t", "10"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !stopped {
            let _ = child.kill();
        }
        let _ = child.wait();
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// Builds a command for one of PostgreSQL's binaries, run as the
    /// postgres user when the test runs as root.
    fn command(&self, binary: &str) -> Command {
        let mut command = Command::new(self.bin_dir.join(binary));
        command.current_dir(self.dir.path());
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        command
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|metadata| metadata.uid() == 0)
}

/// User and group ids of the `postgres` system user.
fn postgres_user_ids() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let output = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("running id");
        assert_success("id postgres", &output);
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .expect("numeric id")
    };
    (id("-u"), id("-g"))
}

fn assert_success(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed with {}: {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
