//! Integration tests of kitbash-testkit: every test drives real `redis-server` processes.

mod backend;
mod cluster;
mod faults;
mod standalone;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// What every test returns, so `?` works on both testkit and I/O errors.
type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Sends the inline command `PING\r\n` over a plain TCP connection and returns the reply line.
fn raw_ping(port: u16) -> io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"PING\r\n")?;
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply)?;
    Ok(String::from_utf8_lossy(&reply).into_owned())
}
