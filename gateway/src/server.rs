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
use voca_common::membership::{MembershipError, RingSource};
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
    first_ring: JoinHandle<()>,
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
        self.first_ring.abort();
    }
}

/// Time the gateway waits at start for etcd before it serves without a ring.
const ETCD_START_WAIT: Duration = Duration::from_secs(3);

/// Starts following the ring. When etcd does not respond within
/// [`ETCD_START_WAIT`], the gateway logs an error and serves anyway. Calls
/// then get UNAVAILABLE until etcd responds, and are routed from then on.
async fn follow_ring(
    source: RingSource,
    params: RingParams,
) -> anyhow::Result<(RingHandle, Option<JoinHandle<()>>)> {
    let RingSource::Etcd { endpoints, prefix } = source else {
        return Ok(source.follow(params).await?);
    };
    let client = etcd::connect(&endpoints).await?;
    let keys = Keys::new(&prefix);
    let ring = RingHandle::new(params);
    let checked = tokio::time::timeout(
        ETCD_START_WAIT,
        etcd::ensure_ring_params(client.clone(), &keys, params),
    )
    .await;
    match checked {
        Ok(Ok(())) => {}
        Ok(Err(error @ (MembershipError::Etcd(_) | MembershipError::Timeout(_)))) => {
            tracing::error!(etcd = ?endpoints, %error, "etcd is unreachable; serving with no pool nodes, returning UNAVAILABLE until etcd responds");
        }
        Err(_) => {
            tracing::error!(etcd = ?endpoints, wait = ?ETCD_START_WAIT, "etcd did not respond; serving with no pool nodes, returning UNAVAILABLE until etcd responds");
        }
        Ok(Err(error)) => return Err(error.into()),
    }
    let watcher = etcd::spawn_checked_watcher(client, keys, ring.clone());
    Ok((ring, Some(watcher)))
}

/// Starts following the ring, binds the listener and starts serving.
///
/// Fails when etcd holds other ring parameters. While etcd is unreachable
/// it serves, returning UNAVAILABLE until etcd responds.
pub async fn start(config: GatewayConfig) -> anyhow::Result<RunningGateway> {
    let (ring, watcher) = follow_ring(config.ring_source, config.ring_params).await?;
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
    // The gateway reports NOT_SERVING, for its service and for the server as
    // a whole (the name Kubernetes probes check), until it has read the ring.
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    health
        .set_not_serving::<GatewayServer<GatewayService>>()
        .await;
    let mut versions = ring.subscribe();
    let first_ring = tokio::spawn(async move {
        while *versions.borrow_and_update() == 0 {
            if versions.changed().await.is_err() {
                return;
            }
        }
        health
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        health.set_serving::<GatewayServer<GatewayService>>().await;
    });
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
        first_ring,
        shutdown_deadline: config.shutdown_deadline,
    })
}
