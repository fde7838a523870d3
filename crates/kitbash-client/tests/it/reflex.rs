//! The reflex lookup's client cache: a hot lookup reads no grain or mask key, returns what the
//! uncached lookup returns, and a grain or hat change (a `kitbash:reflex:version` bump) is
//! seen by the next lookup; the read path's counters reach Redis in batches.

use fred::prelude::*;
use kitbash_client::reflex::{Reflex, hat_mask_of, parse_grains, query_hash};
use kitbash_schema::reflex::{Layout, compact_id};
use kitbash_testkit::RedisServer;

use crate::support::*;

/// `(calls of GET, calls of MGET)` since the last `CONFIG RESETSTAT`.
async fn get_and_mget_calls(c: &Client) -> (u64, u64) {
    let info: String = c
        .info(Some(fred::types::InfoKind::CommandStats))
        .await
        .expect("info");
    let calls = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{name}:calls=")))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (calls("get"), calls("mget"))
}

fn grains(trits: [&str; 3]) -> Vec<kitbash_client::reflex::Grain> {
    let text: String = trits
        .iter()
        .enumerate()
        .map(|(i, t)| {
            format!(
                "{{\"id\":{},\"axiom\":\"a{i}\",\"weight\":1.0,\"trits\":{t}}}\n",
                i + 1
            )
        })
        .collect();
    parse_grains(&text, 8).expect("grains")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_lookup_equals_the_uncached_one_and_a_version_bump_invalidates_it() {
    let server = RedisServer::start().expect("redis");
    for layout in [Layout::Seed, Layout::Compact] {
        let c = connect(&server.url()).await;
        let keys = keys();
        let reflex = Reflex::new(c.clone(), keys.clone(), 0.9).with_layout(layout, 16);
        reflex.hat_init().await.expect("hats");
        let first = grains([
            "[1,0,-1,0,0,0,0,0]",
            "[0,1,0,-1,0,0,0,0]",
            "[0,0,1,0,-1,0,0,0]",
        ]);
        reflex.grains_import(&first).await.expect("grains");
        let h = query_hash("what is DNA?");
        let id = match layout {
            Layout::Seed => h.clone(),
            Layout::Compact => compact_id(&h).expect("id"),
        };
        let _: () = c
            .set(keys.ghost(&id), "3,1,2", None, None, false)
            .await
            .expect("ghost");
        if layout == Layout::Seed {
            let _: () = c
                .hset(
                    keys.cms(&h),
                    vec![
                        ("count", "4"),
                        ("last_accessed", "2026-12-07T01:00:00Z"),
                        ("resonance_score", "2.5"),
                        ("cycle", "0"),
                    ],
                )
                .await
                .expect("record");
        }

        // The first lookup fills the cache; the next reads no grain or mask key.
        let cold = reflex.lookup_hash(&h).await.expect("lookup");
        assert_eq!(cold.ghost_ids(), vec![3, 1, 2], "{layout:?}");
        let _: () = c.config_resetstat().await.expect("resetstat");
        let hot = reflex.lookup_hash(&h).await.expect("lookup");
        assert_eq!(
            get_and_mget_calls(&c).await,
            (0, 1),
            "{layout:?}: the hot lookup reads the record, then cycle, ghost, hat and version in one MGET"
        );
        let uncached = reflex.lookup_hash_uncached(&h).await.expect("lookup");
        assert_eq!(hot, uncached, "{layout:?}");
        assert_eq!(hot, cold, "{layout:?}");
        assert_eq!(hot.hat_mask, Some(hat_mask_of("analytical").to_vec()));
        assert_eq!(hot.ghost[0].plus, first[2].vector.plus_bytes());
        if layout == Layout::Seed {
            assert_eq!(hot.count, Some(4));
        }

        // A grain changes (the import bumps the version): the next lookup sees the new planes.
        let changed = grains([
            "[1,0,-1,0,0,0,0,0]",
            "[0,1,0,-1,0,0,0,0]",
            "[-1,-1,-1,1,1,1,0,0]",
        ]);
        reflex
            .grains_import(&changed[2..])
            .await
            .expect("grain 3 again");
        let after = reflex.lookup_hash(&h).await.expect("lookup");
        assert_eq!(
            after.ghost[0].plus,
            changed[2].vector.plus_bytes(),
            "{layout:?}"
        );
        assert_eq!(
            after.ghost[0].minus,
            changed[2].vector.minus_bytes(),
            "{layout:?}"
        );
        assert_ne!(after.ghost[0].plus, hot.ghost[0].plus);
        assert_eq!(
            after,
            reflex.lookup_hash_uncached(&h).await.expect("lookup")
        );
        // A hat switch: the new mask.
        assert!(reflex.hat_set("creative").await.expect("hat"));
        let hat = reflex.lookup_hash(&h).await.expect("lookup");
        assert_eq!(hat.hat.as_deref(), Some("creative"));
        assert_eq!(hat.hat_mask, Some(hat_mask_of("creative").to_vec()));
        assert_eq!(hat, reflex.lookup_hash_uncached(&h).await.expect("lookup"));
        // A clone shares the cache: its first lookup is hot.
        let _: () = c.config_resetstat().await.expect("resetstat");
        let twin = reflex.clone();
        assert_eq!(twin.lookup_hash(&h).await.expect("lookup"), hat);
        assert_eq!(get_and_mget_calls(&c).await, (0, 1), "{layout:?}");

        // Eight lookups of three ghost grains each: 24 grain lookups, counted in batches.
        reflex.flush_counters().await.expect("flush");
        let want_hits = if layout == Layout::Seed { "8" } else { "" };
        eventually("the lookups' counts in Redis", || async {
            let n: Option<String> = c.get(keys.metrics_grains_lookups()).await.unwrap_or(None);
            let hits: Option<String> = c.get(keys.metrics_cache_hits()).await.unwrap_or(None);
            n.as_deref() == Some("24") && hits.as_deref().unwrap_or_default() == want_hits
        })
        .await;
        let _ = c.quit().await;
    }
}
