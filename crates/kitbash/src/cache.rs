//! `kitbash cache clear FAMILY [--dry-run]`: deletes every key of a client family (`memory`,
//! `score`, `session`, `rate`, `wm`, `spikes`, `attention`) by `SCAN` in batches — never `KEYS`.

use fred::prelude::*;
use kitbash_schema::{KeyFamily, Keys};

/// Parses a family name, listing the valid ones on error.
pub fn parse_family(name: &str) -> anyhow::Result<KeyFamily> {
    KeyFamily::parse(name).ok_or_else(|| {
        let names: Vec<&str> = KeyFamily::ALL.iter().map(|f| f.name()).collect();
        anyhow::anyhow!("unknown family {name:?}; families: {}", names.join(", "))
    })
}

/// Clears (or with `dry_run` counts) the family; returns the line to print.
pub async fn clear(
    client: &Client,
    keys: &Keys,
    family: KeyFamily,
    dry_run: bool,
) -> anyhow::Result<String> {
    let n = kitbash_client::families::clear(client, keys, family, dry_run).await?;
    let pattern = keys.family_pattern(family);
    Ok(if dry_run {
        format!("would delete {n} keys matching {pattern} (dry run; nothing deleted)\n")
    } else {
        format!("deleted {n} keys matching {pattern}\n")
    })
}
