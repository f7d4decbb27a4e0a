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
