//! Crossings → `ghost:{h}`, `h` being the crossing's `hash` (the query hash in the seed layout,
//! the compact id in the compact layout, as decay writes it). A batch of crossings is scored in
//! one batched search (each block of grains against every query while it is in cache); each
//! ghost is written with `INCR ghost:activations` and the entry's idempotency marker in one
//! script, so a redelivered crossing neither rewrites nor counts twice.

use fred::prelude::*;
use kitbash_runtime::consumer::{Delivery, Handler, Outcome};
use kitbash_runtime::idempotency::{Guarded, apply_once_if};
use kitbash_runtime::metrics::Metrics;
use kitbash_runtime::{DaemonContext, RuntimeError};
use kitbash_schema::messages::Crossing;
use kitbash_schema::{Keys, StreamName, ttl};
use kitbash_ternary::{Hit, SearchOptions, TernaryVector, signature};

use crate::bank::{Bank, LoadError, Snapshot};

/// The handler of the `crossings` stream.
#[derive(Clone)]
pub struct GhostWriter {
    /// The daemon's command connection.
    client: Client,
    /// Key builder.
    keys: Keys,
    /// Metrics behind `/metrics`.
    metrics: Metrics,
    /// The instance's bank.
    bank: Bank,
    /// `[ghost] dim`.
    dim: usize,
    /// `[ghost] top_k`.
    top_k: usize,
    /// `[ghost] marker_ttl_s`.
    marker_ttl_s: u64,
}

impl std::fmt::Debug for GhostWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GhostWriter").finish_non_exhaustive()
    }
}

/// The ghost value: ids joined by commas, best first (`"42,17,88"`).
pub fn ghost_value(hits: &[Hit]) -> String {
    hits.iter()
        .map(|h| h.id.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The top-k grains of each query text under the snapshot's hat, in one batched search.
pub fn search(snap: &Snapshot, texts: &[&str], dim: usize, k: usize) -> Vec<Vec<Hit>> {
    let queries: Vec<TernaryVector> = texts
        .iter()
        .map(|t| signature(t, dim).or_else(|_| TernaryVector::zeros(dim)))
        .filter_map(Result::ok)
        .collect();
    if queries.len() != texts.len() {
        return vec![Vec::new(); texts.len()];
    }
    let opts = SearchOptions::top(k).with_hat(snap.hat);
    snap.bank
        .search_batch(&queries, &opts)
        .unwrap_or_else(|_| vec![Vec::new(); texts.len()])
}

impl GhostWriter {
    /// A handler writing through the daemon's command connection.
    pub fn new(ctx: &DaemonContext, bank: Bank) -> Self {
        let g = &ctx.config.ghost;
        Self {
            client: ctx.redis.client.clone(),
            keys: ctx.keys.clone(),
            metrics: ctx.metrics.clone(),
            bank,
            dim: g.dim,
            top_k: g.top_k,
            marker_ttl_s: g.marker_ttl_s,
        }
    }

    /// Writes `ghost:{h}` and counts the activation, once per crossing — and only while
    /// `kitbash:reflex:version` is still `version`, the version of the bank the ghost was
    /// computed from (checked in the same script): an instance whose bank has not reloaded yet
    /// never overwrites a ghost the recompute leader just wrote from the new bank.
    async fn write(
        &self,
        id: &str,
        hash: &str,
        value: &str,
        version: u64,
    ) -> Result<Guarded, RuntimeError> {
        let ghost = self.keys.ghost(hash);
        let activations = self.keys.ghost_activations();
        let secs = ttl::GHOST.secs().unwrap_or(3600) as i64;
        let cmds = vec![
            vec![
                "SET".into(),
                ghost.as_str().into(),
                value.into(),
                "EX".into(),
                secs.into(),
            ],
            vec!["INCR".into(), activations.as_str().into()],
        ];
        let version_key = self.keys.reflex_version();
        apply_once_if(
            &self.client,
            &self.keys.done_marker(StreamName::Crossings, id),
            self.marker_ttl_s,
            (&version_key, &version.to_string(), "0"),
            &[ghost, activations],
            &cmds,
        )
        .await
    }
}

/// The outcome of a crossing that could not be written because the bank did not load: held
/// while Redis cannot answer (transient), retried by redelivery otherwise.
fn bank_failed(e: &LoadError, what: &str) -> Outcome {
    match e {
        LoadError::Redis(r) if kitbash_runtime::redis::is_transient(r) => {
            Outcome::Transient(format!("{what}: {e}"))
        }
        _ => Outcome::Retry(format!("{what}: {e}")),
    }
}

impl Handler<Crossing> for GhostWriter {
    async fn handle(&mut self, batch: Vec<Delivery<Crossing>>) -> Vec<Outcome> {
        let snap = match self.bank.get() {
            Some(s) => s,
            // Crossings before the watcher's first load: load here rather than leave them
            // pending until they are reclaimed.
            None => match self.bank.current().await {
                Ok((s, _)) => s,
                Err(e) => {
                    let o = bank_failed(&e, "grain bank not loaded");
                    return batch.iter().map(|_| o.clone()).collect();
                }
            },
        };
        // Crossings still to write, by index; a write refused because the bank is older than
        // `kitbash:reflex:version` is recomputed from a reloaded bank (a few rounds at most:
        // each round reloads the current version).
        let mut todo: Vec<usize> = (0..batch.len()).collect();
        let mut out: Vec<Outcome> = vec![Outcome::Ack; batch.len()];
        let mut written = 0;
        let mut snap = snap;
        for round in 0..3 {
            let started = std::time::Instant::now();
            let texts: Vec<&str> = todo
                .iter()
                .map(|&i| batch[i].message.text.as_str())
                .collect();
            let hits = search(&snap, &texts, self.dim, self.top_k);
            self.metrics.observe(
                "kitbash_ghost_search_seconds",
                "Time of one batched top-k search over the grain bank.",
                &[],
                started.elapsed().as_secs_f64(),
            );
            let this = &*self;
            let version = snap.version;
            let batch = &batch;
            let writes = todo.iter().zip(&hits).map(|(&i, h)| async move {
                if h.is_empty() {
                    // No grains: nothing to pre-load.
                    return Ok(Guarded::AlreadyApplied);
                }
                this.write(
                    &batch[i].id,
                    &batch[i].message.hash,
                    &ghost_value(h),
                    version,
                )
                .await
            });
            let results = futures::future::join_all(writes).await;
            let mut stale = Vec::new();
            for (&i, r) in todo.iter().zip(results) {
                match r {
                    Ok(Guarded::Applied) => written += 1,
                    Ok(Guarded::AlreadyApplied) => {}
                    Ok(Guarded::GuardFailed) => stale.push(i),
                    Err(e) => out[i] = Outcome::from_error(&e),
                }
            }
            if stale.is_empty() {
                break;
            }
            self.metrics.inc(
                "kitbash_ghost_stale_bank_total",
                "Ghost writes refused because this instance's bank was older than kitbash:reflex:version.",
                &[],
                stale.len() as u64,
            );
            match self.bank.current().await {
                Ok((s, _)) if round < 2 => snap = s,
                Ok(_) => {
                    for i in stale.iter().copied() {
                        out[i] = Outcome::Retry("the grain bank keeps changing".into());
                    }
                    break;
                }
                Err(e) => {
                    for i in stale.iter().copied() {
                        out[i] = bank_failed(&e, "grain bank reload failed");
                    }
                    break;
                }
            }
            todo = stale;
        }
        self.metrics.inc(
            "kitbash_ghost_activations_total",
            "Ghosts written for crossings (ghost:activations increments).",
            &[],
            written,
        );
        out
    }
}
