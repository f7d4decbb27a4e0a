//! Starting and stopping a gateway.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use voca_common::membership::RingSource;
use voca_common::{RingHandle, RingParams};
use voca_proto::v1::gateway_server::GatewayServer;
use voca_proto::v1::vendor_registry_server::VendorRegistryServer;

use crate::registry::{RegistryProxy, MAX_REGISTRY_MESSAGE_BYTES};
use crate::routes::Router;
use crate::service::GatewayService;

/// Default time allowed for in-flight calls to finish at shutdown.
pub const DEFAULT_SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

pub struct GatewayConfig {
    pub listen: SocketAddr,
    /// Address (host:port) of the vendor registry whose API the gateway
    /// serves too, or `None` to serve messages only.
    pub registry: Option<String>,
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
    let (ring, watcher) = config.ring_source.follow(config.ring_params).await?;
    let router = Arc::new(Router::follow(ring.clone()));
    let registry = match &config.registry {
        Some(address) => RegistryProxy::new(address).map_err(anyhow::Error::msg)?,
        None => RegistryProxy::none(),
    };

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {} failed", config.listen))?;
    let local_addr = listener.local_addr()?;
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<GatewayServer<GatewayService>>().await;
    let (reflection_v1, reflection_v1alpha) =
        voca_common::grpc::reflection_services(&["voca.v1.Gateway", "voca.v1.VendorRegistry"]);
    let (stop, stopped) = oneshot::channel::<()>();
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = tokio::spawn(
        Server::builder()
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(GatewayServer::new(GatewayService::new(router)))
            .add_service(
                VendorRegistryServer::new(registry)
                    .max_decoding_message_size(MAX_REGISTRY_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_REGISTRY_MESSAGE_BYTES),
            )
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
