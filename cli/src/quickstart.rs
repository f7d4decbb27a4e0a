//! `voca quickstart`: a gateway and three pool nodes in one process, with
//! in-process membership standing in for etcd and the example vendors as
//! the character store, answering a scripted conversation.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args as ClapArgs;
use serde::Deserialize;
use voca_character::OfflineResponder;
use voca_common::membership::local::LocalMembership;
use voca_common::RingParams;
use voca_gateway::{GatewayConfig, RingSource};
use voca_pool_node::store::FileStore;
use voca_pool_node::{MembershipConfig, PoolNodeConfig, RunningPoolNode};
use voca_proto::v1::SendMessageRequest;

/// Number of pool nodes the quickstart starts.
const POOL_NODES: usize = 3;

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Folder holding `vendors/{vendor_id}/character.json` and knowledge bases.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples"))]
    examples: PathBuf,
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

    let membership = LocalMembership::new(RingParams::default());
    let store = Arc::new(FileStore::new(&args.examples));
    let mut nodes: Vec<RunningPoolNode> = Vec::new();
    for i in 1..=POOL_NODES {
        let node = voca_pool_node::start(PoolNodeConfig {
            node_id: format!("local-{i}"),
            listen: "127.0.0.1:0".parse()?,
            advertise: None,
            weight: 1,
            store: store.clone(),
            hot: Arc::new(voca_pool_node::hot::LocalState),
            responder: Arc::new(OfflineResponder::new()),
            cache_bytes: voca_pool_node::agents::DEFAULT_CACHE_BYTES,
            cache_ttl: voca_pool_node::agents::DEFAULT_CACHE_TTL,
            ring_params: RingParams::default(),
            membership: MembershipConfig::Local(membership.clone()),
            shutdown_deadline: Duration::from_secs(2),
        })
        .await?;
        nodes.push(node);
    }
    let gateway = voca_gateway::start(GatewayConfig {
        registry: None,
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
    println!("characters from {}\n", store_path(&args.examples));

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
        println!("Press Ctrl-C to stop.");
        voca_common::process::shutdown_signal().await;
    }
    gateway.shutdown().await;
    for node in nodes {
        node.shutdown().await;
    }
    Ok(())
}

fn store_path(path: &std::path::Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_owned())
        .display()
        .to_string()
}
