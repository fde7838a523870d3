//! Finding `redis-server` and `redis-cli` (env override, then `PATH`) and reading the server's version.

use std::env;
use std::ffi::OsString;
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Result, TestkitError};

/// Environment variable naming the `redis-server` binary to use instead of the one on `PATH`.
pub const REDIS_SERVER_ENV: &str = "KITBASH_REDIS_SERVER";
/// Environment variable naming the `redis-cli` binary to use instead of the one on `PATH`.
pub const REDIS_CLI_ENV: &str = "KITBASH_REDIS_CLI";

/// The `redis-server` binary: `$KITBASH_REDIS_SERVER` if set, else the first on `PATH`.
///
/// The error's message says exactly what to install.
pub fn find_redis_server() -> Result<PathBuf> {
    locate(
        REDIS_SERVER_ENV,
        env::var_os(REDIS_SERVER_ENV),
        "redis-server",
        env::var_os("PATH"),
    )
    .ok_or(TestkitError::RedisServerNotFound)?
}

/// The `redis-cli` binary: `$KITBASH_REDIS_CLI` if set, else the first on `PATH`.
pub fn find_redis_cli() -> Result<PathBuf> {
    locate(
        REDIS_CLI_ENV,
        env::var_os(REDIS_CLI_ENV),
        "redis-cli",
        env::var_os("PATH"),
    )
    .ok_or(TestkitError::RedisCliNotFound)?
}

/// `None` when neither the override nor `PATH` has the binary; `Some(Err)` when the override is
/// set but wrong (a typo there must not silently fall back to another binary).
fn locate(
    var: &'static str,
    override_value: Option<OsString>,
    name: &str,
    path: Option<OsString>,
) -> Option<Result<PathBuf>> {
    if let Some(value) = override_value.filter(|v| !v.is_empty()) {
        let candidate = PathBuf::from(value);
        return Some(if is_executable(&candidate) {
            Ok(candidate)
        } else {
            Err(TestkitError::BadBinaryOverride {
                var,
                path: candidate,
            })
        });
    }
    env::split_paths(&path?)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .map(Ok)
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A `redis-server` version, ordered, so tests can say `if version < RedisVersion::new(7, 2, 0)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RedisVersion {
    /// Major version (7 for 7.2.4).
    pub major: u32,
    /// Minor version (2 for 7.2.4).
    pub minor: u32,
    /// Patch version (4 for 7.2.4).
    pub patch: u32,
}

impl RedisVersion {
    /// A version from its three parts.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    /// True when this version is `major.minor` or newer.
    pub fn at_least(self, major: u32, minor: u32) -> bool {
        self >= Self::new(major, minor, 0)
    }

    /// Reads `Redis server v=7.0.15 sha=… malloc=…` (the output of `redis-server --version`).
    pub fn parse_version_output(output: &str) -> Option<Self> {
        let rest = output
            .split_whitespace()
            .find_map(|w| w.strip_prefix("v="))?;
        let mut parts = rest.split('.').map(|p| p.parse::<u32>().ok());
        let major = parts.next()??;
        let minor = parts.next().flatten().unwrap_or(0);
        let patch = parts.next().flatten().unwrap_or(0);
        Some(Self::new(major, minor, patch))
    }
}

impl fmt::Display for RedisVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The version of the `redis-server` that [`find_redis_server`] finds.
///
/// ```no_run
/// let version = kitbash_testkit::redis_version()?;
/// if !version.at_least(7, 2) {
///     eprintln!("skipped: needs redis 7.2+ (found {version})");
///     return Ok(());
/// }
/// # Ok::<(), kitbash_testkit::TestkitError>(())
/// ```
pub fn redis_version() -> Result<RedisVersion> {
    let binary = find_redis_server()?;
    let out = Command::new(&binary)
        .arg("--version")
        .output()
        .map_err(|e| TestkitError::io(format!("running {} --version", binary.display()), e))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    RedisVersion::parse_version_output(&text).ok_or(TestkitError::UnreadableVersion {
        binary,
        output: text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_debian_version_line() {
        let line = "Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=ae4d7c971a948f0\n";
        assert_eq!(
            RedisVersion::parse_version_output(line),
            Some(RedisVersion::new(7, 0, 15))
        );
        assert!(!RedisVersion::new(7, 0, 15).at_least(7, 2));
        assert!(RedisVersion::new(7, 2, 0).at_least(7, 2));
        assert_eq!(RedisVersion::parse_version_output("nonsense"), None);
    }

    #[test]
    fn a_wrong_override_is_an_error_not_a_fallback() {
        let found = locate(
            REDIS_SERVER_ENV,
            Some("/nonexistent/redis-server".into()),
            "redis-server",
            Some("/usr/bin".into()),
        );
        let err = found
            .expect("override set")
            .expect_err("override points nowhere");
        assert!(
            err.to_string()
                .contains("KITBASH_REDIS_SERVER=/nonexistent")
        );
    }

    #[test]
    fn missing_binary_message_says_what_to_install() {
        let found = locate(
            REDIS_SERVER_ENV,
            None,
            "redis-server",
            Some("/nonexistent".into()),
        );
        assert!(found.is_none());
        assert_eq!(
            TestkitError::RedisServerNotFound.to_string(),
            "redis-server not found on PATH: install it with `sudo apt-get install -y redis-server redis-tools` (Debian/Ubuntu) or set KITBASH_REDIS_SERVER=/path/to/redis-server"
        );
    }
}
