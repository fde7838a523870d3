//! Array storage (seed 003): working-memory patterns `wm:{hash}` (1 h, each read pushes the
//! expiry back), spike trains `spikes:{ts}` (TTL per call, found by time window through the
//! sorted set `spikes:index`, never `KEYS`) and attention weights `attention:{context}` (10 min).
//!
//! Each array is a hash: `npy` (a complete `.npy` file, or its zlib stream), `enc` (`raw` or
//! `zlib` — readers go by it, never by guessing), `ts` and `meta`; see `docs/WIRE.md`. Every
//! operation is idempotent and retried with exponential backoff on connection errors only
//! ([`RetryPolicy`]); a reply error is returned at once.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use fred::prelude::*;
use fred::types::Value;
use kitbash_schema::{KeyFamily, Keys, ttl};

use crate::ClientError;
use crate::array::{self, ArrayError, CompressionPolicy, Encoding, NdArray};
use crate::families::{self, FamilyStats};
use crate::retry::RetryPolicy;

/// A working-memory pattern as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkingMemory {
    /// The pattern.
    pub pattern: NdArray,
    /// The producer's timestamp (Unix seconds).
    pub timestamp: f64,
    /// The producer's metadata.
    pub metadata: serde_json::Value,
}

/// A spike train as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct SpikeTrain {
    /// Its timestamp, µs since the Unix epoch (the key and the index score).
    pub timestamp_us: i64,
    /// The spikes (e.g. time bins × neurons).
    pub spikes: NdArray,
    /// The neuron ids of the columns.
    pub neuron_ids: Vec<u64>,
}

/// Attention weights as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionWeights {
    /// The weights.
    pub weights: NdArray,
    /// The producer's timestamp (Unix seconds).
    pub timestamp: f64,
}

/// Stores and loads arrays.
#[derive(Clone)]
pub struct ArrayStore {
    /// The connected client.
    client: Client,
    /// Where the array families live.
    keys: Keys,
    /// When to compress.
    compression: CompressionPolicy,
    /// How to retry connection errors.
    retry: RetryPolicy,
}

impl std::fmt::Debug for ArrayStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArrayStore")
            .field("keys", &self.keys)
            .field("compression", &self.compression)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

fn secs(t: ttl::Ttl, fallback: u64) -> Duration {
    Duration::from_secs(t.secs().unwrap_or(fallback))
}

/// The stored fields of one array hash, decoded.
struct Stored {
    array: NdArray,
    ts: Option<f64>,
    meta: Option<String>,
}

fn decode_hash(key: &str, mut h: HashMap<String, Bytes>) -> Result<Option<Stored>, ClientError> {
    if h.is_empty() {
        return Ok(None);
    }
    let bad = |e: ArrayError| ClientError::Array {
        key: key.to_owned(),
        source: e,
    };
    let npy = h.remove(Keys::ARRAY_NPY).ok_or_else(|| {
        bad(ArrayError::NotNpy(format!(
            "no `{}` field",
            Keys::ARRAY_NPY
        )))
    })?;
    let enc = h
        .remove(Keys::ARRAY_ENC)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .ok_or_else(|| {
            bad(ArrayError::Encoding(format!(
                "no `{}` field",
                Keys::ARRAY_ENC
            )))
        })?;
    let enc = Encoding::from_marker(&enc).map_err(bad)?;
    let bytes = array::decode(&npy, enc).map_err(bad)?;
    let array = NdArray::from_npy(&bytes).map_err(bad)?;
    let text = |b: Bytes| String::from_utf8_lossy(&b).into_owned();
    Ok(Some(Stored {
        array,
        ts: h
            .remove(Keys::ARRAY_TS)
            .and_then(|b| text(b).parse::<f64>().ok()),
        meta: h.remove(Keys::ARRAY_META).map(text),
    }))
}

impl ArrayStore {
    /// A store with the seed's settings: compression above 1024 bytes, 3 attempts from 100 ms.
    ///
    /// ```no_run
    /// # async fn demo(client: fred::prelude::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use kitbash_client::array::{ArrayData, NdArray};
    /// use kitbash_client::arrays::ArrayStore;
    /// let store = ArrayStore::new(client, kitbash_schema::Keys::default());
    /// let pattern = NdArray::new(vec![2, 2], ArrayData::F64(vec![0.1, 0.2, 0.3, 0.4]))?;
    /// store.put_working_memory("visual_pattern_123", &pattern, 1.7e9, &serde_json::json!({"source": "v1"})).await?;
    /// let back = store.get_working_memory("visual_pattern_123").await?;
    /// assert_eq!(back.map(|w| w.pattern), Some(pattern));
    /// # Ok(()) }
    /// ```
    pub fn new(client: Client, keys: Keys) -> Self {
        Self {
            client,
            keys,
            compression: CompressionPolicy::default(),
            retry: RetryPolicy::default(),
        }
    }

    /// Same store with another compression threshold (bytes of `.npy`).
    pub fn with_compression(mut self, compression: CompressionPolicy) -> Self {
        self.compression = compression;
        self
    }

    /// Same store with another retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    fn fields(
        &self,
        array: &NdArray,
        ts: f64,
        meta: Option<String>,
    ) -> Result<Vec<(&'static str, Value)>, ClientError> {
        let npy = array
            .to_npy()
            .map_err(|e| ClientError::Invalid(e.to_string()))?;
        let (bytes, enc) = self.compression.encode(npy);
        let mut f = vec![
            (Keys::ARRAY_NPY, Value::Bytes(bytes.into())),
            (Keys::ARRAY_ENC, Value::from(enc.marker())),
            (Keys::ARRAY_TS, Value::from(ts.to_string())),
        ];
        if let Some(m) = meta {
            f.push((Keys::ARRAY_META, Value::from(m)));
        }
        Ok(f)
    }

    /// Replaces `key` with `fields` and sets its expiry, atomically (`MULTI`), with retries.
    async fn write(
        &self,
        key: &str,
        fields: Vec<(&'static str, Value)>,
        ttl: Duration,
    ) -> Result<(), ClientError> {
        let ms = ttl.as_millis().max(1) as i64;
        self.retry
            .run(|| {
                let fields = fields.clone();
                async move {
                    let tx = self.client.multi();
                    let _: () = tx.del(key).await?;
                    let _: () = tx.hset(key, fields).await?;
                    let _: () = tx.pexpire(key, ms, None).await?;
                    let _: Value = tx.exec(true).await?;
                    Ok(())
                }
            })
            .await?;
        Ok(())
    }

    /// `HGETALL key`, and with `refresh`, push its expiry back in the same round trip.
    async fn read(
        &self,
        key: &str,
        refresh: Option<Duration>,
    ) -> Result<HashMap<String, Bytes>, ClientError> {
        Ok(self
            .retry
            .run(|| async move {
                match refresh {
                    Some(ttl) => {
                        let pipe = self.client.pipeline();
                        let _: () = pipe.hgetall(key).await?;
                        let _: () = pipe
                            .pexpire(key, ttl.as_millis().max(1) as i64, None)
                            .await?;
                        let (h, _): (HashMap<String, Bytes>, i64) = pipe.all().await?;
                        Ok(h)
                    }
                    None => self.client.hgetall(key).await,
                }
            })
            .await?)
    }

    // ---- working memory --------------------------------------------------------------------

    /// Stores a working-memory pattern at `wm:{hash}` for 1 h.
    pub async fn put_working_memory(
        &self,
        hash: &str,
        pattern: &NdArray,
        timestamp: f64,
        metadata: &serde_json::Value,
    ) -> Result<(), ClientError> {
        let f = self.fields(pattern, timestamp, Some(metadata.to_string()))?;
        self.write(&self.keys.wm(hash), f, secs(ttl::WORKING_MEMORY, 3600))
            .await
    }

    /// The pattern at `wm:{hash}`, if any; reading it pushes its expiry back to 1 h.
    pub async fn get_working_memory(
        &self,
        hash: &str,
    ) -> Result<Option<WorkingMemory>, ClientError> {
        let key = self.keys.wm(hash);
        let h = self
            .read(&key, Some(secs(ttl::WORKING_MEMORY, 3600)))
            .await?;
        let Some(s) = decode_hash(&key, h)? else {
            return Ok(None);
        };
        Ok(Some(WorkingMemory {
            pattern: s.array,
            timestamp: s.ts.unwrap_or(0.0),
            metadata: match s.meta {
                Some(m) => serde_json::from_str(&m)?,
                None => serde_json::Value::Null,
            },
        }))
    }

    /// Pushes the expiry of `wm:{hash}` back to 1 h (an access). Returns whether it exists.
    pub async fn touch_working_memory(&self, hash: &str) -> Result<bool, ClientError> {
        let key = self.keys.wm(hash);
        let ms = secs(ttl::WORKING_MEMORY, 3600).as_millis() as i64;
        let n: i64 = self
            .retry
            .run(|| self.client.pexpire(key.as_str(), ms, None))
            .await?;
        Ok(n == 1)
    }

    // ---- spike trains ----------------------------------------------------------------------

    /// Stores a spike train at `spikes:{timestamp_us}` for `ttl` and indexes it by time. The
    /// index's own expiry is pushed out to the longest-lived train.
    pub async fn put_spike_train(
        &self,
        timestamp_us: i64,
        spikes: &NdArray,
        neuron_ids: &[u64],
        ttl: Duration,
    ) -> Result<(), ClientError> {
        let key = self.keys.spikes(timestamp_us);
        let index = self.keys.spikes_index();
        let ids = serde_json::to_string(neuron_ids)?;
        let fields = self.fields(spikes, timestamp_us as f64 / 1e6, Some(ids))?;
        let ms = ttl.as_millis().max(1) as i64;
        self.retry
            .run(|| {
                let fields = fields.clone();
                let (key, index) = (key.as_str(), index.as_str());
                async move {
                    let tx = self.client.multi();
                    let _: () = tx.del(key).await?;
                    let _: () = tx.hset(key, fields).await?;
                    let _: () = tx.pexpire(key, ms, None).await?;
                    let _: () = tx
                        .zadd(
                            index,
                            None,
                            None,
                            false,
                            false,
                            (timestamp_us as f64, timestamp_us.to_string()),
                        )
                        .await?;
                    // NX sets an expiry on a fresh index; GT only ever extends it.
                    let _: () = tx
                        .pexpire(index, ms, Some(fred::types::ExpireOptions::NX))
                        .await?;
                    let _: () = tx
                        .pexpire(index, ms, Some(fred::types::ExpireOptions::GT))
                        .await?;
                    let _: Value = tx.exec(true).await?;
                    Ok(())
                }
            })
            .await?;
        Ok(())
    }

    /// The spike train at `timestamp_us`, if it has not expired.
    pub async fn get_spike_train(
        &self,
        timestamp_us: i64,
    ) -> Result<Option<SpikeTrain>, ClientError> {
        let key = self.keys.spikes(timestamp_us);
        let h = self.read(&key, None).await?;
        decode_spikes(&key, timestamp_us, h)
    }

    /// Spike trains with `from_us <= timestamp <= to_us`, oldest first, at most `limit`, found
    /// through `spikes:index` (one `ZRANGEBYSCORE`, then one pipelined `HGETALL` per train).
    /// Index entries whose train has expired are removed on the way.
    pub async fn spike_trains_between(
        &self,
        from_us: i64,
        to_us: i64,
        limit: usize,
    ) -> Result<Vec<SpikeTrain>, ClientError> {
        let index = self.keys.spikes_index();
        let members: Vec<String> = self
            .retry
            .run(|| {
                self.client.zrangebyscore(
                    index.as_str(),
                    from_us as f64,
                    to_us as f64,
                    false,
                    Some((0, limit.max(1) as i64)),
                )
            })
            .await?;
        let stamps: Vec<i64> = members.iter().filter_map(|m| m.parse().ok()).collect();
        if stamps.is_empty() {
            return Ok(Vec::new());
        }
        let hashes: Vec<HashMap<String, Bytes>> = self
            .retry
            .run(|| async {
                let pipe = self.client.pipeline();
                for ts in &stamps {
                    let _: () = pipe.hgetall(self.keys.spikes(*ts)).await?;
                }
                pipe.all().await
            })
            .await?;
        let mut out = Vec::with_capacity(stamps.len());
        let mut gone = Vec::new();
        for (ts, h) in stamps.iter().zip(hashes) {
            match decode_spikes(&self.keys.spikes(*ts), *ts, h)? {
                Some(t) => out.push(t),
                None => gone.push(ts.to_string()),
            }
        }
        if !gone.is_empty() {
            let _: i64 = self
                .retry
                .run(|| self.client.zrem(index.as_str(), gone.clone()))
                .await?;
        }
        Ok(out)
    }

    /// Spike trains of the last `window` by Redis's clock, oldest first, at most `limit`.
    pub async fn recent_spike_trains(
        &self,
        window: Duration,
        limit: usize,
    ) -> Result<Vec<SpikeTrain>, ClientError> {
        let time =
            fred::types::CustomCommand::new_static("TIME", fred::types::ClusterHash::Random, false);
        let (secs, micros): (i64, i64) = self
            .retry
            .run(|| self.client.custom(time.clone(), Vec::<Value>::new()))
            .await?;
        let now = secs * 1_000_000 + micros;
        self.spike_trains_between(now - window.as_micros() as i64, now, limit)
            .await
    }

    // ---- attention -------------------------------------------------------------------------

    /// Stores attention weights at `attention:{context}` for 10 min.
    pub async fn put_attention(
        &self,
        context: &str,
        weights: &NdArray,
        timestamp: f64,
    ) -> Result<(), ClientError> {
        let f = self.fields(weights, timestamp, None)?;
        self.write(&self.keys.attention(context), f, secs(ttl::ATTENTION, 600))
            .await
    }

    /// The attention weights of `context`, if any.
    pub async fn get_attention(
        &self,
        context: &str,
    ) -> Result<Option<AttentionWeights>, ClientError> {
        let key = self.keys.attention(context);
        let h = self.read(&key, None).await?;
        Ok(decode_hash(&key, h)?.map(|s| AttentionWeights {
            weights: s.array,
            timestamp: s.ts.unwrap_or(0.0),
        }))
    }

    // ---- statistics ------------------------------------------------------------------------

    /// Keys and bytes per array family (`wm`, `spikes` with its index, `attention`).
    pub async fn memory_stats(&self) -> Result<Vec<FamilyStats>, ClientError> {
        let mut out = Vec::new();
        for f in [
            KeyFamily::WorkingMemory,
            KeyFamily::Spikes,
            KeyFamily::Attention,
        ] {
            out.push(families::stats(&self.client, &self.keys, f).await?);
        }
        Ok(out)
    }
}

fn decode_spikes(
    key: &str,
    timestamp_us: i64,
    h: HashMap<String, Bytes>,
) -> Result<Option<SpikeTrain>, ClientError> {
    let Some(s) = decode_hash(key, h)? else {
        return Ok(None);
    };
    let neuron_ids = match s.meta {
        Some(m) => serde_json::from_str(&m)?,
        None => Vec::new(),
    };
    Ok(Some(SpikeTrain {
        timestamp_us,
        spikes: s.array,
        neuron_ids,
    }))
}
