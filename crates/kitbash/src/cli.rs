//! Argument parsing and dispatch for the `kitbash` binary.
//!
//! Errors: one line on stderr; with `--json`, also one JSON object on stdout,
//! `{"error":{"kind":"redis_unreachable","url":…,"cause":"refused","message":…}}` (kinds:
//! `config`, `redis_unreachable`, `other`), so a script reading stdout sees the failure.

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
        /// Suite: redis, ternary, feynman, memory, client, entity, reflex.
        suite: String,
        /// One JSON object per figure on stdout, nothing else.
        #[arg(long)]
        json: bool,
        /// Run longer for steadier figures.
        #[arg(long)]
        long: bool,
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
            what: FeedCommand::Queries { count, rate, seed },
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
            let n =
                crate::reflex::queries(&producer, rate, (count > 0).then_some(count), seed, stop)
                    .await?;
            eprintln!("kitbash: {n} query events");
            let _ = client.quit().await;
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
