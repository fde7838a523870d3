//! `kitbash migrate DIR`: imports a `quantum_states/` + `consciousness/entities/` tree of JSON
//! files (seed 002's layout) through the same compare-and-set commit as the daemon
//! ([`DocumentStore::commit`]), so it can run while the fleet is live and lose nothing.
//!
//! A file whose content already equals the stored document changes nothing (a second run is a
//! no-op); a file that is not JSON (broken, half-written) is reported with its path and skipped,
//! never half-imported.

use std::path::{Path, PathBuf};

use kitbash_schema::Keys;
use kitbash_schema::messages::{EntityTarget, quantum_update_parts};
use serde_json::Value;

use crate::document;
use crate::store::{Change, Committed, DocCommit, DocumentStore, StoreError, Stored};

/// What one file maps to.
#[derive(Clone, Debug, PartialEq)]
pub struct Source {
    /// The file.
    pub path: PathBuf,
    /// The document it becomes.
    pub target: EntityTarget,
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    /// Files found.
    pub files: usize,
    /// Documents written (or, with `dry_run`, that would be).
    pub imported: usize,
    /// Documents already equal to their file.
    pub unchanged: usize,
    /// Files skipped, with why.
    pub skipped: Vec<(PathBuf, String)>,
}

fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The files of the tree under `dir` and their documents, in a stable order.
pub fn discover(dir: &Path) -> Vec<Source> {
    let q = dir.join("quantum_states");
    let mut out = Vec::new();
    let mut add = |path: PathBuf, target: EntityTarget| {
        if path.is_file() {
            out.push(Source { path, target });
        }
    };
    add(q.join("status.json"), EntityTarget::Status);
    add(
        q.join("memories/current_session.json"),
        EntityTarget::SessionCurrent,
    );
    add(
        q.join("memories/work_summary_24h.json"),
        EntityTarget::WorkSummary24h,
    );
    for p in json_files(&q.join("memories/daily")) {
        let date = stem(&p);
        add(p, EntityTarget::Daily { date });
    }
    let entities = dir.join("consciousness/entities");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&entities)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    for n in names {
        let name = stem(&n);
        for p in json_files(&n) {
            let part = stem(&p);
            add(
                p,
                EntityTarget::Entity {
                    name: name.clone(),
                    part,
                },
            );
        }
    }
    out
}

/// Imports every file of `dir` (with `dry_run`, only says what would change). `progress` is
/// called after each file with (done, total, path).
pub async fn migrate<S: DocumentStore>(
    store: &S,
    keys: &Keys,
    dir: &Path,
    dry_run: bool,
    max_document_bytes: usize,
    mut progress: impl FnMut(usize, usize, &Path),
) -> Result<Summary, StoreError> {
    let sources = discover(dir);
    let mut s = Summary {
        files: sources.len(),
        ..Summary::default()
    };
    for (i, src) in sources.iter().enumerate() {
        let checked = std::fs::read(&src.path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(|e| e.to_string()))
            .and_then(|doc| {
                kitbash_schema::Message::validate(&kitbash_schema::messages::EntityUpdate::merge(
                    src.target.clone(),
                    serde_json::json!({}),
                ))
                .map(|()| doc)
            });
        match checked {
            Err(why) => s.skipped.push((src.path.clone(), why)),
            Ok(doc) if document::to_bytes(&doc).len() > max_document_bytes => s.skipped.push((
                src.path.clone(),
                format!("larger than entity.max_document_bytes = {max_document_bytes}"),
            )),
            Ok(doc) => {
                if write(store, keys, &src.target, doc, dry_run).await? {
                    s.imported += 1;
                } else {
                    s.unchanged += 1;
                }
            }
        }
        progress(i + 1, sources.len(), &src.path);
    }
    Ok(s)
}

/// Replaces `target` with `doc` unless equal; true if it (would have) changed.
async fn write<S: DocumentStore>(
    store: &S,
    keys: &Keys,
    target: &EntityTarget,
    doc: Value,
    dry_run: bool,
) -> Result<bool, StoreError> {
    let key = target.key(keys);
    let mut now = match store.load(std::slice::from_ref(&key)).await?.pop() {
        Some(Ok(stored)) => stored,
        Some(Err(why)) => {
            return Err(StoreError::Corrupt {
                key: key.clone(),
                why,
            });
        }
        None => Stored::default(),
    };
    loop {
        if now.doc.as_ref() == Some(&doc) {
            return Ok(false);
        }
        if dry_run {
            return Ok(true);
        }
        let bytes = document::to_bytes(&doc);
        let version = now.version + 1;
        let commit = DocCommit {
            key: key.clone(),
            expect: (now.version, now.applied.clone()),
            applied: now.applied.clone(),
            rejected: now.rejected.clone(),
            doc: Some(bytes.clone()),
            version,
            ttl_secs: match target {
                EntityTarget::SessionCurrent => {
                    kitbash_schema::ttl::QUANTUM_SESSION.secs().unwrap_or(0)
                }
                _ => 0,
            },
            changes: vec![Change {
                version,
                entry: String::new(),
                op: "replace",
                patch: bytes.clone(),
                data: bytes,
                publish: quantum_update_parts(target.update_type(), &key, &doc, version),
            }],
        };
        match store
            .commit(std::slice::from_ref(&commit))
            .await
            .pop()
            .transpose()?
        {
            Some(Committed::Moved(stored)) => now = stored,
            _ => return Ok(true),
        }
    }
}
