//! `kitbash archive ls|verify|export`: the archive's files and ranges, their checksums and
//! continuity, and the DuckDB line that reads a stream's archive.

use std::path::{Path, PathBuf};

use kitbash_archive::store;
use kitbash_runtime::Config;
use kitbash_schema::StreamName;

/// The archive root of `config`'s namespace: `dir` if given; else `[archive] dir`, except that
/// the built-in default gives way to a local `kitbash up`'s `.kitbash/archive` when that exists
/// (the directory `up` hands its archive daemons).
pub fn root(config: &Config, dir: Option<&Path>) -> PathBuf {
    let base = match dir {
        Some(d) => d.to_owned(),
        None => {
            let local = PathBuf::from(".kitbash/archive");
            if config.archive.dir == kitbash_runtime::config::ArchiveConfig::default().dir
                && local.is_dir()
            {
                local
            } else {
                PathBuf::from(&config.archive.dir)
            }
        }
    };
    base.join(&config.redis.namespace)
}

/// The streams to look at: the one named, or every stream of the fleet.
pub fn streams(config: &Config, stream: Option<&str>) -> anyhow::Result<Vec<StreamName>> {
    match stream {
        Some(s) => StreamName::parse(s)
            .map(|s| vec![s])
            .ok_or_else(|| anyhow::anyhow!("{s:?} is not a stream name (queries, ticks:0, …)")),
        None => Ok(StreamName::all(
            config.feynman.partitions,
            config.entity.partitions,
        )),
    }
}

/// `ls`: one line per file (or JSON), streams without an archive skipped.
pub fn ls(root: &Path, streams: &[StreamName], json: bool) -> anyhow::Result<()> {
    let mut all = Vec::new();
    for &s in streams {
        let m = store::read_manifest(&store::stream_dir(root, s), s)?;
        if m.files.is_empty() {
            continue;
        }
        if json {
            all.push(serde_json::to_value(&m)?);
            continue;
        }
        let rows: u64 = m.files.iter().map(|f| f.rows).sum();
        let bytes: u64 = m.files.iter().map(|f| f.bytes).sum();
        println!(
            "{}  {} files  {rows} entries  {bytes} bytes  epoch {}",
            s.logical(),
            m.files.len(),
            m.epoch
        );
        for f in &m.files {
            println!(
                "  {}  {} .. {}  {} entries  {} bytes",
                f.name, f.first_id, f.last_id, f.rows, f.bytes
            );
        }
    }
    if json {
        println!("{}", serde_json::Value::Array(all));
    }
    Ok(())
}

/// `verify`: every problem on one line; `Ok(false)` when there is any.
pub fn verify(root: &Path, streams: &[StreamName]) -> anyhow::Result<bool> {
    let mut whole = true;
    for &s in streams {
        let r = store::verify(root, s)?;
        if r.files == 0 && r.problems.is_empty() {
            continue;
        }
        if r.problems.is_empty() {
            println!("{}: ok, {} files, {} entries", s.logical(), r.files, r.rows);
        } else {
            whole = false;
            for p in &r.problems {
                println!("{}: {p}", s.logical());
            }
        }
    }
    Ok(whole)
}

/// `export`: the DuckDB query that reads a stream's archive as a table.
pub fn export(root: &Path, stream: StreamName) -> String {
    let dir = store::stream_dir(root, stream);
    format!(
        "duckdb -c \"SELECT * FROM read_parquet('{}/*.parquet') ORDER BY id_ms, id_seq\"",
        dir.display()
    )
}

/// Parses a replay bound: an entry id (`1700000000000-3`), a time in Unix ms (`1700000000000`),
/// or a time ago (`90s`, `15m`, `2h`, `7d`) relative to `now_ms`. `end` makes a bare time the
/// last id of its millisecond.
pub fn parse_bound(s: &str, now_ms: u64, end: bool) -> anyhow::Result<(u64, u64)> {
    if let Ok(id) = kitbash_archive::format::parse_id(s) {
        return Ok(id);
    }
    let seq = if end { u64::MAX } else { 0 };
    if let Ok(ms) = s.parse::<u64>() {
        return Ok((ms, seq));
    }
    let (n, unit) = s.split_at(s.len().saturating_sub(1));
    let mul = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            anyhow::bail!("{s:?} is not an id (ms-seq), Unix ms, or a time ago (90s, 15m, 2h, 7d)")
        }
    };
    let n: u64 = n.parse().map_err(|_| {
        anyhow::anyhow!("{s:?} is not an id (ms-seq), Unix ms, or a time ago (90s, 15m, 2h, 7d)")
    })?;
    Ok((now_ms.saturating_sub(n * mul), seq))
}

/// Prints a replay's progress: a bar on a terminal, a line every 10,000 entries otherwise.
pub fn progress(total: usize) -> impl FnMut(usize) {
    use std::io::IsTerminal;
    let tty = std::io::stderr().is_terminal();
    let mut last = 0usize;
    move |done| {
        if tty {
            let w = 40;
            let filled = (done * w).checked_div(total).unwrap_or(w);
            eprint!(
                "\rreplay [{}{}] {done}/{total}",
                "#".repeat(filled),
                " ".repeat(w - filled.min(w))
            );
            if done >= total {
                eprintln!();
            }
        } else if done / 10_000 > last / 10_000 || done >= total {
            eprintln!("replay: {done}/{total} entries written");
        }
        last = done;
    }
}
