//! In-process membership, standing in for etcd where no server is
//! installed (the quickstart). It has the same rules as the etcd membership:
//! one live registration per node id, and a new ring version per change.

use std::sync::{Arc, Mutex};

use super::{MembershipError, MembershipView, RingHandle};
use crate::member::{Member, NodeState};
use crate::ring::RingParams;

/// A membership registry shared by the gateways and pool nodes of one
/// process.
#[derive(Clone)]
pub struct LocalMembership {
    state: Arc<Mutex<State>>,
    params: RingParams,
}

struct State {
    view: MembershipView,
    rings: Vec<RingHandle>,
}

impl LocalMembership {
    pub fn new(params: RingParams) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                view: MembershipView::default(),
                rings: Vec::new(),
            })),
            params,
        }
    }

    /// Returns a ring handle that follows this membership.
    pub fn ring(&self) -> RingHandle {
        let handle = RingHandle::new(self.params);
        let mut state = self.lock();
        handle.publish(state.view.build_ring(self.params));
        state.rings.push(handle.clone());
        handle
    }

    /// Registers a node, failing if its id is taken.
    pub fn register(&self, member: Member) -> Result<(), MembershipError> {
        let mut state = self.lock();
        if let Some(holder) = state.view.get(&member.id) {
            return Err(MembershipError::IdInUse {
                id: member.id,
                address: holder.address.clone(),
                lease: 0,
            });
        }
        self.apply(&mut state, |view, revision| view.upsert(member, revision));
        Ok(())
    }

    /// Changes a registered node's state.
    pub fn set_state(&self, node_id: &str, node_state: NodeState) {
        let mut state = self.lock();
        let Some(mut member) = state.view.get(node_id).cloned() else {
            return;
        };
        member.state = node_state;
        self.apply(&mut state, |view, revision| view.upsert(member, revision));
    }

    /// Removes a node.
    pub fn deregister(&self, node_id: &str) {
        let mut state = self.lock();
        self.apply(&mut state, |view, revision| view.remove(node_id, revision));
    }

    fn apply(
        &self,
        state: &mut State,
        change: impl FnOnce(&mut MembershipView, u64) -> Option<super::MembershipChange>,
    ) {
        let revision = state.view.revision() + 1;
        if let Some(change) = change(&mut state.view, revision) {
            change.log(revision);
            let ring = state.view.build_ring(self.params);
            for handle in &state.rings {
                handle.publish(ring.clone());
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves the view consistent, because
        // every change is applied by one call on the view.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str) -> Member {
        Member {
            id: id.to_owned(),
            address: "127.0.0.1:7001".to_owned(),
            weight: 1,
            state: NodeState::Serving,
            version: "test".to_owned(),
            incarnation: String::new(),
        }
    }

    #[test]
    fn register_publishes_to_every_ring() {
        let membership = LocalMembership::new(RingParams::default());
        let early = membership.ring();
        membership.register(member("pool-1")).unwrap();
        let late = membership.ring();
        membership.register(member("pool-2")).unwrap();
        assert_eq!(early.load().len(), 2);
        assert_eq!(late.load().len(), 2);
        assert_eq!(early.load().version(), 2);
    }

    #[test]
    fn duplicate_id_is_rejected() {
        let membership = LocalMembership::new(RingParams::default());
        membership.register(member("pool-1")).unwrap();
        let error = membership.register(member("pool-1")).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("\"pool-1\" is already registered"),
            "{error}"
        );
    }

    #[test]
    fn draining_and_deregistering_leave_the_ring() {
        let membership = LocalMembership::new(RingParams::default());
        let ring = membership.ring();
        membership.register(member("pool-1")).unwrap();
        membership.register(member("pool-2")).unwrap();
        membership.set_state("pool-1", NodeState::Draining);
        assert!(ring.load().member("pool-1").is_none());
        membership.deregister("pool-2");
        assert_eq!(
            ring.load().owner("any").map(|m| m.id.clone()).as_deref(),
            Some("pool-1"),
            "a draining node is placed when no node serves"
        );
        membership.deregister("pool-1");
        assert!(ring.load().is_empty());
    }
}
