//! entity's partition logic: each batch of a partition's updates is applied in stream order, per
//! document, in Rust, and committed per document through the [`DocumentStore`] with a
//! compare-and-set on the document's version and last applied entry. The runtime's partitioned
//! component ([`kitbash_runtime::partition`]) owns leases, ordered reads, routing and `mid`
//! checks, dead letters and the fenced checkpoint, which moves after the documents are written.
//!
//! The state is a cache: the parsed document, version and `applied` of recently changed
//! documents. Redis holds the truth; a stale cache costs one failed compare-and-set, which
//! returns what is stored, and the batch's updates are computed again on it. Nothing is
//! snapshotted, so recovery is free: the first update of a document after a restart reads it.

use std::collections::HashMap;
use std::time::Instant;

use kitbash_runtime::config::EntityConfig;
use kitbash_runtime::entries::id_cmp;
use kitbash_runtime::metrics::Metrics;
use kitbash_runtime::partition::{Effects, Entry, PartitionLogic, PartitionSpec, Transient};
use kitbash_schema::messages::{EntityTarget, RoutedEntityUpdate, quantum_update_parts};
use kitbash_schema::{Keys, StreamName};
use serde_json::Value;

use crate::document;
use crate::store::{Change, Committed, DocCommit, DocumentStore, REJECTED_KEPT, Stored};

/// A cached document.
#[derive(Debug)]
struct Cached {
    stored: Stored,
    /// Batch counter at the last change (eviction order).
    used: u64,
}

/// One partition's cache.
#[derive(Debug, Default)]
pub struct PartitionState {
    p: u32,
    docs: HashMap<String, Cached>,
    batches: u64,
}

/// The entity updater's [`PartitionLogic`], over any [`DocumentStore`].
#[derive(Clone, Debug)]
pub struct Documents<S> {
    cfg: EntityConfig,
    keys: Keys,
    store: S,
    metrics: Metrics,
}

/// What one document's updates in a batch came to.
struct Plan {
    commit: Option<DocCommit>,
    /// Per batch index: the outcome (`Ok` also for updates already applied or changing nothing).
    results: Vec<(usize, Result<(), String>)>,
    after: Stored,
}

impl<S: DocumentStore> Documents<S> {
    /// The logic for `cfg`, storing through `store`.
    pub fn new(cfg: EntityConfig, keys: Keys, store: S, metrics: Metrics) -> Self {
        Self {
            cfg,
            keys,
            store,
            metrics,
        }
    }

    /// The partitioned streams entity works on.
    pub fn spec(&self) -> PartitionSpec {
        PartitionSpec {
            stream: StreamName::EntityPart,
            partitions: self.cfg.partitions,
            lease_ms: self.cfg.lease_ms,
            snapshot_ms: self.cfg.snapshot_ms,
            snapshot_max_items: 256,
            snapshot_max_bytes: 256 * 1024,
            commit_max_bytes: 256 * 1024,
            snapshot_item_ms: 0,
            stream_max: self.cfg.stream_max,
            group: "entity",
        }
    }

    /// Computes `doc`'s updates (`idx` into `batch`) on `from`.
    fn plan(
        &self,
        p: u32,
        key: &str,
        target: &EntityTarget,
        from: &Stored,
        batch: &[Entry<RoutedEntityUpdate>],
        idx: &[usize],
    ) -> Plan {
        let mut cur = from.clone();
        let mut changes = Vec::new();
        let mut results = Vec::with_capacity(idx.len());
        let mut last_id = None;
        let mut rejected = from.rejected.clone();
        for &i in idx {
            let Some(e) = batch.get(i) else { continue };
            let u = &e.message.update;
            if !from.applied.is_empty() && id_cmp(&e.id, &from.applied).is_le() {
                // Committed before (by this worker before a crash, or by a previous owner) —
                // or rejected by that commit: then it is dead-lettered again (the checkpoint,
                // which carries dead letters, may not have followed the document).
                let r = match from.rejected.iter().find(|(id, _)| *id == e.id) {
                    Some((_, why)) => Err(why.clone()),
                    None => Ok(()),
                };
                results.push((i, r));
                continue;
            }
            last_id = Some(e.id.as_str());
            if let Some(want) = u.expected_version
                && want != cur.version
            {
                results.push((
                    i,
                    Err(format!(
                        "version conflict: the update expects {key} at version {want}, it is at {}",
                        cur.version
                    )),
                ));
                continue;
            }
            let next = match document::apply(cur.doc.as_ref(), u.op, &u.patch) {
                Ok(next) => next,
                Err(why) => {
                    results.push((i, Err(why)));
                    continue;
                }
            };
            if next == cur.doc {
                results.push((i, Ok(())));
                continue;
            }
            let data = next.as_ref().map(document::to_bytes).unwrap_or_default();
            if data.len() > self.cfg.max_document_bytes {
                results.push((
                    i,
                    Err(format!(
                        "{key} would be {} bytes, over entity.max_document_bytes = {}",
                        data.len(),
                        self.cfg.max_document_bytes
                    )),
                ));
                continue;
            }
            let version = cur.version + 1;
            let publish = quantum_update_parts(
                target.update_type(),
                key,
                next.as_ref().unwrap_or(&Value::Null),
                version,
            );
            changes.push(Change {
                version,
                entry: format!("{}/{}", StreamName::EntityPart(p).logical(), e.id),
                op: u.op.name(),
                patch: document::to_bytes(&u.patch),
                data,
                publish,
            });
            cur.doc = next;
            cur.version = version;
            results.push((i, Ok(())));
        }
        // The updates rejected past `applied`: the commit moves `applied` over them, so it
        // remembers them (see `Stored::rejected`).
        for (i, r) in &results {
            if let (Err(why), Some(e)) = (r, batch.get(*i))
                && (from.applied.is_empty() || id_cmp(&e.id, &from.applied).is_gt())
            {
                rejected.push((e.id.clone(), why.clone()));
            }
        }
        if rejected.len() > REJECTED_KEPT {
            rejected.drain(..rejected.len() - REJECTED_KEPT);
        }
        let commit = (!changes.is_empty()).then(|| {
            cur.applied = last_id.unwrap_or_default().to_owned();
            cur.rejected = rejected.clone();
            DocCommit {
                key: key.to_owned(),
                expect: (from.version, from.applied.clone()),
                applied: cur.applied.clone(),
                // The last change's bytes are the final document's (one encoding, not two).
                doc: cur.doc.as_ref().map(|d| match changes.last() {
                    Some(last) if !last.data.is_empty() => last.data.clone(),
                    _ => document::to_bytes(d),
                }),
                version: cur.version,
                rejected,
                ttl_secs: ttl_of(target),
                changes,
            }
        });
        Plan {
            commit,
            results,
            after: cur,
        }
    }

    fn evict(&self, state: &mut PartitionState) {
        let cap = self.cfg.max_cached_documents;
        if state.docs.len() <= cap {
            return;
        }
        let keep = cap - cap / 20;
        let mut by_use: Vec<(u64, String)> = state
            .docs
            .iter()
            .map(|(k, c)| (c.used, k.clone()))
            .collect();
        by_use.sort_unstable();
        for (_, k) in by_use.into_iter().take(state.docs.len() - keep) {
            state.docs.remove(&k);
        }
    }
}

/// The TTL a document gets on every change, s (0 = none).
fn ttl_of(target: &EntityTarget) -> u64 {
    match target {
        EntityTarget::SessionCurrent => kitbash_schema::ttl::QUANTUM_SESSION.secs().unwrap_or(0),
        _ => 0,
    }
}

impl<S: DocumentStore + Clone> PartitionLogic for Documents<S> {
    type Message = RoutedEntityUpdate;
    type State = PartitionState;

    fn route_key<'a>(&self, m: &'a RoutedEntityUpdate) -> &'a str {
        &m.route
    }

    fn empty(&self, p: u32) -> PartitionState {
        PartitionState {
            p,
            ..PartitionState::default()
        }
    }

    fn restore_item(&self, _: &mut PartitionState, _: &str, _: &[u8]) -> Result<(), String> {
        // Nothing is snapshotted (see the module docs); an old item is ignored.
        Ok(())
    }

    fn replay(&self, _: &mut PartitionState, _: &Entry<RoutedEntityUpdate>) {
        // Committed updates are in Redis already; the cache fills on demand.
    }

    async fn apply(
        &self,
        state: &mut PartitionState,
        batch: &[Entry<RoutedEntityUpdate>],
        _out: &mut Effects,
    ) -> Result<Vec<Result<(), String>>, Transient> {
        let started = Instant::now();
        let mut results: Vec<Result<(), String>> = vec![Ok(()); batch.len()];
        // Documents in order of first appearance, each with its entries in stream order.
        let mut order: Vec<(String, EntityTarget, Vec<usize>)> = Vec::new();
        let mut at: HashMap<String, usize> = HashMap::new();
        for (i, e) in batch.iter().enumerate() {
            let key = e.message.update.target.key(&self.keys);
            match at.get(&key) {
                Some(&j) => order[j].2.push(i),
                None => {
                    at.insert(key.clone(), order.len());
                    order.push((key, e.message.update.target.clone(), vec![i]));
                }
            }
        }
        let missing: Vec<String> = order
            .iter()
            .filter(|(k, _, _)| !state.docs.contains_key(k))
            .map(|(k, _, _)| k.clone())
            .collect();
        if !missing.is_empty() {
            // Redis could not answer: nothing has changed yet; the runtime holds the batch.
            // (A failure that is not transient — an ACL without GET — holds it too: the
            // operator must see a stuck, not-ready partition, not a dead-letter stream filling
            // with good updates.)
            let loaded = self
                .store
                .load(&missing)
                .await
                .map_err(|e| Transient(format!("cannot load documents: {e}")))?;
            for (k, stored) in missing.into_iter().zip(loaded) {
                match stored {
                    Ok(stored) => {
                        state.docs.insert(k, Cached { stored, used: 0 });
                    }
                    // This document only (not JSON, a key of another type): its updates are
                    // dead-lettered, its neighbours' go on.
                    Err(why) => {
                        if let Some((_, _, idx)) = order.iter().find(|(key, _, _)| *key == k) {
                            for &i in idx {
                                results[i] = Err(format!("cannot read the document: {why}"));
                            }
                        }
                    }
                }
            }
            order.retain(|(k, _, _)| state.docs.contains_key(k));
        }
        state.batches += 1;
        let mut pending: Vec<usize> = (0..order.len()).collect();
        let mut conflicts = 0u64;
        let mut transient: Option<String> = None;
        for _attempt in 0..=self.cfg.conflict_retries {
            if pending.is_empty() {
                break;
            }
            let mut plans: Vec<(usize, Plan)> = Vec::new();
            for &d in &pending {
                let (key, target, idx) = &order[d];
                let Some(c) = state.docs.get(key) else {
                    continue;
                };
                plans.push((d, self.plan(state.p, key, target, &c.stored, batch, idx)));
            }
            let commits: Vec<DocCommit> =
                plans.iter().filter_map(|(_, p)| p.commit.clone()).collect();
            let outcomes = if commits.is_empty() {
                Vec::new()
            } else {
                self.store.commit(&commits).await
            };
            let mut outcome = outcomes.into_iter();
            let mut again = Vec::new();
            for (d, plan) in plans {
                let key = &order[d].0;
                let result = if plan.commit.is_some() {
                    outcome.next().unwrap_or_else(|| {
                        Err(crate::store::StoreError::Redis(fred::error::Error::new(
                            fred::error::ErrorKind::Unknown,
                            "the store returned fewer commit results than commits",
                        )))
                    })
                } else {
                    Ok(Committed::Yes)
                };
                match result {
                    Ok(Committed::Moved(now)) => {
                        conflicts += 1;
                        if let Some(c) = state.docs.get_mut(key) {
                            c.stored = now;
                        }
                        again.push(d);
                    }
                    Ok(Committed::Yes) => {
                        let n = plan.commit.as_ref().map_or(0, |c| c.changes.len());
                        if n > 0 {
                            self.metrics.inc(
                                "kitbash_entity_changes_total",
                                "Document changes committed.",
                                &[],
                                n as u64,
                            );
                        }
                        if let Some(c) = state.docs.get_mut(key) {
                            c.stored = plan.after;
                            c.used = state.batches;
                        }
                        for (i, r) in plan.results {
                            results[i] = r;
                        }
                    }
                    // Redis could not do it now: the batch is held and applied again (the
                    // documents committed meanwhile skip what they applied).
                    Err(e) if e.is_transient() => {
                        transient.get_or_insert_with(|| e.to_string());
                    }
                    // This document only (its stored bytes are not JSON, a script error on its
                    // keys): its updates are dead-lettered, its neighbours' stand.
                    Err(e) => {
                        for (i, _) in &plan.results {
                            results[*i] = Err(format!("cannot commit the document: {e}"));
                        }
                    }
                }
            }
            pending = again;
        }
        for d in pending {
            for &i in &order[d].2 {
                results[i] = Err(format!(
                    "version conflict: {} kept moving under other writers past entity.conflict_retries = {}",
                    order[d].0, self.cfg.conflict_retries
                ));
            }
        }
        if conflicts > 0 {
            self.metrics.inc(
                "kitbash_entity_conflicts_total",
                "Document commits refused because another writer moved the version first.",
                &[],
                conflicts,
            );
        }
        self.metrics.observe(
            "kitbash_entity_apply_seconds",
            "Time to apply and commit one batch's documents.",
            &[],
            started.elapsed().as_secs_f64(),
        );
        self.evict(state);
        if let Some(why) = transient {
            return Err(Transient(format!("cannot commit documents: {why}")));
        }
        Ok(results)
    }

    fn encode_item(&self, _: &PartitionState, _: &str) -> Option<Vec<u8>> {
        None
    }
}
