//! Balance and movement of the ring at 1M vendors, for several points per
//! node, with jump consistent hash and rendezvous hashing beside it as
//! reference points. Prints Markdown tables.
//!
//! Run: `cargo bench -p voca-common --bench ring_quality`.

use std::hash::Hasher;
use std::time::Instant;

use siphasher::sip::SipHasher24;
use voca_common::ring::RING_SCHEME_VERSION;
use voca_common::{Member, NodeState, Ring, RingParams};

const VENDORS: usize = 1_000_000;
const NODE_COUNTS: [usize; 3] = [10, 100, 200];
const POINTS: [u32; 5] = [100, 160, 500, 1_000, 2_000];

fn member(i: usize) -> Member {
    Member {
        id: format!("pool-{i:04}"),
        address: "127.0.0.1:7001".to_owned(),
        weight: 1,
        state: NodeState::Serving,
        version: "bench".to_owned(),
        incarnation: String::new(),
    }
}

fn vendor(i: usize) -> String {
    format!("vendor-{i:07}")
}

fn sip(bytes: &[u8]) -> u64 {
    let mut hasher = SipHasher24::new_with_keys(0, 0);
    hasher.write(bytes);
    hasher.finish()
}

/// Jump consistent hash: steps a 64-bit linear congruential generator from
/// the key to pick one of `buckets`, so that adding a bucket at the end moves
/// only the keys it takes.
fn jump(mut key: u64, buckets: usize) -> usize {
    let (mut b, mut j) = (-1_i64, 0_i64);
    while j < buckets as i64 {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1_u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as usize
}

/// Rendezvous (highest random weight) hashing over node ids.
fn rendezvous(vendor: &str, nodes: &[String]) -> usize {
    let mut best = (0, 0_u64);
    for (index, node) in nodes.iter().enumerate() {
        let mut hasher = SipHasher24::new_with_keys(0, 0);
        hasher.write(node.as_bytes());
        hasher.write_u8(0xff);
        hasher.write(vendor.as_bytes());
        let score = hasher.finish();
        if score > best.1 {
            best = (index, score);
        }
    }
    best.0
}

/// Max/mean, min/mean and standard deviation/mean of vendors per node.
fn balance(counts: &[usize]) -> (f64, f64, f64) {
    let mean = counts.iter().sum::<usize>() as f64 / counts.len() as f64;
    let max = *counts.iter().max().unwrap() as f64;
    let min = *counts.iter().min().unwrap() as f64;
    let variance = counts
        .iter()
        .map(|&c| (c as f64 - mean).powi(2))
        .sum::<f64>()
        / counts.len() as f64;
    (max / mean, min / mean, variance.sqrt() / mean)
}

fn ring(nodes: usize, points: u32) -> Ring {
    let params = RingParams {
        scheme_version: RING_SCHEME_VERSION,
        points_per_node: points,
    };
    Ring::build(params, 1, (0..nodes).map(member))
}

fn owners(ring: &Ring, vendors: &[String]) -> Vec<usize> {
    vendors
        .iter()
        .map(|v| ring.owner_index(v).expect("a member"))
        .collect()
}

fn main() {
    let started = Instant::now();
    let vendors: Vec<String> = (0..VENDORS).map(vendor).collect();
    let keys: Vec<u64> = vendors.iter().map(|v| sip(v.as_bytes())).collect();

    println!("Balance at {VENDORS} vendors (vendors per node, relative to the mean)");
    println!();
    println!("| scheme | nodes | points per node | max/mean | min/mean | std dev/mean |");
    println!("|---|---:|---:|---:|---:|---:|");
    for &nodes in &NODE_COUNTS {
        for &points in &POINTS {
            let ring = ring(nodes, points);
            let mut counts = vec![0; nodes];
            for owner in owners(&ring, &vendors) {
                counts[owner] += 1;
            }
            let (max, min, dev) = balance(&counts);
            println!("| ring | {nodes} | {points} | {max:.3} | {min:.3} | {dev:.3} |");
        }
        let mut counts = vec![0; nodes];
        for &key in &keys {
            counts[jump(key, nodes)] += 1;
        }
        let (max, min, dev) = balance(&counts);
        println!("| jump hash | {nodes} | - | {max:.3} | {min:.3} | {dev:.3} |");
        let ids: Vec<String> = (0..nodes).map(|i| member(i).id).collect();
        let mut counts = vec![0; nodes];
        for v in &vendors {
            counts[rendezvous(v, &ids)] += 1;
        }
        let (max, min, dev) = balance(&counts);
        println!("| rendezvous | {nodes} | - | {max:.3} | {min:.3} | {dev:.3} |");
    }

    println!();
    println!("Movement at {VENDORS} vendors when one node joins or leaves N = 200 (moved fraction against the ideal 1/N)");
    println!();
    println!("| scheme | points per node | change | moved | ideal | moved/ideal | moves not involving the changed node |");
    println!("|---|---:|---|---:|---:|---:|---:|");
    let nodes = 200;
    for &points in &POINTS {
        let before = ring(nodes, points);
        let before_owners: Vec<String> = owners(&before, &vendors)
            .into_iter()
            .map(|i| before.members()[i].id.clone())
            .collect();
        let added = ring(nodes + 1, points);
        let new_id = member(nodes).id;
        let mut moved = 0;
        let mut stray = 0;
        for (i, owner) in owners(&added, &vendors).into_iter().enumerate() {
            let now = &added.members()[owner].id;
            if *now != before_owners[i] {
                moved += 1;
                stray += usize::from(*now != new_id);
            }
        }
        report("ring", points, "add", moved, stray, nodes + 1);
        let removed_id = member(nodes / 2).id;
        let removed = before.without(std::slice::from_ref(&removed_id));
        let (mut moved, mut stray) = (0, 0);
        for (i, owner) in owners(&removed, &vendors).into_iter().enumerate() {
            let now = &removed.members()[owner].id;
            if *now != before_owners[i] {
                moved += 1;
                stray += usize::from(before_owners[i] != removed_id);
            }
        }
        report("ring", points, "remove", moved, stray, nodes);
    }
    let (mut moved, mut stray) = (0, 0);
    for &key in &keys {
        let (old, new) = (jump(key, nodes), jump(key, nodes + 1));
        if old != new {
            moved += 1;
            stray += usize::from(new != nodes);
        }
    }
    report(
        "jump hash",
        0,
        "add (last bucket only)",
        moved,
        stray,
        nodes + 1,
    );
    let ids: Vec<String> = (0..nodes).map(|i| member(i).id).collect();
    let mut more = ids.clone();
    more.push(member(nodes).id);
    let (mut moved, mut stray) = (0, 0);
    for v in &vendors {
        let (old, new) = (rendezvous(v, &ids), rendezvous(v, &more));
        if old != new {
            moved += 1;
            stray += usize::from(new != nodes);
        }
    }
    report("rendezvous", 0, "add", moved, stray, nodes + 1);
    println!();
    println!("took {:.1} s", started.elapsed().as_secs_f64());
}

/// Prints one movement row. The ideal fraction is 1/`nodes`: the share of
/// the node that joined (of N + 1) or left (of N).
fn report(scheme: &str, points: u32, change: &str, moved: usize, stray: usize, nodes: usize) {
    let fraction = moved as f64 / VENDORS as f64;
    let ideal = 1.0 / nodes as f64;
    let points = if points == 0 {
        "-".to_owned()
    } else {
        points.to_string()
    };
    println!(
        "| {scheme} | {points} | {change} | {fraction:.5} | {ideal:.5} | {:.3} | {stray} |",
        fraction / ideal
    );
}
