//! `kitbash migrate`'s library: the sample tree imports, a second run changes nothing, the
//! half-written file is skipped and named, and `--dry-run` writes nothing.

use std::path::Path;

use kitbash_entity::migrate::{discover, migrate};
use kitbash_entity::store::StringStore;
use kitbash_schema::StreamName;
use kitbash_schema::messages::EntityTarget;
use kitbash_testkit::RedisServer;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_imports_once_skips_the_broken_file_and_a_second_run_changes_nothing() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let keys = keys(&ns);
    let c = client(&server.url()).await;
    let store = StringStore::new(c.clone(), keys.clone(), 10);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    assert_eq!(discover(&dir).len(), 7);

    let dry = migrate(&store, &keys, &dir, true, 1 << 20, |_, _, _| {})
        .await
        .expect("dry run");
    assert_eq!((dry.imported, dry.unchanged, dry.skipped.len()), (6, 0, 1));
    assert_eq!(
        read_all(&c, &keys.stream(StreamName::EntityChanges))
            .await
            .len(),
        0,
        "dry run writes nothing"
    );

    let mut seen = 0;
    let first = migrate(&store, &keys, &dir, false, 1 << 20, |_, _, _| seen += 1)
        .await
        .expect("run");
    assert_eq!(seen, 7, "progress after every file");
    assert_eq!((first.imported, first.unchanged), (6, 0));
    assert_eq!(first.skipped.len(), 1);
    assert!(
        first.skipped[0]
            .0
            .ends_with("memories/daily/2025-07-02.json"),
        "{:?}",
        first.skipped
    );
    let status = std::fs::read_to_string(dir.join("quantum_states/status.json")).expect("file");
    let (doc, version) = stored(&c, &keys, &keys.quantum_status()).await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&doc.expect("doc")).expect("json"),
        serde_json::from_str::<serde_json::Value>(&status).expect("json")
    );
    assert_eq!(version, 1);
    let ttl: i64 = fred::prelude::KeysInterface::ttl(&c, keys.quantum_session_current())
        .await
        .expect("ttl");
    assert!(ttl > 0, "the session has its 24 h TTL");
    let daily = EntityTarget::Daily {
        date: "2025-07-02".into(),
    }
    .key(&keys);
    assert_eq!(
        stored(&c, &keys, &daily).await,
        (None, 0),
        "the broken file is not half-imported"
    );

    let changes = read_all(&c, &keys.stream(StreamName::EntityChanges))
        .await
        .len();
    let second = migrate(&store, &keys, &dir, false, 1 << 20, |_, _, _| {})
        .await
        .expect("run");
    assert_eq!((second.imported, second.unchanged), (0, 6));
    assert_eq!(
        read_all(&c, &keys.stream(StreamName::EntityChanges))
            .await
            .len(),
        changes,
        "nothing changed"
    );
    assert_eq!(stored(&c, &keys, &keys.quantum_status()).await.1, 1);
}
