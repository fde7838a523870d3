//! Times `TickWindow::push` and `TickWindow::vector` on a full window of simulated ticks.
//!
//! Run in release mode:
//! `cargo run --release -p kitbash-feynman --example physics_speed [WINDOW] [TICKS]`
//! (defaults 1000 and 2 000 000).

use std::hint::black_box;
use std::time::Instant;

use kitbash_feynman::market::MarketSim;
use kitbash_feynman::physics::TickWindow;
use kitbash_schema::messages::Tick;

fn main() {
    let mut args = std::env::args().skip(1);
    let window_capacity: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let tick_count: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);

    let symbols = vec!["SPY".to_owned()];
    let mut market = MarketSim::new(&symbols, 1).expect("SPY is a valid symbol");
    let ticks: Vec<Tick> = (0..tick_count)
        .map(|i| market.next_tick(i as f64))
        .collect();

    // push + vector per tick, as the daemon does (the first window fill included).
    let mut window = TickWindow::new(window_capacity);
    let started = Instant::now();
    for tick in &ticks {
        window.push(tick).expect("simulated ticks are valid");
        black_box(window.vector());
    }
    let per_tick = started.elapsed().as_nanos() as f64 / tick_count as f64;

    // push alone.
    let mut window = TickWindow::new(window_capacity);
    let started = Instant::now();
    for tick in &ticks {
        window
            .push(black_box(tick))
            .expect("simulated ticks are valid");
    }
    let per_push = started.elapsed().as_nanos() as f64 / tick_count as f64;

    // vector alone, over full windows at many points of the path (regimes differ).
    let samples = 200;
    let repeats = 2_000;
    let mut window = TickWindow::new(window_capacity);
    let mut vector_nanos = Vec::with_capacity(samples);
    let stride = (tick_count / samples).max(1);
    for (i, tick) in ticks.iter().enumerate() {
        window.push(tick).expect("simulated ticks are valid");
        if i >= window_capacity && i % stride == 0 {
            let started = Instant::now();
            for _ in 0..repeats {
                black_box(black_box(&window).vector());
            }
            vector_nanos.push(started.elapsed().as_nanos() as f64 / repeats as f64);
        }
    }
    vector_nanos.sort_by(f64::total_cmp);
    let quantile = |q: f64| vector_nanos[((vector_nanos.len() - 1) as f64 * q) as usize];
    let mean = vector_nanos.iter().sum::<f64>() / vector_nanos.len() as f64;

    println!("window {window_capacity}, {tick_count} ticks, one core");
    println!(
        "push + vector: {per_tick:8.0} ns/tick  ({:.0} ticks/s)",
        1e9 / per_tick
    );
    println!("push alone:    {per_push:8.0} ns/tick");
    println!(
        "vector alone:  {mean:8.0} ns mean, {:.0} median, {:.0} p90, {:.0} max over {} windows",
        quantile(0.5),
        quantile(0.9),
        quantile(1.0),
        vector_nanos.len()
    );
}
