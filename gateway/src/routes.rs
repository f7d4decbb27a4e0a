//! The gateway's routing table: the ring and one HTTP/2 channel per pool
//! node, rebuilt off the request path whenever the ring changes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// A channel to one pool node, with a serial number that tells channels
/// apart: a reused channel keeps its serial, a new one gets the next.
#[derive(Clone)]
struct NodeChannel {
    channel: Channel,
    serial: u64,
}

static NEXT_SERIAL: AtomicU64 = AtomicU64::new(1);

/// A ring snapshot with a channel for each of its members.
pub struct RouteTable {
    ring: Arc<Ring>,
    /// Channels in the order of `ring.members()`; `None` where the address
    /// cannot be dialed.
    channels: Vec<Option<NodeChannel>>,
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
        let reusable: HashMap<(&str, &str), &NodeChannel> = previous
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
            channel: self.channels[index].as_ref().map(|c| &c.channel),
        })
    }

    /// Returns the serial number of the channel to `node_id`, which changes
    /// only when the channel is made anew.
    pub fn channel_serial(&self, node_id: &str) -> Option<u64> {
        let index = self.ring.members().iter().position(|m| m.id == node_id)?;
        self.channels[index].as_ref().map(|c| c.serial)
    }
}

fn open_channel(member: &Member) -> Option<NodeChannel> {
    let uri = format!("http://{}", member.address);
    match Endpoint::from_shared(uri) {
        Ok(endpoint) => {
            tracing::debug!(node_id = %member.id, address = %member.address, "opening channel");
            let channel = endpoint
                .connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
                .keep_alive_timeout(CONNECT_TIMEOUT * 5)
                .keep_alive_while_idle(true)
                .connect_lazy();
            Some(NodeChannel {
                channel,
                serial: NEXT_SERIAL.fetch_add(1, Ordering::Relaxed),
            })
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
        let a = member("pool-a", "127.0.0.1:7001");
        let b = member("pool-b", "127.0.0.1:7002");
        let empty = RouteTable::empty(ring(0, &[]));
        let first = RouteTable::rebuild(&empty, ring(1, &[a.clone(), b.clone()]));
        let a_serial = first
            .channel_serial("pool-a")
            .expect("channel made when pool-a joins");
        let b_serial = first
            .channel_serial("pool-b")
            .expect("channel made when pool-b joins");
        assert_ne!(a_serial, b_serial);

        let moved_b = member("pool-b", "127.0.0.1:7102");
        let second = RouteTable::rebuild(&first, ring(2, &[a.clone(), moved_b]));
        assert_eq!(
            second.channel_serial("pool-a"),
            Some(a_serial),
            "unchanged address reuses the channel"
        );
        let new_b = second.channel_serial("pool-b").unwrap();
        assert_ne!(new_b, b_serial, "a new address gets a new channel");

        let third = RouteTable::rebuild(&second, ring(3, &[a]));
        assert_eq!(
            third.channel_serial("pool-b"),
            None,
            "a node that left has no channel"
        );
        assert_eq!(third.channel_serial("pool-a"), Some(a_serial));
    }

    #[tokio::test]
    async fn undialable_address_has_no_channel() {
        let bad = member("pool-a", "127.0.0.1:7001 x");
        let table = RouteTable::rebuild(&RouteTable::empty(ring(0, &[])), ring(1, &[bad]));
        let route = table.route("any-vendor").expect("the ring has a member");
        assert_eq!(route.member.id, "pool-a");
        assert!(route.channel.is_none());
    }
}
