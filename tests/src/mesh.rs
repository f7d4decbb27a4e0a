//! A mesh of real processes against one etcd: pool nodes, gateways, and a
//! character store in a temporary directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;
use tonic::transport::Channel;
use voca_proto::v1::gateway_client::GatewayClient;
use voca_proto::v1::pool_node_client::PoolNodeClient;
use voca_proto::v1::{RouteRequest, SendMessageRequest, SendMessageResponse};

use crate::etcd::EtcdServer;
use crate::process::{binary, Process};
use crate::{fixtures_dir, free_port, repo_root, wait_for};

/// Lease TTL of test pool nodes, in seconds: short, so that a killed node
/// leaves the ring quickly.
pub const LEASE_TTL_SECS: u64 = 2;
/// Key prefix of test meshes.
pub const PREFIX: &str = "/voca-test";

/// One test's mesh. Everything it started stops when it is dropped.
pub struct Mesh {
    pub etcd: EtcdServer,
    dir: TempDir,
}

/// A started pool node or gateway.
pub struct Node {
    pub process: Process,
    pub port: u16,
}

impl Node {
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Mesh {
    /// Starts etcd and creates an empty character store.
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().expect("creating mesh directory");
        std::fs::create_dir_all(dir.path().join("store/vendors")).expect("creating store");
        Self {
            etcd: EtcdServer::start().await,
            dir,
        }
    }

    /// Folder of the character store.
    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub fn store_url(&self) -> String {
        format!("file://{}", self.store().display())
    }

    /// Folder for process logs and other files of this test.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Copies the example vendors into the store.
    pub fn add_example_vendors(&self) {
        copy_dir(
            &repo_root().join("examples/vendors"),
            &self.store().join("vendors"),
        );
    }

    /// Copies the fixture characters into the store, each as a vendor named
    /// after its file (`dobby.character.json` becomes vendor `dobby`), with
    /// a `knowledge/` folder beside a character becoming its knowledge base.
    /// Returns the vendor ids.
    pub fn add_fixture_vendors(&self) -> Vec<String> {
        let mut vendors = Vec::new();
        for entry in std::fs::read_dir(fixtures_dir()).expect("reading fixtures") {
            let path = entry.expect("fixture entry").path();
            if path.is_dir() {
                let vendor = path.file_name().unwrap().to_string_lossy().into_owned();
                let character = std::fs::read_dir(&path)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .find(|p| p.extension().is_some_and(|x| x == "json"))
                    .expect("a character file in the fixture folder");
                self.write_vendor_file(
                    &vendor,
                    "character.json",
                    &std::fs::read(character).unwrap(),
                );
                if path.join("knowledge").is_dir() {
                    copy_dir(
                        &path.join("knowledge"),
                        &self.vendor_dir(&vendor).join("knowledge-base"),
                    );
                }
                vendors.push(vendor);
            } else if let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".character.json"))
            {
                self.write_vendor_file(name, "character.json", &std::fs::read(&path).unwrap());
                vendors.push(name.to_owned());
            }
        }
        vendors.sort();
        vendors
    }

    pub fn vendor_dir(&self, vendor_id: &str) -> PathBuf {
        self.store().join("vendors").join(vendor_id)
    }

    /// Writes a file of a vendor, creating its folders.
    pub fn write_vendor_file(&self, vendor_id: &str, relative: &str, bytes: &[u8]) {
        let path = self.vendor_dir(vendor_id).join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    /// Starts a pool node on a new port, without waiting for it to join.
    pub fn spawn_pool(&self, node_id: &str) -> Node {
        self.spawn_pool_with(node_id, &[])
    }

    /// Starts a pool node with extra flags.
    pub fn spawn_pool_with(&self, node_id: &str, extra: &[&str]) -> Node {
        let port = free_port();
        let mut args = vec![
            "--node-id".to_owned(),
            node_id.to_owned(),
            "--listen".to_owned(),
            format!("127.0.0.1:{port}"),
            "--etcd".to_owned(),
            self.etcd.endpoint(),
            "--etcd-prefix".to_owned(),
            PREFIX.to_owned(),
            "--characters".to_owned(),
            self.store_url(),
            "--shutdown-deadline".to_owned(),
            "3".to_owned(),
        ];
        if !extra.contains(&"--lease-ttl") {
            args.extend(["--lease-ttl".to_owned(), LEASE_TTL_SECS.to_string()]);
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let name = format!("{node_id}-{port}");
        Node {
            process: Process::spawn(&name, &binary("voca-pool-node"), &args, self.dir()),
            port,
        }
    }

    /// Starts a gateway on a new port and waits until it serves.
    pub async fn start_gateway(&self) -> Node {
        self.start_gateway_via(&self.etcd.endpoint()).await
    }

    /// Starts a gateway that reaches etcd at `etcd_endpoint`, such as a
    /// proxy, and waits until it serves.
    pub async fn start_gateway_via(&self, etcd_endpoint: &str) -> Node {
        self.start_gateway_from(etcd_endpoint, &[]).await
    }

    /// Starts a gateway with extra flags and waits until it serves.
    pub async fn start_gateway_with(&self, extra: &[String]) -> Node {
        self.start_gateway_from(&self.etcd.endpoint(), extra).await
    }

    async fn start_gateway_from(&self, etcd_endpoint: &str, extra: &[String]) -> Node {
        let port = free_port();
        let mut args = vec![
            "--listen".to_owned(),
            format!("127.0.0.1:{port}"),
            "--etcd".to_owned(),
            etcd_endpoint.to_owned(),
            "--etcd-prefix".to_owned(),
            PREFIX.to_owned(),
            "--shutdown-deadline".to_owned(),
            "3".to_owned(),
        ];
        args.extend(extra.iter().cloned());
        let node = Node {
            process: Process::spawn(
                &format!("gateway-{port}"),
                &binary("voca-gateway"),
                &args,
                self.dir(),
            ),
            port,
        };
        let address = node.address();
        wait_for(
            "the gateway to accept connections",
            Duration::from_secs(20),
            || {
                let address = address.clone();
                async move { gateway_client(&address).await.ok() }
            },
        )
        .await;
        node
    }

    /// Starts pool nodes with these ids and a gateway, and waits until the
    /// gateway's ring has all of them.
    pub async fn start(&self, node_ids: &[&str]) -> (Node, Vec<Node>) {
        let pools: Vec<Node> = node_ids.iter().map(|id| self.spawn_pool(id)).collect();
        let gateway = self.start_gateway().await;
        wait_ring_size(&gateway.address(), node_ids.len()).await;
        (gateway, pools)
    }
}

/// Waits until the gateway at `address` routes on a ring of `size` nodes.
pub async fn wait_ring_size(address: &str, size: usize) {
    wait_for(
        &format!("a ring of {size} pool nodes at {address}"),
        Duration::from_secs(20),
        || async {
            let mut client = gateway_client(address).await.ok()?;
            let route = client
                .route(RouteRequest {
                    vendor_id: "ring-probe".to_owned(),
                })
                .await
                .ok()?
                .into_inner();
            (route.ring_size as usize == size).then_some(())
        },
    )
    .await;
}

pub async fn gateway_client(
    address: &str,
) -> Result<GatewayClient<Channel>, tonic::transport::Error> {
    GatewayClient::connect(format!("http://{address}")).await
}

pub async fn pool_client(
    address: &str,
) -> Result<PoolNodeClient<Channel>, tonic::transport::Error> {
    PoolNodeClient::connect(format!("http://{address}")).await
}

/// Returns the pool id that the gateway routes `vendor_id` to.
pub async fn route(client: &mut GatewayClient<Channel>, vendor_id: &str) -> String {
    client
        .route(RouteRequest {
            vendor_id: vendor_id.to_owned(),
        })
        .await
        .unwrap_or_else(|s| panic!("Route {vendor_id}: {s}"))
        .into_inner()
        .pool_id
}

/// Sends one message through the gateway.
pub async fn send(
    client: &mut GatewayClient<Channel>,
    vendor_id: &str,
    text: &str,
) -> Result<SendMessageResponse, tonic::Status> {
    client
        .send_message(SendMessageRequest {
            vendor_id: vendor_id.to_owned(),
            user_id: "test-user".to_owned(),
            text: text.to_owned(),
            message_id: String::new(),
            platform: None,
        })
        .await
        .map(tonic::Response::into_inner)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in
        std::fs::read_dir(from).unwrap_or_else(|e| panic!("reading {}: {e}", from.display()))
    {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
