//! The dashboard in a real browser (Debian's Chromium, headless, driven by playwright-core
//! through `tests/sdk/dashboard.js`) against a real fleet: Redis, feynman with a tick feed,
//! entity with entity updates, decay and ghost with query hits, the archive, a bridge, and a
//! second bridge process the test kills. Screenshots at 1280×800 and 390×844 go to
//! `target/dashboard/`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::time::Duration;

use kitbash_client::Producer;
use kitbash_schema::messages::Tick;
use kitbash_testkit::RedisServer;
use kitbash_testkit::support::{daemon_command, free_local_addr, signal};
use serde_json::Value as Json;

use super::*;

struct Page {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Page {
    fn start(url: &str, outdir: &std::path::Path) -> Page {
        let mut child = kitbash_testkit::node::node(&["playwright-core"])
            .args([
                format!("{}/tests/sdk/dashboard.js", env!("CARGO_MANIFEST_DIR")).as_str(),
                url,
                &outdir.display().to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node dashboard.js");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Page {
            child,
            stdin,
            stdout,
        }
    }

    /// One command; its answer's `value` (panics on `ok: false`).
    fn cmd(&mut self, line: &str) -> Json {
        tokio::task::block_in_place(|| {
            writeln!(self.stdin, "{line}").expect("write");
            self.stdin.flush().expect("flush");
            let mut answer = String::new();
            self.stdout.read_line(&mut answer).expect("read");
            let v: Json = serde_json::from_str(&answer)
                .unwrap_or_else(|_| panic!("browser driver said {answer:?}"));
            assert_eq!(v["ok"], true, "{line}: {v}");
            v["value"].clone()
        })
    }

    fn wait(&mut self, expr: &str) {
        self.cmd(&format!("wait {expr}"));
    }

    fn eval(&mut self, expr: &str) -> Json {
        self.cmd(&format!("eval {expr}"))
    }

    fn no_errors(&mut self, phase: &str) {
        let e = self.cmd("errors");
        assert_eq!(
            e["errors"],
            Json::Array(vec![]),
            "console errors {phase}: {e}"
        );
        assert_eq!(
            e["failed"],
            Json::Array(vec![]),
            "failed requests {phase}: {e}"
        );
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.wait();
    }
}

/// The fleet's configuration (one for every daemon in the test): a decay cycle every 1.5 s so
/// resonance visibly decays, files of the archive closed every 500 ms.
fn fleet_config(url: &str, ns: &str, archive: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.redis.url = url.to_owned();
    c.redis.namespace = ns.to_owned();
    c.admin.listen = String::new();
    c.fleet.heartbeat_ms = 200;
    c.consumer.block_ms = 50;
    c.decay.period_ms = 1_500;
    c.decay.tick_ms = 100;
    // The 20 query hits below reach this bound: the page marks the stream.
    c.decay.queries_stream_max = 10;
    c.ghost.poll_ms = 100;
    c.archive.dir = archive.display().to_string();
    c.archive.streams = vec!["physics".into()];
    c.archive.roll_ms = 500;
    c
}

/// A daemon of the fleet run in-process until `stop`.
struct InProcess {
    stop: kitbash_runtime::CancellationToken,
    task: tokio::task::JoinHandle<Result<(), kitbash_runtime::RuntimeError>>,
}

impl InProcess {
    fn start<F, Fut>(config: Config, run: F) -> InProcess
    where
        F: FnOnce(Config, kitbash_runtime::Signals) -> Fut,
        Fut: std::future::Future<Output = Result<(), kitbash_runtime::RuntimeError>>
            + Send
            + 'static,
    {
        let (signals, _) = kitbash_runtime::shutdown::manual();
        let stop = signals.shutdown.clone();
        InProcess {
            stop,
            task: tokio::spawn(run(config, signals)),
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.expect("join").expect("daemon");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_fleet_live_in_a_real_browser() {
    // Missing Node packages fail the test here, before it spawns a bridge binary that a panic
    // further down would leave running.
    drop(kitbash_testkit::node::node(&["playwright-core"]));
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let keys = ns_keys(&ns);
    let c = client(&server.url()).await;
    let addr = free_local_addr();
    let mut bcfg = config(&server.url(), &ns, addr);
    bcfg.decay.period_ms = 1_500;
    bcfg.decay.queries_stream_max = 10;
    let bridge = Bridge::start(bcfg).await;
    let archive_dir = tempfile::tempdir().expect("tempdir");
    let fleet = fleet_config(&server.url(), &ns, archive_dir.path());
    // The reflex path's data: the seed's hats and the sample grains.
    let reflex = kitbash_client::reflex::Reflex::new(c.clone(), keys.clone(), fleet.decay.factor);
    reflex.hat_init().await.expect("hats");
    let grains = kitbash_client::reflex::parse_grains(
        include_str!("../../../../config/demo/grains.jsonl"),
        fleet.ghost.dim,
    )
    .expect("grains");
    reflex.grains_import(&grains).await.expect("grains");
    let daemons = vec![
        InProcess::start(fleet.clone(), kitbash_feynman::run),
        InProcess::start(fleet.clone(), kitbash_entity::run),
        InProcess::start(fleet.clone(), kitbash_decay::run),
        InProcess::start(fleet.clone(), kitbash_ghost::run),
        InProcess::start(fleet.clone(), kitbash_archive::run),
    ];
    // A second bridge as its own process: the one the test kills.
    let mut victim = daemon_command(env!("CARGO_BIN_EXE_kitbash-bridge"), &server.url(), &ns)
        .env("KITBASH__BRIDGE__LISTEN", free_local_addr().to_string())
        .spawn()
        .expect("spawn");
    let feed_stop = kitbash_runtime::CancellationToken::new();
    let feed = {
        let producer = Producer::new(
            c.clone(),
            keys.clone(),
            Config::default().feynman.partitions,
        );
        let stop = feed_stop.clone();
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.is_cancelled() {
                for (sym, base) in [("SPY", 500.0), ("QQQ", 400.0), ("NVDA", 130.0)] {
                    let price = base + ((i as f64) * 0.37).sin() * 2.0;
                    let t = Tick {
                        symbol: sym.into(),
                        price,
                        size: 100.0 + (i % 7) as f64,
                        trades: 1 + i % 5,
                        ts: 1_766_318_400.0 + i as f64,
                    };
                    let _ = producer.publish_tick(&t).await;
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        })
    };
    let outdir =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard");
    std::fs::create_dir_all(&outdir).expect("outdir");
    let mut page = Page::start(&format!("http://{addr}/"), &outdir);
    page.cmd("open");
    page.wait("kitbash.conn === 'connected'");
    page.wait("kitbash.symbols.size === 3 && kitbash.fleet && kitbash.fleet.daemons.length >= 3");
    page.wait("document.querySelectorAll('#symbols tr[data-symbol]').length === 3");
    page.wait("document.querySelectorAll('#daemons tr[data-kind=feynman]').length === 1");
    for kind in ["entity", "decay", "ghost", "archive"] {
        page.wait(&format!(
            "document.querySelector('#daemons tr[data-kind={kind}]')?.dataset.state === 'ready'"
        ));
    }

    // The reflex path: a query hit until it crosses 0.8 shows as hot with its ghost, then
    // decays cycle by cycle; the page's resonance is Redis's at the cycle the page shows.
    let producer = Producer::new(c.clone(), keys.clone(), fleet.feynman.partitions);
    let text = "what is DNA?";
    // 20 hits: 1 − 0.75²⁰ ≈ 0.997, above 0.8 for three decay cycles (×0.9 each).
    for _ in 0..20 {
        reflex
            .record_hit(&producer, text, &[], None)
            .await
            .expect("hit");
    }
    let h = kitbash_client::reflex::query_hash(text);
    page.wait(&format!(
        "document.querySelector('#hot tr[data-hot=\"{h}\"]')?.textContent.includes('above 0.8')"
    ));
    let ghost: Option<String> = c.get(keys.ghost(&h)).await.expect("get");
    let ghost = ghost.expect("the ghost of the hot query");
    page.wait(&format!(
        "kitbash.fleet.reflex.hot.find((q) => q.id === '{h}')?.ghost.join(',') === '{ghost}'"
    ));
    page.wait(&format!(
        "[...document.querySelectorAll('#hot tr[data-hot=\"{h}\"] .badge')].map((b) => b.textContent).slice(1).join(',') === '{ghost}'"
    ));
    // Decays: the row goes below the threshold and its history holds falling values.
    page.wait(&format!(
        "document.querySelector('#hot tr[data-hot=\"{h}\"]')?.textContent.includes('below 0.8')"
    ));
    page.wait(&format!(
        "(kitbash.resonance.get('{h}') || []).some((p) => p.v > 0.8) && kitbash.resonance.get('{h}').at(-1).v < 0.8"
    ));
    let shown = page.eval(&format!(
        "JSON.stringify([kitbash.fleet.reflex.cycle, kitbash.fleet.reflex.hot.find((q) => q.id === '{h}').resonance])"
    ));
    let shown: (u64, f64) = serde_json::from_str(shown.as_str().expect("string")).expect("json");
    let score: Option<f64> = c.zscore(keys.resonance_index(), &h).await.expect("zscore");
    let want =
        kitbash_schema::reflex::resonance_at(score.expect("indexed"), shown.0, fleet.decay.factor);
    assert!(
        (shown.1 - want).abs() < 1e-9,
        "page {shown:?} vs resonance index {want}"
    );

    // A stream at its bound is marked.
    page.wait("document.querySelector('#streams tr[data-stream=queries] [data-length]')?.textContent.includes('at bound')");
    page.wait("!document.querySelector('#streams tr[data-stream=crossings] [data-length]')?.textContent.includes('at bound')");

    // The archive's progress: files of physics committed, rows growing.
    page.wait(
        "Number(document.querySelector('#archive tr[data-archive=physics]')?.dataset.rows) > 0",
    );

    // A hat switch shows up.
    let _: () = c
        .set(keys.hat_current(), "analytical", None, None, false)
        .await
        .expect("set");
    let _: i64 = c.incr(keys.reflex_version()).await.expect("incr");
    page.wait("kitbash.hat && kitbash.hat.hat === 'analytical'");
    let _: () = c
        .set(keys.hat_current(), "creative", None, None, false)
        .await
        .expect("set");
    let _: i64 = c.incr(keys.reflex_version()).await.expect("incr");
    page.wait("kitbash.hatLog.some((h) => h.from === 'analytical' && h.to === 'creative')");
    page.wait("document.getElementById('hatlog').textContent.includes('analytical → creative')");

    // A document change shows with its version and diff.
    add_change(&c, &keys, "quantum:status", 1, r#"{"phase":"run","n":1}"#).await;
    add_change(&c, &keys, "quantum:status", 2, r#"{"phase":"stop","n":1}"#).await;
    page.wait(
        "document.querySelector('#docs tr[data-doc=\"quantum:status\"]')?.dataset.version === '2'",
    );
    page.wait("document.getElementById('diff').textContent.includes('phase')");
    // And one through the entity daemon.
    let update = kitbash_schema::messages::EntityUpdate::merge(
        kitbash_schema::messages::EntityTarget::Entity {
            name: "claude".into(),
            part: "state".into(),
        },
        json!({"attention": {"focus": "SPY"}}),
    );
    producer
        .patch_entity(&update, fleet.entity.partitions)
        .await
        .expect("patch");
    page.wait(
        "document.querySelector('#docs tr[data-doc=\"entity:claude:state\"]')?.dataset.version === '1'",
    );

    page.cmd("screenshot dashboard-1280x800.png 1280 800");
    page.cmd("screenshot dashboard-390x844.png 390 844");
    page.cmd("screenshot dashboard-full-390x844.png 390 844 full");
    page.cmd("screenshot dashboard-full-1280x800.png 1280 800 full");
    page.cmd("screenshot dashboard-1280x800.png 1280 800");
    page.no_errors("while the fleet ran");

    // The values shown are feynman's: pause the feed, let the page catch up, compare with
    // physics:state:SPY.
    feed_stop.cancel();
    feed.await.expect("feed");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let state: Option<String> = c.get(keys.physics_state("SPY")).await.expect("get");
    let state: Json = serde_json::from_str(&state.expect("physics:state:SPY")).expect("json");
    let want_alpha = state["alpha_coefficient"].as_f64().expect("alpha");
    page.wait(&format!("Math.abs(kitbash.symbols.get('SPY').latest.vector.alpha_coefficient - {want_alpha}) < 1e-12"));
    let shown = page.eval("JSON.stringify(kitbash.symbols.get('SPY').latest.vector)");
    let shown: Json = serde_json::from_str(shown.as_str().expect("string")).expect("json");
    // Field by field as numbers (JavaScript writes 10.0 as 10).
    for (k, v) in state.as_object().expect("object") {
        match v.as_f64() {
            Some(x) => assert_eq!(
                shown[k].as_f64(),
                Some(x),
                "{k}: page {shown} vs physics:state:SPY {state}"
            ),
            None => assert_eq!(&shown[k], v, "{k}"),
        }
    }
    let row_alpha =
        page.eval("document.querySelector('#symbols tr[data-symbol=SPY]').dataset.alpha");
    assert_eq!(
        row_alpha.as_str().and_then(|s| s.parse::<f64>().ok()),
        Some(want_alpha)
    );
    page.wait("document.getElementById('regime').textContent.length > 0");

    // A daemon that dies turns its row red (not alive) within its heartbeat timeout.
    page.wait("[...document.querySelectorAll('#daemons tr[data-kind=bridge]')].length === 2");
    signal(&victim, "-9");
    let _ = victim.wait();
    page.wait("[...document.querySelectorAll('#daemons tr[data-kind=bridge]')].some((r) => r.dataset.state === 'not alive' && r.classList.contains('bad'))");

    // The bridge the page is on restarts: the page reconnects and goes on.
    bridge.stop().await;
    page.wait("kitbash.conn !== 'connected'");
    let bridge = Bridge::start(config(&server.url(), &ns, addr)).await;
    page.wait("kitbash.conn === 'connected'");
    // While the bridge was down the browser logged its refused reconnects, and only those.
    let e = page.cmd("errors");
    for err in ["errors", "failed"]
        .iter()
        .flat_map(|k| e[*k].as_array().cloned().unwrap_or_default())
    {
        assert!(
            err.as_str().is_some_and(
                |m| m.contains("/connection/websocket") && m.contains("ERR_CONNECTION_REFUSED")
            ),
            "an error during the restart other than a refused reconnect: {err}"
        );
    }
    let before = page.eval("kitbash.docs.get('quantum:status').version");
    assert_eq!(before, 2);
    add_change(&c, &keys, "quantum:status", 3, r#"{"phase":"run","n":2}"#).await;
    page.wait("kitbash.docs.get('quantum:status').version === 3");

    // 1,000 symbols: the table says so and draws only the rows in view.
    let pipe = c.pipeline();
    for i in 0..1000 {
        let env =
            kitbash_schema::Envelope::msgpack(&record(&format!("S{i:04}"), 100.0 + f64::from(i)))
                .expect("envelope");
        let _: () = pipe
            .xadd(
                keys.stream(StreamName::Physics),
                false,
                None,
                "*",
                env.to_fields(),
            )
            .await
            .expect("xadd");
    }
    let _: Vec<String> = pipe.all().await.expect("pipeline");
    page.wait("kitbash.symbols.size >= 1003");
    page.wait("document.getElementById('symcount').textContent.startsWith('1003 ')");
    let drawn = page.eval("document.querySelectorAll('#symbols tr[data-symbol]').length");
    let drawn = drawn.as_u64().expect("count");
    assert!(
        (1..=60).contains(&drawn),
        "{drawn} of 1003 rows drawn: only those in view should be"
    );
    page.cmd("screenshot dashboard-1000-symbols-1280x800.png 1280 800");
    page.no_errors("with 1,000 symbols");
    drop(page);
    for d in daemons {
        d.stop().await;
    }
    bridge.stop().await;
}
