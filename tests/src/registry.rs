//! A mesh with every storage server a production mesh has: etcd, Garage
//! (S3), Redis and PostgreSQL, with voca-registry, pool nodes reading the
//! bucket and sharing Redis, and a gateway that serves the vendor API.

use std::path::Path;
use std::time::Duration;

use tonic::transport::Channel;
use voca_proto::v1::vendor_registry_client::VendorRegistryClient;
use voca_proto::v1::RouteRequest;

use crate::garage::{env_args, spawn_pool, GarageServer};
use crate::mesh::{gateway_client, wait_ring_size, Mesh, Node, PREFIX};
use crate::postgres::PostgresServer;
use crate::process::{binary, Process};
use crate::redis_server::RedisServer;
use crate::{free_port, wait_for};

/// Largest message the tests exchange with the registry.
const MAX_MESSAGE_BYTES: usize = 12 * 1024 * 1024;

/// Every server of one test. Everything stops when it is dropped.
pub struct StorageMesh {
    pub mesh: Mesh,
    pub garage: GarageServer,
    pub redis: RedisServer,
    pub postgres: PostgresServer,
    pub database_url: String,
    pub registry: Node,
    pub gateway: Node,
    pub pools: Vec<Node>,
}

impl StorageMesh {
    /// Starts the servers, the registry, pool nodes with these ids and a
    /// gateway with `--registry`, and waits until the gateway's ring has
    /// every pool node and the registry serves.
    pub async fn start(pool_ids: &[&str]) -> Self {
        let (mesh, garage, redis, postgres) = tokio::join!(
            Mesh::new(),
            GarageServer::start(),
            RedisServer::start(),
            PostgresServer::start()
        );
        let database_url = postgres.create_database("registry");
        let registry = spawn_registry(&mesh, &garage, &redis, &database_url);
        let pools = pool_ids
            .iter()
            .map(|id| spawn_storage_pool(&mesh, &garage, &redis, id))
            .collect();
        let gateway = mesh
            .start_gateway_with(&["--registry".to_owned(), registry.address()])
            .await;
        wait_ring_size(&gateway.address(), pool_ids.len()).await;
        wait_for_registry(&registry.address()).await;
        Self {
            mesh,
            garage,
            redis,
            postgres,
            database_url,
            registry,
            gateway,
            pools,
        }
    }

    /// Starts a pool node reading the bucket and sharing Redis, without
    /// waiting for it to join.
    pub fn spawn_pool(&self, node_id: &str) -> Node {
        spawn_storage_pool(&self.mesh, &self.garage, &self.redis, node_id)
    }

    /// Connects a vendor API client through the gateway.
    pub async fn registry_client(&self) -> VendorRegistryClient<Channel> {
        registry_client(&self.gateway.address()).await
    }

    /// Returns the pool id that the gateway routes `vendor_id` to.
    pub async fn owner(&self, vendor_id: &str) -> String {
        let mut client = gateway_client(&self.gateway.address())
            .await
            .expect("connecting to the gateway");
        client
            .route(RouteRequest {
                vendor_id: vendor_id.to_owned(),
            })
            .await
            .unwrap_or_else(|s| panic!("Route {vendor_id}: {s}"))
            .into_inner()
            .pool_id
    }

    /// Counts the PostgreSQL rows of a vendor.
    pub fn vendor_rows(&self, vendor_id: &str) -> u64 {
        let count = self.postgres.psql(
            "registry",
            &format!("SELECT count(*) FROM vendors WHERE id = '{vendor_id}'"),
        );
        count
            .parse()
            .unwrap_or_else(|_| panic!("psql printed {count:?}"))
    }

    /// Returns every Redis key that contains `vendor_id`.
    pub async fn redis_keys(&self, vendor_id: &str) -> Vec<String> {
        let mut connection = self.redis.connection().await;
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("*{vendor_id}*"))
            .query_async(&mut connection)
            .await
            .expect("KEYS");
        keys.sort();
        keys
    }

    /// Folder for logs and files of this test.
    pub fn dir(&self) -> &Path {
        self.mesh.dir()
    }
}

fn spawn_storage_pool(
    mesh: &Mesh,
    garage: &GarageServer,
    redis: &RedisServer,
    node_id: &str,
) -> Node {
    let mut flags = garage.pool_flags();
    flags.extend(["--redis".to_owned(), redis.url()]);
    spawn_pool(mesh, node_id, &flags, Some(garage.key()))
}

/// Starts voca-registry against these servers, without waiting for it.
pub fn spawn_registry(
    mesh: &Mesh,
    garage: &GarageServer,
    redis: &RedisServer,
    database_url: &str,
) -> Node {
    let port = free_port();
    let mut args = env_args(Some(garage.key()));
    args.push(binary("voca-registry").display().to_string());
    args.extend(
        [
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--etcd",
            &mesh.etcd.endpoint(),
            "--etcd-prefix",
            PREFIX,
            "--database-url",
            database_url,
            "--database-connect-timeout",
            "3",
            "--redis",
            &redis.url(),
            "--shutdown-deadline",
            "3",
        ]
        .map(str::to_owned),
    );
    args.extend(garage.pool_flags());
    Node {
        process: Process::spawn(
            &format!("registry-{port}"),
            Path::new("env"),
            &args,
            mesh.dir(),
        ),
        port,
    }
}

/// Connects a vendor API client to a gateway or registry at `address`.
pub async fn registry_client(address: &str) -> VendorRegistryClient<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .expect("valid address")
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connecting to {address}: {e}"));
    VendorRegistryClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// Waits until the registry at `address` answers a vendor API call.
pub async fn wait_for_registry(address: &str) {
    wait_for(
        &format!("the registry at {address} to serve"),
        Duration::from_secs(30),
        || async {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
                .ok()?
                .connect()
                .await
                .ok()?;
            VendorRegistryClient::new(channel)
                .list_vendors(voca_proto::v1::ListVendorsRequest::default())
                .await
                .ok()
        },
    )
    .await;
}

/// Spawns `voca` with `args` and waits for it to exit, returning its
/// status and output.
pub async fn run_cli(args: &[&str], limit: Duration) -> std::process::Output {
    let child = tokio::process::Command::new(binary("voca"))
        .args(args)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(limit, child)
        .await
        .unwrap_or_else(|_| panic!("voca {args:?} did not finish within {limit:?}"))
        .expect("running voca")
}
