//! `voca invalidate`: announce that a vendor's files changed in the store,
//! so that the pool nodes load them again.

use clap::Args as ClapArgs;
use voca_pool_node::hot::{RedisState, VendorChanges};

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Vendor id whose files changed.
    vendor_id: String,
    /// Redis URL the pool nodes share, as redis://host:port.
    #[arg(long = "redis", env = "VOCA_REDIS_URL")]
    redis_url: String,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    voca_common::input::check_vendor_id(&args.vendor_id)?;
    let state = RedisState::new(&args.redis_url)
        .map_err(|e| anyhow::anyhow!("invalid --redis URL: {e}; use redis://host:port"))?;
    let version = state
        .announce_change(&args.vendor_id)
        .await
        .map_err(|e| anyhow::anyhow!("announcing the change failed: {e}"))?;
    println!("{} is now at version {version}", args.vendor_id);
    Ok(())
}
