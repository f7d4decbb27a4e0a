//! `voca-gateway`: the public entry point of a Voca mesh.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use voca_common::membership::etcd::DEFAULT_PREFIX;
use voca_common::process::{init_tracing, shutdown_signal, split_endpoints};
use voca_common::RingParams;
use voca_gateway::server::DEFAULT_SHUTDOWN_DEADLINE;
use voca_gateway::{GatewayConfig, RingSource};

/// mimalloc rather than glibc's malloc, which took about a tenth of the
/// mesh's CPU time under load (perf). Built without transparent huge pages,
/// which made a pool node's RSS several times its cache budget.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Routes each vendor's messages to the pool node that owns it on the ring.
#[derive(Parser, Debug)]
#[command(name = "voca-gateway", version)]
struct Args {
    /// Address to listen on, as host:port.
    #[arg(long, env = "VOCA_LISTEN", default_value = "127.0.0.1:50051")]
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
    /// Address (host:port) of voca-registry, whose vendor API this gateway
    /// then serves on its own endpoint too.
    #[arg(long, env = "VOCA_REGISTRY")]
    registry: Option<String>,
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
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"), listen = %args.listen, etcd = ?endpoints,
        prefix = %args.etcd_prefix, registry = ?args.registry, "starting voca-gateway"
    );
    let config = GatewayConfig {
        listen: args.listen,
        registry: args.registry,
        ring_source: RingSource::Etcd {
            endpoints,
            prefix: args.etcd_prefix,
        },
        ring_params: RingParams::default(),
        shutdown_deadline: Duration::from_secs(args.shutdown_deadline),
    };
    let gateway = tokio::select! {
        gateway = voca_gateway::start(config) => gateway?,
        () = shutdown_signal() => return Ok(()),
    };
    shutdown_signal().await;
    gateway.shutdown().await;
    Ok(())
}
