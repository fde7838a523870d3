//! A writer whose bank has not reloaded yet never writes a ghost from the old bank: the write is
//! fenced by `kitbash:reflex:version` (checked in its script), refused, and recomputed from the
//! reloaded bank. Seen red with the version guard removed (the ghost came from the old hat).

use fred::prelude::*;
use kitbash_client::reflex::{Reflex, hat_mask_of, parse_grains, query_hash};
use kitbash_ghost::bank::Bank;
use kitbash_ghost::writer::GhostWriter;
use kitbash_runtime::DaemonContext;
use kitbash_runtime::consumer::{Delivery, Handler, Outcome};
use kitbash_schema::messages::Crossing;
use kitbash_schema::{DaemonKind, Keys, Namespace};
use kitbash_ternary::HatMask;
use kitbash_testkit::RedisServer;

use crate::{SAMPLE, brute_force, client, config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_whose_bank_is_stale_never_writes_a_ghost_from_the_old_bank() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let k = Keys::new(Namespace::new(ns.clone()).expect("ns"));
    let c = client(&server.url()).await;
    let reflex = Reflex::new(c.clone(), k.clone(), 0.9);
    let grains = parse_grains(SAMPLE, 256).expect("sample grains");
    reflex.hat_init().await.expect("hats");
    reflex.grains_import(&grains).await.expect("import");
    reflex.hat_set("analytical").await.expect("hat");
    let (signals, _reload) = kitbash_runtime::shutdown::manual();
    let stop = signals.shutdown.clone();
    let ctx = DaemonContext::start(DaemonKind::Ghost, config(&server.url(), &ns), signals)
        .await
        .expect("context");
    let bank = Bank::new(c.clone(), k.clone(), ctx.metrics.clone(), 256);
    bank.current()
        .await
        .expect("bank loaded under the analytical hat");
    // The hat switches and the version moves; nothing reloads this bank (no watcher here).
    reflex.hat_set("creative").await.expect("hat switch");
    let analytical = HatMask::from_bytes(&hat_mask_of("analytical")).expect("mask");
    let creative = HatMask::from_bytes(&hat_mask_of("creative")).expect("mask");
    let text = (0..64)
        .map(|i| format!("what is the entropy of system {i}"))
        .find(|t| brute_force(&grains, t, &analytical) != brute_force(&grains, t, &creative))
        .expect("a query whose ghost differs between the two hats");
    let mut writer = GhostWriter::new(&ctx, bank);
    let crossing = Delivery {
        id: "1-1".into(),
        message: Crossing {
            hash: query_hash(&text),
            text: text.clone(),
            resonance: 0.9,
            cycle: 1,
        },
        deliveries: 1,
        mid: None,
    };
    assert_eq!(writer.handle(vec![crossing]).await, vec![Outcome::Ack]);
    let ghost: Option<String> = c.get(k.ghost(&query_hash(&text))).await.expect("get");
    assert_eq!(
        ghost,
        Some(brute_force(&grains, &text, &creative)),
        "the ghost is the current hat's, not the stale bank's"
    );
    let n: Option<u64> = c.get(k.ghost_activations()).await.expect("get");
    assert_eq!(n, Some(1), "one activation");
    stop.cancel();
    ctx.finish().await;
}
