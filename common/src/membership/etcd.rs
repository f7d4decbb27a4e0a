//! Membership on etcd.
//!
//! Key layout under a prefix such as `/voca`:
//!
//! - `{prefix}/members/{node_id}`: a [`Member`] as JSON, attached to the
//!   node's lease, so the key disappears when the node stops renewing it;
//! - `{prefix}/ring-params`: the [`RingParams`] every process must share.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::{Backoff, MembershipError, MembershipView, RingHandle};
use crate::member::{Member, NodeState};
use crate::ring::RingParams;

/// Default key prefix.
pub const DEFAULT_PREFIX: &str = "/voca";
/// Time limit for one unary etcd request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// The etcd keys of one mesh.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Creates the key layout under `prefix`; a trailing `/` is ignored.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.trim_end_matches('/').to_owned(),
        }
    }

    pub fn members_prefix(&self) -> String {
        format!("{}/members/", self.prefix)
    }

    pub fn member(&self, node_id: &str) -> String {
        format!("{}/members/{node_id}", self.prefix)
    }

    pub fn ring_params(&self) -> String {
        format!("{}/ring-params", self.prefix)
    }
}

/// Connects to etcd. The connection is made lazily, so this succeeds while
/// etcd is down; requests then fail until it is back.
pub async fn connect(endpoints: &[String]) -> Result<Client, MembershipError> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        // etcd closes connections that ping more often than its
        // --grpc-keepalive-min-time, 5 s by default.
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
        .with_keep_alive_while_idle(true);
    Ok(Client::connect(endpoints, Some(options)).await?)
}

async fn bounded<T>(
    request: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, MembershipError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(MembershipError::Timeout(REQUEST_TIMEOUT)),
    }
}

/// Retries `operation` with backoff while it fails with an etcd or timeout
/// error, logging each failure at warn; other errors are returned at once.
pub async fn retry_unavailable<T, F, Fut>(
    what: &str,
    mut operation: F,
) -> Result<T, MembershipError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, MembershipError>>,
{
    let mut backoff = Backoff::new(RETRY_MIN, RETRY_MAX);
    loop {
        match operation().await {
            Ok(value) => return Ok(value),
            Err(error @ (MembershipError::Etcd(_) | MembershipError::Timeout(_))) => {
                let delay = backoff.next_delay();
                tracing::warn!(%error, retry_in = ?delay, "{what} failed: etcd is unreachable");
                tokio::time::sleep(delay).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Stores `local` as the ring parameters if none are stored yet, and fails
/// if different ones are, so that two placements never coexist.
pub async fn ensure_ring_params(
    mut client: Client,
    keys: &Keys,
    local: RingParams,
) -> Result<(), MembershipError> {
    let key = keys.ring_params();
    let value = serde_json::to_vec(&local).expect("ring params always serialize");
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(key.clone(), value, None)])
        .or_else([TxnOp::get(key.clone(), None)]);
    let response = bounded(client.txn(txn)).await?;
    if response.succeeded() {
        tracing::info!(key = %key, ?local, "stored ring parameters");
        return Ok(());
    }
    let stored_bytes = first_value(&response.op_responses()).unwrap_or_default();
    let stored: RingParams =
        serde_json::from_slice(&stored_bytes).map_err(|e| MembershipError::MalformedParams {
            key: key.clone(),
            reason: e.to_string(),
        })?;
    if stored != local {
        return Err(MembershipError::ParamsMismatch { key, stored, local });
    }
    Ok(())
}

fn first_value(responses: &[TxnOpResponse]) -> Option<Vec<u8>> {
    responses.iter().find_map(|r| match r {
        TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.value().to_vec()),
        _ => None,
    })
}

/// A pool node's live registration: its key, kept alive by a background task
/// that registers again after a lost lease.
pub struct Registration {
    shared: Arc<Mutex<Registered>>,
    keeper: JoinHandle<()>,
    live: watch::Receiver<bool>,
}

struct Registered {
    client: Client,
    key: String,
    member: Member,
    lease: i64,
}

/// Registers `member` under its key with a lease of `ttl`, failing if a live
/// node holds the id. A background task keeps the lease alive and, when the
/// lease is lost (for example after etcd was unreachable longer than `ttl`),
/// registers again.
pub async fn register(
    client: Client,
    keys: &Keys,
    member: Member,
    ttl: Duration,
) -> Result<Registration, MembershipError> {
    let key = keys.member(&member.id);
    let mut registered = Registered {
        client,
        key,
        member,
        lease: 0,
    };
    // A process that was killed holds the id until its lease expires, which
    // can take longer than our own TTL: its TTL may be longer, and etcd
    // renews every lease to its full TTL when it starts. So the wait lasts as
    // long as the holder's lease had left when first seen, plus 2 s for the
    // whole seconds etcd reports and its expiry checks. A lease still held
    // after that was renewed by a live process.
    let mut deadline = tokio::time::Instant::now() + ttl + Duration::from_secs(1);
    let mut holder_seen = false;
    let mut warned = false;
    loop {
        let error = match registered.acquire(ttl).await {
            Ok(()) => break,
            Err(error) => error,
        };
        let MembershipError::IdInUse { address, lease, .. } = &error else {
            return Err(error);
        };
        let remaining = remaining_ttl(&mut registered.client, *lease).await;
        if let (Some(seconds), false) = (remaining, holder_seen) {
            holder_seen = true;
            let seconds = u64::try_from(seconds).unwrap_or(0);
            deadline = tokio::time::Instant::now() + Duration::from_secs(seconds + 2);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(error);
        }
        if !warned {
            tracing::warn!(
                node_id = %registered.member.id, holder = %address, holder_ttl_secs = ?remaining,
                "node id is registered by another process; waiting for its lease to expire in case that process has stopped"
            );
            warned = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tracing::info!(
        node_id = %registered.member.id, key = %registered.key, lease = registered.lease,
        ttl_secs = ttl.as_secs(), "registered in etcd"
    );
    let shared = Arc::new(Mutex::new(registered));
    let (live_sender, live) = watch::channel(true);
    let span = tracing::info_span!("lease_keeper");
    let keeper = tokio::spawn(keep_alive(shared.clone(), ttl, live_sender).instrument(span));
    Ok(Registration {
        shared,
        keeper,
        live,
    })
}

impl Registered {
    /// Grants a lease and puts the member key with it unless another lease
    /// holds the key.
    async fn acquire(&mut self, ttl: Duration) -> Result<(), MembershipError> {
        let ttl_secs = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let lease = bounded(self.client.lease_grant(ttl_secs, None)).await?.id();
        let txn = self
            .put_if_absent(lease)
            .or_else([TxnOp::get(self.key.clone(), None)]);
        let response = match bounded(self.client.txn(txn)).await {
            Ok(response) => response,
            Err(error) => {
                let _ = bounded(self.client.lease_revoke(lease)).await;
                return Err(error);
            }
        };
        if !response.succeeded() {
            let _ = bounded(self.client.lease_revoke(lease)).await;
            let holder = first_value(&response.op_responses())
                .and_then(|v| serde_json::from_slice::<Member>(&v).ok())
                .map_or_else(|| "an unknown address".to_owned(), |m| m.address);
            let lease = response
                .op_responses()
                .iter()
                .find_map(|r| match r {
                    TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.lease()),
                    _ => None,
                })
                .unwrap_or(0);
            return Err(MembershipError::IdInUse {
                id: self.member.id.clone(),
                address: holder,
                lease,
            });
        }
        self.lease = lease;
        Ok(())
    }

    /// Builds a transaction that puts the member key with `lease` if no
    /// key exists.
    fn put_if_absent(&self, lease: i64) -> Txn {
        Txn::new()
            .when([Compare::create_revision(
                self.key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then([TxnOp::put(
                self.key.clone(),
                self.member.encode(),
                Some(PutOptions::new().with_lease(lease)),
            )])
    }

    /// Writes the member key again if it was deleted while the lease lives,
    /// for example by hand with etcdctl.
    async fn restore_key(&mut self) -> Result<(), MembershipError> {
        let response = bounded(self.client.get(self.key.clone(), None)).await?;
        match response.kvs().first() {
            Some(kv) if kv.lease() == self.lease => {}
            Some(kv) => tracing::error!(
                node_id = %self.member.id, holder_lease = kv.lease(), lease = self.lease,
                "membership key is held by another lease; stop the other process using this node id"
            ),
            None => {
                tracing::warn!(node_id = %self.member.id, key = %self.key, "membership key was deleted; writing it again");
                let txn = self.put_if_absent(self.lease);
                bounded(self.client.txn(txn)).await?;
            }
        }
        Ok(())
    }

    /// Writes the member value again under the current lease.
    async fn put(&mut self) -> Result<(), MembershipError> {
        let options = PutOptions::new().with_lease(self.lease);
        bounded(
            self.client
                .put(self.key.clone(), self.member.encode(), Some(options)),
        )
        .await?;
        Ok(())
    }
}

/// Renews the lease every third of its TTL. A lease that etcd no longer has
/// is replaced by registering again; `live` is false from the moment etcd
/// reports the lease gone until the node is registered again.
async fn keep_alive(shared: Arc<Mutex<Registered>>, ttl: Duration, live: watch::Sender<bool>) {
    let interval = (ttl / 3).max(Duration::from_millis(200));
    // Retries stay within a third of the TTL, so that a node reaches etcd
    // again before its lease, renewed to the full TTL when etcd restarts,
    // runs out.
    let mut backoff = Backoff::new(RETRY_MIN, interval);
    loop {
        let (mut client, lease) = {
            let registered = shared.lock().await;
            (registered.client.clone(), registered.lease)
        };
        let expired = match renew_until_failure(&shared, &mut client, lease, interval).await {
            LeaseEnd::Expired => true,
            LeaseEnd::Failed(error) => {
                tracing::warn!(%error, lease, "lease keep-alive failed; retrying");
                lease_is_gone(&mut client, lease).await
            }
        };
        if expired {
            live.send_replace(false);
            tracing::warn!(
                lease,
                "lease expired; refusing messages until registered again"
            );
            let mut registered = shared.lock().await;
            match registered.acquire(ttl).await {
                Ok(()) => {
                    live.send_replace(true);
                    backoff.reset();
                    tracing::info!(
                        node_id = %registered.member.id, lease = registered.lease,
                        "registered in etcd again"
                    );
                    continue;
                }
                Err(error) => tracing::error!(%error, "registering again failed"),
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Returns the remaining TTL of `lease` in seconds, or `None` when it is
/// unknown or etcd cannot be reached.
async fn remaining_ttl(client: &mut Client, lease: i64) -> Option<i64> {
    if lease == 0 {
        return None;
    }
    let response = bounded(client.lease_time_to_live(lease, None)).await.ok()?;
    (response.ttl() > 0).then_some(response.ttl())
}

/// Returns whether etcd reports that `lease` no longer exists, as after the
/// lease expired or etcd lost its data. An unreachable etcd reports nothing.
async fn lease_is_gone(client: &mut Client, lease: i64) -> bool {
    match bounded(client.lease_time_to_live(lease, None)).await {
        Ok(response) => response.ttl() <= 0,
        Err(MembershipError::Etcd(etcd_client::Error::GRpcStatus(status))) => {
            status.code() == tonic::Code::NotFound
        }
        Err(_) => false,
    }
}

enum LeaseEnd {
    Expired,
    Failed(MembershipError),
}

/// Renewals between checks that the member key still exists.
const RENEWALS_PER_KEY_CHECK: u32 = 5;

async fn renew_until_failure(
    shared: &Mutex<Registered>,
    client: &mut Client,
    lease: i64,
    interval: Duration,
) -> LeaseEnd {
    let (mut keeper, mut responses) = match bounded(client.lease_keep_alive(lease)).await {
        Ok(pair) => pair,
        Err(error) => return LeaseEnd::Failed(error),
    };
    let mut renewals: u32 = 0;
    loop {
        renewals = renewals.wrapping_add(1);
        if renewals.is_multiple_of(RENEWALS_PER_KEY_CHECK) {
            if let Err(error) = shared.lock().await.restore_key().await {
                return LeaseEnd::Failed(error);
            }
        }
        if let Err(error) = keeper.keep_alive().await {
            return LeaseEnd::Failed(error.into());
        }
        match tokio::time::timeout(REQUEST_TIMEOUT, responses.message()).await {
            Ok(Ok(Some(response))) if response.ttl() <= 0 => return LeaseEnd::Expired,
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => {
                return LeaseEnd::Failed(MembershipError::Etcd(etcd_client::Error::WatchError(
                    "keep-alive stream closed".to_owned(),
                )))
            }
            Ok(Err(error)) => return LeaseEnd::Failed(error.into()),
            Err(_) => return LeaseEnd::Failed(MembershipError::Timeout(REQUEST_TIMEOUT)),
        }
        tokio::time::sleep(interval).await;
    }
}

impl Registration {
    /// Returns a receiver that holds whether the node's lease is live: false
    /// once etcd has reported it expired, until the node has registered
    /// again. While etcd is unreachable the lease counts as live, since
    /// etcd renews every lease to its full TTL when it comes back.
    pub fn live(&self) -> watch::Receiver<bool> {
        self.live.clone()
    }

    /// Marks the node as draining or serving in its membership value.
    pub async fn set_state(&self, state: NodeState) -> Result<(), MembershipError> {
        let mut registered = self.shared.lock().await;
        registered.member.state = state;
        registered.put().await
    }

    /// Stops renewing the lease and revokes it, which deletes the member key
    /// at once.
    pub async fn revoke(self) -> Result<(), MembershipError> {
        self.keeper.abort();
        let mut registered = self.shared.lock().await;
        let lease = registered.lease;
        bounded(registered.client.lease_revoke(lease)).await?;
        tracing::info!(node_id = %registered.member.id, lease, "revoked lease");
        Ok(())
    }

    /// Stops renewing the lease without revoking it, so the key expires after
    /// its TTL as if the process had crashed.
    pub fn abandon(self) {
        self.keeper.abort();
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// Connects to etcd, checks that it holds `params` (storing them when it
/// holds none), and follows the members into a new ring until the returned
/// task is aborted. This is how a process that routes, but does not serve
/// on the ring, such as a gateway, gets its ring. While etcd is unreachable
/// it retries.
pub async fn follow_ring(
    endpoints: &[String],
    prefix: &str,
    params: RingParams,
) -> Result<(RingHandle, JoinHandle<()>), MembershipError> {
    let client = connect(endpoints).await?;
    let keys = Keys::new(prefix);
    retry_unavailable("checking ring parameters", || {
        ensure_ring_params(client.clone(), &keys, params)
    })
    .await?;
    let ring = RingHandle::new(params);
    let watcher = spawn_watcher(client, keys, ring.clone());
    Ok((ring, watcher))
}

/// Checks the ring parameters, retrying while etcd is unreachable, then
/// follows the members into `ring` like [`spawn_watcher`]. A process that
/// must serve before etcd responds starts with this: its ring stays empty,
/// at version 0, until etcd has responded. Parameters that differ from
/// `ring`'s are logged as an error and end the task.
pub fn spawn_checked_watcher(client: Client, keys: Keys, ring: RingHandle) -> JoinHandle<()> {
    let span = tracing::info_span!("membership_watcher", prefix = %keys.prefix);
    tokio::spawn(
        async move {
            let params = ring.params();
            let checked = retry_unavailable("reading the ring parameters", || {
                ensure_ring_params(client.clone(), &keys, params)
            })
            .await;
            match checked {
                Ok(()) => {
                    tracing::info!("etcd responded; following the pool nodes");
                    watch_members(client, keys, ring).await;
                }
                Err(error) => tracing::error!(%error, "cannot follow the ring"),
            }
        }
        .instrument(span),
    )
}

/// Lists the members, then keeps `ring` up to date from etcd's watch until
/// the returned task is aborted.
///
/// The watch starts at the revision after the listing, and after a
/// reconnect at the revision after the last change applied, so no change is
/// missed or applied twice. A compacted start revision makes it list again.
/// While etcd is unreachable the last ring stays in place.
pub fn spawn_watcher(client: Client, keys: Keys, ring: RingHandle) -> JoinHandle<()> {
    let span = tracing::info_span!("membership_watcher", prefix = %keys.prefix);
    tokio::spawn(watch_members(client, keys, ring).instrument(span))
}

async fn watch_members(mut client: Client, keys: Keys, ring: RingHandle) {
    let params = ring.params();
    let mut view = MembershipView::default();
    let mut listed = false;
    let mut backoff = Backoff::new(RETRY_MIN, RETRY_MAX);
    loop {
        if !listed {
            match list_members(&mut client, &keys).await {
                Ok((members, revision)) => {
                    let changes = view.reset(members, revision);
                    for change in &changes {
                        change.log(revision);
                    }
                    publish(&ring, &view, params).await;
                    tracing::debug!(
                        etcd_revision = revision,
                        members = view.len(),
                        "listed members"
                    );
                    listed = true;
                    backoff.reset();
                }
                Err(error) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(%error, retry_in = ?delay, "listing members failed; routing on the last ring");
                    tokio::time::sleep(delay).await;
                    continue;
                }
            }
        }
        match follow(&mut client, &keys, &mut view, &ring, params, &mut backoff).await {
            WatchEnd::Compacted(compacted) => {
                tracing::warn!(
                    compact_revision = compacted,
                    "watch revision was compacted; listing again"
                );
                listed = false;
            }
            WatchEnd::RevisionWentBack(current) => {
                tracing::warn!(
                    etcd_revision = current,
                    last_applied = view.revision(),
                    "etcd revision is below the last one applied, so etcd lost its data; listing again"
                );
                listed = false;
            }
            WatchEnd::Failed(error) => {
                let delay = backoff.next_delay();
                tracing::warn!(%error, retry_in = ?delay, resume_revision = view.revision() + 1,
                    "membership watch failed; routing on the last ring");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

async fn list_members(
    client: &mut Client,
    keys: &Keys,
) -> Result<(Vec<Member>, u64), MembershipError> {
    let prefix = keys.members_prefix();
    let response =
        bounded(client.get(prefix.clone(), Some(GetOptions::new().with_prefix()))).await?;
    let revision = response.header().map_or(0, |h| h.revision());
    let members = response
        .kvs()
        .iter()
        .filter_map(|kv| decode_member(&prefix, kv.key(), kv.value()))
        .collect();
    Ok((members, u64::try_from(revision).unwrap_or(0)))
}

/// Decodes a member value, logging and skipping a malformed one.
fn decode_member(prefix: &str, key: &[u8], value: &[u8]) -> Option<Member> {
    let key = String::from_utf8_lossy(key);
    let id = key.strip_prefix(prefix).unwrap_or(&key);
    match Member::decode(id, value) {
        Ok(member) => Some(member),
        Err(error) => {
            tracing::warn!(key = %key, %error, "skipping malformed membership value");
            None
        }
    }
}

enum WatchEnd {
    Compacted(i64),
    /// etcd's current revision is below the last one applied: its data was
    /// restored or recreated, so revisions started over.
    RevisionWentBack(i64),
    Failed(MembershipError),
}

async fn follow(
    client: &mut Client,
    keys: &Keys,
    view: &mut MembershipView,
    ring: &RingHandle,
    params: RingParams,
    backoff: &mut Backoff,
) -> WatchEnd {
    let prefix = keys.members_prefix();
    let start = i64::try_from(view.revision() + 1).unwrap_or(i64::MAX);
    let options = WatchOptions::new().with_prefix().with_start_revision(start);
    tracing::debug!(start_revision = start, "watching members");
    let mut stream = match bounded(client.watch(prefix.clone(), Some(options))).await {
        Ok(stream) => stream,
        Err(error) => return WatchEnd::Failed(error),
    };
    loop {
        let response = match stream.message().await {
            Ok(Some(response)) => response,
            Ok(None) => {
                return WatchEnd::Failed(MembershipError::Etcd(etcd_client::Error::WatchError(
                    "watch stream closed".to_owned(),
                )))
            }
            Err(error) => return WatchEnd::Failed(error.into()),
        };
        let current = response.header().map_or(0, |h| h.revision());
        if response.created() {
            if u64::try_from(current).unwrap_or(0) < view.revision() {
                return WatchEnd::RevisionWentBack(current);
            }
            // etcd accepted the watch, so the next failure starts the backoff afresh.
            backoff.reset();
        }
        if response.canceled() {
            if response.compact_revision() > 0 {
                return WatchEnd::Compacted(response.compact_revision());
            }
            return WatchEnd::Failed(MembershipError::Etcd(etcd_client::Error::WatchError(
                format!("watch canceled: {}", response.cancel_reason()),
            )));
        }
        let mut changed = false;
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let revision = u64::try_from(kv.mod_revision()).unwrap_or(0);
            let change = match event.event_type() {
                EventType::Put => match decode_member(&prefix, kv.key(), kv.value()) {
                    Some(member) => view.upsert(member, revision),
                    None => {
                        view.advance(revision);
                        None
                    }
                },
                EventType::Delete => {
                    let key = String::from_utf8_lossy(kv.key());
                    let id = key.strip_prefix(&prefix).unwrap_or(&key).to_owned();
                    view.remove(&id, revision)
                }
            };
            if let Some(change) = change {
                change.log(revision);
                changed = true;
            }
        }
        if changed {
            publish(ring, view, params).await;
        }
    }
}

/// Builds the ring on a blocking thread, since a large ring takes
/// milliseconds, and swaps it in.
async fn publish(ring: &RingHandle, view: &MembershipView, params: RingParams) {
    let snapshot = view.clone();
    let built = tokio::task::spawn_blocking(move || snapshot.build_ring(params)).await;
    match built {
        Ok(new_ring) => ring.publish(new_ring),
        Err(error) => tracing::error!(%error, "building the ring failed; keeping the last ring"),
    }
}
