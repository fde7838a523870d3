//! The format: every kind of entry comes back byte-identical, and each is stored the way the
//! layout says (typed columns where the body re-encodes exactly, body bytes, raw fields).

use kitbash_archive::format::{self, Layout, Segment};
use kitbash_schema::Envelope;

use crate::support::*;

fn round_trip(
    layout: Layout,
    entries: &[format::Entry],
) -> (Vec<format::Entry>, (usize, usize, usize)) {
    let mut seg = Segment::new(layout);
    for e in entries {
        seg.push(e).expect("push");
    }
    let kinds = seg.kinds();
    let mut buf = Vec::new();
    seg.write_to(&mut buf).expect("write");
    (format::read(bytes::Bytes::from(buf)).expect("read"), kinds)
}

#[test]
fn every_kind_of_tick_stream_entry_comes_back_byte_identical() {
    let entries = entries(tick_stream_bodies(800));
    let (back, (typed, body, raw)) = round_trip(Layout::Ticks, &entries);
    assert_eq!(back, entries);
    // Of every 8: 4 typed msgpack ticks (one with a mid), a JSON tick, another version and a
    // foreign type as body bytes, and one with other fields as raw.
    assert_eq!((typed, body, raw), (400, 300, 100));
}

#[test]
fn physics_records_are_typed_with_every_float_bit_intact() {
    let bodies: Vec<_> = (0..300)
        .map(|i| {
            Envelope::msgpack(&physics(i))
                .expect("enc")
                .to_fields()
                .into_iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v))
                .collect()
        })
        .collect();
    let entries = entries(bodies);
    let (back, kinds) = round_trip(Layout::Physics, &entries);
    assert_eq!(kinds, (300, 0, 0), "all typed");
    assert_eq!(back, entries, "-0.0 and subnormals survive");
}

#[test]
fn a_stream_without_a_typed_layout_keeps_bodies_and_raw_fields() {
    let entries = entries(tick_stream_bodies(64));
    let (back, (typed, _, raw)) = round_trip(Layout::Plain, &entries);
    assert_eq!(back, entries);
    assert_eq!(typed, 0);
    assert_eq!(raw, 8);
}

#[test]
fn typed_files_are_much_smaller_than_the_msgpack_bodies() {
    let bodies: Vec<_> = (0..20_000)
        .map(|i| {
            Envelope::msgpack(&tick(i))
                .expect("enc")
                .to_fields()
                .into_iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v))
                .collect::<Vec<_>>()
        })
        .collect();
    let body_bytes: usize = bodies
        .iter()
        .map(|f: &Vec<(Vec<u8>, Vec<u8>)>| f[3].1.len())
        .sum();
    let mut seg = Segment::new(Layout::Ticks);
    for e in entries(bodies) {
        seg.push(&e).expect("push");
    }
    let mut buf = Vec::new();
    seg.write_to(&mut buf).expect("write");
    // Not a benchmark (that is `kitbash bench archive`): a guard that typed columns are used.
    assert!(
        buf.len() * 3 < body_bytes,
        "{} bytes of file for {body_bytes} bytes of bodies",
        buf.len()
    );
}

#[test]
fn a_file_that_is_not_ours_is_an_error_not_a_panic() {
    assert!(format::read(bytes::Bytes::from_static(b"PAR1 not really")).is_err());
}

/// pyarrow reads the files unchanged, and every float comes out with the bits Rust wrote.
#[test]
fn pyarrow_reads_the_files_with_every_float_bit_exact() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut want = String::new();
    for (name, layout, bodies) in [
        ("ticks.parquet", Layout::Ticks, tick_stream_bodies(64)),
        (
            "physics.parquet",
            Layout::Physics,
            (0..64)
                .map(|i| {
                    Envelope::msgpack(&physics(i))
                        .expect("enc")
                        .to_fields()
                        .into_iter()
                        .map(|(k, v)| (k.as_bytes().to_vec(), v))
                        .collect()
                })
                .collect(),
        ),
    ] {
        let mut seg = Segment::new(layout);
        for e in entries(bodies) {
            seg.push(&e).expect("push");
        }
        let mut buf = Vec::new();
        seg.write_to(&mut buf).expect("write");
        std::fs::write(dir.path().join(name), buf).expect("write file");
    }
    // What Rust wrote: each typed float as its bit pattern, per file and column.
    for (name, rows) in [
        (
            "ticks.parquet",
            (0..64u64)
                .filter(|i| i % 8 <= 3)
                .map(|i| {
                    let t = tick(i);
                    vec![("price", t.price), ("size", t.size), ("ts", t.ts)]
                })
                .collect::<Vec<_>>(),
        ),
        (
            "physics.parquet",
            (0..64u64)
                .map(|i| {
                    let p = physics(i);
                    vec![
                        ("price", p.price),
                        ("mass", p.vector.mass),
                        ("momentum", p.vector.momentum),
                        ("friction", p.vector.friction),
                    ]
                })
                .collect(),
        ),
    ] {
        for row in rows {
            for (col, v) in row {
                want.push_str(&format!("{name} {col} {:016x}\n", v.to_bits()));
            }
        }
    }
    let script = r#"
import struct, sys
import pyarrow.parquet as pq
cols = {"ticks.parquet": ["price", "size", "ts"], "physics.parquet": ["price", "mass", "momentum", "friction"]}
for name in ["ticks.parquet", "physics.parquet"]:
    t = pq.read_table(sys.argv[1] + "/" + name).to_pylist()
    for row in t:
        if row["body"] is not None or row["raw"] is not None:
            continue
        for c in cols[name]:
            print(name, c, struct.pack(">d", row[c]).hex())
"#;
    let out = kitbash_testkit::python::python3(&["pyarrow"])
        .args(["-c", script, &dir.path().display().to_string()])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "pyarrow: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
}

fn msgpack_fields<M: kitbash_schema::Message>(m: &M) -> Vec<(Vec<u8>, Vec<u8>)> {
    Envelope::msgpack(m)
        .expect("enc")
        .with_mid(format!("mid-{}", json_len(m)))
        .to_fields()
        .into_iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v))
        .collect()
}

fn json_fields<M: kitbash_schema::Message>(m: &M) -> Vec<(Vec<u8>, Vec<u8>)> {
    Envelope::json(m)
        .expect("enc")
        .to_fields()
        .into_iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v))
        .collect()
}

/// A mid that varies with the message (its JSON length): mids need not be unique here.
fn json_len<M: kitbash_schema::Message>(m: &M) -> usize {
    serde_json::to_string(m).map(|s| s.len()).unwrap_or(0)
}

/// Queries, crossings, memory tokens and entity updates in their typed columns (every optional
/// field present and absent), JSON twins as body bytes, all back byte-identical.
#[test]
fn every_message_type_is_typed_and_comes_back_byte_identical() {
    use kitbash_schema::messages::{
        Crossing, EntityOp, EntityTarget, EntityUpdate, MemoryToken, QueryEvent,
    };
    let queries: Vec<QueryEvent> = (0..40)
        .map(|i| QueryEvent {
            text: format!("what is {i}? ünïcode"),
            hash: (i % 2 == 0).then(|| format!("{i:064x}")),
            ts: 1_766_318_400.0 + i as f64 / 7.0,
            grains: (0..(i % 4)).map(|g| g * 1_000_003).collect(),
            latency_ms: (i % 3 == 0).then_some(0.1 + i as f64),
        })
        .collect();
    let crossings: Vec<Crossing> = (0..20)
        .map(|i| Crossing {
            hash: format!("{i:064x}"),
            text: format!("hot query {i}"),
            resonance: 0.8 + 1e-17 * i as f64,
            cycle: i * 13,
        })
        .collect();
    let memories: Vec<MemoryToken> = (0..20)
        .map(|i| MemoryToken {
            id: format!("m{i}"),
            user: "u1".into(),
            context: "c1".into(),
            token: format!("t{i}"),
            content: serde_json::json!({"text": "hi", "nested": {"z": 1, "a": [1.5, -0.0, null]}}),
            ts: 1_766_318_400.25,
            accesses: i,
        })
        .collect();
    let updates: Vec<EntityUpdate> = (0..20)
        .map(|i| EntityUpdate {
            target: if i % 2 == 0 {
                EntityTarget::Status
            } else {
                EntityTarget::Entity {
                    name: "claude".into(),
                    part: "state".into(),
                }
            },
            patch: serde_json::json!({"mood": "calm", "n": i, "f": 0.1}),
            op: if i % 3 == 0 {
                EntityOp::Increment
            } else {
                EntityOp::Merge
            },
            expected_version: (i % 4 == 0).then_some(i),
        })
        .collect();
    fn both<M: kitbash_schema::Message>(ms: &[M]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        ms.iter()
            .flat_map(|m| [msgpack_fields(m), json_fields(m)])
            .collect()
    }
    for (layout, bodies, n) in [
        (Layout::Queries, both(&queries), queries.len()),
        (Layout::Crossings, both(&crossings), crossings.len()),
        (Layout::Memory, both(&memories), memories.len()),
        (Layout::EntityUpdates, both(&updates), updates.len()),
    ] {
        let entries = entries(bodies);
        let (back, kinds) = round_trip(layout, &entries);
        assert_eq!(back, entries, "{layout:?}: byte-identical");
        assert_eq!(
            kinds,
            (n, n, 0),
            "{layout:?}: msgpack typed, JSON as body bytes"
        );
    }
    // Another stream's messages in a typed layout keep their bodies.
    let entries = entries(both(&queries));
    let (back, kinds) = round_trip(Layout::Memory, &entries);
    assert_eq!(back, entries);
    assert_eq!(kinds.0, 0, "queries are not typed in a memory file");
}

/// Entity changes (plain fields) in their columns; other field lists stay raw.
#[test]
fn entity_changes_are_typed_by_their_fields() {
    use kitbash_schema::archive::ENTITY_CHANGE_FIELDS;
    let mut bodies: Vec<Vec<(Vec<u8>, Vec<u8>)>> = (0..30)
        .map(|i| {
            ENTITY_CHANGE_FIELDS
                .iter()
                .zip([
                    "quantum:status".to_owned(),
                    i.to_string(),
                    "merge".to_owned(),
                    format!("entity:0/{i}-0"),
                    format!(r#"{{"n":{i}}}"#),
                ])
                .map(|(k, v)| (k.as_bytes().to_vec(), v.into_bytes()))
                .collect()
        })
        .collect();
    // Deleted: empty data. Not UTF-8, other order: raw.
    bodies[3][4].1.clear();
    bodies[5][4].1 = vec![0xff, 0xfe];
    bodies[7].swap(0, 1);
    let entries = entries(bodies);
    let (back, kinds) = round_trip(Layout::EntityChanges, &entries);
    assert_eq!(back, entries);
    assert_eq!(kinds, (28, 0, 2));
}

/// pyarrow reads the new typed columns by name (what an operator's query uses).
#[test]
fn pyarrow_reads_the_query_columns_by_name() {
    use kitbash_schema::messages::QueryEvent;
    let dir = tempfile::tempdir().expect("tmp");
    let qs: Vec<QueryEvent> = (0..10)
        .map(|i| QueryEvent {
            text: format!("q{}", i % 3),
            hash: None,
            ts: 1_766_318_400.0 + i as f64,
            grains: vec![i, i + 1],
            latency_ms: None,
        })
        .collect();
    let mut seg = Segment::new(Layout::Queries);
    for e in entries(qs.iter().map(msgpack_fields).collect()) {
        seg.push(&e).expect("push");
    }
    let mut buf = Vec::new();
    seg.write_to(&mut buf).expect("write");
    let path = dir.path().join("q.parquet");
    std::fs::write(&path, buf).expect("write file");
    let script = r#"
import sys, collections
import pyarrow.parquet as pq
t = pq.read_table(sys.argv[1]).to_pylist()
c = collections.Counter(r["text"] for r in t)
print(sorted(c.items()), t[4]["grains"], t[4]["hash"])
"#;
    let out = kitbash_testkit::python::python3(&["pyarrow"])
        .args(["-c", script, &path.display().to_string()])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "pyarrow: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "[('q0', 4), ('q1', 3), ('q2', 3)] [4, 5] None"
    );
}
