//! `voca quickstart`: a whole mesh in one process, with a stand-in for each
//! server: in-process membership for etcd, a local folder for S3, shared
//! memory for Redis and an SQLite file for PostgreSQL. It registers the
//! example vendors through the registry, then answers a scripted
//! conversation through the gateway.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args as ClapArgs;
use serde::Deserialize;
use voca_character::OfflineResponder;
use voca_common::membership::local::LocalMembership;
use voca_common::RingParams;
use voca_gateway::{GatewayConfig, RingSource};
use voca_pool_node::{MembershipConfig, PoolNodeConfig, RunningPoolNode};
use voca_proto::v1::register_vendor_request::Character;
use voca_proto::v1::vendor_registry_client::VendorRegistryClient;
use voca_proto::v1::{KnowledgeDocument, RegisterVendorRequest, SendMessageRequest};
use voca_registry::server::RegistryConfig;
use voca_registry::SqliteDatabase;
use voca_storage::hot::MemoryState;
use voca_storage::store::FileStore;

/// Number of pool nodes the quickstart starts.
const POOL_NODES: usize = 3;

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Folder holding the example vendors (`vendors/{vendor_id}/character.json`
    /// and knowledge bases), the template registrations (`registrations.jsonl`)
    /// and the conversation.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples"))]
    examples: PathBuf,
    /// Folder for the character store and the registry's SQLite file, kept
    /// after exit [default: a temporary folder, removed at exit].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Scripted conversation, a JSON list of {vendor_id, user_id, text}
    /// [default: conversation.json in the examples folder].
    #[arg(long)]
    conversation: Option<PathBuf>,
    /// Gateway address to listen on.
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Keep the mesh running after the conversation, for grpcurl or `voca send`, until Ctrl-C.
    #[arg(long)]
    serve: bool,
}

/// One scripted turn.
#[derive(Debug, Deserialize)]
struct Turn {
    vendor_id: String,
    user_id: String,
    text: String,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if std::env::var_os("RUST_LOG").is_some() {
        voca_common::process::init_tracing();
    }
    let conversation_path = args
        .conversation
        .clone()
        .unwrap_or_else(|| args.examples.join("conversation.json"));
    let script: Vec<Turn> = serde_json::from_slice(
        &std::fs::read(&conversation_path)
            .with_context(|| format!("reading {}", conversation_path.display()))?,
    )
    .with_context(|| format!("parsing {}", conversation_path.display()))?;

    let temporary;
    let data = match &args.data {
        Some(data) => data.clone(),
        None => {
            temporary = tempfile::Builder::new()
                .prefix("voca-quickstart-")
                .tempdir()?;
            temporary.path().to_owned()
        }
    };
    std::fs::create_dir_all(data.join("store"))
        .with_context(|| format!("creating {}", data.join("store").display()))?;
    let membership = LocalMembership::new(RingParams::default());
    let store = Arc::new(FileStore::new(data.join("store")));
    let shared = Arc::new(MemoryState::new());
    let mut nodes: Vec<RunningPoolNode> = Vec::new();
    for i in 1..=POOL_NODES {
        let node = voca_pool_node::start(PoolNodeConfig {
            node_id: format!("local-{i}"),
            listen: "127.0.0.1:0".parse()?,
            advertise: None,
            weight: 1,
            store: store.clone(),
            hot: shared.clone(),
            responder: Arc::new(OfflineResponder::new()),
            cache_bytes: voca_pool_node::agents::DEFAULT_CACHE_BYTES,
            cache_ttl: voca_pool_node::agents::DEFAULT_CACHE_TTL,
            ring_params: RingParams::default(),
            membership: MembershipConfig::Local(membership.clone()),
            // The gateway stops first, so no call can arrive while draining.
            drain_grace: Duration::ZERO,
            shutdown_deadline: Duration::from_secs(2),
        })
        .await?;
        nodes.push(node);
    }
    let database = SqliteDatabase::open(&data.join("registry.sqlite3"))?;
    let registry = voca_registry::server::start(RegistryConfig {
        listen: "127.0.0.1:0".parse()?,
        ring_source: RingSource::Local(membership.clone()),
        ring_params: RingParams::default(),
        repository: Arc::new(database),
        store: store.clone(),
        shared: Some(shared.clone()),
        shutdown_deadline: Duration::from_secs(2),
    })
    .await?;
    let gateway = voca_gateway::start(GatewayConfig {
        registry: Some(registry.local_addr().to_string()),
        listen: args.listen,
        ring_source: RingSource::Local(membership.clone()),
        ring_params: RingParams::default(),
        shutdown_deadline: Duration::from_secs(2),
    })
    .await
    .with_context(|| {
        format!(
            "starting the gateway on {} (pass --listen to use another port)",
            args.listen
        )
    })?;
    let gateway_addr = gateway.local_addr();
    println!("Voca mesh quickstart: gateway on {gateway_addr}, pool nodes:");
    for node in &nodes {
        println!("  {} on {}", node.node_id(), node.local_addr());
    }
    println!(
        "registry on {}, storing vendors in {}\n",
        registry.local_addr(),
        store_path(&data)
    );
    let mut vendors = VendorRegistryClient::connect(format!("http://{gateway_addr}")).await?;
    for request in example_registrations(&args.examples)? {
        let vendor_id = request.vendor_id.clone();
        match vendors.register_vendor(request).await {
            Ok(response) => {
                let vendor = response.into_inner().vendor.unwrap_or_default();
                println!(
                    "registered {} ({}, {}) on {}",
                    vendor.vendor_id, vendor.name, vendor.business_type, vendor.pool_id
                );
            }
            Err(status) if status.code() == tonic::Code::AlreadyExists => {
                println!("{vendor_id} is registered already");
            }
            Err(status) => anyhow::bail!(
                "registering {vendor_id} failed: {:?}: {}",
                status.code(),
                status.message()
            ),
        }
    }
    println!();

    let mut client = crate::client::connect(&gateway_addr.to_string()).await?;
    for (i, turn) in script.iter().enumerate() {
        let reply = client
            .send_message(SendMessageRequest {
                vendor_id: turn.vendor_id.clone(),
                user_id: turn.user_id.clone(),
                text: turn.text.clone(),
                message_id: format!("quickstart-{i}"),
                platform: Some("quickstart".to_owned()),
            })
            .await;
        println!("[{}] {}: {}", turn.vendor_id, turn.user_id, turn.text);
        match reply {
            Ok(reply) => {
                let reply = reply.into_inner();
                println!(
                    "  {} (answered by {}): {}\n",
                    reply.character_name, reply.pool_id, reply.text
                );
            }
            Err(status) => println!("  error {:?}: {}\n", status.code(), status.message()),
        }
    }

    if args.serve {
        println!("The mesh keeps running; try:");
        println!("  grpcurl -plaintext {gateway_addr} list");
        println!(
            "  grpcurl -plaintext -d '{{\"vendor_id\":\"rosies-bakery\",\"user_id\":\"me\",\"text\":\"Do you have gluten-free bread?\"}}' {gateway_addr} voca.v1.Gateway/SendMessage"
        );
        println!("  cargo run --bin voca -- vendors list --gateway {gateway_addr}");
        println!("Press Ctrl-C to stop.");
        voca_common::process::shutdown_signal().await;
    }
    gateway.shutdown().await;
    registry.shutdown().await;
    for node in nodes {
        node.shutdown().await;
    }
    Ok(())
}

/// Returns the registrations of the example vendors: each folder of
/// `vendors/` as a complete character with its knowledge base, then each
/// line of `registrations.jsonl`, whose characters a template generates.
fn example_registrations(examples: &Path) -> anyhow::Result<Vec<RegisterVendorRequest>> {
    let mut requests = Vec::new();
    let folders = examples.join("vendors");
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&folders)
        .with_context(|| format!("reading {}", folders.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for folder in entries.into_iter().filter(|path| path.is_dir()) {
        let vendor_id = folder
            .file_name()
            .and_then(|name| name.to_str())
            .context("vendor folder name is not UTF-8")?
            .to_owned();
        let character = std::fs::read(folder.join("character.json"))
            .with_context(|| format!("reading {}", folder.join("character.json").display()))?;
        let mut knowledge = Vec::new();
        let base = folder.join("knowledge-base");
        if base.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&base)?
                .map(|entry| entry.map(|e| e.path()))
                .collect::<Result<_, _>>()?;
            files.sort();
            for file in files.into_iter().filter(|path| path.is_file()) {
                knowledge.push(KnowledgeDocument {
                    name: file
                        .file_name()
                        .and_then(|name| name.to_str())
                        .context("knowledge file name is not UTF-8")?
                        .to_owned(),
                    text: std::fs::read_to_string(&file)
                        .with_context(|| format!("reading {}", file.display()))?,
                });
            }
        }
        requests.push(RegisterVendorRequest {
            vendor_id,
            character: Some(Character::CharacterFile(character)),
            knowledge,
            business_type: String::new(),
        });
    }
    let registrations = examples.join("registrations.jsonl");
    if registrations.is_file() {
        let text = std::fs::read_to_string(&registrations)
            .with_context(|| format!("reading {}", registrations.display()))?;
        for (number, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let request = crate::vendors::parse_record(line).map_err(|e| {
                anyhow::anyhow!("{} line {}: {e}", registrations.display(), number + 1)
            })?;
            requests.push(request);
        }
    }
    Ok(requests)
}

fn store_path(path: &std::path::Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_owned())
        .display()
        .to_string()
}
