//! A real Redis server (Debian's redis-server) for one test.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::{free_port, wait_for};

/// A Redis server on loopback with persistence off. It is killed when
/// dropped.
pub struct RedisServer {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl RedisServer {
    /// Starts redis-server and waits until it replies to PING.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("creating Redis directory");
        let port = free_port();
        let binary = std::env::var("VOCA_REDIS_BIN").unwrap_or_else(|_| "redis-server".to_owned());
        let child = Command::new(&binary)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting {binary} failed: {e}; install Debian's redis-server (scripts/test does)")
            });
        let server = Self {
            child,
            port,
            _dir: dir,
        };
        let url = server.url();
        wait_for("Redis to answer", Duration::from_secs(10), || {
            let url = url.clone();
            async move {
                let client = redis::Client::open(url).ok()?;
                let mut connection = client.get_multiplexed_async_connection().await.ok()?;
                redis::cmd("PING")
                    .query_async::<String>(&mut connection)
                    .await
                    .ok()
            }
        })
        .await;
        server
    }

    /// URL pool nodes use, `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Opens a connection for the test's own checks.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("valid Redis URL")
            .get_multiplexed_async_connection()
            .await
            .expect("connecting to Redis")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
