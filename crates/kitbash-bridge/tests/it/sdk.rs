//! The official Centrifugo SDKs against the bridge: the JavaScript one (`centrifuge` on npm,
//! with `ws`) and the Python one (`centrifuge-python`), each driven by a script in
//! `tests/sdk/` that prints every event as a JSON line.
//!
//! Each run: two bridge instances behind a TCP proxy the test controls; the SDK subscribes to a
//! physics channel and a document channel while the fleet keeps publishing; the test cuts the
//! SDK's socket (it reconnects to the same instance), points the proxy at the other instance
//! and cuts again, then restarts that instance — and the SDK must end with every offset of both
//! channels exactly once, in order, having recovered by itself.

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kitbash_schema::bridge::offset_of;
use kitbash_testkit::RedisServer;
use kitbash_testkit::support::free_local_addr;
use serde_json::Value as Json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::*;

/// A TCP proxy whose upstream can be switched and whose connections can be cut.
struct Proxy {
    addr: SocketAddr,
    upstream: Arc<Mutex<SocketAddr>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let upstream = Arc::new(Mutex::new(upstream));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = tokio::spawn({
            let (upstream, conns) = (upstream.clone(), conns.clone());
            async move {
                while let Ok((mut down, _)) = listener.accept().await {
                    let to = *upstream.lock().unwrap_or_else(PoisonError::into_inner);
                    let h = tokio::spawn(async move {
                        if let Ok(mut up) = TcpStream::connect(to).await {
                            let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                        }
                    });
                    conns.lock().unwrap_or_else(PoisonError::into_inner).push(h);
                }
            }
        });
        Proxy {
            addr,
            upstream,
            conns,
            accept,
        }
    }

    /// Drops every connection through the proxy (both sockets close).
    fn cut(&self) {
        for h in self
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            h.abort();
        }
    }

    fn point(&self, to: SocketAddr) {
        *self.upstream.lock().unwrap_or_else(PoisonError::into_inner) = to;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// The SDK process and its events.
struct Sdk {
    child: std::process::Child,
    events: mpsc::UnboundedReceiver<Json>,
    seen: Vec<Json>,
}

impl Sdk {
    fn spawn(mut cmd: Command) -> Sdk {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the SDK script");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, events) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                match serde_json::from_str::<Json>(&line) {
                    Ok(v) => {
                        if tx.send(v).is_err() {
                            break;
                        }
                    }
                    Err(_) => eprintln!("sdk: {line}"),
                }
            }
        });
        Sdk {
            child,
            events,
            seen: Vec::new(),
        }
    }

    /// Reads events until `done` holds over everything seen (60 s at most).
    async fn until(&mut self, what: &str, done: impl Fn(&[Json]) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !done(&self.seen) {
            let ev = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "the SDK did not reach {what:?}; its events: {:?}",
                        self.tail()
                    )
                });
            match ev {
                Some(e) => self.seen.push(e),
                None => panic!(
                    "the SDK exited before {what:?}; its events: {:?}",
                    self.tail()
                ),
            }
        }
    }

    fn tail(&self) -> Vec<&Json> {
        self.seen.iter().rev().take(30).rev().collect()
    }

    fn offsets(&self, channel: &str) -> Vec<u64> {
        self.seen
            .iter()
            .filter(|e| e["ev"] == "pub" && e["channel"] == channel)
            .map(|e| e["offset"].as_u64().unwrap_or(0))
            .collect()
    }

    fn finish(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

fn subscribed(seen: &[Json], channel: &str) -> usize {
    seen.iter()
        .filter(|e| e["ev"] == "subscribed" && e["channel"] == channel)
        .count()
}

async fn every_offset_exactly_once(script: impl Fn(&str) -> Command) {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let keys = ns_keys(&ns);
    let c = client(&server.url()).await;
    let (a_addr, b_addr) = (free_local_addr(), free_local_addr());
    let a = Bridge::start(config(&server.url(), &ns, a_addr)).await;
    let b = Bridge::start(config(&server.url(), &ns, b_addr)).await;
    let proxy = Proxy::start(a_addr).await;
    let (physics, doc) = ("physics:SPY", "quantum:status");
    let mut sdk = Sdk::spawn(script(&format!("ws://{}/connection/websocket", proxy.addr)));
    sdk.until("both subscribed", |s| {
        subscribed(s, physics) > 0 && subscribed(s, doc) > 0
    })
    .await;

    let n = 240u64;
    let (mut want_physics, mut want_doc) = (Vec::new(), Vec::new());
    let mut b = Some(b);
    for i in 0..n {
        want_physics.push(add_physics(&c, &keys, "SPY", i as f64).await);
        add_physics(&c, &keys, "QQQ", i as f64).await;
        want_doc.push(add_change(&c, &keys, doc, i + 1, &format!("{{\"i\":{i}}}")).await);
        if i == n / 4 {
            proxy.cut(); // reconnects to the same instance
        } else if i == n / 2 {
            proxy.point(b_addr);
            proxy.cut(); // reconnects to the other instance
        } else if i == 3 * n / 4 {
            // The instance it is on restarts: the SDK is closed with 3001 and comes back to the
            // new one on the same address.
            if let Some(old) = b.take() {
                old.stop().await;
            }
            b = Some(Bridge::start(config(&server.url(), &ns, b_addr)).await);
        }
        tokio::time::sleep(Duration::from_millis(8)).await;
    }
    let (last_p, last_d) = (
        offset_of(want_physics.last().expect("ids")).unwrap_or(0),
        offset_of(want_doc.last().expect("ids")).unwrap_or(0),
    );
    sdk.until("the last publications", |s| {
        let has = |ch: &str, o: u64| {
            s.iter()
                .any(|e| e["ev"] == "pub" && e["channel"] == ch && e["offset"].as_u64() == Some(o))
        };
        has(physics, last_p) && has(doc, last_d)
    })
    .await;
    let expect = |ids: &[String]| {
        ids.iter()
            .filter_map(|i| offset_of(i))
            .collect::<Vec<u64>>()
    };
    assert_eq!(
        sdk.offsets(physics),
        expect(&want_physics),
        "every physics offset exactly once, in order"
    );
    assert_eq!(
        sdk.offsets(doc),
        expect(&want_doc),
        "every document offset exactly once, in order"
    );
    let recovered = sdk
        .seen
        .iter()
        .filter(|e| e["ev"] == "subscribed" && e["wasRecovering"] == true && e["recovered"] == true)
        .count();
    assert!(
        recovered >= 6,
        "the SDK recovered after each of the 3 breaks on both channels ({recovered} recoveries)"
    );
    let unrecovered: Vec<&Json> = sdk
        .seen
        .iter()
        .filter(|e| e["ev"] == "subscribed" && e["wasRecovering"] == true && e["recovered"] != true)
        .collect();
    assert!(unrecovered.is_empty(), "a recovery failed: {unrecovered:?}");
    sdk.finish();
    drop(proxy);
    a.stop().await;
    if let Some(b) = b {
        b.stop().await;
    }
}

fn script(name: &str) -> String {
    format!("{}/tests/sdk/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn centrifuge_js_gets_every_offset_once_across_cuts_instances_and_a_restart() {
    every_offset_exactly_once(|url| {
        let mut c = kitbash_testkit::node::node(&["centrifuge", "ws"]);
        c.args([
            script("centrifuge-js.js").as_str(),
            url,
            "physics:SPY",
            "quantum:status",
        ]);
        c
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn centrifuge_python_gets_every_offset_once_across_cuts_instances_and_a_restart() {
    every_offset_exactly_once(|url| {
        let mut c = kitbash_testkit::python::python3(&["centrifuge"]);
        c.args([
            script("centrifuge-py.py").as_str(),
            url,
            "physics:SPY",
            "quantum:status",
        ]);
        c
    })
    .await;
}
