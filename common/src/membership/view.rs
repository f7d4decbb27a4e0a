//! The set of registered members as a membership source reports it.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::member::Member;
use crate::ring::{Ring, RingParams};

/// One change of the member set, for logs and for consumers that keep
/// per-node state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipChange {
    Added(Member),
    Updated { old: Member, new: Member },
    Removed(Member),
}

impl MembershipChange {
    /// Logs the change at info, with the node id and address as fields.
    pub fn log(&self, revision: u64) {
        match self {
            Self::Added(m) => tracing::info!(
                node_id = %m.id, address = %m.address, weight = m.weight, state = ?m.state,
                etcd_revision = revision, "pool node joined"
            ),
            Self::Updated { old, new } => tracing::info!(
                node_id = %new.id, address = %new.address, old_address = %old.address,
                weight = new.weight, state = ?new.state, etcd_revision = revision,
                "pool node changed"
            ),
            Self::Removed(m) => tracing::info!(
                node_id = %m.id, address = %m.address, etcd_revision = revision, "pool node left"
            ),
        }
    }
}

/// Registered members and the revision they reflect.
#[derive(Debug, Default, Clone)]
pub struct MembershipView {
    members: BTreeMap<String, Member>,
    revision: u64,
}

impl MembershipView {
    /// Replaces every member with a fresh listing taken at `revision`, and
    /// returns what changed relative to the previous set.
    pub fn reset(&mut self, listed: Vec<Member>, revision: u64) -> Vec<MembershipChange> {
        let listed = listed.into_iter().map(|m| (m.id.clone(), m)).collect();
        let previous = std::mem::replace(&mut self.members, listed);
        self.revision = revision;

        let mut changes = Vec::new();
        for (id, old) in &previous {
            match self.members.get(id) {
                None => changes.push(MembershipChange::Removed(old.clone())),
                Some(new) if new != old => changes.push(MembershipChange::Updated {
                    old: old.clone(),
                    new: new.clone(),
                }),
                Some(_) => {}
            }
        }
        for (id, new) in &self.members {
            if !previous.contains_key(id) {
                changes.push(MembershipChange::Added(new.clone()));
            }
        }
        changes
    }

    /// Inserts or replaces a member at `revision`.
    pub fn upsert(&mut self, member: Member, revision: u64) -> Option<MembershipChange> {
        self.revision = self.revision.max(revision);
        match self.members.insert(member.id.clone(), member.clone()) {
            None => Some(MembershipChange::Added(member)),
            Some(old) if old != member => Some(MembershipChange::Updated { old, new: member }),
            Some(_) => None,
        }
    }

    /// Removes a member at `revision`.
    pub fn remove(&mut self, id: &str, revision: u64) -> Option<MembershipChange> {
        self.revision = self.revision.max(revision);
        self.members.remove(id).map(MembershipChange::Removed)
    }

    /// Returns the member with this id.
    pub fn get(&self, id: &str) -> Option<&Member> {
        self.members.get(id)
    }

    /// Advances the revision past an event that changed no member.
    pub fn advance(&mut self, revision: u64) {
        self.revision = self.revision.max(revision);
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Builds the ring of the current members.
    pub fn build_ring(&self, params: RingParams) -> Arc<Ring> {
        Arc::new(Ring::build(
            params,
            self.revision,
            self.members.values().cloned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::NodeState;

    fn member(id: &str, port: u16) -> Member {
        Member {
            id: id.to_owned(),
            address: format!("127.0.0.1:{port}"),
            weight: 1,
            state: NodeState::Serving,
            version: "test".to_owned(),
            incarnation: String::new(),
        }
    }

    #[test]
    fn reset_reports_differences() {
        let mut view = MembershipView::default();
        let first = view.reset(vec![member("a", 1), member("b", 2)], 10);
        assert_eq!(first.len(), 2);
        assert!(first
            .iter()
            .all(|c| matches!(c, MembershipChange::Added(_))));

        let second = view.reset(vec![member("a", 1), member("b", 3), member("c", 4)], 20);
        assert_eq!(
            second,
            vec![
                MembershipChange::Updated {
                    old: member("b", 2),
                    new: member("b", 3)
                },
                MembershipChange::Added(member("c", 4)),
            ]
        );
        let third = view.reset(vec![member("c", 4)], 30);
        assert_eq!(third.len(), 2);
        assert!(third
            .iter()
            .all(|c| matches!(c, MembershipChange::Removed(_))));
        assert_eq!(view.revision(), 30);
        assert_eq!(view.len(), 1);
    }

    #[test]
    fn upsert_and_remove() {
        let mut view = MembershipView::default();
        assert!(matches!(
            view.upsert(member("a", 1), 5),
            Some(MembershipChange::Added(_))
        ));
        assert_eq!(view.upsert(member("a", 1), 6), None);
        assert!(matches!(
            view.upsert(member("a", 2), 7),
            Some(MembershipChange::Updated { .. })
        ));
        assert!(matches!(
            view.remove("a", 8),
            Some(MembershipChange::Removed(_))
        ));
        assert_eq!(view.remove("a", 9), None);
        assert_eq!(view.revision(), 9);
        assert_eq!(view.build_ring(RingParams::default()).version(), 9);
    }
}
