//! The short chaos scenario: steady load while a pool node joins, one
//! drains, all restart one by one, one is killed and Redis stops answering.

use std::time::Duration;

use voca_tests::chaos::{self, Fault, Scenario};

#[tokio::test(flavor = "multi_thread")]
async fn membership_changes_lose_and_duplicate_nothing() {
    let scenario = Scenario {
        vendors: 200,
        rate: 100,
        pools: 3,
        faults: vec![
            Fault::AddNode,
            Fault::Drain,
            Fault::RollingRestart,
            Fault::Kill,
            Fault::PauseRedis(Duration::from_secs(2)),
        ],
        settle: Duration::from_secs(4),
        drain_grace: Duration::from_secs(1),
    };
    let report = chaos::run(&scenario).await;
    let table = report.to_markdown();
    println!("{table}");
    assert!(report.sent >= 1_000, "too little load to judge: {table}");
    assert_eq!(report.unreadable, 0, "{table}");
    assert_eq!(report.lost, 0, "{table}");
    assert_eq!(report.duplicated, 0, "{table}");
    assert_eq!(report.out_of_order, 0, "{table}");
    assert_eq!(report.answered, report.sent, "{table}");
    assert!(
        report.answered_locally > 0,
        "messages answered while Redis was paused say so: {table}"
    );
    for phase in &report.phases {
        if phase.name != "kill -9 a node" {
            assert_eq!(
                phase.failed_tries(),
                0,
                "failed tries while {}: {table}",
                phase.name
            );
        }
    }
    let kill = report
        .phases
        .iter()
        .find(|p| p.name == "kill -9 a node")
        .expect("the kill phase ran");
    let (recovered_after, vendors) = kill.recovery.expect("the kill measures recovery");
    assert!(vendors > 0, "the killed node owned vendors: {table}");
    assert!(
        recovered_after < Duration::from_secs(10),
        "vendors of the killed node were answered again only after {recovered_after:?}: {table}"
    );
}
