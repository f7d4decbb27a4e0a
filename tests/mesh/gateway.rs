//! The gateway against an in-process pool node that records what reaches
//! it, to check deadline and cancellation propagation.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Code, Request, Response, Status};
use voca_common::membership::local::LocalMembership;
use voca_common::{Member, NodeState, RingParams};
use voca_gateway::{GatewayConfig, RingSource};
use voca_proto::v1::pool_node_server::{PoolNode, PoolNodeServer};
use voca_proto::v1::{
    OwnerRequest, OwnerResponse, ProcessRequest, ProcessResponse, SendMessageRequest,
};
use voca_tests::mesh::gateway_client;
use voca_tests::wait_for;

/// What the slow pool node saw.
#[derive(Default)]
struct Seen {
    timeouts: Vec<Option<String>>,
    dropped_unfinished: usize,
}

/// A pool node that takes two seconds per message.
struct SlowPool {
    seen: Arc<Mutex<Seen>>,
}

/// Counts a handler dropped before it finished, which is how tonic ends a
/// call the caller cancelled.
struct DropGuard {
    seen: Arc<Mutex<Seen>>,
    finished: bool,
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.seen.lock().unwrap().dropped_unfinished += 1;
        }
    }
}

#[tonic::async_trait]
impl PoolNode for SlowPool {
    async fn process(
        &self,
        request: Request<ProcessRequest>,
    ) -> Result<Response<ProcessResponse>, Status> {
        let timeout = request
            .metadata()
            .get("grpc-timeout")
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        self.seen.lock().unwrap().timeouts.push(timeout);
        let mut guard = DropGuard {
            seen: self.seen.clone(),
            finished: false,
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        guard.finished = true;
        Ok(Response::new(ProcessResponse {
            text: "late".to_owned(),
            pool_id: "slow".to_owned(),
            character_name: "Slow".to_owned(),
            deduplicated_locally: false,
        }))
    }

    async fn owner(&self, _: Request<OwnerRequest>) -> Result<Response<OwnerResponse>, Status> {
        Err(Status::unimplemented("not used"))
    }
}

async fn start_slow_mesh() -> (Arc<Mutex<Seen>>, voca_gateway::RunningGateway) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let pool = SlowPool { seen: seen.clone() };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(PoolNodeServer::new(pool))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let membership = LocalMembership::new(RingParams::default());
    membership
        .register(Member {
            id: "slow".to_owned(),
            address: address.to_string(),
            weight: 1,
            state: NodeState::Serving,
            version: "test".to_owned(),
            incarnation: String::new(),
        })
        .unwrap();
    let gateway = voca_gateway::start(GatewayConfig {
        registry: None,
        listen: "127.0.0.1:0".parse().unwrap(),
        ring_source: RingSource::Local(membership),
        ring_params: RingParams::default(),
        shutdown_deadline: Duration::from_secs(1),
    })
    .await
    .unwrap();
    (seen, gateway)
}

fn message() -> SendMessageRequest {
    SendMessageRequest {
        vendor_id: "any-vendor".to_owned(),
        user_id: "u".to_owned(),
        text: "hello".to_owned(),
        message_id: String::new(),
        platform: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deadline_reaches_pool_node() {
    let (seen, gateway) = start_slow_mesh().await;
    let mut client = gateway_client(&gateway.local_addr().to_string())
        .await
        .unwrap();
    let mut request = Request::new(message());
    request.set_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let status = client.send_message(request).await.unwrap_err();
    // The client's own channel enforces the deadline too, so either side
    // may end the call first.
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "took {:?}",
        started.elapsed()
    );

    wait_for(
        "the pool node's handler to be dropped",
        Duration::from_secs(5),
        || async { (seen.lock().unwrap().dropped_unfinished == 1).then_some(()) },
    )
    .await;
    let timeouts = seen.lock().unwrap().timeouts.clone();
    assert_eq!(timeouts.len(), 1);
    let forwarded = timeouts[0]
        .clone()
        .expect("the gateway forwards grpc-timeout");
    let millis =
        voca_gateway::deadline::parse_grpc_timeout(&forwarded).expect("valid grpc-timeout");
    assert!(
        millis <= Duration::from_millis(300),
        "forwarded {forwarded}"
    );
    assert!(
        millis >= Duration::from_millis(100),
        "forwarded {forwarded}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cancellation_reaches_pool_node() {
    let (seen, gateway) = start_slow_mesh().await;
    let mut client = gateway_client(&gateway.local_addr().to_string())
        .await
        .unwrap();
    let call = client.send_message(Request::new(message()));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), call)
            .await
            .is_err(),
        "the call is still running"
    );

    wait_for(
        "the pool node's handler to be dropped",
        Duration::from_secs(5),
        || async { (seen.lock().unwrap().dropped_unfinished == 1).then_some(()) },
    )
    .await;
    assert_eq!(
        seen.lock().unwrap().timeouts,
        vec![None],
        "no deadline was set"
    );
}
