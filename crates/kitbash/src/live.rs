//! The status view of `kitbash up` and `kitbash status`, as a pure function of a snapshot, a
//! width and a height: [`render`] returns lines that never exceed the width, and no more lines
//! than the height (dropping the trim lines, then the physics lines, then the reflex and Redis
//! lines, then the legend, then eliding long lists). Values are rounded for people (`12.3k`, `0.4s`).
//!
//! Layout (80 columns, most terminals' default):
//! ```text
//! kitbash up · Redis redis://127.0.0.1:6390 (started by up, pid 4100) · config …
//! started: feynman (pid 4242) · not built yet: entity, decay, ghost, bridge, archive
//! DAEMONS
//!   feynman  a1b2c3  pid 4242    ready     beat 400ms  8 parts  127.0.0.1:40123
//! STREAM           LENGTH  ADDED/s     LAG  PENDING   DEAD  READ BY
//!   ticks ×8        12.3k      200       0        -      0  feynman by partition:
//!   entity ×8          82        1       0        -      0  entity by partition:
//! TICK PARTITIONS (owner, position = ticks applied, lag)
//!   p0  a1b2c3   1.5k  lag 0       p1  a1b2c3   1.6k  lag 0
//! ENTITY PARTITIONS (owner, position = updates applied, lag)
//!   p0  d4e5f6     42  lag 0       p1  d4e5f6     40  lag 0
//! TRIM (entries below the floor may go; what holds it; who trims)
//!   queries       floor 1795856310843-3 held by group decay (pending) · trimmed by archive
//! SPY      Lévy Stable (α 2.41) · mass 258 · momentum -0.199 · friction 0.037 · …
//! REDIS 7.0.15 · 1.2M used · policy noeviction · aof on · 5 clients
//! lag: entries not processed yet · pending: delivered, not acknowledged · …
//! ```

use std::collections::BTreeMap;

use crate::status::{DaemonStatus, RedisStatus, Status, StreamStatus};

/// Everything the view shows; built from a [`Status`] plus what `up` knows.
#[derive(Clone, Debug, Default)]
pub struct LiveView {
    /// Paragraphs above the tables (what `up` started, where Redis and the config are).
    pub header: Vec<String>,
    /// Warnings (dead-letter streams above their alarm), below the header; never dropped.
    pub warnings: Vec<String>,
    /// Daemon instances from the fleet register.
    pub daemons: Vec<DaemonStatus>,
    /// Every stream.
    pub streams: Vec<StreamStatus>,
    /// The server, when known.
    pub redis: Option<RedisStatus>,
    /// The reflex path, when known.
    pub reflex: Option<crate::status::ReflexStatus>,
    /// Entries added per second, by logical stream name (`ticks:3`); absent = not measured.
    pub rates: BTreeMap<String, f64>,
    /// `physics:state` of a few symbols: (symbol, the state JSON).
    pub physics: Vec<(String, serde_json::Value)>,
}

impl LiveView {
    /// The view of a status report alone (no header, no rates).
    pub fn of_status(s: &Status) -> Self {
        Self {
            daemons: s.daemons.clone(),
            streams: s.streams.clone(),
            redis: Some(s.redis.clone()),
            reflex: Some(s.reflex.clone()),
            warnings: s.dead_letter_alarms.iter().map(|a| a.line()).collect(),
            ..Self::default()
        }
    }
}

/// Rounds for people: 3 significant digits, `k`/`M`/`G` above a thousand (`12.3k`).
pub fn human(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let a = v.abs();
    let (scaled, suffix) = if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let s = scaled.abs();
    let text = if s == 0.0 {
        "0".to_owned()
    } else if s >= 100.0 {
        format!("{scaled:.0}")
    } else if s >= 10.0 {
        format!("{scaled:.1}")
    } else if s >= 1.0 {
        format!("{scaled:.2}")
    } else if s >= 0.001 {
        format!("{scaled:.3}")
    } else {
        return format!("{v:.1e}");
    };
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    };
    format!("{text}{suffix}")
}

/// A count: exact below 10,000, then rounded (`12.3k`).
pub fn count(n: u64) -> String {
    if n < 10_000 {
        n.to_string()
    } else {
        human(n as f64)
    }
}

/// Milliseconds for people: `0.4s`, `12s`, `3.5m`.
pub fn duration_ms(ms: i64) -> String {
    let s = ms.max(0) as f64 / 1000.0;
    if ms < 1000 {
        format!("{}ms", ms.max(0))
    } else if s < 60.0 {
        format!("{}s", human(s))
    } else if s < 3600.0 {
        format!("{}m", human(s / 60.0))
    } else {
        format!("{}h", human(s / 3600.0))
    }
}

/// The short id of an instance (`feynman-host-4242-a1b2c3` → `a1b2c3`), as the view shows it.
pub fn short_id(instance: &str) -> &str {
    instance.rsplit('-').next().unwrap_or(instance)
}

/// Cuts `line` to `width` columns (characters), marking the cut with `…`.
fn fit(line: &str, width: usize) -> String {
    if line.chars().count() <= width {
        return line.to_owned();
    }
    let mut s: String = line.chars().take(width.saturating_sub(1)).collect();
    s.push('…');
    s
}

/// Word-wraps a paragraph to `width` columns; continuation lines are indented by two.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let len = line.chars().count();
        if len > 0 && len + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
            line.push_str("  ");
        }
        if !line.trim().is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.trim().is_empty() {
        lines.push(line);
    }
    lines
}

/// One block of the view; blocks with a lower `keep` are dropped first when lines run short.
struct Block {
    keep: u8,
    lines: Vec<String>,
}

/// Renders the view into at most `height` lines of at most `width` columns.
pub fn render(view: &LiveView, width: usize, height: usize) -> Vec<String> {
    let width = width.max(20);
    let mut blocks = vec![
        Block {
            keep: 9,
            lines: view.header.iter().flat_map(|p| wrap(p, width)).collect(),
        },
        Block {
            keep: 9,
            lines: warning_lines(&view.warnings, width, height),
        },
        Block {
            keep: 8,
            lines: daemon_lines(view, width),
        },
        Block {
            keep: 8,
            lines: stream_lines(view, width),
        },
        Block {
            keep: 7,
            lines: partition_lines(view, width),
        },
        Block {
            keep: 1,
            lines: trim_lines(view, width),
        },
        Block {
            keep: 2,
            lines: physics_lines(view, width),
        },
        Block {
            keep: 3,
            lines: view
                .reflex
                .as_ref()
                .and_then(reflex_line)
                .into_iter()
                .collect(),
        },
        Block {
            keep: 3,
            lines: view.redis.as_ref().map(redis_line).into_iter().collect(),
        },
        Block {
            keep: 4,
            lines: wrap(
                "lag: not processed yet · pending: not acknowledged · dead: dead letters · \
                 ADDED/s: per second · position: entries applied · ids end instance names",
                width,
            ),
        },
    ];
    let total = |b: &[Block]| b.iter().map(|b| b.lines.len()).sum::<usize>();
    while total(&blocks) > height {
        let Some((i, _)) = blocks
            .iter()
            .enumerate()
            .filter(|(_, b)| b.keep < 7 && !b.lines.is_empty())
            .min_by_key(|(_, b)| b.keep)
        else {
            break;
        };
        blocks[i].lines.clear();
    }
    let mut lines: Vec<String> = blocks.into_iter().flat_map(|b| b.lines).collect();
    if lines.len() > height {
        let hidden = lines.len() - height + 1;
        lines.truncate(height.saturating_sub(1));
        lines.push(format!("… {hidden} more lines: enlarge the terminal"));
    }
    lines.into_iter().map(|l| fit(&l, width)).collect()
}

/// The warnings, wrapped; at most a quarter of the height (at least 3 lines), the rest summed
/// up in a last line (`kitbash status` has the height for all of them).
fn warning_lines(warnings: &[String], width: usize, height: usize) -> Vec<String> {
    let cap = (height / 4).max(3);
    let mut out = Vec::new();
    for (i, w) in warnings.iter().enumerate() {
        let lines = wrap(w, width);
        let rest = warnings.len() - i;
        if out.len() + lines.len() + usize::from(rest > 1) > cap {
            out.push(format!("WARNING … {rest} more: see kitbash status"));
            break;
        }
        out.extend(lines);
    }
    out
}

fn daemon_lines(view: &LiveView, width: usize) -> Vec<String> {
    let mut out = vec!["DAEMONS".to_owned()];
    if view.daemons.is_empty() {
        out.push("  (none registered yet)".into());
    }
    let wide = width >= 110;
    for d in &view.daemons {
        let state = match (d.alive, d.ready) {
            (true, true) => "ready",
            (true, false) => "NOT ready",
            _ => "DEAD",
        };
        let parts = view
            .streams
            .iter()
            .filter_map(|s| s.partition.as_ref())
            .filter(|p| p.owner.as_deref() == Some(d.instance.as_str()))
            .count();
        let id = if wide {
            d.instance.as_str()
        } else {
            short_id(&d.instance)
        };
        let pid = d.pid.map_or("-".to_owned(), |p| p.to_string());
        let parts = if parts > 0 {
            format!("{parts} parts")
        } else {
            String::new()
        };
        let stats: String = d
            .stats
            .iter()
            .map(|(k, v)| format!(" · {} {v}", k.replace('_', " ")))
            .collect();
        out.push(format!(
            "  {:<8} {:<6}  pid {:<7} {:<9} beat {:<6} {:<8} {}{stats}",
            d.kind,
            id,
            pid,
            state,
            duration_ms(d.last_beat_ms_ago),
            parts,
            d.admin.as_deref().unwrap_or("")
        ));
    }
    out
}

fn is_partition(s: &StreamStatus) -> bool {
    s.partition.is_some()
}

/// The partitioned streams by family (`ticks`, `entity`), in the order they are listed.
fn families(view: &LiveView) -> Vec<(&str, Vec<&StreamStatus>)> {
    let mut out: Vec<(&str, Vec<&StreamStatus>)> = Vec::new();
    for s in view.streams.iter().filter(|s| is_partition(s)) {
        let family = s.stream.split(':').next().unwrap_or(s.stream.as_str());
        match out.iter_mut().find(|(f, _)| *f == family) {
            Some((_, v)) => v.push(s),
            None => out.push((family, vec![s])),
        }
    }
    out
}

fn stream_lines(view: &LiveView, width: usize) -> Vec<String> {
    let row = |name: &str,
               length: String,
               rate: String,
               lag: String,
               pending: String,
               dead: String,
               by: String| {
        format!("  {name:<13} {length:>7} {rate:>8} {lag:>7} {pending:>8} {dead:>6}  {by}")
    };
    let mut out = vec![fit(
        &row(
            "STREAM",
            "LENGTH".into(),
            "ADDED/s".into(),
            "LAG".into(),
            "PENDING".into(),
            "DEAD".into(),
            "READ BY".into(),
        )[2..],
        width,
    )];
    let rate_of = |names: &[&StreamStatus]| -> String {
        let rates: Vec<f64> = names
            .iter()
            .filter_map(|s| view.rates.get(&s.stream).copied())
            .collect();
        if rates.is_empty() {
            "-".into()
        } else {
            human(rates.iter().sum())
        }
    };
    for (family, parts) in families(view) {
        let lag: u64 = parts
            .iter()
            .filter_map(|s| s.partition.as_ref())
            .map(|p| p.lag)
            .sum();
        let worker = parts
            .iter()
            .find_map(|s| s.partition.as_ref())
            .map_or("-", |p| p.worker.as_str());
        // Cut to the width like the header: a long worker name must not push the line past it.
        out.push(fit(
            &row(
                &format!("{family} ×{}", parts.len()),
                count(parts.iter().map(|s| s.length).sum()),
                rate_of(&parts),
                count(lag),
                "-".into(),
                count(parts.iter().map(|s| s.dead_letters).sum()),
                format!("{worker} by partition:"),
            ),
            width,
        ));
    }
    let idle = |s: &StreamStatus| s.length == 0 && s.groups.is_empty() && s.dead_letters == 0;
    for s in view.streams.iter().filter(|s| !is_partition(s) && !idle(s)) {
        let (lag, pending, by) = if s.groups.is_empty() {
            ("-".to_owned(), "-".to_owned(), "-".to_owned())
        } else {
            let lag = s.groups.iter().map(|g| g.lag).max().unwrap_or(0);
            let pending = s.groups.iter().map(|g| g.pending).sum();
            let names: Vec<&str> = s.groups.iter().map(|g| g.name.as_str()).collect();
            (count(lag), count(pending), names.join(","))
        };
        out.push(row(
            &s.stream,
            count(s.length),
            rate_of(&[s]),
            lag,
            pending,
            count(s.dead_letters),
            by,
        ));
    }
    let idle: Vec<&str> = view
        .streams
        .iter()
        .filter(|s| !is_partition(s) && idle(s))
        .map(|s| s.stream.as_str())
        .collect();
    if !idle.is_empty() {
        out.push(format!(
            "  empty, nobody reads them yet: {}",
            idle.join(", ")
        ));
    }
    out
}

fn partition_lines(view: &LiveView, width: usize) -> Vec<String> {
    let mut out = Vec::new();
    for (family, streams) in families(view) {
        let cells: Vec<String> = streams
            .iter()
            .filter_map(|s| s.partition.as_ref())
            .map(|p| {
                let owner = p.owner.as_deref().map_or("-", short_id);
                let position = if p.position.is_some() {
                    count(p.consumed)
                } else {
                    "-".to_owned()
                };
                format!(
                    "p{:<3} {:<6} {:>6}  lag {:<6}",
                    p.partition,
                    owner,
                    position,
                    count(p.lag)
                )
            })
            .collect();
        let cell_w = cells.iter().map(|c| c.chars().count()).max().unwrap_or(1) + 2;
        let per_row = ((width.saturating_sub(2)) / cell_w).max(1);
        out.push(match family {
            "ticks" => "TICK PARTITIONS (owner, position = ticks applied, lag)".to_owned(),
            "entity" => "ENTITY PARTITIONS (owner, position = updates applied, lag)".to_owned(),
            other => format!("{} PARTITIONS (owner, position, lag)", other.to_uppercase()),
        });
        for chunk in cells.chunks(per_row) {
            let mut line = String::from("  ");
            for c in chunk {
                line.push_str(&format!("{c:<cell_w$}"));
            }
            out.push(line.trim_end().to_owned());
        }
    }
    out
}

/// One line per stream that holds entries: its trim floor, what holds it and who trims it.
fn trim_lines(view: &LiveView, width: usize) -> Vec<String> {
    let rows: Vec<String> = view
        .streams
        .iter()
        .filter(|s| s.length > 0)
        .filter_map(|s| {
            let t = s.trim.as_ref()?;
            let text = format!("{:<13} {}", s.stream, t.line());
            Some(
                wrap(&text, width.saturating_sub(4).max(16))
                    .into_iter()
                    .enumerate()
                    .map(|(i, l)| {
                        if i == 0 {
                            format!("  {l}")
                        } else {
                            format!("    {l}")
                        }
                    })
                    .collect::<Vec<_>>(),
            )
        })
        .flatten()
        .collect();
    if rows.is_empty() {
        return rows;
    }
    let mut out =
        vec!["TRIM (entries below the floor may go; what holds it; who trims)".to_owned()];
    out.extend(rows);
    out
}

fn physics_lines(view: &LiveView, width: usize) -> Vec<String> {
    let fields = [
        ("mass", "mass"),
        ("momentum", "momentum"),
        ("friction", "friction"),
        ("entropy", "entropy"),
        ("nash_dist", "nash"),
    ];
    view.physics
        .iter()
        .map(|(sym, v)| {
            let num = |k: &str| v.get(k).and_then(serde_json::Value::as_f64);
            let mut line = format!("{sym:<8}");
            let regime = v.get("regime").and_then(|r| r.as_str()).unwrap_or("?");
            match num("alpha_coefficient") {
                Some(a) => line.push_str(&format!(" {regime} (α {})", human(a))),
                None => line.push_str(&format!(" {regime}")),
            }
            for (k, label) in fields {
                let Some(x) = num(k) else { continue };
                let item = format!(" · {label} {}", human(x));
                if line.chars().count() + item.chars().count() > width {
                    break;
                }
                line.push_str(&item);
            }
            line
        })
        .collect()
}

/// The reflex path in one line; `None` while it has never run (no layout, no grains, cycle 0).
fn reflex_line(r: &crate::status::ReflexStatus) -> Option<String> {
    if r.layout.is_none() && r.grains == 0 && r.cycle == 0 {
        return None;
    }
    Some(format!(
        "REFLEX {} · cycle {} · {} hot · hat {} · {} grains · {} ghosts written",
        r.layout.as_deref().unwrap_or("-"),
        r.cycle,
        human(r.hot as f64),
        r.hat.as_deref().unwrap_or("-"),
        human(r.grains as f64),
        human(r.ghost_activations as f64),
    ))
}

fn redis_line(r: &RedisStatus) -> String {
    let cluster = if r.nodes > 1 {
        format!(" · cluster of {} primaries", r.nodes)
    } else {
        String::new()
    };
    format!(
        "REDIS {} · {} used · policy {} · aof {} · {} clients{cluster}",
        r.version,
        r.used_memory_human,
        r.maxmemory_policy,
        if r.aof_enabled { "on" } else { "off" },
        r.connected_clients
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_rounded_for_people() {
        assert_eq!(human(0.0), "0");
        assert_eq!(human(6.350_000_000_000_000_5), "6.35");
        assert_eq!(human(12_345.0), "12.3k");
        assert_eq!(human(999.4), "999");
        assert_eq!(human(1_500_000.0), "1.5M");
        assert_eq!(human(-0.012_34), "-0.012");
        assert_eq!(human(f64::NAN), "-");
        assert_eq!(count(9_999), "9999");
        assert_eq!(count(123_456), "123k");
        assert_eq!(duration_ms(400), "400ms");
        assert_eq!(duration_ms(2_500), "2.5s");
        assert_eq!(duration_ms(90_000), "1.5m");
        assert_eq!(short_id("feynman-host-4242-a1b2c3"), "a1b2c3");
    }

    #[test]
    fn fit_and_wrap_respect_the_width() {
        assert_eq!(fit("abcdef", 4), "abc…");
        for l in wrap("one two three four five six seven eight nine ten", 12) {
            assert!(l.chars().count() <= 12, "{l}");
        }
    }
}
