//! Pool node membership: who is on the ring, and the ring built from it.
//!
//! A membership source (etcd in production, [`local::LocalMembership`] for
//! the quickstart) feeds a [`MembershipView`], which turns each batch of
//! changes into a new [`Ring`] and publishes it through a [`RingHandle`].
//! Rings are rebuilt off the request path; requests only read snapshots.

pub mod etcd;
pub mod local;
mod view;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

pub use view::{MembershipChange, MembershipView};

use crate::ring::{Ring, RingParams};

/// Source of the members for a process that routes on the ring but does
/// not serve on it, such as a gateway or the registry.
#[derive(Clone)]
pub enum RingSource {
    Etcd {
        endpoints: Vec<String>,
        prefix: String,
    },
    /// In-process membership, for the quickstart.
    Local(local::LocalMembership),
}

impl RingSource {
    /// Returns the ring, kept up to date by the returned task when the
    /// members live in etcd. See [`etcd::follow_ring`].
    pub async fn follow(
        self,
        params: RingParams,
    ) -> Result<(RingHandle, Option<tokio::task::JoinHandle<()>>), MembershipError> {
        match self {
            Self::Etcd { endpoints, prefix } => {
                let (ring, watcher) = etcd::follow_ring(&endpoints, &prefix, params).await?;
                Ok((ring, Some(watcher)))
            }
            Self::Local(membership) => Ok((membership.ring(), None)),
        }
    }
}

/// The current ring of a process and a notification when it changes.
///
/// Cloning is cheap; all clones share one ring.
#[derive(Clone)]
pub struct RingHandle {
    shared: Arc<Shared>,
}

struct Shared {
    ring: ArcSwap<Ring>,
    version: watch::Sender<u64>,
}

impl RingHandle {
    /// Creates a handle holding an empty ring with `params`.
    pub fn new(params: RingParams) -> Self {
        let (version, _) = watch::channel(0);
        Self {
            shared: Arc::new(Shared {
                ring: ArcSwap::from_pointee(Ring::empty(params)),
                version,
            }),
        }
    }

    /// Returns the current ring. The snapshot stays valid while it is held,
    /// even if a newer ring is published meanwhile.
    pub fn load(&self) -> Arc<Ring> {
        self.shared.ring.load_full()
    }

    /// Returns a receiver of ring versions that changes whenever a new ring
    /// is published.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.version.subscribe()
    }

    pub fn params(&self) -> RingParams {
        self.shared.ring.load().params()
    }

    /// Swaps in a new ring and notifies subscribers.
    pub fn publish(&self, ring: Arc<Ring>) {
        let version = ring.version();
        self.shared.ring.store(ring);
        self.shared.version.send_replace(version);
    }
}

/// Errors of membership operations.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("etcd request failed: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("etcd did not answer within {0:?}")]
    Timeout(Duration),
    #[error(
        "node id {id:?} is already registered by a live process at {address}; \
         stop that process or start this one with another --node-id"
    )]
    IdInUse {
        id: String,
        address: String,
        /// The lease that holds the id, 0 when unknown.
        lease: i64,
    },
    #[error(
        "ring parameters differ: etcd key {key} holds scheme version {} with {} points per node, \
         but this process uses scheme version {} with {} points per node; run the release \
         that the other gateways and pool nodes run, or migrate the whole fleet at once",
        stored.scheme_version, stored.points_per_node, local.scheme_version, local.points_per_node
    )]
    ParamsMismatch {
        key: String,
        stored: RingParams,
        local: RingParams,
    },
    #[error("ring parameters in etcd key {key} are malformed: {reason}")]
    MalformedParams { key: String, reason: String },
}

/// Exponential backoff with jitter, for reconnect loops.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            next: min,
            min,
            max,
        }
    }

    /// Returns the next delay: the current one with up to 25% jitter added,
    /// then doubles it up to the maximum.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = base.mul_f64(rand::random::<f64>() * 0.25);
        base + jitter
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_max() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let delays: Vec<Duration> = (0..4).map(|_| backoff.next_delay()).collect();
        let bounds = [(0, 100, 125), (1, 200, 250), (3, 350, 438)];
        for (index, low, high) in bounds {
            let delay = delays[index];
            assert!(
                delay >= Duration::from_millis(low),
                "delay {index} is {delay:?}"
            );
            assert!(
                delay <= Duration::from_millis(high),
                "delay {index} is {delay:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(125));
    }

    #[tokio::test]
    async fn publish_notifies_subscribers() {
        let handle = RingHandle::new(RingParams::default());
        let mut versions = handle.subscribe();
        handle.publish(Arc::new(Ring::build(RingParams::default(), 7, [])));
        versions.changed().await.unwrap();
        assert_eq!(*versions.borrow(), 7);
        assert_eq!(handle.load().version(), 7);
    }
}
