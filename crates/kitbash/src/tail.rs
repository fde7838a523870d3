//! `kitbash tail STREAM [--from ID] [--json]`: a stream's entries live, decoded, one line each.
//!
//! Reads with the runtime's group-less tail reader (it never touches a consumer group, so it
//! disturbs nothing), from `--from` (an id, `0` for the whole stream) or from now. A trimmed
//! position or a replaced stream is said on stderr and reading goes on.

use std::time::Duration;

use kitbash_runtime::entries::StreamEntry;
use kitbash_runtime::tail::{Tail, TailReader};
use kitbash_runtime::{CancellationToken, Redis};
use kitbash_schema::Envelope;
use kitbash_schema::wire::ContentType;

/// The body of an entry as JSON: the envelope (`type`, `v`, `mid`) and the decoded body, or
/// every field (UTF-8 where it is, hex otherwise) when it is not an envelope.
pub fn decode(e: &StreamEntry) -> serde_json::Value {
    let Some(fields) = &e.fields else {
        return serde_json::json!({"id": e.id, "deleted": true});
    };
    if let Ok(env) = Envelope::from_fields(e.pairs()) {
        let body = match env.content {
            ContentType::MsgPack => rmp_serde::from_slice::<serde_json::Value>(&env.body).ok(),
            ContentType::Json => serde_json::from_slice::<serde_json::Value>(&env.body).ok(),
        };
        if let Some(body) = body {
            return serde_json::json!({
                "id": e.id, "type": env.kind, "v": env.version, "mid": env.mid, "body": body,
            });
        }
    }
    let text = |b: &[u8]| match std::str::from_utf8(b) {
        Ok(s) => serde_json::Value::String(s.to_owned()),
        Err(_) => serde_json::json!({ "hex": hex::encode(b) }),
    };
    let fields: Vec<serde_json::Value> = fields
        .iter()
        .map(|(k, v)| serde_json::json!([text(k), text(v)]))
        .collect();
    serde_json::json!({"id": e.id, "fields": fields})
}

/// One line for a terminal: `id type body`.
pub fn line(e: &StreamEntry) -> String {
    let v = decode(e);
    match (v.get("type"), v.get("body")) {
        (Some(serde_json::Value::String(t)), Some(body)) => format!("{} {t} {body}", e.id),
        _ => format!("{} {}", e.id, v.get("fields").unwrap_or(&v)),
    }
}

/// Follows `key` from `from` until `stop`, printing each entry.
pub async fn run(
    redis: &Redis,
    key: String,
    from: String,
    json: bool,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut tail = TailReader::new(redis, key, from, 512, Duration::from_millis(1_000));
    loop {
        let next = tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(()),
            n = tail.next() => n,
        };
        match next {
            Ok(Tail::Entries(entries)) => {
                for e in &entries {
                    if json {
                        println!("{}", decode(e));
                    } else {
                        println!("{}", line(e));
                    }
                }
            }
            Ok(Tail::NoNews) => {}
            Ok(Tail::Trimmed {
                asked,
                first_available,
            }) => eprintln!(
                "kitbash tail: entries after {asked} were trimmed before they were read; going on from {}",
                first_available.as_deref().unwrap_or("the end")
            ),
            Ok(Tail::Behind { asked, last }) => eprintln!(
                "kitbash tail: the stream was replaced (its newest id {last} is below {asked}); reading it from its start"
            ),
            Err(e) if e.is_transient() => {
                eprintln!("kitbash tail: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}
