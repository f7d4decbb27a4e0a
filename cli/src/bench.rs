//! `voca bench`: a load generator for the mesh.
//!
//! It loads one of three paths, all ending at the same pool nodes:
//!
//! - a gateway (`--gateway`), which carries `Gateway/SendMessage` and calls
//!   `PoolNode/Process` on the owner;
//! - the owning pool node itself (`--direct`): this process follows the
//!   ring in etcd, as a gateway does, and calls `PoolNode/Process` with the
//!   ring's version;
//! - an HTTP/2 proxy (`--proxy`) that picks a pool node by the
//!   `x-vendor-id` header and passes `PoolNode/Process` through. The request
//!   carries ring version 0, so a pool node processes it without checking
//!   that it owns the vendor, because the proxy hashes differently from the
//!   ring.
//!
//! Every call carries the vendor id in the request and as `x-vendor-id`
//! metadata, and a fresh message id.
//!
//! Closed loop: `--concurrency` callers each send their next message as soon
//! as the last one is answered. Open loop (`--rate`): messages start on a
//! fixed schedule whatever the latency, so a slow server cannot slow the
//! load down; latency is measured from the scheduled start.
//!
//! NOTE: tokio's timer wakes on 1 ms ticks, so in open loop a message can
//! start up to 1 ms after its scheduled time, and that delay counts in its
//! latency.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args as ClapArgs, ValueEnum};
use hdrhistogram::Histogram;
use rand::Rng as _;
use serde::Serialize;
use tokio::task::JoinHandle;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::Code;
use voca_common::membership::etcd::{follow_ring, DEFAULT_PREFIX};
use voca_common::{RingHandle, RingParams};
use voca_proto::v1::gateway_client::GatewayClient;
use voca_proto::v1::pool_node_client::PoolNodeClient;
use voca_proto::v1::{ProcessRequest, SendMessageRequest};

use crate::client::DEFAULT_GATEWAY;
use crate::generate;

/// Metadata key that carries the vendor id for proxies that route on it.
pub const VENDOR_ID_HEADER: &str = "x-vendor-id";

/// Deadline of each call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest `--vendor-count`.
const MAX_VENDORS: u64 = 100_000_000;

/// Multiplier that scatters `--distribution once`: a prime, so that it
/// shares no factor with any vendor count up to [`MAX_VENDORS`], and
/// `n * ONCE_STRIDE mod count` visits every vendor once in `count` steps.
const ONCE_STRIDE: u128 = 2_147_483_647;

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Gateway address, as host:port; the default path.
    #[arg(long, env = "VOCA_GATEWAY", default_value = DEFAULT_GATEWAY)]
    gateway: String,
    /// Call the owning pool node directly, with the ring read from these
    /// etcd endpoints (comma-separated), instead of a gateway.
    #[arg(long, value_name = "ETCD", conflicts_with = "proxy")]
    direct: Option<String>,
    /// Key prefix of the mesh in etcd, for --direct.
    #[arg(long, default_value = DEFAULT_PREFIX)]
    etcd_prefix: String,
    /// Call PoolNode/Process through an HTTP/2 proxy at host:port that routes
    /// on the x-vendor-id header, instead of a gateway.
    #[arg(long, value_name = "ADDRESS")]
    proxy: Option<String>,
    /// Vendor ids to spread the messages over, comma-separated; each needs a character.
    #[arg(
        long,
        default_value = "rosies-bakery,spoke-and-chain-bikes,voltline-electronics,flowright-plumbing",
        conflicts_with = "vendor_count"
    )]
    vendors: String,
    /// Use the first N vendors that `voca generate-vendors` writes
    /// (bench-vendor-0000000, ...) instead of --vendors.
    #[arg(long, value_name = "N")]
    vendor_count: Option<u64>,
    /// Distribution of the messages over the vendors.
    #[arg(long, value_enum, default_value_t = Distribution::Uniform)]
    distribution: Distribution,
    /// Exponent of --distribution zipf: the vendor of rank k gets a share
    /// proportional to 1/k^s.
    #[arg(long, default_value_t = 1.0)]
    zipf_exponent: f64,
    /// Message text.
    #[arg(long, default_value = "What are your opening hours?")]
    text: String,
    /// Concurrent callers in closed loop, or the cap on calls in flight in open loop.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    concurrency: u64,
    /// HTTP/2 connections to the gateway or proxy, and to each pool node with --direct.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1_000))]
    connections: u64,
    /// Messages per second in open loop; closed loop when unset.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    rate: Option<u64>,
    /// Length of the measured run, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    duration: u64,
    /// Length of the unmeasured warm-up, in seconds.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    warmup: u64,
    /// Stop after this many messages, warm-up included.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Name of this run in the report.
    #[arg(long, default_value = "")]
    label: String,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Distribution of the messages over the vendors.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Distribution {
    /// Every vendor equally likely.
    Uniform,
    /// Vendor of rank k (the k-th in the list) with weight 1/k^s.
    Zipf,
    /// Each vendor once, in a scattered order that is the same in every
    /// run; the run ends when every vendor has had its message.
    Once,
}

/// Picks the vendor of message `n`.
struct Vendors {
    names: Option<Vec<String>>,
    count: u64,
    distribution: Distribution,
    /// Cumulative Zipf weights by rank, for `Distribution::Zipf`.
    zipf: Vec<f64>,
}

impl Vendors {
    fn new(args: &Args) -> anyhow::Result<Vendors> {
        let names: Option<Vec<String>> = match args.vendor_count {
            Some(_) => None,
            None => Some(
                args.vendors
                    .split(',')
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned)
                    .collect(),
            ),
        };
        let count = match (&names, args.vendor_count) {
            (Some(names), _) => names.len() as u64,
            (None, Some(count)) => count,
            (None, None) => 0,
        };
        anyhow::ensure!(
            count > 0,
            "no vendors to message; give --vendors a comma-separated list or --vendor-count a positive number"
        );
        anyhow::ensure!(
            count <= MAX_VENDORS,
            "--vendor-count {count} is above {MAX_VENDORS}; give a smaller count"
        );
        let zipf = if args.distribution == Distribution::Zipf {
            anyhow::ensure!(
                args.zipf_exponent.is_finite() && args.zipf_exponent > 0.0,
                "--zipf-exponent {} is not a positive number; give one such as 1.0",
                args.zipf_exponent
            );
            let mut total = 0.0;
            (1..=count)
                .map(|rank| {
                    total += (rank as f64).powf(-args.zipf_exponent);
                    total
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(Vendors {
            names,
            count,
            distribution: args.distribution,
            zipf,
        })
    }

    /// Returns the index of the vendor of message `n`, or `None` when the
    /// distribution has run out of vendors.
    fn pick(&self, n: u64) -> Option<u64> {
        match self.distribution {
            Distribution::Uniform => Some(rand::rng().random_range(0..self.count)),
            Distribution::Zipf => {
                let total = *self.zipf.last().expect("count > 0");
                let target = rand::rng().random_range(0.0..total);
                let rank = self
                    .zipf
                    .partition_point(|&cumulative| cumulative <= target);
                Some((rank as u64).min(self.count - 1))
            }
            Distribution::Once => (n < self.count)
                .then(|| ((u128::from(n) * ONCE_STRIDE) % u128::from(self.count)) as u64),
        }
    }

    fn name(&self, index: u64) -> String {
        match &self.names {
            Some(names) => names[index as usize].clone(),
            None => generate::vendor_id(index),
        }
    }
}

/// The path the messages take.
enum Target {
    Gateway(Vec<GatewayClient<Channel>>),
    Direct(Direct),
    Proxy(Vec<PoolNodeClient<Channel>>),
}

/// Routes like a gateway: the ring from etcd, and connections to each
/// owner, made on first use.
struct Direct {
    ring: RingHandle,
    watcher: JoinHandle<()>,
    connections: usize,
    pools: RwLock<HashMap<String, Vec<PoolNodeClient<Channel>>>>,
}

impl Direct {
    /// Returns connection `n` modulo the connections to `address`, opening
    /// them on first use.
    fn client(&self, address: &str, n: u64) -> anyhow::Result<PoolNodeClient<Channel>> {
        let pick = |clients: &Vec<PoolNodeClient<Channel>>| {
            clients[(n % clients.len() as u64) as usize].clone()
        };
        if let Some(clients) = self.pools.read().expect("not poisoned").get(address) {
            return Ok(pick(clients));
        }
        let clients = (0..self.connections)
            .map(|_| lazy_channel(address).map(PoolNodeClient::new))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let client = pick(&clients);
        self.pools
            .write()
            .expect("not poisoned")
            .insert(address.to_owned(), clients);
        Ok(client)
    }
}

impl Drop for Direct {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

fn endpoint(address: &str) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::from_shared(format!("http://{address}"))
        .with_context(|| format!("{address:?} is not a host:port address"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(CALL_TIMEOUT)
        .tcp_nodelay(true))
}

fn lazy_channel(address: &str) -> anyhow::Result<Channel> {
    Ok(endpoint(address)?.connect_lazy())
}

/// Opens `count` connections to the `server` at `address`, failing with
/// the cause and the flag to fix when none can be opened.
async fn connected_channels(
    server: &str,
    flag: &str,
    address: &str,
    count: usize,
) -> anyhow::Result<Vec<Channel>> {
    let endpoint = endpoint(address)?;
    let mut channels = Vec::with_capacity(count);
    for _ in 0..count {
        let channel = endpoint.connect().await.map_err(|error| {
            anyhow::anyhow!(
                "connecting to {address} failed: {:#}; check that the {server} listens there, and give its host:port with {flag}",
                anyhow::Error::new(error)
            )
        })?;
        channels.push(channel);
    }
    Ok(channels)
}

impl Target {
    async fn open(args: &Args) -> anyhow::Result<Target> {
        let connections = args.connections as usize;
        if let Some(etcd) = &args.direct {
            let endpoints: Vec<String> = etcd.split(',').map(str::to_owned).collect();
            let (ring, watcher) = follow_ring(&endpoints, &args.etcd_prefix, RingParams::default())
                .await
                .with_context(|| format!("following the ring in etcd at {etcd}"))?;
            let mut changes = ring.subscribe();
            let deadline = Instant::now() + Duration::from_secs(10);
            while ring.load().is_empty() {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "no pool node is registered under prefix {:?} in etcd at {etcd} after 10 s; start pool nodes first",
                    args.etcd_prefix
                );
                let _ = tokio::time::timeout(Duration::from_millis(200), changes.changed()).await;
            }
            return Ok(Target::Direct(Direct {
                ring,
                watcher,
                connections,
                pools: RwLock::new(HashMap::new()),
            }));
        }
        if let Some(proxy) = &args.proxy {
            let channels = connected_channels("proxy", "--proxy", proxy, connections).await?;
            return Ok(Target::Proxy(
                channels.into_iter().map(PoolNodeClient::new).collect(),
            ));
        }
        let channels =
            connected_channels("gateway", "--gateway", &args.gateway, connections).await?;
        Ok(Target::Gateway(
            channels.into_iter().map(GatewayClient::new).collect(),
        ))
    }

    fn path(&self) -> &'static str {
        match self {
            Target::Gateway(_) => "gateway",
            Target::Direct(_) => "direct",
            Target::Proxy(_) => "proxy",
        }
    }

    /// Sends one message and returns the id of the pool node that processed it.
    async fn call(&self, n: u64, message: Message) -> Result<String, Code> {
        let header = MetadataValue::try_from(message.vendor_id.as_str())
            .map_err(|_| Code::InvalidArgument)?;
        let process = |ring_version| ProcessRequest {
            vendor_id: message.vendor_id.clone(),
            user_id: message.user_id.clone(),
            text: message.text.to_string(),
            message_id: message.message_id.clone(),
            platform: Some("bench".to_owned()),
            ring_version,
            left_out: Vec::new(),
        };
        let pick = |len: usize| (n % len as u64) as usize;
        match self {
            Target::Gateway(clients) => {
                let request = request(
                    &header,
                    SendMessageRequest {
                        vendor_id: message.vendor_id.clone(),
                        user_id: message.user_id.clone(),
                        text: message.text.to_string(),
                        message_id: message.message_id.clone(),
                        platform: Some("bench".to_owned()),
                    },
                );
                let mut client = clients[pick(clients.len())].clone();
                let reply = client.send_message(request).await.map_err(|s| s.code())?;
                Ok(reply.into_inner().pool_id)
            }
            Target::Direct(direct) => {
                let ring = direct.ring.load();
                let owner = ring.owner(&message.vendor_id).ok_or(Code::Unavailable)?;
                let mut client = direct
                    .client(&owner.address, n)
                    .map_err(|_| Code::InvalidArgument)?;
                let reply = client
                    .process(request(&header, process(ring.version())))
                    .await
                    .map_err(|s| s.code())?;
                Ok(reply.into_inner().pool_id)
            }
            Target::Proxy(clients) => {
                let mut client = clients[pick(clients.len())].clone();
                let reply = client
                    .process(request(&header, process(0)))
                    .await
                    .map_err(|s| s.code())?;
                Ok(reply.into_inner().pool_id)
            }
        }
    }
}

/// Wraps `body` in a request with the vendor id as metadata and the call's
/// deadline, the same on every path.
fn request<T>(vendor_id: &MetadataValue<Ascii>, body: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(body);
    request
        .metadata_mut()
        .insert(VENDOR_ID_HEADER, vendor_id.clone());
    request.set_timeout(CALL_TIMEOUT);
    request
}

struct Message {
    vendor_id: String,
    user_id: String,
    message_id: String,
    text: Arc<str>,
}

/// Latencies, errors and processing pool nodes of a run. Each caller keeps
/// its own, and they are merged at the end.
struct Tally {
    latencies: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    /// The pool node that first processed a message of each vendor.
    owners: HashMap<String, Arc<str>>,
    /// Vendors whose messages more than one pool node processed.
    split: HashSet<String>,
    /// Messages processed by each pool node.
    by_pool: BTreeMap<Arc<str>, u64>,
    /// When the response to the last measured message arrived.
    last_answer: Option<Instant>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            latencies: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            errors: BTreeMap::new(),
            owners: HashMap::new(),
            split: HashSet::new(),
            by_pool: BTreeMap::new(),
            last_answer: None,
        }
    }

    fn record(&mut self, vendor_id: String, latency: Duration, result: Result<String, Code>) {
        let now = Instant::now();
        self.last_answer = Some(self.last_answer.map_or(now, |last| last.max(now)));
        match result {
            Ok(pool) => {
                let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                self.latencies.saturating_record(micros);
                self.note_owner(vendor_id, &pool, 1);
            }
            Err(code) => *self.errors.entry(format!("{code:?}")).or_default() += 1,
        }
    }

    fn note_owner(&mut self, vendor_id: String, pool: &str, messages: u64) {
        let pool: Arc<str> = match self.by_pool.get_key_value(pool) {
            Some((known, _)) => known.clone(),
            None => Arc::from(pool),
        };
        *self.by_pool.entry(pool.clone()).or_default() += messages;
        match self.owners.get(&vendor_id) {
            Some(first) if **first != *pool => {
                self.split.insert(vendor_id);
            }
            Some(_) => {}
            None => {
                self.owners.insert(vendor_id, pool);
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latencies.add(&other.latencies).expect("same bounds");
        for (code, count) in other.errors {
            *self.errors.entry(code).or_default() += count;
        }
        for (pool, count) in other.by_pool {
            *self.by_pool.entry(pool).or_default() += count;
        }
        for (vendor, pool) in other.owners {
            self.note_owner(vendor, &pool, 0);
        }
        self.split.extend(other.split);
        self.last_answer = match (self.last_answer, other.last_answer) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
}

/// A measured message: its vendor, its latency, and the pool node that
/// processed it or the status code.
type Outcome = (String, Duration, Result<String, Code>);

/// Shared by the callers of one run.
struct Run {
    target: Target,
    vendors: Vendors,
    text: Arc<str>,
    run_id: String,
    measure_from: Instant,
    end: Instant,
    max_messages: u64,
    next: AtomicU64,
}

impl Run {
    /// Takes the next message number, or `None` when the run is over.
    fn next_message(&self) -> Option<(u64, u64)> {
        if Instant::now() >= self.end {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        if n >= self.max_messages {
            return None;
        }
        self.vendors.pick(n).map(|vendor| (n, vendor))
    }

    fn message(&self, n: u64, vendor: u64) -> Message {
        Message {
            vendor_id: self.vendors.name(vendor),
            user_id: format!("bench-user-{}", n % 1000),
            message_id: format!("bench-{}-{n}", self.run_id),
            text: self.text.clone(),
        }
    }

    /// Sends message `n` and returns what to record, or `None` for a
    /// message started during the warm-up.
    async fn send(&self, n: u64, vendor: u64, started: Instant) -> Option<Outcome> {
        let message = self.message(n, vendor);
        let vendor_id = message.vendor_id.clone();
        let result = self.target.call(n, message).await;
        (started >= self.measure_from).then(|| (vendor_id, started.elapsed(), result))
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let vendors = Vendors::new(&args)?;
    let target = Target::open(&args).await?;
    let start = Instant::now();
    let measure_from = start + Duration::from_secs(args.warmup);
    let run = Arc::new(Run {
        target,
        vendors,
        text: Arc::from(args.text.as_str()),
        run_id: format!("{:016x}", rand::rng().random::<u64>()),
        measure_from,
        end: measure_from + Duration::from_secs(args.duration),
        max_messages: args.max_messages.unwrap_or(u64::MAX),
        next: AtomicU64::new(0),
    });

    let mut total = Tally::new();
    match args.rate {
        None => {
            let callers: Vec<JoinHandle<Tally>> = (0..args.concurrency)
                .map(|_| {
                    let run = run.clone();
                    tokio::spawn(async move {
                        let mut tally = Tally::new();
                        while let Some((n, vendor)) = run.next_message() {
                            if let Some((vendor_id, latency, result)) =
                                run.send(n, vendor, Instant::now()).await
                            {
                                tally.record(vendor_id, latency, result);
                            }
                        }
                        tally
                    })
                })
                .collect();
            for caller in callers {
                total.merge(caller.await?);
            }
        }
        Some(rate) => {
            let interval = Duration::from_secs_f64(1.0 / rate as f64);
            let in_flight = Arc::new(tokio::sync::Semaphore::new(args.concurrency as usize));
            let shared = Arc::new(Mutex::new(Tally::new()));
            let mut skipped = 0u64;
            let mut tasks = Vec::new();
            loop {
                let n = run.next.load(Ordering::Relaxed);
                let scheduled = start + interval.mul_f64(n as f64);
                tokio::time::sleep_until(scheduled.into()).await;
                let Some((n, vendor)) = run.next_message() else {
                    break;
                };
                // A message that finds --concurrency calls in flight is
                // counted as failed rather than delayed, so that the
                // schedule holds.
                let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                    if scheduled >= measure_from {
                        skipped += 1;
                    }
                    continue;
                };
                let (run, shared) = (run.clone(), shared.clone());
                tasks.push(tokio::spawn(async move {
                    let outcome = run.send(n, vendor, scheduled).await;
                    drop(permit);
                    if let Some((vendor_id, latency, result)) = outcome {
                        shared
                            .lock()
                            .expect("not poisoned")
                            .record(vendor_id, latency, result);
                    }
                }));
            }
            for task in tasks {
                task.await?;
            }
            let tally = std::mem::replace(&mut *shared.lock().expect("not poisoned"), Tally::new());
            total.merge(tally);
            if skipped > 0 {
                *total
                    .errors
                    .entry("NotSentAtConcurrencyCap".to_owned())
                    .or_default() += skipped;
            }
        }
    }
    let measured = match total.last_answer {
        Some(last) if last < run.end => last.saturating_duration_since(measure_from),
        _ => run.end.saturating_duration_since(measure_from),
    };
    let report = Report::new(&args, &run, &total, measured);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        report.print();
    }
    Ok(())
}

/// The result of a run, as printed.
#[derive(Serialize)]
struct Report {
    label: String,
    path: &'static str,
    mode: String,
    distribution: Distribution,
    vendors: u64,
    seconds: f64,
    succeeded: u64,
    failed: u64,
    messages_per_second: f64,
    latency_ms: BTreeMap<&'static str, f64>,
    errors: BTreeMap<String, u64>,
    vendors_answered: usize,
    vendors_on_several_pools: usize,
    messages_by_pool: BTreeMap<String, u64>,
}

impl Report {
    fn new(args: &Args, run: &Run, tally: &Tally, measured: Duration) -> Report {
        let mode = match args.rate {
            Some(rate) => format!(
                "open loop at {rate}/s, at most {} in flight",
                args.concurrency
            ),
            None => format!("closed loop, {} callers", args.concurrency),
        };
        let succeeded = tally.latencies.len();
        let seconds = measured.as_secs_f64().max(1e-6);
        let ms = |micros: u64| micros as f64 / 1000.0;
        let latency_ms = if succeeded == 0 {
            BTreeMap::new()
        } else {
            let h = &tally.latencies;
            BTreeMap::from([
                ("p50", ms(h.value_at_quantile(0.50))),
                ("p95", ms(h.value_at_quantile(0.95))),
                ("p99", ms(h.value_at_quantile(0.99))),
                ("p99.9", ms(h.value_at_quantile(0.999))),
                ("max", ms(h.max())),
            ])
        };
        Report {
            label: args.label.clone(),
            path: run.target.path(),
            mode,
            distribution: args.distribution,
            vendors: run.vendors.count,
            seconds,
            succeeded,
            failed: tally.errors.values().sum(),
            messages_per_second: succeeded as f64 / seconds,
            latency_ms,
            errors: tally.errors.clone(),
            vendors_answered: tally.owners.len(),
            vendors_on_several_pools: tally.split.len(),
            messages_by_pool: tally
                .by_pool
                .iter()
                .map(|(pool, count)| (pool.to_string(), *count))
                .collect(),
        }
    }

    fn print(&self) {
        println!(
            "{} path, {}, {:?} over {} vendors, {:.1} s measured",
            self.path, self.mode, self.distribution, self.vendors, self.seconds
        );
        println!(
            "succeeded {}, failed {}, {:.0} messages/s",
            self.succeeded, self.failed, self.messages_per_second
        );
        if !self.latency_ms.is_empty() {
            let at = |key| self.latency_ms[key];
            println!(
                "latency ms: p50 {:.2}  p95 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
                at("p50"),
                at("p95"),
                at("p99"),
                at("p99.9"),
                at("max")
            );
        }
        for (code, count) in &self.errors {
            println!("  {code}: {count}");
        }
        println!(
            "{} vendors answered, {} of them by more than one pool node",
            self.vendors_answered, self.vendors_on_several_pools
        );
        let shares: Vec<String> = self
            .messages_by_pool
            .iter()
            .map(|(pool, count)| format!("{pool} {count}"))
            .collect();
        println!("messages by pool node: {}", shares.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn vendors(flags: &[&str]) -> anyhow::Result<Vendors> {
        let cli = Cli::try_parse_from(std::iter::once("bench").chain(flags.iter().copied()))?;
        Vendors::new(&cli.args)
    }

    #[test]
    fn once_visits_every_vendor_exactly_once() {
        for count in [1u64, 2, 7, 1_000, 65_536] {
            let vendors = vendors(&[
                "--vendor-count",
                &count.to_string(),
                "--distribution",
                "once",
            ])
            .unwrap();
            let mut seen = vec![false; count as usize];
            for n in 0..count {
                let index = vendors.pick(n).unwrap();
                assert!(
                    !seen[index as usize],
                    "vendor {index} picked twice of {count}"
                );
                seen[index as usize] = true;
            }
            assert_eq!(vendors.pick(count), None, "the run ends after {count}");
        }
    }

    #[test]
    fn once_scatters_consecutive_messages() {
        let vendors = vendors(&["--vendor-count", "1000000", "--distribution", "once"]).unwrap();
        let first: Vec<u64> = (0..4).map(|n| vendors.pick(n).unwrap()).collect();
        assert!(
            first
                .windows(2)
                .all(|pair| pair[0].abs_diff(pair[1]) > 1_000),
            "{first:?}"
        );
    }

    #[test]
    fn zipf_favours_the_first_vendors() {
        let vendors = vendors(&["--vendor-count", "1000", "--distribution", "zipf"]).unwrap();
        let mut counts = vec![0u32; 1000];
        for n in 0..100_000 {
            counts[vendors.pick(n).unwrap() as usize] += 1;
        }
        // With s = 1 over 1,000 vendors the first gets 1/H(1000), about
        // 13%, and the first ten about 39%.
        let first = f64::from(counts[0]) / 100_000.0;
        let top_ten = f64::from(counts[..10].iter().sum::<u32>()) / 100_000.0;
        assert!((0.11..0.16).contains(&first), "first vendor share {first}");
        assert!((0.35..0.43).contains(&top_ten), "top ten share {top_ten}");
        assert!(
            counts[999] < counts[0] / 100,
            "last {} first {}",
            counts[999],
            counts[0]
        );
    }

    #[test]
    fn uniform_spreads_over_every_vendor() {
        let vendors = vendors(&["--vendor-count", "10"]).unwrap();
        let mut counts = [0u32; 10];
        for n in 0..10_000 {
            counts[vendors.pick(n).unwrap() as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn bad_vendor_settings_are_refused_with_the_value() {
        let error = vendors(&["--vendor-count", "0"]).err().unwrap().to_string();
        assert!(error.contains("--vendor-count"), "{error}");
        let error = vendors(&[
            "--vendor-count",
            "5",
            "--distribution",
            "zipf",
            "--zipf-exponent",
            "-1",
        ])
        .err()
        .unwrap()
        .to_string();
        assert!(error.contains("-1"), "{error}");
        let listed = vendors(&["--vendors", "a, b,,c"]).unwrap();
        assert_eq!(
            (0..3).map(|i| listed.name(i)).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
    }
}
