//! `kitbash ratelimit show|reset USER [ENDPOINT]`: inspect or forget a user's rate-limit windows
//! (`rate:{user}:{endpoint}`); without an endpoint, every window of the user (found by `SCAN`).

use fred::prelude::*;
use kitbash_client::families::KeyScan;
use kitbash_client::ratelimit::{FailPolicy, Limits, RateLimiter};
use kitbash_runtime::config::{FailPolicyConfig, RateLimitConfig};
use kitbash_schema::Keys;

/// The client's [`Limits`] and [`FailPolicy`] from `[ratelimit]`.
pub fn limits_from(cfg: &RateLimitConfig) -> (Limits, FailPolicy) {
    let mut l = Limits::new(
        cfg.default_limit,
        std::time::Duration::from_millis(cfg.window_ms),
    );
    for (tier, limit) in &cfg.tiers {
        l = l.with_tier(tier.clone(), *limit);
    }
    for (endpoint, tiers) in &cfg.endpoints {
        for (tier, limit) in tiers {
            l = l.with_endpoint(endpoint.clone(), tier.clone(), *limit);
        }
    }
    let fail = match cfg.fail {
        FailPolicyConfig::Open => FailPolicy::Open,
        FailPolicyConfig::Closed => FailPolicy::Closed,
    };
    (l, fail)
}

/// Escapes `SCAN MATCH` glob characters in a literal.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The endpoints that have a window for `user`.
async fn endpoints_of(client: &Client, keys: &Keys, user: &str) -> anyhow::Result<Vec<String>> {
    let prefix = keys.rate(user, "");
    let mut scan = KeyScan::new(format!("{}*", glob_escape(&prefix)));
    let mut out = Vec::new();
    while let Some(batch) = scan.next_batch(client).await? {
        out.extend(
            batch
                .iter()
                .filter_map(|k| k.strip_prefix(&prefix).map(str::to_owned)),
        );
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// `kitbash ratelimit show`: one line per window.
pub async fn show(
    client: &Client,
    keys: &Keys,
    cfg: &RateLimitConfig,
    user: &str,
    endpoint: Option<&str>,
) -> anyhow::Result<String> {
    let (limits, _) = limits_from(cfg);
    let window = limits.window;
    let limiter = RateLimiter::new(client.clone(), keys.clone(), limits);
    let endpoints = match endpoint {
        Some(e) => vec![e.to_owned()],
        None => endpoints_of(client, keys, user).await?,
    };
    if endpoints.is_empty() {
        return Ok(format!("{user}: no rate-limit windows\n"));
    }
    let mut out = format!(
        "{:<24} {:>8} {:>12}  (window {} s; limits depend on the caller's tier)\n",
        "endpoint",
        "requests",
        "slot frees",
        window.as_secs_f64()
    );
    for e in endpoints {
        let w = limiter.peek(user, &e).await?;
        out.push_str(&format!(
            "{:<24} {:>8} {:>10.1} s\n",
            e,
            w.count,
            w.reset.as_secs_f64()
        ));
    }
    Ok(out)
}

/// `kitbash ratelimit reset`: deletes the windows; returns how many existed.
pub async fn reset(
    client: &Client,
    keys: &Keys,
    cfg: &RateLimitConfig,
    user: &str,
    endpoint: Option<&str>,
) -> anyhow::Result<u64> {
    let (limits, _) = limits_from(cfg);
    let limiter = RateLimiter::new(client.clone(), keys.clone(), limits);
    let endpoints = match endpoint {
        Some(e) => vec![e.to_owned()],
        None => endpoints_of(client, keys, user).await?,
    };
    let mut n = 0;
    for e in endpoints {
        n += u64::from(limiter.reset(user, &e).await?);
    }
    Ok(n)
}
