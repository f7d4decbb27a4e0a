use std::collections::BTreeSet;
use std::time::Duration;

use voca_proto::v1::OwnerRequest;
use voca_tests::mesh::{gateway_client, pool_client, route, send, Mesh};
use voca_tests::wait_for;

#[tokio::test(flavor = "multi_thread")]
async fn gateway_and_pool_nodes_agree_on_owners() {
    let mesh = Mesh::new().await;
    mesh.add_example_vendors();
    let (gateway, pools) = mesh.start(&["pool-a", "pool-b", "pool-c"]).await;
    let mut client = gateway_client(&gateway.address()).await.unwrap();

    let mut pool_clients = Vec::new();
    for pool in &pools {
        let pool_client = pool_client(&pool.address()).await.unwrap();
        wait_for(
            "the pool node's ring to hold 3 nodes",
            Duration::from_secs(10),
            || {
                let mut pool_client = pool_client.clone();
                async move {
                    let owner = pool_client
                        .owner(OwnerRequest {
                            vendor_id: "probe".to_owned(),
                        })
                        .await
                        .ok()?
                        .into_inner();
                    (owner.ring_size == 3).then_some(())
                }
            },
        )
        .await;
        pool_clients.push(pool_client);
    }

    let mut owners = BTreeSet::new();
    for i in 0..300 {
        let vendor = format!("vendor-{i}");
        let gateway_owner = route(&mut client, &vendor).await;
        for pool_client in &mut pool_clients {
            let pool_owner = pool_client
                .owner(OwnerRequest {
                    vendor_id: vendor.clone(),
                })
                .await
                .unwrap()
                .into_inner()
                .pool_id;
            assert_eq!(pool_owner, gateway_owner, "owner of {vendor}");
        }
        owners.insert(gateway_owner);
    }
    assert_eq!(
        owners.len(),
        3,
        "300 vendors spread over every node: {owners:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn replies_come_from_route_owner() {
    let mesh = Mesh::new().await;
    mesh.add_example_vendors();
    let (gateway, _pools) = mesh.start(&["pool-a", "pool-b", "pool-c"]).await;
    let mut client = gateway_client(&gateway.address()).await.unwrap();

    for vendor in [
        "rosies-bakery",
        "spoke-and-chain-bikes",
        "voltline-electronics",
        "flowright-plumbing",
    ] {
        let owner = route(&mut client, vendor).await;
        let reply = send(&mut client, vendor, "What are your opening hours?")
            .await
            .unwrap();
        assert_eq!(
            reply.pool_id, owner,
            "{vendor} answered by {} but routed to {owner}",
            reply.pool_id
        );
        assert!(!reply.text.is_empty());
        assert!(reply.ring_version > 0, "ring version of a routed message");
        assert!(!reply.message_id.is_empty(), "gateway assigns a message id");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn voca_route_and_send_commands() {
    let mesh = Mesh::new().await;
    mesh.add_example_vendors();
    let (gateway, _pools) = mesh.start(&["pool-a", "pool-b"]).await;
    let mut client = gateway_client(&gateway.address()).await.unwrap();
    let owner = route(&mut client, "spoke-and-chain-bikes").await;
    let voca = voca_tests::process::binary("voca");

    let output = std::process::Command::new(&voca)
        .args([
            "route",
            "spoke-and-chain-bikes",
            "--gateway",
            &gateway.address(),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.starts_with(&format!("spoke-and-chain-bikes -> {owner} at ")),
        "{stdout}"
    );
    assert!(stdout.contains("2 pool nodes"), "{stdout}");

    let output = std::process::Command::new(&voca)
        .args([
            "send",
            "spoke-and-chain-bikes",
            "How much does a puncture repair cost?",
        ])
        .args(["--gateway", &gateway.address()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.starts_with(&format!("Dez [{owner}]: ")), "{stdout}");
    assert!(stdout.contains("£12 per wheel"), "{stdout}");

    let output = std::process::Command::new(&voca)
        .args(["send", "bad/vendor", "hi", "--gateway", &gateway.address()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("InvalidArgument") && stderr.contains("vendor_id"),
        "{stderr}"
    );
}

/// Runs `voca bench` with `args` and returns its JSON report.
fn bench_report(args: &[&str]) -> serde_json::Value {
    let output = std::process::Command::new(voca_tests::process::binary("voca"))
        .arg("bench")
        .args(args)
        .args(["--json", "--warmup", "0", "--duration", "20"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "voca bench {args:?}: {stdout}{stderr}"
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// `voca bench` reaches the same owners through the gateway and with the
/// ring read from etcd, and a proxy path lands wherever the proxy sends it.
#[tokio::test(flavor = "multi_thread")]
async fn voca_bench_paths_reach_owners() {
    let mesh = Mesh::new().await;
    mesh.add_example_vendors();
    let (gateway, pools) = mesh.start(&["pool-a", "pool-b", "pool-c"]).await;
    let mut client = gateway_client(&gateway.address()).await.unwrap();
    let vendors = [
        "rosies-bakery",
        "spoke-and-chain-bikes",
        "voltline-electronics",
        "flowright-plumbing",
    ];
    let mut owners = std::collections::BTreeSet::new();
    for vendor in vendors {
        owners.insert(route(&mut client, vendor).await);
    }
    let list = vendors.join(",");
    let etcd = mesh.etcd.endpoint();
    let gateway_address = gateway.address();
    let common = [
        "--vendors",
        &list,
        "--max-messages",
        "200",
        "--concurrency",
        "4",
    ];
    let messages_by_pool = |report: &serde_json::Value| {
        serde_json::from_value::<std::collections::BTreeMap<String, u64>>(
            report["messages_by_pool"].clone(),
        )
        .unwrap()
    };

    let direct = [
        "--direct",
        etcd.as_str(),
        "--etcd-prefix",
        voca_tests::mesh::PREFIX,
    ];
    for path in [&["--gateway", gateway_address.as_str()][..], &direct[..]] {
        let report = bench_report(&[&common[..], path].concat());
        assert_eq!(report["succeeded"], 200, "{path:?}: {report}");
        assert_eq!(report["failed"], 0, "{path:?}: {report}");
        assert_eq!(report["vendors_answered"], 4, "{path:?}: {report}");
        assert_eq!(report["vendors_on_several_pools"], 0, "{path:?}: {report}");
        let by_pool = messages_by_pool(&report);
        assert_eq!(
            by_pool
                .keys()
                .cloned()
                .collect::<std::collections::BTreeSet<_>>(),
            owners,
            "{path:?}: the pool nodes that answered are the vendors' owners"
        );
        assert_eq!(by_pool.values().sum::<u64>(), 200, "{path:?}: {report}");
    }

    // With --proxy set to one pool node, every call goes to that node. The
    // calls carry ring version 0, so it processes vendors it does not own.
    let report = bench_report(&[&common[..], &["--proxy", &pools[0].address()][..]].concat());
    assert_eq!(report["succeeded"], 200, "{report}");
    assert_eq!(report["path"], "proxy", "{report}");
    assert_eq!(
        messages_by_pool(&report),
        std::collections::BTreeMap::from([("pool-a".to_owned(), 200)])
    );

    let report = bench_report(&[
        "--vendors",
        &list,
        "--max-messages",
        "3",
        "--distribution",
        "once",
        "--gateway",
        &gateway_address,
    ]);
    assert_eq!(
        report["succeeded"], 3,
        "once stops at --max-messages: {report}"
    );
    assert_eq!(
        report["vendors_answered"], 3,
        "once sends each message to a new vendor: {report}"
    );

    let output = std::process::Command::new(voca_tests::process::binary("voca"))
        .args(["bench", "--proxy", "127.0.0.1:1", "--duration", "1"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("127.0.0.1:1"), "{stderr}");
}
