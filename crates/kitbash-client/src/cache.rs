//! Read-through caches (seed 004): memory tokens `memory:{id}` (1 h) and relevance scores
//! `score:{user}:{ctx}:{token}` (15 min). A fetch reads Redis first and calls the loader only on
//! a miss, then stores what it loaded with the family's TTL; hits and misses are counted.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fred::prelude::*;
use fred::types::{Expiration, Value};
use kitbash_schema::{Keys, ttl};

use crate::ClientError;

/// Whether a fetch was served from Redis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Found in Redis; the loader was not called.
    Hit,
    /// Not in Redis; the loader produced the value, which is now cached.
    Miss,
}

/// Hits and misses of one cache handle (and its clones) since it was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Fetches served from Redis.
    pub hits: u64,
    /// Fetches that called the loader.
    pub misses: u64,
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError<E> {
    /// Redis failed (the cache returns errors, never panics, when Redis is away).
    #[error("cache: {0}")]
    Cache(#[from] ClientError),
    /// The loader failed; nothing was cached.
    #[error("loader: {0}")]
    Load(E),
}

#[derive(Clone)]
struct TtlCache {
    client: Client,
    ttl: Duration,
    hits: Arc<AtomicU64>,
    misses: Arc<AtomicU64>,
}

impl TtlCache {
    fn new(client: Client, ttl: Duration) -> Self {
        Self {
            client,
            ttl: ttl.max(Duration::from_millis(1)),
            hits: Arc::default(),
            misses: Arc::default(),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ClientError> {
        let v: Option<Vec<u8>> = self.client.get(key).await?;
        Ok(v)
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), ClientError> {
        let px = self.ttl.as_millis().max(1) as i64;
        let _: () = self
            .client
            .set(
                key,
                Value::Bytes(value.into()),
                Some(Expiration::PX(px)),
                None,
                false,
            )
            .await?;
        Ok(())
    }

    async fn fetch<F, Fut, E>(&self, key: &str, load: F) -> Result<(Vec<u8>, Lookup), FetchError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<u8>, E>>,
    {
        if let Some(v) = self.get(key).await? {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok((v, Lookup::Hit));
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let v = load().await.map_err(FetchError::Load)?;
        self.put(key, v.clone()).await?;
        Ok((v, Lookup::Miss))
    }

    async fn invalidate(&self, key: &str) -> Result<bool, ClientError> {
        let n: i64 = self.client.del(key).await?;
        Ok(n > 0)
    }

    fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }
}

fn family_ttl(t: ttl::Ttl, fallback_secs: u64) -> Duration {
    Duration::from_secs(t.secs().unwrap_or(fallback_secs))
}

/// The memory-token cache, `memory:{id}` (seed 004: 1 h). Values are opaque bytes (the archive
/// daemon writes tokens as JSON).
#[derive(Clone)]
pub struct MemoryTokenCache {
    /// Where `memory:{id}` lives.
    keys: Keys,
    /// Reads, writes and counters.
    inner: TtlCache,
}

impl std::fmt::Debug for MemoryTokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTokenCache")
            .field("keys", &self.keys)
            .field("ttl", &self.inner.ttl)
            .finish_non_exhaustive()
    }
}

impl MemoryTokenCache {
    /// The cache with the seed's TTL (1 h).
    ///
    /// ```no_run
    /// # async fn demo(client: fred::prelude::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use kitbash_client::cache::{Lookup, MemoryTokenCache};
    /// let cache = MemoryTokenCache::new(client, kitbash_schema::Keys::default());
    /// let load = || async { Ok::<_, std::io::Error>(b"{\"text\":\"hello\"}".to_vec()) };
    /// let (token, first) = cache.fetch("m1", load).await?;
    /// let (_, second) = cache.fetch("m1", load).await?;
    /// assert_eq!((first, second), (Lookup::Miss, Lookup::Hit));
    /// # let _ = token; Ok(()) }
    /// ```
    pub fn new(client: Client, keys: Keys) -> Self {
        Self {
            keys,
            inner: TtlCache::new(client, family_ttl(ttl::MEMORY_TOKEN, 3600)),
        }
    }

    /// Same cache with another TTL.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.inner.ttl = ttl.max(Duration::from_millis(1));
        self
    }

    /// The cached token, if any.
    pub async fn get(&self, id: &str) -> Result<Option<Vec<u8>>, ClientError> {
        self.inner.get(&self.keys.memory(id)).await
    }

    /// Caches a token for the TTL.
    pub async fn put(&self, id: &str, token: &[u8]) -> Result<(), ClientError> {
        self.inner.put(&self.keys.memory(id), token.to_vec()).await
    }

    /// The cached token, or the loader's (then cached).
    pub async fn fetch<F, Fut, E>(
        &self,
        id: &str,
        load: F,
    ) -> Result<(Vec<u8>, Lookup), FetchError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<u8>, E>>,
    {
        self.inner.fetch(&self.keys.memory(id), load).await
    }

    /// Drops a cached token. Returns whether there was one.
    pub async fn invalidate(&self, id: &str) -> Result<bool, ClientError> {
        self.inner.invalidate(&self.keys.memory(id)).await
    }

    /// Hits and misses of [`MemoryTokenCache::fetch`] so far.
    pub fn stats(&self) -> CacheStats {
        self.inner.stats()
    }
}

/// The relevance-score cache, `score:{user}:{ctx}:{token}` (seed 004: 15 min). Scores are
/// stored as decimal text (`"0.8125"`), readable by any client.
#[derive(Clone)]
pub struct ScoreCache {
    /// Where `score:{user}:{ctx}:{token}` lives.
    keys: Keys,
    /// Reads, writes and counters.
    inner: TtlCache,
}

impl std::fmt::Debug for ScoreCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScoreCache")
            .field("keys", &self.keys)
            .field("ttl", &self.inner.ttl)
            .finish_non_exhaustive()
    }
}

fn parse_score(key: &str, raw: &[u8]) -> Result<f64, ClientError> {
    std::str::from_utf8(raw)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|x| x.is_finite())
        .ok_or_else(|| ClientError::Reply(format!("{key}: not a score: {raw:?}")))
}

impl ScoreCache {
    /// The cache with the seed's TTL (15 min).
    ///
    /// ```no_run
    /// # async fn demo(client: fred::prelude::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use kitbash_client::cache::ScoreCache;
    /// let scores = ScoreCache::new(client, kitbash_schema::Keys::default());
    /// scores.put("alice", "ctx1", "m1", 0.81).await?;
    /// assert_eq!(scores.get("alice", "ctx1", "m1").await?, Some(0.81));
    /// # Ok(()) }
    /// ```
    pub fn new(client: Client, keys: Keys) -> Self {
        Self {
            keys,
            inner: TtlCache::new(client, family_ttl(ttl::RELEVANCE_SCORE, 900)),
        }
    }

    /// Same cache with another TTL.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.inner.ttl = ttl.max(Duration::from_millis(1));
        self
    }

    /// The cached score, if any.
    pub async fn get(
        &self,
        user: &str,
        ctx: &str,
        token: &str,
    ) -> Result<Option<f64>, ClientError> {
        let key = self.keys.score(user, ctx, token);
        match self.inner.get(&key).await? {
            Some(raw) => Ok(Some(parse_score(&key, &raw)?)),
            None => Ok(None),
        }
    }

    /// Caches a score for the TTL. Non-finite scores are refused.
    pub async fn put(
        &self,
        user: &str,
        ctx: &str,
        token: &str,
        score: f64,
    ) -> Result<(), ClientError> {
        if !score.is_finite() {
            return Err(ClientError::Invalid(format!("score {score} is not finite")));
        }
        let key = self.keys.score(user, ctx, token);
        self.inner.put(&key, score.to_string().into_bytes()).await
    }

    /// The cached score, or the loader's (then cached).
    pub async fn fetch<F, Fut, E>(
        &self,
        user: &str,
        ctx: &str,
        token: &str,
        load: F,
    ) -> Result<(f64, Lookup), FetchError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<f64, E>>,
    {
        let key = self.keys.score(user, ctx, token);
        let (raw, lookup) = self
            .inner
            .fetch(&key, || async {
                load().await.map(|s| s.to_string().into_bytes())
            })
            .await?;
        Ok((parse_score(&key, &raw)?, lookup))
    }

    /// Drops a cached score. Returns whether there was one.
    pub async fn invalidate(
        &self,
        user: &str,
        ctx: &str,
        token: &str,
    ) -> Result<bool, ClientError> {
        self.inner
            .invalidate(&self.keys.score(user, ctx, token))
            .await
    }

    /// Hits and misses of [`ScoreCache::fetch`] so far.
    pub fn stats(&self) -> CacheStats {
        self.inner.stats()
    }
}
