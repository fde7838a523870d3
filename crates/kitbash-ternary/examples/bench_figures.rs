//! Prints the `kitbash bench ternary` figures: a table, then one JSON object per figure.
//!
//! `cargo run --release -p kitbash-ternary --example bench_figures [-- --long]`

use kitbash_ternary::Kernel;
use kitbash_ternary::bench::{BenchOptions, run};

fn main() {
    let long = std::env::args().any(|a| a == "--long");
    println!(
        "detected kernel: {}; available: {:?}",
        Kernel::detect(),
        Kernel::available()
    );
    let figures = run(&BenchOptions { long });
    println!(
        "{:<32} {:>12} {:>12} {:>8}  extra",
        "metric", "value", "baseline", "ratio"
    );
    for f in &figures {
        let extra: Vec<String> = f.extra.iter().map(|(k, v)| format!("{k}={v:.3}")).collect();
        println!(
            "{:<32} {:>9.2} {} {:>9.2} {} {:>8.4}  {}",
            f.metric,
            f.value,
            f.unit,
            f.baseline,
            f.unit,
            f.ratio(),
            extra.join(" ")
        );
    }
    for f in &figures {
        let extra: String = f
            .extra
            .iter()
            .map(|(k, v)| format!(",\"{k}\":{v:.4}"))
            .collect();
        println!(
            "{{\"suite\":\"ternary\",\"metric\":\"{}\",\"value\":{:.4},\"unit\":\"{}\",\"baseline\":{:.4},\"ratio\":{:.4}{}}}",
            f.metric,
            f.value,
            f.unit,
            f.baseline,
            f.ratio(),
            extra
        );
    }
}
