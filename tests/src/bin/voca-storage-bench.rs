//! Measures the storage tier side by side in one run: bulk registration
//! through the gateway, and the latency of a vendor's first message (its
//! character read from S3), of a message after its pool node restarted (read
//! from Redis), and of a message to a loaded vendor (in memory).
//!
//! It starts etcd, Garage, Redis, PostgreSQL, voca-registry, three pool
//! nodes and a gateway on loopback, with the binaries built beside it, and
//! stops them all when it ends.
//!
//! Usage: `voca-storage-bench [VENDORS] [SAMPLE]` (defaults 20000 and 300).

use std::time::{Duration, Instant};

use voca_tests::mesh::{gateway_client, send, wait_ring_size};
use voca_tests::registry::{run_cli, StorageMesh};

const POOLS: [&str; 3] = ["pool-a", "pool-b", "pool-c"];
const TYPES: [&str; 3] = ["retail", "ecommerce", "service"];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let vendors: usize = args.next().map_or(Ok(20_000), |a| a.parse())?;
    let sample: usize = args.next().map_or(Ok(300), |a| a.parse())?;
    anyhow::ensure!(
        sample >= 1 && sample <= vendors,
        "SAMPLE must be 1 to VENDORS"
    );

    let mut mesh = StorageMesh::start(&POOLS).await;
    println!(
        "machine: {} cores; vendors: {vendors}; sample: {sample}",
        std::thread::available_parallelism().map_or(0, usize::from)
    );

    // Bulk registration through the gateway, one stream.
    let file = mesh.dir().join("vendors.jsonl");
    let mut lines = String::with_capacity(vendors * 400);
    for i in 0..vendors {
        let record = serde_json::json!({
            "vendor_id": format!("shop-{i:07}"),
            "name": format!("Shop {i}"),
            "business_type": TYPES[i % TYPES.len()],
            "description": format!("Shop number {i}, a neighbourhood business."),
            "opening_hours": ["Monday to Saturday: 9:00 to 17:00", "Sunday: closed"],
            "location": format!("{i} High Street"),
            "offerings": [format!("gift voucher number {i} at £{i}"), "free local delivery".to_owned()],
            "policies": ["returns within 14 days with a receipt"],
        });
        lines.push_str(&record.to_string());
        lines.push('\n');
    }
    std::fs::write(&file, lines)?;
    let started = Instant::now();
    let output = run_cli(
        &[
            "vendors",
            "import",
            &file.display().to_string(),
            "--gateway",
            &mesh.gateway.address(),
        ],
        Duration::from_secs(3600),
    )
    .await;
    let elapsed = started.elapsed();
    anyhow::ensure!(
        output.status.success(),
        "import failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!(
        "\nbulk registration: {vendors} vendors in {:.1} s = {:.0} vendors/s",
        elapsed.as_secs_f64(),
        vendors as f64 / elapsed.as_secs_f64()
    );

    // The same sample of vendors, cold from S3, then warm in memory.
    let ids: Vec<String> = (0..sample)
        .map(|k| format!("shop-{:07}", k * (vendors / sample)))
        .collect();
    let s3_cold = latencies(&mesh, &ids).await?;
    let warm = latencies(&mesh, &ids).await?;

    // Restarted pool nodes read the same vendors from Redis. Their active
    // sets are dropped first, or each node would preload its vendors at
    // start and the messages would find them in memory.
    for pool in &mut mesh.pools {
        pool.process.terminate(Duration::from_secs(10)).await;
    }
    let mut redis = mesh.redis.connection().await;
    for pool in POOLS {
        redis::cmd("DEL")
            .arg(format!("voca:active:{pool}"))
            .query_async::<()>(&mut redis)
            .await?;
    }
    mesh.pools = POOLS.iter().map(|id| mesh.spawn_pool(id)).collect();
    wait_ring_size(&mesh.gateway.address(), POOLS.len()).await;
    let redis_cold = latencies(&mesh, &ids).await?;

    println!("\nmessage latency through the gateway, one caller, {sample} vendors each:");
    println!("| character loaded from | p50 ms | p95 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|");
    for (name, mut values) in [
        ("S3 (first message)", s3_cold),
        ("Redis (pool node restarted)", redis_cold),
        ("memory (loaded)", warm),
    ] {
        values.sort();
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} | {:.2} |",
            percentile(&values, 50.0),
            percentile(&values, 95.0),
            percentile(&values, 99.0),
            percentile(&values, 100.0)
        );
    }
    Ok(())
}

/// Sends one message to each vendor in turn and returns the latencies.
async fn latencies(mesh: &StorageMesh, ids: &[String]) -> anyhow::Result<Vec<Duration>> {
    let mut client = gateway_client(&mesh.gateway.address()).await?;
    let mut latencies = Vec::with_capacity(ids.len());
    for id in ids {
        let started = Instant::now();
        let reply = send(&mut client, id, "Do you offer local delivery?").await?;
        latencies.push(started.elapsed());
        anyhow::ensure!(reply.text.contains("delivery"), "{id}: {}", reply.text);
    }
    Ok(latencies)
}

fn percentile(sorted: &[Duration], percent: f64) -> f64 {
    let rank = ((percent / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}
