//! The seeds' expiration policy as data: one row per key family, read by writers (to set TTLs),
//! by `kitbash keys` (to audit them) and by the memory-budget model.

use std::time::Duration;

/// A key family's expiration rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ttl {
    /// Never expires (until overwritten).
    None,
    /// Expires this long after each write.
    After(Duration),
    /// The caller chooses per write (spike trains).
    PerCall,
}

impl Ttl {
    /// The TTL in whole seconds, when fixed.
    pub fn secs(self) -> Option<u64> {
        match self {
            Ttl::After(d) => Some(d.as_secs()),
            Ttl::None | Ttl::PerCall => None,
        }
    }
}

/// One row of the policy table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TtlRule {
    /// The key pattern as the seeds write it.
    pub pattern: &'static str,
    /// Which seed defines it (`"000"` … `"004"`).
    pub seed: &'static str,
    /// The rule.
    pub ttl: Ttl,
    /// Why, in the seed's words where it gives them.
    pub reason: &'static str,
}

const fn secs(s: u64) -> Ttl {
    Ttl::After(Duration::from_secs(s))
}

/// CMS record: 24 h ("queries fade over days").
pub const CMS_RECORD: Ttl = secs(24 * 3600);
/// CMS grains: 24 h.
pub const CMS_GRAINS: Ttl = secs(24 * 3600);
/// Resonance: 5 days.
pub const RESONANCE: Ttl = secs(5 * 24 * 3600);
/// Ghost signal: 1 h.
pub const GHOST: Ttl = secs(3600);
/// Market snapshot: 60 s.
pub const MARKET_SNAPSHOT: Ttl = secs(60);
/// Agent state: 1 h.
pub const AGENT_STATE: Ttl = secs(3600);
/// Working-memory pattern: 1 h.
pub const WORKING_MEMORY: Ttl = secs(3600);
/// Attention weights: 10 min.
pub const ATTENTION: Ttl = secs(600);
/// Memory token: 1 h.
pub const MEMORY_TOKEN: Ttl = secs(3600);
/// Relevance score: 15 min.
pub const RELEVANCE_SCORE: Ttl = secs(900);
/// Session: 30 min.
pub const SESSION: Ttl = secs(1800);
/// `quantum:session:current`: 24 h, refreshed by every change (seed 002's current session).
pub const QUANTUM_SESSION: Ttl = secs(24 * 3600);
/// Rate-limit window: one minute (the window length), refreshed by each request.
pub const RATE_WINDOW: Ttl = secs(60);

/// The whole table, in seed order.
pub const POLICY: &[TtlRule] = &[
    TtlRule {
        pattern: "cms:{h}",
        seed: "000",
        ttl: CMS_RECORD,
        reason: "queries fade over days",
    },
    TtlRule {
        pattern: "cms:{h}:grains",
        seed: "000",
        ttl: CMS_GRAINS,
        reason: "associated grains stale quickly",
    },
    TtlRule {
        pattern: "cms:{h}:resonance",
        seed: "000",
        ttl: RESONANCE,
        reason: "keep history longer",
    },
    TtlRule {
        pattern: "grain:{id}:sig",
        seed: "000",
        ttl: Ttl::None,
        reason: "permanent until the grain is updated",
    },
    TtlRule {
        pattern: "grain:{id}:bits:+",
        seed: "000",
        ttl: Ttl::None,
        reason: "permanent",
    },
    TtlRule {
        pattern: "grain:{id}:bits:-",
        seed: "000",
        ttl: Ttl::None,
        reason: "permanent",
    },
    TtlRule {
        pattern: "ghost:{h}",
        seed: "000",
        ttl: GHOST,
        reason: "high-resonance queries change quickly",
    },
    TtlRule {
        pattern: "hat:{name}:mask",
        seed: "000",
        ttl: Ttl::None,
        reason: "permanent",
    },
    TtlRule {
        pattern: "metrics:*",
        seed: "000",
        ttl: Ttl::None,
        reason: "keep for analysis",
    },
    TtlRule {
        pattern: "physics:state:{symbol}",
        seed: "001",
        ttl: Ttl::None,
        reason: "persistent until overwritten",
    },
    TtlRule {
        pattern: "market:snapshot:{symbol}",
        seed: "001",
        ttl: MARKET_SNAPSHOT,
        reason: "stale data protection",
    },
    TtlRule {
        pattern: "agent:state:{agent_id}",
        seed: "001",
        ttl: AGENT_STATE,
        reason: "agent context",
    },
    TtlRule {
        pattern: "quantum:session:current",
        seed: "002",
        ttl: QUANTUM_SESSION,
        reason: "the current session; refreshed by each change",
    },
    TtlRule {
        pattern: "quantum:*",
        seed: "002",
        ttl: Ttl::None,
        reason: "the memory system's state",
    },
    TtlRule {
        pattern: "entity:{name}:{part}",
        seed: "002",
        ttl: Ttl::None,
        reason: "the memory system's state",
    },
    TtlRule {
        pattern: "wm:{hash}",
        seed: "003",
        ttl: WORKING_MEMORY,
        reason: "working memory",
    },
    TtlRule {
        pattern: "spikes:{ts}",
        seed: "003",
        ttl: Ttl::PerCall,
        reason: "the caller chooses per train",
    },
    TtlRule {
        pattern: "attention:{context}",
        seed: "003",
        ttl: ATTENTION,
        reason: "medium-lived weights",
    },
    TtlRule {
        pattern: "memory:{id}",
        seed: "004",
        ttl: MEMORY_TOKEN,
        reason: "memory-token cache",
    },
    TtlRule {
        pattern: "score:{user}:{ctx}:{token}",
        seed: "004",
        ttl: RELEVANCE_SCORE,
        reason: "freshness",
    },
    TtlRule {
        pattern: "session:{user}",
        seed: "004",
        ttl: SESSION,
        reason: "session length",
    },
    TtlRule {
        pattern: "rate:{user}:{endpoint}",
        seed: "004",
        ttl: RATE_WINDOW,
        reason: "one rate window",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_table_values() {
        let get = |p: &str| POLICY.iter().find(|r| r.pattern == p).map(|r| r.ttl.secs());
        assert_eq!(get("cms:{h}"), Some(Some(86_400)));
        assert_eq!(get("cms:{h}:resonance"), Some(Some(432_000)));
        assert_eq!(get("ghost:{h}"), Some(Some(3_600)));
        assert_eq!(get("grain:{id}:sig"), Some(None));
        assert_eq!(get("market:snapshot:{symbol}"), Some(Some(60)));
        assert_eq!(get("attention:{context}"), Some(Some(600)));
        assert_eq!(get("score:{user}:{ctx}:{token}"), Some(Some(900)));
        assert_eq!(get("session:{user}"), Some(Some(1_800)));
    }
}
