//! `voca bench`: a load generator for a gateway.
//!
//! Closed loop: `--concurrency` callers each send their next message as soon
//! as the last one is answered. Open loop (`--rate`): messages start on a
//! fixed schedule whatever the latency, so a slow server cannot slow the
//! load down; latency is measured from the scheduled start.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args as ClapArgs;
use hdrhistogram::Histogram;
use tokio::sync::Mutex;
use voca_proto::v1::SendMessageRequest;

use crate::client::DEFAULT_GATEWAY;

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Gateway address, as host:port.
    #[arg(long, env = "VOCA_GATEWAY", default_value = DEFAULT_GATEWAY)]
    gateway: String,
    /// Vendor ids to spread the messages over, comma-separated; each needs a character.
    #[arg(
        long,
        default_value = "rosies-bakery,spoke-and-chain-bikes,voltline-electronics,flowright-plumbing"
    )]
    vendors: String,
    /// Message text.
    #[arg(long, default_value = "What are your opening hours?")]
    text: String,
    /// Concurrent callers in closed loop, or connections in open loop.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Messages per second in open loop; closed loop when unset.
    #[arg(long)]
    rate: Option<u64>,
    /// Length of the measured run, in seconds.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Length of the unmeasured warm-up, in seconds.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
}

#[derive(Default)]
struct Tally {
    latencies: Option<Histogram<u64>>,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn record(&mut self, latency: Duration, result: Result<(), tonic::Code>) {
        match result {
            Ok(()) => {
                let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                let histogram = self.latencies.get_or_insert_with(|| {
                    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
                });
                histogram.saturating_record(micros);
            }
            Err(code) => *self.errors.entry(format!("{code:?}")).or_default() += 1,
        }
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let vendors: Arc<Vec<String>> = Arc::new(
        args.vendors
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect(),
    );
    anyhow::ensure!(!vendors.is_empty(), "--vendors is empty");
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    let mut clients = Vec::with_capacity(args.concurrency);
    for _ in 0..args.concurrency.min(16) {
        clients.push(crate::client::connect(&args.gateway).await?);
    }
    let warmup = Duration::from_secs(args.warmup);
    let measured = Duration::from_secs(args.duration);
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + measured;
    let tally = Arc::new(Mutex::new(Tally::default()));

    let mut tasks = Vec::new();
    match args.rate {
        None => {
            for worker in 0..args.concurrency {
                let mut client = clients[worker % clients.len()].clone();
                let (vendors, tally, text) = (vendors.clone(), tally.clone(), args.text.clone());
                tasks.push(tokio::spawn(async move {
                    let mut n = worker;
                    while Instant::now() < end {
                        let request = message(&vendors, n, &text);
                        n += args.concurrency;
                        let sent = Instant::now();
                        let result = client
                            .send_message(request)
                            .await
                            .map(|_| ())
                            .map_err(|s| s.code());
                        if sent >= measure_from {
                            tally.lock().await.record(sent.elapsed(), result);
                        }
                    }
                }));
            }
        }
        Some(rate) => {
            anyhow::ensure!(rate > 0, "--rate must be at least 1");
            let interval = Duration::from_secs_f64(1.0 / rate as f64);
            let total = (warmup + measured).as_secs_f64() * rate as f64;
            for n in 0..total as usize {
                let scheduled = start + interval.mul_f64(n as f64);
                tokio::time::sleep_until(scheduled.into()).await;
                let mut client = clients[n % clients.len()].clone();
                let (tally, request) = (tally.clone(), message(&vendors, n, &args.text));
                tasks.push(tokio::spawn(async move {
                    let result = client
                        .send_message(request)
                        .await
                        .map(|_| ())
                        .map_err(|s| s.code());
                    if scheduled >= measure_from {
                        tally.lock().await.record(scheduled.elapsed(), result);
                    }
                }));
            }
        }
    }
    for task in tasks {
        task.await?;
    }
    report(&args, &*tally.lock().await, measured);
    Ok(())
}

fn message(vendors: &[String], n: usize, text: &str) -> SendMessageRequest {
    SendMessageRequest {
        vendor_id: vendors[n % vendors.len()].clone(),
        user_id: format!("bench-user-{}", n % 1000),
        text: text.to_owned(),
        message_id: String::new(),
        platform: Some("bench".to_owned()),
    }
}

fn report(args: &Args, tally: &Tally, measured: Duration) {
    let mode = match args.rate {
        Some(rate) => format!("open loop at {rate}/s"),
        None => format!("closed loop, {} callers", args.concurrency),
    };
    let ok = tally.latencies.as_ref().map_or(0, Histogram::len);
    let errors: u64 = tally.errors.values().sum();
    println!("{mode}, {} s measured", measured.as_secs());
    println!(
        "succeeded {ok}, failed {errors}, {:.0} messages/s",
        ok as f64 / measured.as_secs_f64()
    );
    if let Some(h) = &tally.latencies {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "latency ms: p50 {:.2}  p95 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            ms(0.50),
            ms(0.95),
            ms(0.99),
            ms(0.999),
            h.max() as f64 / 1000.0
        );
    }
    for (code, count) in &tally.errors {
        println!("  {code}: {count}");
    }
}
