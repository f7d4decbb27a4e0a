//! Starting and stopping a gateway.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use voca_common::membership::etcd::{self, Keys};
use voca_common::membership::local::LocalMembership;
use voca_common::{RingHandle, RingParams};
use voca_proto::v1::gateway_server::GatewayServer;

use crate::routes::Router;
use crate::service::GatewayService;

/// Default time allowed for in-flight calls to finish at shutdown.
pub const DEFAULT_SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// The membership source a gateway builds its ring from.
#[derive(Clone)]
pub enum RingSource {
    Etcd {
        endpoints: Vec<String>,
        prefix: String,
    },
    /// In-process membership, for the quickstart.
    Local(LocalMembership),
}

pub struct GatewayConfig {
    pub listen: SocketAddr,
    pub ring_source: RingSource,
    pub ring_params: RingParams,
    pub shutdown_deadline: Duration,
}

/// A started gateway.
pub struct RunningGateway {
    local_addr: SocketAddr,
    ring: RingHandle,
    stop: oneshot::Sender<()>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    watcher: Option<JoinHandle<()>>,
    shutdown_deadline: Duration,
}

impl RunningGateway {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Returns the ring this gateway routes on.
    pub fn ring(&self) -> &RingHandle {
        &self.ring
    }

    /// Stops accepting calls and lets in-flight calls finish within the
    /// shutdown deadline.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        match tokio::time::timeout(self.shutdown_deadline, self.server).await {
            Ok(_) => tracing::info!("gateway stopped"),
            Err(_) => {
                tracing::warn!(deadline = ?self.shutdown_deadline, "shutdown deadline passed with calls still in flight")
            }
        }
        if let Some(watcher) = self.watcher {
            watcher.abort();
        }
    }
}

/// Reads the ring, binds the listener and starts serving.
///
/// Fails when etcd holds other ring parameters. While etcd is unreachable
/// it retries.
pub async fn start(config: GatewayConfig) -> anyhow::Result<RunningGateway> {
    let (ring, watcher) = match config.ring_source {
        RingSource::Etcd { endpoints, prefix } => {
            let client = etcd::connect(&endpoints).await?;
            let keys = Keys::new(&prefix);
            etcd::retry_unavailable("checking ring parameters", || {
                etcd::ensure_ring_params(client.clone(), &keys, config.ring_params)
            })
            .await?;
            let ring = RingHandle::new(config.ring_params);
            let watcher = etcd::spawn_watcher(client, keys, ring.clone());
            (ring, Some(watcher))
        }
        RingSource::Local(membership) => (membership.ring(), None),
    };
    let router = Arc::new(Router::follow(ring.clone()));

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {} failed", config.listen))?;
    let local_addr = listener.local_addr()?;
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<GatewayServer<GatewayService>>().await;
    let (reflection_v1, reflection_v1alpha) =
        voca_common::grpc::reflection_services(&["voca.v1.Gateway"]);
    let (stop, stopped) = oneshot::channel::<()>();
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = tokio::spawn(
        Server::builder()
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(GatewayServer::new(GatewayService::new(router)))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );
    tracing::info!(listen = %local_addr, "gateway serving");
    Ok(RunningGateway {
        local_addr,
        ring,
        stop,
        server,
        watcher,
        shutdown_deadline: config.shutdown_deadline,
    })
}
