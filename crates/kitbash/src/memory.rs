//! Seed 004's memory tokens from the command line: `kitbash feed memory` (a demo feed: a few
//! users and contexts whose memories are used again and again, so their access counts grow) and
//! `kitbash memory top USER [--context CTX]` (the most relevant memories, as the archive's
//! indexer ranked them, read through `kitbash_client::memory`).

use std::fmt::Write as _;

use fred::prelude::Client;
use kitbash_client::Producer;
use kitbash_client::memory::MemoryIndex;
use kitbash_runtime::CancellationToken;
use kitbash_schema::messages::MemoryToken;
use kitbash_schema::{Keys, StreamName};

/// The demo's users and contexts.
pub const USERS: [&str; 3] = ["ada", "grace", "alan"];
/// See [`USERS`].
pub const CONTEXTS: [&str; 4] = ["work", "home", "reading", "travel"];
/// Memories per user.
const PER_USER: u64 = 40;

fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Publishes memory-token events at `rate` per second until `count` or `stop`: each event is
/// one use of a memory (its `accesses` one more than last time), the memories picked with a
/// skew so a few are hot. Returns how many were sent.
pub async fn feed(
    producer: &Producer,
    rate: f64,
    count: Option<u64>,
    seed: u64,
    stop: CancellationToken,
) -> anyhow::Result<u64> {
    let mut next = crate::feed::demo_rng(seed);
    let started = now_s();
    let total = USERS.len() as u64 * PER_USER;
    // Created over the last two hours, so ages (and relevance) differ from the start.
    let created: Vec<f64> = (0..total)
        .map(|_| started - (next() % 7_200) as f64)
        .collect();
    let mut accesses = vec![0u64; total as usize];
    let mut pacer = crate::feed::Pacer::new(rate, count, stop);
    let mut sent = 0u64;
    while let Some(n) = pacer.next().await {
        let mut batch = Vec::with_capacity(n);
        for _ in 0..n {
            let u = (next() % 10_000) as f64 / 10_000.0;
            let i = ((u * u) * total as f64) as usize % total as usize;
            accesses[i] += 1;
            let user = USERS[i % USERS.len()];
            let ctx = CONTEXTS[(i / USERS.len()) % CONTEXTS.len()];
            batch.push(MemoryToken {
                id: format!("{user}-{i}"),
                user: user.into(),
                context: ctx.into(),
                token: format!("t{i}"),
                content: serde_json::json!({ "text": format!("memory {i} of {user} ({ctx})") }),
                ts: created[i],
                accesses: accesses[i],
            });
        }
        if !batch.is_empty() {
            producer.publish_batch(StreamName::Memory, &batch).await?;
            sent = pacer.sent(batch.len());
        }
    }
    Ok(sent)
}

/// `kitbash memory top`: the `k` most relevant memories of `user` (in `context`, or all), as a
/// table or one JSON array.
pub async fn top(
    client: &Client,
    keys: &Keys,
    user: &str,
    context: Option<&str>,
    k: usize,
    json: bool,
) -> anyhow::Result<String> {
    let index = MemoryIndex::new(client.clone(), keys.clone());
    let ranked = match context {
        Some(ctx) => index.top_k(user, ctx, k).await?,
        None => index.top_k_user(user, k).await?,
    };
    if json {
        let rows: Vec<serde_json::Value> = ranked
            .iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.id,
                    "relevance": r.relevance,
                    "token": r.token,
                })
            })
            .collect();
        return Ok(format!("{}\n", serde_json::Value::Array(rows)));
    }
    let mut out = String::new();
    if ranked.is_empty() {
        let _ = writeln!(
            out,
            "no ranked memories for {user}{} (tokens are indexed by kitbash-archive from the memory stream)",
            context.map_or_else(String::new, |c| format!(" in {c}"))
        );
        return Ok(out);
    }
    let _ = writeln!(
        out,
        "{:<20} {:>10} {:>8} {:<10} content",
        "memory", "relevance", "accesses", "context"
    );
    for r in &ranked {
        let (acc, ctx, content) = match &r.token {
            Some(t) => (
                t.accesses.to_string(),
                t.context.clone(),
                t.content.to_string(),
            ),
            None => ("-".into(), "-".into(), "(not cached)".into()),
        };
        let _ = writeln!(
            out,
            "{:<20} {:>10.4} {acc:>8} {ctx:<10} {content}",
            r.id, r.relevance
        );
    }
    Ok(out)
}
