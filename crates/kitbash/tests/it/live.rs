//! The live view of `kitbash up` fits the terminal: rendered from a busy status snapshot into
//! 80×24 it has no line over 80 columns and no more than 24 lines, and still shows every daemon
//! instance, the partitions as partitions, the streams with rates, and a legend; a wider
//! terminal gets more.

use kitbash::live::{LiveView, render};
use kitbash::status::{
    DaemonStatus, GroupStatus, PartitionStatus, RedisStatus, Status, StreamStatus, TrimStatus,
};

fn busy_status() -> Status {
    let daemons = (0..3)
        .map(|i| DaemonStatus {
            kind: "feynman".into(),
            instance: format!(
                "feynman-a-very-long-host-name.example.internal-{}-{:06x}",
                400_000 + i,
                0xa1_b2c0 + i
            ),
            alive: i != 2,
            ready: i == 0,
            last_beat_ms_ago: 123_456 * i64::from(i),
            host: Some("a-very-long-host-name.example.internal".into()),
            pid: Some(4_000_000 + i),
            admin: Some(format!("[2001:db8::1234:5678:9abc]:{}", 40_000 + i)),
            stats: Default::default(),
        })
        .collect();
    let mut streams: Vec<StreamStatus> = (0..8)
        .map(|p| StreamStatus {
            stream: format!("ticks:{p}"),
            key: format!("ns:{{ticks:{p}}}"),
            length: 98_765_432_101,
            entries_added: 98_765_432_101,
            last_id: "1795856310843-123456".into(),
            dead_letters: 12_345_678,
            groups: vec![],
            partition: Some(PartitionStatus {
                partition: p,
                worker: "feynman".into(),
                owner: Some(format!("feynman-a-very-long-host-name-400000-{p:06x}")),
                position: Some("1795856310843-123456".into()),
                consumed: 98_765_000_000,
                lag: 432_101,
                caught_up: false,
            }),
            trim: None,
        })
        .collect();
    for name in ["queries", "entity", "memory", "physics", "crossings"] {
        streams.push(StreamStatus {
            stream: name.into(),
            key: name.into(),
            length: 1_234_567_890,
            entries_added: 9_876_543_210,
            last_id: "1795856310843-0".into(),
            dead_letters: 99_999,
            groups: ["decay", "archive", "a-group-with-a-long-name"]
                .iter()
                .map(|g| GroupStatus {
                    name: (*g).into(),
                    consumers: 12,
                    pending: 123_456,
                    lag: 7_654_321,
                    lag_exact: true,
                    caught_up: false,
                    last_delivered_id: "1795856310843-0".into(),
                })
                .collect(),
            partition: None,
            trim: Some(TrimStatus {
                by: "a-daemon-with-a-long-name".into(),
                by_key: Some("a-daemon-with-a-long-name.a_long_bound_key_name".into()),
                archive_absent: true,
                floor: Some("1795856310843-18446744073709551615".into()),
                held_by: "group a-group-with-a-long-name (undelivered)".into(),
                archived: None,
                removed: None,
            }),
        });
    }
    Status {
        daemons,
        streams,
        redis: RedisStatus {
            version: "7.0.15".into(),
            used_memory: 123_456_789_012,
            used_memory_human: "114.98G".into(),
            maxmemory_policy: "noeviction".into(),
            aof_enabled: true,
            connected_clients: 12_345,
            nodes: 1,
        },
        reflex: kitbash::status::ReflexStatus {
            layout: Some("compact/16777216".into()),
            cycle: 123_456_789,
            hot: 12_345_678,
            hat: Some("deliberative".into()),
            grains: 1_234_567,
            ghost_activations: 123_456_789_012,
            version: 123_456,
            recomputed_version: Some(123_455),
        },
        dead_letter_alarms: vec![],
        source: None,
    }
}

fn busy_view() -> LiveView {
    let mut view = LiveView::of_status(&busy_status());
    view.header = vec![
        "kitbash up · Redis redis://127.0.0.1:6390 (started by up, pid 4100000) · config /home/someone/src/a/rather/deep/checkout/of/kitbash/config, profile local · Ctrl-C stops everything".into(),
        "started: feynman (pid 4000000) · logs in /home/someone/src/a/rather/deep/checkout/of/kitbash/.kitbash · not built yet: entity, decay, ghost, bridge, archive".into(),
    ];
    for s in &view.streams {
        view.rates.insert(s.stream.clone(), 123_456.789_012_345);
    }
    let state = serde_json::json!({
        "mass": -123_456.789_012_3, "momentum": 0.000_012_345_678_9, "friction": 6.350_000_000_000_000_5,
        "entropy": 3.321_928_094_111_222, "nash_dist": -12.345_678_9, "regime": "Lévy Stable",
        "alpha_coefficient": 2.718_111_222_333_444,
    });
    view.physics = vec![("SPY".into(), state.clone()), ("BTC-USD".into(), state)];
    view
}

fn assert_fits(lines: &[String], width: usize, height: usize) {
    assert!(
        lines.len() <= height,
        "{} lines > {height}:\n{}",
        lines.len(),
        lines.join("\n")
    );
    for l in lines {
        assert!(
            l.chars().count() <= width,
            "line of {} columns > {width}: {l:?}",
            l.chars().count()
        );
    }
}

#[test]
fn a_busy_fleet_fits_80_by_24() {
    let lines = render(&busy_view(), 80, 24);
    assert_fits(&lines, 80, 24);
    let text = lines.join("\n");
    // One line per daemon instance, by its short id.
    for id in ["a1b2c0", "a1b2c1", "a1b2c2"] {
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.contains(id) && l.contains("pid"))
                .count(),
            1,
            "{id}:\n{text}"
        );
    }
    assert!(text.contains("TICK PARTITIONS"), "{text}");
    assert!(text.contains("p7"), "every partition shown:\n{text}");
    assert!(
        text.contains("ADDED/s") && text.contains("123k"),
        "rates, rounded:\n{text}"
    );
    assert!(text.contains("lag:"), "a legend:\n{text}");
    assert!(
        text.contains("not built yet"),
        "the start-up facts stay:\n{text}"
    );
    assert!(!text.contains("0000000"), "no float noise:\n{text}");
}

#[test]
fn a_wider_terminal_shows_more() {
    let narrow = render(&busy_view(), 80, 24);
    let wide = render(&busy_view(), 160, 50);
    assert_fits(&wide, 160, 50);
    assert!(
        wide.iter().any(|l| l.chars().count() > 80),
        "uses the width"
    );
    let wide_text = wide.join("\n");
    let narrow_text = narrow.join("\n");
    assert!(
        wide_text.contains("REDIS 7.0.15") && wide_text.contains("Lévy Stable (α 2.72)"),
        "rows to spare show Redis and the physics too:\n{wide_text}"
    );
    assert!(
        !narrow_text.contains("Lévy Stable"),
        "dropped first when short"
    );
    assert!(
        wide.iter()
            .any(|l| l.contains("feynman-a-very-long-host-name.example.internal")),
        "full instance names when there is room:\n{}",
        wide.join("\n")
    );
}

#[test]
fn dead_letter_warnings_come_first_and_many_are_summed_up() {
    let mut status = busy_status();
    status.dead_letter_alarms = status
        .streams
        .iter()
        .map(|s| kitbash::status::DeadLetterAlarm {
            stream: s.stream.clone(),
            key: format!("{}:dead", s.key),
            length: s.dead_letters,
            threshold: 1_000,
        })
        .collect();
    let view = LiveView::of_status(&status);
    let lines = render(&view, 80, 24);
    assert_fits(&lines, 80, 24);
    let text = lines.join("\n");
    assert!(
        lines[0].starts_with("WARNING dead letters: ns:{ticks:0}:dead holds 12345678 entries"),
        "the first warning on top, naming the stream, its length:\n{text}"
    );
    assert!(
        text.contains("dead_letter_alarm = 1000"),
        "and the threshold:\n{text}"
    );
    assert!(text.contains("more: see kitbash status"), "{text}");
    assert!(
        text.contains("DAEMONS"),
        "the fleet is still shown:\n{text}"
    );
    // `kitbash status` (no height limit) prints every one.
    let all = render(&view, 80, usize::MAX);
    let n = all
        .iter()
        .filter(|l| l.starts_with("WARNING dead letters"))
        .count();
    assert_eq!(n, status.dead_letter_alarms.len(), "{}", all.join("\n"));
}

#[test]
fn tiny_and_empty_views_fit_too() {
    assert_fits(&render(&busy_view(), 40, 10), 40, 10);
    assert_fits(&render(&LiveView::default(), 80, 24), 80, 24);
}

#[test]
fn entity_partitions_get_their_own_row_and_block() {
    let mut status = busy_status();
    for p in 0..8 {
        status.streams.push(StreamStatus {
            stream: format!("entity:{p}"),
            key: format!("ns:{{entity:{p}}}"),
            length: 1_000,
            entries_added: 1_000,
            last_id: "1795856310843-0".into(),
            dead_letters: 1,
            groups: vec![],
            partition: Some(PartitionStatus {
                partition: p,
                worker: "entity".into(),
                owner: Some(format!("entity-h-1-{p:06x}")),
                position: Some("1795856310843-0".into()),
                consumed: 990,
                lag: 10,
                caught_up: false,
            }),
            trim: None,
        });
    }
    let view = LiveView::of_status(&status);
    let lines = render(&view, 120, 60);
    assert_fits(&lines, 120, 60);
    let text = lines.join("\n");
    let row: Vec<&str> = lines
        .iter()
        .find(|l| l.trim_start().starts_with("entity ×8"))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    // entity ×8: length 8000, rate unknown, lag 80 (summed), pending -, dead 8, read by entity.
    assert_eq!(
        row,
        [
            "entity",
            "×8",
            "8000",
            "-",
            "80",
            "-",
            "8",
            "entity",
            "by",
            "partition:"
        ],
        "{text}"
    );
    assert!(text.contains("TICK PARTITIONS"), "{text}");
    assert!(text.contains("ENTITY PARTITIONS"), "{text}");
    assert_fits(&render(&view, 80, 24), 80, 24);
}
