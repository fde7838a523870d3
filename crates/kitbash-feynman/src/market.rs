//! A synthetic market for `kitbash feed ticks`, demos and tests, and a CSV tick replay.
//!
//! # Layout
//! - [`MarketSim`]: deterministic ticks for a set of symbols, round-robin. Each symbol follows
//!   its own price path: log returns with Student-t or Gaussian innovations, Poisson jumps, a
//!   ±10 % per-tick limit band and a weak pull back to the symbol's starting price, switching
//!   between [`VolatilityRegime`]s (a Markov chain) so the Hill tail index of a window moves
//!   between the Gaussian, Lévy-stable and critical regimes. Sizes are log-normal, trade counts
//!   ≥ 1 whenever the size is > 0.
//! - [`CsvReplay`]: ticks from `symbol,price,size,trades,ts` lines, with a [`CsvError`] naming
//!   the line of any bad input.
//!
//! A symbol's path depends only on the seed and the symbol (each has its own generator seeded
//! from both), so `--symbols SPY` and `--symbols SPY,QQQ` give SPY the same ticks.

use std::io::BufRead;

use kitbash_schema::messages::{Tick, validate_symbol};
use kitbash_schema::wire::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The volatility regime a simulated symbol is in (the simulator's ground truth; the physics
/// vector's [`kitbash_schema::messages::Regime`] is what a window estimates from the ticks).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VolatilityRegime {
    /// Gaussian innovations, no jumps, normal volume.
    Calm,
    /// Student-t (3 degrees of freedom) innovations, occasional jumps, more volume.
    Stressed,
    /// Student-t (1.6 degrees of freedom) innovations, frequent jumps, heavy volume.
    Crisis,
}

/// How prices and volumes behave in one [`VolatilityRegime`].
#[derive(Clone, Copy, Debug)]
struct RegimeDynamics {
    /// Scale of the per-tick log-return innovation.
    volatility: f64,
    /// Student-t degrees of freedom of the innovation; `None` for Gaussian.
    tail_degrees: Option<f64>,
    /// Probability of a jump on a tick (a Poisson process sampled per tick).
    jump_probability: f64,
    /// Standard deviation of a jump's log size.
    jump_volatility: f64,
    /// Mean ticks (of this symbol) before the regime changes.
    mean_duration: f64,
    /// Median tick size.
    median_size: f64,
}

impl VolatilityRegime {
    fn dynamics(self) -> RegimeDynamics {
        match self {
            VolatilityRegime::Calm => RegimeDynamics {
                volatility: 1.5e-4,
                tail_degrees: None,
                jump_probability: 0.0,
                jump_volatility: 0.0,
                mean_duration: 5000.0,
                median_size: 100.0,
            },
            VolatilityRegime::Stressed => RegimeDynamics {
                volatility: 2.5e-4,
                tail_degrees: Some(3.0),
                jump_probability: 0.001,
                jump_volatility: 2e-3,
                mean_duration: 3500.0,
                median_size: 200.0,
            },
            VolatilityRegime::Crisis => RegimeDynamics {
                volatility: 3e-4,
                tail_degrees: Some(1.6),
                jump_probability: 0.005,
                jump_volatility: 6e-3,
                mean_duration: 2500.0,
                median_size: 400.0,
            },
        }
    }

    /// The regime entered on leaving this one, from a uniform draw in [0, 1).
    fn next(self, draw: f64) -> VolatilityRegime {
        match self {
            VolatilityRegime::Calm if draw < 0.7 => VolatilityRegime::Stressed,
            VolatilityRegime::Calm => VolatilityRegime::Crisis,
            VolatilityRegime::Stressed if draw < 0.5 => VolatilityRegime::Calm,
            VolatilityRegime::Stressed => VolatilityRegime::Crisis,
            VolatilityRegime::Crisis if draw < 0.6 => VolatilityRegime::Stressed,
            VolatilityRegime::Crisis => VolatilityRegime::Calm,
        }
    }
}

/// Why a [`MarketSim`] could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MarketSimError {
    /// No symbols.
    #[error("the market needs at least one symbol")]
    NoSymbols,
    /// A symbol ticks could not carry.
    #[error("symbol {symbol:?}: {reason}")]
    InvalidSymbol {
        /// The symbol as given.
        symbol: String,
        /// Why [`validate_symbol`] refused it.
        reason: String,
    },
}

/// Largest per-tick log return (a ±10 % limit band).
const LIMIT_BAND: f64 = 0.1;
/// Pull of the log price back to the symbol's starting level, per tick.
const MEAN_REVERSION: f64 = 2e-5;
/// Largest distance of the log price from the starting level (a factor of e² ≈ 7.4).
const MAX_LOG_DEVIATION: f64 = 2.0;
/// Prices are quoted in steps of this size.
const PRICE_QUANTUM: f64 = 1e-4;
/// Probability of a tick with size 0 (a quote update without a trade).
const ZERO_SIZE_PROBABILITY: f64 = 0.005;
/// Log-normal spread of tick sizes.
const SIZE_LOG_SPREAD: f64 = 0.9;
/// Median shares per trade, and the log-normal spread of it.
const MEDIAN_TRADE_SIZE: f64 = 40.0;
const TRADE_SIZE_LOG_SPREAD: f64 = 0.5;

/// One symbol's price path.
#[derive(Clone, Debug)]
struct SymbolPath {
    /// The symbol its ticks carry.
    symbol: String,
    /// Its own generator, seeded from the market seed and the symbol.
    rng: StdRng,
    /// ln of the starting price: the level the path is pulled back to.
    anchor_ln_price: f64,
    /// Current ln price (before quoting to [`PRICE_QUANTUM`]).
    ln_price: f64,
    /// Current regime; changes with probability 1 / mean duration per tick.
    regime: VolatilityRegime,
}

impl SymbolPath {
    fn new(symbol: &str, market_seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(split_mix(market_seed ^ fnv1a(symbol.as_bytes())));
        let start_price: f64 = (rng.random::<f64>() * (500.0f64 / 20.0).ln()).exp() * 20.0;
        let regime = match rng.random_range(0..3) {
            0 => VolatilityRegime::Calm,
            1 => VolatilityRegime::Stressed,
            _ => VolatilityRegime::Crisis,
        };
        SymbolPath {
            symbol: symbol.to_owned(),
            rng,
            anchor_ln_price: start_price.ln(),
            ln_price: start_price.ln(),
            regime,
        }
    }

    fn next_tick(&mut self, ts: f64) -> Tick {
        let dynamics = self.regime.dynamics();
        if self.rng.random::<f64>() < 1.0 / dynamics.mean_duration {
            self.regime = self.regime.next(self.rng.random());
        }

        let innovation = match dynamics.tail_degrees {
            Some(degrees) => student_t(&mut self.rng, degrees),
            None => standard_normal(&mut self.rng),
        };
        let jump = if self.rng.random::<f64>() < dynamics.jump_probability {
            dynamics.jump_volatility * standard_normal(&mut self.rng)
        } else {
            0.0
        };
        let pull = MEAN_REVERSION * (self.anchor_ln_price - self.ln_price);
        let log_return =
            (pull + dynamics.volatility * innovation + jump).clamp(-LIMIT_BAND, LIMIT_BAND);
        self.ln_price = (self.ln_price + log_return).clamp(
            self.anchor_ln_price - MAX_LOG_DEVIATION,
            self.anchor_ln_price + MAX_LOG_DEVIATION,
        );
        let price =
            ((self.ln_price.exp() / PRICE_QUANTUM).round() * PRICE_QUANTUM).max(PRICE_QUANTUM);

        let (size, trades) = if self.rng.random::<f64>() < ZERO_SIZE_PROBABILITY {
            (0.0, 0)
        } else {
            let size = log_normal(&mut self.rng, dynamics.median_size, SIZE_LOG_SPREAD)
                .round()
                .max(1.0);
            let trade_size =
                log_normal(&mut self.rng, MEDIAN_TRADE_SIZE, TRADE_SIZE_LOG_SPREAD).max(1.0);
            // size ≤ ~1e5 and trade_size ≥ 1, so the count fits easily.
            let trades = (size / trade_size).ceil().max(1.0) as u64;
            (size, trades)
        };

        Tick {
            symbol: self.symbol.clone(),
            price,
            size,
            trades,
            ts,
        }
    }
}

/// A deterministic synthetic market: [`MarketSim::next_tick`] yields the symbols' ticks
/// round-robin (see the module documentation for the model).
#[derive(Clone, Debug)]
pub struct MarketSim {
    /// One path per symbol, in the order given.
    paths: Vec<SymbolPath>,
    /// Index of the path the next tick comes from.
    next_path: usize,
}

impl MarketSim {
    /// A market for `symbols` (each must pass [`validate_symbol`]), deterministic for `seed`.
    pub fn new(symbols: &[String], seed: u64) -> Result<Self, MarketSimError> {
        if symbols.is_empty() {
            return Err(MarketSimError::NoSymbols);
        }
        let paths = symbols
            .iter()
            .map(|symbol| {
                validate_symbol(symbol).map_err(|reason| MarketSimError::InvalidSymbol {
                    symbol: symbol.clone(),
                    reason,
                })?;
                Ok(SymbolPath::new(symbol, seed))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MarketSim {
            paths,
            next_path: 0,
        })
    }

    /// The next tick, stamped `ts` (Unix seconds; the caller keeps it finite and ≥ 0). Symbols
    /// take turns in the order given.
    pub fn next_tick(&mut self, ts: f64) -> Tick {
        let index = self.next_path;
        self.next_path = (index + 1) % self.paths.len();
        self.paths[index].next_tick(ts)
    }

    /// The symbols, in the order their ticks come.
    pub fn symbols(&self) -> impl Iterator<Item = &str> {
        self.paths.iter().map(|path| path.symbol.as_str())
    }

    /// The regime `symbol` is in now (the ground truth behind its ticks).
    pub fn regime_of(&self, symbol: &str) -> Option<VolatilityRegime> {
        self.paths
            .iter()
            .find(|path| path.symbol == symbol)
            .map(|path| path.regime)
    }
}

/// A standard normal draw (Marsaglia's polar method; the second value is discarded).
fn standard_normal(rng: &mut StdRng) -> f64 {
    loop {
        let u = 2.0 * rng.random::<f64>() - 1.0;
        let v = 2.0 * rng.random::<f64>() - 1.0;
        let s = u * u + v * v;
        if s > 0.0 && s < 1.0 {
            return u * (-2.0 * s.ln() / s).sqrt();
        }
    }
}

/// A Gamma(shape, 1) draw (Marsaglia–Tsang; shapes below 1 boosted by U^(1/shape)).
fn gamma(rng: &mut StdRng, shape: f64) -> f64 {
    if shape < 1.0 {
        // 1 − U is in (0, 1], so the power is never 0^x with a zero result from U = 0.
        let boost = (1.0 - rng.random::<f64>()).powf(1.0 / shape);
        return gamma(rng, shape + 1.0) * boost;
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = standard_normal(rng);
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u = 1.0 - rng.random::<f64>();
        if u < 1.0 - 0.0331 * x.powi(4) || u.ln() < 0.5 * x * x + d * (1.0 - v + v.ln()) {
            return d * v;
        }
    }
}

/// A Student-t draw with `degrees` of freedom: Z / √(χ²/ν), χ² = 2·Gamma(ν/2). Redrawn in the
/// (vanishingly rare) case the χ² draw underflows to 0.
fn student_t(rng: &mut StdRng, degrees: f64) -> f64 {
    loop {
        let chi_square = 2.0 * gamma(rng, degrees / 2.0);
        let t = standard_normal(rng) / (chi_square / degrees).sqrt();
        if t.is_finite() {
            return t;
        }
    }
}

/// A log-normal draw with the given median and log spread.
fn log_normal(rng: &mut StdRng, median: f64, log_spread: f64) -> f64 {
    (median.ln() + log_spread * standard_normal(rng)).exp()
}

/// FNV-1a, to fold a symbol into a seed.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// SplitMix64's finaliser, to spread a combined seed over all bits.
fn split_mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

// --- CSV replay ------------------------------------------------------------------------------

/// The columns of a tick CSV, in order.
pub const CSV_COLUMNS: [&str; 5] = ["symbol", "price", "size", "trades", "ts"];

/// A bad line in a tick CSV.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct CsvError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub problem: CsvProblem,
}

/// What is wrong with a CSV line.
#[derive(Debug, thiserror::Error)]
pub enum CsvProblem {
    /// Reading failed (including invalid UTF-8).
    #[error("cannot read: {0}")]
    Read(std::io::Error),
    /// A header line that is not `symbol,price,size,trades,ts`.
    #[error("header {found:?} is not symbol,price,size,trades,ts")]
    Header {
        /// The line as read.
        found: String,
    },
    /// Not five fields.
    #[error("expected 5 fields (symbol,price,size,trades,ts), found {found}")]
    FieldCount {
        /// Fields on the line.
        found: usize,
    },
    /// A field that does not parse as its type.
    #[error("{column} {value:?} is not a valid {expected}")]
    Field {
        /// Column name.
        column: &'static str,
        /// The field as read.
        value: String,
        /// "number" or "non-negative integer".
        expected: &'static str,
    },
    /// The fields parse but make an invalid tick ([`Message::validate`]).
    #[error("invalid tick: {0}")]
    InvalidTick(String),
}

/// Ticks from CSV lines `symbol,price,size,trades,ts`: an optional header (a first line whose
/// first field is `symbol`), blank lines and `#` comment lines skipped, fields trimmed, no
/// quoting. Each item is a tick or the error of its line; after a read error it ends.
#[derive(Debug)]
pub struct CsvReplay<R> {
    /// The input's lines.
    lines: std::io::Lines<R>,
    /// Number of the last line read (1-based).
    line: usize,
    /// Whether a non-blank, non-comment line has been seen (only the first can be the header).
    past_header: bool,
    /// Set by a read error; the iterator then ends.
    failed: bool,
}

impl<R: BufRead> CsvReplay<R> {
    /// Replays `reader` (a file through `BufReader`, or `text.as_bytes()`).
    pub fn new(reader: R) -> Self {
        CsvReplay {
            lines: reader.lines(),
            line: 0,
            past_header: false,
            failed: false,
        }
    }
}

impl<'a> CsvReplay<&'a [u8]> {
    /// All ticks of `text`, or the first bad line's error.
    pub fn parse_all(text: &'a str) -> Result<Vec<Tick>, CsvError> {
        CsvReplay::new(text.as_bytes()).collect()
    }
}

impl<R: BufRead> Iterator for CsvReplay<R> {
    type Item = Result<Tick, CsvError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            let read = self.lines.next()?;
            self.line += 1;
            let text = match read {
                Ok(text) => text,
                Err(error) => {
                    self.failed = true;
                    return Some(Err(self.error(CsvProblem::Read(error))));
                }
            };
            let text = text.trim();
            if text.is_empty() || text.starts_with('#') {
                continue;
            }
            let first_record = !self.past_header;
            self.past_header = true;
            let fields: Vec<&str> = text.split(',').map(str::trim).collect();
            if first_record && fields[0].eq_ignore_ascii_case("symbol") {
                let is_header = fields.len() == CSV_COLUMNS.len()
                    && fields
                        .iter()
                        .zip(CSV_COLUMNS)
                        .all(|(field, column)| field.eq_ignore_ascii_case(column));
                if is_header {
                    continue;
                }
                return Some(Err(self.error(CsvProblem::Header {
                    found: text.to_owned(),
                })));
            }
            return Some(parse_record(&fields).map_err(|problem| self.error(problem)));
        }
    }
}

impl<R> CsvReplay<R> {
    fn error(&self, problem: CsvProblem) -> CsvError {
        CsvError {
            line: self.line,
            problem,
        }
    }
}

/// One record's fields into a validated tick.
fn parse_record(fields: &[&str]) -> Result<Tick, CsvProblem> {
    let &[symbol, price, size, trades, ts] = fields else {
        return Err(CsvProblem::FieldCount {
            found: fields.len(),
        });
    };
    let number = |column: &'static str, value: &str| {
        value.parse::<f64>().map_err(|_| CsvProblem::Field {
            column,
            value: value.to_owned(),
            expected: "number",
        })
    };
    let tick = Tick {
        symbol: symbol.to_owned(),
        price: number("price", price)?,
        size: number("size", size)?,
        trades: trades.parse::<u64>().map_err(|_| CsvProblem::Field {
            column: "trades",
            value: trades.to_owned(),
            expected: "non-negative integer",
        })?,
        ts: number("ts", ts)?,
    };
    tick.validate().map_err(CsvProblem::InvalidTick)?;
    Ok(tick)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use kitbash_schema::messages::Regime;

    use super::*;
    use crate::physics::TickWindow;

    fn symbols(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_ticks() {
        let names = symbols(&["SPY", "QQQ", "BTC-USD"]);
        let mut a = MarketSim::new(&names, 42).unwrap();
        let mut b = MarketSim::new(&names, 42).unwrap();
        let mut c = MarketSim::new(&names, 43).unwrap();
        let from_a: Vec<Tick> = (0..5000).map(|i| a.next_tick(f64::from(i))).collect();
        let from_b: Vec<Tick> = (0..5000).map(|i| b.next_tick(f64::from(i))).collect();
        let from_c: Vec<Tick> = (0..5000).map(|i| c.next_tick(f64::from(i))).collect();
        assert_eq!(from_a, from_b);
        assert_ne!(from_a, from_c);
    }

    #[test]
    fn symbols_take_turns_and_keep_their_own_path() {
        let mut three = MarketSim::new(&symbols(&["SPY", "QQQ", "IWM"]), 7).unwrap();
        let mut one = MarketSim::new(&symbols(&["QQQ"]), 7).unwrap();
        let ticks: Vec<Tick> = (0..300).map(|i| three.next_tick(f64::from(i))).collect();
        for (i, tick) in ticks.iter().enumerate() {
            assert_eq!(tick.symbol, ["SPY", "QQQ", "IWM"][i % 3]);
        }
        let qqq_alone: Vec<(f64, f64, u64)> = (0..100)
            .map(|i| one.next_tick(f64::from(i)))
            .map(|t| (t.price, t.size, t.trades))
            .collect();
        let qqq_among: Vec<(f64, f64, u64)> = ticks
            .iter()
            .filter(|t| t.symbol == "QQQ")
            .map(|t| (t.price, t.size, t.trades))
            .collect();
        assert_eq!(qqq_alone, qqq_among);
        assert_eq!(three.symbols().collect::<Vec<_>>(), ["SPY", "QQQ", "IWM"]);
    }

    #[test]
    fn bad_symbol_lists_are_refused() {
        assert_eq!(
            MarketSim::new(&[], 1).unwrap_err(),
            MarketSimError::NoSymbols
        );
        let error = MarketSim::new(&symbols(&["SPY", "spy"]), 1).unwrap_err();
        assert!(
            matches!(error, MarketSimError::InvalidSymbol { ref symbol, .. } if symbol == "spy")
        );
    }

    #[test]
    fn every_tick_is_valid_and_realistic() {
        let mut market = MarketSim::new(&symbols(&["SPY", "AAPL"]), 9).unwrap();
        let mut zero_sizes = 0;
        for i in 0..100_000 {
            let tick = market.next_tick(1.7e9 + f64::from(i) * 0.001);
            tick.validate().unwrap();
            assert!(tick.price.is_finite() && tick.price > 0.0);
            if tick.size > 0.0 {
                assert!(tick.trades >= 1, "{tick:?}");
                assert_eq!(tick.size.fract(), 0.0);
            } else {
                assert_eq!(tick.trades, 0);
                zero_sizes += 1;
            }
        }
        // 0.5 % of 100k ticks: about 500.
        assert!(zero_sizes > 250 && zero_sizes < 1_000, "{zero_sizes}");
    }

    #[test]
    fn student_t_has_fat_tails_and_gaussian_does_not() {
        let mut rng = StdRng::seed_from_u64(3);
        let n = 100_000;
        let beyond = |draws: &[f64], x: f64| draws.iter().filter(|d| d.abs() > x).count();
        let normal: Vec<f64> = (0..n).map(|_| standard_normal(&mut rng)).collect();
        let mean = normal.iter().sum::<f64>() / f64::from(n);
        let variance = normal.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / f64::from(n);
        assert!(
            mean.abs() < 0.01 && (variance - 1.0).abs() < 0.02,
            "{mean} {variance}"
        );
        assert!(beyond(&normal, 6.0) == 0);
        // P(|t₂| > 10) ≈ 0.0098; P(|t₃| > 10) ≈ 0.0021.
        let t2: Vec<f64> = (0..n).map(|_| student_t(&mut rng, 2.0)).collect();
        let share = beyond(&t2, 10.0) as f64 / f64::from(n);
        assert!((share - 0.0098).abs() < 0.0015, "{share}");
        let t3: Vec<f64> = (0..n).map(|_| student_t(&mut rng, 3.0)).collect();
        let share = beyond(&t3, 10.0) as f64 / f64::from(n);
        assert!((share - 0.0021).abs() < 0.0006, "{share}");
    }

    #[test]
    fn the_window_sees_the_regimes_change() {
        // 50k ticks of one symbol through a default window; every 50 ticks compare the
        // estimated regime with the simulator's. Seed 2024 visits all three regimes.
        let mut market = MarketSim::new(&symbols(&["SPY"]), 2024).unwrap();
        let mut window = TickWindow::default();
        let mut estimated = [0usize; 3];
        let (mut agree, mut compared) = (0, 0);
        for i in 0..50_000 {
            let tick = market.next_tick(f64::from(i));
            window.push(&tick).unwrap();
            if i >= 1000 && i % 50 == 0 {
                let estimate = match window.vector().regime {
                    Regime::Gaussian => 0,
                    Regime::LevyStable => 1,
                    Regime::Critical => 2,
                };
                let truth = match market.regime_of("SPY").unwrap() {
                    VolatilityRegime::Calm => 0,
                    VolatilityRegime::Stressed => 1,
                    VolatilityRegime::Crisis => 2,
                };
                estimated[estimate] += 1;
                agree += usize::from(estimate == truth);
                compared += 1;
            }
        }
        assert!(
            estimated.iter().all(|&n| n > 0),
            "estimated (Gaussian, Lévy, critical): {estimated:?}"
        );
        // The window lags a switch by up to 1000 ticks, so agreement is far from total.
        assert!(agree * 2 > compared, "agree {agree} of {compared}");
    }

    // --- CSV ---------------------------------------------------------------------------------

    #[test]
    fn csv_with_and_without_header() {
        let with_header = "symbol,price,size,trades,ts\nSPY,450.25,100,3,1700000000.5\n\n# a comment\nQQQ, 390.1 ,0,0,1700000001\r\n";
        let ticks = CsvReplay::parse_all(with_header).unwrap();
        assert_eq!(ticks.len(), 2);
        assert_eq!(
            ticks[0],
            Tick {
                symbol: "SPY".into(),
                price: 450.25,
                size: 100.0,
                trades: 3,
                ts: 1_700_000_000.5
            }
        );
        assert_eq!(
            (ticks[1].symbol.as_str(), ticks[1].price, ticks[1].trades),
            ("QQQ", 390.1, 0)
        );
        let without = "SPY,450.25,100,3,1700000000.5\n";
        assert_eq!(CsvReplay::parse_all(without).unwrap()[0], ticks[0]);
    }

    #[test]
    fn csv_errors_name_the_line() {
        let cases = [
            (
                "SPY,1,1,1,1\nSPY,abc,1,1,1\n",
                2,
                "line 2: price \"abc\" is not a valid number",
            ),
            (
                "symbol,price,size,trades,ts\nSPY,1,1,1\n",
                2,
                "line 2: expected 5 fields",
            ),
            (
                "\n\nSPY,1,1,-3,1\n",
                3,
                "line 3: trades \"-3\" is not a valid non-negative integer",
            ),
            (
                "SPY,1,1,1,1\nSPY,-5,1,1,1\n",
                2,
                "line 2: invalid tick: price -5",
            ),
            (
                "SPY,1,1,1,1\nspy,5,1,1,1\n",
                2,
                "line 2: invalid tick: symbol \"spy\"",
            ),
            ("symbol,price,volume,trades,ts\n", 1, "line 1: header"),
            ("SPY,1,NaN,1,1\n", 1, "line 1: invalid tick: size NaN"),
        ];
        for (text, line, message) in cases {
            let error = CsvReplay::parse_all(text).unwrap_err();
            assert_eq!(error.line, line, "{text:?}");
            assert!(
                error.to_string().starts_with(message),
                "{error} vs {message}"
            );
        }
    }

    #[test]
    fn csv_keeps_going_after_a_bad_line_but_stops_after_a_read_error() {
        let items: Vec<_> = CsvReplay::new("SPY,x,1,1,1\nSPY,2,1,1,1\n".as_bytes()).collect();
        assert!(items[0].is_err() && items[1].is_ok());
        let not_utf8: &[u8] = b"SPY,1,1,1,1\n\xff\xfe,1,1,1,1\nSPY,2,1,1,1\n";
        let items: Vec<_> = CsvReplay::new(not_utf8).collect();
        assert_eq!(items.len(), 2);
        let error = items[1].as_ref().unwrap_err();
        assert_eq!(error.line, 2);
        assert!(matches!(error.problem, CsvProblem::Read(_)));
    }

    #[test]
    fn simulated_ticks_round_trip_through_csv() {
        let mut market = MarketSim::new(&symbols(&["SPY", "QQQ"]), 5).unwrap();
        let ticks: Vec<Tick> = (0..500)
            .map(|i| market.next_tick(1.7e9 + f64::from(i)))
            .collect();
        let mut text = CSV_COLUMNS.join(",") + "\n";
        for t in &ticks {
            text += &format!(
                "{},{},{},{},{}\n",
                t.symbol, t.price, t.size, t.trades, t.ts
            );
        }
        assert_eq!(CsvReplay::parse_all(&text).unwrap(), ticks);
    }
}
