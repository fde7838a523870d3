//! Batched commits: several patches to one document in one batch make one compare-and-set
//! with one version and one change entry each; many documents share one commit script; a bad
//! patch in a batch dead-letters only itself; a document that fails its script fails alone;
//! a redelivered batch changes nothing.

use std::sync::{Arc, Mutex};

use fred::prelude::*;
use kitbash_client::Producer;
use kitbash_entity::partition::Documents;
use kitbash_entity::store::{
    Change, Committed, DOCS_PER_SCRIPT, DocCommit, DocumentStore, StoreError, Stored, StringStore,
};
use kitbash_runtime::config::EntityConfig;
use kitbash_runtime::metrics::Metrics;
use kitbash_runtime::partition::{Effects, Entry, PartitionLogic};
use kitbash_schema::messages::{EntityOp, EntityTarget, EntityUpdate, RoutedEntityUpdate};
use kitbash_schema::{Keys, StreamName};
use kitbash_testkit::RedisServer;
use serde_json::{Value, json};

use crate::support::*;

/// A [`StringStore`] that records how many documents each `commit` call carried.
#[derive(Clone)]
struct Recording {
    inner: StringStore,
    calls: Arc<Mutex<Vec<usize>>>,
}

impl DocumentStore for Recording {
    async fn load(&self, keys: &[String]) -> Result<Vec<Result<Stored, String>>, StoreError> {
        self.inner.load(keys).await
    }

    async fn commit(&self, commits: &[DocCommit]) -> Vec<Result<Committed, StoreError>> {
        self.calls.lock().expect("lock").push(commits.len());
        self.inner.commit(commits).await
    }
}

fn entity(name: &str) -> EntityTarget {
    EntityTarget::Entity {
        name: name.into(),
        part: "state".into(),
    }
}

/// `EVALSHA` calls that ran a script since the last `CONFIG RESETSTAT` (without the first
/// call's `NOSCRIPT`, after which the client loads the script and calls again).
async fn evalsha_calls(c: &Client) -> u64 {
    let info: String = c
        .info(Some(fred::types::InfoKind::CommandStats))
        .await
        .expect("info");
    let line = info
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:"))
        .unwrap_or_default();
    let field = |name: &str| -> u64 {
        line.split(',')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    };
    field("calls").saturating_sub(field("failed_calls") + field("rejected_calls"))
}

/// Change entries of `key` in `entity-changes`, in stream order: (version, op, entry, data).
async fn changes_of(c: &Client, keys: &Keys, key: &str) -> Vec<(u64, String, String, Value)> {
    read_all(c, &keys.stream(StreamName::EntityChanges))
        .await
        .into_iter()
        .filter(|(_, pairs)| field(pairs, "key") == key.as_bytes())
        .map(|(_, pairs)| {
            let text = |f: &str| String::from_utf8_lossy(field(&pairs, f)).into_owned();
            (
                text("version").parse().expect("version"),
                text("op"),
                text("entry"),
                serde_json::from_str(&text("data")).unwrap_or(Value::Null),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_patches_to_one_document_in_one_batch_are_one_commit_with_a_version_each() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let keys = keys(&ns);
    let c = client(&server.url()).await;
    let calls = Arc::new(Mutex::new(Vec::new()));
    let store = Recording {
        inner: StringStore::new(c.clone(), keys.clone(), 100),
        calls: calls.clone(),
    };
    let logic = Documents::new(EntityConfig::default(), keys.clone(), store, Metrics::new());
    let (a, b, d) = (entity("a"), entity("b"), entity("d"));
    let updates = [
        EntityUpdate::merge(a.clone(), json!({"s": "x"})),
        EntityUpdate::with_op(b.clone(), EntityOp::Replace, json!({"b": 1})),
        EntityUpdate::with_op(a.clone(), EntityOp::Increment, json!({"n": 1})),
        // Bad input in the middle of a's run: only this one is refused.
        EntityUpdate::with_op(a.clone(), EntityOp::Increment, json!({"n": "x"})),
        EntityUpdate::merge(d.clone(), json!({"d": true})),
        EntityUpdate::with_op(a.clone(), EntityOp::Increment, json!({"n": 2})),
        EntityUpdate::merge(b.clone(), json!({"b": 2})),
    ];
    let batch: Vec<Entry<RoutedEntityUpdate>> = updates
        .iter()
        .enumerate()
        .map(|(i, u)| Entry {
            id: format!("1000-{i}"),
            message: RoutedEntityUpdate::from(u.clone()),
        })
        .collect();
    let _: () = c.config_resetstat().await.expect("resetstat");
    let mut state = logic.empty(0);
    let results = logic
        .apply(&mut state, &batch, &mut Effects::default())
        .await
        .expect("applied");
    let refused: Vec<usize> = (0..results.len())
        .filter(|&i| results[i].is_err())
        .collect();
    assert_eq!(refused, vec![3], "{results:?}");
    assert!(
        results[3]
            .as_ref()
            .is_err_and(|why| why.contains("not a number")),
        "{results:?}"
    );
    assert_eq!(
        *calls.lock().expect("lock"),
        vec![3],
        "one commit of the three documents"
    );
    assert_eq!(
        evalsha_calls(&c).await,
        1,
        "the three documents share one script"
    );

    let (doc, version) = stored(&c, &keys, &a.key(&keys)).await;
    assert_eq!(doc.as_deref(), Some(r#"{"s":"x","n":3}"#));
    assert_eq!(version, 3, "one version per applied patch of a");
    let got = changes_of(&c, &keys, &a.key(&keys)).await;
    let entry = |i: usize| format!("{}/1000-{i}", StreamName::EntityPart(0).logical());
    assert_eq!(
        got,
        vec![
            (1, "merge".into(), entry(0), json!({"s": "x"})),
            (2, "increment".into(), entry(2), json!({"s": "x", "n": 1})),
            (3, "increment".into(), entry(5), json!({"s": "x", "n": 3})),
        ],
        "one change entry per applied patch, each with the document after it"
    );
    let timeline = read_all(&c, &keys.document_timeline(&a.key(&keys))).await;
    let versions: Vec<&[u8]> = timeline.iter().map(|(_, p)| field(p, "version")).collect();
    assert_eq!(versions, vec![b"1".as_slice(), b"2", b"3"]);
    let (doc, version) = stored(&c, &keys, &b.key(&keys)).await;
    assert_eq!((doc.as_deref(), version), (Some(r#"{"b":2}"#), 2));
    assert_eq!(changes_of(&c, &keys, &b.key(&keys)).await.len(), 2);
    let (doc, version) = stored(&c, &keys, &d.key(&keys)).await;
    assert_eq!((doc.as_deref(), version), (Some(r#"{"d":true}"#), 1));

    // The same batch again on a fresh partition (a restart before the checkpoint moved):
    // nothing changes, the bad patch is refused again with its reason.
    let mut fresh = logic.empty(0);
    let again = logic
        .apply(&mut fresh, &batch, &mut Effects::default())
        .await
        .expect("applied");
    assert_eq!(again, results, "a redelivered batch decides the same");
    assert_eq!(stored(&c, &keys, &a.key(&keys)).await.1, 3);
    assert_eq!(changes_of(&c, &keys, &a.key(&keys)).await.len(), 3);
    assert_eq!(changes_of(&c, &keys, &b.key(&keys)).await.len(), 2);
}

fn commit_of(keys: &Keys, name: &str, expect: u64) -> DocCommit {
    let key = entity(name).key(keys);
    let data = format!(r#"{{"v":{}}}"#, expect + 1).into_bytes();
    DocCommit {
        key: key.clone(),
        expect: (expect, String::new()),
        applied: format!("entity:0/1-{expect}"),
        doc: Some(data.clone()),
        version: expect + 1,
        rejected: Vec::new(),
        ttl_secs: 0,
        changes: vec![Change {
            version: expect + 1,
            entry: format!("entity:0/1-{expect}"),
            op: "merge",
            patch: b"{}".to_vec(),
            data,
            publish: (b"{".to_vec(), b"}".to_vec()),
        }],
    }
}

/// A script that fails on one document's key (another type under it) is sent again one
/// document per script: the others' outcomes stand, the bad one fails alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_failing_its_script_fails_alone() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let keys = keys(&ns);
    let c = client(&server.url()).await;
    let store = StringStore::new(c.clone(), keys.clone(), 100);
    // "bad" is a list, and its commit expects a version it does not have: the script's read
    // of the document for the refusal fails with WRONGTYPE — after "first" was written.
    let _: i64 = c.rpush(entity("bad").key(&keys), "x").await.expect("rpush");
    let commits = vec![
        commit_of(&keys, "first", 0),
        commit_of(&keys, "bad", 5),
        commit_of(&keys, "last", 0),
    ];
    let out = store.commit(&commits).await;
    assert_eq!(out.len(), 3);
    // "first" was written by the failed script; sent again alone it finds its own commit.
    match &out[0] {
        Ok(Committed::Moved(now)) => {
            assert_eq!((now.version, now.applied.as_str()), (1, "entity:0/1-0"));
        }
        other => panic!("first: {other:?}"),
    }
    assert!(
        out[1]
            .as_ref()
            .is_err_and(|e| e.to_string().contains("WRONGTYPE")),
        "{:?}",
        out[1]
    );
    assert!(matches!(out[2], Ok(Committed::Yes)), "{:?}", out[2]);
    for name in ["first", "last"] {
        let key = entity(name).key(&keys);
        assert_eq!(stored(&c, &keys, &key).await.1, 1);
        assert_eq!(changes_of(&c, &keys, &key).await.len(), 1, "{name}: once");
    }
}

#[test]
fn a_large_batch_is_split_into_bounded_scripts() {
    let keys = Keys::default();
    let commits: Vec<DocCommit> = (0..DOCS_PER_SCRIPT as u64 * 2 + 1)
        .map(|i| commit_of(&keys, &format!("d{i}"), i))
        .collect();
    let chunks = StringStore::script_chunks(&commits);
    let sizes: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
    assert_eq!(sizes, vec![DOCS_PER_SCRIPT, DOCS_PER_SCRIPT, 1]);
    let mut big = commit_of(&keys, "big", 0);
    big.doc = Some(vec![b' '; kitbash_entity::store::BYTES_PER_SCRIPT]);
    let mixed = vec![
        commit_of(&keys, "x", 0),
        big.clone(),
        big,
        commit_of(&keys, "y", 0),
        commit_of(&keys, "z", 0),
    ];
    let sizes: Vec<usize> = StringStore::script_chunks(&mixed)
        .iter()
        .map(|c| c.len())
        .collect();
    assert_eq!(
        sizes,
        vec![1, 1, 1, 2],
        "a document over the bound travels alone; small ones after it share a script"
    );
}

/// A backlog that arrives together (published before the instance starts): a bad patch and a
/// stale `expected_version` are dead-lettered alone; a document whose timeline key is of
/// another type is still committed (valid input is never dead-lettered); every document's
/// change entries are versions 1..n, once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_commits_in_batches_and_a_bad_patch_dead_letters_only_itself() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let keys = keys(&ns);
    let c = client(&server.url()).await;
    let producer = Producer::new(c.clone(), keys.clone(), 1);
    let docs: Vec<EntityTarget> = (0..12).map(|i| entity(&format!("d{i}"))).collect();
    // d0's timeline is a string: its changes still commit.
    let _: () = c
        .set(
            keys.document_timeline(&docs[0].key(&keys)),
            "not a stream",
            None,
            None,
            false,
        )
        .await
        .expect("set");
    let mut good = vec![0u64; docs.len()];
    for round in 0..10 {
        for (i, t) in docs.iter().enumerate() {
            let u = if round == 4 && i == 3 {
                EntityUpdate::with_op(t.clone(), EntityOp::Increment, json!({"n": "x"}))
            } else if round == 6 && i == 7 {
                let mut u = EntityUpdate::with_op(t.clone(), EntityOp::Increment, json!({"n": 1}));
                u.expected_version = Some(99);
                u
            } else {
                good[i] += 1;
                EntityUpdate::with_op(t.clone(), EntityOp::Increment, json!({"n": 1}))
            };
            producer
                .patch_entity(&u, PARTITIONS)
                .await
                .expect("publish");
        }
    }
    let inst = start(config(&server.url(), &ns));
    caught_up(&c, &keys).await;
    inst.stop().await;
    let reasons = dead_reasons(&c, &keys).await;
    assert_eq!(reasons.len(), 2, "{reasons:#?}");
    assert!(
        reasons.iter().any(|r| r.contains("not a number")),
        "{reasons:#?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("version conflict")),
        "{reasons:#?}"
    );
    for (i, t) in docs.iter().enumerate() {
        let key = t.key(&keys);
        let (doc, version) = stored(&c, &keys, &key).await;
        let doc: Value = serde_json::from_str(&doc.expect("document")).expect("json");
        assert_eq!(doc["n"], json!(good[i]), "{key}");
        assert_eq!(version, good[i], "{key}");
        let versions: Vec<u64> = changes_of(&c, &keys, &key)
            .await
            .into_iter()
            .map(|(v, ..)| v)
            .collect();
        assert_eq!(versions, (1..=good[i]).collect::<Vec<_>>(), "{key}");
    }
}
