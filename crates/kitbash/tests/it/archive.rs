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
