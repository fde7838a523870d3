//! Byte-exact wire formats. A failure here means a producer or consumer in another language
//! would see different bytes: bump the message version instead of changing a golden value.

use kitbash_schema::messages::*;
use kitbash_schema::wire::{ContentType, DeadLetter, Envelope, decode_fields};
use kitbash_schema::{Keys, Message, StreamName};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Seed 001 §2.1, serialised as orjson does (compact, in the seed's field order).
#[test]
fn physics_state_matches_the_seed_example() {
    let seed = r#"{
      "mass": 0.42, "momentum": 1.23, "friction": 0.15, "entropy": 0.08,
      "nash_dist": 0.05, "regime": "Gaussian", "alpha_coefficient": 2.8
    }"#;
    let v: PhysicsVector = serde_json::from_str(seed).expect("seed example parses");
    assert_eq!(
        String::from_utf8(v.to_json()).expect("utf8"),
        r#"{"mass":0.42,"momentum":1.23,"friction":0.15,"entropy":0.08,"nash_dist":0.05,"regime":"Gaussian","alpha_coefficient":2.8}"#
    );
    let levy = PhysicsVector {
        regime: Regime::LevyStable,
        ..v
    };
    assert!(
        String::from_utf8(levy.to_json())
            .expect("utf8")
            .contains(r#""regime":"Lévy Stable""#)
    );
}

/// Seed 001 §3.1.
#[test]
fn state_update_matches_the_seed_example() {
    let seed = r#"{"event":"PHYSICS_UPDATE","symbol":"SPY","timestamp":"2025-12-21T12:00:00Z","data":{"alpha":2.8,"regime":"Gaussian"}}"#;
    let u: StateUpdate = serde_json::from_str(seed).expect("parses");
    assert_eq!(String::from_utf8(u.to_json()).expect("utf8"), seed);
    let full = StateUpdate {
        data: StateUpdateData {
            price: Some(450.32),
            stream_id: Some("1-0".into()),
            source: Some("1766318400000-0".into()),
            ..u.data.clone()
        },
        ..u
    };
    assert_eq!(
        String::from_utf8(full.to_json()).expect("utf8"),
        r#"{"event":"PHYSICS_UPDATE","symbol":"SPY","timestamp":"2025-12-21T12:00:00Z","data":{"alpha":2.8,"regime":"Gaussian","price":450.32,"stream_id":"1-0","source":"1766318400000-0"}}"#
    );
}

/// One timestamp format on `state_update`: always three fractional digits, so a consumer
/// parsing `YYYY-MM-DDTHH:MM:SS.mmmZ` never meets `…:01Z` beside `…:01.001Z`.
#[test]
fn state_update_timestamps_have_one_fixed_format() {
    use kitbash_schema::time::rfc3339_utc;
    for (ms, text) in [
        (1_766_318_401_000, "2025-12-21T12:00:01.000Z"),
        (1_766_318_401_001, "2025-12-21T12:00:01.001Z"),
        (1_766_318_401_250, "2025-12-21T12:00:01.250Z"),
        (0, "1970-01-01T00:00:00.000Z"),
    ] {
        assert_eq!(rfc3339_utc(ms), text);
        assert_eq!(text.len(), "YYYY-MM-DDTHH:MM:SS.mmmZ".len());
    }
    let u = StateUpdate {
        event: StateUpdate::PHYSICS_UPDATE.into(),
        symbol: "SPY".into(),
        timestamp: rfc3339_utc(1_766_318_400_000),
        data: StateUpdateData {
            alpha: 2.8,
            regime: Regime::Gaussian,
            price: None,
            mass: None,
            momentum: None,
            friction: None,
            entropy: None,
            nash_dist: None,
            stream_id: None,
            source: None,
        },
    };
    assert_eq!(
        String::from_utf8(u.to_json()).expect("utf8"),
        r#"{"event":"PHYSICS_UPDATE","symbol":"SPY","timestamp":"2025-12-21T12:00:00.000Z","data":{"alpha":2.8,"regime":"Gaussian"}}"#
    );
}

/// Seed 002's `update_status`: `json.dumps({"type": "status_update", "key": key, "data": data})`.
#[test]
fn quantum_update_matches_python_json_dumps() {
    let u = QuantumUpdate {
        kind: "status_update".into(),
        key: Keys::default().quantum_status(),
        data: serde_json::json!({"mood": "curious", "level": 3, "score": 0.5, "name": "Lévy"}),
        version: None,
        stream_id: None,
    };
    // python3 -c 'import json; print(json.dumps({"type":"status_update","key":"quantum:status",
    //   "data":{"mood":"curious","level":3,"score":0.5,"name":"Lévy"}}))'
    assert_eq!(
        String::from_utf8(u.to_json()).expect("utf8"),
        r#"{"type": "status_update", "key": "quantum:status", "data": {"mood": "curious", "level": 3, "score": 0.5, "name": "L\u00e9vy"}}"#
    );
}

/// entity's `quantum:updates` message: the seed's three fields, then `version` and `stream_id`.
#[test]
fn quantum_update_with_version_matches_python_json_dumps() {
    let data: serde_json::Value = serde_json::from_str(
        r#"{"big": 12345678901234567890, "f": 0.1, "e": [], "o": {}, "u": "Lévy"}"#,
    )
    .expect("json");
    let u = QuantumUpdate {
        kind: "entity_update".into(),
        key: Keys::default().entity("claude", "identity"),
        data,
        version: Some(7),
        stream_id: Some("1-0".into()),
    };
    // python3 -c 'import json; print(json.dumps({"type":"entity_update","key":"entity:claude:identity",
    //   "data":{"big":12345678901234567890,"f":0.1,"e":[],"o":{},"u":"Lévy"},"version":7,"stream_id":"1-0"}))'
    assert_eq!(
        String::from_utf8(u.to_json()).expect("utf8"),
        r#"{"type": "entity_update", "key": "entity:claude:identity", "data": {"big": 12345678901234567890, "f": 0.1, "e": [], "o": {}, "u": "L\u00e9vy"}, "version": 7, "stream_id": "1-0"}"#
    );
}

/// The commit script's halves around `stream_id` make exactly the same bytes.
#[test]
fn quantum_update_parts_surround_the_stream_id() {
    let data = serde_json::json!({"note": "has \u{1}stream-id\u{1} inside", "n": [1, {}]});
    let (pre, post) = quantum_update_parts("status_update", "quantum:status", &data, 3);
    let whole = QuantumUpdate {
        kind: "status_update".into(),
        key: "quantum:status".into(),
        data,
        version: Some(3),
        stream_id: Some("17-2".into()),
    }
    .to_json();
    assert_eq!([pre, b"17-2".to_vec(), post].concat(), whole);
}

/// An entity update's optional fields: `op` (absent = merge) and `expected_version`.
#[test]
fn entity_update_operations_layout() {
    let e = EntityUpdate {
        target: EntityTarget::Status,
        patch: serde_json::json!({"visits": 1}),
        op: EntityOp::Increment,
        expected_version: Some(4),
    };
    assert_eq!(
        serde_json::to_string(&e).expect("json"),
        r#"{"target":{"kind":"status"},"patch":{"visits":1},"op":"increment","expected_version":4}"#
    );
    let back: EntityUpdate =
        serde_json::from_str(r#"{"target":{"kind":"status"},"patch":{"a":1}}"#).expect("decode");
    assert_eq!(back.op, EntityOp::Merge);
    assert_eq!(back.expected_version, None);
    let bad = EntityUpdate::with_op(
        EntityTarget::Status,
        EntityOp::Merge,
        serde_json::json!([1]),
    );
    assert!(
        bad.validate()
            .unwrap_err()
            .contains("must be a JSON object")
    );
}

/// The stream envelope of a tick: fields and MessagePack body (map encoding).
#[test]
fn tick_envelope_layout() {
    let t = Tick {
        symbol: "SPY".into(),
        price: 450.25,
        size: 100.0,
        trades: 3,
        ts: 1.5,
    };
    let env = Envelope::msgpack(&t).expect("encode").with_mid("m1");
    let fields = env.to_fields();
    let names: Vec<&str> = fields.iter().map(|(k, _)| *k).collect();
    assert_eq!(names, ["type", "v", "ct", "d", "mid"]);
    assert_eq!(fields[0].1, b"tick");
    assert_eq!(fields[1].1, b"1");
    assert_eq!(fields[2].1, b"msgpack");
    // msgpack map of 5: "symbol" "SPY", "price" f64, "size" f64, "trades" 3, "ts" f64
    assert_eq!(
        hex(&fields[3].1),
        "85a673796d626f6ca3535059a57072696365cb407c240000000000a473697a65cb4059000000000000a674726164657303a27473cb3ff8000000000000"
    );
    let back: Tick =
        decode_fields(fields.iter().map(|(k, v)| (k.as_bytes(), v.as_slice()))).expect("decode");
    assert_eq!(back, t);
}

/// A JSON body from a foreign producer (redis-cli, Python) decodes the same.
#[test]
fn json_bodies_from_foreign_producers() {
    let fields: Vec<(&[u8], &[u8])> = vec![
        (b"type", b"query"),
        (b"ct", b"json"),
        (b"d", br#"{"text":"what is DNA?","ts":1766318400.0}"#),
    ];
    let q: QueryEvent = decode_fields(fields).expect("decode");
    assert_eq!(q.text, "what is DNA?");
    let env = Envelope::json(&q).expect("encode");
    assert_eq!(env.content, ContentType::Json);
    assert_eq!(env.body, br#"{"text":"what is DNA?","ts":1766318400.0}"#);
}

#[test]
fn entity_update_and_memory_token_layouts() {
    let e = EntityUpdate {
        target: EntityTarget::Entity {
            name: "claude".into(),
            part: "identity".into(),
        },
        patch: serde_json::json!({"mood": "curious", "old": null}),
        op: EntityOp::Merge,
        expected_version: None,
    };
    assert_eq!(
        serde_json::to_string(&e).expect("json"),
        r#"{"target":{"kind":"entity","name":"claude","part":"identity"},"patch":{"mood":"curious","old":null}}"#
    );
    assert_eq!(e.target.key(&Keys::default()), "entity:claude:identity");
    let d = EntityUpdate {
        target: EntityTarget::Daily {
            date: "2025-07-01".into(),
        },
        patch: serde_json::json!({}),
        op: EntityOp::Merge,
        expected_version: None,
    };
    assert_eq!(
        serde_json::to_string(&d.target).expect("json"),
        r#"{"kind":"daily","date":"2025-07-01"}"#
    );
    let m = MemoryToken {
        id: "m1".into(),
        user: "u1".into(),
        context: "c1".into(),
        token: "t1".into(),
        content: serde_json::json!("hello"),
        ts: 1.0,
        accesses: 2,
    };
    assert_eq!(
        serde_json::to_string(&m).expect("json"),
        r#"{"id":"m1","user":"u1","context":"c1","token":"t1","content":"hello","ts":1.0,"accesses":2}"#
    );
}

#[test]
fn dead_letter_layout_round_trips() {
    let d = DeadLetter {
        reason: "missing field `d`".into(),
        stream: StreamName::Queries.logical(),
        id: "5-0".into(),
        group: "decay".into(),
        consumer: "decay-h-1-abc".into(),
        deliveries: 1,
        at_ms: 7,
        fields: vec![(b"type".to_vec(), b"query".to_vec())],
    };
    let f = d.to_fields();
    let names: Vec<String> = f
        .iter()
        .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "reason",
            "stream",
            "id",
            "group",
            "consumer",
            "deliveries",
            "at_ms",
            "f.type"
        ]
    );
    let back = DeadLetter::from_fields(f.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
        .expect("parse");
    assert_eq!(back, d);
}

#[test]
fn heartbeat_layout() {
    let h = Heartbeat {
        kind: "decay".into(),
        instance: "decay-h-1-abc".into(),
        host: "h".into(),
        pid: 1,
        started_ms: 2,
        beat_ms: 3,
        version: "0.1.0".into(),
        admin: None,
        serves: Default::default(),
        stats: Default::default(),
        ready: true,
    };
    assert_eq!(
        serde_json::to_string(&h).expect("json"),
        r#"{"kind":"decay","instance":"decay-h-1-abc","host":"h","pid":1,"started_ms":2,"beat_ms":3,"version":"0.1.0","ready":true}"#
    );
    let mut h = h;
    h.kind = "bridge".into();
    h.serves.insert("ws".into(), "127.0.0.1:8000".into());
    h.stats.insert("connections".into(), 3);
    assert_eq!(
        serde_json::to_string(&h).expect("json"),
        r#"{"kind":"bridge","instance":"decay-h-1-abc","host":"h","pid":1,"started_ms":2,"beat_ms":3,"version":"0.1.0","serves":{"ws":"127.0.0.1:8000"},"stats":{"connections":3},"ready":true}"#
    );
}

#[test]
fn validation_rejects_bad_input_with_a_reason() {
    let bad = |t: Tick| {
        use kitbash_schema::Message;
        t.validate().expect_err("invalid")
    };
    let ok = Tick {
        symbol: "SPY".into(),
        price: 1.0,
        size: 0.0,
        trades: 0,
        ts: 0.0,
    };
    assert!(
        bad(Tick {
            price: f64::NAN,
            ..ok.clone()
        })
        .contains("price")
    );
    assert!(
        bad(Tick {
            price: f64::INFINITY,
            ..ok.clone()
        })
        .contains("price")
    );
    assert!(
        bad(Tick {
            price: 0.0,
            ..ok.clone()
        })
        .contains("price")
    );
    assert!(
        bad(Tick {
            size: -1.0,
            ..ok.clone()
        })
        .contains("size")
    );
    assert!(
        bad(Tick {
            symbol: String::new(),
            ..ok.clone()
        })
        .contains("empty symbol")
    );
    assert!(
        bad(Tick {
            symbol: "A".repeat(17),
            ..ok.clone()
        })
        .contains("longer")
    );
    assert!(
        bad(Tick {
            symbol: "spy".into(),
            ..ok.clone()
        })
        .contains("symbol")
    );
    assert!(bad(Tick { ts: -1.0, ..ok }).contains("ts"));
}

/// Seed 000's reflex formats: a query event with its latency, the crossing body decay writes
/// from Lua (JSON), the change announcement, a grain signature and a grain-file line.
#[test]
fn reflex_formats() {
    let q = QueryEvent {
        text: "what is DNA?".into(),
        hash: None,
        ts: 1766318400.0,
        grains: vec![42, 17],
        latency_ms: Some(2.3),
    };
    let env = Envelope::json(&q).expect("encode");
    assert_eq!(
        String::from_utf8(env.body.clone()).expect("utf8"),
        r#"{"text":"what is DNA?","ts":1766318400.0,"grains":[42,17],"latency_ms":2.3}"#
    );
    // The crossing body as decay's script writes it (cjson key order is not fixed).
    let fields: Vec<(&[u8], &[u8])> = vec![
        (b"type", b"crossing"),
        (b"ct", b"json"),
        (b"mid", b"decay:1-0"),
        (
            b"d",
            br#"{"cycle":12,"text":"what is DNA?","resonance":0.8125,"hash":"ab12"}"#,
        ),
    ];
    let c: Crossing = decode_fields(fields).expect("crossing");
    assert_eq!(
        c,
        Crossing {
            hash: "ab12".into(),
            text: "what is DNA?".into(),
            resonance: 0.8125,
            cycle: 12,
        }
    );
    assert_eq!(
        ReflexChange {
            what: ReflexChange::HAT.into(),
            version: 7
        }
        .to_json(),
        r#"{"what":"hat","version":7}"#
    );
    let sig = GrainSig {
        popcount: 156,
        axiom: "thermodynamics".into(),
        weight: 1.58,
        ternary_value: 0.25,
        confidence: 0.609375,
    };
    assert_eq!(
        serde_json::to_string(&sig).expect("json"),
        r#"{"popcount":156,"axiom":"thermodynamics","weight":1.58,"ternary_value":0.25,"confidence":0.609375}"#
    );
    let line: GrainLine =
        serde_json::from_str(r#"{"id":42,"axiom":"a","weight":1.0,"plus":"0f","minus":"f0"}"#)
            .expect("line");
    assert_eq!(line.plus.as_deref(), Some("0f"));
    assert!(
        serde_json::from_str::<GrainLine>(r#"{"id":1,"axiom":"a","weight":1,"typo":1}"#).is_err()
    );
}

/// The compact reflex record (`[reflex] layout = "compact"`): what other languages split on
/// `|`. Lua writes the score with `%.17g`, Rust with the shortest round-trip form; both read
/// back to the same `f64`.
#[test]
fn compact_reflex_record_layout() {
    use kitbash_schema::reflex::{CompactRecord, compact_bucket, compact_id};
    let r = CompactRecord {
        count: 6,
        last_s: 1_766_318_400,
        score: -0.125,
        grains: vec![42, 17, 88],
    };
    assert_eq!(r.encode(), "6|1766318400|-0.125|42,17,88");
    let from_lua = CompactRecord::decode("6|1766318400|-0.19622784068934779|42,17").expect("lua");
    assert_eq!(from_lua.score, -0.196_227_840_689_347_8);
    assert_eq!(from_lua.grains, vec![42, 17]);
    let empty = CompactRecord::decode("1|0|-1.3862943611198906|").expect("no grains");
    assert!(empty.grains.is_empty());
    // The first 16 hex digits of a hash, and Python's int(id, 16) % 1024.
    let id =
        compact_id("1a9c7d9e3f5b2c4d0000000000000000000000000000000000000000000000ff").expect("id");
    assert_eq!(id, "1a9c7d9e3f5b2c4d");
    assert_eq!(compact_bucket(&id, 1024), Some(0x04d));
    let k = Keys::default();
    assert_eq!(k.cms_bucket(77), "kitbash:cms:77");
}
