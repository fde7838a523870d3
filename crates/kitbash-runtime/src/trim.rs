//! The one safe way to trim a stream: never past an entry that a consumer group has not
//! acknowledged (or not yet been delivered), nor past a position a partition checkpoint still
//! needs for recovery.
//!
//! `XTRIM MAXLEN` ignores the pending entries list (before Redis 8.2's `ACKED`), so it can delete
//! entries no group has processed. Instead: compute the cap's position — the id before which
//! the stream holds more than `max` entries, estimated from `XINFO STREAM` (length, first and
//! last id) assuming an even rate, like `MAXLEN ~` — then take the minimum of that, every
//! group's oldest pending entry, every group's next undelivered entry, and the callers' floors
//! (e.g. a partition's `snap_id`), and `XTRIM MINID ~` there. The archive daemon will add its
//! own floor (what is archived).
//!
//! The stream's processing groups ([`StreamName::groups`]) must all exist before anything is
//! trimmed: a group created later would start from an already-trimmed stream and never see
//! what was deleted. Until then the stream grows; `kitbash status` shows the missing group.
//! Observers ([`StreamName::observers`], the archive) bound a trim only while their group
//! exists.

use std::collections::HashMap;

use fred::prelude::*;
use fred::types::Value;
use kitbash_schema::{DaemonKind, StreamName};

use crate::entries::{self, id_cmp, parse_id};
use crate::error::RuntimeError;
use crate::metrics::Metrics;
use crate::redis::command_for_key;

fn fields(v: &Value) -> HashMap<String, Value> {
    match v {
        Value::Array(kv) => kv
            .chunks(2)
            .filter_map(|p| match p {
                [k, v] => entries::string_of(k).map(|k| (k, v.clone())),
                _ => None,
            })
            .collect(),
        Value::Map(m) => m
            .clone()
            .inner()
            .iter()
            .filter_map(|(k, v)| k.as_str().map(|k| (k.to_string(), v.clone())))
            .collect(),
        _ => HashMap::new(),
    }
}

fn int(m: &HashMap<String, Value>, k: &str) -> i64 {
    match m.get(k) {
        Some(Value::Integer(n)) => *n,
        Some(v) => entries::string_of(v)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        None => 0,
    }
}

fn first_id(v: Option<&Value>) -> Option<String> {
    match v {
        Some(Value::Array(e)) => e.first().and_then(entries::string_of),
        _ => None,
    }
}

/// The id just after `id` (`5-3` → `5-4`).
fn successor(id: &str) -> String {
    let (ms, seq) = parse_id(id);
    match seq.checked_add(1) {
        Some(s) => format!("{ms}-{s}"),
        None => format!("{}-0", ms + 1),
    }
}

/// What bounds a trim: the lowest id any reader still needs, and the groups that exist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Floor {
    /// Each group's oldest pending entry and next undelivered one, and each caller floor, at
    /// their lowest. `None` when nothing constrains (no group, no floor).
    pub low: Option<String>,
    /// The names of the stream's consumer groups as `XINFO GROUPS` lists them.
    pub groups: Vec<String>,
}

/// The lowest id any reader still needs: each group's oldest pending entry and next
/// undelivered one, and each of `floors`; and which groups exist.
pub async fn safe_floor(
    client: &Client,
    stream_key: &str,
    floors: &[String],
) -> Result<Floor, RuntimeError> {
    let mut names = Vec::new();
    let mut low: Option<String> = None;
    let mut lower = |id: String| {
        if low.as_deref().is_none_or(|l| id_cmp(&id, l).is_lt()) {
            low = Some(id);
        }
    };
    for f in floors {
        lower(f.clone());
    }
    let cmd = command_for_key("XINFO", stream_key, false);
    let groups: Value = client
        .custom(cmd, vec![Value::from("GROUPS"), stream_key.into()])
        .await?;
    let Value::Array(groups) = groups else {
        return Ok(Floor { low, groups: names });
    };
    for g in &groups {
        let g = fields(g);
        let Some(name) = g.get("name").and_then(entries::string_of) else {
            continue;
        };
        names.push(name.clone());
        let delivered = g
            .get("last-delivered-id")
            .and_then(entries::string_of)
            .unwrap_or_else(|| "0-0".into());
        lower(successor(&delivered));
        if int(&g, "pending") > 0 {
            let cmd = command_for_key("XPENDING", stream_key, false);
            let summary: Value = client
                .custom(cmd, vec![Value::from(stream_key), name.as_str().into()])
                .await?;
            if let Value::Array(s) = summary
                && let Some(oldest) = s.get(1).and_then(entries::string_of)
            {
                lower(oldest);
            }
        }
    }
    Ok(Floor { low, groups: names })
}

/// Trims `stream_key` (the key of `stream`) near `max` entries, but never past [`safe_floor`],
/// and not at all while one of `stream.groups()` does not exist yet. Returns the entries
/// removed. `max = 0` trims nothing.
pub async fn safe_trim(
    client: &Client,
    stream: StreamName,
    stream_key: &str,
    max: u64,
    floors: &[String],
) -> Result<u64, RuntimeError> {
    safe_trim_for(client, stream.groups(), stream_key, max, floors).await
}

/// [`safe_trim`] with the required groups spelled out (tests use a plain stream with their
/// own groups).
pub async fn safe_trim_for(
    client: &Client,
    required: &[DaemonKind],
    stream_key: &str,
    max: u64,
    floors: &[String],
) -> Result<u64, RuntimeError> {
    if max == 0 {
        return Ok(0);
    }
    let cmd = command_for_key("XINFO", stream_key, false);
    let info: Value = match client
        .custom(cmd, vec![Value::from("STREAM"), stream_key.into()])
        .await
    {
        Ok(v) => v,
        Err(e) if e.details().contains("no such key") => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let info = fields(&info);
    let len = int(&info, "length").max(0) as u64;
    if len <= max {
        return Ok(0);
    }
    let (Some(first), Some(last)) = (
        first_id(info.get("first-entry")),
        first_id(info.get("last-entry")),
    ) else {
        return Ok(0);
    };
    // The cap's position, assuming entries arrived at an even rate between first and last.
    let (f_ms, _) = parse_id(&first);
    let (l_ms, _) = parse_id(&last);
    let excess = len - max;
    let cap_ms = f_ms + ((l_ms - f_ms) as u128 * u128::from(excess) / u128::from(len)) as u64;
    let mut target = format!("{cap_ms}-0");
    let floor = safe_floor(client, stream_key, floors).await?;
    if let Some(missing) = required
        .iter()
        .find(|k| !floor.groups.iter().any(|g| g == k.group().as_str()))
    {
        tracing::debug!(stream = %stream_key, group = %missing, "not trimmed: a required group does not exist yet");
        return Ok(0);
    }
    if let Some(low) = floor.low
        && id_cmp(&low, &target).is_lt()
    {
        target = low;
    }
    let cmd = command_for_key("XTRIM", stream_key, false);
    let removed: i64 = client
        .custom(
            cmd,
            vec![
                Value::from(stream_key),
                "MINID".into(),
                "~".into(),
                target.as_str().into(),
            ],
        )
        .await?;
    Ok(removed.max(0) as u64)
}

/// [`safe_trim`] for a periodic task: a failure (an ACL without `XTRIM`, a lost connection)
/// is logged at `warn` and counted in `kitbash_trim_failures_total{stream}`, because a trim
/// that keeps failing is unbounded growth. Returns the entries removed (0 on failure).
pub async fn trim_or_warn(
    client: &Client,
    metrics: &Metrics,
    stream: StreamName,
    stream_key: &str,
    max: u64,
    floors: &[String],
) -> u64 {
    match safe_trim(client, stream, stream_key, max, floors).await {
        Ok(n) => n,
        Err(e) => {
            let logical = stream.logical();
            tracing::warn!(stream = %logical, error = %e, "stream trim failed; will retry");
            metrics.inc(
                "kitbash_trim_failures_total",
                "Stream trims that failed (the stream grows until one succeeds).",
                &[("stream", logical.as_str())],
                1,
            );
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successor_of_an_id() {
        assert_eq!(successor("5-3"), "5-4");
        assert_eq!(successor("0-0"), "0-1");
    }
}
