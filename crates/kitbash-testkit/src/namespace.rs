//! [`namespace()`]: short random prefixes (`t3f9a1c2e`) for tests that share one server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Distinguishes calls within one process even when the clock does not move between them.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh namespace: `t` and 8 lowercase hex digits, e.g. `t3f9a1c2e`.
///
/// Valid for `kitbash_schema::Namespace` (ASCII alphanumerics, well under 32 bytes) and free
/// of `{`/`}`, so it never changes a key's cluster slot on its own. Random from a splitmix64
/// of the time, the pid and a counter: not for cryptography, only to keep tests apart.
pub fn namespace() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let seed = nanos ^ (u64::from(std::process::id()) << 32) ^ count.wrapping_mul(GOLDEN);
    format!("t{:08x}", splitmix64(seed) as u32)
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// Sebastiano Vigna's splitmix64 finaliser: every input bit affects every output bit.
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(GOLDEN);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn namespaces_are_short_distinct_and_schema_safe() {
        let all: HashSet<String> = (0..1000).map(|_| namespace()).collect();
        assert_eq!(all.len(), 1000);
        for ns in &all {
            assert_eq!(ns.len(), 9, "{ns}");
            assert!(ns.starts_with('t'));
            assert!(ns[1..].bytes().all(|b| b.is_ascii_hexdigit()), "{ns}");
        }
    }
}
