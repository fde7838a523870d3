//! Faults: Redis refusing writes (`maxmemory` 1 byte, `noeviction`) for a few seconds while
//! crossings wait — held, not ready meanwhile, none dead-lettered, each written once afterwards.

use fred::prelude::*;
use fred::types::Value;
use kitbash_client::Producer;
use kitbash_client::reflex::{Reflex, parse_grains, query_hash};
use kitbash_schema::messages::Crossing;
use kitbash_schema::{Keys, Namespace, StreamName};
use kitbash_testkit::RedisServer;
use kitbash_testkit::support::{
    allow_writes, append_then_refuse_writes, free_local_addr, readiness,
};

use crate::{SAMPLE, client, config, eventually};

/// The JSON envelope's fields of `m`, as text (for [`append_then_refuse_writes`]).
fn json_fields<M: kitbash_schema::Message>(m: &M) -> Vec<(&'static str, String)> {
    kitbash_schema::Envelope::json(m)
        .expect("encode")
        .to_fields()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v).expect("JSON is text")))
        .collect()
}

fn crossing(text: &str) -> Crossing {
    Crossing {
        hash: query_hash(text),
        text: text.to_owned(),
        resonance: 0.81,
        cycle: 0,
    }
}

async fn activations(c: &Client, k: &Keys) -> u64 {
    let n: Option<u64> = c.get(k.ghost_activations()).await.expect("get");
    n.unwrap_or(0)
}

async fn has_ghost(c: &Client, k: &Keys, text: &str) -> bool {
    let g: Option<String> = c.get(k.ghost(&query_hash(text))).await.expect("get");
    g.is_some()
}

async fn dead(c: &Client, k: &Keys) -> u64 {
    c.xlen(k.dead_letter(StreamName::Crossings))
        .await
        .expect("xlen")
}

async fn pending(c: &Client, k: &Keys) -> i64 {
    let v: Value = c
        .xpending(k.stream(StreamName::Crossings), "ghost", ())
        .await
        .expect("xpending");
    match v {
        Value::Array(a) => a.first().and_then(Value::as_i64).unwrap_or(-1),
        _ => -1,
    }
}

/// Redis refusing writes for a few seconds while crossings wait: nothing is dead-lettered, the
/// consumer reports not ready meanwhile, and afterwards every crossing has its ghost and is
/// counted exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_refuses_writes_crossings_are_held_then_each_written_once_and_none_dead() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let k = Keys::new(Namespace::new(ns.clone()).expect("ns"));
    let c = client(&server.url()).await;
    let reflex = Reflex::new(c.clone(), k.clone(), 0.9);
    reflex.hat_init().await.expect("hats");
    reflex
        .grains_import(&parse_grains(SAMPLE, 256).expect("grains"))
        .await
        .expect("import");
    let mut cfg = config(&server.url(), &ns);
    let admin = free_local_addr();
    cfg.admin.listen = admin.to_string();
    let producer = Producer::new(c.clone(), k.clone(), 1);
    producer
        .publish(StreamName::Crossings, &crossing("warm up"))
        .await
        .expect("publish");
    let (signals, _) = kitbash_runtime::shutdown::manual();
    let stop = signals.shutdown.clone();
    let task = tokio::spawn(kitbash_ghost::run(cfg, signals));
    let check = "group ghost on crossings";
    eventually(
        "the first crossing written and the consumer ready",
        || async { activations(&c, &k).await == 1 && readiness(admin, check).1 == Some(true) },
    )
    .await;
    let texts: Vec<String> = (0..30).map(|i| format!("held crossing {i}")).collect();
    let entries: Vec<Vec<(&str, String)>> =
        texts.iter().map(|t| json_fields(&crossing(t))).collect();
    append_then_refuse_writes(&server, &k.stream(StreamName::Crossings), &entries)
        .expect("refuse writes");
    eventually("not ready while Redis refuses writes", || async {
        readiness(admin, check) == (503, Some(false))
    })
    .await;
    // The fault lasts a few seconds (its length, not a synchronisation).
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(
        dead(&c, &k).await,
        0,
        "nothing dead-lettered while Redis refuses writes"
    );
    assert_eq!(activations(&c, &k).await, 1, "nothing written meanwhile");
    allow_writes(&server).expect("allow writes");
    eventually("every held crossing written, ready again", || async {
        let mut all = activations(&c, &k).await == 31;
        for t in &texts {
            all &= has_ghost(&c, &k, t).await;
        }
        all && readiness(admin, check).1 == Some(true)
    })
    .await;
    assert_eq!(dead(&c, &k).await, 0, "no valid crossing dead-lettered");
    eventually("nothing pending", || async { pending(&c, &k).await == 0 }).await;
    assert_eq!(activations(&c, &k).await, 31, "each crossing counted once");
    eventually("/readyz 200 again", || async {
        readiness(admin, check) == (200, Some(true))
    })
    .await;
    stop.cancel();
    task.await.expect("join").expect("run");
}
