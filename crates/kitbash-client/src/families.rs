//! Whole key families (`memory:*`, `wm:*`, …): memory statistics and clearing, by `SCAN` in
//! batches — never `KEYS`, which blocks Redis for as long as it walks the whole keyspace.
//!
//! On a Redis Cluster (a clustered client) the walk visits every primary in turn, since each
//! holds only its own slots' keys, and deletes key by key (one `UNLINK` may not span slots).

use fred::prelude::*;
use fred::types::Value;
use kitbash_schema::{KeyFamily, Keys};

use crate::ClientError;

/// How many keys one `SCAN` call asks for.
pub const SCAN_BATCH: u32 = 500;

/// Keys and bytes of one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FamilyStats {
    /// The family.
    pub family: KeyFamily,
    /// Keys found.
    pub keys: u64,
    /// Sum of `MEMORY USAGE` over them, bytes.
    pub bytes: u64,
}

/// A cluster client's primaries in a stable order (empty for a standalone client): what a
/// whole-keyspace walk or a per-node report visits.
pub fn primaries(client: &Client) -> Vec<fred::types::config::Server> {
    let mut out = client
        .cached_cluster_state()
        .map(|s| s.unique_primary_nodes())
        .unwrap_or_default();
    out.sort_by_key(|s| s.to_string());
    out
}

/// Walks the keys matching a pattern, one `SCAN` page at a time — on a cluster, every
/// primary's keyspace one after the other.
#[derive(Debug)]
pub struct KeyScan {
    /// `MATCH` pattern.
    pattern: String,
    /// The next cursor on the current node; `None` once the walk is complete.
    cursor: Option<String>,
    /// Cluster only: the primaries still to walk after the current one (filled on the first
    /// page), and the current one.
    nodes: Option<(
        Vec<fred::types::config::Server>,
        Option<fred::types::config::Server>,
    )>,
}

impl KeyScan {
    /// A walk over the keys matching `pattern` (a `SCAN MATCH` glob).
    pub fn new(pattern: impl Into<String>) -> Self {
        Self {
            pattern: pattern.into(),
            cursor: Some("0".to_owned()),
            nodes: None,
        }
    }

    /// A walk over one cluster primary's keys only (a share of a sample per node).
    pub fn on_node(pattern: impl Into<String>, node: fred::types::config::Server) -> Self {
        Self {
            pattern: pattern.into(),
            cursor: Some("0".to_owned()),
            nodes: Some((Vec::new(), Some(node))),
        }
    }

    /// The next page of keys (possibly empty), or `None` when the walk is complete.
    pub async fn next_batch(
        &mut self,
        client: &Client,
    ) -> Result<Option<Vec<String>>, ClientError> {
        if client.is_clustered() && self.nodes.is_none() {
            let mut primaries = primaries(client);
            primaries.reverse();
            let first = primaries.pop();
            self.nodes = Some((primaries, first));
        }
        let Some(cursor) = self.cursor.take() else {
            return Ok(None);
        };
        let (next, keys): (String, Vec<String>) = match &self.nodes {
            Some((_, Some(node))) => {
                client
                    .with_cluster_node(node.clone())
                    .scan_page(cursor, self.pattern.as_str(), Some(SCAN_BATCH), None)
                    .await?
            }
            // A cluster whose routing table is empty has no keys to walk.
            Some((_, None)) => return Ok(None),
            None => {
                client
                    .scan_page(cursor, self.pattern.as_str(), Some(SCAN_BATCH), None)
                    .await?
            }
        };
        if next != "0" {
            self.cursor = Some(next);
        } else if let Some((rest, current)) = &mut self.nodes
            && let Some(node) = rest.pop()
        {
            *current = Some(node);
            self.cursor = Some("0".to_owned());
        }
        Ok(Some(keys))
    }
}

/// Counts the keys of `family` and sums their `MEMORY USAGE`.
///
/// ```no_run
/// # async fn demo(client: fred::prelude::Client) -> Result<(), kitbash_client::ClientError> {
/// use kitbash_schema::{KeyFamily, Keys};
/// let s = kitbash_client::families::stats(&client, &Keys::default(), KeyFamily::WorkingMemory).await?;
/// println!("{} keys, {} bytes", s.keys, s.bytes);
/// # Ok(()) }
/// ```
pub async fn stats(
    client: &Client,
    keys: &Keys,
    family: KeyFamily,
) -> Result<FamilyStats, ClientError> {
    let mut out = FamilyStats {
        family,
        keys: 0,
        bytes: 0,
    };
    let mut scan = KeyScan::new(keys.family_pattern(family));
    while let Some(batch) = scan.next_batch(client).await? {
        if batch.is_empty() {
            continue;
        }
        let pipe = client.pipeline();
        for k in &batch {
            let _: () = pipe.memory_usage(k.as_str(), Some(0)).await?;
        }
        let sizes: Vec<Value> = pipe.all().await?;
        for v in sizes {
            // A key that expired between SCAN and MEMORY USAGE answers nil.
            if let Some(b) = v.as_u64() {
                out.keys += 1;
                out.bytes += b;
            }
        }
    }
    Ok(out)
}

/// Deletes every key of `family` (`UNLINK`, batch by batch), or with `dry_run` only counts
/// them. Returns the number of keys deleted (or that would be).
///
/// ```no_run
/// # async fn demo(client: fred::prelude::Client) -> Result<(), kitbash_client::ClientError> {
/// use kitbash_schema::{KeyFamily, Keys};
/// let would = kitbash_client::families::clear(&client, &Keys::default(), KeyFamily::Score, true).await?;
/// println!("would delete {would} score keys");
/// # Ok(()) }
/// ```
pub async fn clear(
    client: &Client,
    keys: &Keys,
    family: KeyFamily,
    dry_run: bool,
) -> Result<u64, ClientError> {
    let mut n = 0u64;
    let mut scan = KeyScan::new(keys.family_pattern(family));
    while let Some(batch) = scan.next_batch(client).await? {
        if batch.is_empty() {
            continue;
        }
        if dry_run {
            n += batch.len() as u64;
        } else {
            let removed: i64 = if client.is_clustered() {
                // One node's keys, but of many slots: one UNLINK each, pipelined.
                let pipe = client.pipeline();
                for k in batch {
                    let _: () = pipe.unlink(k).await?;
                }
                let mut removed = 0;
                for r in pipe.try_all::<Value>().await {
                    removed += r?.as_i64().unwrap_or(0);
                }
                removed
            } else {
                client.unlink(batch).await?
            };
            n += removed.max(0) as u64;
        }
    }
    Ok(n)
}
