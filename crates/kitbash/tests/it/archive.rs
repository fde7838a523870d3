//! `kitbash archive ls|verify|export` on an archive written by kitbash-archive's store: a whole
//! archive verifies (exit 0), a flipped byte is named (exit 1), `ls` lists the ranges.

use std::process::{Command, Output};

use kitbash_archive::format::{Entry, Layout, Segment};
use kitbash_archive::store::Store;
use kitbash_schema::StreamName;

fn kitbash(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kitbash"))
        .args(args)
        .env("KITBASH_CONFIG_DIR", "/nonexistent")
        .env_remove("KITBASH_PROFILE")
        .env("KITBASH__REDIS__NAMESPACE", "t")
        .output()
        .expect("kitbash")
}

#[test]
fn verify_names_a_flipped_byte_and_ls_lists_the_ranges() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut st = Store::open(&dir.path().join("t"), StreamName::Queries, 1).expect("open");
    let mut names = Vec::new();
    for file in 0..2u64 {
        let mut seg = Segment::new(Layout::Plain);
        for i in 0..10u64 {
            seg.push(&Entry {
                id: format!("{}-{i}", 1_000 + file),
                fields: vec![(b"k".to_vec(), format!("v{i}").into_bytes())],
            })
            .expect("push");
        }
        names.push(st.commit(&mut seg).expect("commit").name);
    }
    let d = dir.path().display().to_string();
    let out = kitbash(&["archive", "verify", "--dir", &d]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("queries: ok, 2 files, 20 entries"),
        "{stdout}"
    );

    let out = kitbash(&["archive", "ls", "queries", "--dir", &d]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("1000-0 .. 1000-9  10 entries"), "{stdout}");
    let out = kitbash(&["archive", "export", "queries", "--dir", &d]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("read_parquet('"));

    let path = dir.path().join("t/queries").join(&names[1]);
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[10] ^= 0x80;
    std::fs::write(&path, bytes).expect("write");
    let out = kitbash(&["archive", "verify", "--dir", &d]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!("queries: {}: checksum mismatch", names[1])),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_copies_a_stream_into_a_sandbox_namespace_with_its_ids() {
    use fred::prelude::*;
    let server = kitbash_testkit::RedisServer::start().expect("redis");
    let cfg = kitbash_runtime::config::RedisConfig {
        url: server.url(),
        ..Default::default()
    };
    let c = kitbash_runtime::redis::connect_client(&cfg, std::time::Duration::from_secs(10))
        .await
        .expect("connect");
    let keys = |ns: &str| {
        kitbash_schema::Keys::new(kitbash_schema::Namespace::new(ns.to_owned()).expect("ns"))
    };
    let src = keys("t").stream(StreamName::Queries);
    for i in 0..20 {
        let _: String = c
            .xadd(
                &src,
                false,
                None,
                "*",
                vec![("type", "query"), ("n", &i.to_string())],
            )
            .await
            .expect("xadd");
    }
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kitbash"))
            .args(args)
            .env("KITBASH_CONFIG_DIR", "/nonexistent")
            .env_remove("KITBASH_PROFILE")
            .env("KITBASH__REDIS__URL", server.url())
            .env("KITBASH__REDIS__NAMESPACE", "t")
            .output()
            .expect("kitbash")
    };
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path().display().to_string();
    let out = run(&["replay", "queries", "--dry-run", "--dir", &d]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("20 entries (0 from the archive, 20 from Redis)"),
        "{stderr}"
    );
    assert!(stderr.contains("\"query\": 20"), "{stderr}");
    let out = run(&["replay", "queries", "--dir", &d]);
    assert!(!out.status.success(), "no target given");
    let out = run(&["replay", "queries", "--to-namespace", "t2", "--dir", &d]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let a: fred::types::Value = c.xrange(&src, "-", "+", None).await.expect("xrange");
    let b: fred::types::Value = c
        .xrange(keys("t2").stream(StreamName::Queries), "-", "+", None)
        .await
        .expect("xrange");
    assert_eq!(a, b, "same ids, same fields");
}
