//! Seed 004's memory tokens, read side: the most relevant memories of a user (in one context
//! or all), from the relevance indexes the archive's indexer keeps (`kitbash-archive`'s
//! `index` module), and the tokens themselves from `memory:{id}`.
//!
//! Relevance is `e^(-age/τ) · ln(1 + accesses)` with τ = 1 h ([`kitbash_schema::memory`]). The
//! indexes store a time-free rank, so a top-k is exact at the moment it is read: one
//! `ZREVRANGEBYSCORE … LIMIT 0 k` and one `MGET` of the tokens (two round trips, pipelined on
//! fred's connection). Producers write tokens with [`crate::Producer::publish`] to the memory
//! stream; the indexer makes them visible here within its read latency.

use fred::prelude::*;
use fred::types::Value;
use kitbash_schema::messages::MemoryToken;
use kitbash_schema::{Keys, memory};

use crate::ClientError;

/// One memory of a top-k, most relevant first.
#[derive(Clone, Debug, PartialEq)]
pub struct Ranked {
    /// The memory id (`memory:{id}`).
    pub id: String,
    /// Its relevance now.
    pub relevance: f64,
    /// The token as cached in `memory:{id}`; `None` once the cache entry expired (1 h) or
    /// was evicted while the index still ranks it — load it from the system of record.
    pub token: Option<MemoryToken>,
}

/// Top-k reads of the relevance indexes.
#[derive(Clone, Debug)]
pub struct MemoryIndex {
    client: Client,
    keys: Keys,
    min_relevance: f64,
}

impl MemoryIndex {
    /// Reads with the default cut ([`memory::MIN_RELEVANCE`], what the indexer prunes below).
    pub fn new(client: Client, keys: Keys) -> Self {
        Self {
            client,
            keys,
            min_relevance: memory::MIN_RELEVANCE,
        }
    }

    /// Leaves out memories whose relevance is below `min` (> 0) at read time.
    pub fn with_min_relevance(mut self, min: f64) -> Self {
        if min.is_finite() && min > 0.0 {
            self.min_relevance = min;
        }
        self
    }

    /// The `k` most relevant memories of `user` in context `ctx`, most relevant first.
    pub async fn top_k(&self, user: &str, ctx: &str, k: usize) -> Result<Vec<Ranked>, ClientError> {
        self.read(&self.keys.memory_context_index(user, ctx), k)
            .await
    }

    /// The `k` most relevant memories of `user` over all contexts, most relevant first.
    pub async fn top_k_user(&self, user: &str, k: usize) -> Result<Vec<Ranked>, ClientError> {
        self.read(&self.keys.memory_user_index(user), k).await
    }

    /// The relevance `score:{user}:{ctx}:{token}` holds: computed when the token was last
    /// indexed, kept 15 min (seed 004's freshness), `None` once expired.
    pub async fn cached_score(
        &self,
        user: &str,
        ctx: &str,
        token: &str,
    ) -> Result<Option<f64>, ClientError> {
        let v: Option<String> = self.client.get(self.keys.score(user, ctx, token)).await?;
        v.map(|s| {
            s.parse::<f64>()
                .map_err(|_| ClientError::Reply(format!("score {s:?} is not a number")))
        })
        .transpose()
    }

    async fn read(&self, index: &str, k: usize) -> Result<Vec<Ranked>, ClientError> {
        if k == 0 {
            return Ok(Vec::new());
        }
        let now_s = now_s();
        let floor = fred::types::sorted_sets::ZRange::try_from(memory::rank_floor(
            self.min_relevance,
            now_s,
        ))?;
        let v: Value = self
            .client
            .zrevrangebyscore(index, "+inf", floor, true, Some((0, k as i64)))
            .await?;
        let pairs = members(v)?;
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = pairs.iter().map(|(id, _)| self.keys.memory(id)).collect();
        let tokens: Vec<Option<String>> = if self.client.is_clustered() {
            // The tokens live in many slots: one GET each, pipelined (MGET would be CROSSSLOT).
            let pipe = self.client.pipeline();
            for k in &keys {
                let _: () = pipe.get(k.as_str()).await?;
            }
            let mut out = Vec::with_capacity(keys.len());
            for r in pipe.try_all::<Option<String>>().await {
                out.push(r?);
            }
            out
        } else {
            self.client.mget(keys).await?
        };
        Ok(pairs
            .into_iter()
            .zip(tokens)
            .map(|((id, rank), token)| Ranked {
                relevance: memory::relevance_of_rank(rank, now_s),
                // A cached value that does not parse is treated as not cached.
                token: token.and_then(|t| serde_json::from_str(&t).ok()),
                id,
            })
            .collect())
    }
}

/// `(member, score)` pairs of a `WITHSCORES` reply (RESP2: flat; RESP3: pairs).
fn members(v: Value) -> Result<Vec<(String, f64)>, ClientError> {
    let Value::Array(items) = v else {
        return match v {
            Value::Null => Ok(Vec::new()),
            other => Err(ClientError::Reply(format!("ZREVRANGEBYSCORE: {other:?}"))),
        };
    };
    let bad = || ClientError::Reply("ZREVRANGEBYSCORE: not member/score pairs".into());
    let score = |v: &Value| -> Result<f64, ClientError> {
        match v {
            Value::Double(d) => Ok(*d),
            other => other
                .as_string()
                .and_then(|s| s.parse().ok())
                .ok_or_else(bad),
        }
    };
    let mut out = Vec::with_capacity(items.len() / 2);
    if items.iter().all(|i| matches!(i, Value::Array(_))) {
        for i in &items {
            let Value::Array(p) = i else {
                return Err(bad());
            };
            let (Some(m), Some(s)) = (p.first().and_then(Value::as_string), p.get(1)) else {
                return Err(bad());
            };
            out.push((m, score(s)?));
        }
    } else {
        for p in items.chunks(2) {
            let [m, s] = p else { return Err(bad()) };
            out.push((m.as_string().ok_or_else(bad)?, score(s)?));
        }
    }
    Ok(out)
}

fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
