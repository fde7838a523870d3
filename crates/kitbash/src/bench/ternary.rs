//! `kitbash bench ternary`: the ternary kernels against their in-run baselines (a plain read of
//! the same bytes; a naive `i8` dot product), measured by `kitbash_ternary::bench`.

use super::{BenchOptions, Record};

/// Runs the suite (CPU-bound; call from a blocking thread).
pub fn run(opts: &BenchOptions) -> Vec<Record> {
    let figures =
        kitbash_ternary::bench::run(&kitbash_ternary::bench::BenchOptions { long: opts.long });
    figures
        .into_iter()
        .map(|f| {
            let mut r = Record::new("ternary", f.metric, f.value, f.unit, f.baseline);
            for (k, v) in f.extra {
                r = r.with(k, v);
            }
            // The kernel figure is the detected kernel; name it for readers of the JSON.
            if r.extra.contains_key("kernel") {
                r = r.with("kernel_name", kitbash_ternary::Kernel::detect().name());
            }
            r
        })
        .collect()
}
