//! The dashboard in a real browser (Debian's Chromium, headless, driven by playwright-core
//! through `tests/sdk/dashboard.js`) against a real fleet: Redis, feynman with a tick feed, a
//! bridge, and a second bridge process the test kills. Screenshots at 1280×800 and 390×844 go
//! to `target/dashboard/`.

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

fn feynman_config(url: &str, ns: &str) -> Config {
    let mut c = Config::default();
    c.redis.url = url.to_owned();
    c.redis.namespace = ns.to_owned();
    c.admin.listen = String::new();
    c.fleet.heartbeat_ms = 200;
    c.consumer.block_ms = 50;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_fleet_live_in_a_real_browser() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let keys = ns_keys(&ns);
    let c = client(&server.url()).await;
    let addr = free_local_addr();
    let bridge = Bridge::start(config(&server.url(), &ns, addr)).await;
    let (fsig, _) = kitbash_runtime::shutdown::manual();
    let fstop = fsig.shutdown.clone();
    let feynman = tokio::spawn(kitbash_feynman::run(
        feynman_config(&server.url(), &ns),
        fsig,
    ));
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

    page.cmd("screenshot dashboard-1280x800.png 1280 800");
    page.cmd("screenshot dashboard-390x844.png 390 844");
    page.cmd("screenshot dashboard-1280x800.png 1280 800");
    page.no_errors("while the fleet ran");

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
    let before = page.eval("kitbash.docs.get('quantum:status').version");
    assert_eq!(before, 2);
    add_change(&c, &keys, "quantum:status", 3, r#"{"phase":"run","n":2}"#).await;
    page.wait("kitbash.docs.get('quantum:status').version === 3");
    drop(page);
    fstop.cancel();
    feynman.await.expect("join").expect("feynman");
    bridge.stop().await;
}
