//! A tiny blocking RESP2 connection over `std::net`, for readiness checks, fault injection and
//! tests that want to see exactly what goes over the wire.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use crate::error::{Result, TestkitError};

/// One RESP2 reply. Null bulk strings and null arrays are both [`RespValue::Nil`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RespValue {
    /// `+OK`
    Simple(String),
    /// `-ERR …` (only seen from [`RespConnection::read_reply`]; [`RespConnection::command`]
    /// turns it into [`TestkitError::Redis`]).
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$3\r\nfoo`
    Bulk(Vec<u8>),
    /// `$-1` or `*-1`
    Nil,
    /// `*2\r\n…`
    Array(Vec<RespValue>),
}

impl RespValue {
    /// The text of a simple or bulk string (lossy UTF-8), else `None`.
    pub fn as_text(&self) -> Option<String> {
        match self {
            Self::Simple(s) => Some(s.clone()),
            Self::Bulk(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    /// The value of an integer reply, else `None`.
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Self::Integer(i) => Some(*i),
            _ => None,
        }
    }
}

/// Deepest nesting accepted from the server; Redis replies used here nest two or three levels.
const MAX_DEPTH: usize = 16;

/// A blocking RESP2 connection to one Redis server.
///
/// After an I/O error (for example a read timeout while the server is paused) the connection
/// may be out of step with the server: drop it and open a new one.
#[derive(Debug)]
pub struct RespConnection {
    /// Buffered for reading replies; writes go to the inner stream directly.
    reader: BufReader<TcpStream>,
}

impl RespConnection {
    /// Connects to `127.0.0.1:port`; `timeout` bounds the connect and every later read and write.
    pub fn connect(port: u16, timeout: Duration) -> Result<Self> {
        Self::connect_addr(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), timeout)
    }

    /// Connects to `addr`; `timeout` bounds the connect and every later read and write.
    pub fn connect_addr(addr: SocketAddr, timeout: Duration) -> Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| TestkitError::io(format!("connecting to {addr}"), e))?;
        // Replies are small and we wait for each one: Nagle would only add latency.
        stream
            .set_nodelay(true)
            .map_err(|e| TestkitError::io("setting TCP_NODELAY", e))?;
        let mut conn = Self {
            reader: BufReader::new(stream),
        };
        conn.set_timeout(timeout)?;
        Ok(conn)
    }

    /// Sets the read and write timeout of later calls.
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<()> {
        let stream = self.reader.get_ref();
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .map_err(|e| TestkitError::io("setting socket timeouts", e))
    }

    /// Sends `args` as one command and reads its reply; an error reply becomes
    /// [`TestkitError::Redis`].
    pub fn command(&mut self, args: &[&str]) -> Result<RespValue> {
        self.send(args)?;
        match self.read_reply()? {
            RespValue::Error(message) => Err(TestkitError::Redis {
                command: args.first().copied().unwrap_or_default().to_owned(),
                message,
            }),
            reply => Ok(reply),
        }
    }

    /// Sends `args` as one command without reading a reply (for `SUBSCRIBE`, pipelining).
    pub fn send(&mut self, args: &[&str]) -> Result<()> {
        let mut frame = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
        frame.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for arg in args {
            frame.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            frame.extend_from_slice(arg.as_bytes());
            frame.extend_from_slice(b"\r\n");
        }
        self.reader
            .get_mut()
            .write_all(&frame)
            .map_err(|e| TestkitError::io("writing a command to redis", e))
    }

    /// Reads one reply (error replies are returned as [`RespValue::Error`]).
    pub fn read_reply(&mut self) -> Result<RespValue> {
        self.read_value(0)
    }

    fn read_value(&mut self, depth: usize) -> Result<RespValue> {
        if depth > MAX_DEPTH {
            return Err(TestkitError::Protocol(format!(
                "reply nested deeper than {MAX_DEPTH}"
            )));
        }
        let line = self.read_line()?;
        let (kind, rest) = line.split_at_checked(1).ok_or_else(|| {
            TestkitError::Protocol("empty line where a reply was expected".to_owned())
        })?;
        match kind {
            "+" => Ok(RespValue::Simple(rest.to_owned())),
            "-" => Ok(RespValue::Error(rest.to_owned())),
            ":" => Ok(RespValue::Integer(parse_int(rest)?)),
            "$" => {
                let len = parse_int(rest)?;
                let Ok(len) = usize::try_from(len) else {
                    return Ok(RespValue::Nil);
                };
                let mut buf = vec![0; len + 2];
                self.reader
                    .read_exact(&mut buf)
                    .map_err(|e| TestkitError::io("reading a bulk string from redis", e))?;
                if !buf.ends_with(b"\r\n") {
                    return Err(TestkitError::Protocol(
                        "bulk string not followed by CRLF".to_owned(),
                    ));
                }
                buf.truncate(len);
                Ok(RespValue::Bulk(buf))
            }
            "*" => {
                let len = parse_int(rest)?;
                let Ok(len) = usize::try_from(len) else {
                    return Ok(RespValue::Nil);
                };
                let items = (0..len)
                    .map(|_| self.read_value(depth + 1))
                    .collect::<Result<Vec<_>>>()?;
                Ok(RespValue::Array(items))
            }
            _ => Err(TestkitError::Protocol(format!(
                "unknown reply line {line:?}"
            ))),
        }
    }

    /// One line without its CRLF; end of stream is an `UnexpectedEof` I/O error.
    fn read_line(&mut self) -> Result<String> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(|e| TestkitError::io("reading a reply from redis", e))?;
        if n == 0 {
            return Err(TestkitError::io(
                "reading a reply from redis",
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed by the server",
                ),
            ));
        }
        let trimmed = line
            .strip_suffix("\r\n")
            .ok_or_else(|| TestkitError::Protocol(format!("line without CRLF: {line:?}")))?;
        Ok(trimmed.to_owned())
    }
}

fn parse_int(text: &str) -> Result<i64> {
    text.parse()
        .map_err(|_| TestkitError::Protocol(format!("not an integer: {text:?}")))
}
