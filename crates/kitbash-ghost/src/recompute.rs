//! Recomputes the ghosts of the queries hot now after a grain or hat change: a leader task, so
//! one instance does the work for the fleet (every instance still reloads its own bank,
//! [`crate::watch`]).
//!
//! Each run compares `kitbash:reflex:version` with `kitbash:ghost:recomputed` (the version whose
//! hot ghosts were last recomputed). When they differ, the leader makes sure its own bank is at
//! that version (reloading if needed), reads the hot queries — the resonance index and
//! `cms:{h}` `text` in the seed layout, `kitbash:reflex:hot` and `kitbash:reflex:hot:text` in the
//! compact one, both with the bound `ln(threshold) − C·ln(f)` — and writes their ghosts in
//! batches, then records the bank's version in `kitbash:ghost:recomputed`. Every batch and the
//! final mark are scripts fenced by the leader's lease ([`LeaderTerm::FENCE_LUA`]), and each
//! batch renews the lease: a stale leader (paused past its lease) writes no ghost from an old
//! bank over a newer leader's and cannot mark a version done. A leader that dies mid-way leaves
//! `kitbash:ghost:recomputed` behind, so the next leader redoes the whole recomputation.
//! Recomputed ghosts do not count `ghost:activations` (that counts crossings).
//!
//! The scripts touch the lease and the ghost keys together: like the rest of the reflex path
//! they need a standalone Redis (or every key in one slot).

use std::sync::LazyLock;

use fred::prelude::*;
use fred::types::Value;
use fred::types::scripts::Script;
use kitbash_runtime::DaemonContext;
use kitbash_runtime::leader::LeaderTerm;
use kitbash_runtime::metrics::Metrics;
use kitbash_schema::reflex::Layout;
use kitbash_schema::{Keys, ttl};

use crate::bank::{Bank, LoadError};
use crate::writer::{ghost_value, search};

static WRITE: LazyLock<Script> =
    LazyLock::new(|| Script::from_lua(format!("{}{}", LeaderTerm::FENCE_LUA, WRITE_LUA)));
static MARK: LazyLock<Script> =
    LazyLock::new(|| Script::from_lua(format!("{}{}", LeaderTerm::FENCE_LUA, MARK_LUA)));

/// KEYS: lease, ghost keys…. ARGV: token, lease ms, ghost TTL s, one value per ghost key.
/// Renews the lease and writes the ghosts; returns 1 + the number written (0: fenced).
const WRITE_LUA: &str = r#"
redis.call('PEXPIRE', KEYS[1], ARGV[2])
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 2], 'EX', ARGV[3])
end
return #KEYS
"#;

/// KEYS: lease, recomputed. ARGV: token, version. Returns 1 (0: fenced).
const MARK_LUA: &str = r#"
redis.call('SET', KEYS[2], ARGV[2])
return 1
"#;

/// The lease of the recompute leader for `[ghost] poll_ms`: three polls, at least 2 s (a dead
/// leader is replaced within this; there is no `[ghost]` key for it).
pub fn lease_ms(poll_ms: u64) -> u64 {
    poll_ms.saturating_mul(3).max(2_000)
}

/// What one run did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// The hot ghosts were already recomputed at the current version.
    UpToDate,
    /// Recomputed at `version` (now in `kitbash:ghost:recomputed`), `written` ghosts.
    Done {
        /// The bank's `kitbash:reflex:version`.
        version: u64,
        /// Ghosts written.
        written: u64,
    },
    /// The lease was lost mid-way; the next leader redoes the recomputation.
    Fenced,
}

/// Why a run failed (it is retried at the next period).
#[derive(Debug, thiserror::Error)]
pub enum RecomputeError {
    /// The bank could not be loaded.
    #[error("grain bank: {0}")]
    Load(#[from] LoadError),
    /// Redis error.
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
}

/// The leader task.
#[derive(Clone)]
pub struct Recompute {
    /// The daemon's command connection.
    client: Client,
    /// Key builder.
    keys: Keys,
    /// Metrics behind `/metrics`.
    metrics: Metrics,
    /// The instance's bank.
    bank: Bank,
    /// `[ghost]`.
    ghost: kitbash_runtime::config::GhostConfig,
    /// `[reflex] layout`.
    layout: Layout,
    /// `ln([decay] factor)`.
    ln_factor: f64,
    /// `[decay] threshold`.
    threshold: f64,
}

impl std::fmt::Debug for Recompute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recompute")
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

impl Recompute {
    /// The task of the daemon in `ctx`, searching `bank`.
    pub fn new(ctx: &DaemonContext, bank: Bank) -> Self {
        Self {
            client: ctx.redis.client.clone(),
            keys: ctx.keys.clone(),
            metrics: ctx.metrics.clone(),
            bank,
            ghost: ctx.config.ghost.clone(),
            layout: ctx.config.reflex.layout,
            ln_factor: ctx.config.decay.factor.ln(),
            threshold: ctx.config.decay.threshold,
        }
    }

    /// One run for [`kitbash_runtime::Components::leader`]: errors are logged and retried at
    /// the next period.
    pub async fn tick(&self, term: LeaderTerm) {
        match self.run(&term).await {
            Ok(Pass::UpToDate) => {}
            Ok(Pass::Done { version, written }) => {
                tracing::info!(version, written, "hot ghosts recomputed");
            }
            Ok(Pass::Fenced) => {
                tracing::info!("leadership lost during a recomputation; the next leader redoes it");
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot recompute the hot ghosts; retried next period");
            }
        }
    }

    /// Recomputes the hot ghosts if `kitbash:ghost:recomputed` is behind the version, as the
    /// leader of `term`.
    pub async fn run(&self, term: &LeaderTerm) -> Result<Pass, RecomputeError> {
        let state: Vec<Option<u64>> = self
            .client
            .mget(vec![
                self.keys.reflex_version(),
                self.keys.ghost_recomputed(),
            ])
            .await?;
        let version = state.first().copied().flatten().unwrap_or(0);
        let done = state.get(1).copied().flatten();
        if done == Some(version) {
            return Ok(Pass::UpToDate);
        }
        let (snap, _) = self.bank.at(version).await?;
        let mut written = 0;
        if !snap.bank.is_empty() {
            let hot = self.hot().await?;
            for chunk in hot.chunks(self.ghost.recompute_batch) {
                let texts = self.texts(chunk).await?;
                let present: Vec<(&String, String)> = chunk
                    .iter()
                    .zip(texts)
                    .filter_map(|(id, t)| Some((id, t?)))
                    .collect();
                let refs: Vec<&str> = present.iter().map(|(_, t)| t.as_str()).collect();
                let hits = search(&snap, &refs, self.ghost.dim, self.ghost.top_k);
                let ghosts: Vec<(String, String)> = present
                    .iter()
                    .zip(&hits)
                    .filter(|(_, hit)| !hit.is_empty())
                    .map(|((id, _), hit)| (self.keys.ghost(id), ghost_value(hit)))
                    .collect();
                if ghosts.is_empty() {
                    continue;
                }
                if !self.write(term, &ghosts).await? {
                    return Ok(Pass::Fenced);
                }
                let n = ghosts.len() as u64;
                written += n;
                self.metrics.inc(
                    "kitbash_ghost_recomputed_total",
                    "Ghosts of hot queries recomputed after a grain or hat change.",
                    &[],
                    n,
                );
            }
        }
        if !self.mark(term, snap.version).await? {
            return Ok(Pass::Fenced);
        }
        // Created at 0 too, so every instance exposes it.
        self.metrics.inc(
            "kitbash_ghost_recomputed_total",
            "Ghosts of hot queries recomputed after a grain or hat change.",
            &[],
            0,
        );
        self.metrics.inc(
            "kitbash_ghost_recomputations_total",
            "Recomputations of the hot ghosts completed by this instance as the leader.",
            &[],
            1,
        );
        Ok(Pass::Done {
            version: snap.version,
            written,
        })
    }

    /// The ids of the queries hot now, hottest first, at most `[ghost] recompute_max`.
    async fn hot(&self) -> Result<Vec<String>, fred::error::Error> {
        let cycle: Option<u64> = self.client.get(self.keys.decay_cycle()).await?;
        let bound = self.threshold.ln() - cycle.unwrap_or(0) as f64 * self.ln_factor;
        let index = match self.layout {
            Layout::Seed => self.keys.resonance_index(),
            Layout::Compact => self.keys.reflex_hot(),
        };
        let max = i64::try_from(self.ghost.recompute_max).unwrap_or(i64::MAX);
        self.client
            .zrevrangebyscore(index, "+inf", bound, false, Some((0, max)))
            .await
    }

    /// The texts of query ids `ids` (`None` for one whose text is gone).
    async fn texts(&self, ids: &[String]) -> Result<Vec<Option<String>>, fred::error::Error> {
        match self.layout {
            Layout::Seed => {
                let pipe = self.client.pipeline();
                for h in ids {
                    let _: () = pipe
                        .hget(self.keys.cms(h), kitbash_schema::reflex::CMS_TEXT)
                        .await?;
                }
                pipe.all().await
            }
            Layout::Compact => {
                let v: Value = self
                    .client
                    .hmget(self.keys.reflex_hot_text(), ids.to_vec())
                    .await?;
                Ok(match v {
                    Value::Array(a) => a.into_iter().map(|t| t.into_string()).collect(),
                    other => vec![other.into_string()],
                })
            }
        }
    }

    /// Writes `ghosts` (key, value) and renews the lease, fenced; false when fenced.
    async fn write(
        &self,
        term: &LeaderTerm,
        ghosts: &[(String, String)],
    ) -> Result<bool, fred::error::Error> {
        let secs = ttl::GHOST.secs().unwrap_or(3600);
        let mut keys = Vec::with_capacity(ghosts.len() + 1);
        keys.push(term.key.clone());
        let mut args: Vec<Value> = Vec::with_capacity(ghosts.len() + 3);
        args.push(term.token.as_str().into());
        args.push((lease_ms(self.ghost.poll_ms) as i64).into());
        args.push((secs as i64).into());
        for (k, v) in ghosts {
            keys.push(k.clone());
            args.push(v.as_str().into());
        }
        let n: i64 = WRITE.evalsha_with_reload(&self.client, keys, args).await?;
        Ok(n > 0)
    }

    /// Records `version` in `kitbash:ghost:recomputed`, fenced; false when fenced.
    async fn mark(&self, term: &LeaderTerm, version: u64) -> Result<bool, fred::error::Error> {
        let n: i64 = MARK
            .evalsha_with_reload(
                &self.client,
                vec![term.key.clone(), self.keys.ghost_recomputed()],
                vec![
                    Value::from(term.token.as_str()),
                    Value::from(version.to_string()),
                ],
            )
            .await?;
        Ok(n > 0)
    }
}
