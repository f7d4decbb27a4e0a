//! The S3 character store against a real Garage server: read directly
//! through `S3Store`, and end to end through gateways and pool nodes
//! started with `--characters s3://BUCKET`.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Deserialize;
use tonic::Code;
use voca_pool_node::store::{CharacterStore, S3Store, StoreError, MAX_CHARACTER_BYTES};
use voca_tests::garage::{spawn_pool, Compression, GarageServer};
use voca_tests::mesh::{gateway_client, send, wait_ring_size, Mesh};
use voca_tests::{free_port, repo_root};

/// Starts pool nodes reading this Garage's bucket and a gateway, and waits
/// until the gateway's ring has every pool node.
async fn start_s3_mesh(
    mesh: &Mesh,
    garage: &GarageServer,
    node_ids: &[&str],
) -> (voca_tests::mesh::Node, Vec<voca_tests::mesh::Node>) {
    let pools = node_ids
        .iter()
        .map(|id| spawn_pool(mesh, id, &garage.pool_flags(), Some(garage.key())))
        .collect();
    let gateway = mesh.start_gateway().await;
    wait_ring_size(&gateway.address(), node_ids.len()).await;
    (gateway, pools)
}

fn owner_store(garage: &GarageServer) -> S3Store {
    S3Store::new(garage.bucket(), &garage.s3_config(garage.key())).expect("valid S3 settings")
}

#[derive(Deserialize)]
struct ScriptedTurn {
    vendor_id: String,
    text: String,
    expect: String,
}

#[tokio::test(flavor = "multi_thread")]
async fn example_vendors_answer_from_s3() {
    let mesh = Mesh::new().await;
    let garage = GarageServer::start().await;
    let examples = repo_root().join("examples/vendors");
    let uploads = [
        ("rosies-bakery", Compression::Zstd),
        ("spoke-and-chain-bikes", Compression::None),
        ("voltline-electronics", Compression::Alternate),
        ("flowright-plumbing", Compression::Alternate),
    ];
    for (vendor, compression) in uploads {
        garage
            .upload_vendor(vendor, &examples.join(vendor), compression)
            .await;
    }
    let client = garage.client();
    let stored = client
        .head_object()
        .bucket(garage.bucket())
        .key("vendors/rosies-bakery/character.json")
        .send()
        .await
        .unwrap();
    assert_eq!(stored.content_encoding(), Some("zstd"));

    let (gateway, _pools) = start_s3_mesh(&mesh, &garage, &["pool-a", "pool-b"]).await;
    let mut gateway = gateway_client(&gateway.address()).await.unwrap();
    let script: Vec<ScriptedTurn> = serde_json::from_slice(
        &std::fs::read(repo_root().join("examples/conversation.json")).unwrap(),
    )
    .unwrap();
    // The conversation also reaches vendors that the quickstart registers
    // from templates; this test uploads only the example folders.
    let uploaded: Vec<&str> = uploads.iter().map(|(vendor, _)| *vendor).collect();
    for turn in script
        .iter()
        .filter(|t| uploaded.contains(&t.vendor_id.as_str()))
    {
        let reply = send(&mut gateway, &turn.vendor_id, &turn.text)
            .await
            .unwrap_or_else(|s| panic!("{}: {s}", turn.vendor_id));
        assert!(
            reply.text.contains(&turn.expect),
            "{}: reply to {:?} lacks {:?}: {}",
            turn.vendor_id,
            turn.text,
            turn.expect,
            reply.text
        );
    }
    let reply = send(
        &mut gateway,
        "rosies-bakery",
        "How much is a sourdough loaf?",
    )
    .await
    .unwrap();
    assert!(reply.text.contains("£4.20"), "{}", reply.text);

    let status = send(&mut gateway, "no-such-vendor", "hello")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status}");
    assert!(
        status.message().contains("no-such-vendor"),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fixture_characters_load_from_s3() {
    let mesh = Mesh::new().await;
    let garage = GarageServer::start().await;
    // The file store's layout of the fixtures is uploaded as it is.
    let vendors = mesh.add_fixture_vendors();
    for vendor in &vendors {
        garage
            .upload_vendor(vendor, &mesh.vendor_dir(vendor), Compression::Alternate)
            .await;
    }
    let (gateway, _pools) = start_s3_mesh(&mesh, &garage, &["pool-a", "pool-b"]).await;
    let mut gateway = gateway_client(&gateway.address()).await.unwrap();

    for vendor in &vendors {
        let reply = send(&mut gateway, vendor, "Hello, who are you?")
            .await
            .unwrap_or_else(|s| panic!("{vendor}: {s}"));
        assert!(!reply.text.is_empty(), "{vendor}: empty reply");
        assert!(!reply.character_name.is_empty(), "{vendor}: no name");
    }
    let cases = [
        ("dobby", "Do you know Harry Potter?", "Harry Potter"),
        (
            "edriziai-info",
            "What metrics should I track before fundraising?",
            "Customer Acquisition Cost",
        ),
    ];
    for (vendor, question, expected) in cases {
        let reply = send(&mut gateway, vendor, question).await.unwrap();
        assert!(
            reply.text.contains(expected),
            "{vendor}: reply to {question:?} lacks {expected:?}: {}",
            reply.text
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn knowledge_references_resolve_from_s3() {
    let mesh = Mesh::new().await;
    let garage = GarageServer::start().await;
    let character = br#"{
        "name": "Pat",
        "bio": "Pat runs a hardware shop.",
        "knowledge": [
            {"path": "knowledge-base/policies//returns.md"},
            {"directory": "faq"}
        ]
    }"#;
    garage
        .put("vendors/pat/character.json", character, true)
        .await;
    garage
        .put(
            "vendors/pat/knowledge-base/policies/returns.md",
            b"# Returns\nTools can be returned within 45 days with the receipt.",
            true,
        )
        .await;
    garage
        .put(
            "vendors/pat/knowledge-base/faq/keys.md",
            b"# Keys\nWe cut spare keys while you wait for 6 pounds each.",
            false,
        )
        .await;
    let (gateway, _pools) = start_s3_mesh(&mesh, &garage, &["pool-a"]).await;
    let mut gateway = gateway_client(&gateway.address()).await.unwrap();

    let reply = send(&mut gateway, "pat", "Can I return a tool?")
        .await
        .unwrap();
    assert!(reply.text.contains("45 days"), "{}", reply.text);
    let reply = send(&mut gateway, "pat", "Do you cut spare keys?")
        .await
        .unwrap();
    assert!(reply.text.contains("6 pounds"), "{}", reply.text);

    // The same references, read through the store itself.
    let store = owner_store(&garage);
    let file = store
        .knowledge_file("pat", "policies//returns.md")
        .await
        .unwrap()
        .expect("the referenced file");
    assert_eq!(file.name, "policies/returns.md");
    assert!(file.bytes.starts_with(b"# Returns"));
    let faq = store.knowledge("pat", Some("faq")).await.unwrap();
    let names: Vec<&str> = faq.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["faq/keys.md"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_store_reads_layout_from_garage() {
    let garage = GarageServer::start().await;
    let objects: &[(&str, &[u8], bool)] = &[
        ("vendors/v1/character.json", b"{\"name\": \"V\"}", true),
        ("vendors/v1/knowledge-base/menu.md", b"bread", false),
        ("vendors/v1/knowledge-base/faq/hours.md", b"open 9-5", true),
        ("vendors/v1/knowledge-base/faq/", b"", false),
        ("vendors/v10/knowledge-base/other.md", b"not v1", false),
    ];
    for (key, bytes, compressed) in objects {
        garage.put(key, bytes, *compressed).await;
    }
    let store = owner_store(&garage);

    assert_eq!(
        store.character("v1").await.unwrap().unwrap(),
        b"{\"name\": \"V\"}"
    );
    assert!(store.character("v2").await.unwrap().is_none());
    let files = store.knowledge("v1", None).await.unwrap();
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["faq/hours.md", "menu.md"]);
    assert_eq!(files[0].bytes, b"open 9-5", "decompressed");
    let faq = store.knowledge("v1", Some("./faq")).await.unwrap();
    assert_eq!(faq.len(), 1);
    assert!(store
        .knowledge("v1", Some("none"))
        .await
        .unwrap()
        .is_empty());
    assert!(store.knowledge("v2", None).await.unwrap().is_empty());
    let menu = store
        .knowledge_file("v1", "menu.md")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(menu.bytes, b"bread");
    assert!(store
        .knowledge_file("v1", "missing.md")
        .await
        .unwrap()
        .is_none());
    for unsafe_path in ["../character.json", "/etc/passwd", "a\\b"] {
        let error = store.knowledge_file("v1", unsafe_path).await.unwrap_err();
        assert!(matches!(error, StoreError::UnsafePath(_)), "{error}");
        let error = store.knowledge("v1", Some(unsafe_path)).await.unwrap_err();
        assert!(matches!(error, StoreError::UnsafePath(_)), "{error}");
    }
    assert!(store.describe().contains(garage.bucket()));
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_store_writes_compressed_and_deletes() {
    let garage = GarageServer::start().await;
    let store = owner_store(&garage);
    let character = br#"{"name": "Written", "bio": "Stored through the S3 store."}"#;
    store
        .write_vendor_file("w1", "character.json", character)
        .await
        .unwrap();
    store
        .write_vendor_file("w1", "knowledge-base/menu.md", b"Bread: 2 euros.")
        .await
        .unwrap();
    store
        .write_vendor_file("w10", "character.json", b"{}")
        .await
        .unwrap();

    assert_eq!(store.character("w1").await.unwrap().unwrap(), character);
    let files = store.knowledge("w1", None).await.unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].bytes, b"Bread: 2 euros.");
    let head = garage
        .client()
        .head_object()
        .bucket(garage.bucket())
        .key("vendors/w1/character.json")
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_encoding(), Some("zstd"));
    assert_eq!(head.content_type(), Some("application/json"));

    assert!(matches!(
        store
            .write_vendor_file("w1", "../w10/character.json", b"x")
            .await,
        Err(StoreError::UnsafePath(_))
    ));
    assert_eq!(store.delete_vendor("w1").await.unwrap(), 2);
    assert!(store.character("w1").await.unwrap().is_none());
    assert!(store.knowledge("w1", None).await.unwrap().is_empty());
    assert!(
        store.character("w10").await.unwrap().is_some(),
        "w10 shares only a prefix with w1"
    );
    assert_eq!(store.delete_vendor("w1").await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_listing_follows_pages() {
    let garage = GarageServer::start().await;
    // One more than ListObjectsV2 returns in a page by default.
    let count = 1001;
    futures::stream::iter(0..count)
        .map(|i| {
            let garage = &garage;
            async move {
                let key = format!("vendors/many/knowledge-base/note-{i:04}.md");
                garage
                    .put(&key, format!("note {i}").as_bytes(), i % 2 == 0)
                    .await;
            }
        })
        .buffer_unordered(16)
        .collect::<()>()
        .await;
    let files = owner_store(&garage).knowledge("many", None).await.unwrap();
    assert_eq!(files.len(), count);
    assert_eq!(files[1000].name, "note-1000.md");
    assert_eq!(files[1000].bytes, b"note 1000");
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_store_rejects_oversized_and_bad_objects() {
    let garage = GarageServer::start().await;
    let store = owner_store(&garage);
    let limit = usize::try_from(MAX_CHARACTER_BYTES).unwrap();

    garage
        .put("vendors/big/character.json", &vec![b' '; limit + 1], false)
        .await;
    let error = store.character("big").await.unwrap_err();
    assert!(matches!(error, StoreError::TooLarge { .. }), "{error}");
    assert!(error.is_permanent());

    // 64 MiB of zeros compress to a few kilobytes.
    let zeros = vec![0u8; 64 * 1024 * 1024];
    garage
        .put("vendors/bomb/knowledge-base/zeros.md", &zeros, true)
        .await;
    let error = store.knowledge("bomb", None).await.unwrap_err();
    assert!(matches!(error, StoreError::Undecodable { .. }), "{error}");
    assert!(error.to_string().contains("more than"), "{error}");
    let error = store.knowledge_file("bomb", "zeros.md").await.unwrap_err();
    assert!(matches!(error, StoreError::Undecodable { .. }), "{error}");

    let client = garage.client();
    let bad_objects = [
        ("vendors/gzip/character.json", "gzip", "not supported"),
        ("vendors/fake/character.json", "zstd", "invalid zstd data"),
    ];
    for (key, encoding, expected) in bad_objects {
        client
            .put_object()
            .bucket(garage.bucket())
            .key(key)
            .content_encoding(encoding)
            .body(b"{\"name\": \"plain\"}".to_vec().into())
            .send()
            .await
            .unwrap();
        let vendor = key.split('/').nth(1).unwrap();
        let error = store.character(vendor).await.unwrap_err();
        assert!(error.to_string().contains(expected), "{key}: {error}");
        assert!(error.is_permanent(), "{key}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_denied_and_missing_bucket_are_clear() {
    let garage = GarageServer::start().await;
    garage
        .put("vendors/v1/character.json", b"{\"name\": \"V\"}", false)
        .await;
    let stranger = garage.create_key("stranger").await;
    let store = S3Store::new(garage.bucket(), &garage.s3_config(&stranger)).unwrap();
    let error = store.character("v1").await.unwrap_err();
    assert!(matches!(error, StoreError::S3Failed { .. }), "{error}");
    assert!(!error.is_permanent());
    let message = error.to_string();
    assert!(message.contains("AccessDenied"), "{message}");
    assert!(message.contains("AWS_ACCESS_KEY_ID"), "{message}");
    let error = store.knowledge("v1", None).await.unwrap_err();
    assert!(error.to_string().contains("AccessDenied"), "{error}");

    let store = S3Store::new("no-such-bucket", &garage.s3_config(garage.key())).unwrap();
    let error = store.knowledge("v1", None).await.unwrap_err();
    assert!(!error.is_permanent());
    let message = error.to_string();
    assert!(message.contains("bucket \"no-such-bucket\""), "{message}");
    assert!(message.contains("NoSuchBucket"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_s3_is_unavailable_naming_s3() {
    let mesh = Mesh::new().await;
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let key = voca_tests::garage::AccessKey {
        id: "GK0123456789abcdef01234567".to_owned(),
        secret: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".to_owned(),
    };
    let flags: Vec<String> = [
        "--characters",
        "s3://voca",
        "--s3-endpoint",
        &endpoint,
        "--s3-region",
        "garage",
        "--s3-path-style",
    ]
    .map(str::to_owned)
    .to_vec();
    let mut pool = spawn_pool(&mesh, "pool-s3-down", &flags, Some(&key));
    let gateway = mesh.start_gateway().await;
    wait_ring_size(&gateway.address(), 1).await;
    let mut client = gateway_client(&gateway.address()).await.unwrap();

    let started = Instant::now();
    let status = tokio::time::timeout(
        Duration::from_secs(15),
        send(&mut client, "rosies-bakery", "hello"),
    )
    .await
    .expect("the gateway answers")
    .unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    let expected = format!("S3 at {endpoint}, bucket \"voca\", is unreachable");
    assert!(status.message().contains(&expected), "{}", status.message());
    assert!(elapsed < Duration::from_secs(8), "took {elapsed:?}");

    assert!(
        pool.process
            .wait_exit(Duration::from_millis(200))
            .await
            .is_none(),
        "the pool node keeps running"
    );
    let log = pool.process.log();
    assert!(!log.contains("panicked"), "{log}");
    assert!(!log.contains(&key.secret), "the secret is never logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_s3_credentials_stop_pool_node() {
    let mesh = Mesh::new().await;
    let flags: Vec<String> = [
        "--characters",
        "s3://voca",
        "--s3-endpoint",
        "http://127.0.0.1:9",
    ]
    .map(str::to_owned)
    .to_vec();
    let mut pool = spawn_pool(&mesh, "pool-no-key", &flags, None);
    let status = pool
        .process
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("the pool node exits");
    assert!(!status.success());
    let log = pool.process.log();
    assert!(log.contains("AWS_ACCESS_KEY_ID is not set"), "{log}");
}
