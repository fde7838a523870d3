//! The archive's trim (`trim::trim_to_floor`, one script) against random reader states: groups
//! present or missing (required or not), pending sets, delivery positions, a partition
//! checkpoint, the archive's progress and the retention. After the trim no entry that is
//! pending, undelivered to a group, needed by the checkpoint, not yet archived or within the
//! retention is gone — and everything below the first such entry is (so the property cannot
//! pass by trimming nothing). Also: the claim makes the two trimmers exclusive.

use fred::prelude::*;
use fred::types::Value;
use kitbash_runtime::trim::{
    TrimMode, TrimPlan, claim, release_claim, renew_claim, safe_trim, successor, trim_to_floor,
};
use kitbash_schema::{DaemonKind, Keys, StreamName};
use kitbash_testkit::RedisServer;
use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestCaseError, TestRunner};

use crate::support::*;

/// The groups a case may create, by kind (their names are the kinds' names).
const KINDS: [DaemonKind; 3] = [DaemonKind::Decay, DaemonKind::Ghost, DaemonKind::Entity];

#[derive(Clone, Debug)]
struct GroupState {
    present: bool,
    required: bool,
    /// Entries delivered to the group (the first `delivered`).
    delivered: usize,
    /// Which delivered entries stay pending (the rest are acknowledged).
    pending: Vec<bool>,
}

#[derive(Clone, Debug)]
struct Case {
    n: usize,
    groups: Vec<GroupState>,
    /// `None`: not a partitioned stream; `Some(None)`: the checkpoint has no `snap_id` yet;
    /// `Some(Some(k))`: `snap_id` = entry k.
    checkpoint: Option<Option<usize>>,
    /// Entries archived (the first `archived`).
    archived: usize,
    retention_ms: u64,
    retention_entries: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..40).prop_flat_map(|n| {
        let group = (
            any::<bool>(),
            any::<bool>(),
            0..=n,
            proptest::collection::vec(prop::bool::weighted(0.2), n),
        )
            .prop_map(|(present, required, delivered, pending)| GroupState {
                present,
                required,
                delivered,
                pending,
            });
        (
            Just(n),
            proptest::collection::vec(group, 0..=3),
            prop_oneof![
                2 => Just(None),
                1 => Just(Some(None)),
                2 => (0..n).prop_map(|k| Some(Some(k))),
            ],
            prop_oneof![1 => Just(0usize), 4 => 0..=n],
            prop_oneof![1 => Just(0u64), 1 => 1u64..200],
            prop_oneof![1 => Just(0u64), 1 => 1u64..40],
        )
            .prop_map(
                |(n, groups, checkpoint, archived, retention_ms, retention_entries)| Case {
                    n,
                    groups,
                    checkpoint,
                    archived,
                    retention_ms,
                    retention_entries,
                },
            )
    })
}

/// Entry i: ms 1000 + 5i, seq i % 2 (ids increase; retention is in these ms).
fn id(i: usize) -> String {
    format!("{}-{}", 1000 + 5 * i, i % 2)
}

/// The rules of the model, each of which the cases must exercise.
const RULES: [&str; 6] = [
    "missing group",
    "group",
    "checkpoint",
    "archive",
    "retention_ms",
    "retention_entries",
];

/// The model: the first entry some reader still needs (`n` when none does), leaving out the
/// rule `skip` (to tell which rules bind).
fn first_needed_without(c: &Case, skip: Option<&str>) -> usize {
    let on = |rule: &str| skip != Some(rule);
    let mut need = c.n;
    for g in &c.groups {
        if !g.present {
            if g.required && on("missing group") {
                need = 0;
            }
            continue;
        }
        if !on("group") {
            continue;
        }
        need = need.min(g.delivered);
        if let Some(p) = (0..g.delivered).find(|&i| g.pending[i]) {
            need = need.min(p);
        }
    }
    if on("checkpoint") {
        match c.checkpoint {
            Some(None) => need = 0,
            Some(Some(k)) => need = need.min(k),
            None => {}
        }
    }
    if on("archive") {
        need = need.min(c.archived);
    }
    let last_ms = 1000 + 5 * (c.n as u64 - 1);
    if c.retention_ms > 0 && on("retention_ms") {
        let keep_from = last_ms.saturating_sub(c.retention_ms);
        let first = (0..c.n)
            .find(|&i| 1000 + 5 * i as u64 >= keep_from)
            .unwrap_or(c.n);
        need = need.min(first);
    }
    if c.retention_entries > 0 && on("retention_entries") {
        need = need.min(c.n.saturating_sub(c.retention_entries as usize));
    }
    need
}

fn first_needed(c: &Case) -> usize {
    first_needed_without(c, None)
}

async fn run_case(client: &Client, keys: &Keys, no: usize, c: &Case) -> Result<(), TestCaseError> {
    let s = StreamName::Ticks(no as u32);
    let key = keys.stream(s);
    let checkpoint = keys.checkpoint(s);
    let claim_key = keys.trim_claim(s);
    for i in 0..c.n {
        let _: String = client
            .xadd(
                &key,
                false,
                None,
                id(i).as_str(),
                vec![("i", i.to_string())],
            )
            .await
            .expect("xadd");
    }
    for (g, kind) in c.groups.iter().zip(KINDS) {
        if !g.present {
            continue;
        }
        let name = kind.group().as_str();
        let _: Value = client
            .xgroup_create(&key, name, "0", false)
            .await
            .expect("group");
        if g.delivered > 0 {
            let _: Value = client
                .xreadgroup(name, "c", Some(g.delivered as u64), None, false, &key, ">")
                .await
                .expect("read");
        }
        let acked: Vec<String> = (0..g.delivered)
            .filter(|&i| !g.pending[i])
            .map(id)
            .collect();
        if !acked.is_empty() {
            let _: i64 = client.xack(&key, name, acked).await.expect("ack");
        }
    }
    if let Some(Some(k)) = c.checkpoint {
        let _: () = client
            .hset(&checkpoint, (Keys::CHECKPOINT_SNAP_ID, id(k)))
            .await
            .expect("checkpoint");
    }
    let required: Vec<kitbash_schema::Group> = c
        .groups
        .iter()
        .zip(KINDS)
        .filter(|(g, _)| g.required)
        .map(|(_, k)| k.group())
        .collect();
    let archived = if c.archived == 0 {
        "0-0".to_owned()
    } else {
        successor(&id(c.archived - 1))
    };
    claim(client, &claim_key, "me#1", 60_000)
        .await
        .expect("claim");
    let plan = TrimPlan {
        stream_key: &key,
        claim_key: &claim_key,
        checkpoint_key: c.checkpoint.map(|_| checkpoint.as_str()),
        required: &required,
        floor: Some((&archived, "archive")),
        retention_ms: c.retention_ms,
        retention_entries: c.retention_entries,
    };
    let dry = trim_to_floor(client, &plan, TrimMode::Dry)
        .await
        .expect("dry");
    let report = trim_to_floor(
        client,
        &plan,
        TrimMode::Owner {
            token: "me#1",
            acked: false,
        },
    )
    .await
    .expect("trim");
    let left: Value = client.xrange(&key, "-", "+", None).await.expect("xrange");
    let left: Vec<String> = kitbash_runtime::entries::parse_entries("XRANGE", &left)
        .expect("entries")
        .into_iter()
        .map(|e| e.id)
        .collect();
    let need = first_needed(c);
    let expected: Vec<String> = (need..c.n).map(id).collect();
    prop_assert_eq!(
        &left,
        &expected,
        "kept exactly from the first needed entry {} (floor {:?} held by {})",
        need,
        report.floor,
        report.holder
    );
    prop_assert_eq!(report.removed, Some(need as u64));
    prop_assert_eq!(dry.floor, report.floor, "the dry run finds the same floor");
    Ok(())
}

#[test]
fn trimming_never_drops_an_entry_a_reader_the_archive_or_the_retention_still_needs() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = RedisServer::start().expect("redis");
    let keys = keys();
    let r = rt.block_on(connect(&server.url()));
    let mut runner = TestRunner::new(PropConfig {
        cases: 256,
        ..PropConfig::default()
    });
    let counter = std::sync::atomic::AtomicUsize::new(0);
    let trimmed = std::sync::atomic::AtomicUsize::new(0);
    // How often each rule alone held the floor lower than the others would have.
    let binding = std::sync::Mutex::new([0usize; RULES.len()]);
    runner
        .run(&case(), |c| {
            let no = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let need = first_needed(&c);
            if need > 0 {
                trimmed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            for (i, rule) in RULES.iter().enumerate() {
                if first_needed_without(&c, Some(rule)) > need {
                    binding.lock().expect("tally")[i] += 1;
                }
            }
            rt.block_on(run_case(&r.client, &keys, no, &c))
        })
        .expect("property");
    // The cases exercise both sides (some trim nothing, many trim something) and every rule
    // holds the floor in some of them, so leaving any rule out of the script fails the test.
    let trimmed = trimmed.into_inner();
    assert!(trimmed > 20, "only {trimmed} cases could trim");
    let binding = binding.into_inner().expect("tally");
    for (rule, n) in RULES.iter().zip(binding) {
        assert!(n >= 3, "the rule {rule:?} held the floor in only {n} cases");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_archive_holds_the_claim_the_streams_owner_trims_nothing() {
    let server = RedisServer::start().expect("redis");
    let keys = keys();
    let r = connect(&server.url()).await;
    let s = StreamName::Physics;
    let (key, claim_key) = (keys.stream(s), keys.trim_claim(s));
    for i in 0..1000 {
        let _: String = r
            .client
            .xadd(
                &key,
                false,
                None,
                id(i).as_str(),
                vec![("i", i.to_string())],
            )
            .await
            .expect("xadd");
    }
    claim(&r.client, &claim_key, "archive-a#1", 60_000)
        .await
        .expect("claim");
    let removed = safe_trim(&r.client, s, &key, 10, &[]).await.expect("trim");
    let len: u64 = r.client.xlen(&key).await.expect("xlen");
    assert_eq!(
        (removed, len),
        (0, 1000),
        "feynman's bound yields to the claim"
    );
    // Another archive instance (a stale lease holder) is refused too.
    let plan = TrimPlan {
        stream_key: &key,
        claim_key: &claim_key,
        checkpoint_key: None,
        required: &[],
        floor: Some(("2000-0", "archive")),
        retention_ms: 0,
        retention_entries: 0,
    };
    let stale = trim_to_floor(
        &r.client,
        &plan,
        TrimMode::Owner {
            token: "archive-b#9",
            acked: false,
        },
    )
    .await
    .expect("trim");
    assert_eq!(stale.removed, None, "{stale:?}");
    assert!(
        !renew_claim(&r.client, &claim_key, "archive-b#9", 60_000)
            .await
            .expect("renew")
    );
    // The holder trims; after it lets go the owner's bound applies again.
    let mine = trim_to_floor(
        &r.client,
        &plan,
        TrimMode::Owner {
            token: "archive-a#1",
            acked: false,
        },
    )
    .await
    .expect("trim");
    assert_eq!(mine.removed, Some(200), "{mine:?}");
    let held: Vec<String> = r
        .client
        .hmget(&claim_key, vec![Keys::TRIM_FLOOR, Keys::TRIM_HOLDER])
        .await
        .expect("claim fields");
    assert_eq!(held, ["2000-0", "archive"]);
    assert!(
        release_claim(&r.client, &claim_key, "archive-a#1")
            .await
            .expect("release")
    );
    let removed = safe_trim(&r.client, s, &key, 10, &[]).await.expect("trim");
    assert!(removed > 0, "the owner trims again once the claim is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xtrim_acked_is_detected_and_absent_on_redis_7() {
    let server = RedisServer::start().expect("redis");
    let keys = keys();
    let r = connect(&server.url()).await;
    let key = keys.stream(StreamName::Queries);
    let (major, minor) = kitbash_runtime::redis::server_version(&r.client)
        .await
        .expect("version");
    let acked = kitbash_runtime::trim::supports_acked(&r.client, &key)
        .await
        .expect("probe");
    assert_eq!(acked, (major, minor) >= (8, 2), "redis {major}.{minor}");
    let exists: u64 = r.client.exists(&key).await.expect("exists");
    assert_eq!(exists, 0, "the probe creates nothing");
}

/// `retention_entries` reads only the ids it lets go, at most 10,000 per trim: a backlog is
/// trimmed over several trims, and the newest entries are always kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_entries_reads_at_most_ten_thousand_ids_per_trim() {
    let server = RedisServer::start().expect("redis");
    let keys = keys();
    let r = connect(&server.url()).await;
    let s = StreamName::Physics;
    let (key, claim_key) = (keys.stream(s), keys.trim_claim(s));
    let _: Value = r
        .client
        .eval(
            "for i = 1, 25000 do redis.call('XADD', KEYS[1], i .. '-0', 'i', i) end return 1",
            vec![key.clone()],
            Vec::<String>::new(),
        )
        .await
        .expect("fill");
    claim(&r.client, &claim_key, "a#1", 60_000)
        .await
        .expect("claim");
    let plan = TrimPlan {
        stream_key: &key,
        claim_key: &claim_key,
        checkpoint_key: None,
        required: &[],
        floor: Some(("999999-0", "archive")),
        retention_ms: 0,
        retention_entries: 1_000,
    };
    let mode = TrimMode::Owner {
        token: "a#1",
        acked: false,
    };
    let mut removed = Vec::new();
    for _ in 0..4 {
        let t = trim_to_floor(&r.client, &plan, mode).await.expect("trim");
        removed.push(t.removed.unwrap_or(0));
    }
    assert_eq!(removed, [10_000, 10_000, 4_000, 0]);
    let len: u64 = r.client.xlen(&key).await.expect("xlen");
    assert_eq!(len, 1_000);
    let t = trim_to_floor(&r.client, &plan, TrimMode::Dry)
        .await
        .expect("dry");
    assert_eq!(
        (t.floor.as_deref(), t.holder.as_str()),
        (Some("0-0"), "retention_entries")
    );
}

/// An archive killed with `kill -9` never releases its claim: the claim expires with its lease
/// and the stream's owner trims again, so the stream stays bounded without the archive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_claim_expires_and_the_owner_trims_again() {
    let server = RedisServer::start().expect("redis");
    let keys = keys();
    let r = connect(&server.url()).await;
    let s = StreamName::Physics;
    let (key, claim_key) = (keys.stream(s), keys.trim_claim(s));
    for i in 0..1000 {
        let _: String = r
            .client
            .xadd(
                &key,
                false,
                None,
                id(i).as_str(),
                vec![("i", i.to_string())],
            )
            .await
            .expect("xadd");
    }
    claim(&r.client, &claim_key, "dead#1", 300)
        .await
        .expect("claim");
    assert_eq!(
        safe_trim(&r.client, s, &key, 10, &[]).await.expect("trim"),
        0
    );
    kitbash_testkit::support::eventually("the owner trims once the claim expired", || async {
        safe_trim(&r.client, s, &key, 10, &[]).await.expect("trim") > 0
    })
    .await;
}
