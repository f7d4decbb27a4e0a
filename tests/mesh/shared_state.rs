use std::time::Duration;

use redis::AsyncCommands;
use tonic::transport::Channel;
use voca_proto::v1::gateway_client::GatewayClient;
use voca_tests::mesh::{gateway_client, route, send, Mesh, Node};
use voca_tests::redis_server::RedisServer;

const VENDOR: &str = "rosies-bakery";
const QUESTION: &str = "How much is a sourdough loaf?";

fn spawn_pools(mesh: &Mesh, redis_url: &str, ids: &[&str]) -> Vec<Node> {
    ids.iter()
        .map(|id| mesh.spawn_pool_with(id, &["--redis", redis_url]))
        .collect()
}

/// Redis, pool nodes on it serving the example vendors, a gateway whose
/// ring has them all, and a client of the gateway.
struct RedisMesh {
    redis: RedisServer,
    mesh: Mesh,
    pools: Vec<Node>,
    gateway: Node,
    client: GatewayClient<Channel>,
}

impl RedisMesh {
    async fn start(pool_ids: &[&str]) -> Self {
        let redis = RedisServer::start().await;
        let mesh = Mesh::new().await;
        mesh.add_example_vendors();
        let pools = spawn_pools(&mesh, &redis.url(), pool_ids);
        let gateway = mesh.start_gateway().await;
        voca_tests::mesh::wait_ring_size(&gateway.address(), pool_ids.len()).await;
        let client = gateway_client(&gateway.address()).await.unwrap();
        Self {
            redis,
            mesh,
            pools,
            gateway,
            client,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn history_and_characters_live_in_redis() {
    let RedisMesh {
        redis,
        mesh: _mesh,
        pools: _pools,
        gateway: _gateway,
        mut client,
    } = RedisMesh::start(&["pool-a", "pool-b"]).await;
    let owner = route(&mut client, VENDOR).await;

    for _ in 0..2 {
        let reply = send(&mut client, VENDOR, QUESTION).await.unwrap();
        assert!(reply.text.contains("£4.20"), "{}", reply.text);
    }
    let mut connection = redis.connection().await;
    let session: Vec<String> = connection
        .lrange(format!("voca:sessions:{VENDOR}:test-user"), 0, -1)
        .await
        .unwrap();
    assert_eq!(
        session.len(),
        4,
        "two messages and two replies: {session:?}"
    );
    assert!(session[0].contains(QUESTION), "{}", session[0]);
    assert!(session[1].contains("£4.20"), "{}", session[1]);

    let cached: String = connection
        .get(format!("voca:characters:{VENDOR}"))
        .await
        .unwrap();
    assert!(cached.contains("Rosie"), "{cached}");
    let ttl: i64 = connection
        .ttl(format!("voca:characters:{VENDOR}"))
        .await
        .unwrap();
    assert!(ttl > 0, "the cached character expires: ttl {ttl}");
    let active: bool = connection
        .sismember(format!("voca:active:{owner}"), VENDOR)
        .await
        .unwrap();
    assert!(active, "{VENDOR} is active on {owner}");
    let messages: u64 = connection
        .hget(format!("voca:metrics:{owner}"), "messages")
        .await
        .unwrap();
    assert_eq!(messages, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn moved_vendor_keeps_conversation_and_character() {
    let RedisMesh {
        redis,
        mesh,
        mut pools,
        gateway,
        mut client,
    } = RedisMesh::start(&["pool-a", "pool-b", "pool-c"]).await;
    let first_owner = route(&mut client, VENDOR).await;
    send(&mut client, VENDOR, QUESTION).await.unwrap();

    // The vendor's files leave the store, and its pool node stops: the next
    // owner can only get the character from Redis.
    std::fs::remove_dir_all(mesh.vendor_dir(VENDOR)).unwrap();
    let index = pools
        .iter()
        .position(|p| p.process.name().starts_with(&first_owner))
        .unwrap();
    let status = pools[index]
        .process
        .terminate(Duration::from_secs(10))
        .await
        .unwrap();
    assert!(status.success());
    voca_tests::mesh::wait_ring_size(&gateway.address(), 2).await;
    let second_owner = route(&mut client, VENDOR).await;
    assert_ne!(second_owner, first_owner);

    let reply = send(&mut client, VENDOR, QUESTION)
        .await
        .expect("answered from the character in Redis");
    assert_eq!(reply.pool_id, second_owner);
    assert!(reply.text.contains("£4.20"), "{}", reply.text);
    let mut connection = redis.connection().await;
    let turns: u64 = connection
        .llen(format!("voca:sessions:{VENDOR}:test-user"))
        .await
        .unwrap();
    assert_eq!(turns, 4, "the conversation goes on across pool nodes");
}

#[tokio::test(flavor = "multi_thread")]
async fn cold_load_after_flush() {
    let RedisMesh {
        redis,
        mesh: _mesh,
        pools: _pools,
        gateway: _gateway,
        mut client,
    } = RedisMesh::start(&["pool-a"]).await;
    send(&mut client, VENDOR, QUESTION).await.unwrap();

    let mut connection = redis.connection().await;
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut connection)
        .await
        .unwrap();
    // A vendor the node never loaded comes from the store into Redis.
    let reply = send(
        &mut client,
        "voltline-electronics",
        "How long is the warranty on a refurbished laptop?",
    )
    .await
    .unwrap();
    assert!(reply.text.contains("12-month warranty"), "{}", reply.text);
    let cached: bool = connection
        .exists("voca:characters:voltline-electronics")
        .await
        .unwrap();
    assert!(cached);
    // The flushed conversation starts again.
    send(&mut client, VENDOR, QUESTION).await.unwrap();
    let turns: u64 = connection
        .llen(format!("voca:sessions:{VENDOR}:test-user"))
        .await
        .unwrap();
    assert_eq!(turns, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_redis_still_answers() {
    let mesh = Mesh::new().await;
    mesh.add_example_vendors();
    let closed = format!("redis://127.0.0.1:{}", voca_tests::free_port());
    let pools = spawn_pools(&mesh, &closed, &["pool-a"]);
    let gateway = mesh.start_gateway().await;
    voca_tests::mesh::wait_ring_size(&gateway.address(), 1).await;
    let mut client = gateway_client(&gateway.address()).await.unwrap();
    for _ in 0..2 {
        let reply =
            tokio::time::timeout(Duration::from_secs(10), send(&mut client, VENDOR, QUESTION))
                .await
                .expect("answered promptly")
                .expect("answered without Redis");
        assert!(reply.text.contains("£4.20"), "{}", reply.text);
    }
    let log = pools[0].process.log();
    assert!(log.contains("using this node's memory"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn new_owner_preloads_active_vendors() {
    let redis = RedisServer::start().await;
    let mesh = Mesh::new().await;
    mesh.add_example_vendors();
    let mut vendors = mesh.add_fixture_vendors();
    vendors.extend(
        [
            "rosies-bakery",
            "spoke-and-chain-bikes",
            "voltline-electronics",
            "flowright-plumbing",
        ]
        .map(str::to_owned),
    );
    let pools = spawn_pools(&mesh, &redis.url(), &["pool-a", "pool-b"]);
    let gateway = mesh.start_gateway().await;
    voca_tests::mesh::wait_ring_size(&gateway.address(), 2).await;
    let mut client = gateway_client(&gateway.address()).await.unwrap();
    for vendor in &vendors {
        send(&mut client, vendor, "hello").await.unwrap();
    }

    let added = spawn_pools(&mesh, &redis.url(), &["pool-c"]);
    voca_tests::mesh::wait_ring_size(&gateway.address(), 3).await;
    let mut moved = Vec::new();
    for vendor in &vendors {
        if route(&mut client, vendor).await == "pool-c" {
            moved.push(vendor.clone());
        }
    }
    assert!(!moved.is_empty(), "pool-c took over some of {vendors:?}");

    // pool-c loads the vendors it took over before any message reaches it.
    let mut connection = redis.connection().await;
    voca_tests::wait_for(
        "pool-c to preload its vendors",
        Duration::from_secs(20),
        || {
            let mut connection = connection.clone();
            let moved = moved.clone();
            async move {
                let active: Vec<String> = connection.smembers("voca:active:pool-c").await.ok()?;
                moved.iter().all(|v| active.contains(v)).then_some(())
            }
        },
    )
    .await;
    let active: Vec<String> = connection.smembers("voca:active:pool-c").await.unwrap();
    assert_eq!(
        active.len(),
        moved.len(),
        "only vendors pool-c owns: {active:?}"
    );
    // The summary line follows the last load.
    let expected = format!("preloaded={}", moved.len());
    let log = voca_tests::wait_for(
        "pool-c to log its rebalance",
        Duration::from_secs(10),
        || {
            let log = added[0].process.log();
            std::future::ready(log.contains("rebalanced vendors").then_some(log))
        },
    )
    .await;
    assert!(log.contains(&expected), "{log}");
    let evicted = pools
        .iter()
        .any(|p| p.process.log().contains("rebalanced vendors"));
    assert!(evicted, "the pool nodes that lost vendors dropped them");
}

/// Replaces the character name in the store's copy of `VENDOR`.
fn rename(mesh: &Mesh, from: &str, to: &str) {
    let path = mesh.vendor_dir(VENDOR).join("character.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let renamed = text.replacen(
        &format!("\"name\": \"{from}\""),
        &format!("\"name\": \"{to}\""),
        1,
    );
    assert_ne!(renamed, text, "the name {from} is in the file");
    std::fs::write(path, renamed).unwrap();
}

async fn character_name(
    client: &mut voca_proto::v1::gateway_client::GatewayClient<tonic::transport::Channel>,
) -> String {
    send(client, VENDOR, QUESTION).await.unwrap().character_name
}

#[tokio::test(flavor = "multi_thread")]
async fn changed_character_is_served_within_a_second() {
    let RedisMesh {
        redis,
        mesh,
        pools: _pools,
        gateway: _gateway,
        mut client,
    } = RedisMesh::start(&["pool-a", "pool-b"]).await;
    assert_eq!(character_name(&mut client).await, "Rosie");

    // An announced change reaches the owner through the channel.
    rename(&mesh, "Rosie", "Rosalind");
    let output = std::process::Command::new(voca_tests::process::binary("voca"))
        .args(["invalidate", VENDOR, "--redis", &redis.url()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("version 1"));
    voca_tests::wait_for("the renamed character", Duration::from_secs(1), || {
        let mut client = client.clone();
        async move { (character_name(&mut client).await == "Rosalind").then_some(()) }
    })
    .await;

    // A change whose announcement was missed is caught by the version check.
    rename(&mesh, "Rosalind", "Rosa");
    let mut connection = redis.connection().await;
    let _: u64 = connection
        .incr(format!("voca:versions:{VENDOR}"), 1)
        .await
        .unwrap();
    let _: u64 = connection
        .del(format!("voca:characters:{VENDOR}"))
        .await
        .unwrap();
    voca_tests::wait_for(
        "the character renamed without a notice",
        Duration::from_secs(5),
        || {
            let mut client = client.clone();
            async move { (character_name(&mut client).await == "Rosa").then_some(()) }
        },
    )
    .await;
}

/// Sends one message with a client-chosen message id through the gateway.
async fn send_with_id(
    client: &mut voca_proto::v1::gateway_client::GatewayClient<tonic::transport::Channel>,
    vendor_id: &str,
    message_id: &str,
) -> voca_proto::v1::SendMessageResponse {
    client
        .send_message(voca_proto::v1::SendMessageRequest {
            vendor_id: vendor_id.to_owned(),
            user_id: "test-user".to_owned(),
            text: QUESTION.to_owned(),
            message_id: message_id.to_owned(),
            platform: None,
        })
        .await
        .unwrap_or_else(|s| panic!("{vendor_id} {message_id}: {s}"))
        .into_inner()
}

#[tokio::test(flavor = "multi_thread")]
async fn retried_message_is_answered_once() {
    const OTHER: &str = "spoke-and-chain-bikes";
    let RedisMesh {
        redis,
        mesh: _mesh,
        mut pools,
        gateway,
        mut client,
    } = RedisMesh::start(&["pool-a", "pool-b", "pool-c"]).await;
    let mut connection = redis.connection().await;
    let session_length = |vendor: &str| format!("voca:sessions:{vendor}:test-user");

    let first = send_with_id(&mut client, VENDOR, "order-1").await;
    let retry = send_with_id(&mut client, VENDOR, "order-1").await;
    assert_eq!(retry.text, first.text);
    assert_eq!(retry.pool_id, first.pool_id);
    assert_eq!(retry.message_id, "order-1");
    let length: usize = connection.llen(session_length(VENDOR)).await.unwrap();
    assert_eq!(length, 2, "the retry adds nothing to the history");
    let ttl: i64 = connection
        .ttl(format!("voca:messages:{VENDOR}:order-1"))
        .await
        .unwrap();
    assert!(ttl > 0, "the stored reply expires: ttl {ttl}");
    assert!(
        ttl <= 600,
        "the stored reply is kept 10 minutes at most: ttl {ttl}"
    );

    // The same message id for another vendor is another message.
    let other = send_with_id(&mut client, OTHER, "order-1").await;
    assert_ne!(other.character_name, first.character_name);
    let length: usize = connection.llen(session_length(OTHER)).await.unwrap();
    assert_eq!(length, 2);

    // After the owner leaves, the next owner returns the stored reply.
    let owner = pools
        .iter()
        .position(|pool| {
            pool.process
                .name()
                .starts_with(&format!("{}-", first.pool_id))
        })
        .expect("the owner is one of the pools");
    pools[owner]
        .process
        .terminate(Duration::from_secs(10))
        .await;
    voca_tests::mesh::wait_ring_size(&gateway.address(), 2).await;
    assert_ne!(route(&mut client, VENDOR).await, first.pool_id);
    let moved = send_with_id(&mut client, VENDOR, "order-1").await;
    assert_eq!(moved.text, first.text);
    assert_eq!(
        moved.pool_id, first.pool_id,
        "the stored reply names the pool that answered"
    );
    let length: usize = connection.llen(session_length(VENDOR)).await.unwrap();
    assert_eq!(length, 2);

    // A new message id is a new message.
    let next = send_with_id(&mut client, VENDOR, "order-2").await;
    assert_ne!(next.pool_id, first.pool_id);
    let length: usize = connection.llen(session_length(VENDOR)).await.unwrap();
    assert_eq!(length, 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn paused_redis_deduplicates_locally() {
    let RedisMesh {
        redis,
        mesh: _mesh,
        pools: _pools,
        gateway: _gateway,
        mut client,
    } = RedisMesh::start(&["pool-a"]).await;
    let before = send_with_id(&mut client, VENDOR, "before-pause").await;
    assert!(!before.deduplicated_locally);

    redis.pause();
    let first = send_with_id(&mut client, VENDOR, "during-pause").await;
    assert!(
        first.deduplicated_locally,
        "Redis did not record the message"
    );
    assert!(first.text.contains("£4.20"), "{}", first.text);
    let retry = send_with_id(&mut client, VENDOR, "during-pause").await;
    assert_eq!(
        retry.text, first.text,
        "the node that answered recognizes the retry"
    );
    let second = send_with_id(&mut client, VENDOR, "during-pause-2").await;
    assert!(second.deduplicated_locally);

    redis.resume();
    let after = voca_tests::wait_for("Redis to be used again", Duration::from_secs(10), || {
        let mut client = client.clone();
        async move {
            let reply =
                send_with_id(&mut client, VENDOR, &format!("after-{}", rand_suffix())).await;
            (!reply.deduplicated_locally).then_some(reply)
        }
    })
    .await;
    assert_eq!(after.pool_id, "pool-a");
    let mut connection = redis.connection().await;
    let stored: Option<String> = connection
        .get(format!("voca:messages:{VENDOR}:before-pause"))
        .await
        .unwrap();
    assert!(stored.is_some(), "the reply from before the pause is kept");
}

/// Returns a value that differs on every call, for fresh message ids.
fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[tokio::test(flavor = "multi_thread")]
async fn message_id_of_another_customer_is_rejected() {
    let RedisMesh {
        redis: _redis,
        mesh: _mesh,
        pools: _pools,
        gateway: _gateway,
        mut client,
    } = RedisMesh::start(&["pool-a", "pool-b"]).await;
    let request = |user_id: &str, text: &str| voca_proto::v1::SendMessageRequest {
        vendor_id: VENDOR.to_owned(),
        user_id: user_id.to_owned(),
        text: text.to_owned(),
        message_id: "order-42".to_owned(),
        platform: None,
    };
    let alice = client
        .send_message(request("alice", QUESTION))
        .await
        .unwrap()
        .into_inner();
    assert!(alice.text.contains("£4.20"), "{}", alice.text);

    let bob = client
        .send_message(request("bob", "Do you deliver?"))
        .await
        .unwrap_err();
    assert_eq!(bob.code(), tonic::Code::AlreadyExists, "{bob}");
    assert!(bob.message().contains("order-42"), "{}", bob.message());
    assert!(!bob.message().contains("4.20"), "{}", bob.message());

    let retry = client
        .send_message(request("alice", QUESTION))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        retry.text, alice.text,
        "the customer who sent it still gets the reply"
    );
}
