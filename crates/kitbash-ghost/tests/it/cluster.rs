//! Redis Cluster is refused at start-up (in-process and as the binary), with one line saying
//! why, until ghost can work there: both through a `redis-cluster://` URL and a plain URL that
//! points at a cluster node.

use std::process::Stdio;
use std::time::Duration;

use kitbash_runtime::RuntimeError;
use kitbash_testkit::RedisCluster;
use kitbash_testkit::support::daemon_command;

use crate::config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_is_refused_at_start_in_process_and_as_the_binary() {
    let cluster = RedisCluster::start().expect("cluster");
    let ns = kitbash_testkit::namespace();
    for url in [cluster.cluster_url(), cluster.url()] {
        let (signals, _) = kitbash_runtime::shutdown::manual();
        let err = tokio::time::timeout(
            Duration::from_secs(60),
            kitbash_ghost::run(config(&url, &ns), signals),
        )
        .await
        .expect("refused, not run")
        .expect_err("refused");
        assert!(
            matches!(err, RuntimeError::Refused { .. }),
            "{url}: {err:?}"
        );
        assert!(
            err.to_string().contains("does not run on a Redis Cluster"),
            "{err}"
        );
    }
    let out = daemon_command(
        env!("CARGO_BIN_EXE_kitbash-ghost"),
        &cluster.cluster_url(),
        &ns,
    )
    .stderr(Stdio::piped())
    .output()
    .expect("run the binary");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("kitbash-ghost does not run on a Redis Cluster"),
        "{stderr}"
    );
}
