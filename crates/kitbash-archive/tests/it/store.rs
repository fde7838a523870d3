//! The store: commits listed in the manifest, overlaps and stale epochs refused, a crashed
//! commit's files removed at open, damage reported by `verify`.

use kitbash_archive::format::{Layout, Segment};
use kitbash_archive::store::{self, Store, StoreError};
use kitbash_schema::StreamName;

use crate::support::*;

const S: StreamName = StreamName::Ticks(0);

fn segment(from: usize, n: usize) -> Segment {
    let all = entries(tick_stream_bodies((from + n) as u64));
    let mut seg = Segment::new(Layout::Ticks);
    for e in &all[from..] {
        seg.push(e).expect("push");
    }
    seg
}

#[test]
fn commits_are_listed_verified_and_read_back_in_order() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut st = Store::open(dir.path(), S, 1).expect("open");
    st.commit(&mut segment(0, 100)).expect("commit 1");
    st.commit(&mut segment(100, 50)).expect("commit 2");
    let report = store::verify(dir.path(), S).expect("verify");
    assert_eq!((report.files, report.rows), (2, 150));
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(
        store::read_all(dir.path(), S).expect("read"),
        entries(tick_stream_bodies(150))
    );
    assert!(dir.path().join("ticks/p=0/manifest.json").exists());
}

#[test]
fn an_overlapping_segment_and_a_stale_epoch_are_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut st = Store::open(dir.path(), S, 1).expect("open");
    st.commit(&mut segment(0, 100)).expect("commit");
    let mut again = segment(50, 100);
    assert!(matches!(
        st.commit(&mut again),
        Err(StoreError::Overlap { .. })
    ));
    assert_eq!(again.len(), 100, "a refused segment keeps its entries");

    // A newer lease holder takes over; the old one's next commit is fenced and lists nothing.
    let mut newer = Store::open(dir.path(), S, 2).expect("open at 2");
    newer.commit(&mut segment(100, 10)).expect("commit at 2");
    let err = st.commit(&mut segment(110, 10)).expect_err("fenced");
    assert!(
        matches!(
            err,
            StoreError::Fenced {
                found: 2,
                ours: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        Store::open(dir.path(), S, 1),
        Err(StoreError::Fenced { .. })
    ));
    let report = store::verify(dir.path(), S).expect("verify");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.rows, 110);
}

#[test]
fn open_removes_what_a_crashed_commit_left_and_verify_reports_damage() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut st = Store::open(dir.path(), S, 1).expect("open");
    let file = st.commit(&mut segment(0, 100)).expect("commit");
    let sdir = dir.path().join("ticks/p=0");
    // A crash after the rename, before the manifest; and one mid-write.
    std::fs::write(
        sdir.join("00000000000000000099-00000000000000000000.parquet"),
        b"orphan",
    )
    .expect("write");
    std::fs::write(sdir.join("x.parquet.tmp"), b"torn").expect("write");
    let report = store::verify(dir.path(), S).expect("verify");
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(report.problems[0].contains("not in the manifest"));
    drop(Store::open(dir.path(), S, 2).expect("reopen"));
    assert!(!sdir.join("x.parquet.tmp").exists());
    assert!(
        store::verify(dir.path(), S)
            .expect("verify")
            .problems
            .is_empty()
    );

    // One flipped byte in the middle of a file.
    let path = sdir.join(&file.name);
    let mut bytes = std::fs::read(&path).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&path, &bytes).expect("write");
    let report = store::verify(dir.path(), S).expect("verify");
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(
        report.problems[0].contains("checksum mismatch"),
        "{:?}",
        report.problems
    );
    // A missing file.
    std::fs::remove_file(&path).expect("rm");
    let report = store::verify(dir.path(), S).expect("verify");
    assert!(
        report.problems[0].contains("missing"),
        "{:?}",
        report.problems
    );
}
