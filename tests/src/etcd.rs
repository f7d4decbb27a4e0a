//! A real etcd server (Debian's etcd-server) for one test.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::{free_port, wait_for};

/// An etcd server on loopback with a temporary data directory. It is killed
/// when dropped.
pub struct EtcdServer {
    child: Option<Child>,
    data: TempDir,
    client_port: u16,
    peer_port: u16,
}

impl EtcdServer {
    /// Starts etcd and waits until it answers.
    pub async fn start() -> Self {
        let mut server = Self {
            child: None,
            data: tempfile::tempdir().expect("creating etcd data directory"),
            client_port: free_port(),
            peer_port: free_port(),
        };
        server.spawn().await;
        server
    }

    /// Address clients use, as `127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    async fn spawn(&mut self) {
        let binary = std::env::var("VOCA_ETCD_BIN").unwrap_or_else(|_| "etcd".to_owned());
        let client_url = format!("http://127.0.0.1:{}", self.client_port);
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let log =
            std::fs::File::create(self.data.path().join("etcd.log")).expect("creating etcd log");
        let child = Command::new(&binary)
            .args(["--name", "test"])
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("test={peer_url}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {binary} failed: {e}; install Debian's etcd-server (scripts/test does)"));
        self.child = Some(child);
        let endpoint = self.endpoint();
        wait_for("etcd to answer", Duration::from_secs(20), || {
            let endpoint = endpoint.clone();
            async move {
                let mut client = etcd_client::Client::connect([endpoint], None).await.ok()?;
                tokio::time::timeout(Duration::from_secs(1), client.get("health", None))
                    .await
                    .ok()?
                    .ok()
            }
        })
        .await;
    }

    fn data_dir(&self) -> PathBuf {
        self.data.path().join("data")
    }

    /// Kills etcd, keeping its data.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    /// Starts etcd again on the same ports with an empty data directory, as
    /// after losing its disk: every key, lease and revision is gone.
    pub async fn restart_empty(&mut self) {
        self.stop();
        std::fs::remove_dir_all(self.data_dir()).expect("removing etcd data");
        self.spawn().await;
    }

    /// Connects a client to this server.
    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.endpoint()], None)
            .await
            .expect("connecting to etcd")
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}
