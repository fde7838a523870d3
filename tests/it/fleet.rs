//! `kitbash feed` → two `kitbash-feynman` processes → `kitbash status`, then SIGTERM.

use std::process::Stdio;

use kitbash_e2e::*;
use kitbash_testkit::RedisServer;

fn status(url: &str, ns: &str) -> serde_json::Value {
    let out = kitbash(&["status", "--json"], url, ns);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

#[test]
fn feed_through_two_feynman_processes_is_visible_in_status() {
    let server = RedisServer::start().expect("redis");
    let url = server.url();
    let ns = kitbash_testkit::namespace();
    let spawn = || {
        command("kitbash-feynman", &url, &ns)
            .env("KITBASH__ADMIN__LISTEN", "127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn feynman")
    };
    let mut a = spawn();
    let mut b = spawn();
    let out = kitbash(
        &[
            "feed",
            "ticks",
            "--count",
            "5000",
            "--symbols",
            "SPY,QQQ,AAPL,MSFT",
        ],
        &url,
        &ns,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("5000 ticks"));

    eventually("both feynman instances alive and ready", || {
        let s = status(&url, &ns);
        s["daemons"].as_array().is_some_and(|d| {
            d.iter()
                .filter(|x| x["kind"] == "feynman" && x["alive"] == true && x["ready"] == true)
                .count()
                == 2
        })
    });
    eventually("every symbol has a physics state", || {
        ["SPY", "QQQ", "AAPL", "MSFT"].iter().all(|s| {
            server
                .cmd(&["EXISTS", &format!("{ns}:physics:state:{s}")])
                .map(|r| r.trim() == "1")
                .unwrap_or(false)
        })
    });
    eventually("feynman's partitions are owned and caught up", || {
        let s = status(&url, &ns);
        s["streams"].as_array().is_some_and(|st| {
            st.iter()
                .filter(|x| {
                    x["stream"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("ticks:"))
                        && x["length"].as_u64() > Some(0)
                })
                .all(|x| {
                    let p = &x["partition"];
                    p["caught_up"] == true && p["lag"] == 0 && p["owner"].is_string()
                })
        })
    });
    let s = status(&url, &ns);
    let ticks: u64 = s["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .filter(|x| {
            x["stream"]
                .as_str()
                .is_some_and(|n| n.starts_with("ticks:"))
        })
        .map(|x| x["length"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(ticks, 5000);
    let physics = s["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .find(|x| x["stream"] == "physics")
        .expect("physics");
    assert!(physics["length"].as_u64().unwrap_or(0) > 0);

    signal(&a, "-TERM");
    signal(&b, "-TERM");
    assert_eq!(wait_exit(&mut a).code(), Some(0));
    assert_eq!(wait_exit(&mut b).code(), Some(0));
    let s = status(&url, &ns);
    assert_eq!(
        s["daemons"].as_array().map(Vec::len),
        Some(0),
        "stopped instances leave the fleet register"
    );
}
