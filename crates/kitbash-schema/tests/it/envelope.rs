//! The envelope's checks, pinned in the schema's own tests: which versions are read, and that a
//! body must be the documented map of named fields (never serde's positional sequence form).

use kitbash_schema::messages::{QueryEvent, Tick};
use kitbash_schema::wire::{Envelope, WireError, decode_fields};

fn tick() -> Tick {
    Tick {
        symbol: "SPY".into(),
        price: 450.25,
        size: 100.0,
        trades: 3,
        ts: 1.5,
    }
}

/// Decodes a tick entry with these `v`, `ct` and `d` (`v` omitted when `None`).
fn decode_tick(v: Option<&[u8]>, ct: &[u8], d: &[u8]) -> Result<Tick, WireError> {
    let mut fields: Vec<(&[u8], &[u8])> = vec![(b"type", b"tick"), (b"ct", ct), (b"d", d)];
    if let Some(v) = v {
        fields.push((b"v", v));
    }
    decode_fields(fields)
}

const TICK_JSON: &[u8] = br#"{"symbol":"SPY","price":450.25,"size":100.0,"trades":3,"ts":1.5}"#;

#[test]
fn supported_versions_decode() {
    assert_eq!(decode_tick(None, b"json", TICK_JSON), Ok(tick()));
    assert_eq!(decode_tick(Some(b"1"), b"json", TICK_JSON), Ok(tick()));
}

#[test]
fn a_newer_version_is_refused_as_newer() {
    for v in [&b"2"[..], b"9", b"4294967295"] {
        let err = decode_tick(Some(v), b"json", TICK_JSON).expect_err("newer version");
        let got = std::str::from_utf8(v).expect("ascii");
        assert_eq!(
            err.to_string(),
            format!("type `tick` version {got} is newer than the supported 1")
        );
    }
}

#[test]
fn version_zero_is_refused_as_invalid_not_as_newer() {
    let err = decode_tick(Some(b"0"), b"json", TICK_JSON).expect_err("v=0");
    let reason = err.to_string();
    assert!(!reason.contains("newer"), "{reason}");
    assert_eq!(
        reason,
        "type `tick` version 0 is not a valid version (versions start at 1; supported: 1)"
    );
}

#[test]
fn a_version_that_is_not_a_number_is_a_bad_field() {
    for v in [&b"x"[..], b"-1", b"1.0", b""] {
        let err = decode_tick(Some(v), b"json", TICK_JSON).expect_err("bad v");
        assert!(
            matches!(err, WireError::BadField { field: "v", .. }),
            "{err}"
        );
    }
}

#[test]
fn a_json_array_body_is_refused() {
    // serde would read this positional form of the struct; the documented body is an object.
    let body = br#"["SPY",450.25,100.0,3,1.5]"#;
    let err = decode_tick(None, b"json", body).expect_err("array body");
    assert_eq!(
        err.to_string(),
        "body does not decode: it is a JSON array; a body is a map of named fields \
         (a JSON object, or the MessagePack map encoding)"
    );
    // Leading whitespace changes nothing.
    assert!(decode_tick(None, b"json", b"  \n[\"SPY\",1.0,1.0,1,1.0]").is_err());
    assert_eq!(
        decode_tick(None, b"json", &[b" \t\r\n", TICK_JSON].concat()),
        Ok(tick())
    );
}

#[test]
fn a_msgpack_array_body_is_refused() {
    // rmp_serde::to_vec (not to_vec_named) writes the positional form: a fixarray of 5.
    let positional = rmp_serde::to_vec(&tick()).expect("encode");
    assert_eq!(positional[0], 0x95);
    let err = decode_tick(None, b"msgpack", &positional).expect_err("array body");
    assert_eq!(
        err.to_string(),
        "body does not decode: it is a MessagePack array; a body is a map of named fields \
         (a JSON object, or the MessagePack map encoding)"
    );
    // array16 and array32 markers as well.
    for marker in [0xdc, 0xdd] {
        let err = decode_tick(None, b"msgpack", &[marker, 0, 0, 0, 0]).expect_err("array");
        assert!(err.to_string().contains("a MessagePack array"), "{err}");
    }
    // The map encoding (what kitbash and msgpack.packb(dict) write) decodes.
    let named = rmp_serde::to_vec_named(&tick()).expect("encode");
    assert_eq!(decode_tick(None, b"msgpack", &named), Ok(tick()));
}

#[test]
fn other_non_map_bodies_are_refused_with_what_they_are() {
    let cases: [(&[u8], &[u8], &str); 5] = [
        (b"json", b"", "it is empty"),
        (b"json", b"\"SPY\"", "it is a JSON string"),
        (b"json", b"42", "it is a JSON number"),
        (b"msgpack", b"", "it is empty"),
        (b"msgpack", b"\xa3SPY", "it is a MessagePack string"),
    ];
    for (ct, d, what) in cases {
        let err = decode_tick(None, ct, d).expect_err("not a map");
        assert!(
            err.to_string()
                .starts_with(&format!("body does not decode: {what};")),
            "{err}"
        );
    }
}

#[test]
fn every_message_kind_needs_a_map() {
    // The check is in the envelope, not per type: a query as a JSON array is refused too.
    let fields: Vec<(&[u8], &[u8])> = vec![
        (b"type", b"query"),
        (b"ct", b"json"),
        (b"d", br#"["what is DNA?",null,1766318400.0,[]]"#),
    ];
    let err = decode_fields::<QueryEvent, _>(fields).expect_err("array body");
    assert!(err.to_string().contains("a JSON array"), "{err}");
    // What the envelope writes itself always decodes.
    let q = QueryEvent {
        text: "what is DNA?".into(),
        hash: None,
        ts: 1.0,
        grains: vec![1, 2],
        latency_ms: Some(2.5),
    };
    for env in [
        Envelope::json(&q).expect("json"),
        Envelope::msgpack(&q).expect("msgpack"),
    ] {
        assert_eq!(env.decode::<QueryEvent>(), Ok(q.clone()));
    }
}
