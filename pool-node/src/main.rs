//! `voca-pool-node`: a pool node of the Voca mesh.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use voca_character::OfflineResponder;
use voca_common::membership::etcd::DEFAULT_PREFIX;
use voca_common::process::{init_tracing, shutdown_signal, split_endpoints};
use voca_common::RingParams;
use voca_pool_node::agents::{DEFAULT_CACHE_BYTES, DEFAULT_CACHE_TTL};
use voca_pool_node::hot::{HotState, LocalState, RedisState};
use voca_pool_node::server::{DEFAULT_LEASE_TTL, DEFAULT_SHUTDOWN_DEADLINE};
use voca_pool_node::{store, MembershipConfig, PoolNodeConfig};

/// Serves the vendors that the consistent-hash ring assigns to this node.
#[derive(Parser, Debug)]
#[command(name = "voca-pool-node", version)]
struct Args {
    /// Address to listen on, as host:port.
    #[arg(long, env = "VOCA_LISTEN", default_value = "127.0.0.1:7001")]
    listen: SocketAddr,
    /// etcd endpoints, comma-separated.
    #[arg(
        long = "etcd",
        env = "VOCA_ETCD_ENDPOINTS",
        default_value = "127.0.0.1:2379"
    )]
    etcd_endpoints: String,
    /// Key prefix of this mesh in etcd.
    #[arg(long, env = "VOCA_ETCD_PREFIX", default_value = DEFAULT_PREFIX)]
    etcd_prefix: String,
    /// Stable node id, hashed onto the ring: 1 to 128 ASCII letters, digits, '.', '_' or '-'.
    #[arg(long, env = "VOCA_NODE_ID")]
    node_id: String,
    /// Address gateways dial, as host:port [default: the listen address].
    #[arg(long, env = "VOCA_ADVERTISE")]
    advertise: Option<String>,
    /// Relative capacity, 1 to 100; scales this node's share of vendors.
    #[arg(long, env = "VOCA_WEIGHT", default_value_t = 1)]
    weight: u32,
    /// Character store URL: file:///path for a local directory, or s3://BUCKET
    /// for an S3 bucket (credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY).
    #[arg(long, env = "VOCA_CHARACTERS")]
    characters: String,
    /// S3 endpoint URL, such as http://127.0.0.1:3900 [default: the AWS endpoint of --s3-region].
    #[arg(long, env = "VOCA_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// S3 region used to sign requests, which must match the server's region.
    #[arg(long, env = "VOCA_S3_REGION", default_value = store::S3_DEFAULT_REGION)]
    s3_region: String,
    /// Address the bucket in the URL path (http://host/bucket/key), as most
    /// self-hosted S3 servers need, instead of in the host name.
    #[arg(long, env = "VOCA_S3_PATH_STYLE")]
    s3_path_style: bool,
    /// Lease TTL of the etcd registration, in seconds.
    #[arg(long, env = "VOCA_LEASE_TTL", default_value_t = DEFAULT_LEASE_TTL.as_secs())]
    lease_ttl: u64,
    /// Redis URL (redis://host:port) for state shared by the pool nodes: cached
    /// characters and conversation history [default: none, each node keeps its own].
    #[arg(long = "redis", env = "VOCA_REDIS_URL")]
    redis_url: Option<String>,
    /// Memory budget of the character cache, in bytes.
    #[arg(long, env = "VOCA_CACHE_BYTES", default_value_t = DEFAULT_CACHE_BYTES)]
    cache_bytes: u64,
    /// Time a loaded character is served before its files are read again, in seconds.
    #[arg(long, env = "VOCA_CACHE_TTL", default_value_t = DEFAULT_CACHE_TTL.as_secs())]
    cache_ttl: u64,
    /// Time allowed for in-flight calls at shutdown, in seconds.
    #[arg(long, env = "VOCA_SHUTDOWN_DEADLINE", default_value_t = DEFAULT_SHUTDOWN_DEADLINE.as_secs())]
    shutdown_deadline: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing();
    let endpoints = split_endpoints(&args.etcd_endpoints);
    anyhow::ensure!(
        !endpoints.is_empty(),
        "--etcd is empty; give at least one etcd endpoint"
    );
    anyhow::ensure!(
        args.lease_ttl >= 2,
        "--lease-ttl {} is too short; use 2 seconds or more",
        args.lease_ttl
    );
    let s3 = store::S3Config {
        endpoint: args.s3_endpoint.clone(),
        region: args.s3_region.clone(),
        path_style: args.s3_path_style,
        access_key_id: env_credential("AWS_ACCESS_KEY_ID")?,
        secret_access_key: env_credential("AWS_SECRET_ACCESS_KEY")?,
        session_token: env_credential("AWS_SESSION_TOKEN")?,
    };
    let store = store::open_store(&args.characters, &s3).map_err(anyhow::Error::msg)?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"), listen = %args.listen, etcd = ?endpoints,
        node_id = %args.node_id, characters = %store.describe(), "starting voca-pool-node"
    );

    let hot: Arc<dyn HotState> = match &args.redis_url {
        Some(url) => {
            let state = RedisState::new(url)
                .map_err(|e| anyhow::anyhow!("invalid --redis URL: {e}; use redis://host:port"))?;
            tracing::info!(redis = %state.describe(), "shared state in Redis");
            Arc::new(state)
        }
        None => Arc::new(LocalState),
    };
    let config = PoolNodeConfig {
        node_id: args.node_id,
        listen: args.listen,
        advertise: args.advertise,
        weight: args.weight,
        store: Arc::from(store),
        hot,
        responder: Arc::new(OfflineResponder::new()),
        cache_bytes: args.cache_bytes,
        cache_ttl: Duration::from_secs(args.cache_ttl),
        ring_params: RingParams::default(),
        membership: MembershipConfig::Etcd {
            endpoints,
            prefix: args.etcd_prefix,
            lease_ttl: Duration::from_secs(args.lease_ttl),
        },
        shutdown_deadline: Duration::from_secs(args.shutdown_deadline),
    };
    let node = tokio::select! {
        node = voca_pool_node::start(config) => node?,
        () = shutdown_signal() => return Ok(()),
    };
    shutdown_signal().await;
    node.shutdown().await;
    Ok(())
}

/// Reads a credential from the environment. An unset or empty variable means
/// no credential.
fn env_credential(name: &str) -> anyhow::Result<Option<String>> {
    match std::env::var(name) {
        Ok(value) if value.is_empty() => Ok(None),
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            anyhow::bail!("{name} is not valid UTF-8; set it to the S3 credential as plain text")
        }
    }
}
