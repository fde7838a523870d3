//! `kitbash-testkit`: real `redis-server` processes (standalone and cluster) for tests and
//! benchmarks, with fault injection. No mocks: every kitbash test talks to a real Redis.
//!
//! # Layout
//! - [`server`]: [`RedisServer`], one process on a free port with its own temp dir, and its
//!   faults: [`kill`](RedisServer::kill), [`stop`](RedisServer::stop),
//!   [`restart`](RedisServer::restart), [`pause`](RedisServer::pause)/[`resume`](RedisServer::resume),
//!   [`drop_clients`](RedisServer::drop_clients), [`flushall`](RedisServer::flushall); ACL
//!   files ([`acl_file`](RedisServerBuilder::acl_file)) and TLS on a second port
//!   ([`tls`](RedisServerBuilder::tls)).
//! - [`cluster`]: [`RedisCluster`], N masters joined by `redis-cli --cluster create`.
//! - [`backend`]: [`TestRedis`], a server from the backend `KITBASH_TEST_BACKEND` selects
//!   (`process`, or `containers` with the `containers` feature).
//! - [`resp`]: [`RespConnection`], a tiny blocking RESP2 client for probes and wire-level tests.
//! - [`binary`]: [`find_redis_server`], [`find_redis_cli`], [`redis_version`].
//! - [`child`]: [`KillOnDrop`], a spawned daemon killed and reaped when a test lets go of it.
//! - [`namespace()`]: random short prefixes for tests sharing a server.
//! - [`node`]: `node` with `tests/deps/package.json` loadable (the Centrifugo JS SDK).
//! - [`python`]: `python3` with `tests/deps/requirements.txt` importable (redis-py, numpy).
//! - [`support`]: daemon binaries with test settings, signals, exits, the admin endpoint,
//!   [`eventually`](support::eventually) — shared by every daemon's suite.
//! - [`error`]: [`TestkitError`], the one error type, and [`Result`].
//! - `port` (private): free-port selection that survives parallel tests.
//!
//! **Invariant:** the server API is synchronous (`std::process`, `std::net`), so it works from
//! plain `#[test]`s and from `#[tokio::test]`s alike; only the containers backend and
//! `support`'s waiting helpers (`eventually`, `wait_exit`) are async (tokio).
//!
//! # Example
//! ```no_run
//! use kitbash_testkit::{Appendfsync, RedisServer};
//!
//! let mut redis = RedisServer::builder()
//!     .appendonly(Appendfsync::Always)
//!     .start()?;
//! let url = redis.url(); // redis://127.0.0.1:PORT, hand it to the code under test
//! redis.cmd(&["SET", "greeting", "hello"])?;
//! redis.kill()?; // SIGKILL: a crash
//! redis.restart()?; // same port, same dir: the AOF is replayed
//! assert_eq!(redis.cmd(&["GET", "greeting"])?, "hello");
//! # let _ = url;
//! # Ok::<(), kitbash_testkit::TestkitError>(())
//! ```
//!
//! # Requirements
//! `redis-server` and `redis-cli` on `PATH` (Debian/Ubuntu:
//! `sudo apt-get install -y redis-server redis-tools`), or `KITBASH_REDIS_SERVER` /
//! `KITBASH_REDIS_CLI` pointing at them. [`redis_version`] lets a test skip features its
//! server lacks, saying why.
//!
//! # Backends
//! `KITBASH_TEST_BACKEND=process` (the default) spawns `redis-server` children.
//! `KITBASH_TEST_BACKEND=containers` runs `redis:7.2` through testcontainers instead; it needs
//! the crate feature `containers`, a Docker engine, a tokio runtime and
//! [`TestRedis::start_async`]. Fault injection is process-only: with a container,
//! [`TestRedis::server_mut`] is `None`. Where no Docker engine runs, keep that path compiling
//! with `cargo check -p kitbash-testkit --features containers`.
//!
//! # Cleanup and orphans
//! Dropping a [`RedisServer`] or [`RedisCluster`] SIGKILLs its processes and removes their temp
//! dirs, also when a test panics. A test runner that is itself SIGKILLed runs no `Drop`, so its
//! servers live on. Every server's command line contains its dir, `$TMPDIR/kitbash-testkit-*`:
//! list orphans with `pgrep -af kitbash-testkit-`, end them by pid with `kill PID`, then remove
//! the dirs.

pub mod backend;
pub mod binary;
pub mod child;
pub mod cluster;
pub mod error;
mod namespace;
pub mod node;
mod port;
pub mod python;
pub mod resp;
pub mod sentinel;
pub mod server;
pub mod support;

pub use backend::{Backend, TestRedis};
pub use binary::{RedisVersion, find_redis_cli, find_redis_server, redis_version};
pub use child::KillOnDrop;
pub use cluster::{RedisCluster, RedisClusterBuilder};
pub use error::{Result, TestkitError};
pub use namespace::namespace;
pub use resp::{RespConnection, RespValue};
pub use sentinel::RedisSentinelSet;
pub use server::{Appendfsync, RedisServer, RedisServerBuilder, TlsServerFiles};
