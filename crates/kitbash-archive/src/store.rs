//! One stream's archive directory: committing a segment durably, and verifying what is there.
//!
//! A commit is: write `{name}.tmp` → fsync it → rename to `{name}` → fsync the directory →
//! re-read the manifest and refuse if a newer epoch wrote it (fenced) → write
//! `manifest.json.tmp` → fsync → rename → fsync the directory. Only then may the caller
//! acknowledge the segment's entries. A crash anywhere before the manifest's rename leaves a
//! temporary file or a file the manifest does not list: [`Store::open`] removes both, and the
//! entries, still pending in Redis, are written again. A crash after it leaves entries
//! pending that the manifest already covers: they are at or below [`Store::last_id`] and are
//! acknowledged without being written twice.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use kitbash_schema::StreamName;
use kitbash_schema::archive::{self as layout, Manifest, ManifestFile};
use sha2::{Digest, Sha256};

use crate::format::{self, FormatError, Segment};

/// Failures of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file could not be read or written (a full disk, permissions).
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The manifest does not parse.
    #[error("{path}: manifest does not parse: {why}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// The parser's complaint.
        why: String,
    },
    /// A newer writer (a later lease epoch) wrote the manifest: this one lost its lease.
    #[error("fenced: the manifest of {stream} is at epoch {found}, this writer holds {ours}")]
    Fenced {
        /// Logical stream.
        stream: String,
        /// The manifest's epoch.
        found: u64,
        /// This writer's.
        ours: u64,
    },
    /// A segment would overlap what is archived.
    #[error("segment starting at {first} overlaps the archive, which ends at {last}")]
    Overlap {
        /// The segment's first id.
        first: String,
        /// The archive's last id.
        last: String,
    },
    /// Encoding the segment.
    #[error(transparent)]
    Format(#[from] FormatError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One stream's directory, opened by the writer holding its lease at `epoch`.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    stream: StreamName,
    epoch: u64,
    manifest: Manifest,
}

/// The directory of `stream` under `root` (the namespace's archive root).
pub fn stream_dir(root: &Path, stream: StreamName) -> PathBuf {
    root.join(layout::stream_dir(stream))
}

/// Reads the manifest of the directory `dir` (an empty one when there is none yet).
pub fn read_manifest(dir: &Path, stream: StreamName) -> Result<Manifest, StoreError> {
    let path = dir.join(layout::MANIFEST);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Manifest {
            path,
            why: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Manifest {
            version: layout::MANIFEST_VERSION,
            stream: stream.logical(),
            epoch: 0,
            files: Vec::new(),
        }),
        Err(e) => Err(io(&path)(e)),
    }
}

fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Writes `bytes` to `path` durably: `{path}.tmp`, fsync, rename, fsync of the directory.
fn write_atomically(
    dir: &Path,
    name: &str,
    write: impl FnOnce(&mut HashingWriter<BufWriter<File>>) -> Result<(), StoreError>,
) -> Result<(u64, String), StoreError> {
    let tmp = dir.join(format!("{name}{}", layout::TMP_SUFFIX));
    let path = dir.join(name);
    let file = File::create(&tmp).map_err(io(&tmp))?;
    let mut w = HashingWriter::new(BufWriter::new(file));
    write(&mut w)?;
    let (file, bytes, sha) = w.finish().map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(io(&path))?;
    fsync_dir(dir)?;
    Ok((bytes, sha))
}

impl Store {
    /// Opens (creating) the directory of `stream` under `root` for a writer at `epoch`:
    /// removes temporary files and files the manifest does not list (a crashed commit's; their
    /// entries are still pending in Redis), and refuses when a newer epoch wrote the manifest.
    pub fn open(root: &Path, stream: StreamName, epoch: u64) -> Result<Self, StoreError> {
        let dir = stream_dir(root, stream);
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let manifest = read_manifest(&dir, stream)?;
        if manifest.epoch > epoch {
            return Err(StoreError::Fenced {
                stream: stream.logical(),
                found: manifest.epoch,
                ours: epoch,
            });
        }
        let listed: std::collections::HashSet<&str> =
            manifest.files.iter().map(|f| f.name.as_str()).collect();
        for e in fs::read_dir(&dir).map_err(io(&dir))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let stale = name.ends_with(layout::TMP_SUFFIX)
                || (name.ends_with(".parquet") && !listed.contains(name.as_str()));
            if stale {
                tracing::info!(stream = %stream, file = %name, "removing a file of an unfinished commit");
                fs::remove_file(e.path()).map_err(io(&e.path()))?;
            }
        }
        fsync_dir(&dir)?;
        Ok(Self {
            dir,
            stream,
            epoch,
            manifest,
        })
    }

    /// The last entry id archived (`ms`, `seq`), if any.
    pub fn last_id(&self) -> Option<(u64, u64)> {
        self.manifest
            .last_id()
            .and_then(|id| format::parse_id(id).ok())
    }

    /// The manifest as this writer knows it.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Writes `segment` as a file and lists it in the manifest, durably (see the module
    /// docs); empties the segment. Returns the new file's manifest entry.
    pub fn commit(&mut self, segment: &mut Segment) -> Result<ManifestFile, StoreError> {
        let Some(((fm, fs_), (lm, ls))) = segment.range() else {
            return Err(StoreError::Format(FormatError::Corrupt(
                "empty segment".into(),
            )));
        };
        if let Some(last) = self.last_id().filter(|last| (fm, fs_) <= *last) {
            return Err(StoreError::Overlap {
                first: format!("{fm}-{fs_}"),
                last: format!("{}-{}", last.0, last.1),
            });
        }
        let rows = segment.len() as u64;
        let name = layout::file_name(fm, fs_);
        let (bytes, sha256) = write_atomically(&self.dir, &name, |w| {
            segment.write_to(w).map_err(StoreError::from)
        })?;
        // The fence: a newer lease holder may have written since this one's lease was lost.
        let on_disk = read_manifest(&self.dir, self.stream)?;
        if on_disk.epoch > self.epoch {
            let _ = fs::remove_file(self.dir.join(&name));
            return Err(StoreError::Fenced {
                stream: self.stream.logical(),
                found: on_disk.epoch,
                ours: self.epoch,
            });
        }
        let file = ManifestFile {
            name,
            first_id: format!("{fm}-{fs_}"),
            last_id: format!("{lm}-{ls}"),
            rows,
            bytes,
            sha256,
            epoch: self.epoch,
        };
        let mut next = self.manifest.clone();
        next.epoch = self.epoch;
        next.files.push(file.clone());
        let json = serde_json::to_vec_pretty(&next).map_err(|e| StoreError::Manifest {
            path: self.dir.join(layout::MANIFEST),
            why: e.to_string(),
        })?;
        let manifest_path = self.dir.join(layout::MANIFEST);
        write_atomically(&self.dir, layout::MANIFEST, |w| {
            w.write_all(&json).map_err(io(&manifest_path))
        })?;
        self.manifest = next;
        segment.clear();
        Ok(file)
    }
}

/// A writer that hashes (SHA-256) and counts what passes through.
pub struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hash: Sha256::new(),
            bytes: 0,
        }
    }
}

impl HashingWriter<BufWriter<File>> {
    fn finish(self) -> std::io::Result<(File, u64, String)> {
        let file = self.inner.into_inner().map_err(|e| e.into_error())?;
        Ok((file, self.bytes, hex::encode(self.hash.finalize())))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// What [`verify`] found in one stream's directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Files listed.
    pub files: usize,
    /// Rows in them.
    pub rows: u64,
    /// Every problem, one line each (empty: the archive is whole).
    pub problems: Vec<String>,
}

/// Checks one stream's archive: every listed file present with its size and checksum, readable,
/// holding `rows` entries from `first_id` to `last_id` in ascending order; files in id order
/// without overlaps; no file the manifest does not list (other than a crashed commit's, which
/// the next start removes — reported too).
pub fn verify(root: &Path, stream: StreamName) -> Result<Report, StoreError> {
    let dir = stream_dir(root, stream);
    let manifest = read_manifest(&dir, stream)?;
    let mut report = Report {
        files: manifest.files.len(),
        ..Report::default()
    };
    let mut prev: Option<(u64, u64)> = None;
    for f in &manifest.files {
        let path = dir.join(&f.name);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                report
                    .problems
                    .push(format!("{}: missing or unreadable ({e})", f.name));
                continue;
            }
        };
        if bytes.len() as u64 != f.bytes {
            report.problems.push(format!(
                "{}: {} bytes, the manifest says {}",
                f.name,
                bytes.len(),
                f.bytes
            ));
        }
        let sha = hex::encode(Sha256::digest(&bytes));
        if sha != f.sha256 {
            report.problems.push(format!(
                "{}: checksum mismatch (the file changed after it was written)",
                f.name
            ));
            continue;
        }
        let (Ok(first), Ok(last)) = (format::parse_id(&f.first_id), format::parse_id(&f.last_id))
        else {
            report
                .problems
                .push(format!("{}: bad id range in the manifest", f.name));
            continue;
        };
        if prev.is_some_and(|p| first <= p) {
            {
                report.problems.push(format!(
                    "{}: starts at {} at or before the previous file's end",
                    f.name, f.first_id
                ));
            }
        }
        prev = Some(last);
        match format::read(bytes::Bytes::from(bytes)) {
            Ok(entries) => {
                report.rows += entries.len() as u64;
                if entries.len() as u64 != f.rows {
                    report.problems.push(format!(
                        "{}: {} rows, the manifest says {}",
                        f.name,
                        entries.len(),
                        f.rows
                    ));
                }
                let ids: Vec<Option<(u64, u64)>> = entries
                    .iter()
                    .map(|e| format::parse_id(&e.id).ok())
                    .collect();
                if ids.first().copied().flatten() != Some(first)
                    || ids.last().copied().flatten() != Some(last)
                {
                    report.problems.push(format!(
                        "{}: holds another id range than {}..{}",
                        f.name, f.first_id, f.last_id
                    ));
                }
                if ids.windows(2).any(|w| w[0] >= w[1]) {
                    report
                        .problems
                        .push(format!("{}: ids not strictly ascending", f.name));
                }
            }
            Err(e) => report.problems.push(format!("{}: unreadable: {e}", f.name)),
        }
    }
    let listed: std::collections::HashSet<&str> =
        manifest.files.iter().map(|f| f.name.as_str()).collect();
    if let Ok(rd) = fs::read_dir(&dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".parquet") && !listed.contains(name.as_str()) {
                report.problems.push(format!(
                    "{name}: not in the manifest (an unfinished commit; removed at the next start)"
                ));
            }
        }
    }
    Ok(report)
}

/// Every entry of one stream's archive, in id order (the files the manifest lists). Files are
/// read and decoded on up to as many threads as there are cores, and put back in order.
pub fn read_all(root: &Path, stream: StreamName) -> Result<Vec<format::Entry>, StoreError> {
    let dir = stream_dir(root, stream);
    let manifest = read_manifest(&dir, stream)?;
    let read = |f: &ManifestFile| -> Result<Vec<format::Entry>, StoreError> {
        let path = dir.join(&f.name);
        let bytes = fs::read(&path).map_err(io(&path))?;
        Ok(format::read(bytes::Bytes::from(bytes))?)
    };
    let files = &manifest.files;
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(files.len());
    let decoded: Vec<Result<Vec<format::Entry>, StoreError>> = if threads <= 1 {
        files.iter().map(read).collect()
    } else {
        // Thread `t` decodes files t, t + threads, …; their results are interleaved back.
        let per_thread: Vec<Vec<Result<Vec<format::Entry>, StoreError>>> =
            std::thread::scope(|scope| {
                let handles: Vec<_> = (0..threads)
                    .map(|t| {
                        let read = &read;
                        scope.spawn(move || {
                            files.iter().skip(t).step_by(threads).map(read).collect()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            vec![Err(StoreError::Format(FormatError::Corrupt(
                                "a reader thread panicked".into(),
                            )))]
                        })
                    })
                    .collect()
            });
        let mut iters: Vec<_> = per_thread.into_iter().map(Vec::into_iter).collect();
        let mut out = Vec::with_capacity(files.len());
        for i in 0..files.len() {
            match iters[i % threads].next() {
                Some(r) => out.push(r),
                None => {
                    return Err(StoreError::Format(FormatError::Corrupt(
                        "a reader thread stopped early".into(),
                    )));
                }
            }
        }
        out
    };
    let rows: u64 = files.iter().map(|f| f.rows).sum();
    let mut out = Vec::with_capacity(usize::try_from(rows).unwrap_or(0));
    for entries in decoded {
        out.extend(entries?);
    }
    Ok(out)
}
