//! `safe_trim` honours `StreamName::groups()`: no trim while a required group is missing, and
//! never past any existing group's oldest pending entry; the archive (an observer) bounds a
//! trim when its group exists and never blocks one when it does not.

use fred::prelude::*;
use kitbash_runtime::Redis;
use kitbash_runtime::entries::{id_cmp, parse_entries};
use kitbash_runtime::trim::safe_trim;
use kitbash_schema::messages::Tick;
use kitbash_schema::{Keys, StreamName};
use kitbash_testkit::RedisServer;

use crate::support::*;

fn tick(i: u64) -> Tick {
    Tick {
        symbol: "SPY".into(),
        price: 100.0,
        size: 1.0,
        trades: i,
        ts: i as f64,
    }
}

async fn fill(r: &Redis, keys: &Keys, n: u64) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(xadd_msg(r, keys, StreamName::Queries, &tick(i)).await);
    }
    ids
}

async fn first_id(r: &Redis, key: &str) -> String {
    let v: fred::types::Value = r
        .client
        .xrange(key, "-", "+", Some(1))
        .await
        .expect("xrange");
    let e = parse_entries("XRANGE", &v).expect("entries");
    e.first().map(|e| e.id.clone()).expect("entries remain")
}

/// Reads `n` entries for `group` and acknowledges the first `ack` of them.
async fn read_and_ack(r: &Redis, key: &str, group: &str, ids: &[String], n: u64, ack: usize) {
    let _: fred::types::Value = r
        .client
        .xreadgroup(group, "c", Some(n), None, false, key, ">")
        .await
        .expect("read");
    if ack > 0 {
        let _: i64 = r
            .client
            .xack(key, group, ids[..ack].to_vec())
            .await
            .expect("ack");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_required_group_does_not_exist_is_not_trimmed() {
    let server = RedisServer::start().expect("redis");
    let keys = keys();
    let r = connect(&server.url()).await;
    let s = StreamName::Queries;
    let key = keys.stream(s);
    let ids = fill(&r, &keys, 300).await;
    // The archive (an observer) has read and acknowledged everything; decay's group, which
    // must see every query, does not exist yet.
    let _: () = r
        .client
        .xgroup_create(&key, "archive", "0", false)
        .await
        .expect("group");
    read_and_ack(&r, &key, "archive", &ids, 300, 300).await;
    let removed = safe_trim(&r.client, s, &key, 10, &[]).await.expect("trim");
    let len: u64 = r.client.xlen(&key).await.expect("xlen");
    assert_eq!(
        (removed, len),
        (0, 300),
        "nothing trimmed before decay's group exists"
    );
    // Once decay's group exists and has caught up, the stream is trimmed.
    let _: () = r
        .client
        .xgroup_create(&key, "decay", "$", false)
        .await
        .expect("group");
    let removed = safe_trim(&r.client, s, &key, 10, &[]).await.expect("trim");
    let len: u64 = r.client.xlen(&key).await.expect("xlen");
    assert!(
        removed > 0 && len < 300,
        "trimmed once every required group exists: {removed}, {len}"
    );
}

/// The archive is an observer: a fleet without one still bounds its streams (this was a
/// regression — every stream required the archive's group, so none was ever trimmed), and
/// while its group exists it holds the trim back like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_archive_group_does_not_hold_trimming_back_but_an_existing_one_does() {
    let server = RedisServer::start().expect("redis");
    let keys = keys();
    let r = connect(&server.url()).await;
    let s = StreamName::Queries;
    let key = keys.stream(s);
    let ids = fill(&r, &keys, 300).await;
    let _: () = r
        .client
        .xgroup_create(&key, "decay", "0", false)
        .await
        .expect("group");
    read_and_ack(&r, &key, "decay", &ids, 300, 300).await;
    let removed = safe_trim(&r.client, s, &key, 10, &[]).await.expect("trim");
    assert!(removed > 0, "no archive group: trimmed to the cap");
    // An archive group that has acknowledged only up to a point bounds the next trim there.
    let more = fill(&r, &keys, 300).await;
    let _: () = r
        .client
        .xgroup_create(&key, "archive", &more[0], false)
        .await
        .expect("group");
    read_and_ack(&r, &key, "archive", &more[1..], 299, 50).await;
    read_and_ack(&r, &key, "decay", &more, 300, 300).await;
    safe_trim(&r.client, s, &key, 10, &[]).await.expect("trim");
    let first = first_id(&r, &key).await;
    assert!(
        id_cmp(&first, &more[51]).is_le(),
        "the archive's oldest pending entry {} survives (first now {first})",
        more[51]
    );
}

/// Every stream's tick/partition/output streams have no required group: nothing waits for a
/// daemon that is not part of the fleet.
#[test]
fn only_processing_groups_are_required() {
    use kitbash_schema::DaemonKind;
    for s in [
        StreamName::Ticks(0),
        StreamName::EntityPart(0),
        StreamName::Physics,
        StreamName::EntityChanges,
    ] {
        assert!(s.groups().is_empty(), "{s} requires {:?}", s.groups());
    }
    assert_eq!(StreamName::Queries.groups(), &[DaemonKind::Decay.group()]);
    // The archive's memory-token indexer processes the memory stream in a group of its own.
    assert_eq!(
        StreamName::Memory.groups(),
        &[kitbash_schema::Group::MEMORY_INDEX]
    );
    for s in [
        StreamName::Queries,
        StreamName::Physics,
        StreamName::Ticks(3),
    ] {
        assert!(!s.groups().contains(&DaemonKind::Archive.group()));
        assert_eq!(s.observers(), &[DaemonKind::Archive]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimming_stops_at_a_required_groups_oldest_pending_entry() {
    let server = RedisServer::start().expect("redis");
    let keys = keys();
    let r = connect(&server.url()).await;
    let s = StreamName::Queries;
    let key = keys.stream(s);
    let ids = fill(&r, &keys, 300).await;
    for g in ["decay", "archive"] {
        let _: () = r
            .client
            .xgroup_create(&key, g, "0", false)
            .await
            .expect("group");
    }
    // archive is done with everything; decay has been delivered everything but acknowledged
    // only the first 100: entry 100 is its oldest pending one.
    read_and_ack(&r, &key, "archive", &ids, 300, 300).await;
    read_and_ack(&r, &key, "decay", &ids, 300, 100).await;
    safe_trim(&r.client, s, &key, 10, &[]).await.expect("trim");
    let first = first_id(&r, &key).await;
    assert!(
        id_cmp(&first, &ids[100]).is_le(),
        "decay's oldest pending entry {} survives (first now {first})",
        ids[100]
    );
}
