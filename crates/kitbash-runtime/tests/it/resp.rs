//! `resp::StreamReader` against a real server: the lean path reads exactly what fred's path
//! reads (binary fields, empty values, deleted pending entries), logs in with a password and a
//! database, reports server errors as fred did (`NOGROUP`), and comes back by itself after a
//! Redis restart and after a read that timed out.

use std::time::Duration;

use fred::prelude::*;
use fred::types::Value;
use kitbash_runtime::error::RuntimeError;
use kitbash_runtime::resp::StreamReader;
use kitbash_testkit::RedisServer;

use crate::support::*;

const T: Duration = Duration::from_secs(5);

async fn client_of(url: &str) -> Client {
    let c = kitbash_runtime::redis::builder(&redis_config(url))
        .expect("builder")
        .build()
        .expect("client");
    c.init().await.expect("connect");
    c
}

/// `XREAD COUNT 100 STREAMS key 0` through both paths.
async fn both(
    url: &str,
    key: &str,
) -> (
    Vec<kitbash_runtime::entries::StreamEntry>,
    Vec<kitbash_runtime::entries::StreamEntry>,
) {
    let mut lean = StreamReader::with_lean(client_of(url).await, true);
    assert!(
        lean.is_raw(),
        "one server over TCP reads on the lean connection"
    );
    let args = ["COUNT", "100", "STREAMS", key, "0"];
    let a = lean
        .read("XREAD", key, &args, false, T)
        .await
        .expect("lean read");
    let fred_client = client_of(url).await;
    let v: Value = fred_client
        .custom(
            fred::cmd!("XREAD"),
            args.iter().map(|a| Value::from(*a)).collect::<Vec<_>>(),
        )
        .await
        .expect("fred read");
    let b = kitbash_runtime::entries::parse_xread(&v).expect("parse");
    (a, b)
}

#[tokio::test]
async fn the_lean_path_reads_what_fred_reads() {
    let server = RedisServer::start().expect("redis");
    let c = client_of(&server.url()).await;
    let key = "s";
    let binary: Vec<u8> = (0..=255u8).chain(*b"\r\n\r\n").collect();
    let big = vec![b'x'; 300_000]; // more than one socket read
    let _: String = c
        .xadd(
            key,
            false,
            None,
            "1-1",
            vec![("d", binary.as_slice()), ("", b"".as_slice())],
        )
        .await
        .expect("xadd");
    let _: String = c
        .xadd(key, false, None, "2-0", vec![("big", big.as_slice())])
        .await
        .expect("xadd");
    for i in 0..50 {
        let _: String = c
            .xadd(key, false, None, "*", vec![("n", i.to_string())])
            .await
            .expect("xadd");
    }
    let (lean, fred) = both(&server.url(), key).await;
    assert_eq!(lean.len(), 52);
    assert_eq!(lean, fred, "entry for entry, byte for byte");
    let first = lean[0].fields.as_ref().expect("fields");
    assert_eq!(first[0].1.as_ref(), binary.as_slice());
    assert_eq!(first[1], (bytes::Bytes::new(), bytes::Bytes::new()));
    assert_eq!(lean[1].fields.as_ref().expect("fields")[0].1.len(), 300_000);

    // Nothing: a missing stream and a block that ends empty are both no entries.
    let mut r = StreamReader::with_lean(client_of(&server.url()).await, true);
    let none = r
        .read(
            "XREAD",
            "nope",
            &["BLOCK", "10", "STREAMS", "nope", "$"],
            true,
            T,
        )
        .await
        .expect("read");
    assert!(none.is_empty());

    // A pending entry deleted since: its id with no body (as fred's path gives it).
    let _: Value = c
        .custom(fred::cmd!("XGROUP"), vec!["CREATE", key, "g", "0"])
        .await
        .expect("group");
    let args = ["GROUP", "g", "me", "COUNT", "1", "STREAMS", key, ">"];
    let got = r
        .read("XREADGROUP", key, &args, false, T)
        .await
        .expect("read");
    assert_eq!(got[0].id, "1-1");
    let _: i64 = c.xdel(key, "1-1").await.expect("xdel");
    let args = ["GROUP", "g", "me", "COUNT", "10", "STREAMS", key, "0"];
    let got = r
        .read("XREADGROUP", key, &args, false, T)
        .await
        .expect("read");
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].id.as_str(), &got[0].fields), ("1-1", &None));

    // A server error is fred's error with Redis's message, and the connection stays usable.
    let args = ["GROUP", "gone", "me", "STREAMS", key, ">"];
    let e = r
        .read("XREADGROUP", key, &args, false, T)
        .await
        .expect_err("no group");
    assert!(e.is_nogroup(), "{e}");
    assert!(!e.is_transient());
    let again = r
        .read("XREAD", key, &["COUNT", "1", "STREAMS", key, "0"], false, T)
        .await
        .expect("read after an error");
    assert_eq!(again.len(), 1);
}

#[tokio::test]
async fn it_logs_in_with_a_password_and_a_database() {
    let server = RedisServer::builder()
        .requirepass("s3cret")
        .start()
        .expect("redis");
    let url = format!("redis://:s3cret@127.0.0.1:{}/3", server.port());
    let c = client_of(&url).await;
    let _: String = c
        .xadd("k", false, None, "5-5", vec![("f", "v")])
        .await
        .expect("xadd in db 3");
    let mut r = StreamReader::with_lean(client_of(&url).await, true);
    assert!(r.is_raw());
    let got = r
        .read("XREAD", "k", &["STREAMS", "k", "0"], false, T)
        .await
        .expect("read in db 3");
    assert_eq!(got.len(), 1, "the entry is found in database 3");
    assert_eq!(got[0].id, "5-5");

    let wrong = format!("redis://:nope@127.0.0.1:{}", server.port());
    let cfg = redis_config(&wrong);
    let fred_client = kitbash_runtime::redis::builder(&cfg)
        .expect("builder")
        .build()
        .expect("client");
    let mut bad = StreamReader::with_lean(fred_client, true);
    let e = bad
        .read("XREAD", "k", &["STREAMS", "k", "0"], false, T)
        .await
        .expect_err("wrong password");
    assert!(e.to_string().contains("AUTH"), "{e}");
}

#[tokio::test]
async fn it_reconnects_after_a_restart_and_after_a_timeout() {
    let mut server = RedisServer::start().expect("redis");
    let url = server.url();
    let c = client_of(&url).await;
    let _: String = c
        .xadd("k", false, None, "1-0", vec![("f", "v")])
        .await
        .expect("xadd");
    let mut r = StreamReader::with_lean(client_of(&url).await, true);
    let args = ["STREAMS", "k", "0"];
    assert_eq!(
        r.read("XREAD", "k", &args, false, T)
            .await
            .expect("read")
            .len(),
        1
    );

    server.restart().expect("restart");
    // The old socket is dead: at most one read fails (transient), then it reads again.
    let mut failures = 0;
    let got = loop {
        match r.read("XREAD", "k", &args, false, T).await {
            Ok(got) => break got,
            Err(e) => {
                assert!(e.is_transient(), "a broken connection is transient: {e}");
                failures += 1;
                assert!(failures < 50, "never reconnected: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert!(got.is_empty() || got[0].id == "1-0", "{got:?}");

    // A reply later than the timeout: a transient error, the connection dropped with its late
    // reply, and the next read answers its own command.
    let blocking = ["BLOCK", "2000", "STREAMS", "k2", "$"];
    let e = r
        .read("XREAD", "k2", &blocking, true, Duration::from_millis(200))
        .await
        .expect_err("timed out");
    assert!(
        matches!(&e, RuntimeError::Redis(f) if *f.kind() == fred::error::ErrorKind::Timeout),
        "{e}"
    );
    assert!(e.is_transient());
    let c = client_of(&url).await;
    let _: String = c
        .xadd("k3", false, None, "7-7", vec![("f", "v")])
        .await
        .expect("xadd");
    let got = r
        .read("XREAD", "k3", &["STREAMS", "k3", "0"], false, T)
        .await
        .expect("read");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, "7-7", "its own reply, not the timed-out one's");

    // A read whose future is dropped half way (a caller's select or timeout) takes its
    // connection with it.
    let dropped = tokio::time::timeout(
        Duration::from_millis(100),
        r.read("XREAD", "k2", &blocking, true, T),
    )
    .await;
    assert!(dropped.is_err(), "the outer timeout fired first");
    let got = r
        .read("XREAD", "k3", &["STREAMS", "k3", "0"], false, T)
        .await
        .expect("read");
    assert_eq!(got[0].id, "7-7", "after a dropped read, its own reply");
}
