//! `voca route` and `voca send` against a running gateway.

use std::time::Duration;

use clap::Args as ClapArgs;
use tonic::transport::{Channel, Endpoint};
use voca_proto::v1::gateway_client::GatewayClient;
use voca_proto::v1::{RouteRequest, SendMessageRequest};

/// Default gateway address.
pub const DEFAULT_GATEWAY: &str = "127.0.0.1:50051";

#[derive(ClapArgs, Debug)]
pub struct RouteArgs {
    /// Vendor id.
    vendor_id: String,
    /// Gateway address, as host:port.
    #[arg(long, env = "VOCA_GATEWAY", default_value = DEFAULT_GATEWAY)]
    gateway: String,
}

#[derive(ClapArgs, Debug)]
pub struct SendArgs {
    /// Vendor id.
    vendor_id: String,
    /// The customer's message.
    text: String,
    /// The customer's id.
    #[arg(long, default_value = "cli-user")]
    user: String,
    /// Message id: a retry with the same id gets the same reply
    /// [default: assigned by the gateway].
    #[arg(long)]
    message_id: Option<String>,
    /// Gateway address, as host:port.
    #[arg(long, env = "VOCA_GATEWAY", default_value = DEFAULT_GATEWAY)]
    gateway: String,
    /// Deadline of the call, in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    timeout_ms: u64,
}

/// Connects to a gateway at `host:port`.
pub async fn connect(address: &str) -> anyhow::Result<GatewayClient<Channel>> {
    let channel = Endpoint::from_shared(format!("http://{address}"))?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| connect_error(address, &e))?;
    Ok(GatewayClient::new(channel))
}

/// Describes a failed connection with its cause, such as "Connection
/// refused", and what to check.
pub fn connect_error(address: &str, error: &(dyn std::error::Error + 'static)) -> anyhow::Error {
    let mut causes = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !causes.iter().any(|known| known.contains(&text)) {
            causes.push(text);
        }
        source = cause.source();
    }
    anyhow::anyhow!(
        "connecting to {address} failed: {}; check that a gateway serves there \
         (`voca quickstart --serve` starts one), and give it as host:port with --gateway",
        causes.join(": ")
    )
}

fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
}

pub async fn route(args: RouteArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.gateway).await?;
    let route = client
        .route(RouteRequest {
            vendor_id: args.vendor_id.clone(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    println!(
        "{} -> {} at {} (ring version {}, {} pool nodes)",
        args.vendor_id, route.pool_id, route.address, route.ring_version, route.ring_size
    );
    Ok(())
}

pub async fn send(args: SendArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.gateway).await?;
    let mut request = tonic::Request::new(SendMessageRequest {
        vendor_id: args.vendor_id,
        user_id: args.user,
        text: args.text,
        message_id: args.message_id.unwrap_or_default(),
        platform: Some("cli".to_owned()),
    });
    request.set_timeout(Duration::from_millis(args.timeout_ms));
    let reply = client
        .send_message(request)
        .await
        .map_err(status_error)?
        .into_inner();
    println!(
        "{} [{}]: {}",
        reply.character_name, reply.pool_id, reply.text
    );
    Ok(())
}
