//! Leases in Redis: a key holding its holder's token with a TTL. Partition workers and leader
//! tasks are built on them.
//!
//! A token is `{instance}#{n}`: the instance name (unique per process) and a number unique
//! within the process for each acquisition. Renew and release are compare-and-act scripts on the
//! whole token, so neither another instance nor an *earlier* holder inside the same process
//! (a partition worker still draining after its lease expired and was taken again) can extend
//! or delete a lease it no longer holds.

use std::sync::atomic::{AtomicU64, Ordering};

use fred::prelude::*;
use fred::types::scripts::Script;
use fred::types::{Expiration, SetOptions, Value};

static RENEW_SCRIPT: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::from_lua(RENEW));
static RELEASE_SCRIPT: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::from_lua(RELEASE));

const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

/// A fresh token for `instance`: never equal to any other token of this process.
pub fn token(instance: &str) -> String {
    format!("{instance}#{}", NEXT_TOKEN.fetch_add(1, Ordering::Relaxed))
}

/// The instance part of a token (`feynman-host-1-abc#7` → `feynman-host-1-abc`); a value
/// written before tokens existed is its own instance.
pub fn instance_of(token: &str) -> &str {
    token.rsplit_once('#').map_or(token, |(i, _)| i)
}

/// Takes the lease when free (`SET NX PX`).
pub async fn acquire(
    client: &Client,
    key: &str,
    token: &str,
    ms: u64,
) -> Result<bool, fred::error::Error> {
    let r: Value = client
        .set(
            key,
            token,
            Some(Expiration::PX(ms as i64)),
            Some(SetOptions::NX),
            false,
        )
        .await?;
    Ok(!matches!(r, Value::Null))
}

/// Extends the lease while `token` holds it; `false` means it was lost.
pub async fn renew(
    client: &Client,
    key: &str,
    token: &str,
    ms: u64,
) -> Result<bool, fred::error::Error> {
    let n: i64 = RENEW_SCRIPT
        .evalsha_with_reload(
            client,
            vec![key.to_owned()],
            vec![Value::from(token), Value::from(ms as i64)],
        )
        .await?;
    Ok(n == 1)
}

/// Gives the lease up if `token` still holds it; returns whether it did.
pub async fn release(client: &Client, key: &str, token: &str) -> Result<bool, fred::error::Error> {
    let n: i64 = RELEASE_SCRIPT
        .evalsha_with_reload(client, vec![key.to_owned()], vec![Value::from(token)])
        .await?;
    Ok(n == 1)
}

/// The current holder's token, if any.
pub async fn holder(client: &Client, key: &str) -> Result<Option<String>, fred::error::Error> {
    client.get(key).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_name_their_instance() {
        let a = token("feynman-h-1-abc");
        let b = token("feynman-h-1-abc");
        assert_ne!(a, b);
        assert_eq!(instance_of(&a), "feynman-h-1-abc");
        assert_eq!(instance_of("old-style-name"), "old-style-name");
    }
}
