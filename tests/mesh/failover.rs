//! Membership changes seen from a client: drain on SIGTERM, a killed node
//! left out at once, stale routes redirected, a gateway started while etcd
//! is down, and conversations held by one attempt at a time in Redis.

use std::time::{Duration, Instant};

use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use voca_common::grpc::redirect;
use voca_proto::v1::{OwnerRequest, ProcessRequest};
use voca_storage::hot::{Attempt, Finish, HotState, MessageClaim, RedisState, StoredReply};
use voca_tests::mesh::{gateway_client, pool_client, route, send, wait_ring_size, Mesh, PREFIX};
use voca_tests::proxy::TcpProxy;
use voca_tests::redis_server::RedisServer;
use voca_tests::wait_for;

const VENDOR: &str = "rosies-bakery";
const QUESTION: &str = "How much is a sourdough loaf?";

/// Returns a vendor id that `node_id` owns on the gateway's ring.
async fn vendor_owned_by(
    client: &mut voca_proto::v1::gateway_client::GatewayClient<tonic::transport::Channel>,
    node_id: &str,
) -> String {
    for i in 0..1_000 {
        let vendor = format!("vendor-{i}");
        if route(client, &vendor).await == node_id {
            return vendor;
        }
    }
    panic!("{node_id} owns none of 1,000 vendors");
}

fn process_request(vendor_id: &str, ring_version: u64) -> ProcessRequest {
    ProcessRequest {
        vendor_id: vendor_id.to_owned(),
        user_id: "test-user".to_owned(),
        text: QUESTION.to_owned(),
        message_id: String::new(),
        platform: None,
        ring_version,
        left_out: Vec::new(),
    }
}

async fn pool_health(address: &str) -> Option<i32> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .ok()?
        .connect()
        .await
        .ok()?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "voca.v1.PoolNode".to_owned(),
        })
        .await
        .ok()?;
    Some(response.into_inner().status)
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_then_leaves() {
    let mesh = Mesh::new().await;
    mesh.add_example_vendors();
    let pool_a = mesh.spawn_pool_with("pool-a", &["--drain-grace-ms", "1500"]);
    let _pool_b = mesh.spawn_pool("pool-b");
    let gateway = mesh.start_gateway().await;
    wait_ring_size(&gateway.address(), 2).await;
    let mut client = gateway_client(&gateway.address()).await.unwrap();
    let mut etcd = mesh.etcd.client().await;
    let key = format!("{PREFIX}/members/pool-a");
    let mut pool_a = pool_a;

    let pid = pool_a.process.pid().to_string();
    let signalled = Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();

    // During the grace period the key shows draining, the health check
    // reports NOT_SERVING and the gateway routes around the node, while the
    // node still answers the calls that reach it.
    let value = wait_for("pool-a marked draining", Duration::from_secs(1), || {
        let (mut etcd, key) = (etcd.clone(), key.clone());
        async move {
            let response = etcd.get(key, None).await.ok()?;
            let value = String::from_utf8_lossy(response.kvs().first()?.value()).into_owned();
            value.contains("\"draining\"").then_some(value)
        }
    })
    .await;
    assert!(value.contains("\"pool-a\""), "{value}");
    assert_eq!(
        pool_health(&pool_a.address()).await,
        Some(ServingStatus::NotServing as i32)
    );
    wait_ring_size(&gateway.address(), 1).await;
    assert_eq!(route(&mut client, VENDOR).await, "pool-b");
    let mut direct = pool_client(&pool_a.address()).await.unwrap();
    let reply = direct
        .process(process_request(VENDOR, 0))
        .await
        .expect("a draining node answers during its grace period")
        .into_inner();
    assert_eq!(reply.pool_id, "pool-a");
    assert!(
        signalled.elapsed() < Duration::from_millis(1500),
        "the checks took longer than the grace period"
    );

    let exited = pool_a.process.wait_exit(Duration::from_secs(10)).await;
    assert!(exited.is_some_and(|s| s.success()), "{exited:?}");
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "exited after {took:?}, before the grace period ended"
    );
    let left = etcd.get(key.clone(), None).await.unwrap();
    assert!(left.kvs().is_empty(), "the lease is revoked at exit");
    let log = pool_a.process.log();
    assert!(log.contains("draining"), "{log}");
    let reply = send(&mut client, VENDOR, QUESTION).await.unwrap();
    assert_eq!(reply.pool_id, "pool-b");
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_node_is_left_out_at_once() {
    let mesh = Mesh::new().await;
    mesh.add_example_vendors();
    // A long lease keeps the killed node's key, and so every pool node's
    // ring, unchanged for the whole test.
    let mut lost = mesh.spawn_pool_with("pool-lost", &["--lease-ttl", "60"]);
    let pool_b = mesh.spawn_pool_with("pool-b", &["--lease-ttl", "60"]);
    let pool_c = mesh.spawn_pool_with("pool-c", &["--lease-ttl", "60"]);
    let gateway = mesh.start_gateway().await;
    wait_ring_size(&gateway.address(), 3).await;
    let mut client = gateway_client(&gateway.address()).await.unwrap();
    let vendor = vendor_owned_by(&mut client, "pool-lost").await;
    let vendor_dir = mesh.vendor_dir(&vendor);
    std::fs::create_dir_all(&vendor_dir).unwrap();
    std::fs::copy(
        mesh.vendor_dir(VENDOR).join("character.json"),
        vendor_dir.join("character.json"),
    )
    .unwrap();
    let first = send(&mut client, &vendor, QUESTION).await.unwrap();
    assert_eq!(first.pool_id, "pool-lost");

    lost.process.kill9();
    let killed = Instant::now();
    let reply = send(&mut client, &vendor, QUESTION)
        .await
        .expect("the first message after the kill goes to the next node");
    assert_ne!(reply.pool_id, "pool-lost");
    assert_eq!(reply.character_name, first.character_name);
    assert!(
        killed.elapsed() < Duration::from_secs(2),
        "answered {:?} after the kill",
        killed.elapsed()
    );
    assert_eq!(route(&mut client, &vendor).await, reply.pool_id);

    // The successor's own ring still lists the dead node, which the
    // gateway named as left out.
    let successor = pool_client(&if reply.pool_id == "pool-b" {
        pool_b.address()
    } else {
        pool_c.address()
    })
    .await
    .unwrap();
    let owner = wait_for("the successor's ring", Duration::from_secs(10), || {
        let (mut successor, vendor) = (successor.clone(), vendor.clone());
        async move {
            let owner = successor
                .owner(OwnerRequest { vendor_id: vendor })
                .await
                .ok()?
                .into_inner();
            (owner.ring_size > 0).then_some(owner)
        }
    })
    .await;
    assert_eq!(owner.pool_id, "pool-lost");
    assert_eq!(owner.ring_size, 3);

    // A gateway that never called the dead node finds it by health checks.
    let started = Instant::now();
    let quiet_gateway = mesh.start_gateway().await;
    wait_ring_size(&quiet_gateway.address(), 2).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a new gateway left the dead node out only after {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stopped_node_is_left_out_until_healthy() {
    let mesh = Mesh::new().await;
    mesh.add_example_vendors();
    let frozen = mesh.spawn_pool_with("pool-frozen", &["--lease-ttl", "60"]);
    let _pool_b = mesh.spawn_pool_with("pool-b", &["--lease-ttl", "60"]);
    let gateway = mesh.start_gateway().await;
    wait_ring_size(&gateway.address(), 2).await;
    let mut client = gateway_client(&gateway.address()).await.unwrap();
    let vendor = vendor_owned_by(&mut client, "pool-frozen").await;
    let pid = frozen.process.pid().to_string();

    // A stopped process keeps its connections open and answers nothing, as
    // a host that lost power would: only health checks that time out find it.
    std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap();
    wait_ring_size(&gateway.address(), 1).await;
    assert_eq!(route(&mut client, &vendor).await, "pool-b");

    std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap();
    wait_ring_size(&gateway.address(), 2).await;
    assert_eq!(route(&mut client, &vendor).await, "pool-frozen");
    let log = gateway.process.log();
    assert!(log.contains("pool node unreachable"), "{log}");
    assert!(log.contains("passed its health check"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_route_is_redirected_once() {
    let mesh = Mesh::new().await;
    mesh.add_example_vendors();
    let pool_a = mesh.spawn_pool("pool-a");
    let _pool_b = mesh.spawn_pool("pool-b");
    let proxy = TcpProxy::start(mesh.etcd.endpoint().parse().unwrap()).await;
    let gateway = mesh.start_gateway_via(&proxy.address().to_string()).await;
    wait_ring_size(&gateway.address(), 2).await;
    let mut client = gateway_client(&gateway.address()).await.unwrap();
    let stale_version = client
        .route(voca_proto::v1::RouteRequest {
            vendor_id: VENDOR.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .ring_version;

    // The gateway loses etcd, so its ring stays at two nodes while a third
    // joins and takes some vendors.
    proxy.cut();
    let mut pool_c = mesh.spawn_pool_with("pool-c", &["--lease-ttl", "60"]);
    let mut direct_a = pool_client(&pool_a.address()).await.unwrap();
    let moved = wait_for("pool-a to see pool-c", Duration::from_secs(10), || {
        let mut direct_a = direct_a.clone();
        async move {
            for i in 0..1_000 {
                let vendor = format!("vendor-{i}");
                let owner = direct_a
                    .owner(OwnerRequest {
                        vendor_id: vendor.clone(),
                    })
                    .await
                    .ok()?
                    .into_inner();
                if owner.ring_size != 3 {
                    return None;
                }
                if owner.pool_id == "pool-c" {
                    return Some(vendor);
                }
            }
            None
        }
    })
    .await;
    std::fs::create_dir_all(mesh.vendor_dir(&moved)).unwrap();
    std::fs::copy(
        mesh.vendor_dir(VENDOR).join("character.json"),
        mesh.vendor_dir(&moved).join("character.json"),
    )
    .unwrap();
    let stale_owner = route(&mut client, &moved).await;
    assert_ne!(stale_owner, "pool-c", "the gateway's ring is stale");

    // A pool node with a newer ring names the owner.
    let status = direct_a
        .process(process_request(&moved, stale_version))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status}");
    let trailer = |key| {
        status
            .metadata()
            .get(key)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(trailer(redirect::OWNER_ID).as_deref(), Some("pool-c"));
    assert!(trailer(redirect::OWNER_ADDRESS).is_some());
    assert!(status.message().contains("pool-c"), "{}", status.message());

    // Through the stale gateway the message reaches the owner in one hop.
    let reply = send(&mut client, &moved, QUESTION).await.unwrap();
    assert_eq!(reply.pool_id, "pool-c");
    assert_eq!(reply.character_name, "Rosie");

    // The new owner dies. The stale gateway's ring does not list it, so the
    // gateway names it as left out to the node that redirected, which then
    // answers.
    pool_c.process.kill9();
    let reply = send(&mut client, &moved, QUESTION)
        .await
        .expect("answered without waiting for pool-c's lease");
    assert_ne!(reply.pool_id, "pool-c");
    assert_eq!(reply.character_name, "Rosie");
}

#[tokio::test(flavor = "multi_thread")]
async fn last_draining_node_still_answers() {
    let mesh = Mesh::new().await;
    mesh.add_example_vendors();
    let mut only = mesh.spawn_pool_with("pool-a", &["--drain-grace-ms", "2000"]);
    let gateway = mesh.start_gateway().await;
    wait_ring_size(&gateway.address(), 1).await;
    let mut client = gateway_client(&gateway.address()).await.unwrap();
    let etcd = mesh.etcd.client().await;
    let key = format!("{PREFIX}/members/pool-a");

    std::process::Command::new("kill")
        .args(["-TERM", &only.process.pid().to_string()])
        .status()
        .unwrap();
    wait_for("pool-a marked draining", Duration::from_secs(1), || {
        let (mut etcd, key) = (etcd.clone(), key.clone());
        async move {
            let response = etcd.get(key, None).await.ok()?;
            let value = String::from_utf8_lossy(response.kvs().first()?.value()).into_owned();
            value.contains("\"draining\"").then_some(())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reply = send(&mut client, VENDOR, QUESTION)
        .await
        .expect("the only node answers while it drains");
    assert_eq!(reply.pool_id, "pool-a");
    assert!(only
        .process
        .wait_exit(Duration::from_secs(10))
        .await
        .is_some());
    let status = send(&mut client, VENDOR, QUESTION).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_serves_after_late_etcd() {
    let mut mesh = Mesh::new().await;
    mesh.add_example_vendors();
    mesh.etcd.stop();
    let gateway = mesh.start_gateway().await;
    let mut client = gateway_client(&gateway.address()).await.unwrap();
    let status = send(&mut client, VENDOR, QUESTION).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status
            .message()
            .contains("has not read the pool nodes from etcd"),
        "{}",
        status.message()
    );
    let log = gateway.process.log();
    assert!(
        log.contains("etcd is unreachable") || log.contains("etcd did not respond"),
        "{log}"
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", gateway.address()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: "voca.v1.Gateway".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status, ServingStatus::NotServing as i32);

    mesh.etcd.restart().await;
    let _pool = mesh.spawn_pool("pool-a");
    wait_ring_size(&gateway.address(), 1).await;
    let reply = send(&mut client, VENDOR, QUESTION).await.unwrap();
    assert!(reply.text.contains("£4.20"), "{}", reply.text);
    let health = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "voca.v1.Gateway".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status, ServingStatus::Serving as i32);
}

fn attempt(user_id: &str, message_id: &str, token: &str) -> Attempt {
    Attempt {
        vendor_id: VENDOR.to_owned(),
        user_id: user_id.to_owned(),
        message_id: message_id.to_owned(),
        token: token.to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_holds_a_conversation_for_one_attempt() {
    let redis = RedisServer::start().await;
    let state = RedisState::new(&redis.url()).unwrap();
    let reply = StoredReply {
        text: "£4.20".to_owned(),
        pool_id: "pool-a".to_owned(),
        character_name: "Rosie".to_owned(),
        user_id: "u1".to_owned(),
    };
    let on_a = attempt("u1", "m1", "pool-a/0a/1");
    assert_eq!(claimed(state.claim_message(&on_a, &[]).await), 0);
    let on_b = attempt("u1", "m2", "pool-b/0b/1");
    assert_eq!(
        state.claim_message(&on_b, &[]).await,
        MessageClaim::ConversationBusy(on_a.token.clone())
    );
    let retry_on_b = attempt("u1", "m1", "pool-b/0b/2");
    assert_eq!(
        state.claim_message(&retry_on_b, &[]).await,
        MessageClaim::InProgress(on_a.token.clone())
    );
    claimed(
        state
            .claim_message(&attempt("u2", "m3", "pool-b/0b/3"), &[])
            .await,
    );

    // pool-a is left out as unreachable: pool-b takes its message over.
    let take_over = ["pool-a/".to_owned()];
    claimed(state.claim_message(&retry_on_b, &take_over).await);
    assert_eq!(
        state.finish_message(&on_a, QUESTION, &reply).await,
        Finish::TakenOver,
        "the attempt that lost its claim writes nothing"
    );
    assert_eq!(
        state.finish_message(&retry_on_b, QUESTION, &reply).await,
        Finish::Saved
    );
    assert_eq!(
        state.claim_message(&on_a, &[]).await,
        MessageClaim::Finished(reply.clone())
    );
    assert_eq!(
        state.finish_message(&on_a, QUESTION, &reply).await,
        Finish::AnsweredBefore(reply.clone())
    );
    let turns = claimed(state.claim_message(&on_b, &[]).await);
    assert_eq!(turns, 2, "the claim returns the conversation");
    state.release_message(&on_b).await;
    assert_eq!(
        state.conversation_message_ids(VENDOR, "u1").await.unwrap(),
        ["m1"]
    );
    claimed(
        state
            .claim_message(&attempt("u1", "m2", "pool-c/0c/1"), &[])
            .await,
    );
}

/// Returns the number of turns in a claim, or panics if the message was not
/// claimed.
fn claimed(claim: MessageClaim) -> usize {
    match claim {
        MessageClaim::Claimed(turns) => turns.len(),
        other => panic!("expected a claim, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_lease_is_reported_until_registered_again() {
    use voca_common::membership::etcd::{self, Keys};
    use voca_common::{Member, NodeState};

    let mesh = Mesh::new().await;
    let keys = Keys::new(PREFIX);
    let client = etcd::connect(&[mesh.etcd.endpoint()]).await.unwrap();
    let member = Member {
        id: "pool-a".to_owned(),
        address: "127.0.0.1:7001".to_owned(),
        weight: 1,
        state: NodeState::Serving,
        version: "test".to_owned(),
        incarnation: "0a".to_owned(),
    };
    let registration = etcd::register(client, &keys, member, Duration::from_secs(3))
        .await
        .unwrap();
    let mut live = registration.live();
    assert!(*live.borrow_and_update());

    let mut etcd = mesh.etcd.client().await;
    let key = keys.member("pool-a");
    let lease = etcd.get(key.as_str(), None).await.unwrap().kvs()[0].lease();
    etcd.lease_revoke(lease).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), live.wait_for(|live| !live))
        .await
        .expect("the expiry is reported within 10 s")
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), live.wait_for(|live| *live))
        .await
        .expect("the node registers again within 10 s")
        .unwrap();
    let lease_now = etcd.get(key.as_str(), None).await.unwrap().kvs()[0].lease();
    assert_ne!(lease_now, lease);
}
