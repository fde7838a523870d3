//! The one error type of the testkit, [`TestkitError`], and its [`Result`] alias.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// `Result` with a [`TestkitError`].
pub type Result<T, E = TestkitError> = std::result::Result<T, E>;

/// Everything that can go wrong while finding, starting, driving or stopping a Redis under test.
///
/// `Debug` prints the same text as `Display`: a test that returns `Result` and fails with `?`
/// shows its error through `Debug`, and the reader needs the message (what to install, the
/// server's log tail), not the variant's fields.
#[derive(thiserror::Error)]
pub enum TestkitError {
    /// No `redis-server` on `PATH` and no `KITBASH_REDIS_SERVER`.
    #[error(
        "redis-server not found on PATH: install it with `sudo apt-get install -y redis-server redis-tools` (Debian/Ubuntu) or set KITBASH_REDIS_SERVER=/path/to/redis-server"
    )]
    RedisServerNotFound,

    /// No `redis-cli` on `PATH` and no `KITBASH_REDIS_CLI`.
    #[error(
        "redis-cli not found on PATH: install it with `sudo apt-get install -y redis-tools` (Debian/Ubuntu) or set KITBASH_REDIS_CLI=/path/to/redis-cli"
    )]
    RedisCliNotFound,

    /// An override variable names something that is not an executable file.
    #[error("{var}={} does not name an executable file", path.display())]
    BadBinaryOverride {
        /// `KITBASH_REDIS_SERVER` or `KITBASH_REDIS_CLI`.
        var: &'static str,
        /// The value it was set to.
        path: PathBuf,
    },

    /// `redis-server --version` printed something we could not read a version from.
    #[error("could not read a version from `{} --version`: {output:?}", binary.display())]
    UnreadableVersion {
        /// The binary that was asked.
        binary: PathBuf,
        /// What it printed.
        output: String,
    },

    /// An operating-system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What the testkit was doing.
        context: String,
        /// The underlying error; its kind tells a timeout from a refused connection.
        #[source]
        source: io::Error,
    },

    /// `redis-server` exited or never answered `PING` before its deadline.
    #[error(
        "redis-server on 127.0.0.1:{port} did not start: {reason}\n--- last lines of its log ---\n{log_tail}"
    )]
    StartFailed {
        /// The port it was asked to listen on.
        port: u16,
        /// Why we gave up (exit status, deadline, port taken).
        reason: String,
        /// The last lines of its captured stdout/stderr (the temp dir holding the full log is
        /// removed with the failed server).
        log_tail: String,
    },

    /// No free port below the cluster bus limit was found.
    #[error("no free 127.0.0.1 port found after {attempts} attempts")]
    NoFreePort {
        /// How many ports were tried.
        attempts: u32,
    },

    /// The operation needs a running server, but it was killed or stopped.
    #[error("redis-server on 127.0.0.1:{port} is not running (killed or stopped; call restart())")]
    NotRunning {
        /// The server's port.
        port: u16,
    },

    /// Redis answered with an error reply.
    #[error("redis replied to {command} with an error: {message}")]
    Redis {
        /// The command's name (first argument).
        command: String,
        /// The error reply, e.g. `ERR unknown command`.
        message: String,
    },

    /// Redis sent bytes that are not RESP2.
    #[error("unexpected bytes from redis: {0}")]
    Protocol(String),

    /// An external command (`redis-cli`, `kill`) failed.
    #[error("`{command}` failed ({status}): {output}")]
    CommandFailed {
        /// The command line, for the reader.
        command: String,
        /// Its exit status.
        status: String,
        /// Its stdout and stderr, trimmed.
        output: String,
    },

    /// Something we wait on did not happen before its deadline.
    #[error("gave up after {waited:?} waiting for {what}")]
    Timeout {
        /// What we were waiting for, with the last observation.
        what: String,
        /// How long we waited.
        waited: Duration,
    },

    /// A builder was asked for something that cannot work.
    #[error("invalid testkit configuration: {0}")]
    InvalidConfig(String),

    /// `KITBASH_TEST_BACKEND` holds an unknown value.
    #[error("KITBASH_TEST_BACKEND={0:?} is not one of `process` (the default) or `containers`")]
    UnknownBackend(String),

    /// The selected backend cannot be used from this call or this build.
    #[error("the {backend} backend is unavailable: {why}")]
    BackendUnavailable {
        /// The backend's name.
        backend: &'static str,
        /// What to do instead.
        why: &'static str,
    },

    /// testcontainers could not start or inspect the container.
    #[cfg(feature = "containers")]
    #[error("testcontainers: {0}")]
    Container(#[from] testcontainers::TestcontainersError),
}

impl fmt::Debug for TestkitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl TestkitError {
    /// The kind of the underlying I/O error, if this is one: lets a test tell a timeout
    /// (`WouldBlock`/`TimedOut`) from a refused or closed connection.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            Self::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}
