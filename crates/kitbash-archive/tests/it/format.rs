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
