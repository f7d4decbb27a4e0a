//! Runs the chaos scenario and prints its report as Markdown: steady load
//! through two gateways while a pool node is added, one is drained, every
//! one is restarted in turn, one is killed with SIGKILL, etcd is stopped and
//! started again, and Redis stops answering for 10 s. It starts etcd, Redis, the pool nodes and the
//! gateways on loopback, with the binaries built beside it, and stops them
//! all when it ends.
//!
//! Usage: `voca-chaos [RATE] [VENDORS] [SETTLE_SECS] [ETCD_DOWN_SECS]`
//! (defaults 500, 1000, 15 and 60).

use std::time::Duration;

use voca_tests::chaos::{self, Fault, Scenario};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let rate: u32 = args.next().map_or(Ok(500), |a| a.parse())?;
    let vendors: usize = args.next().map_or(Ok(1000), |a| a.parse())?;
    let settle: u64 = args.next().map_or(Ok(15), |a| a.parse())?;
    let etcd_down: u64 = args.next().map_or(Ok(60), |a| a.parse())?;
    anyhow::ensure!(
        rate >= 1 && vendors >= 1,
        "RATE and VENDORS must be at least 1"
    );
    let scenario = Scenario {
        vendors,
        rate,
        pools: 3,
        faults: vec![
            Fault::AddNode,
            Fault::Drain,
            Fault::RollingRestart,
            Fault::Kill,
            Fault::RestartEtcd(Duration::from_secs(etcd_down)),
            Fault::PauseRedis(Duration::from_secs(10)),
        ],
        settle: Duration::from_secs(settle),
        drain_grace: Duration::from_secs(1),
    };
    println!(
        "machine: {} cores; rate: {rate} messages/s; vendors: {vendors}; steady load before and after each fault: {settle} s",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    let report = chaos::run(&scenario).await;
    println!(
        "run took {:.1} s; ticks with every conversation busy: {}",
        report.elapsed.as_secs_f64(),
        report.missed_ticks
    );
    println!();
    print!("{}", report.to_markdown());
    anyhow::ensure!(
        report.lost == 0 && report.duplicated == 0 && report.out_of_order == 0,
        "messages were lost, duplicated or reordered"
    );
    Ok(())
}
