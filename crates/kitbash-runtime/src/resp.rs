//! A lean RESP2 connection for the hot stream reads (`XREAD`, `XREADGROUP`) and bulk writes:
//! commands encoded here, a reply read whole and its entries sliced out of the received bytes.
//!
//! fred decodes every reply into `redis-protocol` frames, converts them to its `Value` tree
//! (checking each bulk string for UTF-8 on the way) and the runtime then copies the tree into
//! [`StreamEntry`]s: under a backlog that read path was ~55 % of feynman's instructions
//! (`docs/BENCHMARKS.md`). Here a reply is scanned once for its end (resumably, as bytes
//! arrive), split off the read buffer as one [`Bytes`], and every field and value of every
//! entry is a slice of it — one allocation per entry (its id and field list), none per field.
//!
//! [`StreamReader`] uses this connection where its fred client talks to one server over plain
//! TCP ([`Endpoint::of`]) — TLS, a cluster, Sentinel or a Unix socket still read through fred,
//! and `KITBASH_FRED_READS=1` (or [`StreamReader::with_lean`]`(…, false)`) reads through fred
//! everywhere, to compare the two paths.
//! Errors are fred's [`fred::error::Error`] so callers classify them as they always did: a
//! server error keeps its message (`NOGROUP …`, `LOADING …`: kind `Unknown`), a broken or
//! timed-out connection is `IO`/`Timeout` (transient) and is reopened on the next read. A read
//! cancelled half way (its future dropped) drops its connection with it, so a later read never
//! sees the tail of an old reply.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fred::error::{Error, ErrorKind};
use fred::prelude::*;
use fred::types::Value;
use fred::types::config::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::entries::{self, StreamEntry};
use crate::error::RuntimeError;
use crate::redis::command_for_key;

/// How long opening a connection (and logging in) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The read buffer's first size; a larger reply grows it.
const READ_CHUNK: usize = 64 * 1024;

/// The one server a fred client talks to, and how it logs in.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<String>,
    database: Option<u8>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .field("database", &self.database)
            .finish()
    }
}

impl Endpoint {
    /// The server of `client` when it is one server over plain TCP; `None` otherwise (TLS,
    /// cluster, Sentinel, Unix socket: use fred).
    pub fn of(client: &Client) -> Option<Self> {
        let cfg = client.client_config();
        if cfg.tls.is_some() {
            return None;
        }
        match cfg.server {
            ServerConfig::Centralized { server } => Some(Self {
                host: server.host.to_string(),
                port: server.port,
                username: cfg.username,
                password: cfg.password,
                database: cfg.database,
            }),
            _ => None,
        }
    }

    /// Opens a connection and logs in (`AUTH`, `SELECT`).
    pub async fn open(&self) -> Result<Conn, Error> {
        let stream = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| {
            Error::new(
                ErrorKind::Timeout,
                format!("connecting to {}:{} timed out", self.host, self.port),
            )
        })?
        .map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        let mut conn = Conn {
            stream,
            buf: BytesMut::new(),
            scan: Scan::default(),
        };
        let mut hello: Vec<&str> = Vec::new();
        let mut out = Vec::new();
        if let Some(password) = &self.password {
            hello.push("AUTH");
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(user) = &self.username {
                args.push(user.as_bytes());
            }
            args.push(password.as_bytes());
            command(&mut out, &args);
        }
        if let Some(db) = self.database.filter(|db| *db != 0) {
            hello.push("SELECT");
            command(&mut out, &[b"SELECT", db.to_string().as_bytes()]);
        }
        if !out.is_empty() {
            let login = async {
                conn.send(&out).await?;
                for what in hello {
                    conn.reply()
                        .await
                        .map_err(|e| Error::new(e.kind().clone(), format!("{what}: {e}")))?;
                }
                Ok::<(), Error>(())
            };
            tokio::time::timeout(CONNECT_TIMEOUT, login)
                .await
                .map_err(|_| Error::new(ErrorKind::Timeout, "logging in timed out"))??;
        }
        Ok(conn)
    }
}

fn io(e: std::io::Error) -> Error {
    Error::new(ErrorKind::IO, e.to_string())
}

fn protocol(why: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Protocol,
        format!("unexpected reply from Redis: {why}"),
    )
}

/// Appends `n` in decimal.
pub fn decimal(buf: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

/// Appends a RESP header: `kind`, `n`, CRLF.
pub fn header(buf: &mut Vec<u8>, kind: u8, n: usize) {
    buf.push(kind);
    decimal(buf, n);
    buf.extend_from_slice(b"\r\n");
}

/// Appends one bulk string.
pub fn bulk(buf: &mut Vec<u8>, b: &[u8]) {
    header(buf, b'$', b.len());
    buf.extend_from_slice(b);
    buf.extend_from_slice(b"\r\n");
}

/// Appends one command (an array of bulk strings).
pub fn command(buf: &mut Vec<u8>, args: &[&[u8]]) {
    header(buf, b'*', args.len());
    for a in args {
        bulk(buf, a);
    }
}

/// Where the scan of a partly received reply stands: the offset of the next element's header
/// and, per open array, how many elements it still has.
#[derive(Debug, Default)]
struct Scan {
    pos: usize,
    open: Vec<usize>,
}

impl Scan {
    /// Scans `buf` on from where it stopped; `Some(len)` once one whole reply of `len` bytes is
    /// in it. Each byte is looked at about once however the reply arrives.
    fn advance(&mut self, buf: &[u8]) -> Result<Option<usize>, Error> {
        loop {
            let rest = &buf[self.pos.min(buf.len())..];
            let Some(eol) = line_end(rest)? else {
                return Ok(None);
            };
            let line = &rest[..eol];
            let after = self.pos + eol + 2;
            let Some((&kind, num)) = line.split_first() else {
                return Err(protocol("an empty line"));
            };
            let done = match kind {
                b'+' | b'-' | b':' => {
                    self.pos = after;
                    true
                }
                b'$' => {
                    let len = number(num)?;
                    let end = match usize::try_from(len) {
                        Ok(len) => after + len + 2,
                        Err(_) => after, // $-1: nil
                    };
                    if end > buf.len() {
                        return Ok(None);
                    }
                    self.pos = end;
                    true
                }
                b'*' => {
                    self.pos = after;
                    match usize::try_from(number(num)?) {
                        Ok(n) if n > 0 => {
                            self.open.push(n);
                            false
                        }
                        _ => true, // *0 or *-1
                    }
                }
                other => return Err(protocol(format!("type byte {other:#04x}"))),
            };
            if done {
                // An element ended: so may the arrays it closes.
                loop {
                    match self.open.last_mut() {
                        None => {
                            let len = self.pos;
                            *self = Scan::default();
                            return Ok(Some(len));
                        }
                        Some(left) => {
                            *left -= 1;
                            if *left > 0 {
                                break;
                            }
                            self.open.pop();
                        }
                    }
                }
            }
        }
    }
}

/// Where the line at the start of `b` ends (the offset of its CRLF); `None` when its end has
/// not arrived.
fn line_end(b: &[u8]) -> Result<Option<usize>, Error> {
    match b.iter().position(|&c| c == b'\n') {
        None => Ok(None),
        Some(i) if i > 0 && b[i - 1] == b'\r' => Ok(Some(i - 1)),
        Some(_) => Err(protocol("a line without CRLF")),
    }
}

/// A header's number (`-1` for nil), parsed by hand: it runs for every element of a reply.
fn number(b: &[u8]) -> Result<i64, Error> {
    let (neg, digits) = match b.split_first() {
        Some((b'-', d)) => (true, d),
        _ => (false, b),
    };
    if digits.is_empty() || digits.len() > 18 {
        return Err(protocol(format!(
            "a length {:?}",
            String::from_utf8_lossy(b)
        )));
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(protocol(format!(
                "a length {:?}",
                String::from_utf8_lossy(b)
            )));
        }
        n = n * 10 + i64::from(d - b'0');
    }
    Ok(if neg { -n } else { n })
}

/// A logged-in connection: commands out, whole replies in.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    scan: Scan,
}

impl Conn {
    /// The socket itself, for a caller that reads its own replies (nothing is buffered after
    /// a login: Redis sends only replies).
    pub fn into_stream(self) -> TcpStream {
        debug_assert!(self.buf.is_empty(), "bytes left after the login");
        self.stream
    }

    /// Writes `bytes` (encoded commands).
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.stream.write_all(bytes).await.map_err(io)
    }

    /// Reads one whole reply; an error reply is `Err` with Redis's message (kind `Unknown`,
    /// or `Auth` for `NOAUTH`/`WRONGPASS`).
    pub async fn reply(&mut self) -> Result<Bytes, Error> {
        let len = loop {
            if let Some(len) = self.scan.advance(&self.buf)? {
                break len;
            }
            if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
                self.buf.reserve(READ_CHUNK);
            }
            if self.stream.read_buf(&mut self.buf).await.map_err(io)? == 0 {
                return Err(Error::new(ErrorKind::IO, "Redis closed the connection"));
            }
        };
        let frame = self.buf.split_to(len).freeze();
        match frame.split_first() {
            Some((b'-', msg)) => {
                let msg = String::from_utf8_lossy(msg.strip_suffix(b"\r\n").unwrap_or(msg));
                let kind = if msg.starts_with("NOAUTH") || msg.starts_with("WRONGPASS") {
                    ErrorKind::Auth
                } else {
                    ErrorKind::Unknown
                };
                Err(Error::new(kind, msg.into_owned()))
            }
            _ => Ok(frame),
        }
    }
}

/// A cursor over one whole RESP2 reply.
struct Cursor<'a> {
    frame: &'a Bytes,
    pos: usize,
}

/// One element's header.
enum Head {
    Array(Option<usize>),
    Bulk(Option<(usize, usize)>),
    Int(i64),
    Simple(usize, usize),
}

impl Cursor<'_> {
    fn head(&mut self) -> Result<Head, Error> {
        let rest = self
            .frame
            .get(self.pos..)
            .ok_or_else(|| protocol("a truncated reply"))?;
        let eol = line_end(rest)?.ok_or_else(|| protocol("a truncated reply"))?;
        let (kind, num) = rest[..eol]
            .split_first()
            .ok_or_else(|| protocol("an empty line"))?;
        let start = self.pos + 1;
        let after = self.pos + eol + 2;
        self.pos = after;
        Ok(match kind {
            b'*' => Head::Array(usize::try_from(number(num)?).ok()),
            b'$' => match usize::try_from(number(num)?) {
                Ok(len) if after + len + 2 <= self.frame.len() => {
                    self.pos = after + len + 2;
                    Head::Bulk(Some((after, after + len)))
                }
                Ok(_) => return Err(protocol("a truncated reply")),
                Err(_) => Head::Bulk(None),
            },
            b':' => Head::Int(number(num)?),
            b'+' => Head::Simple(start, start + eol - 1),
            other => return Err(protocol(format!("type byte {other:#04x}"))),
        })
    }

    /// A string element (bulk, simple or integer) as bytes of the frame.
    fn string(&mut self) -> Result<Bytes, Error> {
        match self.head()? {
            Head::Bulk(Some((a, b))) | Head::Simple(a, b) => Ok(self.frame.slice(a..b)),
            Head::Int(i) => Ok(Bytes::from(i.to_string())),
            _ => Err(protocol("expected a string")),
        }
    }

    fn array(&mut self) -> Result<Option<usize>, Error> {
        match self.head()? {
            Head::Array(n) => Ok(n),
            Head::Bulk(None) => Ok(None),
            _ => Err(protocol("expected an array")),
        }
    }
}

/// Parses an `XREAD`/`XREADGROUP` reply (RESP2: `[[key, [[id, [f, v, …] | nil], …]], …]` or
/// nil) into entries whose fields are slices of `frame`.
pub fn parse_xread(frame: &Bytes) -> Result<Vec<StreamEntry>, Error> {
    let mut c = Cursor { frame, pos: 0 };
    let mut out = Vec::new();
    let streams = c.array()?.unwrap_or(0);
    for _ in 0..streams {
        if c.array()? != Some(2) {
            return Err(protocol("a stream that is not [key, entries]"));
        }
        let _key = c.string()?;
        let n = c.array()?.unwrap_or(0);
        out.reserve(n);
        for _ in 0..n {
            if c.array()? != Some(2) {
                return Err(protocol("an entry that is not [id, fields]"));
            }
            let id = c.string()?;
            let id = std::str::from_utf8(&id)
                .map_err(|_| protocol("an entry id that is not UTF-8"))?
                .to_owned();
            let fields = match c.array()? {
                None => None,
                Some(k) => {
                    let mut f = Vec::with_capacity(k / 2);
                    for _ in 0..k / 2 {
                        let name = c.string()?;
                        let value = c.string()?;
                        f.push((name, value));
                    }
                    if k % 2 == 1 {
                        let _ = c.string()?;
                    }
                    Some(f)
                }
            };
            out.push(StreamEntry { id, fields });
        }
    }
    Ok(out)
}

/// The connection a loop reads one stream on, `XREAD`/`XREADGROUP` with `BLOCK`: the lean
/// connection of this module where the client talks to one server over plain TCP, else the
/// fred client itself. See the module docs.
#[derive(Debug)]
pub struct StreamReader {
    client: Client,
    raw: Option<(Endpoint, Option<Conn>)>,
}

impl StreamReader {
    /// A reader over `client`'s server: on the lean connection where the client allows it,
    /// through fred when `KITBASH_FRED_READS=1`.
    pub fn new(client: Client) -> Self {
        let fred_only = std::env::var("KITBASH_FRED_READS").is_ok_and(|v| v == "1");
        Self::with_lean(client, !fred_only)
    }

    /// A reader that uses the lean connection when `lean` and the client allows it.
    pub fn with_lean(client: Client, lean: bool) -> Self {
        let raw = Endpoint::of(&client).filter(|_| lean).map(|ep| (ep, None));
        Self { client, raw }
    }

    /// True when reads go over this module's connection rather than fred.
    pub fn is_raw(&self) -> bool {
        self.raw.is_some()
    }

    /// Connects the fred client when reads go through it (the lean connection opens on the
    /// first read by itself).
    pub fn connect_fred(&self) {
        if self.raw.is_none() {
            self.client.connect();
        }
    }

    /// Closes the connection in use.
    pub async fn quit(&mut self) {
        match &mut self.raw {
            Some((_, conn)) => *conn = None,
            None => {
                let _ = self.client.quit().await;
            }
        }
    }

    /// Runs `name args…` (an `XREAD` or `XREADGROUP` of `key`) with `timeout` (which must
    /// outlast its `BLOCK`); `blocking` marks the command as blocking for fred.
    pub async fn read(
        &mut self,
        name: &'static str,
        key: &str,
        args: &[&str],
        blocking: bool,
        timeout: Duration,
    ) -> Result<Vec<StreamEntry>, RuntimeError> {
        let Some((ep, conn)) = &mut self.raw else {
            let cmd = command_for_key(name, key, blocking);
            let opts = fred::types::config::Options {
                timeout: Some(timeout),
                ..Default::default()
            };
            let args: Vec<Value> = args.iter().map(|a| Value::from(*a)).collect();
            let reply: Value = self.client.with_options(&opts).custom(cmd, args).await?;
            return entries::parse_xread(&reply);
        };
        // Taken for the call: a read dropped half way takes its connection with it.
        let mut c = match conn.take() {
            Some(c) => c,
            None => ep.open().await?,
        };
        let mut out = Vec::with_capacity(64);
        header(&mut out, b'*', args.len() + 1);
        bulk(&mut out, name.as_bytes());
        for a in args {
            bulk(&mut out, a.as_bytes());
        }
        let result = {
            let call = async {
                c.send(&out).await?;
                c.reply().await
            };
            let mut call = std::pin::pin!(call);
            match tokio::time::timeout(timeout, call.as_mut()).await {
                Ok(r) => Some(r),
                // A process that was stopped (SIGSTOP, a paused VM) wakes with its timer due
                // and the reply already in the socket, before the I/O driver has looked:
                // let it look (a yield polls the driver) before calling the reply late.
                Err(_) => {
                    tokio::task::yield_now().await;
                    match futures::poll!(call.as_mut()) {
                        std::task::Poll::Ready(r) => Some(r),
                        std::task::Poll::Pending => None,
                    }
                }
            }
        };
        let frame = match result {
            None => {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!("{name} got no reply within {timeout:?}"),
                )
                .into());
            }
            // A broken connection is dropped (reopened next time); a server's error keeps it.
            Some(Err(e)) if matches!(e.kind(), ErrorKind::IO | ErrorKind::Protocol) => {
                return Err(e.into());
            }
            Some(Err(e)) => {
                *conn = Some(c);
                return Err(e.into());
            }
            Some(Ok(frame)) => frame,
        };
        *conn = Some(c);
        Ok(parse_xread(&frame)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_written_without_allocating_a_string() {
        for n in [0usize, 7, 10, 99, 12_345, usize::MAX] {
            let mut buf = Vec::new();
            decimal(&mut buf, n);
            assert_eq!(buf, n.to_string().as_bytes());
        }
    }

    const XREAD: &[u8] = b"*1\r\n*2\r\n$1\r\nk\r\n*3\r\n\
        *2\r\n$3\r\n1-1\r\n*4\r\n$1\r\na\r\n$3\r\n\0\r\n\r\n$0\r\n\r\n$2\r\nzz\r\n\
        *2\r\n$3\r\n2-0\r\n*-1\r\n\
        *2\r\n$3\r\n3-7\r\n*0\r\n";

    #[test]
    fn a_reply_is_found_whole_however_its_bytes_arrive() {
        let mut input = XREAD.to_vec();
        input.extend_from_slice(b"+OK\r\n");
        // Every split point, and byte by byte.
        for cut in 0..XREAD.len() {
            let mut s = Scan::default();
            assert_eq!(s.advance(&input[..cut]).expect("ok"), None, "cut at {cut}");
            assert_eq!(s.advance(&input).expect("ok"), Some(XREAD.len()));
        }
        let mut s = Scan::default();
        let mut found = None;
        for end in 0..=input.len() {
            if let Some(n) = s.advance(&input[..end]).expect("ok") {
                found = Some((end, n));
                break;
            }
        }
        assert_eq!(found, Some((XREAD.len(), XREAD.len())));
        for simple in [
            &b"+OK\r\n"[..],
            b"-ERR x\r\n",
            b":5\r\n",
            b"$-1\r\n",
            b"*-1\r\n",
        ] {
            assert_eq!(
                Scan::default().advance(simple).expect("ok"),
                Some(simple.len())
            );
        }
        assert!(Scan::default().advance(b"?\r\n").is_err());
        assert!(Scan::default().advance(b"$x\r\n").is_err());
        assert!(Scan::default().advance(b"$\r\n").is_err());
        assert!(Scan::default().advance(b"*1x\r\n").is_err());
        for (text, n) in [
            ("0", 0),
            ("-1", -1),
            ("17", 17),
            ("999999999999999999", 999_999_999_999_999_999),
        ] {
            assert_eq!(number(text.as_bytes()).expect("a number"), n);
        }
        assert!(number(b"9999999999999999999").is_err(), "too long");
        assert!(number(b"-").is_err());
    }

    #[test]
    fn entries_are_slices_of_the_reply_equal_to_the_fred_path() {
        let frame = Bytes::from_static(XREAD);
        let got = parse_xread(&frame).expect("parses");
        let b = |s: &'static [u8]| Bytes::from_static(s);
        assert_eq!(
            got,
            vec![
                StreamEntry {
                    id: "1-1".into(),
                    fields: Some(vec![(b(b"a"), b(b"\0\r\n")), (b(b""), b(b"zz"))]),
                },
                StreamEntry {
                    id: "2-0".into(),
                    fields: None,
                },
                StreamEntry {
                    id: "3-7".into(),
                    fields: Some(vec![]),
                },
            ]
        );
        assert_eq!(parse_xread(&b(b"*-1\r\n")).expect("nil"), vec![]);
        assert!(parse_xread(&b(b"*1\r\n*1\r\n$1\r\nk\r\n")).is_err());
        assert!(parse_xread(&b(b"*1\r\n*2\r\n$1\r\nk\r\n*1\r\n$1\r\nx\r\n")).is_err());
    }
}
