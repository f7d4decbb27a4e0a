//! The gateway's routing table: the ring, the pool nodes left out of it as
//! unreachable, and one HTTP/2 channel per pool node, rebuilt off the
//! request path whenever either changes.
//!
//! A pool node is left out the moment a call to it or a health check fails
//! to connect, and stays left out, across changes of the ring, until its
//! membership key is gone or it passes a health check again. Its vendors go
//! to the next distinct node on the ring meanwhile, without waiting for its
//! lease to expire.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::future::join_all;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use voca_common::{Member, Ring, RingHandle};

/// Time allowed to open a connection to a pool node.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Interval of HTTP/2 pings that detect a dead pool node connection.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Interval of the health checks of every pool node.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// Time a health check may take before it counts as failed.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Health checks in a row that must time out before a node is left out. A
/// refused or broken connection leaves it out at once.
pub const PROBE_TIMEOUTS_TO_LEAVE_OUT: u32 = 3;
/// Time a call waits for the table that leaves out a node it found
/// unreachable.
const LEAVE_OUT_WAIT: Duration = Duration::from_millis(500);

/// A channel to one pool node, with a serial number that tells channels
/// apart: a reused channel keeps its serial, a new one gets the next.
#[derive(Clone)]
struct NodeChannel {
    address: String,
    channel: Channel,
    serial: u64,
}

static NEXT_SERIAL: AtomicU64 = AtomicU64::new(1);

/// A ring snapshot, the nodes left out of it, and a channel for each node.
pub struct RouteTable {
    /// Membership's ring without the left-out nodes: the ring calls are routed on.
    ring: Arc<Ring>,
    /// Ids of the registered nodes left out as unreachable, sorted.
    left_out: Vec<String>,
    /// Channels by node id, for every serving node of `base`; `None` where
    /// the address cannot be dialed.
    channels: HashMap<String, Option<NodeChannel>>,
}

/// The owner of a vendor and the channel to it.
pub struct Route<'a> {
    pub member: &'a Member,
    pub channel: Option<&'a Channel>,
}

impl RouteTable {
    fn empty(ring: Arc<Ring>) -> Self {
        Self {
            ring,
            left_out: Vec::new(),
            channels: HashMap::new(),
        }
    }

    /// Builds a table for `base` without the registered nodes of
    /// `left_out`, reusing the channels of `previous` for nodes whose
    /// address is unchanged.
    fn rebuild(previous: &RouteTable, base: Arc<Ring>, left_out: &BTreeSet<String>) -> Self {
        let channels = base
            .members()
            .iter()
            .map(|member| {
                let reused = previous
                    .channels
                    .get(&member.id)
                    .and_then(Option::as_ref)
                    .filter(|c| c.address == member.address)
                    .cloned();
                let channel = reused.or_else(|| open_channel(member));
                (member.id.clone(), channel)
            })
            .collect();
        let left_out: Vec<String> = left_out
            .iter()
            .filter(|id| base.member(id).is_some())
            .cloned()
            .collect();
        let ring = if left_out.is_empty() {
            base.clone()
        } else {
            Arc::new(base.without(&left_out))
        };
        Self {
            ring,
            left_out,
            channels,
        }
    }

    /// The ring calls are routed on: membership's ring without the nodes
    /// left out.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// Ids of the nodes left out as unreachable, sorted.
    pub fn left_out(&self) -> &[String] {
        &self.left_out
    }

    /// Returns the owner of `vendor_id`, or `None` when no pool node is
    /// on the ring.
    pub fn route(&self, vendor_id: &str) -> Option<Route<'_>> {
        let member = self.ring.owner(vendor_id)?;
        Some(Route {
            member,
            channel: self.channel(&member.id),
        })
    }

    /// Returns the channel to the serving node `node_id`.
    pub fn channel(&self, node_id: &str) -> Option<&Channel> {
        self.channels
            .get(node_id)
            .and_then(Option::as_ref)
            .map(|c| &c.channel)
    }

    /// Returns the serial number of the channel to `node_id`, which changes
    /// only when the channel is made anew.
    pub fn channel_serial(&self, node_id: &str) -> Option<u64> {
        self.channels
            .get(node_id)
            .and_then(Option::as_ref)
            .map(|c| c.serial)
    }
}

/// Opens a channel to `member`, or returns `None` when its address cannot
/// be dialed.
fn open_channel(member: &Member) -> Option<NodeChannel> {
    match dial(&member.address) {
        Some(channel) => {
            tracing::debug!(node_id = %member.id, address = %member.address, "opening channel");
            Some(NodeChannel {
                address: member.address.clone(),
                channel,
                serial: NEXT_SERIAL.fetch_add(1, Ordering::Relaxed),
            })
        }
        None => {
            tracing::warn!(node_id = %member.id, address = %member.address, "pool node address cannot be dialed");
            None
        }
    }
}

/// Makes a lazily connecting channel to a pool node at `address`.
pub fn dial(address: &str) -> Option<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{address}")).ok()?;
    Some(
        endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(CONNECT_TIMEOUT * 5)
            .keep_alive_while_idle(true)
            .connect_lazy(),
    )
}

/// A finding of the health checks or of a failed call about a node.
#[derive(Debug)]
enum Finding {
    Unreachable(String),
    Reachable(String),
}

/// The current route table, kept in step with a ring handle and with what
/// calls and health checks find out about the nodes.
pub struct Router {
    table: Arc<ArcSwap<RouteTable>>,
    findings: mpsc::UnboundedSender<Finding>,
    generations: watch::Receiver<u64>,
    tasks: Vec<JoinHandle<()>>,
}

impl Router {
    /// Builds the first table from the ring's current snapshot, and follows
    /// the ring and checks the health of its nodes until dropped.
    pub fn follow(ring: RingHandle) -> Self {
        let first = RouteTable::rebuild(
            &RouteTable::empty(Arc::new(Ring::empty(ring.params()))),
            ring.load(),
            &BTreeSet::new(),
        );
        let table = Arc::new(ArcSwap::from_pointee(first));
        let (findings, received) = mpsc::unbounded_channel();
        let (generation, generations) = watch::channel(0);
        let maintainer = tokio::spawn(maintain(ring, table.clone(), received, generation));
        let prober = tokio::spawn(probe(table.clone(), findings.clone()));
        Self {
            table,
            findings,
            generations,
            tasks: vec![maintainer, prober],
        }
    }

    /// Returns the current table.
    pub fn load(&self) -> Arc<RouteTable> {
        self.table.load_full()
    }

    /// Leaves out `node_id`, which a call could not reach, and returns the
    /// table without it, or the current table if that takes longer than
    /// [`LEAVE_OUT_WAIT`].
    pub async fn leave_out(&self, node_id: &str) -> Arc<RouteTable> {
        let left_out = |table: &RouteTable| table.ring.member(node_id).is_none();
        let mut generations = self.generations.clone();
        let current = self.load();
        if left_out(&current) {
            return current;
        }
        let _ = self.findings.send(Finding::Unreachable(node_id.to_owned()));
        let _ = tokio::time::timeout(LEAVE_OUT_WAIT, async {
            while generations.changed().await.is_ok() {
                if left_out(&self.load()) {
                    break;
                }
            }
        })
        .await;
        self.load()
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Rebuilds the table whenever the ring changes or a node is found
/// unreachable or reachable again.
async fn maintain(
    ring: RingHandle,
    table: Arc<ArcSwap<RouteTable>>,
    mut findings: mpsc::UnboundedReceiver<Finding>,
    generation: watch::Sender<u64>,
) {
    let mut versions = ring.subscribe();
    let mut left_out = BTreeSet::new();
    loop {
        let base = tokio::select! {
            changed = versions.changed() => {
                if changed.is_err() {
                    return;
                }
                ring.load()
            }
            finding = findings.recv() => {
                let Some(finding) = finding else { return };
                let base = ring.load();
                let mut changed = apply(&mut left_out, finding, &base);
                while let Ok(more) = findings.try_recv() {
                    changed |= apply(&mut left_out, more, &base);
                }
                if !changed {
                    continue;
                }
                base
            }
        };
        // A node whose key is gone is no longer left out: it left.
        left_out.retain(|id| base.is_registered(id));
        let next = RouteTable::rebuild(&table.load(), base, &left_out);
        tracing::debug!(
            ring_version = next.ring.version(),
            pool_nodes = next.ring.len(),
            left_out = ?next.left_out,
            "route table updated"
        );
        table.store(Arc::new(next));
        generation.send_modify(|g| *g += 1);
    }
}

/// Applies a finding to the set of left-out nodes; returns whether it changed.
fn apply(left_out: &mut BTreeSet<String>, finding: Finding, base: &Ring) -> bool {
    match finding {
        Finding::Unreachable(id) if base.member(&id).is_some() => {
            let added = left_out.insert(id.clone());
            if added {
                tracing::warn!(node_id = %id, "pool node unreachable; sending its vendors to the next node on the ring");
            }
            added
        }
        Finding::Unreachable(_) => false,
        Finding::Reachable(id) => {
            let removed = left_out.remove(&id);
            if removed {
                tracing::info!(node_id = %id, "pool node passed its health check; routing to it again");
            }
            removed
        }
    }
}

/// Checks the health of every serving node of the ring, left out or not,
/// every [`PROBE_INTERVAL`].
async fn probe(table: Arc<ArcSwap<RouteTable>>, findings: mpsc::UnboundedSender<Finding>) {
    let mut timeouts: HashMap<String, u32> = HashMap::new();
    let mut interval = tokio::time::interval(PROBE_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let current = table.load_full();
        let checks = current.channels.iter().filter_map(|(id, channel)| {
            let channel = channel.as_ref()?.channel.clone();
            Some(async move { (id.clone(), check(channel).await) })
        });
        for (id, health) in join_all(checks).await {
            let left_out = current.left_out.binary_search(&id).is_ok();
            let finding = match health {
                Health::Serving => {
                    timeouts.remove(&id);
                    left_out.then_some(Finding::Reachable(id))
                }
                Health::Other => {
                    timeouts.remove(&id);
                    None
                }
                Health::Unreachable => (!left_out).then_some(Finding::Unreachable(id)),
                Health::TimedOut => {
                    let count = timeouts.entry(id.clone()).or_default();
                    *count += 1;
                    (*count >= PROBE_TIMEOUTS_TO_LEAVE_OUT && !left_out)
                        .then_some(Finding::Unreachable(id))
                }
            };
            if let Some(finding) = finding {
                let _ = findings.send(finding);
            }
        }
        timeouts.retain(|id, _| current.channels.contains_key(id));
    }
}

enum Health {
    Serving,
    /// The node answered with another status, such as NOT_SERVING while it
    /// drains. Draining nodes leave the ring through membership.
    Other,
    Unreachable,
    TimedOut,
}

async fn check(channel: Channel) -> Health {
    let request = HealthCheckRequest {
        service: "voca.v1.PoolNode".to_owned(),
    };
    match tokio::time::timeout(PROBE_TIMEOUT, HealthClient::new(channel).check(request)).await {
        Err(_) => Health::TimedOut,
        Ok(Ok(response)) if response.get_ref().status == ServingStatus::Serving as i32 => {
            Health::Serving
        }
        Ok(Ok(_)) => Health::Other,
        Ok(Err(status)) if is_unreachable(&status) => Health::Unreachable,
        Ok(Err(_)) => Health::Other,
    }
}

/// Returns whether a failed call never reached a live pool node or lost
/// its connection: the channel could not connect, or the connection broke.
/// Such a status carries the transport error as its source, which a status
/// sent by a pool node never does.
pub fn is_unreachable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
    ) && std::error::Error::source(status).is_some()
}

#[cfg(test)]
mod tests {
    use voca_common::{NodeState, RingParams};

    use super::*;

    fn member(id: &str, address: &str) -> Member {
        Member {
            id: id.to_owned(),
            address: address.to_owned(),
            weight: 1,
            state: NodeState::Serving,
            version: "test".to_owned(),
            incarnation: String::new(),
        }
    }

    fn ring(version: u64, members: &[Member]) -> Arc<Ring> {
        Arc::new(Ring::build(
            RingParams::default(),
            version,
            members.to_vec(),
        ))
    }

    #[tokio::test]
    async fn channels_follow_membership() {
        let none = BTreeSet::new();
        let a = member("pool-a", "127.0.0.1:7001");
        let b = member("pool-b", "127.0.0.1:7002");
        let empty = RouteTable::empty(ring(0, &[]));
        let first = RouteTable::rebuild(&empty, ring(1, &[a.clone(), b.clone()]), &none);
        let a_serial = first
            .channel_serial("pool-a")
            .expect("channel made when pool-a joins");
        let b_serial = first
            .channel_serial("pool-b")
            .expect("channel made when pool-b joins");
        assert_ne!(a_serial, b_serial);

        let moved_b = member("pool-b", "127.0.0.1:7102");
        let second = RouteTable::rebuild(&first, ring(2, &[a.clone(), moved_b]), &none);
        assert_eq!(
            second.channel_serial("pool-a"),
            Some(a_serial),
            "unchanged address reuses the channel"
        );
        let new_b = second.channel_serial("pool-b").unwrap();
        assert_ne!(new_b, b_serial, "a new address gets a new channel");

        let third = RouteTable::rebuild(&second, ring(3, &[a]), &none);
        assert_eq!(
            third.channel_serial("pool-b"),
            None,
            "a node that left has no channel"
        );
        assert_eq!(third.channel_serial("pool-a"), Some(a_serial));
    }

    #[tokio::test]
    async fn left_out_node_keeps_channel() {
        let a = member("pool-a", "127.0.0.1:7001");
        let b = member("pool-b", "127.0.0.1:7002");
        let empty = RouteTable::empty(ring(0, &[]));
        let full = RouteTable::rebuild(&empty, ring(1, &[a.clone(), b.clone()]), &BTreeSet::new());
        let vendor_of_b = (0..1000)
            .map(|i| format!("vendor-{i}"))
            .find(|v| full.route(v).unwrap().member.id == "pool-b")
            .expect("pool-b owns some vendor");
        let unreachable = BTreeSet::from(["pool-b".to_owned(), "pool-gone".to_owned()]);
        let reduced = RouteTable::rebuild(&full, ring(1, &[a, b]), &unreachable);
        assert_eq!(reduced.left_out(), ["pool-b"], "only members are left out");
        assert_eq!(reduced.route(&vendor_of_b).unwrap().member.id, "pool-a");
        assert_eq!(
            reduced.channel_serial("pool-b"),
            full.channel_serial("pool-b"),
            "the channel stays for health checks"
        );
        assert_eq!(reduced.ring().version(), 1);
    }

    #[tokio::test]
    async fn undialable_address_has_no_channel() {
        let none = BTreeSet::new();
        let bad = member("pool-a", "127.0.0.1:7001 x");
        let table = RouteTable::rebuild(&RouteTable::empty(ring(0, &[])), ring(1, &[bad]), &none);
        let route = table.route("any-vendor").expect("the ring has a member");
        assert_eq!(route.member.id, "pool-a");
        assert!(route.channel.is_none());
    }
}
