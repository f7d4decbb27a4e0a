//! A real Garage S3 server for one test: a single node on loopback ports
//! with temporary metadata and data directories, one bucket and one key
//! that may read and write it.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use tempfile::TempDir;
use voca_pool_node::store::S3Config;

use crate::mesh::{Mesh, Node, LEASE_TTL_SECS, PREFIX};
use crate::process::{binary, Process};
use crate::{free_port, wait_for};

/// Region the test server signs with (`s3_region` in its configuration).
pub const REGION: &str = "garage";
/// Time allowed for one `garage` command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed for the server to start and for its S3 API to serve.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How the upload helpers store files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// As they are, with no `Content-Encoding`.
    None,
    /// zstd-compressed, with `Content-Encoding: zstd`.
    Zstd,
    /// zstd for every other file in name order, starting with the first.
    Alternate,
}

/// An S3 access key.
#[derive(Debug, Clone)]
pub struct AccessKey {
    pub id: String,
    pub secret: String,
}

/// A Garage server. It is killed when dropped.
pub struct GarageServer {
    child: Option<Child>,
    dir: TempDir,
    binary: String,
    s3_port: u16,
    bucket: String,
    key: AccessKey,
}

impl GarageServer {
    /// Starts Garage from `garage` on PATH or `$VOCA_GARAGE_BIN`, lays out
    /// the single node, and creates a bucket and a key that owns it.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("creating Garage directory");
        let binary = std::env::var("VOCA_GARAGE_BIN").unwrap_or_else(|_| "garage".to_owned());
        let s3_port = free_port();
        let config = format!(
            r#"metadata_dir = "{meta}"
data_dir = "{data}"
db_engine = "sqlite"
replication_factor = 1

rpc_bind_addr = "127.0.0.1:{rpc_port}"
rpc_public_addr = "127.0.0.1:{rpc_port}"
rpc_secret = "{rpc_secret}"

[s3_api]
s3_region = "{REGION}"
api_bind_addr = "127.0.0.1:{s3_port}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin_port}"
admin_token = "{admin_token}"
"#,
            meta = dir.path().join("meta").display(),
            data = dir.path().join("data").display(),
            rpc_port = free_port(),
            admin_port = free_port(),
            rpc_secret = random_hex(),
            admin_token = random_hex(),
        );
        std::fs::write(dir.path().join("garage.toml"), config).expect("writing garage.toml");
        let log =
            std::fs::File::create(dir.path().join("garage.log")).expect("creating Garage log");
        let child = Command::new(&binary)
            .arg("-c")
            .arg(dir.path().join("garage.toml"))
            .arg("server")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting {binary} failed: {e}; install it with `cargo install garage --locked` (scripts/test does) or set VOCA_GARAGE_BIN")
            });
        let mut server = Self {
            child: Some(child),
            dir,
            binary,
            s3_port,
            bucket: format!("voca-{}", std::process::id()),
            key: AccessKey {
                id: String::new(),
                secret: String::new(),
            },
        };
        server.set_up().await;
        server
    }

    async fn set_up(&mut self) {
        let this = &*self;
        wait_for("garage status to succeed", START_TIMEOUT, || async move {
            this.try_garage(&["status"]).await.ok()
        })
        .await;
        let node_id = self.garage(&["node", "id", "--quiet"]).await;
        let node_id = node_id
            .trim()
            .split('@')
            .next()
            .unwrap_or_default()
            .to_owned();
        self.garage(&["layout", "assign", "-z", "dc1", "-c", "1G", &node_id])
            .await;
        self.garage(&["layout", "apply", "--version", "1"]).await;
        self.key = self.create_key("voca-test").await;
        let bucket = self.bucket.clone();
        self.create_bucket(&bucket).await;

        let (client, bucket) = (&self.client(), bucket.as_str());
        wait_for("the Garage S3 API to serve", START_TIMEOUT, || async move {
            client.head_bucket().bucket(bucket).send().await.ok()
        })
        .await;
    }

    /// Creates a bucket that the test key may read, write and own.
    pub async fn create_bucket(&self, name: &str) {
        self.garage(&["bucket", "create", name]).await;
        let key = self.key.id.clone();
        self.garage(&[
            "bucket", "allow", "--read", "--write", "--owner", name, "--key", &key,
        ])
        .await;
    }

    /// Creates an access key with no permission on any bucket.
    pub async fn create_key(&self, name: &str) -> AccessKey {
        self.garage(&["key", "create", name]).await;
        let info = self.garage(&["key", "info", name, "--show-secret"]).await;
        let field = |label: &str| {
            info.lines()
                .find_map(|line| line.trim().strip_prefix(label))
                .map(|value| value.trim().to_owned())
                .unwrap_or_else(|| panic!("no {label:?} in `garage key info`:\n{info}"))
        };
        AccessKey {
            id: field("Key ID:"),
            secret: field("Secret key:"),
        }
    }

    /// S3 endpoint URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Returns the key that owns the bucket.
    pub fn key(&self) -> &AccessKey {
        &self.key
    }

    /// Settings of a pool node's S3 store for this server and `key`.
    pub fn s3_config(&self, key: &AccessKey) -> S3Config {
        S3Config {
            endpoint: Some(self.endpoint()),
            region: REGION.to_owned(),
            path_style: true,
            access_key_id: Some(key.id.clone()),
            secret_access_key: Some(key.secret.clone()),
            session_token: None,
        }
    }

    /// Pool node flags that select this server's bucket.
    pub fn pool_flags(&self) -> Vec<String> {
        let characters = format!("s3://{}", self.bucket);
        let endpoint = self.endpoint();
        ["--characters", &characters, "--s3-endpoint", &endpoint]
            .into_iter()
            .chain(["--s3-region", REGION, "--s3-path-style"])
            .map(str::to_owned)
            .collect()
    }

    /// Builds an S3 client that signs with the bucket owner's key.
    pub fn client(&self) -> aws_sdk_s3::Client {
        let credentials =
            Credentials::new(&self.key.id, &self.key.secret, None, None, "voca-tests");
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .credentials_provider(credentials)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// Writes one object to the bucket.
    pub async fn put(&self, key: &str, bytes: &[u8], compressed: bool) {
        let mut request = self.client().put_object().bucket(&self.bucket).key(key);
        let body = if compressed {
            request = request.content_encoding("zstd");
            zstd::encode_all(bytes, 3).expect("compressing with zstd")
        } else {
            bytes.to_vec()
        };
        request
            .body(ByteStream::from(body))
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "uploading {key} failed: {}",
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            });
    }

    /// Uploads every file under `folder` as `vendors/{vendor_id}/...`, with
    /// the same relative paths, and returns the keys written in name order.
    pub async fn upload_vendor(
        &self,
        vendor_id: &str,
        folder: &Path,
        compression: Compression,
    ) -> Vec<String> {
        let mut files = Vec::new();
        list_files(folder, &mut files);
        files.sort();
        let mut keys = Vec::new();
        for (index, path) in files.iter().enumerate() {
            let relative = path.strip_prefix(folder).expect("a file under the folder");
            let parts: Vec<_> = relative
                .components()
                .map(|part| part.as_os_str().to_string_lossy())
                .collect();
            let key = format!("vendors/{vendor_id}/{}", parts.join("/"));
            let compressed = match compression {
                Compression::None => false,
                Compression::Zstd => true,
                Compression::Alternate => index % 2 == 0,
            };
            let bytes =
                std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            self.put(&key, &bytes, compressed).await;
            keys.push(key);
        }
        keys
    }

    /// Runs `garage -c CONFIG ARGS` and returns its stdout, or panics with
    /// its output and the server log.
    async fn garage(&self, args: &[&str]) -> String {
        self.try_garage(args).await.unwrap_or_else(|message| {
            panic!(
                "`garage {}` failed: {message}\nGarage log:\n{}",
                args.join(" "),
                self.log()
            )
        })
    }

    async fn try_garage(&self, args: &[&str]) -> Result<String, String> {
        let run = tokio::process::Command::new(&self.binary)
            .arg("-c")
            .arg(self.config_path())
            .args(args)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(COMMAND_TIMEOUT, run)
            .await
            .map_err(|_| format!("timed out after {COMMAND_TIMEOUT:?}"))?
            .map_err(|e| e.to_string())?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "{}: {stdout}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("garage.toml")
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("garage.log")).unwrap_or_default()
    }

    /// Kills the server, so that its S3 port refuses connections.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Returns the keys of every object under `prefix`.
    pub async fn list_keys(&self, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut pages = self
            .client()
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.unwrap_or_else(|e| {
                panic!(
                    "listing {prefix} failed: {}",
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            });
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
        }
        keys
    }
}

impl Drop for GarageServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts a pool node of `mesh` whose flags select its character store,
/// with `credentials` as its S3 key, without waiting for it to join.
pub fn spawn_pool(
    mesh: &Mesh,
    node_id: &str,
    store_flags: &[String],
    credentials: Option<&AccessKey>,
) -> Node {
    let port = free_port();
    let mut args = env_args(credentials);
    args.push(binary("voca-pool-node").display().to_string());
    args.extend(
        [
            "--node-id",
            node_id,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--etcd",
            &mesh.etcd.endpoint(),
            "--etcd-prefix",
            PREFIX,
            "--lease-ttl",
            &LEASE_TTL_SECS.to_string(),
            "--shutdown-deadline",
            "3",
        ]
        .map(str::to_owned),
    );
    args.extend(store_flags.iter().cloned());

    Node {
        process: Process::spawn(
            &format!("{node_id}-{port}"),
            Path::new("env"),
            &args,
            mesh.dir(),
        ),
        port,
    }
}

/// Arguments of env(1) that run a program with `credentials` as its S3
/// key, so that parallel tests do not change this process's environment.
/// They remove the variables first, so that none leaks in from the
/// environment of the test run. The program and its arguments follow.
pub fn env_args(credentials: Option<&AccessKey>) -> Vec<String> {
    let mut args: Vec<String> = [
        "-u",
        "AWS_ACCESS_KEY_ID",
        "-u",
        "AWS_SECRET_ACCESS_KEY",
        "-u",
        "AWS_SESSION_TOKEN",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    if let Some(key) = credentials {
        args.push(format!("AWS_ACCESS_KEY_ID={}", key.id));
        args.push(format!("AWS_SECRET_ACCESS_KEY={}", key.secret));
    }
    args
}

fn list_files(folder: &Path, files: &mut Vec<PathBuf>) {
    let entries =
        std::fs::read_dir(folder).unwrap_or_else(|e| panic!("reading {}: {e}", folder.display()));
    for entry in entries {
        let path = entry.expect("folder entry").path();
        if path.is_dir() {
            list_files(&path, files);
        } else {
            files.push(path);
        }
    }
}

/// Returns 64 random hex digits, the form of Garage's `rpc_secret`.
fn random_hex() -> String {
    (0..4)
        .map(|_| format!("{:016x}", RandomState::new().build_hasher().finish()))
        .collect()
}
