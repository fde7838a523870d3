//! A check every [`PartitionLogic`] must pass: the state after applying entries in batches
//! — any split — equals the state after replaying them one by one, as recovery does. Anything
//! that depends on batch boundaries or on a clock that recovery does not restore (an eviction
//! sweep, "every N entries") breaks it, and a recovered partition would then differ from one
//! that never stopped. Daemons run it from their tests (feynman's property test).

use super::{Effects, Entry, PartitionLogic};

/// Applies `entries` to a fresh state of partition `p` in batches of the sizes in `splits`
/// (cycled; a size of 0 counts as 1), and replays them one by one into another fresh state;
/// then compares [`PartitionLogic::encode_item`] of every key in `keys`. `Err` names the first
/// item that differs and both encodings' lengths. Entries a batch rejects (`Err` from `apply`)
/// must not have changed the state, so they are replayed too only when `apply` accepted them.
pub async fn split_equals_replay<L: PartitionLogic>(
    logic: &L,
    p: u32,
    entries: &[Entry<L::Message>],
    splits: &[usize],
    keys: &[String],
) -> Result<(), String>
where
    L::Message: Clone,
{
    let mut live = logic.empty(p);
    let mut accepted: Vec<Entry<L::Message>> = Vec::with_capacity(entries.len());
    let mut at = 0;
    let mut k = 0;
    while at < entries.len() {
        let n = splits
            .get(k % splits.len().max(1))
            .copied()
            .unwrap_or(1)
            .max(1);
        let end = (at + n).min(entries.len());
        let batch = &entries[at..end];
        let mut out = Effects::default();
        let results = match logic.apply(&mut live, batch, &mut out).await {
            Ok(r) => r,
            Err(t) => return Err(format!("a transient failure in a pure check: {t}")),
        };
        for (e, r) in batch.iter().zip(results) {
            if r.is_ok() {
                accepted.push(e.clone());
            }
        }
        at = end;
        k += 1;
    }
    let mut replayed = logic.empty(p);
    for e in &accepted {
        logic.replay(&mut replayed, e);
    }
    for key in keys {
        let (a, b) = (
            logic.encode_item(&live, key),
            logic.encode_item(&replayed, key),
        );
        if a != b {
            return Err(format!(
                "item {key:?}: applied in batches {:?} bytes, replayed entry by entry {:?} bytes",
                a.map(|v| v.len()),
                b.map(|v| v.len())
            ));
        }
    }
    Ok(())
}
