//! Criterion benches: top-3 search per kernel against the plain-read and naive-`i8` baselines,
//! batch against single searches, and signature hashing.
//!
//! `cargo bench -p kitbash-ternary` (add `-- top3_1k_256` to run one group).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kitbash_ternary::bench::{XorShift64, naive_top3, plain_read, random_vector};
use kitbash_ternary::{GrainBank, Kernel, SearchOptions, TernaryVector, signature};

fn bank(rng: &mut XorShift64, n: usize, dim: usize) -> (GrainBank, Vec<i8>) {
    let mut bank = GrainBank::with_capacity(dim, n).expect("valid dimension");
    let mut rows = Vec::with_capacity(n * dim);
    for id in 0..n as u64 {
        let grain = random_vector(rng, dim);
        rows.extend(grain.to_i8());
        bank.insert(id, &grain).expect("distinct ids");
    }
    (bank, rows)
}

/// Plane words of a bank, rebuilt from its grains (the bench cannot see the bank's buffer).
fn plane_words(bank: &GrainBank) -> Vec<u64> {
    bank.ids()
        .iter()
        .filter_map(|&id| bank.get(id))
        .flat_map(|g| {
            let nonzero: Vec<u64> = g
                .plus_words()
                .iter()
                .zip(g.minus_words())
                .map(|(p, m)| p | m)
                .collect();
            nonzero.into_iter().chain(g.plus_words().to_vec())
        })
        .collect()
}

fn top3(c: &mut Criterion, name: &str, n: usize, dim: usize, naive: bool) {
    let mut rng = XorShift64::new(42);
    let (bank, rows) = bank(&mut rng, n, dim);
    let query = random_vector(&mut rng, dim);
    let query_i8 = query.to_i8();
    let words = plane_words(&bank);
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(n as u64));
    for kernel in Kernel::available() {
        let opts = SearchOptions::top(3).with_kernel(kernel);
        group.bench_function(BenchmarkId::new("kernel", kernel), |b| {
            b.iter(|| bank.search(black_box(&query), &opts))
        });
    }
    group.bench_function("plain_read", |b| b.iter(|| plain_read(black_box(&words))));
    if naive {
        group.bench_function("naive_i8", |b| {
            b.iter(|| naive_top3(black_box(&query_i8), black_box(&rows)))
        });
    }
    if n >= 10_000 {
        let opts = SearchOptions::top(3).with_threads(2);
        group.bench_function("threads2", |b| {
            b.iter(|| bank.search(black_box(&query), &opts))
        });
        let queries: Vec<TernaryVector> = (0..64).map(|_| random_vector(&mut rng, dim)).collect();
        let opts = SearchOptions::top(3);
        group.throughput(Throughput::Elements(64 * n as u64));
        group.bench_function("batch64", |b| {
            b.iter(|| bank.search_batch(black_box(&queries), &opts))
        });
        group.bench_function("single64", |b| {
            b.iter(|| {
                for q in &queries {
                    black_box(bank.search(black_box(q), &opts).ok());
                }
            })
        });
    }
    group.finish();
}

fn searches(c: &mut Criterion) {
    top3(c, "top3_1k_256", 1_000, 256, true);
    top3(c, "top3_10k_4096", 10_000, 4_096, false);
}

fn signatures(c: &mut Criterion) {
    let text = "What is DNA, and how does the double helix store information?";
    c.bench_function("signature_256", |b| {
        b.iter(|| signature(black_box(text), 256))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = searches, signatures
}
criterion_main!(benches);
