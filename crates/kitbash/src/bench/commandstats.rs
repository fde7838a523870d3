//! Redis's own cost of a unit of work from `INFO commandstats`: two snapshots around a phase,
//! divided by the units (checks, patches, lookups) it did. Unlike wall-clock figures these do
//! not move with other work on a shared machine, so they are what benches compare between
//! commits (performance.md, "Figures that survive a noisy machine").

use std::collections::BTreeMap;

use fred::prelude::*;

/// `INFO commandstats` as `command → (calls, usec)`.
pub(crate) type CommandStats = BTreeMap<String, (u64, u64)>;

/// Reads `INFO commandstats`.
pub(crate) async fn command_stats(client: &Client) -> anyhow::Result<CommandStats> {
    let info: String = client
        .info(Some(fred::types::InfoKind::CommandStats))
        .await?;
    Ok(parse_command_stats(&info))
}

/// Parses the `cmdstat_{name}:calls=…,usec=…` lines of `INFO commandstats`.
pub(crate) fn parse_command_stats(info: &str) -> CommandStats {
    info.lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let field = |f: &str| {
                rest.split(',')
                    .find_map(|kv| kv.strip_prefix(f)?.strip_prefix('='))
                    .and_then(|v| v.parse::<u64>().ok())
            };
            Some((name.trim().to_owned(), (field("calls")?, field("usec")?)))
        })
        .collect()
}

/// `(calls, usec)` of `name` between two snapshots.
pub(crate) fn delta(before: &CommandStats, after: &CommandStats, name: &str) -> (u64, u64) {
    let (c1, u1) = after.get(name).copied().unwrap_or_default();
    let (c0, u0) = before.get(name).copied().unwrap_or_default();
    (c1.saturating_sub(c0), u1.saturating_sub(u0))
}

/// Per command that ran between the snapshots (except those `skip` names: the bench's own
/// reads), its calls and µs per unit of work: `{"evalsha": {"calls_per_<unit>": …,
/// "usec_per_<unit>": …, "usec_per_call": …}, …}`. Commands a script runs are counted under
/// their own names too, so a script's `evalsha` µs include its inner commands'.
pub(crate) fn cost_per_unit(
    before: &CommandStats,
    after: &CommandStats,
    units: u64,
    unit: &str,
    skip: impl Fn(&str) -> bool,
) -> serde_json::Value {
    let units = units.max(1) as f64;
    let mut out = serde_json::Map::new();
    for name in after.keys() {
        if name == "info" || name.starts_with("config") || skip(name) {
            continue;
        }
        let (calls, usec) = delta(before, after, name);
        if calls > 0 {
            out.insert(
                name.clone(),
                serde_json::json!({
                    format!("calls_per_{unit}"): calls as f64 / units,
                    format!("usec_per_{unit}"): usec as f64 / units,
                    "usec_per_call": usec as f64 / calls as f64,
                }),
            );
        }
    }
    serde_json::Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_calls_and_usec_and_divides_per_unit() {
        let before = parse_command_stats(
            "# Commandstats\r\ncmdstat_evalsha:calls=10,usec=100,usec_per_call=10.00,rejected_calls=0,failed_calls=0\r\n",
        );
        let after = parse_command_stats(
            "# Commandstats\r\ncmdstat_evalsha:calls=30,usec=500,usec_per_call=16.67\r\ncmdstat_xadd:calls=40,usec=80\r\ncmdstat_info:calls=3,usec=9\r\n",
        );
        assert_eq!(delta(&before, &after, "evalsha"), (20, 400));
        let cost = cost_per_unit(&before, &after, 20, "patch", |_| false);
        assert_eq!(cost["evalsha"]["usec_per_patch"], 20.0);
        assert_eq!(cost["evalsha"]["usec_per_call"], 20.0);
        assert_eq!(cost["xadd"]["calls_per_patch"], 2.0);
        assert!(cost.get("info").is_none());
    }
}
