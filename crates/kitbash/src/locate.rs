//! Where the CLI finds its configuration and the fleet.
//!
//! `kitbash up` records where it runs in `<state dir>/up.json` ([`UpRecord`]: its pid, the
//! Redis URL and namespace, the profile and config directory, the pids of its children). Every
//! other command, given neither a Redis URL (`--redis-url`, `KITBASH__REDIS__URL`) nor a profile
//! (`--profile`, `KITBASH_PROFILE`), reads that record and, while that `kitbash up` process is
//! alive, uses its Redis, namespace, profile and config directory: `kitbash status` run beside
//! `just up` finds the fleet without flags. Each command says on stderr which Redis and which
//! configuration it uses ([`Source`]), and says once when no configuration directory exists.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file `kitbash up` writes in its state directory.
pub const RECORD_FILE: &str = "up.json";

/// The state directory when `--state-dir` is not given: `$KITBASH_STATE_DIR`, else `.kitbash`.
pub fn default_state_dir() -> PathBuf {
    std::env::var_os("KITBASH_STATE_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(".kitbash"), PathBuf::from)
}

/// One child of `kitbash up`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChildRecord {
    /// `redis-server` or the daemon kind (`feynman`).
    pub name: String,
    /// Its process id.
    pub pid: u32,
    /// Where its output goes.
    pub log: PathBuf,
}

/// What a running `kitbash up` tells the other commands (and tests) about itself.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct UpRecord {
    /// The `kitbash up` process.
    pub pid: u32,
    /// `starting` until every child has started, then `running`.
    pub state: String,
    /// The Redis it uses (as configured, password included: the file is private to the user).
    pub redis_url: String,
    /// The key namespace.
    pub namespace: String,
    /// The profile it loaded, if any.
    pub profile: Option<String>,
    /// The configuration directory it read (absolute).
    pub config_dir: PathBuf,
    /// The `redis-server` it started; `None` when it uses a Redis that already ran.
    pub redis: Option<ChildRecord>,
    /// The daemons it started.
    pub daemons: Vec<ChildRecord>,
    /// Daemon kinds whose binary is not built.
    pub not_built: Vec<String>,
}

impl UpRecord {
    /// `<state dir>/up.json`.
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(RECORD_FILE)
    }

    /// The record in `state_dir`, if there is a readable one (alive or not).
    pub fn read(state_dir: &Path) -> Option<UpRecord> {
        let text = std::fs::read_to_string(Self::path(state_dir)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The record in `state_dir` if its `kitbash up` still runs.
    pub fn read_live(state_dir: &Path) -> Option<UpRecord> {
        Self::read(state_dir).filter(UpRecord::is_live)
    }

    /// Writes the record atomically (temp file + rename), readable only by its owner.
    pub fn write(&self, state_dir: &Path) -> std::io::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let tmp = state_dir.join(format!("{RECORD_FILE}.{}.tmp", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(serde_json::to_string_pretty(self)?.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, Self::path(state_dir))
    }

    /// Removes the record (on a clean stop).
    pub fn remove(state_dir: &Path) {
        let _ = std::fs::remove_file(Self::path(state_dir));
    }

    /// Whether the `kitbash up` that wrote this still runs.
    pub fn is_live(&self) -> bool {
        process_alive(self.pid, Some("kitbash"))
    }
}

/// Whether process `pid` exists and is not a zombie; with `name`, also that its command name
/// starts with it (a pid reused by another program does not count).
pub fn process_alive(pid: u32, name: Option<&str>) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) S …`: comm may hold spaces and parentheses, the state follows the last ')'.
    let Some((head, tail)) = stat.rsplit_once(')') else {
        return false;
    };
    let state = tail.trim_start().chars().next().unwrap_or('X');
    if matches!(state, 'Z' | 'X' | 'x') {
        return false;
    }
    match name {
        Some(n) => head
            .split_once('(')
            .is_some_and(|(_, comm)| comm.starts_with(&n[..n.len().min(15)])),
        None => true,
    }
}

/// Which Redis and which configuration a command uses, and why: printed on stderr by every
/// command that connects, and part of `kitbash status --json`.
#[derive(Clone, Debug, Serialize)]
pub struct Source {
    /// The Redis URL, password redacted.
    pub redis_url: String,
    /// Where the URL comes from: `--redis-url`, `KITBASH__REDIS__URL`, `kitbash up (pid N,
    /// .kitbash/up.json)`, a config file, or `built-in default`.
    pub redis_from: String,
    /// The configuration directory read.
    pub config_dir: PathBuf,
    /// Whether it holds a `default.toml`.
    pub config_found: bool,
    /// The profile, if any.
    pub profile: Option<String>,
}

impl Source {
    /// One line for stderr.
    pub fn describe(&self) -> String {
        let config = if self.config_found {
            format!("config {}", self.config_dir.display())
        } else {
            format!(
                "built-in config (no {})",
                self.config_dir.join("default.toml").display()
            )
        };
        let profile = self
            .profile
            .as_ref()
            .map_or_else(String::new, |p| format!(", profile {p}"));
        format!(
            "Redis {} (from {}); {config}{profile}",
            self.redis_url, self.redis_from
        )
    }
}

/// What the CLI's global flags and the environment say, before any file is read.
#[derive(Clone, Debug, Default)]
pub struct Flags {
    /// `--profile`.
    pub profile: Option<String>,
    /// `--redis-url`.
    pub redis_url: Option<String>,
    /// `--namespace`.
    pub namespace: Option<String>,
    /// The command is `kitbash up` (which writes the record instead of reading it).
    pub is_up: bool,
}

/// The configuration source, the overrides to apply, and the [`Source`] to report.
#[derive(Debug)]
pub struct Located {
    /// Where to read the files from.
    pub source: kitbash_runtime::config::ConfigSource,
    /// `(dotted.key, value)` overrides, applied last.
    pub overrides: Vec<(&'static str, String)>,
    /// What to tell the user; `redis_url` is filled in once the config is loaded.
    pub report: Source,
}

fn env_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}

/// Decides where configuration and Redis come from (see the module docs for the order).
pub fn locate(flags: &Flags) -> Located {
    let mut source = kitbash_runtime::config::ConfigSource::from_env();
    if let Some(p) = &flags.profile {
        source.profile = Some(p.clone());
    }
    let mut overrides: Vec<(&'static str, String)> = Vec::new();
    let url_given = flags.redis_url.is_some() || env_set("KITBASH__REDIS__URL");
    let profile_given = source.profile.is_some();
    let record = (!flags.is_up && !url_given && !profile_given)
        .then(|| UpRecord::read_live(&default_state_dir()))
        .flatten();
    let redis_from = if let Some(u) = &flags.redis_url {
        overrides.push(("redis.url", u.clone()));
        "--redis-url".to_owned()
    } else if env_set("KITBASH__REDIS__URL") {
        "KITBASH__REDIS__URL".to_owned()
    } else if let Some(r) = &record {
        overrides.push(("redis.url", r.redis_url.clone()));
        if flags.namespace.is_none() && !env_set("KITBASH__REDIS__NAMESPACE") {
            overrides.push(("redis.namespace", r.namespace.clone()));
        }
        source.profile = r.profile.clone();
        if !env_set("KITBASH_CONFIG_DIR") {
            source.dir = r.config_dir.clone();
        }
        format!(
            "the running `kitbash up`, pid {}, {}",
            r.pid,
            UpRecord::path(&default_state_dir()).display()
        )
    } else {
        file_defining_url(&source).unwrap_or_else(|| "built-in default".to_owned())
    };
    if let Some(n) = &flags.namespace {
        overrides.push(("redis.namespace", n.clone()));
    }
    let config_found = source.dir.join("default.toml").is_file();
    let report = Source {
        redis_url: String::new(),
        redis_from,
        config_dir: absolute(&source.dir),
        config_found,
        profile: source.profile.clone(),
    };
    Located {
        source,
        overrides,
        report,
    }
}

/// The last config file (profile, then default) that sets `[redis] url`.
fn file_defining_url(src: &kitbash_runtime::config::ConfigSource) -> Option<String> {
    let mut files = Vec::new();
    if let Some(p) = &src.profile {
        files.push(src.dir.join(format!("{p}.toml")));
    }
    files.push(src.dir.join("default.toml"));
    files.into_iter().find_map(|f| {
        let c = config::Config::builder()
            .add_source(config::File::from(f.as_path()).format(config::FileFormat::Toml))
            .build()
            .ok()?;
        c.get_string("redis.url")
            .ok()
            .map(|_| f.display().to_string())
    })
}

/// An absolute version of `dir` (for the record and the children's environment).
pub fn absolute(dir: &Path) -> PathBuf {
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_a_dead_pid_is_not_live() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut r = UpRecord {
            pid: std::process::id(),
            state: "running".into(),
            redis_url: "redis://127.0.0.1:6390".into(),
            namespace: String::new(),
            profile: Some("local".into()),
            config_dir: "/repo/config".into(),
            redis: None,
            daemons: vec![ChildRecord {
                name: "feynman".into(),
                pid: 1,
                log: "x.log".into(),
            }],
            not_built: vec!["decay".into()],
        };
        r.write(dir.path()).expect("write");
        assert_eq!(UpRecord::read(dir.path()).as_ref(), Some(&r));
        // This test process is not named kitbash…: not a live `kitbash up`.
        assert!(process_alive(std::process::id(), None));
        r.pid = u32::MAX - 1;
        assert!(!r.is_live());
        UpRecord::remove(dir.path());
        assert!(UpRecord::read(dir.path()).is_none());
    }
}
