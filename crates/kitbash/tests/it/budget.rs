//! The memory-budget model against a live Redis: load the seed's layout, compare `used_memory`.

use fred::prelude::*;
use kitbash::bench::memory;
use kitbash_schema::Keys;
use kitbash_schema::budget::{BudgetParams, RedisMemoryModel};
use kitbash_testkit::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_matches_real_used_memory_for_a_small_seed_load() {
    let server = RedisServer::start().expect("redis");
    let client = Client::new(
        fred::types::config::Config::from_url(&server.url()).expect("url"),
        None,
        None,
        None,
    );
    client.init().await.expect("connect");
    // A tenth of the seed's load keeps the test quick; the model is linear in both counts.
    let p = BudgetParams {
        queries: 1_000,
        grains: 100,
        ..BudgetParams::seed_layout()
    };
    let measured = memory::measure(&client, &Keys::default(), &p)
        .await
        .expect("measure");
    let model = RedisMemoryModel::default().estimate(&p).total_bytes;
    let ratio = measured as f64 / model as f64;
    assert!(
        (0.85..=1.15).contains(&ratio),
        "measured {measured} B vs model {model} B (ratio {ratio:.3})"
    );
    // And the keys really carry the seed's TTLs.
    let some_cms: Vec<String> = client
        .custom(fred::cmd!("KEYS"), vec!["cms:*:resonance"])
        .await
        .expect("keys");
    let ttl: i64 = client.ttl(&some_cms[0]).await.expect("ttl");
    assert!(ttl > 4 * 24 * 3600, "resonance TTL is 5 days: {ttl}");
}
