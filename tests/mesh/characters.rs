use std::process::Command;

use serde::Deserialize;
use voca_tests::mesh::{gateway_client, route, send, Mesh};
use voca_tests::process::binary;
use voca_tests::repo_root;

/// A question per fixture vendor about its own knowledge, and text the
/// reply must contain.
const FIXTURE_QUESTIONS: &[(&str, &str, &str)] = &[
    (
        "alfred",
        "Do you have medical training?",
        "medical training",
    ),
    ("c3po", "Who is your best friend?", "R2-D2"),
    ("dobby", "Do you know Harry Potter?", "Harry Potter"),
    ("jarvis", "Who created you?", "Tony Stark"),
    ("kermit", "Can you play the banjo?", "banjo"),
    (
        "edriziai-info",
        "What metrics should I track before fundraising?",
        "Customer Acquisition Cost",
    ),
];

#[tokio::test(flavor = "multi_thread")]
async fn every_fixture_answers_from_its_knowledge() {
    let mesh = Mesh::new().await;
    let vendors = mesh.add_fixture_vendors();
    let (gateway, _pools) = mesh.start(&["pool-a", "pool-b"]).await;
    let mut client = gateway_client(&gateway.address()).await.unwrap();

    for vendor in &vendors {
        let case = FIXTURE_QUESTIONS.iter().find(|(v, _, _)| v == vendor);
        let (_, question, expected) =
            case.unwrap_or_else(|| panic!("no question for fixture vendor {vendor}"));
        let reply = send(&mut client, vendor, question)
            .await
            .unwrap_or_else(|s| panic!("{vendor}: {s}"));
        assert!(
            reply.text.contains(expected),
            "{vendor}: reply to {question:?} lacks {expected:?}: {}",
            reply.text
        );
        assert!(
            !reply.text.contains("{{"),
            "{vendor}: placeholder in {}",
            reply.text
        );
        assert_eq!(reply.pool_id, route(&mut client, vendor).await);
    }
    assert_eq!(
        vendors.len(),
        FIXTURE_QUESTIONS.len(),
        "every fixture vendor was asked: {vendors:?}"
    );
}

#[derive(Deserialize)]
struct ScriptedTurn {
    vendor_id: String,
    expect: String,
}

#[test]
fn quickstart_answers_from_three_pools() {
    let output = Command::new(binary("voca"))
        .args(["quickstart", "--listen", "127.0.0.1:0"])
        .output()
        .expect("running voca quickstart");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "quickstart failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let script: Vec<ScriptedTurn> = serde_json::from_slice(
        &std::fs::read(repo_root().join("examples/conversation.json")).unwrap(),
    )
    .unwrap();
    for turn in &script {
        assert!(
            stdout.contains(&turn.expect),
            "reply for {} lacks {:?}:\n{stdout}",
            turn.vendor_id,
            turn.expect
        );
    }
    for pool in ["local-1", "local-2", "local-3"] {
        assert!(
            stdout.contains(&format!("answered by {pool})")),
            "no reply from {pool}:\n{stdout}"
        );
    }
    assert!(!stdout.contains("error"), "{stdout}");
}
