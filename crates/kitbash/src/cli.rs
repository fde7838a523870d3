//! Argument parsing and dispatch for the `kitbash` binary.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fred::prelude::*;
use kitbash_runtime::config::{Config, ConfigSource};
use kitbash_runtime::daemon::EXIT_CONFIG;

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
    Bench {
        /// Suite: redis, ternary, feynman, memory, client.
        suite: String,
        /// One JSON object per figure on stdout, nothing else.
        #[arg(long)]
        json: bool,
        /// Run longer for steadier figures.
        #[arg(long)]
        long: bool,
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
    /// Start the whole system locally: Redis, every built daemon, a demo feed, a live view.
    Up {
        /// Demo feed rate, ticks per second (0 = none).
        #[arg(long, default_value_t = 200.0)]
        feed_rate: f64,
        /// Where Redis data and daemon logs go.
        #[arg(long, default_value = ".kitbash")]
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

/// `kitbash feed` subcommands.
#[derive(Debug, Subcommand)]
pub enum FeedCommand {
    /// Market ticks into the tick partitions (synthetic market, or --csv).
    Ticks {
        /// Stop after N ticks (default: 10000; 0 = run until Ctrl-C).
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
}

/// Loads the configuration with the CLI's overrides; a bad one is reported on one line.
pub fn load_config(cli: &Cli) -> Result<Config, String> {
    let mut src = ConfigSource::from_env();
    if let Some(p) = &cli.profile {
        src.profile = Some(p.clone());
    }
    let mut overrides = Vec::new();
    if let Some(u) = &cli.redis_url {
        overrides.push(("redis.url", u.clone()));
    }
    if let Some(n) = &cli.namespace {
        overrides.push(("redis.namespace", n.clone()));
    }
    Config::load_with(&src, overrides).map_err(|e| e.to_string())
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match load_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kitbash: bad config: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
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
        Err(e) => {
            eprintln!("kitbash: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn connect(config: &Config) -> anyhow::Result<Client> {
    // Wait at most one connect timeout: the CLI should say Redis is away instead of hanging.
    let wait = std::time::Duration::from_millis(config.redis.connect_timeout_ms);
    kitbash_runtime::redis::connect_client(&config.redis, wait)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot reach Redis at {}: {e}",
                kitbash_runtime::daemon::redact(&config.redis.url)
            )
        })
}

async fn dispatch(cli: Cli, config: Config) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Status { json } => {
            let client = connect(&config).await?;
            let keys = config.redis.keys();
            let s = crate::status::collect(
                &client,
                &keys,
                config.feynman.partitions,
                config.fleet.heartbeat_ms,
            )
            .await?;
            if json {
                println!("{}", serde_json::to_string(&s)?);
            } else {
                print!("{}", crate::status::render(&s));
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
        Command::Up {
            feed_rate,
            state_dir,
        } => {
            crate::up::run(
                config,
                crate::up::UpOptions {
                    feed_rate,
                    state_dir,
                },
            )
            .await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
