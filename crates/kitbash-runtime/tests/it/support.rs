//! Shared helpers: a runtime `Redis` for a test server, a key builder in a fresh namespace,
//! raw stream helpers.

use std::time::Duration;

use fred::prelude::*;
use fred::types::Value;
use kitbash_runtime::Redis;
use kitbash_runtime::config::{ConsumerConfig, RedisConfig};
use kitbash_schema::{Envelope, Keys, Message, Namespace, StreamName};

pub fn redis_config(url: &str) -> RedisConfig {
    RedisConfig {
        url: url.to_owned(),
        command_timeout_ms: 2_000,
        ..RedisConfig::default()
    }
}

pub async fn connect(url: &str) -> Redis {
    let r = Redis::connect(&redis_config(url)).expect("client");
    r.wait_connected(Duration::from_secs(10))
        .await
        .expect("connected");
    r
}

pub fn keys() -> Keys {
    Keys::new(Namespace::new(kitbash_testkit::namespace()).expect("namespace"))
}

pub fn fast_consumer() -> ConsumerConfig {
    ConsumerConfig {
        batch: 10,
        block_ms: 100,
        claim_idle_ms: 300,
        claim_interval_ms: 100,
        max_deliveries: 3,
        ..ConsumerConfig::default()
    }
}

pub async fn xadd_msg<M: Message>(r: &Redis, keys: &Keys, s: StreamName, m: &M) -> String {
    let env = Envelope::msgpack(m).expect("encode");
    let fields: Vec<(&str, Value)> = env
        .to_fields()
        .into_iter()
        .map(|(k, v)| (k, Value::Bytes(v.into())))
        .collect();
    r.client
        .xadd::<String, _, _, _, _>(keys.stream(s), false, None, "*", fields)
        .await
        .expect("xadd")
}

pub async fn xadd_raw(r: &Redis, keys: &Keys, s: StreamName, fields: Vec<(&str, &[u8])>) -> String {
    let fields: Vec<(&str, Value)> = fields
        .into_iter()
        .map(|(k, v)| (k, Value::Bytes(v.to_vec().into())))
        .collect();
    r.client
        .xadd::<String, _, _, _, _>(keys.stream(s), false, None, "*", fields)
        .await
        .expect("xadd")
}

/// Number of entries pending in `group` on `s`.
pub async fn pending(r: &Redis, keys: &Keys, s: StreamName, group: &str) -> u64 {
    let v: Value = r
        .client
        .xpending(keys.stream(s), group, ())
        .await
        .expect("xpending");
    match v {
        Value::Array(a) => match a.first() {
            Some(Value::Integer(n)) => *n as u64,
            _ => 0,
        },
        _ => 0,
    }
}

/// Dead letters of `s`, parsed.
pub async fn dead_letters(
    r: &Redis,
    keys: &Keys,
    s: StreamName,
) -> Vec<kitbash_schema::wire::DeadLetter> {
    let v: Value = r
        .client
        .xrange(keys.dead_letter(s), "-", "+", None)
        .await
        .expect("xrange");
    kitbash_runtime::entries::parse_entries("XRANGE", &v)
        .expect("entries")
        .iter()
        .map(|e| kitbash_schema::wire::DeadLetter::from_fields(e.pairs()).expect("dead letter"))
        .collect()
}

pub use kitbash_testkit::support::eventually;
