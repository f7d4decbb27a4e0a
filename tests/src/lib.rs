//! Test harness: a real etcd and the mesh's own binaries, on loopback ports
//! chosen per test, each test with its own data directory and key prefix.

pub mod chaos;
pub mod etcd;
pub mod garage;
pub mod mesh;
pub mod postgres;
pub mod process;
pub mod proxy;
pub mod redis_server;
pub mod registry;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Returns a free TCP port on 127.0.0.1. The port is released before use,
/// so another process could take it first; tests tolerate that rarely.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding port 0 on loopback");
    listener.local_addr().expect("bound address").port()
}

/// Polls `check` every 50 ms until it returns `Some`, or panics with
/// `what` after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Root of the repository.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The ElizaOS fixture characters: `$VOCA_FIXTURES`, or
/// `../shared/fixtures/characters/elizaos` beside the repository.
pub fn fixtures_dir() -> PathBuf {
    let dir = std::env::var_os("VOCA_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/fixtures/characters/elizaos"));
    assert!(
        dir.join("dobby.character.json").is_file(),
        "fixture characters not found in {}; set VOCA_FIXTURES",
        dir.display()
    );
    dir
}
