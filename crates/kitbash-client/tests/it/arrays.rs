//! Array storage: numpy reads what Rust stored and Rust reads what numpy wrote (numpy from
//! `tests/deps/requirements.txt`; the test fails, never skips, without it), compression markers, TTLs,
//! spike-train windows, memory statistics, bad values, and retries.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use fred::prelude::*;
use fred::types::Value;
use kitbash_client::ClientError;
use kitbash_client::array::{ArrayData, CompressionPolicy, NdArray};
use kitbash_client::arrays::ArrayStore;
use kitbash_client::families;
use kitbash_client::retry::RetryPolicy;
use kitbash_schema::{KeyFamily, Keys};
use kitbash_testkit::RedisServer;
use serde_json::json;

use crate::support::{connect, connect_impatient, eventually, keys};

fn run_python(script: &str, dir: &Path) -> String {
    let out = kitbash_testkit::python::python3(&["numpy"])
        .arg("-c")
        .arg(script)
        .arg(dir)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Reads every `NAME.npy` + `NAME.enc` pair in the directory given as argv[1] the way
/// `docs/WIRE.md` says, and prints one JSON line per array.
const PY_READ: &str = r#"
import sys, os, io, json, zlib
import numpy as np
d = sys.argv[1]
for name in sorted(f[:-4] for f in os.listdir(d) if f.endswith('.npy')):
    raw = open(os.path.join(d, name + '.npy'), 'rb').read()
    enc = open(os.path.join(d, name + '.enc')).read()
    if enc == 'zlib':
        raw = zlib.decompress(raw)
    elif enc != 'raw':
        raise SystemExit('unknown enc ' + enc)
    a = np.load(io.BytesIO(raw), allow_pickle=False)
    print(json.dumps({'name': name, 'enc': enc, 'dtype': str(a.dtype), 'shape': list(a.shape),
                      'fortran': bool(a.flags.f_contiguous and not a.flags.c_contiguous),
                      'sum': float(a.astype(np.float64).sum()),
                      'first': a.flatten(order='C')[:4].astype(np.float64).tolist()}))
"#;

/// Writes arrays with numpy (some zlib-compressed) into argv[1] as `NAME.npy` + `NAME.enc`.
const PY_WRITE: &str = r#"
import sys, os, io, zlib
import numpy as np
d = sys.argv[1]
def put(name, a, compress):
    b = io.BytesIO(); np.save(b, a, allow_pickle=False); raw = b.getvalue()
    if compress:
        raw = zlib.compress(raw)
    open(os.path.join(d, name + '.npy'), 'wb').write(raw)
    open(os.path.join(d, name + '.enc'), 'w').write('zlib' if compress else 'raw')
put('f32be', np.arange(6, dtype='>f4').reshape(2, 3) / 4, False)
put('i16f', np.asfortranarray(np.array([[1, -2], [3, -4], [5, -6]], dtype='<i2')), False)
put('bool', np.array([True, False, True]), False)
put('u64z', np.arange(5000, dtype=np.uint64), True)
put('f64', np.linspace(0.0, 1.0, 11), False)
"#;

/// `bytes` with the first `from` replaced by `to` (same length).
fn replace(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if let Some(at) = bytes.windows(from.len()).position(|w| w == from) {
        out[at..at + from.len()].copy_from_slice(to);
    }
    out
}

/// A value planted under an array key, and the words its error must contain.
type BadCase = (&'static str, Vec<(&'static str, Value)>, &'static str);

async fn raw_fields(client: &Client, key: &str) -> HashMap<String, Vec<u8>> {
    client.hgetall(key).await.expect("hgetall")
}

#[tokio::test]
async fn numpy_reads_arrays_stored_from_rust() {
    let server = RedisServer::start().expect("redis");
    let client = connect(&server.url()).await;
    let keys = keys();
    let store = ArrayStore::new(client.clone(), keys.clone());

    let pattern = NdArray::new(
        vec![2, 3],
        ArrayData::F64(vec![0.5, 1.5, 2.5, 3.5, 4.5, 5.5]),
    )
    .expect("shape");
    store
        .put_working_memory("small", &pattern, 1.7e9, &json!({"source": "v1"}))
        .await
        .expect("put wm");
    let spikes = NdArray::new(
        vec![1000, 100],
        ArrayData::I8((0..100_000).map(|i| i8::from(i % 13 == 0)).collect()),
    )
    .expect("shape");
    store
        .put_spike_train(
            1_700_000_000_000_000,
            &spikes,
            &(0..100).collect::<Vec<u64>>(),
            Duration::from_secs(60),
        )
        .await
        .expect("put spikes");
    let fortran = NdArray::new(vec![2, 2], ArrayData::I32(vec![1, 2, 3, 4]))
        .expect("shape")
        .fortran();
    store
        .put_attention("ctx", &fortran, 1.7e9)
        .await
        .expect("put attention");

    let dir = tempfile::tempdir().expect("tempdir");
    for (name, key) in [
        ("a_small", keys.wm("small")),
        ("b_spikes", keys.spikes(1_700_000_000_000_000)),
        ("c_fortran", keys.attention("ctx")),
    ] {
        let h = raw_fields(&client, &key).await;
        std::fs::write(dir.path().join(format!("{name}.npy")), &h[Keys::ARRAY_NPY]).expect("write");
        std::fs::write(dir.path().join(format!("{name}.enc")), &h[Keys::ARRAY_ENC]).expect("write");
    }
    let out = run_python(PY_READ, dir.path());
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(rows.len(), 3, "{out}");
    assert_eq!(rows[0]["enc"], "raw");
    assert_eq!(rows[0]["dtype"], "float64");
    assert_eq!(rows[0]["shape"], json!([2, 3]));
    assert_eq!(rows[0]["sum"], json!(18.0));
    assert_eq!(
        rows[1]["enc"], "zlib",
        "a regular 100 kB array is compressed"
    );
    assert_eq!(rows[1]["dtype"], "int8");
    assert_eq!(rows[1]["shape"], json!([1000, 100]));
    assert_eq!(
        rows[1]["sum"],
        json!((0..100_000).filter(|i| i % 13 == 0).count() as f64)
    );
    assert_eq!(rows[2]["dtype"], "int32");
    assert_eq!(rows[2]["fortran"], json!(true));
    // Fortran order: stored [1,2,3,4] is column-major, so row-major reading gives 1,3,2,4.
    assert_eq!(rows[2]["first"], json!([1.0, 3.0, 2.0, 4.0]));
}

#[tokio::test]
async fn rust_reads_arrays_numpy_wrote() {
    let server = RedisServer::start().expect("redis");
    let client = connect(&server.url()).await;
    let keys = keys();
    let store = ArrayStore::new(client.clone(), keys.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    run_python(PY_WRITE, dir.path());
    for name in ["f32be", "i16f", "bool", "u64z", "f64"] {
        let npy = std::fs::read(dir.path().join(format!("{name}.npy"))).expect("read");
        let enc = std::fs::read_to_string(dir.path().join(format!("{name}.enc"))).expect("read");
        // What a Python producer following docs/WIRE.md writes.
        let _: () = client
            .hset(
                keys.wm(name),
                vec![
                    (Keys::ARRAY_NPY, Value::Bytes(npy.into())),
                    (Keys::ARRAY_ENC, Value::from(enc)),
                    (Keys::ARRAY_TS, Value::from("1700000000.5")),
                    (Keys::ARRAY_META, Value::from("{\"from\":\"numpy\"}")),
                ],
            )
            .await
            .expect("hset");
    }
    let get = |name: &'static str| {
        let store = store.clone();
        async move {
            store
                .get_working_memory(name)
                .await
                .expect("get")
                .expect("exists")
        }
    };
    let w = get("f32be").await;
    assert_eq!(w.pattern.shape(), &[2, 3]);
    assert_eq!(
        w.pattern.data(),
        &ArrayData::F32(vec![0.0, 0.25, 0.5, 0.75, 1.0, 1.25])
    );
    assert_eq!(w.timestamp, 1_700_000_000.5);
    assert_eq!(w.metadata, json!({"from": "numpy"}));
    let w = get("i16f").await;
    assert!(w.pattern.is_fortran_order());
    assert_eq!(w.pattern.shape(), &[3, 2]);
    assert_eq!(w.pattern.data(), &ArrayData::I16(vec![1, 3, 5, -2, -4, -6]));
    assert_eq!(
        get("bool").await.pattern.data(),
        &ArrayData::Bool(vec![true, false, true])
    );
    assert_eq!(
        get("u64z").await.pattern.data(),
        &ArrayData::U64((0..5000).collect())
    );
    let w = get("f64").await;
    assert_eq!(w.pattern.as_f64().map(|v| v.len()), Some(11));
    assert_eq!(w.pattern.as_f64().map(|v| v[10]), Some(1.0));
}

#[tokio::test]
async fn bad_values_under_array_keys_are_clear_errors() {
    let server = RedisServer::start().expect("redis");
    let client = connect(&server.url()).await;
    let keys = keys();
    let store = ArrayStore::new(client.clone(), keys.clone());
    let good = NdArray::from_f64(vec![1.0, 2.0, 3.0])
        .to_npy()
        .expect("npy");

    let cases: Vec<BadCase> = vec![
        (
            "garbage",
            vec![
                (Keys::ARRAY_NPY, Value::from("hello")),
                (Keys::ARRAY_ENC, Value::from("raw")),
            ],
            "not a .npy array",
        ),
        (
            "truncated",
            vec![
                (
                    Keys::ARRAY_NPY,
                    Value::Bytes(good[..good.len() - 5].to_vec().into()),
                ),
                (Keys::ARRAY_ENC, Value::from("raw")),
            ],
            "header says",
        ),
        (
            "dtype",
            vec![
                (
                    Keys::ARRAY_NPY,
                    Value::Bytes(replace(&good, b"<f8", b"<c8").into()),
                ),
                (Keys::ARRAY_ENC, Value::from("raw")),
            ],
            "unsupported dtype",
        ),
        (
            "marker",
            vec![
                (Keys::ARRAY_NPY, Value::Bytes(good.clone().into())),
                (Keys::ARRAY_ENC, Value::from("lz4")),
            ],
            "unknown array encoding",
        ),
        (
            "nomarker",
            vec![(Keys::ARRAY_NPY, Value::Bytes(good.clone().into()))],
            "unknown array encoding",
        ),
        (
            "badzlib",
            vec![
                (Keys::ARRAY_NPY, Value::Bytes(good.clone().into())),
                (Keys::ARRAY_ENC, Value::from("zlib")),
            ],
            "compressed array",
        ),
    ];
    for (name, fields, want) in cases {
        let _: () = client.hset(keys.wm(name), fields).await.expect("hset");
        let e = store.get_working_memory(name).await.unwrap_err();
        assert!(matches!(e, ClientError::Array { .. }), "{name}: {e}");
        let text = e.to_string();
        assert!(
            text.contains(want) && text.contains(&keys.wm(name)),
            "{name}: {text}"
        );
    }
    // A plain string under an array key: Redis's own WRONGTYPE, returned at once.
    let _: () = client
        .set(keys.attention("s"), "x", None, None, false)
        .await
        .expect("set");
    let e = store.get_attention("s").await.unwrap_err();
    assert!(e.to_string().contains("WRONGTYPE"), "{e}");
}

#[tokio::test]
async fn ttls_access_refresh_spike_windows_and_memory_stats() {
    let server = RedisServer::start().expect("redis");
    let client = connect(&server.url()).await;
    let keys = keys();
    let store = ArrayStore::new(client.clone(), keys.clone());
    let a = NdArray::from_f64(vec![0.25; 64]);

    // wm: 1 h, and a read pushes the expiry back.
    store
        .put_working_memory("p", &a, 1.0, &json!(null))
        .await
        .expect("put");
    let ttl: i64 = client.pttl(keys.wm("p")).await.expect("pttl");
    assert!(ttl > 0 && ttl <= 3_600_000, "{ttl}");
    let _: i64 = client
        .pexpire(keys.wm("p"), 5_000, None)
        .await
        .expect("shorten");
    store
        .get_working_memory("p")
        .await
        .expect("get")
        .expect("exists");
    let ttl: i64 = client.pttl(keys.wm("p")).await.expect("pttl");
    assert!(ttl > 5_000, "{ttl}");
    assert!(store.touch_working_memory("p").await.expect("touch"));
    assert!(!store.touch_working_memory("nope").await.expect("touch"));

    // attention: 10 min.
    store.put_attention("ctx", &a, 2.0).await.expect("put");
    let ttl: i64 = client.pttl(keys.attention("ctx")).await.expect("pttl");
    assert!(ttl > 0 && ttl <= 600_000, "{ttl}");
    assert_eq!(
        store
            .get_attention("ctx")
            .await
            .expect("get")
            .map(|w| w.timestamp),
        Some(2.0)
    );

    // spike trains: TTL per call, time-window queries through the index.
    for s in 1..=5i64 {
        store
            .put_spike_train(s * 1_000_000, &a, &[7, 8], Duration::from_secs(60))
            .await
            .expect("put");
    }
    store
        .put_spike_train(3_500_000, &a, &[9], Duration::from_millis(100))
        .await
        .expect("put short-lived");
    let ttl: i64 = client.pttl(keys.spikes(1_000_000)).await.expect("pttl");
    assert!(ttl > 100 && ttl <= 60_000, "{ttl}");
    let idx_ttl: i64 = client.pttl(keys.spikes_index()).await.expect("pttl");
    assert!(idx_ttl > 100, "index expiry was shortened: {idx_ttl}");
    eventually("the short-lived train to expire", || async {
        store
            .get_spike_train(3_500_000)
            .await
            .expect("get")
            .is_none()
    })
    .await;
    let got = store
        .spike_trains_between(2_000_000, 4_000_000, 100)
        .await
        .expect("window");
    let stamps: Vec<i64> = got.iter().map(|t| t.timestamp_us).collect();
    assert_eq!(stamps, vec![2_000_000, 3_000_000, 4_000_000]);
    assert_eq!(got[0].neuron_ids, vec![7, 8]);
    let members: Vec<String> = client
        .zrange(keys.spikes_index(), 0, -1, None, false, None, false)
        .await
        .expect("zrange");
    assert!(
        !members.contains(&"3500000".to_owned()),
        "expired train left in the index"
    );
    assert_eq!(
        store
            .spike_trains_between(0, 10_000_000, 2)
            .await
            .expect("limit")
            .len(),
        2
    );

    // Memory statistics per family, then clearing by SCAN.
    let stats = store.memory_stats().await.expect("stats");
    let by = |f: KeyFamily| {
        stats
            .iter()
            .find(|s| s.family == f)
            .copied()
            .expect("family")
    };
    assert_eq!(by(KeyFamily::WorkingMemory).keys, 1);
    assert_eq!(by(KeyFamily::Spikes).keys, 6, "5 trains + the index");
    assert_eq!(by(KeyFamily::Attention).keys, 1);
    assert!(by(KeyFamily::Spikes).bytes > by(KeyFamily::Attention).bytes);
    assert_eq!(
        families::clear(&client, &keys, KeyFamily::Spikes, true)
            .await
            .expect("dry run"),
        6
    );
    assert_eq!(
        store.memory_stats().await.expect("stats")[1].keys,
        6,
        "dry run deleted nothing"
    );
    assert_eq!(
        families::clear(&client, &keys, KeyFamily::Spikes, false)
            .await
            .expect("clear"),
        6
    );
    assert_eq!(
        families::stats(&client, &keys, KeyFamily::Spikes)
            .await
            .expect("stats")
            .keys,
        0
    );
    assert_eq!(
        families::stats(&client, &keys, KeyFamily::WorkingMemory)
            .await
            .expect("stats")
            .keys,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_are_retried_with_backoff_and_reply_errors_are_not() {
    let mut server = RedisServer::start().expect("redis");
    let client = connect_impatient(&server.url()).await;
    let keys = keys();
    let a = NdArray::from_f64(vec![1.0; 8]);

    // Redis away for good: the error comes back after the attempts, not a panic.
    let quick = RetryPolicy {
        attempts: 2,
        initial: Duration::from_millis(10),
        max: Duration::from_millis(20),
    };
    let store = ArrayStore::new(client.clone(), keys.clone()).with_retry(quick);
    server.kill().expect("kill");
    let e = store.put_attention("x", &a, 1.0).await.unwrap_err();
    assert!(matches!(e, ClientError::Redis(_)), "{e}");
    assert!(store.get_working_memory("x").await.is_err());

    // Redis back while the store is backing off: the write lands.
    let patient = RetryPolicy {
        attempts: 12,
        initial: Duration::from_millis(50),
        max: Duration::from_millis(800),
    };
    let store = store
        .with_retry(patient)
        .with_compression(CompressionPolicy { threshold: 16 });
    let put = tokio::spawn({
        let store = store.clone();
        let a = a.clone();
        async move { store.put_attention("x", &a, 1.0).await }
    });
    let server = tokio::task::spawn_blocking(move || {
        server.restart().expect("restart");
        server
    })
    .await
    .expect("restart task");
    put.await.expect("task").expect("put after restart");
    assert_eq!(
        store
            .get_attention("x")
            .await
            .expect("get")
            .map(|w| w.weights),
        Some(a)
    );

    // A reply error is answered once: the attempt counter stays at 1.
    let _: () = client
        .set(keys.wm("s"), "x", None, None, false)
        .await
        .expect("set");
    let attempts = std::sync::atomic::AtomicU32::new(0);
    let r: Result<Value, _> = patient
        .run(|| {
            attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            client.hgetall(keys.wm("s"))
        })
        .await;
    assert!(r.is_err());
    assert_eq!(attempts.load(std::sync::atomic::Ordering::SeqCst), 1);
    drop(server);
}
