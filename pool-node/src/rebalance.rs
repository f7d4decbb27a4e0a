//! Keeping a pool node's cached agents in step with the ring: when the ring
//! changes, the node drops the agents of vendors it no longer owns and loads
//! the vendors it took over that were active on other pool nodes.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::StreamExt;
use tokio::task::JoinHandle;
use tracing::Instrument;
use voca_common::{Ring, RingHandle};

use crate::agents::Agents;
use crate::hot::HotState;

/// Vendors loaded ahead of their first message after one ring change at most.
pub const MAX_PRELOAD: usize = 10_000;
/// Vendors loaded at the same time while preloading.
const PRELOAD_CONCURRENCY: usize = 4;

/// Follows `ring` until the returned task is aborted.
pub fn spawn(
    node_id: String,
    ring: RingHandle,
    agents: Arc<Agents>,
    hot: Arc<dyn HotState>,
) -> JoinHandle<()> {
    let span = tracing::info_span!("rebalance", node_id = %node_id);
    tokio::spawn(follow(node_id, ring, agents, hot).instrument(span))
}

async fn follow(node_id: String, ring: RingHandle, agents: Arc<Agents>, hot: Arc<dyn HotState>) {
    let mut versions = ring.subscribe();
    let mut previous = ring.load();
    while versions.changed().await.is_ok() {
        let current = ring.load();
        // A node that is not on the ring yet, or any more, owns nothing it
        // could act on.
        if current.member(&node_id).is_some() {
            rebalance(&node_id, &previous, &current, &agents, hot.as_ref()).await;
        }
        previous = current;
    }
}

async fn rebalance(
    node_id: &str,
    previous: &Ring,
    current: &Ring,
    agents: &Agents,
    hot: &dyn HotState,
) {
    let owns = |vendor: &str| {
        current
            .owner(vendor)
            .is_some_and(|owner| owner.id == node_id)
    };
    let evicted = agents.evict_unowned(owns).await;

    let others: BTreeSet<&str> = previous
        .members()
        .iter()
        .chain(current.members())
        .map(|member| member.id.as_str())
        .filter(|id| *id != node_id)
        .collect();
    let mut taken_over = BTreeSet::new();
    for pool_id in others {
        for vendor in hot.active_vendors(pool_id).await {
            if owns(&vendor) && !agents.contains(&vendor) {
                taken_over.insert(vendor);
            }
        }
    }
    let preload: Vec<String> = taken_over.into_iter().take(MAX_PRELOAD).collect();
    let preloaded = futures::stream::iter(preload)
        .map(|vendor| async move {
            match agents.get(&vendor).await {
                Ok(_) => true,
                Err(error) => {
                    tracing::debug!(vendor_id = %vendor, %error, "preloading failed");
                    false
                }
            }
        })
        .buffer_unordered(PRELOAD_CONCURRENCY)
        .filter(|loaded| std::future::ready(*loaded))
        .count()
        .await;
    if evicted > 0 || preloaded > 0 {
        tracing::info!(
            ring_version = current.version(),
            evicted,
            preloaded,
            "rebalanced vendors"
        );
    }
}
