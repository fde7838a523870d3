//! The reflex lookup and its memory, per layout: the reference load, the open loop at
//! 10,000 lookups/s, the closed-loop comparisons and the memory model check.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::Value;
use kitbash_client::reflex::{Reflex, query_hash};
use kitbash_runtime::DaemonContext;
use kitbash_schema::budget::{
    BudgetParams, CompactParams, RecordEncoding, RedisMemoryModel, SeedEstimate, family,
};
use kitbash_schema::reflex::{Layout, compact_id};
use kitbash_schema::{DaemonKind, Keys, StreamName};

use crate::bench::Record;
use crate::bench::memory::used_memory;
use crate::bench::redis::{Target, redis_benchmark};

use super::probe::*;
use super::*;
use crate::bench::openloop::*;
use crate::bench::rng::Rng;

// ---- memory and lookups, per layout ----------------------------------------------------------

/// What the compact layout's reference load looks like in Redis.
#[derive(Default)]
pub(super) struct CompactShapes {
    /// `OBJECT ENCODING` of each bucket key (`absent` for an empty bucket).
    encodings: std::collections::BTreeMap<String, u64>,
    fields_max: u64,
    fields: u64,
    record_bytes: u64,
    hot_encoding: String,
    hot_members: u64,
    hot_text_encoding: String,
    text_bytes: u64,
}

pub(super) fn text(v: &Value) -> String {
    v.as_string().unwrap_or_else(|| "absent".to_owned())
}

/// Mean `STRLEN` of `keys`.
pub(super) async fn mean_strlen(client: &Client, keys: &[String]) -> anyhow::Result<f64> {
    let pipe = client.pipeline();
    for k in keys {
        let _: () = pipe.strlen(k).await?;
    }
    let out: Vec<Value> = pipe.all().await?;
    Ok(mean(
        out.iter().filter_map(Value::as_u64).sum(),
        keys.len() as u64,
    ))
}

/// Mean field count, field length and value length of the hashes `keys`.
pub(super) async fn hash_shape(
    client: &Client,
    keys: &[String],
) -> anyhow::Result<(f64, f64, f64)> {
    let pipe = client.pipeline();
    for k in keys {
        let _: () = pipe.custom(fred::cmd!("HGETALL"), vec![k.clone()]).await?;
    }
    let out: Vec<Value> = pipe.all().await?;
    let (mut fields, mut field_bytes, mut value_bytes) = (0, 0, 0);
    for v in &out {
        let Value::Array(a) = v else { continue };
        for pair in a.chunks(2) {
            let len = |v: &Value| v.as_bytes().map_or(0, |b| b.len() as u64);
            if let [f, v] = pair {
                fields += 1;
                field_bytes += len(f);
                value_bytes += len(v);
            }
        }
    }
    let n = keys.len() as u64;
    Ok((
        mean(fields, n),
        mean(field_bytes, fields),
        mean(value_bytes, fields),
    ))
}

pub(super) async fn compact_shapes(
    client: &Client,
    keys: &Keys,
    buckets: u32,
) -> anyhow::Result<CompactShapes> {
    let mut s = CompactShapes::default();
    let pipe = client.pipeline();
    for n in 0..buckets {
        let key = keys.cms_bucket(n);
        let _: () = pipe
            .custom(
                fred::cmd!("OBJECT"),
                vec!["ENCODING".to_owned(), key.clone()],
            )
            .await?;
        let _: () = pipe.custom(fred::cmd!("HVALS"), vec![key]).await?;
    }
    let out: Vec<Value> = pipe.all().await?;
    for pair in out.chunks(2) {
        let [enc, vals] = pair else { continue };
        *s.encodings.entry(text(enc)).or_default() += 1;
        let vals = match vals {
            Value::Array(a) => a.as_slice(),
            _ => &[],
        };
        s.fields += vals.len() as u64;
        s.fields_max = s.fields_max.max(vals.len() as u64);
        s.record_bytes += vals
            .iter()
            .filter_map(Value::as_bytes)
            .map(|b| b.len() as u64)
            .sum::<u64>();
    }
    let encoding = |key: String| {
        client.custom::<Value, _>(fred::cmd!("OBJECT"), vec!["ENCODING".to_owned(), key])
    };
    s.hot_encoding = text(&encoding(keys.reflex_hot()).await?);
    s.hot_text_encoding = text(&encoding(keys.reflex_hot_text()).await?);
    s.hot_members = client.zcard(keys.reflex_hot()).await?;
    let texts: Vec<String> = client.hvals(keys.reflex_hot_text()).await?;
    s.text_bytes = texts.iter().map(|t| t.len() as u64).sum();
    Ok(s)
}

/// Mean of `total` over `n`, 0 for none.
pub(super) fn mean(total: u64, n: u64) -> f64 {
    if n == 0 { 0.0 } else { total as f64 / n as f64 }
}

/// One layout on a flushed server: the reference load's memory, then the lookups (closed
/// loop, the diagnostics, open loop at 10k/s, the baselines). Returns (lookup, memory).
pub(super) async fn layout_run(
    t: &Target,
    long: bool,
    layout: Layout,
) -> anyhow::Result<(Record, Record)> {
    let compact = layout == Layout::Compact;
    let suffix = if compact { "_compact" } else { "" };
    let cfg = config(&t.url, layout);
    let buckets = cfg.reflex.buckets;
    let client =
        kitbash_runtime::redis::connect_client(&cfg.redis, Duration::from_secs(10)).await?;
    let _: () = client.flushall(false).await?;
    // Scripts survive FLUSHALL: start each layout with an empty script cache, so both count
    // the body of their hit script (a few KB) alike.
    let _: () = client.script_flush(false).await?;
    let (signals, _) = kitbash_runtime::shutdown::manual();
    let stop = signals.shutdown.clone();
    let ctx = DaemonContext::start(DaemonKind::Decay, cfg.clone(), signals).await?;
    // Redis 7 keeps a latency histogram (≈ 24 KB) per command name the first time it runs;
    // the load's new commands would add ≈ 0.25 MB that is not the dataset's.
    let latency_tracking = |on: &'static str| {
        client.custom::<Value, _>(fred::cmd!("CONFIG"), vec!["SET", "latency-tracking", on])
    };
    let _ = latency_tracking("no").await?;
    let _: () = client.config_resetstat().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = used_memory(&client).await?;
    let stats_before = memory_stats(&client).await?;
    let keys = Keys::default();
    let reflex = Reflex::new(client.clone(), keys.clone(), 0.9).with_layout(layout, buckets);
    eprintln!(
        "reflex [{layout:?}]: loading 10k CMS records through decay's script, 1k grains, 5 hats …"
    );
    let qs = load_reference(&ctx, &reflex).await?;
    let hashes: Arc<Vec<String>> = Arc::new(qs.iter().map(|q| query_hash(q)).collect());
    // Ghosts of the hot tenth, as the ghost daemon writes them: under the layout's id.
    let pipe = client.pipeline();
    for (i, h) in hashes.iter().enumerate().step_by(10) {
        let id = if compact {
            compact_id(h)
        } else {
            Some(h.clone())
        };
        let id = id.ok_or_else(|| anyhow::anyhow!("{h:?} is not a query hash"))?;
        let g = 1 + (i as u64 * 31) % 1000;
        let _: () = pipe
            .set(
                keys.ghost(&id),
                format!("{g},{},{}", 1 + (g * 3) % 1000, 1 + (g * 5) % 1000),
                Some(Expiration::EX(3600)),
                None,
                false,
            )
            .await?;
    }
    let _: Vec<Value> = pipe.all().await?;
    // What production keeps beside the dataset only transiently: markers, streams.
    for s in [StreamName::Queries, StreamName::Crossings] {
        delete_matching(&client, &format!("{}*", keys.stream(s))).await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = used_memory(&client).await?;
    let delta = after.saturating_sub(before);
    let stats_after = memory_stats(&client).await?;
    let _ = latency_tracking("yes").await?;
    let grain_sig_keys: Vec<String> = (1..=1000).map(|g| keys.grain_sig(g)).collect();
    let sig_len = mean_strlen(&client, &grain_sig_keys).await?;
    let seed_mb = SeedEstimate::default().total_mb();
    let mut memory = if compact {
        let s = compact_shapes(&client, &keys, buckets).await?;
        let params = BudgetParams {
            compact: Some(CompactParams {
                buckets,
                record_len: mean(s.record_bytes, s.fields).round() as u32,
                text_len: mean(s.text_bytes, s.hot_members).round() as u32,
            }),
            grain_sig: RecordEncoding::String {
                len: sig_len.round() as u32,
            },
            ..BudgetParams::default()
        };
        let est = RedisMemoryModel::default().estimate(&params);
        let model = est.total_bytes;
        // MEMORY USAGE of the families the compact layout adds, against the model's.
        let bucket_keys: Vec<String> = (0..buckets).map(|n| keys.cms_bucket(n)).collect();
        let mut usage = serde_json::Map::new();
        for (family, ks) in [
            (family::CMS_BUCKETS, bucket_keys),
            (family::HOT, vec![keys.reflex_hot()]),
            (family::HOT_TEXT, vec![keys.reflex_hot_text()]),
        ] {
            let model = est.family(family).map_or(0, |f| f.memory_usage);
            let measured = memory_usage(&client, &ks).await?;
            usage.insert(family.to_owned(), serde_json::json!([measured, model]));
        }
        let what = format!(
            "compact ({buckets} listpack hashes kitbash:cms:{{n}}, field = 16-hex id; \
             hot set + hot text; ghost:{{id}})"
        );
        Record::new(
            SUITE,
            "memory_10k_cms_1k_grains_compact_mb",
            delta as f64 / 1e6,
            "MB",
            seed_mb,
        )
        .with("model_mb", model as f64 / 1e6)
        .with("measured_over_model", delta as f64 / model as f64)
        .with("bytes", delta)
        .with("model_bytes", model)
        .with("layout", what)
        .with("buckets", buckets)
        .with("bucket_encodings", serde_json::to_value(&s.encodings)?)
        .with("bucket_fields_max", s.fields_max)
        .with("records", s.fields)
        .with("record_len_avg", mean(s.record_bytes, s.fields))
        .with("hot_members", s.hot_members)
        .with("hot_encoding", s.hot_encoding)
        .with("hot_text_encoding", s.hot_text_encoding)
        .with("hot_text_len_avg", mean(s.text_bytes, s.hot_members))
        .with(
            "memory_usage_measured_model",
            serde_json::Value::Object(usage),
        )
    } else {
        // The shapes decay's seed script wrote: the cms:{h} hash's fields and values, the
        // resonance strings.
        let cms_keys: Vec<String> = hashes.iter().map(|h| keys.cms(h)).collect();
        let (fields, field_len, value_len) = hash_shape(&client, &cms_keys).await?;
        let res_keys: Vec<String> = hashes.iter().map(|h| keys.cms_resonance(h)).collect();
        let resonance_len = mean_strlen(&client, &res_keys).await?;
        let params = BudgetParams {
            cms_record: RecordEncoding::Hash {
                fields: fields.round() as u32,
                field_len: field_len.round() as u32,
                value_len: value_len.round() as u32,
            },
            resonance_len: resonance_len.round() as u32,
            grain_sig: RecordEncoding::String {
                len: sig_len.round() as u32,
            },
            ..BudgetParams::default()
        };
        let est = RedisMemoryModel::default().estimate(&params);
        let model = est.total_bytes;
        let per_query = |key: fn(&Keys, &str) -> String| -> Vec<String> {
            hashes.iter().map(|h| key(&keys, h)).collect()
        };
        let mut usage = serde_json::Map::new();
        for (family, ks) in [
            (family::CMS, per_query(Keys::cms)),
            (family::CMS_GRAINS, per_query(Keys::cms_grains)),
            (family::CMS_RESONANCE, per_query(Keys::cms_resonance)),
            (
                family::RESONANCE_INDEX,
                vec![keys.resonance_index(), keys.decay_cycle()],
            ),
        ] {
            let model = est.family(family).map_or(0, |f| f.memory_usage);
            let measured = memory_usage(&client, &ks).await?;
            usage.insert(family.to_owned(), serde_json::json!([measured, model]));
        }
        Record::new(
            SUITE,
            "memory_10k_cms_1k_grains_mb",
            delta as f64 / 1e6,
            "MB",
            seed_mb,
        )
        .with("model_mb", model as f64 / 1e6)
        .with("measured_over_model", delta as f64 / model as f64)
        .with("bytes", delta)
        .with("model_bytes", model)
        .with(
            "layout",
            "seed (cms:{h} hash + :grains + :resonance, index, 64-hex hashes)",
        )
        .with("cms_fields_avg", fields)
        .with("cms_field_len_avg", field_len)
        .with("cms_value_len_avg", value_len)
        .with("resonance_len_avg", resonance_len)
        .with(
            "memory_usage_measured_model",
            serde_json::Value::Object(usage),
        )
    };
    memory = memory
        .with("grain_sig_len_avg", sig_len)
        .with(
            "memory_stats_before",
            serde_json::Value::Object(stats_before),
        )
        .with("memory_stats_after", serde_json::Value::Object(stats_after))
        .with("baseline_kind", "the seed's own estimate (9.2)")
        .with("target_mb", 4.0)
        .with("load_avg_1m", load_avg());

    // Where a lookup's time goes, one at a time (closed loop).
    let n_single = if long { 20_000 } else { 5_000 };
    let hot = hashes[0].clone();
    // One lookup first, so the grain cache holds the hot query's grains and the captured
    // command is the hot lookup's (a cold one runs the full script after it).
    reflex.lookup_hash(&hot).await?;
    let command = {
        let (r, h) = (reflex.clone(), hot.clone());
        captured_command(&client, || async move { r.lookup_hash(&h).await.is_ok() }).await?
    };
    let mut rng = Rng::new(3);
    let single = closed_loop(n_single, |_| {
        let (r, h) = (
            reflex.clone(),
            hashes[(rng.next() % 10_000) as usize].clone(),
        );
        async move {
            r.lookup_hash(&h).await?;
            Ok(())
        }
    })
    .await?;
    // The hot query alone: the lookup, the same EVALSHA through fred without building a
    // `ReflexLookup`, and replayed by redis-benchmark's C client (Redis's time per call read
    // from `INFO commandstats` around the replay).
    let hot_single = closed_loop(n_single, |_| {
        let (r, h) = (reflex.clone(), hot.clone());
        async move {
            r.lookup_hash(&h).await?;
            Ok(())
        }
    })
    .await?;
    let (raw, replay) = match &command {
        Some(args) if args.len() >= 3 => {
            let nk: usize = args[2].parse().unwrap_or(0);
            let sha = args[1].clone();
            let ks: Vec<String> = args.iter().skip(3).take(nk).cloned().collect();
            let argv: Vec<String> = args.iter().skip(3 + nk).cloned().collect();
            let raw_single = closed_loop(n_single, |_| {
                let (c, sha, ks, argv) = (client.clone(), sha.clone(), ks.clone(), argv.clone());
                async move {
                    let _: Value = c.evalsha(sha, ks, argv).await?;
                    Ok(())
                }
            })
            .await?;
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut rb_args = vec!["-c", "1", "-n", "20000"];
            rb_args.extend(refs);
            let _: () = client.config_resetstat().await?;
            let rb = redis_benchmark(t, &rb_args)?;
            let (calls, usec) = command_stat(&client, "evalsha").await?;
            // Only a replay Redis really ran counts (a NOSCRIPT reply would be fast too).
            let replay = rb
                .first()
                .filter(|_| calls >= 20_000)
                .map(|r| (r.1.p50_ms, r.1.p99_ms, mean(usec, calls)));
            (Some(raw_single), replay)
        }
        _ => (None, None),
    };
    // The hot query's captured EVALSHA alone at the open loop's arrivals: through fred, and
    // through a bare pipelined socket (one task writes what has queued and reads the replies
    // in order) — how much of the open-loop tail is the client stack.
    let bare = match &command {
        Some(args) if args.len() >= 3 => {
            let nk: usize = args[2].parse().unwrap_or(0);
            let sha = args[1].clone();
            let ks: Vec<String> = args.iter().skip(3).take(nk).cloned().collect();
            let argv: Vec<String> = args.iter().skip(3 + nk).cloned().collect();
            let schedule = poisson_schedule(10_000.0, if long { 100_000 } else { 30_000 }, 7);
            let handle = tokio::runtime::Handle::current();
            let fred_loop = {
                let (c, sha, ks, argv) = (client.clone(), sha.clone(), ks.clone(), argv.clone());
                open_loop(handle.clone(), schedule.clone(), move |_, _| {
                    let (c, sha, ks, argv) = (c.clone(), sha.clone(), ks.clone(), argv.clone());
                    async move { c.evalsha::<Value, _, _, _>(sha, ks, argv).await.is_ok() }
                })
                .await?
            };
            let mut request = Vec::new();
            let refs: Vec<&[u8]> = args.iter().map(String::as_bytes).collect();
            kitbash_runtime::resp::command(&mut request, &refs);
            let lean = match kitbash_runtime::resp::Endpoint::of(&client) {
                Some(ep) => {
                    let pipe = BarePipe::start(ep.open().await?);
                    let request: std::sync::Arc<[u8]> = request.into();
                    Some(
                        open_loop(handle, schedule, move |_, _| {
                            let (p, r) = (pipe.clone(), request.clone());
                            async move { p.call(r).await }
                        })
                        .await?,
                    )
                }
                None => None,
            };
            Some((fred_loop, lean))
        }
        _ => None,
    };
    let get_key = keys.hat_current();
    let fred_get = closed_loop(n_single, |_| {
        let (c, k) = (client.clone(), get_key.clone());
        async move {
            let _: Option<String> = c.get(k).await?;
            Ok(())
        }
    })
    .await?;

    // Open loop: Poisson arrivals at 10k/s, half of them to the hot tenth (ghost, three
    // grains), half anywhere.
    let rate = 10_000.0;
    let n = if long { 100_000 } else { 30_000 };
    let schedule = poisson_schedule(rate, n, 7);
    let mut rng = Rng::new(11);
    let picks: Vec<usize> = (0..n)
        .map(|_| {
            if rng.next().is_multiple_of(2) {
                (rng.next() % 1000 * 10) as usize
            } else {
                (rng.next() % 10_000) as usize
            }
        })
        .collect();
    let picks = Arc::new(picks);
    let lookups = |reflex: Reflex| {
        let (hashes, picks) = (hashes.clone(), picks.clone());
        move |k: usize, _: Instant| {
            let (r, h) = (reflex.clone(), hashes[picks[k]].clone());
            async move { r.lookup_hash(&h).await.is_ok() }
        }
    };
    let handle = tokio::runtime::Handle::current();
    // Warm-up, not recorded: the same rate for half a second, so the run measures the
    // steady state (allocator, buffers, caches), not first-touch page faults.
    let warmup = poisson_schedule(rate, WARMUP_LOOKUPS, 99);
    open_loop(handle.clone(), warmup.clone(), lookups(reflex.clone())).await?;
    eprintln!("reflex [{layout:?}]: {n} lookups, Poisson arrivals at {rate}/s …");
    let _: () = client.config_resetstat().await?;
    let (own0, redis0) = cpu_seconds(&client).await?;
    let (redis_wait0, own_wait0) = runqueue_waits(&client).await?;
    let run = open_loop(handle, schedule.clone(), lookups(reflex.clone())).await?;
    let (own1, redis1) = cpu_seconds(&client).await?;
    let (redis_wait1, own_wait1) = runqueue_waits(&client).await?;
    let stats = crate::bench::commandstats::command_stats(&client).await?;
    let (calls, usec) = stats.get("evalsha").copied().unwrap_or_default();
    let per_command = crate::bench::commandstats::cost_per_unit(
        &Default::default(),
        &stats,
        run.latency.len() as u64,
        "lookup",
        |_| false,
    );
    let load = load_avg();
    // The same arrivals with the client (its own connection) on a current-thread runtime of
    // its own thread: one thread for the lookup tasks and fred's connection task, so no
    // hand-offs between the bench's two worker threads on a 2-core machine.
    eprintln!("reflex [{layout:?}]: again, the client on a current-thread runtime …");
    let side = SideRuntime::start()?;
    let side_client = {
        let redis = cfg.redis.clone();
        side.handle
            .spawn(async move {
                kitbash_runtime::redis::connect_client(&redis, Duration::from_secs(10)).await
            })
            .await??
    };
    let side_reflex =
        Reflex::new(side_client.clone(), keys.clone(), 0.9).with_layout(layout, buckets);
    open_loop(side.handle.clone(), warmup, lookups(side_reflex.clone())).await?;
    let single_thread = open_loop(side.handle.clone(), schedule, lookups(side_reflex)).await?;
    let _ = side_client.quit().await;
    drop(side);
    eprintln!("reflex [{layout:?}]: redis-benchmark single-client GET …");
    let rb = redis_benchmark(t, &["-c", "1", "-n", "100000", "GET", &get_key])?;
    let (rb_p50, rb_p99) = rb.first().map_or((0.0, 0.0), |r| (r.1.p50_ms, r.1.p99_ms));
    let done = run.latency.len();
    let span = run.issue_span.as_secs_f64();
    let per_lookup_us = |s: f64| s * 1e6 / done.max(1) as f64;
    let lat = &run.latency;
    let late = &run.lateness;
    let mut lookup = Record::new(
        SUITE,
        format!("lookup_p99_ms{suffix}"),
        q_ms(lat, 0.99),
        "ms",
        rb_p99,
    )
    .with(
        "baseline_kind",
        "redis-benchmark -c 1 GET p99, same server, same layout run",
    )
    .with("layout", format!("{layout:?}").to_lowercase())
    .with(
        "arrivals",
        "poisson, exponential gaps, seed 7, issued by an OS thread (std::thread::sleep)",
    )
    .with("rate_per_s", rate)
    .with("warmup_lookups", WARMUP_LOOKUPS)
    .with("lookups", done)
    .with("errors", run.errors)
    .with("p50_ms", q_ms(lat, 0.5))
    .with("p999_ms", q_ms(lat, 0.999))
    .with("max_ms", lat.max() as f64 / 1e6)
    .with("issue_rate_per_s", n as f64 / span.max(1e-9))
    .with("generator_lateness_p50_ms", q_ms(late, 0.5))
    .with("generator_lateness_p99_ms", q_ms(late, 0.99))
    .with("generator_lateness_max_ms", late.max() as f64 / 1e6)
    .with(
        "generator_timer_slack_ns",
        run.timer_slack_ns
            .map_or(serde_json::Value::Null, Into::into),
    )
    .with(
        "generator_nice",
        run.nice.map_or(serde_json::Value::Null, Into::into),
    )
    .with("redis_evalsha_calls", calls)
    .with("redis_evalsha_usec_per_call", mean(usec, calls))
    .with("redis_commands_per_lookup", per_command)
    .with("redis_cpu_us_per_lookup", per_lookup_us(redis1 - redis0))
    .with("client_cpu_us_per_lookup", per_lookup_us(own1 - own0))
    .with(
        "cores_busy",
        (redis1 - redis0 + own1 - own0) / span.max(1e-9),
    )
    .with(
        "redis_runqueue_wait_ms",
        redis_wait1.saturating_sub(redis_wait0) as f64 / 1e6,
    )
    .with(
        "client_runqueue_wait_ms",
        own_wait1.saturating_sub(own_wait0) as f64 / 1e6,
    )
    .with("run_ms", span * 1e3)
    .with("single_client_p50_ms", single.0)
    .with("single_client_p99_ms", single.1)
    .with("hot_single_p50_ms", hot_single.0)
    .with("hot_single_p99_ms", hot_single.1)
    .with("fred_get_single_p50_ms", fred_get.0)
    .with("rb_get_p50_ms", rb_p50)
    .with("load_avg_1m", load)
    .with("cms_records", 10_000)
    .with("grains", 1_000)
    .with("target_ms", if compact { 0.25 } else { 0.5 });
    let st = &single_thread.latency;
    lookup = lookup
        .with("current_thread_p50_ms", q_ms(st, 0.5))
        .with("current_thread_p99_ms", q_ms(st, 0.99))
        .with("current_thread_p999_ms", q_ms(st, 0.999))
        .with("current_thread_errors", single_thread.errors)
        .with(
            "current_thread_generator_lateness_p99_ms",
            q_ms(&single_thread.lateness, 0.99),
        );
    if let Some((p50, p99)) = raw {
        lookup = lookup
            .with("fred_evalsha_raw_single_p50_ms", p50)
            .with("fred_evalsha_raw_single_p99_ms", p99);
    }
    if let Some((f, lean)) = &bare {
        lookup = lookup
            .with("hot_evalsha_open_fred_p50_ms", q_ms(&f.latency, 0.5))
            .with("hot_evalsha_open_fred_p99_ms", q_ms(&f.latency, 0.99))
            .with("hot_evalsha_open_fred_errors", f.errors);
        if let Some(l) = lean {
            lookup = lookup
                .with("hot_evalsha_open_bare_p50_ms", q_ms(&l.latency, 0.5))
                .with("hot_evalsha_open_bare_p99_ms", q_ms(&l.latency, 0.99))
                .with("hot_evalsha_open_bare_errors", l.errors);
        }
    }
    if let Some((p50, p99, usec)) = replay {
        lookup = lookup
            .with("rb_evalsha_single_p50_ms", p50)
            .with("rb_evalsha_single_p99_ms", p99)
            .with("rb_evalsha_redis_usec_per_call", usec);
    }
    stop.cancel();
    let _ = client.quit().await;
    Ok((lookup, memory))
}

/// A bare pipelined connection for the open loop's floor: callers queue an encoded command
/// and wait for its reply; one task writes whatever has queued in one write and reads the
/// replies in order. No reconnects, no script reloading: a bench baseline, not a client (a
/// failed write ends it, and every later call counts as an error).
#[derive(Clone)]
struct BarePipe {
    tx: tokio::sync::mpsc::UnboundedSender<(
        std::sync::Arc<[u8]>,
        tokio::sync::oneshot::Sender<bool>,
    )>,
}

impl BarePipe {
    fn start(mut conn: kitbash_runtime::resp::Conn) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(
            std::sync::Arc<[u8]>,
            tokio::sync::oneshot::Sender<bool>,
        )>();
        tokio::spawn(async move {
            let mut out = Vec::new();
            let mut waiting = Vec::new();
            while let Some(first) = rx.recv().await {
                out.clear();
                out.extend_from_slice(&first.0);
                waiting.push(first.1);
                while let Ok((r, done)) = rx.try_recv() {
                    out.extend_from_slice(&r);
                    waiting.push(done);
                }
                if conn.send(&out).await.is_err() {
                    return;
                }
                for done in waiting.drain(..) {
                    let ok = conn.reply().await.is_ok();
                    let _ = done.send(ok);
                }
            }
        });
        Self { tx }
    }

    async fn call(&self, request: std::sync::Arc<[u8]>) -> bool {
        let (done, reply) = tokio::sync::oneshot::channel();
        if self.tx.send((request, done)).is_err() {
            return false;
        }
        reply.await.unwrap_or(false)
    }
}
