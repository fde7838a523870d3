//! The partitioned component with a small test logic: the fence (a commit from a stale position
//! writes nothing), lease tokens (a non-holder cannot renew), one worker per partition even while
//! a lost worker drains, leases kept while workers drain at shutdown, wrong-partition entries
//! dead-lettered, and the safe trim.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fred::prelude::*;
use kitbash_runtime::config::Config;
use kitbash_runtime::partition::commit::{self, Advance, Commit, CommitResult};
use kitbash_runtime::partition::{Effects, Entry, PartitionLogic, PartitionSpec, Transient};
use kitbash_runtime::{Components, DaemonContext, lease, shutdown};
use kitbash_schema::messages::Tick;
use kitbash_schema::streams::partition_of;
use kitbash_schema::{DaemonKind, Keys, StreamName};
use kitbash_testkit::RedisServer;
use tokio::sync::watch;

use crate::support::*;

/// Counts ticks per symbol; each batch adds `HINCRBY effects symbol n` to its commit. When the
/// gate is closed, `apply` waits for it (a slow batch).
#[derive(Clone)]
struct Counter {
    effects: String,
    /// Workers started (each restore begins with `empty`).
    started: Arc<AtomicUsize>,
    /// Batches in `apply` right now.
    applying: Arc<AtomicUsize>,
    gate: watch::Receiver<bool>,
}

impl PartitionLogic for Counter {
    type Message = Tick;
    type State = HashMap<String, u64>;

    fn route_key<'a>(&self, m: &'a Tick) -> &'a str {
        &m.symbol
    }
    fn empty(&self, _p: u32) -> Self::State {
        self.started.fetch_add(1, Ordering::SeqCst);
        HashMap::new()
    }
    fn restore_item(&self, s: &mut Self::State, key: &str, b: &[u8]) -> Result<(), String> {
        let n = std::str::from_utf8(b)
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or("not a count")?;
        s.insert(key.to_owned(), n);
        Ok(())
    }
    fn replay(&self, s: &mut Self::State, e: &Entry<Tick>) {
        *s.entry(e.message.symbol.clone()).or_default() += 1;
    }
    async fn apply(
        &self,
        s: &mut Self::State,
        batch: &[Entry<Tick>],
        out: &mut Effects,
    ) -> Result<Vec<Result<(), String>>, Transient> {
        self.applying.fetch_add(1, Ordering::SeqCst);
        let mut gate = self.gate.clone();
        let _ = gate.wait_for(|open| *open).await;
        for e in batch {
            *s.entry(e.message.symbol.clone()).or_default() += 1;
            out.commit.push(
                &self.effects,
                vec![
                    "HINCRBY".into(),
                    self.effects.as_str().into(),
                    e.message.symbol.as_str().into(),
                    1.into(),
                ],
            );
        }
        self.applying.fetch_sub(1, Ordering::SeqCst);
        Ok(vec![Ok(()); batch.len()])
    }
    fn encode_item(&self, s: &Self::State, key: &str) -> Option<Vec<u8>> {
        s.get(key).map(|n| n.to_string().into_bytes())
    }
}

const LEASE_MS: u64 = 600;

fn spec(partitions: u32) -> PartitionSpec {
    PartitionSpec {
        stream: StreamName::Ticks,
        partitions,
        lease_ms: LEASE_MS,
        snapshot_ms: 100,
        snapshot_max_items: 16,
        // Tiny: every commit writes one item, so recovery is checked with snapshots spread
        // over many commits (a round of pieces).
        snapshot_max_bytes: 64,
        // Small: batches shrink to MIN_READ entries after a few commits and grow back.
        commit_max_bytes: 2_048,
        snapshot_item_ms: 0,
        stream_max: 0,
        group: "test",
    }
}

fn config(url: &str, keys: &Keys) -> Config {
    let mut c = Config::default();
    c.redis.url = url.to_owned();
    c.redis.namespace = keys.namespace().to_string();
    c.redis.command_timeout_ms = 2_000;
    c.admin.listen = String::new();
    c.fleet.heartbeat_ms = 200;
    c.consumer.block_ms = 100;
    c
}

fn tick(symbol: &str, i: u64) -> Tick {
    Tick {
        symbol: symbol.into(),
        price: 100.0,
        size: 1.0,
        trades: i,
        ts: i as f64,
    }
}

struct Running {
    task: tokio::task::JoinHandle<Result<(), kitbash_runtime::RuntimeError>>,
    stop: kitbash_runtime::CancellationToken,
    instance: String,
}

async fn start(url: &str, keys: &Keys, logic: Counter, partitions: u32) -> Running {
    let (signals, _) = shutdown::manual();
    let stop = signals.shutdown.clone();
    let ctx = DaemonContext::start(DaemonKind::Example, config(url, keys), signals)
        .await
        .expect("context");
    let instance = ctx.instance.clone();
    let task = tokio::spawn(async move {
        let r = Components::new(&ctx)
            .partitioned(spec(partitions), logic)
            .run()
            .await;
        ctx.finish().await;
        r
    });
    Running {
        task,
        stop,
        instance,
    }
}

fn counter(keys: &Keys, gate: watch::Receiver<bool>) -> Counter {
    Counter {
        effects: keys.stream(StreamName::Ticks(0)) + ":effects",
        started: Arc::default(),
        applying: Arc::default(),
        gate,
    }
}

async fn holder(c: &Client, keys: &Keys) -> Option<String> {
    lease::holder(c, &keys.lease(StreamName::Ticks(0)))
        .await
        .expect("get")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_from_a_stale_position_is_refused_and_writes_nothing() {
    let server = RedisServer::start().expect("redis");
    let keys = keys();
    let r = connect(&server.url()).await;
    let cp = keys.checkpoint(StreamName::Ticks(0));
    let effect = keys.stream(StreamName::Ticks(0)) + ":effects";
    let write = |v: &str| {
        let mut c = Commit::default();
        c.push(
            &effect,
            vec!["SET".into(), effect.as_str().into(), v.into()],
        );
        c
    };
    let adv = |expected: &'static str, new_last: &'static str| Advance {
        expected,
        new_last,
        snapshot: None,
        consumed: 1,
    };
    // The new owner commits 1-0 then 2-0.
    let ok = commit::run(&r.client, &cp, "new", adv("", "1-0"), write("new-1")).await;
    assert_eq!(ok.expect("commit"), CommitResult::Applied);
    let ok = commit::run(&r.client, &cp, "new", adv("1-0", "2-0"), write("new-2")).await;
    assert_eq!(ok.expect("commit"), CommitResult::Applied);
    // The paused old owner wakes up believing the checkpoint is still at 1-0.
    let stale = commit::run(&r.client, &cp, "old", adv("1-0", "2-0"), write("old")).await;
    assert_eq!(
        stale.expect("commit"),
        CommitResult::Conflict("2-0".into()),
        "the fence refuses a commit from a stale position"
    );
    let v: String = r.client.get(&effect).await.expect("get");
    assert_eq!(v, "new-2", "a refused commit writes no effect");
    let owner: String = r
        .client
        .hget(&cp, Keys::CHECKPOINT_OWNER)
        .await
        .expect("hget");
    assert_eq!(owner, "new");
}

/// fred re-sends a command whose reply a reconnect lost (`max_command_attempts`): the second
/// send of an applied commit finds the checkpoint already at its new position, moved by the same
/// owner — that is "applied", not "fenced" (no restore, no fenced count), and its effects are not
/// run twice. Seen red while a conflict at our own new position counted as a fence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_commit_whose_first_send_applied_is_applied_not_fenced() {
    let server = RedisServer::start().expect("redis");
    let keys = keys();
    let r = connect(&server.url()).await;
    let cp = keys.checkpoint(StreamName::Ticks(0));
    let effect = keys.stream(StreamName::Ticks(0)) + ":effects";
    let incr = || {
        let mut c = Commit::default();
        c.push(&effect, vec!["INCR".into(), effect.as_str().into()]);
        c
    };
    let adv = Advance {
        expected: "",
        new_last: "1-0",
        snapshot: None,
        consumed: 1,
    };
    let first = commit::run(&r.client, &cp, "me#1", adv, incr()).await;
    assert_eq!(first.expect("commit"), CommitResult::Applied);
    let resent = commit::run(&r.client, &cp, "me#1", adv, incr()).await;
    assert_eq!(resent.expect("commit"), CommitResult::Applied);
    let n: i64 = r.client.get(&effect).await.expect("get");
    assert_eq!(n, 1, "the re-sent commit ran no effect");
    // Another owner's commit to the same position is still refused.
    let other = commit::run(&r.client, &cp, "other#1", adv, incr()).await;
    assert_eq!(other.expect("commit"), CommitResult::Conflict("1-0".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_holder_renews_or_releases_a_lease() {
    let server = RedisServer::start().expect("redis");
    let keys = keys();
    let r = connect(&server.url()).await;
    let key = keys.lease(StreamName::Ticks(0));
    let owner = lease::token("a");
    let earlier = lease::token("a"); // the same process, an earlier acquisition
    assert!(
        lease::acquire(&r.client, &key, &owner, 5_000)
            .await
            .expect("acquire")
    );
    assert!(
        !lease::acquire(&r.client, &key, "b#1", 5_000)
            .await
            .expect("acquire")
    );
    for stranger in ["b#1", earlier.as_str()] {
        assert!(
            !lease::renew(&r.client, &key, stranger, 60_000)
                .await
                .expect("renew"),
            "{stranger} is not the holder"
        );
        assert!(
            !lease::release(&r.client, &key, stranger)
                .await
                .expect("release")
        );
    }
    assert_eq!(
        holder(&r.client, &keys).await.as_deref(),
        Some(owner.as_str())
    );
    let ttl: i64 = r.client.pttl(&key).await.expect("pttl");
    assert!(ttl <= 5_000, "a stranger's renew did not extend it: {ttl}");
    assert!(
        lease::renew(&r.client, &key, &owner, 5_000)
            .await
            .expect("renew")
    );
    assert!(
        lease::release(&r.client, &key, &owner)
            .await
            .expect("release")
    );
    assert_eq!(holder(&r.client, &keys).await, None);
}

/// The lease expires (here: is deleted) while its worker is stuck in a batch. The process must
/// not start a second worker for the partition while the first drains, and the first, when it
/// finally exits, must not release the lease a newer worker holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_never_gives_a_partition_two_workers_in_one_process() {
    let server = RedisServer::start().expect("redis");
    let keys = keys();
    let r = connect(&server.url()).await;
    let (open, gate) = watch::channel(false);
    let logic = counter(&keys, gate);
    let (started, applying) = (logic.started.clone(), logic.applying.clone());
    let inst = start(&server.url(), &keys, logic, 1).await;
    xadd_msg(&r, &keys, StreamName::Ticks(0), &tick("SPY", 1)).await;
    eventually("the worker is stuck in its batch", || async {
        applying.load(Ordering::SeqCst) == 1
    })
    .await;
    let first = holder(&r.client, &keys).await.expect("a lease");
    r.client
        .del::<(), _>(keys.lease(StreamName::Ticks(0)))
        .await
        .expect("del");
    // Several balancing rounds pass: the partition is free, but its lost worker still drains.
    let rounds = tokio::time::Instant::now() + Duration::from_millis(4 * LEASE_MS);
    while tokio::time::Instant::now() < rounds {
        assert_eq!(
            started.load(Ordering::SeqCst),
            1,
            "no second worker while the first drains"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The first worker finishes; only then a new one starts, under a new lease token.
    open.send_replace(true);
    eventually("a new worker took the partition", || async {
        started.load(Ordering::SeqCst) == 2
    })
    .await;
    let second = holder(&r.client, &keys)
        .await
        .expect("the new worker's lease");
    assert_ne!(second, first);
    assert_eq!(lease::instance_of(&second), inst.instance);
    // It keeps it: the old worker's exit released nothing of the new worker's.
    for _ in 0..10 {
        assert_eq!(
            holder(&r.client, &keys).await.as_deref(),
            Some(second.as_str())
        );
        tokio::time::sleep(Duration::from_millis(LEASE_MS / 4)).await;
    }
    inst.stop.cancel();
    inst.task.await.expect("join").expect("run");
    let n: i64 = r
        .client
        .hget(keys.stream(StreamName::Ticks(0)) + ":effects", "SPY")
        .await
        .expect("hget");
    assert_eq!(n, 1, "the tick was applied once");
}

/// SIGTERM while a batch takes longer than the lease: the lease stays renewed until the worker
/// has committed and exited, then it is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_renewed_until_draining_workers_exit() {
    let server = RedisServer::start().expect("redis");
    let keys = keys();
    let r = connect(&server.url()).await;
    let (open, gate) = watch::channel(false);
    let logic = counter(&keys, gate);
    let applying = logic.applying.clone();
    let inst = start(&server.url(), &keys, logic, 1).await;
    xadd_msg(&r, &keys, StreamName::Ticks(0), &tick("SPY", 1)).await;
    eventually("the worker is in its batch", || async {
        applying.load(Ordering::SeqCst) == 1
    })
    .await;
    let token = holder(&r.client, &keys).await.expect("lease");
    inst.stop.cancel();
    // Three lease periods of draining: the lease must still be ours throughout.
    let until = tokio::time::Instant::now() + Duration::from_millis(3 * LEASE_MS);
    while tokio::time::Instant::now() < until {
        assert_eq!(
            holder(&r.client, &keys).await.as_deref(),
            Some(token.as_str()),
            "lease kept while the worker drains"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    open.send_replace(true);
    inst.task.await.expect("join").expect("run");
    assert_eq!(
        holder(&r.client, &keys).await,
        None,
        "released after the drain"
    );
    let n: i64 = r
        .client
        .hget(keys.stream(StreamName::Ticks(0)) + ":effects", "SPY")
        .await
        .expect("hget");
    assert_eq!(n, 1, "the batch in hand was committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_in_the_wrong_partition_is_dead_lettered_with_the_expected_one() {
    let server = RedisServer::start().expect("redis");
    let keys = keys();
    let r = connect(&server.url()).await;
    let (_open, gate) = watch::channel(true);
    let logic = counter(&keys, gate);
    // Two partitions: find a symbol of partition 1 and write it to partition 0.
    let stray = (0..)
        .map(|i| format!("S{i}"))
        .find(|s| partition_of(s, 2) == 1)
        .expect("a symbol");
    let home = (0..)
        .map(|i| format!("S{i}"))
        .find(|s| partition_of(s, 2) == 0)
        .expect("a symbol");
    xadd_msg(&r, &keys, StreamName::Ticks(0), &tick(&stray, 1)).await;
    xadd_msg(&r, &keys, StreamName::Ticks(0), &tick(&home, 2)).await;
    let inst = start(&server.url(), &keys, logic, 2).await;
    eventually("the good tick applied", || async {
        let n: Option<i64> = r
            .client
            .hget(
                keys.stream(StreamName::Ticks(0)) + ":effects",
                home.as_str(),
            )
            .await
            .expect("hget");
        n == Some(1)
    })
    .await;
    inst.stop.cancel();
    inst.task.await.expect("join").expect("run");
    let letters = dead_letters(&r, &keys, StreamName::Ticks(0)).await;
    assert_eq!(letters.len(), 1);
    assert!(
        letters[0].reason.contains("belongs to partition 1 of 2"),
        "{}",
        letters[0].reason
    );
    let stray_n: Option<i64> = r
        .client
        .hget(
            keys.stream(StreamName::Ticks(0)) + ":effects",
            stray.as_str(),
        )
        .await
        .expect("hget");
    assert_eq!(stray_n, None, "the stray tick was not applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safe_trim_keeps_what_a_group_or_a_checkpoint_still_needs() {
    let server = RedisServer::start().expect("redis");
    let keys = keys();
    let r = connect(&server.url()).await;
    let s = StreamName::Queries;
    let key = keys.stream(s);
    let mut ids = Vec::new();
    for i in 0..300 {
        ids.push(xadd_msg(&r, &keys, s, &tick("SPY", i)).await);
    }
    // A group that has been delivered 200 entries and acknowledged the first 150.
    let _: () = r
        .client
        .xgroup_create(&key, "g", "0", false)
        .await
        .expect("group");
    let _: fred::types::Value = r
        .client
        .xreadgroup("g", "c", Some(200), None, false, &key, ">")
        .await
        .expect("read");
    let _: i64 = r
        .client
        .xack(&key, "g", ids[..150].to_vec())
        .await
        .expect("ack");
    let removed = kitbash_runtime::trim::safe_trim_for(&r.client, &[], &key, 10, &[])
        .await
        .expect("trim");
    let first: fred::types::Value = r
        .client
        .xrange(&key, "-", "+", Some(1))
        .await
        .expect("xrange");
    let first = kitbash_runtime::entries::parse_entries("XRANGE", &first).expect("entries");
    let first_id = first.first().map(|e| e.id.clone()).expect("entries remain");
    assert!(
        kitbash_runtime::entries::id_cmp(&first_id, &ids[150]).is_le(),
        "the oldest unacknowledged entry {} survives (first now {first_id})",
        ids[150]
    );
    assert!(removed <= 150);
    // A checkpoint floor lower than the group's position wins.
    let _: i64 = r
        .client
        .xack(&key, "g", ids[150..200].to_vec())
        .await
        .expect("ack");
    let _: fred::types::Value = r
        .client
        .xreadgroup("g", "c", Some(100), None, false, &key, ">")
        .await
        .expect("read");
    let _: i64 = r
        .client
        .xack(&key, "g", ids[200..].to_vec())
        .await
        .expect("ack");
    kitbash_runtime::trim::safe_trim_for(&r.client, &[], &key, 10, &[ids[250].clone()])
        .await
        .expect("trim");
    let left: u64 = r.client.xlen(&key).await.expect("xlen");
    assert!(left >= 50, "entries from the floor on survive: {left}");
}
