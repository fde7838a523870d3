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
