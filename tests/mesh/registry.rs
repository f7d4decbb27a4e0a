//! The vendor registry end to end: voca-registry on PostgreSQL, Garage and
//! Redis, its API served through the gateway, and pool nodes answering the
//! vendors it registers.

use std::time::{Duration, Instant};

use redis::AsyncCommands;
use tonic::Code;
use voca_proto::v1::register_vendor_request::Character;
use voca_proto::v1::{
    update_vendor_request, BusinessProfile, DeleteVendorRequest, GetVendorRequest,
    KnowledgeDocument, ListVendorsRequest, RegisterVendorRequest, UpdateVendorRequest,
    VendorStatus,
};
use voca_tests::mesh::{gateway_client, send, wait_ring_size};
use voca_tests::registry::{registry_client, run_cli, StorageMesh};
use voca_tests::{fixtures_dir, wait_for};

const BAKERY: &str = "crumb-and-co";

fn bakery_profile(rye_price: &str) -> BusinessProfile {
    BusinessProfile {
        name: "Crumb & Co".to_owned(),
        business_type: "retail".to_owned(),
        description: "A family bakery baking bread and cakes every morning.".to_owned(),
        opening_hours: vec![
            "Monday to Friday: 7:00 to 18:00".to_owned(),
            "Sunday: closed".to_owned(),
        ],
        location: "12 Mill Lane, Leeds".to_owned(),
        offerings: vec![
            format!("rye bread at {rye_price} a loaf"),
            "birthday cakes to order".to_owned(),
        ],
        policies: vec!["cake orders need 48 hours' notice".to_owned()],
    }
}

fn register_request(vendor_id: &str, profile: BusinessProfile) -> RegisterVendorRequest {
    RegisterVendorRequest {
        vendor_id: vendor_id.to_owned(),
        character: Some(Character::Profile(profile)),
        knowledge: vec![KnowledgeDocument {
            name: "allergens.md".to_owned(),
            text: "# Allergens\n\nOur sesame loaf is baked on a separate line, free of nuts."
                .to_owned(),
        }],
        business_type: String::new(),
    }
}

/// Sends `question` until the reply contains `expected`, within `limit`,
/// and returns the time it took.
async fn wait_for_reply(
    mesh: &StorageMesh,
    vendor_id: &str,
    question: &str,
    expected: &str,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    let client = gateway_client(&mesh.gateway.address()).await.unwrap();
    wait_for(
        &format!("{vendor_id} to answer {expected:?}"),
        limit,
        || {
            let mut client = client.clone();
            async move {
                let reply = send(&mut client, vendor_id, question).await.ok()?;
                reply.text.contains(expected).then_some(())
            }
        },
    )
    .await;
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn registered_vendor_is_answered_moves_and_is_erased() {
    let mut mesh = StorageMesh::start(&["pool-a", "pool-b", "pool-c"]).await;
    let mut registry = mesh.registry_client().await;
    let mut client = gateway_client(&mesh.gateway.address()).await.unwrap();

    // Registered through the gateway; the response names the ring's owner.
    let vendor = registry
        .register_vendor(register_request(BAKERY, bakery_profile("£3.40")))
        .await
        .unwrap()
        .into_inner()
        .vendor
        .unwrap();
    assert_eq!(vendor.vendor_id, BAKERY);
    assert_eq!(vendor.status, VendorStatus::Active as i32);
    assert_eq!(vendor.character_version, 1);
    let owner = mesh.owner(BAKERY).await;
    assert_eq!(vendor.pool_id, owner);

    // The store holds the vendor's files and the seeded templates.
    let keys = mesh.garage.list_keys(&format!("vendors/{BAKERY}/")).await;
    assert_eq!(
        keys,
        [
            format!("vendors/{BAKERY}/character.json"),
            format!("vendors/{BAKERY}/knowledge-base/allergens.md"),
            format!("vendors/{BAKERY}/metadata.json"),
        ]
    );
    let mut templates = mesh.garage.list_keys("templates/").await;
    templates.extend(mesh.garage.list_keys("shared/").await);
    assert_eq!(
        templates,
        [
            "templates/ecommerce.json",
            "templates/retail.json",
            "templates/service.json",
            "shared/common-responses.json",
        ]
    );

    // Answered in its generated character by its owner, from its facts and
    // its knowledge document.
    let reply = send(&mut client, BAKERY, "How much is the rye bread?")
        .await
        .unwrap();
    assert_eq!(reply.character_name, "Crumb & Co");
    assert_eq!(reply.pool_id, owner);
    assert!(reply.text.contains("£3.40"), "{}", reply.text);
    let reply = send(&mut client, BAKERY, "Is the sesame loaf free of nuts?")
        .await
        .unwrap();
    assert!(reply.text.contains("separate line"), "{}", reply.text);

    // The owner leaves the ring; the next owner answers with the same
    // conversation.
    let index = mesh
        .pools
        .iter()
        .position(|pool| pool.process.name().starts_with(&format!("{owner}-")))
        .expect("the owner is one of the pools");
    mesh.pools[index]
        .process
        .terminate(Duration::from_secs(10))
        .await;
    wait_ring_size(&mesh.gateway.address(), 2).await;
    let reply = send(&mut client, BAKERY, "What is your address?")
        .await
        .unwrap();
    assert_ne!(reply.pool_id, owner);
    assert!(reply.text.contains("12 Mill Lane"), "{}", reply.text);
    let mut redis = mesh.redis.connection().await;
    let session: Vec<String> = redis
        .lrange(format!("voca:sessions:{BAKERY}:test-user"), 0, -1)
        .await
        .unwrap();
    assert_eq!(
        session.len(),
        6,
        "three messages and three replies: {session:?}"
    );
    assert!(session[0].contains("rye bread"), "{}", session[0]);
    assert!(
        session[4].contains("What is your address?"),
        "{}",
        session[4]
    );

    // An update is served by the owning pool within a second.
    let updated = registry
        .update_vendor(UpdateVendorRequest {
            vendor_id: BAKERY.to_owned(),
            character: Some(update_vendor_request::Character::Profile(bakery_profile(
                "£3.90",
            ))),
            knowledge: vec![KnowledgeDocument {
                name: "delivery.md".to_owned(),
                text: "We deliver bread within Leeds every Saturday morning.".to_owned(),
            }],
            remove_knowledge: vec!["allergens.md".to_owned()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.character_version, 2);
    assert_eq!(
        mesh.garage.list_keys(&format!("vendors/{BAKERY}/")).await,
        [
            format!("vendors/{BAKERY}/character.json"),
            format!("vendors/{BAKERY}/knowledge-base/delivery.md"),
            format!("vendors/{BAKERY}/metadata.json"),
        ]
    );
    let took = wait_for_reply(
        &mesh,
        BAKERY,
        "How much is the rye bread?",
        "£3.90",
        Duration::from_secs(1),
    )
    .await;
    eprintln!("update served after {took:?}");
    wait_for_reply(
        &mesh,
        BAKERY,
        "Do you deliver on Saturday?",
        "every Saturday morning",
        Duration::from_secs(2),
    )
    .await;

    // A suspended vendor is refused, then answered again once active.
    registry
        .update_vendor(UpdateVendorRequest {
            vendor_id: BAKERY.to_owned(),
            status: VendorStatus::Suspended as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    wait_for(
        "the suspension to reach the owner",
        Duration::from_secs(2),
        || {
            let mut client = client.clone();
            async move {
                let status = send(&mut client, BAKERY, "Are you open?").await.err()?;
                (status.code() == Code::FailedPrecondition
                    && status.message().contains("suspended"))
                .then_some(())
            }
        },
    )
    .await;
    let listed = registry
        .list_vendors(ListVendorsRequest {
            status: VendorStatus::Suspended as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.vendors.len(), 1);
    assert_eq!(listed.vendors[0].vendor_id, BAKERY);
    registry
        .update_vendor(UpdateVendorRequest {
            vendor_id: BAKERY.to_owned(),
            status: VendorStatus::Active as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    wait_for_reply(
        &mesh,
        BAKERY,
        "How much is the rye bread?",
        "£3.90",
        Duration::from_secs(2),
    )
    .await;

    // Deleting erases the files, the Redis keys and the row; only the
    // short-lived tombstone stays.
    let erased = registry
        .delete_vendor(DeleteVendorRequest {
            vendor_id: BAKERY.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(erased.existed);
    assert_eq!(erased.files_deleted, 3);
    assert!(erased.redis_keys_deleted >= 3, "{erased:?}");
    assert!(mesh
        .garage
        .list_keys(&format!("vendors/{BAKERY}/"))
        .await
        .is_empty());
    assert_eq!(
        mesh.redis_keys(BAKERY).await,
        [format!("voca:tombstones:{BAKERY}")]
    );
    let ttl: i64 = redis
        .ttl(format!("voca:tombstones:{BAKERY}"))
        .await
        .unwrap();
    assert!(ttl > 0, "the tombstone expires: ttl {ttl}");
    assert!(
        ttl <= 120,
        "the tombstone lasts 2 minutes at most: ttl {ttl}"
    );
    for pool in ["pool-a", "pool-b", "pool-c"] {
        let active: bool = redis
            .sismember(format!("voca:active:{pool}"), BAKERY)
            .await
            .unwrap();
        assert!(!active, "{BAKERY} still active on {pool}");
    }
    assert_eq!(mesh.vendor_rows(BAKERY), 0);
    let status = registry
        .get_vendor(GetVendorRequest {
            vendor_id: BAKERY.to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    wait_for(
        "the pools to drop the erased vendor",
        Duration::from_secs(2),
        || {
            let mut client = client.clone();
            async move {
                let status = send(&mut client, BAKERY, "Are you open?").await.err()?;
                (status.code() == Code::NotFound).then_some(())
            }
        },
    )
    .await;
    // Nothing the pools did after the erasure brought a key back.
    assert_eq!(
        mesh.redis_keys(BAKERY).await,
        [format!("voca:tombstones:{BAKERY}")]
    );

    // Deleting again succeeds and finds nothing; registering the id again
    // waits for the tombstone.
    let again = registry
        .delete_vendor(DeleteVendorRequest {
            vendor_id: BAKERY.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!again.existed);
    assert_eq!(again.files_deleted, 0);
    let status = registry
        .register_vendor(register_request(BAKERY, bakery_profile("£3.40")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("deleted moments ago"),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_registrations_are_refused_and_leave_nothing_behind() {
    let mut mesh = StorageMesh::start(&["pool-a", "pool-b"]).await;
    let mut registry = mesh.registry_client().await;
    let shared = registry.clone();
    let refused = |request: RegisterVendorRequest| {
        let mut registry = shared.clone();
        async move { registry.register_vendor(request).await.unwrap_err() }
    };
    let mut unknown_type = bakery_profile("£3.40");
    unknown_type.business_type = "florist".to_owned();
    let cases: Vec<(&str, RegisterVendorRequest, Code, &str)> = vec![
        (
            "unknown-type",
            register_request("unknown-type", unknown_type),
            Code::InvalidArgument,
            "profile.business_type \"florist\"",
        ),
        (
            "not-json",
            RegisterVendorRequest {
                vendor_id: "not-json".to_owned(),
                character: Some(Character::CharacterFile(b"name: Dobby, age 4".to_vec())),
                ..Default::default()
            },
            Code::InvalidArgument,
            "character_file",
        ),
        (
            "too-large",
            RegisterVendorRequest {
                vendor_id: "too-large".to_owned(),
                character: Some(Character::CharacterFile(
                    format!(r#"{{"name": "Big", "bio": "{}"}}"#, "a".repeat(1024 * 1024))
                        .into_bytes(),
                )),
                ..Default::default()
            },
            Code::InvalidArgument,
            "over the limit of 1048576",
        ),
        (
            "big-document",
            RegisterVendorRequest {
                knowledge: vec![KnowledgeDocument {
                    name: "menu.md".to_owned(),
                    text: "x".repeat(1024 * 1024 + 1),
                }],
                ..register_request("big-document", bakery_profile("£3.40"))
            },
            Code::InvalidArgument,
            "knowledge[0].text",
        ),
        (
            "bad..id/",
            register_request("bad..id/", bakery_profile("£3.40")),
            Code::InvalidArgument,
            "vendor_id",
        ),
    ];
    for (vendor_id, request, code, named) in cases {
        let status = refused(request).await;
        assert_eq!(status.code(), code, "{vendor_id}: {status:?}");
        assert!(
            status.message().contains(named),
            "{vendor_id}: {}",
            status.message()
        );
        if vendor_id != "bad..id/" {
            assert_eq!(mesh.vendor_rows(vendor_id), 0, "{vendor_id}");
            assert!(mesh
                .garage
                .list_keys(&format!("vendors/{vendor_id}/"))
                .await
                .is_empty());
        }
    }

    // A template the operator uploaded is a business type.
    let florist =
        std::fs::read_to_string(voca_tests::repo_root().join("registry/templates/service.json"))
            .unwrap()
            .replace("service", "flower shop");
    mesh.garage
        .put("templates/florist.json", florist.as_bytes(), false)
        .await;
    let mut profile = bakery_profile("£3.40");
    profile.business_type = "florist".to_owned();
    profile.name = "Petal Works".to_owned();
    profile.offerings = vec!["wedding bouquets from £85".to_owned()];
    let vendor = registry
        .register_vendor(register_request("", profile))
        .await
        .unwrap()
        .into_inner()
        .vendor
        .unwrap();
    assert!(
        vendor.vendor_id.starts_with("petal-works-"),
        "{}",
        vendor.vendor_id
    );
    assert_eq!(vendor.business_type, "florist");
    let mut client = gateway_client(&mesh.gateway.address()).await.unwrap();
    let reply = send(
        &mut client,
        &vendor.vendor_id,
        "How much are wedding bouquets?",
    )
    .await
    .unwrap();
    assert!(reply.text.contains("£85"), "{}", reply.text);

    // A duplicate id is refused and the first vendor is untouched.
    registry
        .register_vendor(register_request(BAKERY, bakery_profile("£3.40")))
        .await
        .unwrap();
    let status = refused(register_request(BAKERY, bakery_profile("£9.99"))).await;
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert!(status.message().contains(BAKERY), "{}", status.message());
    let reply = send(&mut client, BAKERY, "How much is the rye bread?")
        .await
        .unwrap();
    assert!(reply.text.contains("£3.40"), "{}", reply.text);

    // Registrations racing for one id: exactly one wins, and the stored
    // character is the winner's.
    let racers = (0..8).map(|i| {
        let mut registry = registry.clone();
        let mut profile = bakery_profile("£3.40");
        profile.name = format!("Racer {i}");
        async move {
            registry
                .register_vendor(register_request("raced-id", profile))
                .await
                .map(|response| response.into_inner().vendor.unwrap().name)
        }
    });
    let results = futures::future::join_all(racers).await;
    let winners: Vec<&String> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for status in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(
            matches!(
                status.code(),
                Code::AlreadyExists | Code::FailedPrecondition
            ),
            "{status:?}"
        );
    }
    let reply = send(&mut client, "raced-id", "What is your name?")
        .await
        .unwrap();
    assert_eq!(&reply.character_name, winners[0]);

    // With S3 down, a registration fails UNAVAILABLE naming S3, and its
    // claimed row is removed again.
    mesh.garage.kill();
    let status = refused(register_request("s3-down", bakery_profile("£3.40"))).await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("S3 at"), "{}", status.message());
    assert_eq!(mesh.vendor_rows("s3-down"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn fixture_characters_register_as_files() {
    let mesh = StorageMesh::start(&["pool-a"]).await;
    let mut registry = mesh.registry_client().await;
    let mut client = gateway_client(&mesh.gateway.address()).await.unwrap();
    let mut registered = 0;
    for entry in std::fs::read_dir(fixtures_dir()).unwrap() {
        let path = entry.unwrap().path();
        let Some(stem) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".character.json"))
        else {
            continue;
        };
        let bytes = std::fs::read(&path).unwrap();
        let name = serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()["name"]
            .as_str()
            .unwrap()
            .to_owned();
        let vendor = registry
            .register_vendor(RegisterVendorRequest {
                vendor_id: stem.to_owned(),
                character: Some(Character::CharacterFile(bytes)),
                knowledge: Vec::new(),
                business_type: "assistant".to_owned(),
            })
            .await
            .unwrap_or_else(|s| panic!("{stem}: {s:?}"))
            .into_inner()
            .vendor
            .unwrap();
        assert_eq!(vendor.name, name);
        assert_eq!(vendor.business_type, "assistant");
        let reply = send(&mut client, stem, "Hello, who are you?")
            .await
            .unwrap();
        assert_eq!(reply.character_name, name, "{stem}");
        registered += 1;
    }
    assert!(
        registered >= 5,
        "only {registered} fixture characters found"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bulk_import_registers_ten_thousand_vendors() {
    const VENDORS: usize = 10_000;
    const TYPES: [&str; 3] = ["retail", "ecommerce", "service"];
    let mesh = StorageMesh::start(&["pool-a", "pool-b", "pool-c"]).await;
    let file = mesh.dir().join("vendors.jsonl");
    let mut lines = String::new();
    for i in 0..VENDORS {
        let record = serde_json::json!({
            "vendor_id": format!("shop-{i:05}"),
            "name": format!("Shop {i}"),
            "business_type": TYPES[i % 3],
            "description": format!("Shop number {i}."),
            "opening_hours": ["Monday to Saturday: 9:00 to 17:00"],
            "location": format!("{i} High Street"),
            "offerings": [format!("gift voucher number {i} at £{i}")],
        });
        lines.push_str(&record.to_string());
        lines.push('\n');
    }
    std::fs::write(&file, lines).unwrap();

    let started = Instant::now();
    let output = run_cli(
        &[
            "vendors",
            "import",
            file.to_str().unwrap(),
            "--gateway",
            &mesh.gateway.address(),
        ],
        Duration::from_secs(600),
    )
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{stdout}\n{stderr}\n{}",
        mesh.registry.process.log()
    );
    assert!(
        stdout.contains(&format!("imported {VENDORS} vendors")),
        "{stdout}"
    );
    eprintln!("imported {VENDORS} vendors in {:?}", started.elapsed());

    // Every vendor is listed, page by page, in id order.
    let mut registry = registry_client(&mesh.gateway.address()).await;
    let mut listed = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = registry
            .list_vendors(ListVendorsRequest {
                page_size: 1000,
                page_token,
                business_type: String::new(),
                status: VendorStatus::Active as i32,
            })
            .await
            .unwrap()
            .into_inner();
        listed.extend(page.vendors.into_iter().map(|v| v.vendor_id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let expected: Vec<String> = (0..VENDORS).map(|i| format!("shop-{i:05}")).collect();
    assert_eq!(listed, expected);

    // A sample answers from its own facts.
    let mut client = gateway_client(&mesh.gateway.address()).await.unwrap();
    for i in (0..VENDORS).step_by(VENDORS / 20).map(|i| i + 7) {
        let vendor_id = format!("shop-{i:05}");
        let reply = send(
            &mut client,
            &vendor_id,
            &format!("How much is gift voucher number {i}?"),
        )
        .await
        .unwrap_or_else(|s| panic!("{vendor_id}: {s:?}"));
        assert_eq!(reply.character_name, format!("Shop {i}"));
        assert!(
            reply.text.contains(&format!("£{i}")),
            "{vendor_id}: {}",
            reply.text
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_without_postgres_is_unavailable_while_messages_flow() {
    let mut mesh = StorageMesh::start(&["pool-a", "pool-b"]).await;
    let mut registry = mesh.registry_client().await;
    registry
        .register_vendor(register_request(BAKERY, bakery_profile("£3.40")))
        .await
        .unwrap();
    mesh.postgres.stop();

    let status = registry
        .get_vendor(GetVendorRequest {
            vendor_id: BAKERY.to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("PostgreSQL at 127.0.0.1"),
        "{}",
        status.message()
    );
    let status = registry
        .register_vendor(register_request("another-bakery", bakery_profile("£3.40")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(mesh
        .garage
        .list_keys("vendors/another-bakery/")
        .await
        .is_empty());

    let mut client = gateway_client(&mesh.gateway.address()).await.unwrap();
    for question in ["How much is the rye bread?", "What is your address?"] {
        let reply = send(&mut client, BAKERY, question).await.unwrap();
        assert_eq!(reply.character_name, "Crumb & Co");
    }
    // The registry is reachable directly too, with the same answer.
    let mut direct = registry_client(&mesh.registry.address()).await;
    let status = direct
        .list_vendors(ListVendorsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn python_client_registers_and_deletes() {
    let mesh = StorageMesh::start(&["pool-a", "pool-b"]).await;
    let address = mesh.gateway.address();
    let script = voca_tests::repo_root().join("tests/python/voca_client.py");
    let python = |args: &[&str]| {
        let output = std::process::Command::new("python3")
            .arg(&script)
            .args(args)
            .args(["--target", &address])
            .output()
            .expect("running python3");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{args:?}: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_str::<serde_json::Value>(&stdout).expect("the client prints JSON")
    };

    let registered = python(&[
        "register",
        "--vendor",
        "py-florist",
        "--name",
        "Petal Works",
        "--type",
        "retail",
        "--offering",
        "a bouquet of tulips at £18",
    ]);
    assert_eq!(registered["vendor"]["vendor_id"], "py-florist");
    assert_eq!(registered["vendor"]["status"], "VENDOR_STATUS_ACTIVE");
    assert_eq!(
        registered["vendor"]["pool_id"],
        mesh.owner("py-florist").await.as_str()
    );
    let reply = python(&[
        "send",
        "--vendor",
        "py-florist",
        "--user",
        "py-user",
        "--text",
        "How much is a bouquet of tulips?",
    ]);
    assert!(reply["text"].as_str().unwrap().contains("£18"), "{reply}");

    let deleted = python(&["delete", "--vendor", "py-florist"]);
    assert_eq!(deleted["existed"], true);
    assert_eq!(deleted["files_deleted"], 2);
    assert_eq!(mesh.vendor_rows("py-florist"), 0);
}
