//! Starting and stopping a registry.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use voca_common::membership::{Backoff, RingSource};
use voca_common::RingParams;
use voca_proto::v1::vendor_registry_server::VendorRegistryServer;
use voca_storage::hot::VendorChanges;
use voca_storage::store::CharacterStore;

use crate::registrar::Registrar;
use crate::repository::VendorRepository;
use crate::service::RegistryService;

/// Default time allowed for in-flight calls to finish at shutdown.
pub const DEFAULT_SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);
/// Largest request the registry decodes: a 1 MiB character and 8 MiB of
/// knowledge documents, with room for the encoding.
pub const MAX_REQUEST_BYTES: usize = 12 * 1024 * 1024;

pub struct RegistryConfig {
    pub listen: SocketAddr,
    /// Source of the ring's members, used to report each vendor's owner.
    pub ring_source: RingSource,
    pub ring_params: RingParams,
    pub repository: Arc<dyn VendorRepository>,
    pub store: Arc<dyn CharacterStore>,
    /// State shared with the pool nodes, through which changes reach them
    /// at once.
    pub shared: Option<Arc<dyn VendorChanges>>,
    pub shutdown_deadline: Duration,
}

/// A started registry.
pub struct RunningRegistry {
    local_addr: SocketAddr,
    stop: oneshot::Sender<()>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    background: Vec<JoinHandle<()>>,
    shutdown_deadline: Duration,
}

impl RunningRegistry {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting calls and lets in-flight calls finish within the
    /// shutdown deadline.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        match tokio::time::timeout(self.shutdown_deadline, self.server).await {
            Ok(_) => tracing::info!("registry stopped"),
            Err(_) => {
                tracing::warn!(deadline = ?self.shutdown_deadline, "shutdown deadline passed with calls still in flight")
            }
        }
        for task in self.background {
            task.abort();
        }
    }
}

/// Follows the ring, seeds the character store's templates, binds the
/// listener and starts serving.
pub async fn start(config: RegistryConfig) -> anyhow::Result<RunningRegistry> {
    let (ring, watcher) = config.ring_source.follow(config.ring_params).await?;
    let registrar = Arc::new(Registrar::new(
        config.repository,
        config.store,
        config.shared,
        ring,
    ));
    let mut background: Vec<JoinHandle<()>> = watcher.into_iter().collect();
    background.push(tokio::spawn(seed_templates(registrar.clone())));

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {} failed", config.listen))?;
    let local_addr = listener.local_addr()?;
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<VendorRegistryServer<RegistryService>>()
        .await;
    let (reflection_v1, reflection_v1alpha) =
        voca_common::grpc::reflection_services(&["voca.v1.VendorRegistry"]);
    let service = VendorRegistryServer::new(RegistryService::new(registrar))
        .max_decoding_message_size(MAX_REQUEST_BYTES);
    let (stop, stopped) = oneshot::channel::<()>();
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = tokio::spawn(
        Server::builder()
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );
    tracing::info!(listen = %local_addr, "registry serving");
    Ok(RunningRegistry {
        local_addr,
        stop,
        server,
        background,
        shutdown_deadline: config.shutdown_deadline,
    })
}

/// Writes the built-in templates to the store where it has none, retrying
/// while the store is unreachable. Registrations that name a missing
/// template fail with INVALID_ARGUMENT until this succeeds.
async fn seed_templates(registrar: Arc<Registrar>) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    loop {
        match registrar.templates().seed().await {
            Ok(written) if written.is_empty() => {
                tracing::info!("character store has every built-in template");
                return;
            }
            Ok(written) => {
                tracing::info!(?written, "wrote built-in templates to the character store");
                return;
            }
            Err(error) => {
                let delay = backoff.next_delay();
                tracing::warn!(%error, retry_in = ?delay, "writing built-in templates failed");
                tokio::time::sleep(delay).await;
            }
        }
    }
}
