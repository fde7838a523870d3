//! The open-loop load generator every latency benchmark shares: arrivals on a schedule
//! (Poisson or even), issued on time by an OS thread, each operation timed from its
//! *scheduled* instant (so a late generator or a slow system is charged to the figure — no
//! coordinated omission); plus a closed loop and the histogram helpers.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::rng::Rng;

/// The 1-minute load average: these figures are only comparable on an unloaded machine.
pub(crate) fn load_avg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(-1.0)
}

/// Quantile `q` of a histogram of nanoseconds, in ms.
pub(crate) fn q_ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1e6
}

/// Records a duration in ns (at least 1).
pub(crate) fn record(h: &mut Histogram<u64>, d: Duration) {
    let _ = h.record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1));
}

// ---- the open-loop generator ------------------------------------------------------------------

/// Offsets of `n` Poisson arrivals at `rate` per second (exponential gaps, fixed seed).
pub(crate) fn poisson_schedule(rate: f64, n: usize, seed: u64) -> Vec<Duration> {
    let mut rng = Rng::new(seed);
    let mut t = 0.0;
    (0..n)
        .map(|_| {
            t += -rng.unit().ln() / rate;
            Duration::from_secs_f64(t)
        })
        .collect()
}

/// Offsets of `n` arrivals evenly spaced at `rate` per second (a steady producer).
pub(crate) fn even_schedule(rate: f64, n: usize) -> Vec<Duration> {
    (0..n)
        .map(|k| Duration::from_secs_f64(k as f64 / rate))
        .collect()
}

/// What an open-loop run measured.
pub(crate) struct OpenLoop {
    /// Completion − scheduled instant, ns.
    pub(crate) latency: Histogram<u64>,
    /// Actual issue − scheduled instant (the generator's own lateness), ns.
    pub(crate) lateness: Histogram<u64>,
    /// Operations that failed.
    pub(crate) errors: u64,
    /// From the first scheduled instant to the last issue.
    pub(crate) issue_span: Duration,
    /// The generator thread's timer slack when known (1 ns when it could be set).
    pub(crate) timer_slack_ns: Option<u64>,
    /// The generator thread's nice value when it could be raised.
    pub(crate) nice: Option<i32>,
}

/// Runs `spawn` with the calling thread's timer slack at 1 ns, so the thread it starts
/// inherits it (`prctl(PR_SET_TIMERSLACK)` without `unsafe`: `/proc/self/timerslack_ns` is
/// the main thread's, writable by itself). Elsewhere than on the main thread it only runs
/// `spawn` (the slack stays the default 50 µs). Returns the slack the new thread has, if known.
pub(crate) fn with_fine_timer_slack<T>(spawn: impl FnOnce() -> T) -> (T, Option<u64>) {
    const SLACK: &str = "/proc/self/timerslack_ns";
    let old = (std::thread::current().name() == Some("main"))
        .then(|| std::fs::read_to_string(SLACK).ok())
        .flatten();
    let set = old.is_some() && std::fs::write(SLACK, "1").is_ok();
    let out = spawn();
    let slack = match &old {
        Some(old) if set => {
            let _ = std::fs::write(SLACK, old.trim());
            Some(1)
        }
        Some(old) => old.trim().parse().ok(),
        None => None,
    };
    (out, slack)
}

/// Raises the calling thread's priority to nice −10 (`setpriority(PRIO_PROCESS, tid)`, per
/// thread on Linux; needs `CAP_SYS_NICE`), so the arrival generator keeps its schedule while
/// Redis and the runtime keep the cores busy. It only wakes, spawns and sleeps again: a few
/// µs of CPU per arrival. Returns the nice value set, if it could be.
pub(crate) fn raise_priority() -> Option<i32> {
    const NICE: i32 = -10;
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    let tid: i32 = link.file_name()?.to_str()?.parse().ok()?;
    let pid = rustix::process::Pid::from_raw(tid)?;
    rustix::process::setpriority_process(Some(pid), NICE)
        .ok()
        .map(|()| NICE)
}

/// Issues `op(k, scheduled)` at each instant of `schedule` (offsets from a start a few ms
/// ahead) and times each from its scheduled instant. A dedicated OS thread sleeps until each
/// instant and passes `(k, scheduled)` through a channel to a dispatcher task on the tokio
/// runtime of `handle`, which spawns the operation there. The thread itself allocates and
/// frees nothing per arrival: spawning from it directly put every task's allocation in its
/// malloc arena, to be freed by the runtime's threads under that arena's lock. A generator
/// or system that falls behind issues late, and the lateness counts in `latency`.
pub(crate) async fn open_loop<F, Fut>(
    handle: tokio::runtime::Handle,
    schedule: Vec<Duration>,
    op: F,
) -> anyhow::Result<OpenLoop>
where
    F: Fn(usize, Instant) -> Fut + Send + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let latency = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let errors = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(Finished::default());
    let total = schedule.len();
    let (arrivals, mut arrived) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    {
        let (lat, err, fin) = (latency.clone(), errors.clone(), finished.clone());
        handle.spawn(async move {
            while let Some((k, due)) = arrived.recv().await {
                let fut = op(k, due);
                let (lat, err) = (lat.clone(), err.clone());
                // No JoinHandle is kept: a task's memory is freed when it ends, as in a
                // service, instead of piling up (and faulting in fresh pages) for the run.
                let done = Done(fin.clone(), total);
                tokio::spawn(async move {
                    let _done = done;
                    let ok = fut.await;
                    let took = due.elapsed();
                    if !ok {
                        err.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Ok(mut h) = lat.lock() {
                        record(&mut h, took);
                    }
                });
            }
        });
    }
    let mut lateness = Histogram::<u64>::new(3)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let fin = finished.clone();
    let (spawned, timer_slack_ns) = with_fine_timer_slack(move || {
        std::thread::Builder::new()
            .name("reflex-arrivals".into())
            .spawn(move || {
                let nice = raise_priority();
                let start = Instant::now() + Duration::from_millis(5);
                for (k, offset) in schedule.iter().enumerate() {
                    let due = start + *offset;
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    record(&mut lateness, Instant::now().saturating_duration_since(due));
                    if arrivals.send((k, due)).is_err() {
                        // The runtime is gone: what was not issued will not end either.
                        drop(Done(fin.clone(), total));
                        fin.count.fetch_add(total - k - 1, Ordering::AcqRel);
                        fin.notify.notify_one();
                        break;
                    }
                }
                let span = start.elapsed();
                let _ = tx.send((lateness, span, nice));
            })
    });
    spawned?;
    let (lateness, issue_span, nice) = rx
        .await
        .map_err(|_| anyhow::anyhow!("the arrival thread stopped early"))?;
    finished.wait(total).await;
    let latency = latency
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    Ok(OpenLoop {
        latency,
        lateness,
        errors: errors.load(Ordering::Relaxed),
        issue_span,
        timer_slack_ns,
        nice,
    })
}

/// How many operations of an open loop have ended.
#[derive(Default)]
pub(crate) struct Finished {
    count: std::sync::atomic::AtomicUsize,
    notify: tokio::sync::Notify,
}

impl Finished {
    /// Waits until `total` have ended.
    pub(crate) async fn wait(&self, total: usize) {
        loop {
            let notified = self.notify.notified();
            if self.count.load(Ordering::Acquire) >= total {
                return;
            }
            notified.await;
        }
    }
}

/// Counts one operation as ended when dropped (also when its task panics).
pub(crate) struct Done(Arc<Finished>, usize);

impl Drop for Done {
    fn drop(&mut self) {
        if self.0.count.fetch_add(1, Ordering::AcqRel) + 1 >= self.1 {
            self.0.notify.notify_one();
        }
    }
}

/// A current-thread tokio runtime on a thread of its own, stopped when dropped.
pub(crate) struct SideRuntime {
    pub(crate) handle: tokio::runtime::Handle,
    pub(crate) stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl SideRuntime {
    pub(crate) fn start() -> anyhow::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("reflex-client".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let _ = tx.send(Ok(rt.handle().clone()));
                rt.block_on(async move {
                    let _ = stopped.await;
                });
            })?;
        Ok(Self {
            handle: rx.recv()??,
            stop: Some(stop),
        })
    }
}

impl Drop for SideRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Closed loop: `n` calls of `op`, one at a time; (p50, p99) in ms.
pub(crate) async fn closed_loop<F, Fut>(n: usize, mut op: F) -> anyhow::Result<(f64, f64)>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut h = Histogram::<u64>::new(3)?;
    for k in 0..n {
        let t0 = Instant::now();
        op(k).await?;
        record(&mut h, t0.elapsed());
    }
    Ok((q_ms(&h, 0.5), q_ms(&h, 0.99)))
}
