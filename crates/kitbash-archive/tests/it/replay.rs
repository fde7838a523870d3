//! Archive → trim → replay gives back exactly the original entries (ids and bytes), JSON and
//! foreign entries too, across the seam between the archive and what Redis still holds.

use fred::prelude::*;
use kitbash_archive::replay::{self, Ids, Pace, Range, Source};
use kitbash_archive::store;
use kitbash_schema::StreamName;
use kitbash_testkit::RedisServer;

use crate::support::*;

const T: StreamName = StreamName::Ticks(0);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_then_trim_then_replay_gives_back_every_entry_exactly() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let (c, k) = (client(&server.url()).await, keys(&ns));
    let dir = tempfile::tempdir().expect("tmp");
    let key = k.stream(T);
    for f in tick_stream_bodies(300) {
        xadd(&c, &key, &f).await;
    }
    let mut cfg = config(&server.url(), &ns, dir.path());
    cfg.archive.streams = vec!["ticks:0".into()];
    cfg.archive.roll_entries = 100;
    let (signals, _) = kitbash_runtime::shutdown::manual();
    let stop = signals.shutdown.clone();
    let task = tokio::spawn(kitbash_archive::run(cfg, signals));
    let root = dir.path().join(&ns);
    eventually("archived", || async {
        store::read_all(&root, T).map(|v| v.len()).unwrap_or(0) == 300
    })
    .await;
    stop.cancel();
    task.await.expect("join").expect("run");
    // Fifty more that only Redis has, then the archived head trimmed away.
    for f in tick_stream_bodies(50) {
        xadd(&c, &key, &f).await;
    }
    let original = xrange(&c, &key).await;
    assert_eq!(original.len(), 350);
    let _: i64 = c
        .xtrim(&key, ("MINID", original[250].id.as_str()))
        .await
        .expect("xtrim");
    assert_eq!(xrange(&c, &key).await.len(), 100, "Redis keeps 250..350");

    let all = replay::select(&c, &root, T, &key, Range::default(), Source::Both)
        .await
        .expect("select");
    assert_eq!(all.entries, original, "the seam takes each entry once");
    assert_eq!((all.from_archive, all.from_redis), (300, 50));
    assert_eq!(
        replay::select(&c, &root, T, &key, Range::default(), Source::Archive)
            .await
            .expect("archive")
            .entries,
        original[..300].to_vec()
    );

    // Into a sandbox namespace with the original ids: the same stream, byte for byte.
    let sandbox = keys(&format!("{ns}-sandbox")).stream(T);
    let n = replay::write(&c, &sandbox, &all.entries, Ids::Original, Pace::Max, |_| {})
        .await
        .expect("write");
    assert_eq!(n, 350);
    assert_eq!(xrange(&c, &sandbox).await, original);
    // Again into the same stream: refused, naming the problem; nothing written.
    let err = replay::write(&c, &sandbox, &all.entries, Ids::Original, Pace::Max, |_| {})
        .await
        .expect_err("not fresh");
    assert!(err.to_string().contains("needs a fresh stream"), "{err}");
    assert_eq!(xrange(&c, &sandbox).await.len(), 350);

    // A slice by id into the live stream with new ids, each carrying its original id.
    let range = Range {
        from: Some(kitbash_archive::format::parse_id(&original[290].id).expect("id")),
        to: Some(kitbash_archive::format::parse_id(&original[309].id).expect("id")),
    };
    let slice = replay::select(&c, &root, T, &key, range, Source::Both)
        .await
        .expect("slice");
    assert_eq!(slice.entries, original[290..310].to_vec());
    replay::write(&c, &key, &slice.entries, Ids::New, Pace::Max, |_| {})
        .await
        .expect("live");
    let after = xrange(&c, &key).await;
    let replayed = &after[after.len() - 20..];
    for (r, o) in replayed.iter().zip(&original[290..310]) {
        let (last_k, last_v) = r.fields.last().expect("fields");
        assert_eq!(last_k.as_slice(), replay::REPLAY_OF.as_bytes());
        assert_eq!(last_v.as_slice(), o.id.as_bytes());
        assert_eq!(r.fields[..r.fields.len() - 1], o.fields[..]);
    }
}

/// Many pipelines in flight keep the entries in order: 10,000 entries (20 pipelines) with their ids (any
/// reordering would be an `XADD` error) and with new ids (each carrying its original, in
/// order), plus the recorded pace writing one at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_replay_keeps_every_entry_in_order() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let (c, k) = (client(&server.url()).await, keys(&ns));
    let entries = entries(tick_stream_bodies(10_000));
    let fresh = k.stream(T);
    let mut seen = Vec::new();
    let n = replay::write(&c, &fresh, &entries, Ids::Original, Pace::Max, |w| {
        seen.push(w)
    })
    .await
    .expect("write");
    assert_eq!(n, 10_000);
    assert_eq!(xrange(&c, &fresh).await, entries);
    assert!(seen.windows(2).all(|w| w[0] < w[1]) && seen.last() == Some(&10_000));
    let live = k.stream(StreamName::Queries);
    replay::write(&c, &live, &entries, Ids::New, Pace::Max, |_| {})
        .await
        .expect("new ids");
    let back = xrange(&c, &live).await;
    assert_eq!(back.len(), 10_000);
    for (r, o) in back.iter().zip(&entries) {
        assert_eq!(
            r.fields.last().map(|f| f.1.as_slice()),
            Some(o.id.as_bytes())
        );
    }
    // At 1000× the recorded pace : in order too.
    let paced = k.stream(StreamName::Crossings);
    replay::write(
        &c,
        &paced,
        &entries[..300],
        Ids::Original,
        Pace::Speed(1_000.0),
        |_| {},
    )
    .await
    .expect("paced");
    assert_eq!(xrange(&c, &paced).await, entries[..300].to_vec());
}

/// At full speed the replay writes on a connection of its own: logged in with the client's
/// password and database (nothing lands in database 0), every entry byte-identical, and the
/// first `XADD` Redis refuses ends it with Redis's message and how many went in before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_replay_logs_in_as_the_client_does_and_stops_at_a_refused_entry() {
    let server = RedisServer::builder()
        .requirepass("s3cret")
        .start()
        .expect("redis");
    let ns = kitbash_testkit::namespace();
    let c = client(&format!("{}/3", server.url())).await;
    let c0 = client(&server.url()).await;
    let key = keys(&ns).stream(T);
    let entries = entries(tick_stream_bodies(3_000));
    let n = replay::write(&c, &key, &entries, Ids::Original, Pace::Max, |_| {})
        .await
        .expect("write");
    assert_eq!(n, 3_000);
    assert_eq!(xrange(&c, &key).await, entries, "database 3, byte for byte");
    assert!(xrange(&c0, &key).await.is_empty(), "nothing in database 0");

    // An id below its predecessor: Redis refuses it, the replay says so and after how many.
    let other = keys(&ns).stream(StreamName::Queries);
    let mut bad = entries[..600].to_vec();
    bad.swap(400, 401);
    let err = replay::write(&c, &other, &bad, Ids::Original, Pace::Max, |_| {})
        .await
        .expect_err("refused");
    let msg = err.to_string();
    assert!(msg.contains("refused after 401 entries"), "{msg}");
    assert!(msg.contains("equal or smaller"), "{msg}");
    assert_eq!(xrange(&c, &other).await[..401], bad[..401]);
}
