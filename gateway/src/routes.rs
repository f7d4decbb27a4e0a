//! The gateway's routing table: the ring and one HTTP/2 channel per pool
//! node, rebuilt off the request path whenever the ring changes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};
use voca_common::{Member, Ring, RingHandle};

/// Time allowed to open a connection to a pool node.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Interval of HTTP/2 pings that detect a dead pool node connection.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// A ring snapshot with a channel for each of its members.
pub struct RouteTable {
    ring: Arc<Ring>,
    /// Channels in the order of `ring.members()`; `None` where the address
    /// cannot be dialed.
    channels: Vec<Option<Channel>>,
}

/// The owner of a vendor and the channel to it.
pub struct Route<'a> {
    pub member: &'a Member,
    pub channel: Option<&'a Channel>,
}

impl RouteTable {
    fn empty(ring: Arc<Ring>) -> Self {
        Self {
            channels: vec![None; ring.len()],
            ring,
        }
    }

    /// Builds a table for `ring`, reusing the channels of `previous` for
    /// members whose address is unchanged. A new member or a new address
    /// gets a new channel; channels of members that left are dropped with
    /// the previous table.
    fn rebuild(previous: &RouteTable, ring: Arc<Ring>) -> Self {
        let reusable: HashMap<(&str, &str), &Channel> = previous
            .ring
            .members()
            .iter()
            .zip(&previous.channels)
            .filter_map(|(m, c)| c.as_ref().map(|c| ((m.id.as_str(), m.address.as_str()), c)))
            .collect();
        let channels = ring
            .members()
            .iter()
            .map(
                |member| match reusable.get(&(member.id.as_str(), member.address.as_str())) {
                    Some(channel) => Some((*channel).clone()),
                    None => open_channel(member),
                },
            )
            .collect();
        Self { ring, channels }
    }

    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// Returns the owner of `vendor_id`, or `None` when no pool node is
    /// on the ring.
    pub fn route(&self, vendor_id: &str) -> Option<Route<'_>> {
        let index = self.ring.owner_index(vendor_id)?;
        Some(Route {
            member: &self.ring.members()[index],
            channel: self.channels[index].as_ref(),
        })
    }
}

fn open_channel(member: &Member) -> Option<Channel> {
    let uri = format!("http://{}", member.address);
    match Endpoint::from_shared(uri) {
        Ok(endpoint) => {
            tracing::debug!(node_id = %member.id, address = %member.address, "opening channel");
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
        Err(error) => {
            tracing::warn!(node_id = %member.id, address = %member.address, %error, "pool node address cannot be dialed");
            None
        }
    }
}

/// The current route table, kept in step with a ring handle.
pub struct Router {
    table: Arc<ArcSwap<RouteTable>>,
    follower: JoinHandle<()>,
}

impl Router {
    /// Builds the first table from the ring's current snapshot and follows
    /// its changes until dropped.
    pub fn follow(ring: RingHandle) -> Self {
        let mut versions = ring.subscribe();
        let first = RouteTable::rebuild(
            &RouteTable::empty(Arc::new(Ring::empty(ring.params()))),
            ring.load(),
        );
        let table = Arc::new(ArcSwap::from_pointee(first));
        let target = table.clone();
        let follower = tokio::spawn(async move {
            while versions.changed().await.is_ok() {
                let next = RouteTable::rebuild(&target.load(), ring.load());
                tracing::debug!(
                    ring_version = next.ring.version(),
                    pool_nodes = next.ring.len(),
                    "route table updated"
                );
                target.store(Arc::new(next));
            }
        });
        Self { table, follower }
    }

    /// Returns the current table.
    pub fn load(&self) -> Arc<RouteTable> {
        self.table.load_full()
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.follower.abort();
    }
}
