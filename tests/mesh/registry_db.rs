//! The registry's PostgreSQL storage against a real PostgreSQL 15 server.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use voca_registry::db::{
    ListVendors, NewMessageRoute, NewVendor, VendorPage, VendorStatus, VendorUpdate,
};
use voca_registry::{Database, DatabaseConfig, DbError};
use voca_tests::postgres::PostgresServer;

/// Starts a server with one database, `registry`, and returns its URL.
async fn server_with_database() -> (PostgresServer, String) {
    let server = PostgresServer::start().await;
    let url = server.create_database("registry");
    (server, url)
}

fn config(url: &str) -> DatabaseConfig {
    DatabaseConfig {
        max_connections: 4,
        connect_timeout: Duration::from_secs(2),
        ..DatabaseConfig::new(url)
    }
}

async fn connect(url: &str) -> Database {
    Database::connect(config(url))
        .await
        .expect("connecting to the test database")
}

fn new_vendor(id: &str, business_type: &str, status: VendorStatus) -> NewVendor {
    NewVendor {
        id: id.to_owned(),
        name: format!("Vendor {id}"),
        business_type: business_type.to_owned(),
        status,
        character_path: format!("vendors/{id}/character.json"),
    }
}

fn new_route(vendor_id: &str, platform: &str, address: &str) -> NewMessageRoute {
    NewMessageRoute {
        vendor_id: vendor_id.to_owned(),
        platform: platform.to_owned(),
        platform_address: address.to_owned(),
    }
}

/// Lists every page and returns the page sizes and all ids in order.
async fn list_all(database: &Database, mut request: ListVendors) -> (Vec<usize>, Vec<String>) {
    let mut sizes = Vec::new();
    let mut ids = Vec::new();
    loop {
        let VendorPage {
            vendors,
            next_page_token,
        } = database.list_vendors(&request).await.unwrap();
        sizes.push(vendors.len());
        ids.extend(vendors.into_iter().map(|vendor| vendor.id));
        match next_page_token {
            Some(token) => request.page_token = Some(token),
            None => return (sizes, ids),
        }
        assert!(sizes.len() <= 100, "listing does not end: {sizes:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn migrations_apply_concurrently_and_twice() {
    let (server, url) = server_with_database().await;
    let (first, second) = tokio::join!(
        Database::connect(config(&url)),
        Database::connect(config(&url))
    );
    first.expect("first concurrent start");
    second.expect("second concurrent start");
    connect(&url).await;

    let applied = server.psql(
        "registry",
        "SELECT count(*) FROM __diesel_schema_migrations",
    );
    let embedded = std::fs::read_dir(voca_tests::repo_root().join("registry/migrations"))
        .unwrap()
        .count();
    assert_eq!(
        applied,
        embedded.to_string(),
        "each migration is recorded once"
    );
    let tables = server.psql(
        "registry",
        "SELECT string_agg(table_name, ',' ORDER BY table_name) FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_name <> '__diesel_schema_migrations'",
    );
    assert_eq!(tables, "agent_pools,message_routes,pool_metrics,vendors");
}

#[tokio::test(flavor = "multi_thread")]
async fn vendor_round_trip_and_update() {
    let (_server, url) = server_with_database().await;
    let database = connect(&url).await;
    let vendor = new_vendor("rosies-bakery", "bakery", VendorStatus::Active);

    let inserted = database.insert_vendor(&vendor).await.unwrap();
    assert_eq!(inserted.id, "rosies-bakery");
    assert_eq!(inserted.name, "Vendor rosies-bakery");
    assert_eq!(inserted.business_type, "bakery");
    assert_eq!(inserted.status, VendorStatus::Active);
    assert_eq!(
        inserted.character_path,
        "vendors/rosies-bakery/character.json"
    );
    assert_eq!(inserted.character_version, 1);
    assert_eq!(
        database.get_vendor("rosies-bakery").await.unwrap(),
        inserted
    );

    let duplicate = database.insert_vendor(&vendor).await.unwrap_err();
    assert!(
        matches!(duplicate, DbError::AlreadyExists { .. }),
        "{duplicate:?}"
    );
    assert_eq!(duplicate.to_string(), "vendor rosies-bakery already exists");

    let update = VendorUpdate {
        name: Some("Rosie's Bakery".to_owned()),
        status: Some(VendorStatus::Suspended),
        ..VendorUpdate::default()
    };
    assert_eq!(
        database
            .update_vendor("rosies-bakery", &update)
            .await
            .unwrap(),
        2
    );
    let no_change = VendorUpdate::default();
    assert_eq!(
        database
            .update_vendor("rosies-bakery", &no_change)
            .await
            .unwrap(),
        3
    );
    let updated = database.get_vendor("rosies-bakery").await.unwrap();
    assert_eq!(updated.name, "Rosie's Bakery");
    assert_eq!(updated.status, VendorStatus::Suspended);
    assert_eq!(
        updated.business_type, "bakery",
        "unset fields keep their value"
    );
    assert_eq!(updated.character_version, 3);
    assert_eq!(updated.created_at, inserted.created_at);
    assert!(updated.updated_at > inserted.updated_at);

    let missing = database.get_vendor("no-such-vendor").await.unwrap_err();
    assert!(matches!(missing, DbError::NotFound { .. }), "{missing:?}");
    let missing = database
        .update_vendor("no-such-vendor", &update)
        .await
        .unwrap_err();
    assert!(matches!(missing, DbError::NotFound { .. }), "{missing:?}");
    let invalid = database.get_vendor(".hidden").await.unwrap_err();
    assert!(matches!(invalid, DbError::InvalidInput(_)), "{invalid:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_is_idempotent_and_cascades() {
    let (server, url) = server_with_database().await;
    let database = connect(&url).await;
    let vendor = new_vendor("bike-fix", "repair", VendorStatus::Active);
    database.insert_vendor(&vendor).await.unwrap();
    let whatsapp = new_route("bike-fix", "whatsapp", "+441234567890");
    let first = database.insert_message_route(&whatsapp).await.unwrap();
    let telegram = new_route("bike-fix", "telegram", "@bikefix");
    let second = database.insert_message_route(&telegram).await.unwrap();
    assert_eq!(first.status, "active");
    let routes = database.list_message_routes("bike-fix").await.unwrap();
    assert_eq!(routes, vec![first, second]);

    let taken = database.insert_message_route(&whatsapp).await.unwrap_err();
    assert!(matches!(taken, DbError::AlreadyExists { .. }), "{taken:?}");
    let orphan = new_route("no-such-vendor", "whatsapp", "+449999");
    let orphan = database.insert_message_route(&orphan).await.unwrap_err();
    assert!(matches!(orphan, DbError::NotFound { .. }), "{orphan:?}");

    assert!(database.delete_vendor("bike-fix").await.unwrap());
    assert!(!database.delete_vendor("bike-fix").await.unwrap());
    let gone = database.get_vendor("bike-fix").await.unwrap_err();
    assert!(matches!(gone, DbError::NotFound { .. }), "{gone:?}");
    assert!(database
        .list_message_routes("bike-fix")
        .await
        .unwrap()
        .is_empty());
    let rows = server.psql("registry", "SELECT count(*) FROM message_routes");
    assert_eq!(rows, "0", "routes are deleted with their vendor");
}

#[tokio::test(flavor = "multi_thread")]
async fn listing_filters_and_pages() {
    let (_server, url) = server_with_database().await;
    let database = connect(&url).await;
    for i in 0..250 {
        let business_type = if i % 2 == 0 { "bakery" } else { "plumber" };
        let status = if i % 5 == 0 {
            VendorStatus::Suspended
        } else {
            VendorStatus::Active
        };
        let vendor = new_vendor(&format!("vendor-{i:03}"), business_type, status);
        database.insert_vendor(&vendor).await.unwrap();
    }

    let all = ListVendors {
        page_size: 100,
        ..ListVendors::default()
    };
    let (sizes, ids) = list_all(&database, all.clone()).await;
    assert_eq!(sizes, vec![100, 100, 50]);
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 250, "no vendor is listed twice");
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "pages are in id order");

    let exact = ListVendors {
        page_size: 50,
        ..ListVendors::default()
    };
    let (sizes, _) = list_all(&database, exact).await;
    assert_eq!(sizes, vec![50; 5], "no empty page after an exact fit");

    let suspended = ListVendors {
        status: Some(VendorStatus::Suspended),
        page_size: 20,
        ..ListVendors::default()
    };
    let (sizes, ids) = list_all(&database, suspended).await;
    assert_eq!(sizes, vec![20, 20, 10]);
    assert!(ids.iter().all(|id| id.ends_with('0') || id.ends_with('5')));

    let suspended_bakeries = ListVendors {
        status: Some(VendorStatus::Suspended),
        business_type: Some("bakery".to_owned()),
        page_size: 100,
        ..ListVendors::default()
    };
    let (_, ids) = list_all(&database, suspended_bakeries).await;
    assert_eq!(ids.len(), 25, "multiples of 10 below 250: {ids:?}");
    assert!(ids.iter().all(|id| id.ends_with('0')), "{ids:?}");

    let plumbers = ListVendors {
        business_type: Some("plumber".to_owned()),
        page_size: 1000,
        ..ListVendors::default()
    };
    let (sizes, _) = list_all(&database, plumbers).await;
    assert_eq!(sizes, vec![125]);

    for page_size in [0, 1001] {
        let request = ListVendors {
            page_size,
            ..ListVendors::default()
        };
        let error = database.list_vendors(&request).await.unwrap_err();
        assert!(matches!(error, DbError::InvalidInput(_)), "{error:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stopped_database_is_unavailable() {
    let (mut server, _) = server_with_database().await;
    // Trust authentication ignores the password, which must not appear in
    // any error.
    let url = format!(
        "postgres://postgres:s3cret@127.0.0.1:{}/registry",
        server.port()
    );
    let database = connect(&url).await;
    database
        .insert_vendor(&new_vendor("plumber-joe", "plumber", VendorStatus::Active))
        .await
        .unwrap();
    server.stop();

    let address = format!("127.0.0.1:{}", server.port());
    let started = Instant::now();
    let error = database.get_vendor("plumber-joe").await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(error, DbError::Unavailable { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains(&address), "{message}");
    assert!(!message.contains("s3cret"), "{message}");
    assert!(
        message.contains("error connecting to server"),
        "the reason survives: {message}"
    );

    let started = Instant::now();
    let error = Database::connect(config(&url)).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(error, DbError::Unavailable { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains(&address), "{message}");
    assert!(!message.contains("s3cret"), "{message}");
    assert!(
        message.contains("error connecting to server"),
        "the reason survives: {message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_table_stores_a_pool() {
    let (server, url) = server_with_database().await;
    connect(&url).await;
    let vendor_columns = server.psql(
        "registry",
        "SELECT string_agg(column_name, ',' ORDER BY ordinal_position) \
         FROM information_schema.columns WHERE table_name = 'vendors'",
    );
    assert_eq!(
        vendor_columns,
        "id,name,business_type,status,character_path,character_version,created_at,updated_at"
    );
    let pool_columns = server.psql(
        "registry",
        "SELECT count(*) FROM information_schema.columns \
         WHERE table_name IN ('vendors', 'message_routes') AND column_name LIKE '%pool%'",
    );
    assert_eq!(
        pool_columns, "0",
        "a vendor's pool is computed from the ring"
    );
}
