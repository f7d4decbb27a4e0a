use super::*;

fn member(id: &str, weight: u32) -> Member {
    Member {
        id: id.to_owned(),
        address: format!("127.0.0.1:{}", 7000 + id.len()),
        weight,
        state: NodeState::Serving,
        version: "test".to_owned(),
        incarnation: String::new(),
    }
}

fn ring_of(ids: &[&str], points_per_node: u32) -> Ring {
    let params = RingParams {
        scheme_version: RING_SCHEME_VERSION,
        points_per_node,
    };
    Ring::build(params, 1, ids.iter().map(|id| member(id, 1)))
}

/// Owners of fixed vendor ids on a fixed node set with the default
/// parameters. A change here moves vendors between pools on upgrade, so it
/// needs a new `RING_SCHEME_VERSION`.
#[test]
fn golden_vectors() {
    let ring = ring_of(&["pool-a", "pool-b", "pool-c"], DEFAULT_POINTS_PER_NODE);
    for (vendor, owner) in GOLDEN {
        assert_eq!(
            ring.owner(vendor).map(|m| m.id.as_str()),
            Some(owner),
            "vendor {vendor}"
        );
    }
    assert_eq!(
        RING_SCHEME_VERSION, 1,
        "golden vectors are pinned for scheme 1"
    );
}

const GOLDEN: [(&str, &str); 12] = [
    ("rosies-bakery", "pool-b"),
    ("spoke-and-chain-bikes", "pool-c"),
    ("voltline-electronics", "pool-c"),
    ("flowright-plumbing", "pool-c"),
    ("vendor-0", "pool-b"),
    ("vendor-1", "pool-a"),
    ("vendor-2", "pool-b"),
    ("vendor-3", "pool-a"),
    ("vendor-999999", "pool-b"),
    ("a", "pool-c"),
    ("A.b_c-D", "pool-a"),
    ("x", "pool-c"),
];

#[test]
fn empty_ring_has_no_owner() {
    let ring = Ring::empty(RingParams::default());
    assert!(ring.owner("rosies-bakery").is_none());
    assert!(ring.is_empty());
}

#[test]
fn owner_ignores_address_and_order() {
    let a = ring_of(&["pool-a", "pool-b", "pool-c"], 200);
    let mut moved: Vec<Member> = ["pool-c", "pool-a", "pool-b"]
        .iter()
        .map(|id| member(id, 1))
        .collect();
    for m in &mut moved {
        m.address = format!("10.0.0.{}:9000", m.id.len());
    }
    let b = Ring::build(a.params(), 2, moved);
    for i in 0..2_000 {
        let vendor = format!("vendor-{i}");
        assert_eq!(
            a.owner(&vendor).unwrap().id,
            b.owner(&vendor).unwrap().id,
            "{vendor}"
        );
    }
}

#[test]
fn reregistered_node_replaces_its_points() {
    let params = RingParams {
        scheme_version: RING_SCHEME_VERSION,
        points_per_node: 100,
    };
    let mut again = member("pool-a", 1);
    again.address = "127.0.0.1:9999".to_owned();
    again.weight = 3;
    let ring = Ring::build(params, 1, [member("pool-a", 1), member("pool-b", 1), again]);
    assert_eq!(ring.len(), 2);
    assert_eq!(
        ring.point_count(),
        400,
        "3 x 100 for pool-a, 100 for pool-b"
    );
    assert_eq!(ring.member("pool-a").unwrap().address, "127.0.0.1:9999");
}

#[test]
fn draining_member_owns_nothing() {
    let mut draining = member("pool-b", 1);
    draining.state = NodeState::Draining;
    let ring = Ring::build(RingParams::default(), 1, [member("pool-a", 1), draining]);
    assert_eq!(ring.len(), 1);
    assert!(ring.member("pool-b").is_none());
    assert_eq!(ring.owner("anything").unwrap().id, "pool-a");
}

#[test]
fn draining_members_own_all_when_none_serves() {
    let mut last = member("pool-a", 1);
    last.state = NodeState::Draining;
    let ring = Ring::build(RingParams::default(), 1, [last]);
    assert_eq!(ring.len(), 1);
    assert_eq!(ring.owner("anything").unwrap().id, "pool-a");
}

#[test]
fn draining_member_stays_registered() {
    let mut draining = member("pool-b", 1);
    draining.state = NodeState::Draining;
    let ring = Ring::build(RingParams::default(), 1, [member("pool-a", 1), draining]);
    assert!(ring.is_registered("pool-a"));
    assert!(ring.is_registered("pool-b"));
    assert!(!ring.is_registered("pool-c"));
}

#[test]
fn ring_without_a_member_moves_only_its_vendors() {
    let full = ring_of(&["pool-a", "pool-b", "pool-c"], 500);
    let reduced = full.without(&["pool-b".to_owned()]);
    assert_eq!(reduced.version(), full.version());
    assert_eq!(reduced.len(), 2);
    assert!(
        reduced.is_registered("pool-b"),
        "leaving out is not leaving"
    );
    let rebuilt = ring_of(&["pool-a", "pool-c"], 500);
    for i in 0..5_000 {
        let vendor = format!("vendor-{i}");
        let before = &full.owner(&vendor).unwrap().id;
        let after = &reduced.owner(&vendor).unwrap().id;
        assert_eq!(after, &rebuilt.owner(&vendor).unwrap().id);
        if before != "pool-b" {
            assert_eq!(before, after, "{vendor} moved off a member that stayed");
        }
    }
}

#[test]
fn weight_scales_share() {
    let params = RingParams {
        scheme_version: RING_SCHEME_VERSION,
        points_per_node: 500,
    };
    let ring = Ring::build(params, 1, [member("pool-a", 3), member("pool-b", 1)]);
    let owned_by_a = (0..20_000)
        .filter(|i| ring.owner(&format!("vendor-{i}")).unwrap().id == "pool-a")
        .count();
    let share = owned_by_a as f64 / 20_000.0;
    assert!((0.70..0.80).contains(&share), "weight 3 of 4 owns {share}");
}

#[test]
fn adding_node_moves_only_to_it() {
    let before = ring_of(&["pool-a", "pool-b", "pool-c"], 500);
    let after = ring_of(&["pool-a", "pool-b", "pool-c", "pool-d"], 500);
    let total = 40_000;
    let mut moved = 0;
    for i in 0..total {
        let vendor = format!("vendor-{i}");
        let old = &before.owner(&vendor).unwrap().id;
        let new = &after.owner(&vendor).unwrap().id;
        if old != new {
            assert_eq!(new, "pool-d", "{vendor} moved from {old} to {new}");
            moved += 1;
        }
    }
    let fraction = moved as f64 / total as f64;
    assert!(
        (0.20..0.30).contains(&fraction),
        "moved {fraction}, ideal 0.25"
    );
}

/// At 1M vendors over 200 nodes the busiest node holds at most 1.10 times
/// the mean with the default points per node.
#[test]
fn ring_balance_at_200_nodes() {
    let ids: Vec<String> = (0..200).map(|i| format!("pool-{i}")).collect();
    let ring = Ring::build(RingParams::default(), 1, ids.iter().map(|id| member(id, 1)));
    let mut counts = vec![0u32; ring.len()];
    let mut key = String::new();
    for i in 0..1_000_000 {
        key.clear();
        std::fmt::Write::write_fmt(&mut key, format_args!("vendor-{i}")).unwrap();
        counts[ring.owner_index(&key).unwrap()] += 1;
    }
    let mean = 1_000_000.0 / 200.0;
    let max = f64::from(*counts.iter().max().unwrap()) / mean;
    let min = f64::from(*counts.iter().min().unwrap()) / mean;
    assert!(max <= 1.10, "max/mean {max:.3}");
    assert!(min >= 0.90, "min/mean {min:.3}");
}
