//! Redis Cluster is refused at start-up (in-process and as the binary), with one line saying
//! why, until entity can work there: through a `redis-cluster://` URL and through a plain URL
//! that points at a cluster node (`kitbash_testkit::support::assert_cluster_refused`).

use crate::support::config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_is_refused_at_start_in_process_and_as_the_binary() {
    kitbash_testkit::support::assert_cluster_refused(
        env!("CARGO_BIN_EXE_kitbash-entity"),
        "entity",
        |url, ns| async move {
            let (signals, _) = kitbash_runtime::shutdown::manual();
            kitbash_entity::run(config(&url, &ns), signals).await
        },
    )
    .await;
}
