//! The consistent-hash ring that maps vendor ids to pool nodes.
//!
//! Placement depends only on node ids, node weights, the vendor id's bytes
//! and [`RingParams`]. Every point and every vendor key is hashed from
//! explicit bytes with SipHash-2-4 under zero keys, so every gateway and
//! pool node, on any platform and release, computes the same owner. The
//! ring is pure: no I/O, no clock, no async.
//!
//! A vendor belongs to the first point clockwise from its key's hash: the
//! point with the smallest hash at or above it, wrapping to the smallest
//! point. Points with equal hashes keep the order in which they were made,
//! (member id, point index), so ties break the same way in every process.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hasher;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use siphasher::sip::SipHasher24;

use crate::member::{Member, NodeState};

/// Version of the placement scheme: the byte encoding of points and keys,
/// the hash function and the meaning of [`RingParams`]. Any change that moves
/// a vendor for the same node set needs a new version.
pub const RING_SCHEME_VERSION: u32 = 1;

/// Points per node of weight 1. At 1M vendors over 200 nodes this keeps the
/// busiest node at or below 1.10 times the mean (the `ring_balance` test
/// checks it), where 1,000 points measured about 1.12.
pub const DEFAULT_POINTS_PER_NODE: u32 = 2_000;

/// Highest node weight accepted; a node's points are `points_per_node * weight`.
pub const MAX_WEIGHT: u32 = 100;

/// Byte that separates a node id from its point index in a point's encoding.
/// It cannot occur in a node id, which is ASCII.
const POINT_SEPARATOR: u8 = 0xff;

/// Parameters that every process sharing a ring must agree on. They are kept
/// in etcd beside the members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingParams {
    pub scheme_version: u32,
    pub points_per_node: u32,
}

impl Default for RingParams {
    fn default() -> Self {
        Self {
            scheme_version: RING_SCHEME_VERSION,
            points_per_node: DEFAULT_POINTS_PER_NODE,
        }
    }
}

/// Hashes `bytes` in one write, with no length prefix or terminator (unlike
/// `Hash for str`). A vendor key is its id's bytes; point `index` of a node
/// is `node_id ‖ 0xFF ‖ index as big-endian u32`.
fn position(bytes: &[u8]) -> u64 {
    let mut hasher = SipHasher24::new();
    hasher.write(bytes);
    hasher.finish()
}

/// Returns the position of `vendor_id` on the ring: the hash that
/// [`Ring::owner`] searches the points for.
pub fn vendor_position(vendor_id: &str) -> u64 {
    position(vendor_id.as_bytes())
}

/// The points of a ring, sorted by hash, in two parallel arrays so that a
/// search touches 8-byte hashes only, with a table that narrows the search
/// to the points sharing the key's top bits.
#[derive(Debug, Default)]
struct Points {
    hashes: Vec<u64>,
    /// `owners[i]` is the position in [`Ring::members`] of the member that
    /// placed point `hashes[i]`.
    owners: Vec<u32>,
    /// `starts[b]` is the first point whose hash has `b` as its top
    /// `64 - shift` bits; `starts[b + 1]` ends that bucket. About one bucket
    /// per point, so a search looks at two or three hashes.
    starts: Vec<u32>,
    shift: u32,
}

impl Points {
    /// Sorts `(hash, member, index)` triples by all three fields, which is
    /// hash order with ties in creation order, and builds the bucket table.
    fn new(mut points: Vec<(u64, u32, u32)>) -> Points {
        points.sort_unstable();
        let count = points.len();
        let bits = count.next_power_of_two().trailing_zeros().clamp(1, 24);
        let shift = 64 - bits;
        let mut starts = Vec::with_capacity((1 << bits) + 1);
        let mut next = 0usize;
        for bucket in 0..(1u64 << bits) {
            while next < count && points[next].0 >> shift < bucket {
                next += 1;
            }
            starts.push(next as u32);
        }
        starts.push(count as u32);
        Points {
            hashes: points.iter().map(|p| p.0).collect(),
            owners: points.iter().map(|p| p.1).collect(),
            starts,
            shift,
        }
    }

    /// Returns the owner of the first point at or after `key` clockwise.
    fn owner(&self, key: u64) -> Option<u32> {
        if self.hashes.is_empty() {
            return None;
        }
        let bucket = (key >> self.shift) as usize;
        let (start, end) = (
            self.starts[bucket] as usize,
            self.starts[bucket + 1] as usize,
        );
        let found = start + self.hashes[start..end].partition_point(|&hash| hash < key);
        Some(if found == self.hashes.len() {
            self.owners[0]
        } else {
            self.owners[found]
        })
    }

    fn len(&self) -> usize {
        self.hashes.len()
    }
}

/// An immutable snapshot of the ring, versioned by the etcd revision (or the
/// in-process membership revision) it reflects.
#[derive(Debug)]
pub struct Ring {
    params: RingParams,
    version: u64,
    /// Placed members (the serving ones, or the draining ones when none serves), sorted by id.
    members: Vec<Member>,
    by_id: HashMap<Arc<str>, usize>,
    /// Incarnations of every registered member by id, draining ones
    /// included.
    registered: Arc<BTreeMap<String, String>>,
    points: Points,
}

impl Ring {
    /// Builds a ring of the serving members. Members in any other state are
    /// kept out of placement, unless no member is serving: then the draining
    /// members are placed, since they still answer until they leave. When
    /// two members share an id, the last wins.
    pub fn build(
        params: RingParams,
        version: u64,
        members: impl IntoIterator<Item = Member>,
    ) -> Ring {
        let mut unique: HashMap<String, Member> = HashMap::new();
        for member in members {
            unique.insert(member.id.clone(), member);
        }
        let registered = Arc::new(
            unique
                .values()
                .map(|m| (m.id.clone(), m.incarnation.clone()))
                .collect(),
        );
        let (serving, draining): (Vec<Member>, Vec<Member>) = unique
            .into_values()
            .filter(|m| m.weight > 0)
            .partition(|m| m.state == NodeState::Serving);
        let placed = if serving.is_empty() {
            draining
        } else {
            serving
        };
        Self::place(params, version, placed, registered)
    }

    /// Returns this ring without the members in `excluded`, at the same
    /// version. Each vendor of an excluded member goes to the next distinct
    /// member clockwise, and every other vendor stays where it is.
    pub fn without(&self, excluded: &[String]) -> Ring {
        let kept = self
            .members
            .iter()
            .filter(|m| !excluded.contains(&m.id))
            .cloned()
            .collect();
        Self::place(self.params, self.version, kept, self.registered.clone())
    }

    fn place(
        params: RingParams,
        version: u64,
        mut members: Vec<Member>,
        registered: Arc<BTreeMap<String, String>>,
    ) -> Ring {
        members.sort_by(|a, b| a.id.cmp(&b.id));

        let mut points = Vec::new();
        let mut by_id = HashMap::with_capacity(members.len());
        let mut bytes = Vec::new();
        for (slot, member) in members.iter().enumerate() {
            let count = params
                .points_per_node
                .saturating_mul(member.weight.min(MAX_WEIGHT));
            let owner = u32::try_from(slot).expect("fewer than 2^32 members");
            bytes.clear();
            bytes.extend_from_slice(member.id.as_bytes());
            bytes.push(POINT_SEPARATOR);
            let prefix = bytes.len();
            points.extend((0..count).map(|index| {
                bytes.truncate(prefix);
                bytes.extend_from_slice(&index.to_be_bytes());
                (position(&bytes), owner, index)
            }));
            by_id.insert(Arc::from(member.id.as_str()), slot);
        }

        Ring {
            params,
            version,
            members,
            by_id,
            registered,
            points: Points::new(points),
        }
    }

    /// An empty ring, before any membership has been read.
    pub fn empty(params: RingParams) -> Ring {
        Self::build(params, 0, [])
    }

    /// Returns the member that owns `vendor_id`, or `None` when the ring has
    /// no members.
    pub fn owner(&self, vendor_id: &str) -> Option<&Member> {
        self.owner_index(vendor_id).map(|i| &self.members[i])
    }

    /// Returns the position in [`Ring::members`] of the owner of `vendor_id`.
    pub fn owner_index(&self, vendor_id: &str) -> Option<usize> {
        self.points
            .owner(vendor_position(vendor_id))
            .map(|owner| owner as usize)
    }

    /// Returns the placed member with this id.
    pub fn member(&self, node_id: &str) -> Option<&Member> {
        self.by_id.get(node_id).map(|&i| &self.members[i])
    }

    /// Returns whether a member with this id is registered, serving or
    /// draining.
    pub fn is_registered(&self, node_id: &str) -> bool {
        self.registered.contains_key(node_id)
    }

    /// Returns the incarnation of the registered member `node_id`: empty
    /// when it registered none.
    pub fn incarnation(&self, node_id: &str) -> Option<&str> {
        self.registered.get(node_id).map(String::as_str)
    }

    /// Placed members, sorted by id: the serving ones, or the draining ones when none serves.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn params(&self) -> RingParams {
        self.params
    }

    /// Number of placed members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Number of points on the ring.
    pub fn point_count(&self) -> usize {
        self.points.len()
    }
}

#[cfg(test)]
#[path = "ring_tests.rs"]
mod tests;
