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
use voca_pool_node::server::{DEFAULT_DRAIN_GRACE, DEFAULT_LEASE_TTL, DEFAULT_SHUTDOWN_DEADLINE};
use voca_pool_node::{MembershipConfig, PoolNodeConfig};
use voca_storage::args::StoreArgs;

/// mimalloc rather than glibc's malloc, which took about a tenth of the
/// mesh's CPU time under load (perf). Built without transparent huge pages,
/// which made a pool node's RSS several times its cache budget.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    #[command(flatten)]
    store: StoreArgs,
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
    /// Time a draining node (on SIGTERM or Ctrl-C) keeps answering new calls,
    /// so that every gateway has seen it draining, in milliseconds.
    #[arg(long, env = "VOCA_DRAIN_GRACE_MS", default_value_t = DEFAULT_DRAIN_GRACE.as_millis() as u64)]
    drain_grace_ms: u64,
    /// Time allowed for the whole drain at shutdown (grace period, then the
    /// calls in flight), in seconds.
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
    anyhow::ensure!(
        args.drain_grace_ms < args.shutdown_deadline.saturating_mul(1000),
        "--drain-grace-ms {} is not shorter than --shutdown-deadline {} s; the deadline covers the grace period and the calls in flight after it",
        args.drain_grace_ms,
        args.shutdown_deadline
    );
    let store = args.store.open().map_err(anyhow::Error::msg)?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"), listen = %args.listen, etcd = ?endpoints,
        node_id = %args.node_id, characters = %store.describe(), "starting voca-pool-node"
    );

    let hot: Arc<dyn HotState> = match &args.redis_url {
        Some(url) => {
            let state = RedisState::new(url)
                .map_err(|e| anyhow::anyhow!("invalid --redis URL: {e}; use redis://host:port"))?;
            tracing::info!(redis = %state.url(), "shared state in Redis");
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
        drain_grace: Duration::from_millis(args.drain_grace_ms),
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
