//! Clusters: formation, redirects across slots, node faults and cleanup.

use std::path::Path;
use std::time::Duration;

use kitbash_testkit::{RedisCluster, TestkitError};

use crate::{TestResult, raw_ping};

#[test]
fn three_masters_reach_ok_and_redis_cli_follows_redirects_across_slots() -> TestResult {
    let mut cluster = RedisCluster::start()?;
    assert_eq!(cluster.nodes().len(), 3);
    assert_eq!(cluster.urls().len(), 3);
    assert_eq!(cluster.url(), cluster.urls()[0]);
    for node in cluster.nodes() {
        let info = node.cmd(&["CLUSTER", "INFO"])?;
        assert!(info.contains("cluster_state:ok"), "{info}");
        assert!(info.contains("cluster_slots_assigned:16384"), "{info}");
    }

    let keys: Vec<String> = (0..20).map(|i| format!("key-{i}")).collect();
    for key in &keys {
        assert_eq!(
            cluster.cmd(&["SET", key, &format!("value of {key}")])?,
            "OK"
        );
    }
    for key in &keys {
        assert_eq!(cluster.cmd(&["GET", key])?, format!("value of {key}"));
    }
    // The keys really are spread over several masters.
    let sizes = cluster
        .nodes()
        .iter()
        .map(|n| n.cmd(&["DBSIZE"])?.parse::<usize>().map_err(Into::into))
        .collect::<Result<Vec<_>, Box<dyn std::error::Error>>>()?;
    assert_eq!(sizes.iter().sum::<usize>(), keys.len(), "{sizes:?}");
    assert!(sizes.iter().filter(|&&n| n > 0).count() >= 2, "{sizes:?}");

    // A node can be crashed and brought back; the cluster heals.
    let node = cluster.node_mut(1);
    node.kill()?;
    node.restart()?;
    cluster.wait_until_ok(Duration::from_secs(30))?;
    assert_eq!(raw_ping(cluster.node(1).port())?, "+PONG\r\n");
    Ok(())
}

#[test]
fn dropping_a_cluster_ends_every_node() -> TestResult {
    let cluster = RedisCluster::start()?;
    let seen: Vec<(u32, std::path::PathBuf)> = cluster
        .nodes()
        .iter()
        .map(|n| (n.pid().expect("running"), n.dir().to_path_buf()))
        .collect();
    drop(cluster);
    for (pid, dir) in seen {
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
        assert!(!dir.exists());
    }
    Ok(())
}

#[test]
fn fewer_than_three_masters_is_refused() {
    let err = RedisCluster::builder()
        .masters(2)
        .start()
        .expect_err("redis-cli needs 3 masters");
    assert!(matches!(err, TestkitError::InvalidConfig(_)), "{err}");
}
