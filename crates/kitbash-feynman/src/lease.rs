//! Partition leases: `kitbash:lease:{ticks:p}` holds the owning instance's name with a TTL.
//! Acquire with `SET NX PX`; renew and release only while still the owner (scripts), so an
//! instance never extends or deletes a lease another instance took.

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

/// Takes the lease when free.
pub async fn acquire(
    client: &Client,
    key: &str,
    me: &str,
    ms: u64,
) -> Result<bool, fred::error::Error> {
    let r: Value = client
        .set(
            key,
            me,
            Some(Expiration::PX(ms as i64)),
            Some(SetOptions::NX),
            false,
        )
        .await?;
    Ok(!matches!(r, Value::Null))
}

/// Extends the lease while still the owner; `false` means it was lost.
pub async fn renew(
    client: &Client,
    key: &str,
    me: &str,
    ms: u64,
) -> Result<bool, fred::error::Error> {
    let n: i64 = RENEW_SCRIPT
        .evalsha_with_reload(
            client,
            vec![key.to_owned()],
            vec![Value::from(me), Value::from(ms as i64)],
        )
        .await?;
    Ok(n == 1)
}

/// Gives the lease up if still the owner.
pub async fn release(client: &Client, key: &str, me: &str) -> Result<(), fred::error::Error> {
    let _: i64 = RELEASE_SCRIPT
        .evalsha_with_reload(client, vec![key.to_owned()], vec![Value::from(me)])
        .await?;
    Ok(())
}

/// The owner of a lease, if any.
pub async fn owner(client: &Client, key: &str) -> Result<Option<String>, fred::error::Error> {
    client.get(key).await
}
