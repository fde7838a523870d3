//! The grain bank and the current hat, as one immutable snapshot loaded from Redis
//! (`grain:index`, `grain:{id}:bits:+`/`-`, `hat:current`, `hat:{name}:mask`), and the
//! [`Bank`] that (re)loads it — one load at a time — for the watcher, the crossings handler and
//! the recompute leader of one instance.

use std::sync::{Arc, RwLock};

use fred::prelude::*;
use kitbash_runtime::metrics::Metrics;
use kitbash_schema::Keys;
use kitbash_ternary::{GrainBank, HatMask, TernaryError, TernaryVector};

/// What the ghost searches: the grains and the hat, at one `kitbash:reflex:version`.
#[derive(Debug)]
pub struct Snapshot {
    /// Every grain whose planes are well-formed.
    pub bank: GrainBank,
    /// The current hat's mask ([`HatMask::EMPTY`] when none is set).
    pub hat: HatMask,
    /// The current hat's name.
    pub hat_name: Option<String>,
    /// `kitbash:reflex:version` read before loading (a change during the load is seen by the
    /// next poll).
    pub version: u64,
    /// Grains skipped because their planes did not decode (wrong length, overlap).
    pub skipped: usize,
}

/// Why a snapshot could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Redis error.
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    /// The bank could not be built (dimension).
    #[error("ternary: {0}")]
    Ternary(#[from] TernaryError),
}

impl Snapshot {
    /// Loads grains and hat for `dim` trits.
    pub async fn load(client: &Client, keys: &Keys, dim: usize) -> Result<Self, LoadError> {
        let version: Option<u64> = client.get(keys.reflex_version()).await?;
        let ids: Vec<String> = client.smembers(keys.grain_index()).await?;
        let mut ids: Vec<u64> = ids.iter().filter_map(|i| i.parse().ok()).collect();
        ids.sort_unstable();
        let mut bank = GrainBank::with_capacity(dim, ids.len())?;
        let mut skipped = 0;
        for chunk in ids.chunks(512) {
            let mut plane_keys = Vec::with_capacity(chunk.len() * 2);
            for id in chunk {
                plane_keys.push(keys.grain_bits_plus(*id));
                plane_keys.push(keys.grain_bits_minus(*id));
            }
            let planes: Vec<Option<Vec<u8>>> = client.mget(plane_keys).await?;
            for (id, pair) in chunk.iter().zip(planes.chunks(2)) {
                let v = match pair {
                    [Some(p), Some(m)] => TernaryVector::from_planes(dim, p, m),
                    _ => {
                        skipped += 1;
                        continue;
                    }
                };
                match v {
                    Ok(v) => bank.insert(*id, &v)?,
                    Err(e) => {
                        tracing::warn!(grain = id, error = %e, "grain planes do not decode; skipped");
                        skipped += 1;
                    }
                }
            }
        }
        let hat_name: Option<String> = client.get(keys.hat_current()).await?;
        let hat = match &hat_name {
            Some(name) => {
                let mask: Option<Vec<u8>> = client.get(keys.hat_mask(name)).await?;
                match mask.map(|m| HatMask::from_bytes(&m)) {
                    Some(Ok(h)) => h,
                    _ => {
                        tracing::warn!(hat = %name, "hat mask missing or not 32 bytes; no hat");
                        HatMask::EMPTY
                    }
                }
            }
            None => HatMask::EMPTY,
        };
        Ok(Self {
            bank,
            hat,
            hat_name,
            version: version.unwrap_or(0),
            skipped,
        })
    }
}

/// The snapshot in use, swapped whole on reload (searches hold their own `Arc`).
#[derive(Clone, Debug, Default)]
pub struct Shared(Arc<RwLock<Option<Arc<Snapshot>>>>);

impl Shared {
    /// The current snapshot, if one was loaded.
    pub fn get(&self) -> Option<Arc<Snapshot>> {
        self.0.read().ok().and_then(|g| g.clone())
    }

    /// Installs `s`.
    pub fn set(&self, s: Arc<Snapshot>) {
        if let Ok(mut g) = self.0.write() {
            *g = Some(s);
        }
    }
}

/// The instance's bank: the [`Shared`] snapshot and how to reload it. Reloads are serialised,
/// so the watcher and the recompute leader asking at once load once.
#[derive(Clone)]
pub struct Bank {
    /// The daemon's command connection.
    client: Client,
    /// Key builder.
    keys: Keys,
    /// Metrics behind `/metrics`.
    metrics: Metrics,
    /// `[ghost] dim`.
    dim: usize,
    /// The snapshot in use.
    shared: Shared,
    /// Held while loading.
    loading: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Bank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bank")
            .field("dim", &self.dim)
            .finish_non_exhaustive()
    }
}

impl Bank {
    /// A bank of `dim` trits loaded through `client`.
    pub fn new(client: Client, keys: Keys, metrics: Metrics, dim: usize) -> Self {
        Self {
            client,
            keys,
            metrics,
            dim,
            shared: Shared::default(),
            loading: Arc::default(),
        }
    }

    /// The snapshot in use, if one was loaded.
    pub fn get(&self) -> Option<Arc<Snapshot>> {
        self.shared.get()
    }

    /// The snapshot at `kitbash:reflex:version` = `version`: the one in use when it is at that
    /// version, else a fresh load (whose version is the one read when the load began, `version`
    /// or newer). Returns the snapshot and whether it was loaded now.
    pub async fn at(&self, version: u64) -> Result<(Arc<Snapshot>, bool), LoadError> {
        if let Some(s) = self.get()
            && s.version == version
        {
            return Ok((s, false));
        }
        let _loading = self.loading.lock().await;
        // Another caller may have loaded it while this one waited.
        if let Some(s) = self.get()
            && s.version == version
        {
            return Ok((s, false));
        }
        let snap = Snapshot::load(&self.client, &self.keys, self.dim).await?;
        tracing::info!(
            grains = snap.bank.len(),
            skipped = snap.skipped,
            hat = snap.hat_name.as_deref().unwrap_or("-"),
            version = snap.version,
            "grain bank loaded"
        );
        self.metrics.set(
            "kitbash_ghost_grains",
            "Grains in the in-memory bank.",
            &[],
            snap.bank.len() as f64,
        );
        self.metrics.set(
            "kitbash_ghost_bank_version",
            "The kitbash:reflex:version of the in-memory bank.",
            &[],
            snap.version as f64,
        );
        let snap = Arc::new(snap);
        self.shared.set(Arc::clone(&snap));
        Ok((snap, true))
    }

    /// The snapshot at the version Redis holds now.
    pub async fn current(&self) -> Result<(Arc<Snapshot>, bool), LoadError> {
        let version: Option<u64> = self.client.get(self.keys.reflex_version()).await?;
        self.at(version.unwrap_or(0)).await
    }
}
