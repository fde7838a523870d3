//! Argument parsing and dispatch for the `kitbash` binary.
//!
//! Errors: one line on stderr; with `--json`, also one JSON object on stdout,
//! `{"error":{"kind":"redis_unreachable","url":…,"cause":"refused","message":…}}` (kinds:
//! `config`, `redis_unreachable`, `other`), so a script reading stdout sees the failure.

// The argument docs below are clap help text, shown as written: `[redis] url` names a config
// key, not an intra-doc link.
#![allow(rustdoc::broken_intra_doc_links)]

use std::process::ExitCode;
use std::sync::OnceLock;

use clap::{ArgMatches, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use fred::prelude::*;
use kitbash_runtime::config::Config;
use kitbash_runtime::daemon::EXIT_CONFIG;
use kitbash_runtime::redis::ConnectError;

use crate::locate::Source;

/// kitbash: a fleet of Redis-native worker daemons.
#[derive(Debug, Parser)]
#[command(name = "kitbash", version, about)]
pub struct Cli {
    /// Configuration profile (config/{profile}.toml); default from KITBASH_PROFILE.
    #[arg(long, global = true)]
    pub profile: Option<String>,
    /// Redis URL; overrides [redis] url and KITBASH__REDIS__URL.
    #[arg(long, global = true)]
    pub redis_url: Option<String>,
    /// Key namespace; overrides [redis] namespace.
    #[arg(long, global = true)]
    pub namespace: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Daemons alive, stream lengths, group lag and pending, dead letters, Redis memory.
    Status {
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run a benchmark suite; figures are ratios to baselines measured in the same run.
    ///
    /// Every suite that needs Redis starts its own private redis-server on a free port and
    /// stops it at the end (so `bench feynman` needs no running Redis or fleet; it also starts
    /// its own kitbash-feynman processes from next to this binary), unless --redis-url or
    /// KITBASH__REDIS__URL names a server to use instead. Needs redis-server and
    /// redis-benchmark on PATH.
    Bench {
        /// Suite: redis, ternary, feynman, memory, client, entity, reflex, archive, bridge.
        suite: String,
        /// One JSON object per figure on stdout, nothing else.
        #[arg(long)]
        json: bool,
        /// Run longer for steadier figures.
        #[arg(long)]
        long: bool,
    },
    /// The client side of `bench bridge`: many WebSocket connections in this process (not for
    /// people; `bench bridge` starts it).
    #[command(hide = true)]
    BenchWsClients {
        /// The bridge's WebSocket URL.
        #[arg(long)]
        url: String,
        /// Connections.
        #[arg(long)]
        count: usize,
        /// Symbols `S0…S{n-1}`; connection i subscribes to `physics:S{(first+i) % n}`.
        #[arg(long)]
        symbols: usize,
        /// See `symbols`.
        #[arg(long, default_value_t = 0)]
        first: usize,
    },
    /// Import a `quantum_states/` + `consciousness/entities/` tree of JSON files into the
    /// entity documents, through the same compare-and-set commit as kitbash-entity. Idempotent:
    /// a second run changes nothing. A file that is not JSON is named and skipped.
    Migrate {
        /// The directory holding `quantum_states/` and/or `consciousness/entities/`.
        dir: std::path::PathBuf,
        /// Say what would change; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Publish demo data: `kitbash feed ticks`.
    Feed {
        /// What to feed.
        #[command(subcommand)]
        what: FeedCommand,
    },
    /// Inspect or reset rate-limit windows (`rate:{user}:{endpoint}`).
    Ratelimit {
        /// What to do.
        #[command(subcommand)]
        action: RateLimitCommand,
    },
    /// Clear a client cache family by SCAN.
    Cache {
        /// What to do.
        #[command(subcommand)]
        action: CacheCommand,
    },
    /// Key statistics.
    Keys {
        /// What to do.
        #[command(subcommand)]
        action: KeysCommand,
    },
    /// Seed 000's grains: `kitbash grains import FILE`, `kitbash grains list`.
    Grains {
        /// What to do.
        #[command(subcommand)]
        what: GrainsCommand,
    },
    /// Seed 000's hats: `kitbash hat init`, `kitbash hat set NAME`.
    Hat {
        /// What to do.
        #[command(subcommand)]
        what: HatCommand,
    },
    /// The Parquet archive: `kitbash archive ls`, `verify`, `export STREAM`.
    Archive {
        /// What to do.
        #[command(subcommand)]
        what: ArchiveCommand,
        /// The archive's root directory (default: [archive] dir, or a local up's .kitbash/archive).
        #[arg(long, global = true)]
        dir: Option<std::path::PathBuf>,
    },
    /// Print a Redis ACL file generated from the schema: one user per daemon kind with only
    /// its keys, channels and commands, an admin, a read-only and an application user.
    ///
    /// Users are named kitbash-ROLE (kitbash-NAMESPACE-ROLE in a namespace); ROLE is feynman,
    /// entity, decay, ghost, bridge, archive, example, admin, readonly or app. Each user's
    /// password comes from the environment variable `KITBASH_ACL_PASSWORD_<ROLE>`
    /// (KITBASH_ACL_PASSWORD_FEYNMAN, …), else from the first line of the file ROLE in
    /// --password-dir; it is printed as its SHA-256 (#hex, which Redis ACL files accept) unless
    /// --show-passwords. A user without a password is printed `off` (it cannot log in) and
    /// named on stderr. Connects to nothing; load the file with `aclfile` and `ACL LOAD`.
    /// Daemons then log in with [redis] username and password or password_file.
    Acl {
        /// A directory of password files, one per role, named after it (feynman, admin, …).
        #[arg(long)]
        password_dir: Option<std::path::PathBuf>,
        /// Print the passwords themselves (>secret) instead of their SHA-256.
        #[arg(long)]
        show_passwords: bool,
        /// Only these roles, comma-separated (feynman,decay).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// Seed 004's memory tokens: `kitbash memory top USER [--context CTX]`, the most
    /// relevant memories as kitbash-archive's indexer ranked them (relevance
    /// e^(-age/1h)·ln(1+accesses), docs/MEMORY.md).
    Memory {
        /// What to do.
        #[command(subcommand)]
        action: MemoryCommand,
    },
    /// Print a stream's entries live, decoded, one line each (no consumer group: it disturbs
    /// nothing). Ctrl-C stops.
    Tail {
        /// The stream (queries, ticks:0, physics, …).
        stream: String,
        /// Start after this id (`0`: the whole stream; default: from now).
        #[arg(long, default_value = "$")]
        from: String,
        /// One JSON object per entry.
        #[arg(long)]
        json: bool,
    },
    /// Replay a stream's entries from the archive and/or Redis into a stream.
    ///
    /// By default into the same stream of the namespace given by --to-namespace (a sandbox:
    /// start daemons against it with KITBASH__REDIS__NAMESPACE) keeping the original ids, which
    /// needs a fresh stream there; --new-ids (or --live) writes new ids instead, with the
    /// original id in a `replay_of` field. Bounds: an id (1700000000000-3), Unix ms, or a time
    /// ago (90s, 15m, 2h, 7d).
    Replay {
        /// The stream (queries, ticks:0, …).
        stream: String,
        /// First entry (inclusive).
        #[arg(long)]
        from: Option<String>,
        /// Last entry (inclusive).
        #[arg(long)]
        to: Option<String>,
        /// Where entries come from: archive, redis, or both (the archive, then Redis after its
        /// last id).
        #[arg(long, default_value = "both")]
        source: String,
        /// Write into this namespace's stream of the same name.
        #[arg(long)]
        to_namespace: Option<String>,
        /// Write into this namespace's own live stream, with new ids.
        #[arg(long)]
        live: bool,
        /// New ids (`*`), the original one in a `replay_of` field.
        #[arg(long)]
        new_ids: bool,
        /// Replay at the recorded pace times this factor (default: as fast as possible).
        #[arg(long)]
        speed: Option<f64>,
        /// Say what would be replayed (counts, time span, types, sources); write nothing.
        #[arg(long)]
        dry_run: bool,
        /// The archive's root directory (default: [archive] dir, or a local up's .kitbash/archive).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// Start the whole system locally: Redis, every built daemon, a demo feed, a live view.
    ///
    /// Uses the Redis at [redis] url (--redis-url) when one answers there, else starts one on
    /// that port. Whatever stops `up` (Ctrl-C, SIGTERM, SIGHUP, its output closing, kill -9)
    /// stops the daemons and the Redis it started. It records itself in STATE_DIR/up.json so
    /// that `kitbash status` and the other commands find this Redis without flags.
    Up {
        /// Demo feed rate, ticks per second (0 = none).
        #[arg(long, default_value_t = 200.0)]
        feed_rate: f64,
        /// Where Redis data, daemon logs and up.json go; created when missing.
        #[arg(long, env = "KITBASH_STATE_DIR", default_value = ".kitbash")]
        state_dir: std::path::PathBuf,
    },
}

/// `kitbash archive` subcommands.
#[derive(Debug, Subcommand)]
pub enum ArchiveCommand {
    /// Files per stream with their id ranges, entries and sizes.
    Ls {
        /// One stream (default: every stream).
        stream: Option<String>,
        /// The manifests as one JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Checks every file against the manifest (checksum, size, rows, id range) and the files'
    /// continuity; exit 1 naming each problem.
    Verify {
        /// One stream (default: every stream).
        stream: Option<String>,
    },
    /// Prints the DuckDB command that reads a stream's archive.
    Export {
        /// The stream.
        stream: String,
    },
}

/// `kitbash ratelimit` subcommands.
#[derive(Debug, Subcommand)]
pub enum RateLimitCommand {
    /// Requests in the current window, per endpoint (all of the user's when none is given).
    Show {
        /// The user.
        user: String,
        /// One endpoint.
        endpoint: Option<String>,
    },
    /// Forgets the user's windows (one endpoint, or all).
    Reset {
        /// The user.
        user: String,
        /// One endpoint.
        endpoint: Option<String>,
    },
}

/// `kitbash memory` subcommands.
#[derive(Debug, Subcommand)]
pub enum MemoryCommand {
    /// The most relevant memories of a user, most relevant first.
    Top {
        /// The user.
        user: String,
        /// Only this context (default: all of the user's).
        #[arg(long)]
        context: Option<String>,
        /// How many.
        #[arg(short, long, default_value_t = 10)]
        k: usize,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `kitbash cache` subcommands.
#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Deletes every key of a family: memory, score, session, rate, wm, spikes, attention.
    Clear {
        /// The family.
        family: String,
        /// Only count what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
}

/// `kitbash keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Largest keys (SCAN sample + MEMORY USAGE), hottest (OBJECT FREQ) under an LFU policy.
    Top {
        /// Keys to sample at most.
        #[arg(long, default_value_t = 10_000)]
        sample: usize,
        /// Keys to list.
        #[arg(long, short, default_value_t = 20)]
        n: usize,
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `kitbash grains` subcommands.
#[derive(Debug, Subcommand)]
pub enum GrainsCommand {
    /// Import grains from JSONL or a JSON array (id, axiom, weight, and "trits" or hex
    /// "plus"/"minus" planes), all or nothing; a bad line is reported with its number.
    Import {
        /// The grain file (see config/demo/grains.jsonl).
        file: std::path::PathBuf,
    },
    /// List the grains with their signature records.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

/// `kitbash hat` subcommands.
#[derive(Debug, Subcommand)]
pub enum HatCommand {
    /// Write the seed's five hats (analytical, creative, empathetic, deliberative, neutral),
    /// each mask = sha256(name), 32 bytes; the first becomes current unless one is set.
    Init,
    /// Make NAME the current hat (its mask must exist); the ghost recomputes hot queries.
    Set {
        /// The hat's name.
        name: String,
    },
}

/// `kitbash feed` subcommands.
#[derive(Debug, Subcommand)]
pub enum FeedCommand {
    /// Market ticks into the tick partitions (synthetic market, or --csv).
    Ticks {
        /// Stop after N ticks (0 = run until Ctrl-C).
        #[arg(long, default_value_t = 10_000)]
        count: u64,
        /// Ticks per second (default: as fast as possible).
        #[arg(long)]
        rate: Option<f64>,
        /// Symbols of the synthetic market.
        #[arg(long, value_delimiter = ',', default_value = "SPY,QQQ,AAPL,MSFT,NVDA")]
        symbols: Vec<String>,
        /// Replay a CSV of symbol,price,size,trades,ts instead.
        #[arg(long)]
        csv: Option<std::path::PathBuf>,
        /// Seed of the synthetic market.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Memory-token events into the memory stream (a demo: three users, four contexts, their
    /// memories used again and again).
    Memory {
        /// Stop after N events (0 = run until Ctrl-C).
        #[arg(long, default_value_t = 1_000)]
        count: u64,
        /// Events per second.
        #[arg(long, default_value_t = 50.0)]
        rate: f64,
        /// Seed of the demo.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Query events into the queries stream (a demo mix of 500 texts, a few hot).
    Queries {
        /// Stop after N events (0 = run until Ctrl-C).
        #[arg(long, default_value_t = 1_000)]
        count: u64,
        /// Events per second.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// Seed of the mix.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

/// Which Redis and configuration this invocation uses; set once in [`main`], printed by
/// [`connect`].
static SOURCE: OnceLock<Source> = OnceLock::new();

fn flags(cli: &Cli) -> crate::locate::Flags {
    crate::locate::Flags {
        profile: cli.profile.clone(),
        redis_url: cli.redis_url.clone(),
        namespace: cli.namespace.clone(),
        is_up: matches!(cli.command, Command::Up { .. }),
    }
}

/// Loads the configuration with the CLI's overrides (and, when neither a URL nor a profile is
/// given, the Redis of a running `kitbash up`); a bad one is reported on one line.
pub fn load_config(cli: &Cli) -> Result<Config, String> {
    load_located(&crate::locate::locate(&flags(cli)))
}

fn load_located(located: &crate::locate::Located) -> Result<Config, String> {
    Config::load_with(&located.source, located.overrides.iter().cloned()).map_err(|e| e.to_string())
}

/// True when the (sub)command was given `--json`, at any depth.
fn wants_json(m: &ArgMatches) -> bool {
    m.try_get_one::<bool>("json").ok().flatten().copied() == Some(true)
        || m.subcommand().is_some_and(|(_, sub)| wants_json(sub))
}

/// The JSON form of an error: `{"error":{"kind":…,"message":…}}`, plus `url` and `cause` when
/// Redis could not be reached.
pub fn error_json(kind: &str, e: &anyhow::Error) -> serde_json::Value {
    let connect = e.chain().find_map(|c| {
        c.downcast_ref::<ConnectError>()
            .or_else(|| match c.downcast_ref() {
                Some(kitbash_runtime::RuntimeError::Connect(ce)) => Some(ce),
                _ => None,
            })
    });
    match connect {
        Some(ce) => serde_json::json!({"error": {
            "kind": "redis_unreachable",
            "url": ce.url,
            "cause": ce.cause.code(),
            "message": format!("{e:#}"),
        }}),
        None => serde_json::json!({"error": {"kind": kind, "message": format!("{e:#}")}}),
    }
}

fn fail(kind: &str, e: &anyhow::Error, json: bool, code: ExitCode) -> ExitCode {
    if json {
        println!("{}", error_json(kind, e));
    }
    eprintln!("kitbash: {e:#}");
    code
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> ExitCode {
    if let Some(code) = crate::tether::exec_if_tethered() {
        return code;
    }
    let matches = Cli::command().get_matches();
    let json = wants_json(&matches);
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let located = crate::locate::locate(&flags(&cli));
    if !located.report.config_found {
        eprintln!(
            "kitbash: no configuration found ({} does not exist): using built-in defaults; \
             run from the repository or set KITBASH_CONFIG_DIR",
            located.source.dir.join("default.toml").display()
        );
    }
    let config = match load_located(&located) {
        Ok(c) => c,
        Err(e) => {
            let e = anyhow::anyhow!("bad config: {e}");
            return fail("config", &e, json, ExitCode::from(EXIT_CONFIG));
        }
    };
    let mut report = located.report.clone();
    report.redis_url = kitbash_runtime::redis::redact(&config.redis.url);
    let _ = SOURCE.set(report);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kitbash: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli, config)) {
        Ok(code) => code,
        Err(e) => fail("other", &e, json, ExitCode::FAILURE),
    }
}

/// Connects to the configured Redis, saying on stderr which one and why. A refused
/// connection, an unknown host or a bad password fail at once, naming the URL and the cause.
async fn connect(config: &Config) -> anyhow::Result<Client> {
    if let Some(s) = SOURCE.get() {
        eprintln!("kitbash: {}", s.describe());
    }
    let wait = std::time::Duration::from_millis(config.redis.connect_timeout_ms);
    match kitbash_runtime::redis::connect_client(&config.redis, wait).await {
        Ok(c) => Ok(c),
        Err(kitbash_runtime::RuntimeError::Connect(ce)) => Err(ce.into()),
        Err(e) => Err(anyhow::anyhow!(
            "cannot reach Redis at {}: {e}",
            kitbash_runtime::redis::redact(&config.redis.url)
        )),
    }
}

async fn dispatch(cli: Cli, config: Config) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Status { json } => {
            let client = connect(&config).await?;
            let keys = config.redis.keys();
            let mut s = crate::status::collect(&client, &keys, &config).await?;
            s.source = SOURCE.get().cloned();
            if json {
                println!("{}", serde_json::to_string(&s)?);
            } else {
                print!(
                    "{}",
                    crate::status::render(&s, crate::up::terminal_size().0)
                );
            }
            let _ = client.quit().await;
        }
        Command::BenchWsClients {
            url,
            count,
            symbols,
            first,
        } => {
            crate::bench::bridge::clients(&url, count, symbols, first).await?;
        }
        Command::Bench { suite, json, long } => {
            let redis_url = std::env::var("KITBASH__REDIS__URL")
                .ok()
                .or(cli.redis_url.clone());
            let opts = crate::bench::BenchOptions { long, redis_url };
            let records = crate::bench::run(&suite, &opts).await?;
            if json {
                for r in &records {
                    println!("{}", r.to_json());
                }
            } else {
                print!("{}", crate::bench::render_table(&records));
            }
        }
        Command::Migrate { dir, dry_run } => {
            let client = connect(&config).await?;
            let keys = config.redis.keys();
            let store = kitbash_entity::store::StringStore::new(
                client,
                keys.clone(),
                config.entity.timeline_max,
            );
            let summary = kitbash_entity::migrate::migrate(
                &store,
                &keys,
                &dir,
                dry_run,
                config.entity.max_document_bytes,
                |done, total, path| {
                    let width = 30;
                    let filled = done * width / total.max(1);
                    eprint!(
                        "\r[{}{}] {done}/{total} {}\x1b[K",
                        "#".repeat(filled),
                        ".".repeat(width - filled),
                        path.display()
                    );
                },
            )
            .await?;
            eprintln!();
            for (path, why) in &summary.skipped {
                eprintln!("skipped {}: {why}", path.display());
            }
            println!(
                "{} files: {} {}, {} unchanged, {} skipped{}",
                summary.files,
                summary.imported,
                if dry_run {
                    "would be imported"
                } else {
                    "imported"
                },
                summary.unchanged,
                summary.skipped.len(),
                if dry_run {
                    " (dry run: nothing written)"
                } else {
                    ""
                }
            );
            if !summary.skipped.is_empty() {
                return Ok(ExitCode::from(2));
            }
        }
        Command::Feed {
            what:
                FeedCommand::Ticks {
                    count,
                    rate,
                    symbols,
                    csv,
                    seed,
                },
        } => {
            let client = connect(&config).await?;
            let producer = kitbash_client::Producer::new(
                client.clone(),
                config.redis.keys(),
                config.feynman.partitions,
            );
            let opts = crate::feed::FeedOptions {
                count: (count > 0).then_some(count),
                rate,
                symbols,
                csv,
                seed,
                progress: true,
            };
            let stop = kitbash_runtime::CancellationToken::new();
            let token = stop.clone();
            tokio::spawn(async move {
                let _ = tokio::signal::ctrl_c().await;
                token.cancel();
            });
            crate::feed::ticks(&producer, &opts, stop).await?;
            let _ = client.quit().await;
        }
        Command::Ratelimit { action } => {
            let client = connect(&config).await?;
            let keys = config.redis.keys();
            match action {
                RateLimitCommand::Show { user, endpoint } => {
                    let text = crate::ratelimit::show(
                        &client,
                        &keys,
                        &config.ratelimit,
                        &user,
                        endpoint.as_deref(),
                    )
                    .await?;
                    print!("{text}");
                }
                RateLimitCommand::Reset { user, endpoint } => {
                    let n = crate::ratelimit::reset(
                        &client,
                        &keys,
                        &config.ratelimit,
                        &user,
                        endpoint.as_deref(),
                    )
                    .await?;
                    println!("reset {n} rate-limit windows of {user}");
                }
            }
            let _ = client.quit().await;
        }
        Command::Grains { what } => {
            let client = connect(&config).await?;
            let reflex = kitbash_client::reflex::Reflex::new(
                client.clone(),
                config.redis.keys(),
                config.decay.factor,
            );
            match what {
                GrainsCommand::Import { file } => {
                    let n = crate::reflex::grains_import(&reflex, &file, config.ghost.dim).await?;
                    eprintln!("kitbash: imported {n} grains from {}", file.display());
                }
                GrainsCommand::List { json } => {
                    print!("{}", crate::reflex::grains_list(&reflex, json).await?);
                }
            }
            let _ = client.quit().await;
        }
        Command::Cache {
            action: CacheCommand::Clear { family, dry_run },
        } => {
            let family = crate::cache::parse_family(&family)?;
            let client = connect(&config).await?;
            let text = crate::cache::clear(&client, &config.redis.keys(), family, dry_run).await?;
            print!("{text}");
            let _ = client.quit().await;
        }
        Command::Keys {
            action: KeysCommand::Top { sample, n, json },
        } => {
            let client = connect(&config).await?;
            let top = crate::keys::top(&client, &config.redis.keys(), sample, n).await?;
            if json {
                println!("{}", serde_json::to_string(&top)?);
            } else {
                print!("{}", crate::keys::render(&top));
            }
            let _ = client.quit().await;
        }
        Command::Hat { what } => {
            let client = connect(&config).await?;
            let reflex = kitbash_client::reflex::Reflex::new(
                client.clone(),
                config.redis.keys(),
                config.decay.factor,
            );
            match what {
                HatCommand::Init => {
                    let names = reflex.hat_init().await?;
                    eprintln!("kitbash: hats {} (mask = sha256(name))", names.join(", "));
                }
                HatCommand::Set { name } => {
                    if !reflex.hat_set(&name).await? {
                        anyhow::bail!("no hat named {name:?} (run `kitbash hat init`)");
                    }
                    eprintln!("kitbash: current hat is {name}");
                }
            }
            let _ = client.quit().await;
        }
        Command::Feed {
            what: feed @ (FeedCommand::Queries { .. } | FeedCommand::Memory { .. }),
        } => {
            let client = connect(&config).await?;
            let producer = kitbash_client::Producer::new(
                client.clone(),
                config.redis.keys(),
                config.feynman.partitions,
            );
            let stop = kitbash_runtime::CancellationToken::new();
            let token = stop.clone();
            tokio::spawn(async move {
                let _ = tokio::signal::ctrl_c().await;
                token.cancel();
            });
            let until = |count: u64| (count > 0).then_some(count);
            let (n, what) = match feed {
                FeedCommand::Memory { count, rate, seed } => (
                    crate::memory::feed(&producer, rate, until(count), seed, stop).await?,
                    "memory-token events",
                ),
                FeedCommand::Queries { count, rate, seed } => (
                    crate::reflex::queries(&producer, rate, until(count), seed, stop).await?,
                    "query events",
                ),
                FeedCommand::Ticks { .. } => unreachable!("matched above"),
            };
            eprintln!("kitbash: {n} {what}");
            let _ = client.quit().await;
        }
        Command::Acl {
            password_dir,
            show_passwords,
            only,
        } => {
            let opts = crate::acl::AclOptions {
                password_dir,
                show_passwords,
                only,
            };
            let env = |k: &str| std::env::var(k).ok();
            let (text, without) = crate::acl::render(&config.redis.keys(), &opts, &env)?;
            print!("{text}");
            // Redis accepts no comments in an aclfile: who each user is for goes to stderr.
            for line in text.lines() {
                let name = line.split_whitespace().nth(1).unwrap_or_default();
                if let Some(u) = kitbash_schema::acl::users(&config.redis.keys())
                    .into_iter()
                    .find(|u| u.name == name)
                {
                    eprintln!(
                        "kitbash acl: {name}: {}",
                        kitbash_schema::acl::about(u.role)
                    );
                }
            }
            eprintln!(
                "kitbash acl: Redis's default user is left as it is; add `user default off` once \
                 every client authenticates"
            );
            if !without.is_empty() {
                eprintln!(
                    "kitbash acl: no password for {} (printed `off`): set KITBASH_ACL_PASSWORD_<ROLE> or --password-dir",
                    without.join(", ")
                );
            }
        }
        Command::Memory {
            action:
                MemoryCommand::Top {
                    user,
                    context,
                    k,
                    json,
                },
        } => {
            let client = connect(&config).await?;
            let text = crate::memory::top(
                &client,
                &config.redis.keys(),
                &user,
                context.as_deref(),
                k,
                json,
            )
            .await?;
            print!("{text}");
            let _ = client.quit().await;
        }
        Command::Tail { stream, from, json } => {
            let Some(s) = kitbash_schema::StreamName::parse(&stream) else {
                anyhow::bail!("{stream:?} is not a stream name (queries, ticks:0, …)");
            };
            if let Some(src) = SOURCE.get() {
                eprintln!("kitbash: {}", src.describe());
            }
            let redis = kitbash_runtime::Redis::connect(&config.redis)?;
            redis
                .wait_connected(std::time::Duration::from_millis(
                    config.redis.connect_timeout_ms,
                ))
                .await?;
            let signals = kitbash_runtime::shutdown::install()?;
            let key = config.redis.keys().stream(s);
            crate::tail::run(&redis, key, from, json, signals.shutdown.clone()).await?;
        }
        Command::Replay {
            stream,
            from,
            to,
            source,
            to_namespace,
            live,
            new_ids,
            speed,
            dry_run,
            dir,
        } => {
            use kitbash_archive::replay;
            let Some(s) = kitbash_schema::StreamName::parse(&stream) else {
                anyhow::bail!("{stream:?} is not a stream name (queries, ticks:0, …)");
            };
            let source = match source.as_str() {
                "archive" => replay::Source::Archive,
                "redis" => replay::Source::Redis,
                "both" => replay::Source::Both,
                other => anyhow::bail!("--source {other:?}: archive, redis or both"),
            };
            if live == to_namespace.is_some() && !dry_run {
                anyhow::bail!(
                    "say where to: --to-namespace NS (a sandbox) or --live (this namespace, new ids)"
                );
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let range = replay::Range {
                from: from
                    .as_deref()
                    .map(|b| crate::archive::parse_bound(b, now, false))
                    .transpose()?,
                to: to
                    .as_deref()
                    .map(|b| crate::archive::parse_bound(b, now, true))
                    .transpose()?,
            };
            let client = connect(&config).await?;
            let keys = config.redis.keys();
            let root = crate::archive::root(&config, dir.as_deref());
            let sel = replay::select(&client, &root, s, &keys.stream(s), range, source).await?;
            let span = match (sel.entries.first(), sel.entries.last()) {
                (Some(a), Some(b)) => format!("{} .. {}", a.id, b.id),
                _ => "nothing".to_owned(),
            };
            eprintln!(
                "replay: {} entries ({} from the archive, {} from Redis), {span}, types {:?}",
                sel.entries.len(),
                sel.from_archive,
                sel.from_redis,
                sel.types()
            );
            if dry_run {
                let _ = client.quit().await;
                return Ok(ExitCode::SUCCESS);
            }
            let (target, ids) = match &to_namespace {
                Some(ns) => (
                    kitbash_schema::Keys::new(
                        kitbash_schema::Namespace::new(ns.clone())
                            .map_err(|e| anyhow::anyhow!("--to-namespace: {e}"))?,
                    )
                    .with_style(keys.style())
                    .stream(s),
                    if new_ids {
                        replay::Ids::New
                    } else {
                        replay::Ids::Original
                    },
                ),
                None => (keys.stream(s), replay::Ids::New),
            };
            let pace = speed.map_or(replay::Pace::Max, replay::Pace::Speed);
            let n = replay::write(
                &client,
                &target,
                &sel.entries,
                ids,
                pace,
                crate::archive::progress(sel.entries.len()),
            )
            .await?;
            eprintln!("replay: wrote {n} entries to {target}");
            let _ = client.quit().await;
        }
        Command::Archive { what, dir } => {
            let root = crate::archive::root(&config, dir.as_deref());
            match what {
                ArchiveCommand::Ls { stream, json } => {
                    let streams = crate::archive::streams(&config, stream.as_deref())?;
                    crate::archive::ls(&root, &streams, json)?;
                }
                ArchiveCommand::Verify { stream } => {
                    let streams = crate::archive::streams(&config, stream.as_deref())?;
                    if !crate::archive::verify(&root, &streams)? {
                        return Ok(ExitCode::FAILURE);
                    }
                }
                ArchiveCommand::Export { stream } => {
                    let streams = crate::archive::streams(&config, Some(&stream))?;
                    for s in streams {
                        println!("{}", crate::archive::export(&root, s));
                    }
                }
            }
        }
        Command::Up {
            feed_rate,
            state_dir,
        } => {
            let source = SOURCE.get();
            crate::up::run(
                config,
                crate::up::UpOptions {
                    feed_rate,
                    state_dir,
                    profile: source.and_then(|s| s.profile.clone()),
                    config_dir: source.map_or_else(
                        || std::path::PathBuf::from("config"),
                        |s| s.config_dir.clone(),
                    ),
                },
            )
            .await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
