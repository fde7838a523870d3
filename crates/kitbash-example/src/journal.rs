//! The example's raw consumer: a journal of the `physics` stream, entries acknowledged only
//! once they are fsynced — the shape of an archive ([`kitbash_runtime::consumer::RawHandler`]).
//!
//! Each instance appends to its own file, `{journal_dir}/{instance}.journal`, one line per
//! entry: its id, then `field=value` pairs in hex, as they are in Redis (any `type`, undecodable
//! entries included). The journal is at least once: after a crash (or a refused write) the
//! entries not yet acknowledged come back and are written again, so a reader keeps the first
//! line of each id.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kitbash_runtime::DaemonContext;
use kitbash_runtime::consumer::{Acks, RawEntry, RawHandler, TakeError};

/// Appends raw entries to a file and acknowledges them after each fsync.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: Option<BufWriter<File>>,
    /// Written, not yet fsynced (so not yet acknowledged). Kept whole: after a failed write or
    /// fsync the file may lack some of them, and they are written again.
    unsynced: Vec<RawEntry>,
    /// The file may lack some of `unsynced` (a write or an fsync failed).
    dirty: bool,
    /// When the oldest of them was written.
    oldest: Option<Instant>,
    sync_entries: usize,
    sync_after: Duration,
}

impl Journal {
    /// The journal of this instance, in `[example] journal_dir`.
    pub fn new(ctx: &DaemonContext) -> Self {
        let cfg = &ctx.config.example;
        Self {
            path: PathBuf::from(&cfg.journal_dir).join(format!("{}.journal", ctx.instance)),
            file: None,
            unsynced: Vec::new(),
            dirty: false,
            oldest: None,
            sync_entries: cfg.journal_sync_entries,
            sync_after: Duration::from_millis(cfg.journal_sync_ms),
        }
    }

    /// The line of one entry: `id k=v k=v`, keys and values in hex.
    pub fn line(e: &RawEntry) -> String {
        let mut line = e.id.clone();
        for (k, v) in &e.fields {
            line.push(' ');
            line.push_str(&hex::encode(k));
            line.push('=');
            line.push_str(&hex::encode(v));
        }
        line.push('\n');
        line
    }

    /// The open file; after a failure, reopened with every unsynced entry written again.
    fn file(&mut self) -> Result<&mut BufWriter<File>, TakeError> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| self.io_error("create", e))?;
            }
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(|e| self.io_error("open", e))?;
            self.file = Some(BufWriter::new(f));
        }
        if self.dirty {
            let lines: String = self.unsynced.iter().map(Self::line).collect();
            if let Some(Err(e)) = self.file.as_mut().map(|f| f.write_all(lines.as_bytes())) {
                self.file = None;
                return Err(self.io_error("write", e));
            }
            self.dirty = false;
        }
        self.file
            .as_mut()
            .ok_or_else(|| TakeError::Transient("journal not open".into()))
    }

    /// Permission problems will not pass by themselves (stop the daemon, say why); anything
    /// else (a full disk) may: hold the batch and retry.
    fn io_error(&self, what: &str, e: std::io::Error) -> TakeError {
        let msg = format!("cannot {what} {}: {e}", self.path.display());
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            TakeError::Fatal(msg)
        } else {
            TakeError::Transient(msg)
        }
    }

    /// Something failed mid-write: the file may lack lines; start over with a fresh handle.
    fn broken(&mut self, what: &str, e: std::io::Error) -> TakeError {
        self.file = None;
        self.dirty = true;
        self.io_error(what, e)
    }

    /// Flushes, fsyncs and acknowledges what was written. (Blocking file I/O on the loop's
    /// task: fine for an example's small files; an archive does it on a blocking thread.)
    fn sync(&mut self, acks: &Acks) -> Result<(), TakeError> {
        if self.unsynced.is_empty() {
            return Ok(());
        }
        let file = self.file()?;
        if let Err(e) = file.flush().and_then(|()| file.get_ref().sync_data()) {
            return Err(self.broken("fsync", e));
        }
        acks.ack(self.unsynced.drain(..).map(|e| e.id));
        self.oldest = None;
        Ok(())
    }
}

impl RawHandler for Journal {
    async fn take(&mut self, batch: Vec<RawEntry>, acks: &Acks) -> Result<(), TakeError> {
        let lines: String = batch.iter().map(Self::line).collect();
        if let Err(e) = self.file()?.write_all(lines.as_bytes()) {
            // The whole batch comes again; lines already written repeat (see the module docs).
            return Err(self.broken("write", e));
        }
        self.unsynced.extend(batch);
        self.oldest.get_or_insert_with(Instant::now);
        if self.unsynced.len() >= self.sync_entries {
            self.sync(acks)?;
        }
        Ok(())
    }

    async fn tick(&mut self, acks: &Acks) -> Result<(), TakeError> {
        if self.oldest.is_some_and(|t| t.elapsed() >= self.sync_after) {
            self.sync(acks)?;
        }
        Ok(())
    }

    async fn flush(&mut self, acks: &Acks) {
        if let Err(e) = self.sync(acks) {
            tracing::warn!(error = %e, entries = self.unsynced.len(),
                "cannot fsync the journal on the way out; its entries stay pending");
        }
    }
}
