//! `kitbash grains` and `kitbash hat` with the real binary: a grain file with one bad line is
//! refused with that line's number and nothing is imported; a good one is imported whole and
//! announced; hats are the seed's five, masks sha256(name).

use std::process::Command;

use fred::prelude::*;
use kitbash_schema::{Keys, Namespace};
use kitbash_testkit::RedisServer;

fn kitbash(args: &[&str], url: &str, ns: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kitbash"))
        .args(args)
        .env(
            "KITBASH_CONFIG_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../config"),
        )
        .env_remove("KITBASH_PROFILE")
        .env("KITBASH__REDIS__URL", url)
        .env("KITBASH__REDIS__NAMESPACE", ns)
        .output()
        .expect("run kitbash")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grains_import_is_all_or_nothing_and_hats_are_the_seeds() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let k = Keys::new(Namespace::new(ns.clone()).expect("ns"));
    let c = fred::clients::Client::new(
        fred::types::config::Config::from_url(&server.url()).expect("url"),
        None,
        None,
        None,
    );
    c.init().await.expect("connect");
    let dir = tempfile::tempdir().expect("tmp");
    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../config/demo/grains.jsonl"
    );
    let text = std::fs::read_to_string(sample).expect("sample");
    let mut lines: Vec<&str> = text.lines().collect();
    lines[57] = r#"{"id":58,"axiom":"x","weight":1.0,"plus":"0f","minus":"f0"}"#;
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, lines.join("\n")).expect("write");
    let out = kitbash(
        &["grains", "import", bad.to_str().expect("path")],
        &server.url(),
        &ns,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 58") && err.contains("nothing imported"),
        "{err}"
    );
    let n: u64 = c.scard(k.grain_index()).await.expect("scard");
    assert_eq!(n, 0, "nothing half-imported");
    let out = kitbash(&["grains", "import", sample], &server.url(), &ns);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n: u64 = c.scard(k.grain_index()).await.expect("scard");
    assert_eq!(n, 200);
    let out = kitbash(&["grains", "list", "--json"], &server.url(), &ns);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 200);
    let out = kitbash(&["hat", "set", "creative"], &server.url(), &ns);
    assert!(!out.status.success(), "no masks yet");
    assert!(
        kitbash(&["hat", "init"], &server.url(), &ns)
            .status
            .success()
    );
    assert!(
        kitbash(&["hat", "set", "creative"], &server.url(), &ns)
            .status
            .success()
    );
    let current: String = c.get(k.hat_current()).await.expect("get");
    assert_eq!(current, "creative");
    let mask: Vec<u8> = c.get(k.hat_mask("neutral")).await.expect("get");
    assert_eq!(
        mask,
        kitbash_client::reflex::hat_mask_of("neutral").to_vec()
    );
    let version: u64 = c.get(k.reflex_version()).await.expect("get");
    assert_eq!(version, 3, "import, init, set each announced a new version");
}
