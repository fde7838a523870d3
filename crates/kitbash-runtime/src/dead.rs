//! Dead letters, built in one place: the consumer loop and the partition workers both turn a
//! rejected entry into a [`DeadLetter`] here and append it with the same `XADD` words.

use fred::types::Value;
use kitbash_schema::StreamName;
use kitbash_schema::wire::DeadLetter;

use crate::entries::StreamEntry;

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

/// `XADD dead_key MAXLEN ~ max * field value …` as command words.
pub fn xadd_words(dead_key: &str, max: u64, letter: &DeadLetter) -> Vec<Value> {
    let mut words: Vec<Value> = vec![
        "XADD".into(),
        dead_key.into(),
        "MAXLEN".into(),
        "~".into(),
        (max as i64).into(),
        "*".into(),
    ];
    for (k, v) in letter.to_fields() {
        words.push(Value::Bytes(k.into()));
        words.push(Value::Bytes(v.into()));
    }
    words
}
