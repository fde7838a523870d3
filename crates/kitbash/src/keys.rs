//! `kitbash keys top`: the largest keys, by bounded `SCAN` sampling with `MEMORY USAGE`, and the
//! hottest, by `OBJECT FREQ` — which Redis only tracks under an LFU eviction policy; under any
//! other policy this says so instead of printing numbers that mean nothing.

use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand, Value};
use kitbash_client::families::KeyScan;
use kitbash_schema::Keys;
use serde::Serialize;

/// One sampled key.
#[derive(Clone, Debug, Serialize)]
pub struct KeyInfo {
    /// The key.
    pub key: String,
    /// `MEMORY USAGE`, bytes.
    pub bytes: u64,
    /// `OBJECT FREQ` (LFU counter), when the policy is LFU.
    pub freq: Option<u64>,
}

/// What `keys top` found.
#[derive(Clone, Debug, Serialize)]
pub struct TopKeys {
    /// Keys sampled (at most the `--sample` bound).
    pub sampled: usize,
    /// `maxmemory-policy`.
    pub policy: String,
    /// Largest first.
    pub largest: Vec<KeyInfo>,
    /// Hottest first; `None` when the policy is not LFU.
    pub hottest: Option<Vec<KeyInfo>>,
}

/// Samples at most `sample` keys of this namespace and ranks them.
pub async fn top(client: &Client, keys: &Keys, sample: usize, n: usize) -> anyhow::Result<TopKeys> {
    let policy: Vec<String> = client
        .custom(
            CustomCommand::new_static("CONFIG", ClusterHash::Random, false),
            vec!["GET", "maxmemory-policy"],
        )
        .await?;
    let policy = policy.get(1).cloned().unwrap_or_default();
    let lfu = policy.contains("lfu");
    let pattern = keys.namespace().apply("*");
    // On a cluster each primary gives its share of the sample (a walk node after node would
    // fill a small sample from the first one alone); what one leaves unused goes to the next.
    let nodes = kitbash_client::families::primaries(client);
    let scans: Vec<KeyScan> = if nodes.is_empty() {
        vec![KeyScan::new(pattern)]
    } else {
        nodes
            .into_iter()
            .map(|n| KeyScan::on_node(pattern.clone(), n))
            .collect()
    };
    let mut names = Vec::new();
    let count = scans.len();
    for (i, mut scan) in scans.into_iter().enumerate() {
        let share = (sample - names.len()).div_ceil(count - i);
        let mut mine = Vec::new();
        while mine.len() < share {
            let Some(batch) = scan.next_batch(client).await? else {
                break;
            };
            mine.extend(batch);
        }
        mine.truncate(share);
        names.extend(mine);
    }
    names.truncate(sample);
    names.sort();
    names.dedup();
    let mut infos = Vec::with_capacity(names.len());
    for chunk in names.chunks(256) {
        let pipe = client.pipeline();
        for k in chunk {
            let _: () = pipe.memory_usage(k.as_str(), Some(0)).await?;
            if lfu {
                let _: () = pipe
                    .custom(
                        // Routed by the key's slot (on a cluster only its node has it).
                        CustomCommand::new(
                            "OBJECT",
                            ClusterHash::Custom(fred::util::redis_keyslot(k.as_bytes())),
                            false,
                        ),
                        vec!["FREQ", k.as_str()],
                    )
                    .await?;
            }
        }
        let replies: Vec<Result<Value, fred::error::Error>> = pipe.try_all().await;
        let per = if lfu { 2 } else { 1 };
        for (i, k) in chunk.iter().enumerate() {
            let bytes = replies
                .get(i * per)
                .and_then(|r| r.as_ref().ok())
                .and_then(Value::as_u64);
            let Some(bytes) = bytes else { continue }; // expired meanwhile
            let freq = lfu
                .then(|| replies.get(i * per + 1))
                .flatten()
                .and_then(|r| r.as_ref().ok())
                .and_then(Value::as_u64);
            infos.push(KeyInfo {
                key: k.clone(),
                bytes,
                freq,
            });
        }
    }
    let sampled = infos.len();
    let mut largest = infos.clone();
    largest.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.key.cmp(&b.key)));
    largest.truncate(n);
    let hottest = lfu.then(|| {
        let mut h = infos;
        h.sort_by(|a, b| b.freq.cmp(&a.freq).then(a.key.cmp(&b.key)));
        h.truncate(n);
        h
    });
    Ok(TopKeys {
        sampled,
        policy,
        largest,
        hottest,
    })
}

/// The readable report.
pub fn render(t: &TopKeys) -> String {
    let mut out = format!(
        "largest keys ({} sampled by SCAN, MEMORY USAGE):\n",
        t.sampled
    );
    for k in &t.largest {
        out.push_str(&format!("  {:>10} B  {}\n", k.bytes, k.key));
    }
    match &t.hottest {
        Some(h) => {
            out.push_str(&format!(
                "hottest keys (OBJECT FREQ, policy {}):\n",
                t.policy
            ));
            for k in h {
                out.push_str(&format!("  {:>10}    {}\n", k.freq.unwrap_or(0), k.key));
            }
        }
        None => out.push_str(&format!(
            "hottest keys: not available — maxmemory-policy is {:?}, and Redis only counts \
             accesses (OBJECT FREQ) under an LFU policy (allkeys-lfu or volatile-lfu)\n",
            t.policy
        )),
    }
    out
}
