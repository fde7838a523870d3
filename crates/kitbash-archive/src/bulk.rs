//! The bulk writer of a replay at full speed: `XADD`s encoded as RESP here and streamed on a
//! connection of its own, thousands in flight, the replies read as they come back (fred's
//! per-command path costs ~10 µs, several times what Redis spends on an `XADD`).
//!
//! Used only where the replay's fred client talks to one server over plain TCP: the
//! connection is opened to that server with that client's own credentials and database
//! ([`Endpoint::of`], the runtime's lean connection, whose RESP encoders this uses too). TLS,
//! a cluster, Sentinel or a Unix socket: [`Endpoint::of`] says no and the replay writes
//! through fred. Commands go out strictly in entry order on the one
//! connection, so original ids reach Redis ascending; the first refused `XADD` ends the replay
//! with Redis's message and how many were written before it.

pub(crate) use kitbash_runtime::resp::Endpoint;
use kitbash_runtime::resp::{bulk, header};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{Semaphore, mpsc};

use crate::format::Entry;
use crate::replay::{Ids, REPLAY_OF, ReplayError};

/// Commands written per socket write (and between progress reports).
const CHUNK: usize = 256;
/// Commands sent and not yet answered, at most.
const IN_FLIGHT: usize = 8_192;
/// Opens a connection of the bulk writer to `endpoint` (logged in: `AUTH`, `SELECT`).
pub(crate) async fn open(endpoint: &Endpoint) -> Result<Connection, ReplayError> {
    let stream = endpoint
        .open()
        .await
        .map_err(|e| ReplayError::Bulk(e.to_string()))?
        .into_stream();
    let (rd, wr) = stream.into_split();
    Ok(Connection {
        rd: BufReader::with_capacity(64 * 1024, rd),
        wr,
    })
}

/// A logged-in connection of the bulk writer.
#[derive(Debug)]
pub(crate) struct Connection {
    rd: BufReader<tokio::net::tcp::OwnedReadHalf>,
    wr: tokio::net::tcp::OwnedWriteHalf,
}

impl Connection {
    /// Writes `entries` to `target` with `XADD`s in entry order, up to [`IN_FLIGHT`] at once;
    /// calls `progress(written)` every [`CHUNK`] replies and at the end. Returns how many were
    /// written; the first refused `XADD` is an error.
    pub(crate) async fn write(
        self,
        target: &str,
        entries: &[Entry],
        ids: Ids,
        mut progress: impl FnMut(usize),
    ) -> Result<usize, ReplayError> {
        let Connection { mut rd, mut wr } = self;
        let window = Semaphore::new(IN_FLIGHT);
        // The sender announces each chunk before writing it, so replies are read as soon as
        // Redis sends them (never a full socket buffer on both sides).
        let (tx, mut rx) = mpsc::unbounded_channel::<usize>();
        let send = async {
            let mut buf = Vec::with_capacity(CHUNK * 256);
            for chunk in entries.chunks(CHUNK) {
                let permits = window
                    .acquire_many(chunk.len() as u32)
                    .await
                    .map_err(|e| ReplayError::Bulk(e.to_string()))?;
                permits.forget();
                buf.clear();
                for e in chunk {
                    xadd(&mut buf, target.as_bytes(), e, ids);
                }
                let _ = tx.send(chunk.len());
                wr.write_all(&buf).await?;
            }
            drop(tx);
            Ok::<(), ReplayError>(())
        };
        let receive = async {
            let mut written = 0usize;
            let mut scratch = Vec::new();
            while let Some(n) = rx.recv().await {
                for _ in 0..n {
                    if let Err(e) = reply(&mut rd, &mut scratch).await? {
                        return Err(ReplayError::Bulk(format!(
                            "XADD refused after {written} entries were written: {e}"
                        )));
                    }
                    written += 1;
                }
                window.add_permits(n);
                progress(written);
            }
            Ok(written)
        };
        let ((), written) = futures::future::try_join(send, receive).await?;
        let _ = wr.shutdown().await;
        Ok(written)
    }
}

/// Appends the `XADD` of `e` to `target`: its id (or `*` and a [`REPLAY_OF`] field at the end),
/// then its fields as they are.
pub(crate) fn xadd(buf: &mut Vec<u8>, target: &[u8], e: &Entry, ids: Ids) {
    let extra = if ids == Ids::New { 2 } else { 0 };
    header(buf, b'*', 3 + 2 * e.fields.len() + extra);
    bulk(buf, b"XADD");
    bulk(buf, target);
    match ids {
        Ids::Original => bulk(buf, e.id.as_bytes()),
        Ids::New => bulk(buf, b"*"),
    }
    for (k, v) in &e.fields {
        bulk(buf, k);
        bulk(buf, v);
    }
    if ids == Ids::New {
        bulk(buf, REPLAY_OF.as_bytes());
        bulk(buf, e.id.as_bytes());
    }
}

fn protocol(why: impl std::fmt::Display) -> ReplayError {
    ReplayError::Bulk(format!("unexpected reply from Redis: {why}"))
}

/// Reads one RESP2 reply: `Ok(Ok(()))` for a value, `Ok(Err(message))` for an error reply.
async fn reply<R: AsyncBufRead + Unpin>(
    r: &mut R,
    scratch: &mut Vec<u8>,
) -> Result<Result<(), String>, ReplayError> {
    scratch.clear();
    if r.read_until(b'\n', scratch).await? == 0 {
        return Err(protocol("the connection closed"));
    }
    let Some(line) = scratch.strip_suffix(b"\r\n") else {
        return Err(protocol("a line without CRLF"));
    };
    match line.split_first() {
        Some((b'+' | b':', _)) => Ok(Ok(())),
        Some((b'-', message)) => Ok(Err(String::from_utf8_lossy(message).into_owned())),
        Some((b'$', len)) => {
            let len: i64 = std::str::from_utf8(len)
                .ok()
                .and_then(|l| l.parse().ok())
                .ok_or_else(|| protocol("a bulk string without a length"))?;
            if let Ok(len) = usize::try_from(len) {
                scratch.resize(len + 2, 0);
                r.read_exact(scratch).await?;
            }
            Ok(Ok(()))
        }
        _ => Err(protocol(String::from_utf8_lossy(line))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_xadd_is_the_resp_of_its_arguments() {
        let e = Entry {
            id: "5-1".into(),
            fields: vec![
                (b"d".to_vec(), vec![0, b'\r', b'\n']),
                (Vec::new(), Vec::new()),
            ],
        };
        let mut buf = Vec::new();
        xadd(&mut buf, b"k", &e, Ids::Original);
        assert_eq!(
            buf,
            b"*7\r\n$4\r\nXADD\r\n$1\r\nk\r\n$3\r\n5-1\r\n$1\r\nd\r\n$3\r\n\0\r\n\r\n$0\r\n\r\n$0\r\n\r\n"
        );
        buf.clear();
        xadd(&mut buf, b"k", &e, Ids::New);
        assert!(buf.starts_with(b"*9\r\n$4\r\nXADD\r\n$1\r\nk\r\n$1\r\n*\r\n"));
        assert!(
            buf.ends_with(
                format!("${}\r\n{REPLAY_OF}\r\n$3\r\n5-1\r\n", REPLAY_OF.len()).as_bytes()
            )
        );
    }

    #[tokio::test]
    async fn replies_are_values_or_messages_and_garbage_is_an_error() {
        let input: &[u8] = b"$3\r\n1-1\r\n+OK\r\n:5\r\n$-1\r\n-ERR no\r\n$2\r\n\r\n\r\n?\r\n";
        let mut r = BufReader::new(input);
        let mut s = Vec::new();
        for _ in 0..4 {
            assert_eq!(reply(&mut r, &mut s).await.expect("ok"), Ok(()));
        }
        assert_eq!(
            reply(&mut r, &mut s).await.expect("err"),
            Err("ERR no".to_owned())
        );
        assert_eq!(reply(&mut r, &mut s).await.expect("crlf in a bulk"), Ok(()));
        assert!(reply(&mut r, &mut s).await.is_err());
        assert!(reply(&mut r, &mut s).await.is_err(), "closed");
    }
}
