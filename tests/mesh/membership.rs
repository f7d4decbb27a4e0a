use std::collections::BTreeMap;
use std::time::Duration;

use tonic::transport::Channel;
use voca_proto::v1::gateway_client::GatewayClient;
use voca_tests::mesh::{gateway_client, route, send, wait_ring_size, Mesh, PREFIX};
use voca_tests::proxy::TcpProxy;

const VENDORS: usize = 2_000;

async fn owners(client: &mut GatewayClient<Channel>) -> BTreeMap<String, String> {
    let mut owners = BTreeMap::new();
    for i in 0..VENDORS {
        let vendor = format!("vendor-{i}");
        let owner = route(client, &vendor).await;
        owners.insert(vendor, owner);
    }
    owners
}

/// Asserts that only vendors owned by `changed` before, or by `changed`
/// after, moved; returns how many moved.
fn assert_moves_involve(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
    changed: &str,
) -> usize {
    let mut moved = 0;
    for (vendor, old) in before {
        let new = &after[vendor];
        if old != new {
            assert!(
                old == changed || new == changed,
                "{vendor} moved from {old} to {new}, but only {changed} changed"
            );
            moved += 1;
        }
    }
    moved
}

#[tokio::test(flavor = "multi_thread")]
async fn adding_node_moves_quarter_to_it() {
    let mesh = Mesh::new().await;
    let (gateway, _pools) = mesh.start(&["pool-a", "pool-b", "pool-c"]).await;
    let mut client = gateway_client(&gateway.address()).await.unwrap();
    let before = owners(&mut client).await;

    let _added = mesh.spawn_pool("pool-d");
    wait_ring_size(&gateway.address(), 4).await;
    let after = owners(&mut client).await;

    let moved = assert_moves_involve(&before, &after, "pool-d");
    assert!(
        after.values().filter(|o| *o == "pool-d").count() == moved,
        "every move goes to pool-d"
    );
    let fraction = moved as f64 / VENDORS as f64;
    assert!(
        (0.17..0.33).contains(&fraction),
        "moved {fraction:.3} of vendors, ideal 0.25"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn removing_node_moves_only_its_vendors() {
    let mesh = Mesh::new().await;
    let (gateway, mut pools) = mesh.start(&["pool-a", "pool-b", "pool-c", "pool-d"]).await;
    let mut client = gateway_client(&gateway.address()).await.unwrap();
    let mut etcd = mesh.etcd.client().await;
    let initial = owners(&mut client).await;

    // A clean shutdown revokes the lease, so the key is gone when the
    // process has exited, without waiting for the TTL.
    let status = pools[1]
        .process
        .terminate(Duration::from_secs(10))
        .await
        .expect("pool-b exits on SIGTERM");
    assert!(status.success(), "pool-b exit status {status}");
    let key = format!("{PREFIX}/members/pool-b");
    let left = etcd.get(key.as_str(), None).await.unwrap();
    assert!(left.kvs().is_empty(), "pool-b's key is deleted at once");
    wait_ring_size(&gateway.address(), 3).await;
    let without_b = owners(&mut client).await;
    let moved = assert_moves_involve(&initial, &without_b, "pool-b");
    assert_eq!(moved, initial.values().filter(|o| *o == "pool-b").count());

    // SIGKILL leaves the key until its lease expires.
    pools[2].process.kill9();
    let key = format!("{PREFIX}/members/pool-c");
    assert_eq!(
        etcd.get(key.as_str(), None).await.unwrap().kvs().len(),
        1,
        "pool-c's key outlives the process"
    );
    wait_ring_size(&gateway.address(), 2).await;
    let without_c = owners(&mut client).await;
    let moved = assert_moves_involve(&without_b, &without_c, "pool-c");
    assert_eq!(moved, without_b.values().filter(|o| *o == "pool-c").count());

    // The same id on a new port takes back exactly the same vendors.
    let restarted = mesh.spawn_pool("pool-c");
    wait_ring_size(&gateway.address(), 3).await;
    let back = owners(&mut client).await;
    assert_eq!(
        back, without_b,
        "a node restarted on the same id moves no vendor"
    );
    let vendor = back
        .iter()
        .find(|(_, o)| *o == "pool-c")
        .map(|(v, _)| v.clone())
        .unwrap();
    let address = client
        .route(voca_proto::v1::RouteRequest { vendor_id: vendor })
        .await
        .unwrap()
        .into_inner()
        .address;
    assert_eq!(address, restarted.address(), "route names the new port");
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_restart_keeps_ring() {
    let mut mesh = Mesh::new().await;
    mesh.add_example_vendors();
    let (gateway, _pools) = mesh.start(&["pool-a", "pool-b", "pool-c"]).await;
    let mut client = gateway_client(&gateway.address()).await.unwrap();
    let before = owners(&mut client).await;

    mesh.etcd.stop();
    // Longer than the lease TTL and than the watcher's first retries.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        owners(&mut client).await,
        before,
        "routing continues on the last ring while etcd is down"
    );
    let reply = send(
        &mut client,
        "rosies-bakery",
        "How much is a sourdough loaf?",
    )
    .await
    .unwrap();
    assert!(reply.text.contains("£4.20"), "{}", reply.text);

    mesh.etcd.restart().await;
    let _added = mesh.spawn_pool("pool-d");
    wait_ring_size(&gateway.address(), 4).await;
    let after = owners(&mut client).await;
    let moved = assert_moves_involve(&before, &after, "pool-d");
    assert!(
        moved > 0,
        "pool-d joined after the etcd restart and owns vendors"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_member_value_is_skipped() {
    let mesh = Mesh::new().await;
    let (gateway, _pools) = mesh.start(&["pool-a", "pool-b"]).await;
    let mut etcd = mesh.etcd.client().await;
    etcd.put(format!("{PREFIX}/members/bogus"), "not json", None)
        .await
        .unwrap();
    let mismatched =
        r#"{"id":"other","address":"127.0.0.1:1","weight":1,"state":"serving","version":"x"}"#;
    etcd.put(format!("{PREFIX}/members/pool-x"), mismatched, None)
        .await
        .unwrap();

    let _added = mesh.spawn_pool("pool-c");
    wait_ring_size(&gateway.address(), 3).await;
    let mut client = gateway_client(&gateway.address()).await.unwrap();
    let owners = owners(&mut client).await;
    for owner in owners.values() {
        assert!(
            ["pool-a", "pool-b", "pool-c"].contains(&owner.as_str()),
            "routed to {owner}"
        );
    }

    // A gateway that lists the malformed values at start skips them too.
    let second = mesh.start_gateway().await;
    wait_ring_size(&second.address(), 3).await;
    let log = second.process.log();
    assert!(log.contains("skipping malformed membership value"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_node_id_refuses_to_start() {
    let mesh = Mesh::new().await;
    let (_gateway, _pools) = mesh.start(&["pool-a"]).await;
    let mut second = mesh.spawn_pool("pool-a");
    // While it waits for the id, the second process takes no messages.
    let mut direct = voca_tests::wait_for(
        "the second pool-a to listen",
        Duration::from_secs(10),
        || {
            let address = second.address();
            async move { voca_tests::mesh::pool_client(&address).await.ok() }
        },
    )
    .await;
    let refused = direct
        .process(voca_proto::v1::ProcessRequest {
            vendor_id: "rosies-bakery".to_owned(),
            user_id: "test-user".to_owned(),
            text: "hello".to_owned(),
            message_id: String::new(),
            platform: None,
            ring_version: 0,
            left_out: Vec::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused}");
    assert!(
        refused.message().contains("is not registered"),
        "{}",
        refused.message()
    );
    let status = second
        .process
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("the second pool-a exits");
    assert!(!status.success());
    let log = second.process.log();
    assert!(log.contains("\"pool-a\" is already registered"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ring_params_mismatch_refuses_start() {
    let mesh = Mesh::new().await;
    let mut etcd = mesh.etcd.client().await;
    etcd.put(
        format!("{PREFIX}/ring-params"),
        r#"{"scheme_version":1,"points_per_node":7}"#,
        None,
    )
    .await
    .unwrap();
    let mut pool = mesh.spawn_pool("pool-a");
    let status = pool
        .process
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("the pool node exits");
    assert!(!status.success());
    let log = pool.process.log();
    assert!(log.contains("ring parameters differ"), "{log}");
    assert!(log.contains("7 points per node"), "{log}");

    let port = voca_tests::free_port();
    let args = [
        "--listen".to_owned(),
        format!("127.0.0.1:{port}"),
        "--etcd".to_owned(),
        mesh.etcd.endpoint(),
        "--etcd-prefix".to_owned(),
        PREFIX.to_owned(),
    ];
    let binary = voca_tests::process::binary("voca-gateway");
    let mut gateway = voca_tests::process::Process::spawn("gateway", &binary, &args, mesh.dir());
    let status = gateway
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("the gateway exits");
    assert!(!status.success());
    assert!(
        gateway.log().contains("ring parameters differ"),
        "{}",
        gateway.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_relists_after_compaction() {
    let mesh = Mesh::new().await;
    let proxy = TcpProxy::start(mesh.etcd.endpoint().parse().unwrap()).await;
    let _pools: Vec<_> = ["pool-a", "pool-b"]
        .iter()
        .map(|id| mesh.spawn_pool(id))
        .collect();
    let gateway = mesh.start_gateway_via(&proxy.address().to_string()).await;
    wait_ring_size(&gateway.address(), 2).await;
    let mut client = gateway_client(&gateway.address()).await.unwrap();

    // While the gateway cannot reach etcd, the membership changes and etcd
    // compacts away the revisions the gateway has not seen.
    proxy.cut();
    let mut added = mesh.spawn_pool("pool-c");
    let mut etcd = mesh.etcd.client().await;
    let key = format!("{PREFIX}/members/pool-c");
    voca_tests::wait_for("pool-c to register", Duration::from_secs(20), || {
        let (mut etcd, key) = (etcd.clone(), key.clone());
        async move { (!etcd.get(key, None).await.ok()?.kvs().is_empty()).then_some(()) }
    })
    .await;
    // A write outside the prefix moves the revision past pool-c's, so the
    // compaction removes the revision the gateway resumes from.
    let put = etcd.put("/unrelated", "x", None).await.unwrap();
    let revision = put.header().expect("put header").revision();
    etcd.compact(revision, None).await.unwrap();
    let during = client
        .route(voca_proto::v1::RouteRequest {
            vendor_id: "vendor-1".to_owned(),
        })
        .await
        .expect("routing goes on while etcd is unreachable")
        .into_inner();
    assert_eq!(during.ring_size, 2, "the gateway keeps its last ring");

    proxy.restore();
    wait_ring_size(&gateway.address(), 3).await;
    let log = gateway.process.log();
    assert!(
        log.contains("watch revision was compacted; listing again"),
        "{log}"
    );
    assert!(added.process.log().contains("pool node serving"));
    added.process.kill9();
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_lease_registers_again() {
    let mesh = Mesh::new().await;
    let (gateway, pools) = mesh.start(&["pool-a", "pool-b"]).await;
    let mut etcd = mesh.etcd.client().await;
    let key = format!("{PREFIX}/members/pool-a");
    let lease = etcd.get(key.as_str(), None).await.unwrap().kvs()[0].lease();
    etcd.lease_revoke(lease).await.unwrap();

    let new_lease = voca_tests::wait_for(
        "pool-a to register with a new lease",
        Duration::from_secs(20),
        || {
            let (mut etcd, key) = (etcd.clone(), key.clone());
            async move {
                let response = etcd.get(key, None).await.ok()?;
                let lease_now = response.kvs().first()?.lease();
                (lease_now != lease).then_some(lease_now)
            }
        },
    )
    .await;
    assert_ne!(new_lease, 0);
    wait_ring_size(&gateway.address(), 2).await;
    let log = pools[0].process.log();
    assert!(log.contains("registered in etcd again"), "{log}");
    assert!(
        log.contains("refusing messages until registered again"),
        "a node whose lease expired stops acting as an owner: {log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_stops_on_sigterm() {
    let mesh = Mesh::new().await;
    let (mut gateway, _pools) = mesh.start(&["pool-a"]).await;
    let status = gateway
        .process
        .terminate(Duration::from_secs(10))
        .await
        .expect("the gateway exits");
    assert!(status.success(), "exit status {status}");
    let log = gateway.process.log();
    assert!(log.contains("SIGTERM"), "{log}");
    assert!(log.contains("gateway stopped"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_data_loss_rebuilds_membership() {
    let mut mesh = Mesh::new().await;
    let (gateway, pools) = mesh.start(&["pool-a", "pool-b", "pool-c"]).await;
    let mut client = gateway_client(&gateway.address()).await.unwrap();
    let before = owners(&mut client).await;

    // Enough writes that the old revision is well above the new one.
    let mut etcd = mesh.etcd.client().await;
    for i in 0..20 {
        etcd.put(format!("/unrelated/{i}"), "x", None)
            .await
            .unwrap();
    }
    mesh.etcd.restart_empty().await;

    // The pool nodes' leases are gone, so they register again, and the
    // gateway notices that revisions started over and lists again.
    let mut etcd = mesh.etcd.client().await;
    voca_tests::wait_for(
        "every pool node to register again",
        Duration::from_secs(30),
        || {
            let mut etcd = etcd.clone();
            async move {
                let members = etcd
                    .get(
                        format!("{PREFIX}/members/"),
                        Some(etcd_client::GetOptions::new().with_prefix()),
                    )
                    .await
                    .ok()?;
                (members.kvs().len() == 3).then_some(())
            }
        },
    )
    .await;
    let _added = mesh.spawn_pool("pool-d");
    wait_ring_size(&gateway.address(), 4).await;
    let after = owners(&mut client).await;
    assert_moves_involve(&before, &after, "pool-d");
    assert!(
        etcd.get(format!("{PREFIX}/ring-params"), None)
            .await
            .unwrap()
            .kvs()
            .len()
            == 1
    );
    let log = gateway.process.log();
    assert!(log.contains("etcd lost its data; listing again"), "{log}");
    assert!(pools[0].process.log().contains("registered in etcd again"));
}

#[tokio::test(flavor = "multi_thread")]
async fn deleted_key_is_written_again() {
    let mesh = Mesh::new().await;
    let (gateway, _pools) = mesh.start(&["pool-a", "pool-b"]).await;
    let mut etcd = mesh.etcd.client().await;
    let key = format!("{PREFIX}/members/pool-a");
    let lease = etcd.get(key.as_str(), None).await.unwrap().kvs()[0].lease();
    etcd.delete(key.as_str(), None).await.unwrap();

    let restored = voca_tests::wait_for(
        "pool-a to write its key again",
        Duration::from_secs(20),
        || {
            let (mut etcd, key) = (etcd.clone(), key.clone());
            async move {
                etcd.get(key, None)
                    .await
                    .ok()?
                    .kvs()
                    .first()
                    .map(|kv| kv.lease())
            }
        },
    )
    .await;
    assert_eq!(
        restored, lease,
        "the key is written again under the same lease"
    );
    wait_ring_size(&gateway.address(), 2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_after_etcd_restart_waits_for_renewed_lease() {
    let mut mesh = Mesh::new().await;
    let mut killed = mesh.spawn_pool_with("pool-a", &["--lease-ttl", "8"]);
    let gateway = mesh.start_gateway().await;
    wait_ring_size(&gateway.address(), 1).await;
    killed.process.kill9();
    // etcd renews every lease to its full TTL when it starts, so the dead
    // process's key outlives the new process's own TTL of 2 s.
    mesh.etcd.restart().await;
    let mut restarted = mesh.spawn_pool("pool-a");
    let address = restarted.address();
    let client = gateway_client(&gateway.address()).await.unwrap();
    voca_tests::wait_for("pool-a to serve again", Duration::from_secs(30), || {
        let (mut client, address) = (client.clone(), address.clone());
        async move {
            let route = client
                .route(voca_proto::v1::RouteRequest {
                    vendor_id: "vendor-1".to_owned(),
                })
                .await
                .ok()?
                .into_inner();
            (route.address == address).then_some(())
        }
    })
    .await;
    let exited = restarted
        .process
        .wait_exit(Duration::from_millis(100))
        .await;
    assert!(exited.is_none(), "{}", restarted.process.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_after_kill_waits_for_old_lease() {
    let mesh = Mesh::new().await;
    mesh.add_example_vendors();
    // A lease long enough to outlast the new process's start-up on a busy
    // machine.
    let lease_ttl = ["--lease-ttl", "6"];
    let mut killed = mesh.spawn_pool_with("pool-a", &lease_ttl);
    let _other = mesh.spawn_pool_with("pool-b", &lease_ttl);
    let gateway = mesh.start_gateway().await;
    wait_ring_size(&gateway.address(), 2).await;
    killed.process.kill9();

    // The old lease still holds the id; the new process waits for it to
    // expire instead of failing.
    let restarted = mesh.spawn_pool_with("pool-a", &lease_ttl);
    let mut client = gateway_client(&gateway.address()).await.unwrap();
    voca_tests::wait_for("pool-a to serve again", Duration::from_secs(20), || {
        let (mut client, address) = (client.clone(), restarted.address());
        async move {
            let route = client
                .route(voca_proto::v1::RouteRequest {
                    vendor_id: "vendor-1".to_owned(),
                })
                .await
                .ok()?
                .into_inner();
            (route.ring_size == 2 && (route.pool_id != "pool-a" || route.address == address))
                .then_some(())
        }
    })
    .await;
    let owners = owners(&mut client).await;
    assert!(
        owners.values().any(|o| o == "pool-a"),
        "pool-a owns vendors again"
    );
    let log = restarted.process.log();
    assert!(log.contains("waiting for its lease to expire"), "{log}");
    assert!(log.contains("pool node serving"), "{log}");
}
