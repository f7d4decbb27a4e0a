//! Starting and stopping a pool node: bind, join the ring, serve, leave.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic_health::server::HealthReporter;
use voca_character::Responder;
use voca_common::membership::etcd::{self, Keys, Registration};
use voca_common::membership::local::LocalMembership;
use voca_common::{Member, NodeState, RingHandle, RingParams};
use voca_proto::v1::pool_node_server::PoolNodeServer;

use crate::agents::Agents;
use crate::hot::HotState;
use crate::service::PoolNodeService;
use crate::store::CharacterStore;

/// Default lease TTL of a pool node's registration.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);
/// Default time allowed for a drain: the grace period, then the calls in
/// flight.
pub const DEFAULT_SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);
/// Default time a draining node keeps answering new calls, so that every
/// gateway has seen it draining before it stops listening.
pub const DEFAULT_DRAIN_GRACE: Duration = Duration::from_secs(2);

/// The membership a pool node registers in.
#[derive(Clone)]
pub enum MembershipConfig {
    Etcd {
        endpoints: Vec<String>,
        prefix: String,
        lease_ttl: Duration,
    },
    /// In-process membership, for the quickstart.
    Local(LocalMembership),
}

/// Everything a pool node needs to start.
pub struct PoolNodeConfig {
    pub node_id: String,
    pub listen: SocketAddr,
    /// Address gateways dial; the bound listen address when `None`.
    pub advertise: Option<String>,
    pub weight: u32,
    pub store: Arc<dyn CharacterStore>,
    /// State shared with the other pool nodes: Redis, or
    /// [`crate::hot::LocalState`] where there is none.
    pub hot: Arc<dyn HotState>,
    pub responder: Arc<dyn Responder>,
    pub cache_bytes: u64,
    /// Time a loaded character is served before it is read again.
    pub cache_ttl: Duration,
    pub ring_params: RingParams,
    pub membership: MembershipConfig,
    /// Time a draining node keeps answering new calls; see
    /// [`RunningPoolNode::shutdown`].
    pub drain_grace: Duration,
    pub shutdown_deadline: Duration,
}

/// A started pool node.
pub struct RunningPoolNode {
    node_id: String,
    local_addr: SocketAddr,
    leave: Leave,
    health: HealthReporter,
    stop: oneshot::Sender<()>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    watcher: Option<JoinHandle<()>>,
    /// Tasks that keep the agent cache in step with the ring and with
    /// announced changes.
    background: Vec<JoinHandle<()>>,
    drain_grace: Duration,
    shutdown_deadline: Duration,
}

enum Leave {
    Etcd(Registration),
    Local(LocalMembership),
}

impl RunningPoolNode {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Drains the node and stops it, within the shutdown deadline:
    ///
    /// 1. marks the node draining in its membership record and reports
    ///    NOT_SERVING on the health service, so gateways send its vendors
    ///    to the next node on the ring;
    /// 2. keeps answering calls for the drain grace period, while gateways
    ///    that have not seen the change still send some;
    /// 3. stops accepting connections and lets the calls in flight finish;
    /// 4. revokes its lease, which removes it from the ring at once.
    pub async fn shutdown(self) {
        let started = tokio::time::Instant::now();
        let deadline = started + self.shutdown_deadline;
        self.health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        self.health
            .set_not_serving::<PoolNodeServer<PoolNodeService>>()
            .await;
        match &self.leave {
            Leave::Etcd(registration) => {
                let marked =
                    tokio::time::timeout_at(deadline, registration.set_state(NodeState::Draining))
                        .await;
                match marked {
                    Ok(Ok(())) => {
                        tracing::info!(node_id = %self.node_id, grace = ?self.drain_grace, "draining")
                    }
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "marking the node draining in etcd failed; gateways see it leave when its lease is revoked")
                    }
                    Err(_) => tracing::warn!("marking the node draining in etcd timed out"),
                }
            }
            Leave::Local(membership) => membership.set_state(&self.node_id, NodeState::Draining),
        }
        tokio::time::sleep_until((started + self.drain_grace).min(deadline)).await;

        let _ = self.stop.send(());
        match tokio::time::timeout_at(deadline, self.server).await {
            Ok(_) => tracing::info!(node_id = %self.node_id, "calls in flight finished"),
            Err(_) => tracing::warn!(
                node_id = %self.node_id, deadline = ?self.shutdown_deadline,
                "shutdown deadline passed with calls still in flight"
            ),
        }
        match self.leave {
            Leave::Etcd(registration) => {
                if let Err(error) = registration.revoke().await {
                    tracing::warn!(%error, "revoking the lease failed; the key expires with its TTL");
                }
            }
            Leave::Local(membership) => membership.deregister(&self.node_id),
        }
        if let Some(watcher) = self.watcher {
            watcher.abort();
        }
        for task in &self.background {
            task.abort();
        }
        tracing::info!(node_id = %self.node_id, took = ?started.elapsed(), "pool node stopped");
    }
}

/// Binds the listener, joins the ring and starts serving.
///
/// Fails when etcd holds other ring parameters or another live node holds
/// the node id. While etcd is unreachable it retries.
pub async fn start(config: PoolNodeConfig) -> anyhow::Result<RunningPoolNode> {
    voca_common::input::check_node_id(&config.node_id)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {} failed", config.listen))?;
    let local_addr = listener.local_addr()?;
    let advertise = match config.advertise.clone() {
        Some(address) => address,
        None if local_addr.ip().is_unspecified() => anyhow::bail!(
            "--listen {local_addr} is a wildcard address; set --advertise to the address gateways should dial"
        ),
        None => local_addr.to_string(),
    };
    let incarnation = format!("{:016x}", uuid::Uuid::new_v4().as_u64_pair().0);
    let member = Member {
        id: config.node_id.clone(),
        address: advertise,
        weight: config.weight,
        state: NodeState::Serving,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        incarnation: incarnation.clone(),
    };
    member
        .check()
        .context("invalid pool node settings (--node-id, --advertise or --weight)")?;

    let (ring, etcd_client, watcher) = match &config.membership {
        MembershipConfig::Etcd {
            endpoints, prefix, ..
        } => {
            let client = etcd::connect(endpoints).await?;
            let keys = Keys::new(prefix);
            etcd::retry_unavailable("checking ring parameters", || {
                etcd::ensure_ring_params(client.clone(), &keys, config.ring_params)
            })
            .await?;
            let ring = RingHandle::new(config.ring_params);
            let watcher = etcd::spawn_watcher(client.clone(), keys, ring.clone());
            (ring, Some(client), Some(watcher))
        }
        MembershipConfig::Local(membership) => (membership.ring(), None, None),
    };

    let agents = Arc::new(Agents::new(
        config.store.clone(),
        config.hot.clone(),
        &config.node_id,
        config.cache_bytes,
        config.cache_ttl,
    ));
    let mut background = vec![crate::rebalance::spawn(
        config.node_id.clone(),
        ring.clone(),
        agents.clone(),
        config.hot.clone(),
    )];
    if let Some(mut changes) = config.hot.watch_changes() {
        let agents = agents.clone();
        background.push(tokio::spawn(async move {
            while let Some(vendor_id) = changes.recv().await {
                agents.evict(&vendor_id).await;
                tracing::debug!(vendor_id, "vendor changed; dropped its agent");
            }
        }));
    }
    // The node takes messages only while it is registered.
    let lease_live = Arc::new(AtomicBool::new(false));
    let service = PoolNodeService::new(
        config.node_id.clone(),
        agents,
        config.hot.clone(),
        config.responder.clone(),
        ring,
        incarnation,
        lease_live.clone(),
    );
    background.push(service.spawn_settler());
    let (health, health_service) = tonic_health::server::health_reporter();
    // The node reports NOT_SERVING until it is registered on the ring.
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    health
        .set_not_serving::<PoolNodeServer<PoolNodeService>>()
        .await;
    let (reflection_v1, reflection_v1alpha) =
        voca_common::grpc::reflection_services(&["voca.v1.PoolNode"]);
    let (stop, stopped) = oneshot::channel::<()>();
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = tokio::spawn(
        Server::builder()
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(PoolNodeServer::new(service))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );

    let leave = match (&config.membership, etcd_client) {
        (
            MembershipConfig::Etcd {
                prefix, lease_ttl, ..
            },
            Some(client),
        ) => {
            let keys = Keys::new(prefix);
            let registration = etcd::retry_unavailable("registering in etcd", || {
                etcd::register(client.clone(), &keys, member.clone(), *lease_ttl)
            })
            .await;
            match registration {
                Ok(registration) => {
                    let mut live = registration.live();
                    let lease_live = lease_live.clone();
                    background.push(tokio::spawn(async move {
                        loop {
                            lease_live.store(*live.borrow_and_update(), Ordering::Relaxed);
                            if live.changed().await.is_err() {
                                return;
                            }
                        }
                    }));
                    Leave::Etcd(registration)
                }
                Err(error) => {
                    let _ = stop.send(());
                    background.iter().for_each(JoinHandle::abort);
                    return Err(error.into());
                }
            }
        }
        (MembershipConfig::Local(membership), _) => {
            if let Err(error) = membership.register(member.clone()) {
                let _ = stop.send(());
                background.iter().for_each(JoinHandle::abort);
                return Err(error.into());
            }
            lease_live.store(true, Ordering::Relaxed);
            Leave::Local(membership.clone())
        }
        (MembershipConfig::Etcd { .. }, None) => {
            unreachable!("an etcd membership always has a client")
        }
    };
    health
        .set_serving::<PoolNodeServer<PoolNodeService>>()
        .await;
    tracing::info!(node_id = %member.id, listen = %local_addr, advertise = %member.address, "pool node serving");

    Ok(RunningPoolNode {
        node_id: config.node_id,
        local_addr,
        leave,
        health,
        stop,
        server,
        watcher,
        background,
        drain_grace: config.drain_grace,
        shutdown_deadline: config.shutdown_deadline,
    })
}
