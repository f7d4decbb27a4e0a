//! `voca-registry`: the vendor registry of a Voca mesh.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use voca_common::membership::etcd::DEFAULT_PREFIX;
use voca_common::membership::RingSource;
use voca_common::process::{init_tracing, shutdown_signal, split_endpoints};
use voca_common::RingParams;
use voca_registry::server::{RegistryConfig, DEFAULT_SHUTDOWN_DEADLINE};
use voca_registry::{Database, DatabaseConfig};
use voca_storage::args::StoreArgs;
use voca_storage::hot::{RedisState, VendorChanges};

/// Creates, changes, lists and erases vendors.
#[derive(Parser, Debug)]
#[command(name = "voca-registry", version)]
struct Args {
    /// Address to listen on, as host:port.
    #[arg(long, env = "VOCA_LISTEN", default_value = "127.0.0.1:50061")]
    listen: SocketAddr,
    /// etcd endpoints, comma-separated, to report each vendor's pool node.
    #[arg(
        long = "etcd",
        env = "VOCA_ETCD_ENDPOINTS",
        default_value = "127.0.0.1:2379"
    )]
    etcd_endpoints: String,
    /// Key prefix of this mesh in etcd.
    #[arg(long, env = "VOCA_ETCD_PREFIX", default_value = DEFAULT_PREFIX)]
    etcd_prefix: String,
    /// PostgreSQL URL, postgres://USER:PASSWORD@HOST:PORT/DATABASE.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Most PostgreSQL connections held at once.
    #[arg(long, env = "VOCA_DATABASE_CONNECTIONS", default_value_t = 10)]
    database_connections: u32,
    /// Time allowed to get a PostgreSQL connection before a call fails with
    /// UNAVAILABLE, in seconds.
    #[arg(long, env = "VOCA_DATABASE_CONNECT_TIMEOUT", default_value_t = 5)]
    database_connect_timeout: u64,
    #[command(flatten)]
    store: StoreArgs,
    /// Redis URL (redis://host:port) shared with the pool nodes. Updates and
    /// deletions reach them through it at once [default: none, so pool nodes
    /// see changes when their cached copy expires].
    #[arg(long = "redis", env = "VOCA_REDIS_URL")]
    redis_url: Option<String>,
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
    let store = args.store.open().map_err(anyhow::Error::msg)?;
    let shared: Option<Arc<dyn VendorChanges>> = match &args.redis_url {
        Some(url) => {
            let state = RedisState::new(url)
                .map_err(|e| anyhow::anyhow!("invalid --redis URL: {e}; use redis://host:port"))?;
            Some(Arc::new(state))
        }
        None => {
            tracing::warn!("no --redis: pool nodes see updates and deletions only when their cached copy expires");
            None
        }
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"), listen = %args.listen, etcd = ?endpoints,
        characters = %store.describe(), shared_state = ?shared.as_ref().map(|s| s.describe()),
        "starting voca-registry"
    );
    let mut database = DatabaseConfig::new(args.database_url);
    database.max_connections = args.database_connections;
    database.connect_timeout = Duration::from_secs(args.database_connect_timeout.max(1));
    let database = tokio::select! {
        database = Database::connect(database) => database?,
        () = shutdown_signal() => return Ok(()),
    };
    let config = RegistryConfig {
        listen: args.listen,
        ring_source: RingSource::Etcd {
            endpoints,
            prefix: args.etcd_prefix,
        },
        ring_params: RingParams::default(),
        repository: Arc::new(database),
        store: Arc::from(store),
        shared,
        shutdown_deadline: Duration::from_secs(args.shutdown_deadline),
    };
    let registry = tokio::select! {
        registry = voca_registry::server::start(config) => registry?,
        () = shutdown_signal() => return Ok(()),
    };
    shutdown_signal().await;
    registry.shutdown().await;
    Ok(())
}
