//! The chaos scenario: steady load through two gateways while pool nodes
//! join, drain, restart and crash and etcd restarts, then an audit of every
//! conversation's history in Redis.
//!
//! The load is open loop at a fixed rate. Each message goes to one
//! conversation (a vendor and a user), and a conversation's messages are
//! sent one after another, each after the previous one was answered or
//! given up, so the order in which they were accepted is the order sent.
//! A message is retried with its message id on UNAVAILABLE, ABORTED,
//! DEADLINE_EXCEEDED, CANCELLED and UNKNOWN, alternating gateways.
//!
//! The audit reads each conversation from Redis and counts:
//! - lost: a message answered to the client but missing from its history,
//!   or never answered after the client's retries. A message answered while
//!   Redis was unreachable, which the gateway marks `deduplicated_locally`,
//!   is counted apart instead, since its exchange was never meant to reach
//!   the history;
//! - duplicated: a message id found more than once in a history;
//! - out of order: a history whose messages are not in the order sent.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hdrhistogram::Histogram;
use tonic::transport::Channel;
use tonic::Code;
use voca_proto::v1::gateway_client::GatewayClient;
use voca_proto::v1::{RouteRequest, SendMessageRequest};
use voca_storage::hot::RedisState;

use crate::mesh::{gateway_client, Mesh, Node};
use crate::redis_server::RedisServer;

/// Messages sent per conversation, at most: the capped history in Redis
/// keeps 10 exchanges, so every message stays visible to the audit.
const MESSAGES_PER_CONVERSATION: usize = 8;
/// Tries of one message, the first included.
const MAX_ATTEMPTS: u32 = 10;
/// Time one try may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Character every generated vendor gets; only its id differs.
const CHARACTER: &str = r#"{
  "name": "Mara",
  "bio": ["Mara runs a small corner shop and answers customers herself."],
  "knowledge": [
    "The shop opens at 8am and closes at 6pm.",
    "A loaf of bread costs £2.10."
  ],
  "style": {"all": ["friendly", "short answers"]}
}"#;
const QUESTIONS: [&str; 4] = [
    "When do you open?",
    "How much is a loaf of bread?",
    "When do you close?",
    "Do you sell bread?",
];

/// A fault the scenario injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Starts one more pool node.
    AddNode,
    /// Sends SIGTERM to one pool node and lets it drain and exit.
    Drain,
    /// Drains and restarts every pool node, one after another.
    RollingRestart,
    /// Kills one pool node with SIGKILL.
    Kill,
    /// Stops etcd for this long, then starts it again on the same data.
    RestartEtcd(Duration),
    /// Makes Redis unreachable for this long, keeping its data.
    PauseRedis(Duration),
}

impl Fault {
    fn name(self) -> String {
        match self {
            Self::AddNode => "add a node".to_owned(),
            Self::Drain => "drain a node".to_owned(),
            Self::RollingRestart => "rolling restart".to_owned(),
            Self::Kill => "kill -9 a node".to_owned(),
            Self::RestartEtcd(down) => format!("etcd down {} s", down.as_secs()),
            Self::PauseRedis(down) => format!("Redis unreachable {} s", down.as_secs()),
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub vendors: usize,
    /// Messages started per second.
    pub rate: u32,
    /// Pool nodes at the start.
    pub pools: usize,
    /// Faults, in order, each after `settle` of steady load.
    pub faults: Vec<Fault>,
    pub settle: Duration,
    /// Drain grace period of the pool nodes.
    pub drain_grace: Duration,
}

/// Failed tries and messages of one phase: steady load, or one fault from
/// its start until the next fault starts.
#[derive(Debug, Default, Clone)]
pub struct Phase {
    pub name: String,
    pub started: Duration,
    /// How long the fault itself took to inject.
    pub took: Duration,
    pub messages: u64,
    /// Failed tries by status code.
    pub failed: BTreeMap<String, u64>,
    /// For a killed node: time from the kill until every vendor it owned
    /// was answered again, and how many vendors that was.
    pub recovery: Option<(Duration, usize)>,
}

impl Phase {
    pub fn failed_tries(&self) -> u64 {
        self.failed.values().sum()
    }
}

/// The scenario's outcome.
#[derive(Debug, Default)]
pub struct Report {
    pub sent: u64,
    pub answered: u64,
    /// Messages answered while Redis was unreachable, deduplicated only in
    /// the answering pool node's memory.
    pub answered_locally: u64,
    /// Failed tries by status code, over the whole run.
    pub failed: BTreeMap<String, u64>,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    /// Conversations whose history could not be read.
    pub unreadable: u64,
    /// Ticks at which every conversation was busy, so no message started.
    pub missed_ticks: u64,
    pub phases: Vec<Phase>,
    /// Time from a message's first try to its answer, in microseconds.
    pub latency: Option<Histogram<u64>>,
    pub elapsed: Duration,
}

impl Report {
    /// Formats the report as Markdown tables.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| messages sent | answered | of which without Redis | failed tries | lost | duplicated | out of order |"
        );
        let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|");
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            self.sent,
            self.answered,
            self.answered_locally,
            format_codes(&self.failed),
            self.lost,
            self.duplicated,
            self.out_of_order
        );
        if let Some(latency) = &self.latency {
            let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "| latency, first try to answer | p50 | p95 | p99 | p99.9 | max |"
            );
            let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
            let _ = writeln!(
                out,
                "| ms | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                ms(0.5),
                ms(0.95),
                ms(0.99),
                ms(0.999),
                latency.max() as f64 / 1000.0
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "| phase | starts at | fault took | messages | failed tries | every vendor of the killed node answered again after |");
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---|");
        for phase in &self.phases {
            let recovery = phase.recovery.map_or_else(
                || "-".to_owned(),
                |(after, vendors)| format!("{:.2} s ({vendors} vendors)", after.as_secs_f64()),
            );
            let _ = writeln!(
                out,
                "| {} | {:.1} s | {:.1} s | {} | {} | {} |",
                phase.name,
                phase.started.as_secs_f64(),
                phase.took.as_secs_f64(),
                phase.messages,
                format_codes(&phase.failed),
                recovery
            );
        }
        out
    }
}

fn format_codes(codes: &BTreeMap<String, u64>) -> String {
    let total: u64 = codes.values().sum();
    if total == 0 {
        return "0".to_owned();
    }
    let detail: Vec<String> = codes
        .iter()
        .map(|(code, n)| format!("{code} {n}"))
        .collect();
    format!("{total} ({})", detail.join(", "))
}

/// What became of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Answered,
    /// Answered while the shared state was unreachable.
    AnsweredLocally,
    /// Never answered after the client's retries.
    GaveUp,
}

/// One conversation and what happened to its messages.
struct Conversation {
    vendor_id: String,
    user_id: String,
    /// Message ids in the order sent, with their outcome.
    messages: Vec<(String, Outcome)>,
}

/// State shared by the load tasks.
struct Load {
    gateways: Vec<GatewayClient<Channel>>,
    conversations: Vec<Mutex<Conversation>>,
    idle: Mutex<VecDeque<usize>>,
    /// Phase index by start time; tries are counted in the current phase.
    phases: Mutex<Vec<Phase>>,
    latency: Mutex<Histogram<u64>>,
    started: Instant,
}

impl Load {
    fn phase_index(&self) -> usize {
        self.phases.lock().unwrap().len() - 1
    }

    fn count_failure(&self, phase: usize, code: Code) {
        let mut phases = self.phases.lock().unwrap();
        *phases[phase].failed.entry(format!("{code:?}")).or_default() += 1;
    }

    /// Sends the next message of conversation `index`, with retries.
    async fn send_next(&self, index: usize, serial: u64) {
        let (vendor_id, user_id, message_id, text) = {
            let conversation = self.conversations[index].lock().unwrap();
            let n = conversation.messages.len();
            (
                conversation.vendor_id.clone(),
                conversation.user_id.clone(),
                format!("{}-{}-{n}", conversation.user_id, conversation.vendor_id),
                QUESTIONS[n % QUESTIONS.len()].to_owned(),
            )
        };
        let phase = self.phase_index();
        self.phases.lock().unwrap()[phase].messages += 1;
        let first_try = Instant::now();
        let mut outcome = Outcome::GaveUp;
        for attempt in 0..MAX_ATTEMPTS {
            let gateway = (serial as usize + attempt as usize) % self.gateways.len();
            let mut client = self.gateways[gateway].clone();
            let mut request = tonic::Request::new(SendMessageRequest {
                vendor_id: vendor_id.clone(),
                user_id: user_id.clone(),
                text: text.clone(),
                message_id: message_id.clone(),
                platform: Some("chaos".to_owned()),
            });
            request.set_timeout(ATTEMPT_TIMEOUT);
            match client.send_message(request).await {
                Ok(response) => {
                    outcome = if response.get_ref().deduplicated_locally {
                        Outcome::AnsweredLocally
                    } else {
                        Outcome::Answered
                    };
                    let micros = u64::try_from(first_try.elapsed().as_micros()).unwrap_or(u64::MAX);
                    let _ = self.latency.lock().unwrap().record(micros.max(1));
                    break;
                }
                Err(status) => {
                    self.count_failure(self.phase_index(), status.code());
                    let retryable = matches!(
                        status.code(),
                        Code::Unavailable
                            | Code::Aborted
                            | Code::DeadlineExceeded
                            | Code::Cancelled
                            | Code::Unknown
                    );
                    if !retryable {
                        eprintln!("chaos: {vendor_id} {message_id}: {status}");
                        break;
                    }
                    let backoff = Duration::from_millis(50 << attempt.min(4));
                    tokio::time::sleep(backoff).await;
                }
            }
        }
        let mut conversation = self.conversations[index].lock().unwrap();
        conversation.messages.push((message_id, outcome));
        if conversation.messages.len() < MESSAGES_PER_CONVERSATION {
            self.idle.lock().unwrap().push_back(index);
        }
    }
}

/// The processes of a running scenario.
struct Cluster {
    mesh: Mesh,
    redis: RedisServer,
    gateways: Vec<Node>,
    pools: BTreeMap<String, Node>,
    next_pool: usize,
    drain_grace: Duration,
}

impl Cluster {
    fn spawn_pool(&mut self, node_id: &str) {
        let grace = self.drain_grace.as_millis().to_string();
        let node = self.mesh.spawn_pool_with(
            node_id,
            &["--redis", &self.redis.url(), "--drain-grace-ms", &grace],
        );
        self.pools.insert(node_id.to_owned(), node);
    }

    fn add_pool(&mut self) -> String {
        self.next_pool += 1;
        let id = format!("pool-{}", self.next_pool);
        self.spawn_pool(&id);
        id
    }

    /// Waits until every gateway routes on a ring of exactly the pool nodes
    /// that run.
    async fn wait_ring(&self) {
        for gateway in &self.gateways {
            crate::mesh::wait_ring_size(&gateway.address(), self.pools.len()).await;
        }
    }

    async fn drain(&mut self, node_id: &str) {
        let mut node = self.pools.remove(node_id).expect("a running pool node");
        let exited = node.process.terminate(Duration::from_secs(30)).await;
        assert!(
            exited.is_some(),
            "{node_id} did not exit within 30 s of SIGTERM"
        );
    }

    async fn inject(&mut self, fault: Fault, load: &Load) -> Option<(Duration, usize)> {
        match fault {
            Fault::AddNode => {
                self.add_pool();
                self.wait_ring().await;
                None
            }
            Fault::Drain => {
                let id = self.pools.keys().next().cloned().expect("a pool node");
                self.drain(&id).await;
                self.wait_ring().await;
                None
            }
            Fault::RollingRestart => {
                let ids: Vec<String> = self.pools.keys().cloned().collect();
                for id in ids {
                    self.drain(&id).await;
                    self.spawn_pool(&id);
                    self.wait_ring().await;
                }
                None
            }
            Fault::Kill => {
                let id = self.pools.keys().last().cloned().expect("a pool node");
                let owned = owned_vendors(&load.gateways[0], &id, &load.conversations).await;
                let mut node = self.pools.remove(&id).expect("a running pool node");
                let killed = Instant::now();
                node.process.kill9();
                Some((recover(&load.gateways, &owned, killed).await, owned.len()))
            }
            Fault::RestartEtcd(down) => {
                self.mesh.etcd.stop();
                tokio::time::sleep(down).await;
                self.mesh.etcd.restart().await;
                None
            }
            Fault::PauseRedis(down) => {
                self.redis.pause();
                tokio::time::sleep(down).await;
                self.redis.resume();
                None
            }
        }
    }
}

/// Returns the vendors that `node_id` owns on the gateway's ring.
async fn owned_vendors(
    gateway: &GatewayClient<Channel>,
    node_id: &str,
    conversations: &[Mutex<Conversation>],
) -> Vec<String> {
    let mut vendors: Vec<String> = conversations
        .iter()
        .map(|c| c.lock().unwrap().vendor_id.clone())
        .collect();
    vendors.sort();
    vendors.dedup();
    futures::stream::iter(vendors)
        .map(|vendor_id| {
            let mut client = gateway.clone();
            async move {
                let route = client
                    .route(RouteRequest {
                        vendor_id: vendor_id.clone(),
                    })
                    .await
                    .ok()?
                    .into_inner();
                (route.pool_id == node_id).then_some(vendor_id)
            }
        })
        .buffer_unordered(32)
        .filter_map(|owned| async move { owned })
        .collect()
        .await
}

/// Sends a probe message to each vendor until it is answered, and returns
/// the time from `since` until the last vendor was answered.
async fn recover(
    gateways: &[GatewayClient<Channel>],
    vendors: &[String],
    since: Instant,
) -> Duration {
    let answered: Vec<Duration> = futures::stream::iter(vendors.iter().enumerate())
        .map(|(i, vendor_id)| {
            let mut client = gateways[i % gateways.len()].clone();
            async move {
                for attempt in 0.. {
                    let mut request = tonic::Request::new(SendMessageRequest {
                        vendor_id: vendor_id.clone(),
                        user_id: "chaos-probe".to_owned(),
                        text: QUESTIONS[0].to_owned(),
                        message_id: format!("probe-{attempt}-{}", since.elapsed().as_nanos()),
                        platform: None,
                    });
                    request.set_timeout(Duration::from_secs(2));
                    if client.send_message(request).await.is_ok()
                        || since.elapsed() > Duration::from_secs(120)
                    {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                since.elapsed()
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    answered.into_iter().max().unwrap_or_default()
}

/// Runs `scenario` against real processes it starts on loopback (etcd,
/// Redis, pool nodes and two gateways) and stops when it returns.
pub async fn run(scenario: &Scenario) -> Report {
    let redis = RedisServer::start().await;
    let mesh = Mesh::new().await;
    for i in 0..scenario.vendors {
        mesh.write_vendor_file(&vendor_id(i), "character.json", CHARACTER.as_bytes());
    }
    let mut cluster = Cluster {
        mesh,
        redis,
        gateways: Vec::new(),
        pools: BTreeMap::new(),
        next_pool: 0,
        drain_grace: scenario.drain_grace,
    };
    for _ in 0..scenario.pools {
        cluster.add_pool();
    }
    for _ in 0..2 {
        let gateway = cluster.mesh.start_gateway().await;
        cluster.gateways.push(gateway);
    }
    cluster.wait_ring().await;
    let mut gateways = Vec::new();
    for gateway in &cluster.gateways {
        gateways.push(
            gateway_client(&gateway.address())
                .await
                .expect("connecting to a gateway"),
        );
    }

    // Enough conversations for the whole run, however long the faults take:
    // a rolling restart takes a few seconds, an outage as long as it lasts.
    let outages: f64 = scenario
        .faults
        .iter()
        .map(|fault| match fault {
            Fault::RestartEtcd(down) | Fault::PauseRedis(down) => down.as_secs_f64(),
            _ => 10.0,
        })
        .sum();
    let total_secs = scenario.settle.as_secs_f64() * (scenario.faults.len() + 1) as f64 + outages;
    let expected = (f64::from(scenario.rate) * total_secs * 1.5) as usize;
    let count = (expected / MESSAGES_PER_CONVERSATION).max(scenario.vendors);
    let conversations: Vec<Mutex<Conversation>> = (0..count)
        .map(|i| {
            Mutex::new(Conversation {
                vendor_id: vendor_id(i % scenario.vendors),
                user_id: format!("user-{}", i / scenario.vendors),
                messages: Vec::new(),
            })
        })
        .collect();
    let load = Arc::new(Load {
        gateways,
        idle: Mutex::new((0..count).collect()),
        conversations,
        phases: Mutex::new(vec![Phase {
            name: "steady load".to_owned(),
            ..Phase::default()
        }]),
        latency: Mutex::new(
            Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
        ),
        started: Instant::now(),
    });

    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let generator = {
        let load = load.clone();
        let rate = scenario.rate;
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(1) / rate);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut tasks = tokio::task::JoinSet::new();
            let mut missed = 0_u64;
            let mut serial = 0_u64;
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = stopped.changed() => break,
                }
                let next = load.idle.lock().unwrap().pop_front();
                match next {
                    Some(index) => {
                        serial += 1;
                        let load = load.clone();
                        tasks.spawn(async move { load.send_next(index, serial).await });
                    }
                    None => missed += 1,
                }
                while tasks.try_join_next().is_some() {}
            }
            while tasks.join_next().await.is_some() {}
            missed
        })
    };

    for fault in &scenario.faults {
        tokio::time::sleep(scenario.settle).await;
        let index = {
            let mut phases = load.phases.lock().unwrap();
            phases.push(Phase {
                name: fault.name(),
                started: load.started.elapsed(),
                ..Phase::default()
            });
            phases.len() - 1
        };
        let began = Instant::now();
        let recovery = cluster.inject(*fault, &load).await;
        let mut phases = load.phases.lock().unwrap();
        phases[index].took = began.elapsed();
        phases[index].recovery = recovery;
    }
    tokio::time::sleep(scenario.settle).await;
    let _ = stop.send(true);
    let missed_ticks = generator.await.expect("the load generator ends");
    let elapsed = load.started.elapsed();

    let state = RedisState::new(&cluster.redis.url()).expect("a Redis URL");
    let mut report = audit(&load, &state).await;
    report.missed_ticks = missed_ticks;
    report.elapsed = elapsed;
    report.phases = load.phases.lock().unwrap().clone();
    for phase in &report.phases {
        for (code, n) in &phase.failed {
            *report.failed.entry(code.clone()).or_default() += n;
        }
    }
    report.latency = Some(load.latency.lock().unwrap().clone());
    report
}

fn vendor_id(i: usize) -> String {
    format!("chaos-{i:05}")
}

/// Compares every conversation's history in Redis with what was sent.
async fn audit(load: &Load, state: &RedisState) -> Report {
    let mut report = Report::default();
    for conversation in &load.conversations {
        let (vendor_id, user_id, sent) = {
            let conversation = conversation.lock().unwrap();
            (
                conversation.vendor_id.clone(),
                conversation.user_id.clone(),
                conversation.messages.clone(),
            )
        };
        if sent.is_empty() {
            continue;
        }
        report.sent += sent.len() as u64;
        report.answered += sent
            .iter()
            .filter(|(_, outcome)| *outcome != Outcome::GaveUp)
            .count() as u64;
        report.answered_locally += sent
            .iter()
            .filter(|(_, outcome)| *outcome == Outcome::AnsweredLocally)
            .count() as u64;
        let history = match state.conversation_message_ids(&vendor_id, &user_id).await {
            Ok(history) => history,
            Err(error) => {
                eprintln!("chaos: reading {vendor_id}/{user_id}: {error}");
                report.unreadable += 1;
                continue;
            }
        };
        let position: HashMap<&str, usize> = sent
            .iter()
            .enumerate()
            .map(|(i, (id, _))| (id.as_str(), i))
            .collect();
        let mut seen: HashMap<&str, u32> = HashMap::new();
        for id in &history {
            *seen.entry(id.as_str()).or_default() += 1;
        }
        report.duplicated += seen.values().filter(|&&n| n > 1).count() as u64;
        for (id, outcome) in &sent {
            let recorded = seen.contains_key(id.as_str());
            match outcome {
                Outcome::Answered if !recorded => {
                    eprintln!("chaos: {vendor_id}/{user_id} {id} was answered but is not in its history {history:?}");
                    report.lost += 1;
                }
                Outcome::GaveUp => report.lost += 1,
                _ => {}
            }
        }
        let order: Vec<usize> = history
            .iter()
            .filter_map(|id| position.get(id.as_str()).copied())
            .collect();
        if order.windows(2).any(|pair| pair[0] > pair[1]) {
            report.out_of_order += 1;
            eprintln!("chaos: {vendor_id}/{user_id} history out of order: {history:?}");
        }
    }
    report
}
