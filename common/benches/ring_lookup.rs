//! Time of a ring lookup (hashing the vendor id and searching the points)
//! and of a ring rebuild, at 10, 200 and 1,000 nodes of weight 1 with the
//! default points per node.
//!
//! Run: `cargo bench -p voca-common --bench ring_lookup`.
//!
//! Samples are 20,000 lookups long. With divan's own choice, 4 lookups per
//! sample on a 2-core virtual machine, the medians came out 5 to 7 times
//! higher, which is the cost of timing each sample rather than of the
//! lookup.

use divan::{black_box, Bencher};
use voca_common::{vendor_position, Member, NodeState, Ring, RingParams};

const NODES: [usize; 3] = [10, 200, 1_000];
/// Vendor ids looked up in turn, so that the searches do not all hit one
/// cached path.
const KEYS: usize = 4_096;

fn main() {
    divan::main();
}

fn members(count: usize) -> Vec<Member> {
    (0..count)
        .map(|i| Member {
            id: format!("pool-{i:04}"),
            address: format!("10.0.{}.{}:7001", i / 250, i % 250),
            weight: 1,
            state: NodeState::Serving,
            version: "bench".to_owned(),
            incarnation: String::new(),
        })
        .collect()
}

#[divan::bench(args = NODES, sample_size = 20_000)]
fn lookup(bencher: Bencher, nodes: usize) {
    let ring = Ring::build(RingParams::default(), 1, members(nodes));
    let keys: Vec<String> = (0..KEYS).map(|i| format!("vendor-{i:07}")).collect();
    let mut next = 0;
    bencher.bench_local(|| {
        next = (next + 1) % KEYS;
        black_box(ring.owner_index(black_box(&keys[next])))
    });
}

/// Measures the hashing part of a lookup alone.
#[divan::bench(sample_size = 20_000)]
fn hash_only(bencher: Bencher) {
    let keys: Vec<String> = (0..KEYS).map(|i| format!("vendor-{i:07}")).collect();
    let mut next = 0;
    bencher.bench_local(|| {
        next = (next + 1) % KEYS;
        black_box(vendor_position(black_box(&keys[next])))
    });
}

#[divan::bench(args = NODES, sample_count = 10, sample_size = 1)]
fn rebuild(bencher: Bencher, nodes: usize) {
    let members = members(nodes);
    bencher.bench_local(|| black_box(Ring::build(RingParams::default(), 1, members.clone())));
}
