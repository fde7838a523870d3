//! `[ratelimit]`: limits of `kitbash-client`'s rate limiter (seed 004) — a default, one per
//! tier, and per-endpoint overrides by tier — and what to do when Redis is away.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::{ConfigError, Section};

/// What a check does when Redis cannot answer.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FailPolicyConfig {
    /// Admit the request (and mark the decision degraded). The default: the limiter protects
    /// capacity and fairness; refusing every request while Redis is away would turn a cache
    /// outage into a full API outage.
    #[default]
    Open,
    /// Refuse the request: for endpoints where an unmetered burst is worse than an outage
    /// (logins, password resets, paid upstream calls).
    Closed,
}

/// `[ratelimit]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Requests admitted per window when neither the tier nor the endpoint says otherwise
    /// (seed 004: 100 per minute).
    pub default_limit: u64,
    /// The sliding window, in milliseconds (seed 004: one minute).
    pub window_ms: u64,
    /// `"open"` (admit when Redis is away; the default) or `"closed"` (refuse).
    pub fail: FailPolicyConfig,
    /// Limit per tier: `[ratelimit.tiers] pro = 1000`.
    pub tiers: BTreeMap<String, u64>,
    /// Per-endpoint limits by tier: `[ratelimit.endpoints."/search"] free = 20`; the tier
    /// `"*"` applies to every tier the endpoint does not name.
    pub endpoints: BTreeMap<String, BTreeMap<String, u64>>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            default_limit: 100,
            window_ms: 60_000,
            fail: FailPolicyConfig::Open,
            tiers: BTreeMap::new(),
            endpoints: BTreeMap::new(),
        }
    }
}

impl Section for RateLimitConfig {
    const NAME: &'static str = "ratelimit";
    fn validate(&self) -> Result<(), ConfigError> {
        if self.default_limit == 0 {
            return Err(ConfigError::key("default_limit", "must be > 0"));
        }
        if self.window_ms == 0 {
            return Err(ConfigError::key("window_ms", "must be > 0"));
        }
        for (tier, limit) in &self.tiers {
            if *limit == 0 {
                return Err(ConfigError::key(&format!("tiers.{tier}"), "must be > 0"));
            }
        }
        for (endpoint, tiers) in &self.endpoints {
            for (tier, limit) in tiers {
                if *limit == 0 {
                    return Err(ConfigError::key(
                        &format!("endpoints.{endpoint}.{tier}"),
                        "must be > 0",
                    ));
                }
            }
        }
        Ok(())
    }
}
