//! Dead letters, built in one place: the consumer loop and the partition workers both turn a
//! rejected entry into a [`DeadLetter`] here and append it with the same `XADD` words.
//!
//! Dead-letter streams are never trimmed: a dead letter is kept until an operator replays or
//! deletes it. They are bounded by an alarm instead ([`check`], run by each stream's owner
//! through [`crate::bounds::Bounds`]; `kitbash status` warns too).

use fred::prelude::*;
use fred::types::Value;
use kitbash_schema::StreamName;
use kitbash_schema::wire::DeadLetter;

use crate::entries::StreamEntry;
use crate::error::RuntimeError;
use crate::metrics::Metrics;

/// The dead letter of `entry`, read from `stream` by `consumer` of `group`.
pub fn letter(
    stream: StreamName,
    entry: &StreamEntry,
    reason: String,
    group: &str,
    consumer: &str,
    deliveries: u64,
) -> DeadLetter {
    DeadLetter {
        reason,
        stream: stream.logical(),
        id: entry.id.clone(),
        group: group.to_owned(),
        consumer: consumer.to_owned(),
        deliveries,
        at_ms: crate::clock::now_ms(),
        fields: entry
            .pairs()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect(),
    }
}

/// `XADD dead_key * field value …` as command words. No `MAXLEN`: dead-letter streams are
/// never trimmed (old dead letters must not vanish silently); `check` raises an alarm once
/// one is longer than `[consumer] dead_letter_alarm`.
pub fn xadd_words(dead_key: &str, letter: &DeadLetter) -> Vec<Value> {
    let mut words: Vec<Value> = vec!["XADD".into(), dead_key.into(), "*".into()];
    for (k, v) in letter.to_fields() {
        words.push(Value::Bytes(k.into()));
        words.push(Value::Bytes(v.into()));
    }
    words
}

/// The gauge of a dead-letter stream's length, labelled with the source stream.
pub const LENGTH_METRIC: &str = "kitbash_dead_letter_length";
/// The gauge that is 1 while a dead-letter stream is longer than the alarm threshold.
pub const ALARM_METRIC: &str = "kitbash_dead_letter_alarm";

/// Measures the dead-letter stream `dead_key` of `stream`: sets [`LENGTH_METRIC`] and
/// [`ALARM_METRIC`] (`{stream}` = the logical name) and returns the length and whether it is
/// above `alarm` (`[consumer] dead_letter_alarm`). Logging is the caller's (once per crossing
/// of the threshold, not every period).
pub async fn check(
    client: &Client,
    metrics: &Metrics,
    stream: StreamName,
    dead_key: &str,
    alarm: u64,
) -> Result<(u64, bool), RuntimeError> {
    let len: u64 = client.xlen(dead_key).await?;
    let over = len > alarm;
    let logical = stream.logical();
    let labels = [("stream", logical.as_str())];
    metrics.set(
        LENGTH_METRIC,
        "Entries in a stream's dead-letter stream (never trimmed).",
        &labels,
        len as f64,
    );
    metrics.set(
        ALARM_METRIC,
        "1 while a stream's dead-letter stream is longer than [consumer] dead_letter_alarm.",
        &labels,
        if over { 1.0 } else { 0.0 },
    );
    Ok((len, over))
}
