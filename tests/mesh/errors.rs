use std::time::Duration;

use tonic::Code;
use voca_proto::v1::{ProcessRequest, RouteRequest};
use voca_tests::mesh::{gateway_client, pool_client, send, Mesh};

#[tokio::test(flavor = "multi_thread")]
async fn bad_inputs_get_clear_statuses() {
    let mesh = Mesh::new().await;
    mesh.add_example_vendors();
    mesh.write_vendor_file(
        "broken",
        "character.json",
        b"{\n  \"name\": \"Broken\",\n  \"bio\": [\"ok\", 42]\n}\n",
    );
    let (gateway, pools) = mesh.start(&["pool-a"]).await;
    let mut client = gateway_client(&gateway.address()).await.unwrap();

    let long_id = "v".repeat(129);
    for vendor in [
        "",
        "a/b",
        "a b",
        "a\0b",
        ".hidden",
        "café",
        long_id.as_str(),
    ] {
        let status = send(&mut client, vendor, "hello").await.expect_err(vendor);
        assert_eq!(status.code(), Code::InvalidArgument, "{vendor:?}: {status}");
        assert!(
            status.message().contains("vendor_id"),
            "{vendor:?}: {}",
            status.message()
        );
        let status = client
            .route(RouteRequest {
                vendor_id: vendor.to_owned(),
            })
            .await
            .expect_err(vendor);
        assert_eq!(status.code(), Code::InvalidArgument, "Route {vendor:?}");
    }

    let long_text = "a".repeat(64 * 1024 + 1);
    let status = send(&mut client, "rosies-bakery", &long_text)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("text"), "{}", status.message());
    assert!(
        send(&mut client, "rosies-bakery", &"a".repeat(64 * 1024))
            .await
            .is_ok(),
        "64 KiB is accepted"
    );

    let status = send(&mut client, "no-such-vendor", "hello")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(
        status.message().contains("no-such-vendor"),
        "{}",
        status.message()
    );

    let status = send(&mut client, "broken", "hello").await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status}");
    for part in ["\"broken\"", "bio[1]", "line 3", "column"] {
        assert!(
            status.message().contains(part),
            "{part} missing from {}",
            status.message()
        );
    }

    // The pool node checks ids too, for callers that skip the gateway.
    let mut pool = pool_client(&pools[0].address()).await.unwrap();
    let status = pool
        .process(ProcessRequest {
            vendor_id: "../etc".to_owned(),
            user_id: "u".to_owned(),
            text: "hi".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("vendor_id"),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_pool_nodes_is_unavailable() {
    let mesh = Mesh::new().await;
    let gateway = mesh.start_gateway().await;
    let mut client = gateway_client(&gateway.address()).await.unwrap();
    let status = send(&mut client, "rosies-bakery", "hello")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("no pool nodes are registered"),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_owner_is_unavailable_naming_pool() {
    let mesh = Mesh::new().await;
    mesh.add_example_vendors();
    let mut pool = mesh.spawn_pool_with("pool-lost", &["--lease-ttl", "60"]);
    let gateway = mesh.start_gateway().await;
    voca_tests::mesh::wait_ring_size(&gateway.address(), 1).await;
    let mut client = gateway_client(&gateway.address()).await.unwrap();
    assert!(send(&mut client, "rosies-bakery", "hello").await.is_ok());

    pool.process.kill9();
    let status = tokio::time::timeout(
        Duration::from_secs(10),
        send(&mut client, "rosies-bakery", "hello"),
    )
    .await
    .expect("the gateway answers promptly")
    .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    assert!(
        status.message().contains("pool-lost"),
        "{}",
        status.message()
    );
}
