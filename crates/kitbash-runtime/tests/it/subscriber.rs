//! `Subscriber`: messages on its channels and patterns, a gap after a reconnect and after a lag
//! (counted in the metrics), its connection closed when dropped.

use std::time::Duration;

use fred::prelude::*;
use kitbash_runtime::Redis;
use kitbash_runtime::metrics::Metrics;
use kitbash_runtime::subscriber::{Gap, GapReason, Notice, Subscriber};
use kitbash_testkit::RedisServer;

use crate::support::*;

const WAIT: Duration = Duration::from_secs(30);

async fn next(sub: &mut Subscriber) -> Notice {
    tokio::time::timeout(WAIT, sub.recv())
        .await
        .expect("a notice within the deadline")
        .expect("subscriber still open")
}

async fn publish(r: &Redis, channel: &str, payload: &str) {
    let _: i64 = r.client.publish(channel, payload).await.expect("publish");
}

fn message(channel: &str, payload: &str) -> Notice {
    Notice::Message {
        channel: channel.to_owned(),
        payload: bytes::Bytes::copy_from_slice(payload.as_bytes()),
    }
}

fn pubsub_clients(server: &RedisServer) -> usize {
    server
        .cmd(&["CLIENT", "LIST", "TYPE", "pubsub"])
        .expect("client list")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receives_messages_published_right_after_open_on_channels_and_patterns() {
    let server = RedisServer::start().expect("redis");
    let keys = keys();
    let r = connect(&server.url()).await;
    let ch = keys.channel_state_update();
    let pattern = format!("{}*", keys.channel_trade_signals());
    let metrics = Metrics::new();
    let mut sub = Subscriber::open(
        &redis_config(&server.url()),
        &metrics,
        "t",
        std::slice::from_ref(&ch),
        std::slice::from_ref(&pattern),
    )
    .await
    .expect("open");
    assert!(sub.is_subscribed());
    // No wait: `open` returned after Redis confirmed the subscriptions.
    publish(&r, &ch, "one").await;
    publish(&r, &keys.channel_trade_signals(), "two").await;
    publish(&r, &keys.channel_grain_updates(), "not ours").await;
    publish(&r, &ch, "three").await;
    assert_eq!(next(&mut sub).await, message(&ch, "one"));
    assert_eq!(
        next(&mut sub).await,
        message(&keys.channel_trade_signals(), "two")
    );
    assert_eq!(next(&mut sub).await, message(&ch, "three"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_is_reported_as_a_gap_after_which_nothing_is_missed() {
    let mut server = RedisServer::start().expect("redis");
    let keys = keys();
    let r = connect(&server.url()).await;
    let ch = keys.channel_state_update();
    let metrics = Metrics::new();
    let mut sub = Subscriber::open(
        &redis_config(&server.url()),
        &metrics,
        "bridge",
        std::slice::from_ref(&ch),
        &[],
    )
    .await
    .expect("open");
    publish(&r, &ch, "before").await;
    assert_eq!(next(&mut sub).await, message(&ch, "before"));
    server.restart().expect("restart");
    assert_eq!(
        next(&mut sub).await,
        Notice::Gap(Gap {
            reason: GapReason::Reconnected
        })
    );
    assert!(sub.is_subscribed());
    // Published right after the gap, with no wait: the subscription is already confirmed.
    publish(&r, &ch, "after").await;
    assert_eq!(next(&mut sub).await, message(&ch, "after"));
    assert_eq!(
        metrics.get(
            "kitbash_pubsub_gaps_total",
            &[("subscriber", "bridge"), ("reason", "reconnected")]
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_reader_is_told_how_many_messages_it_lost_and_the_gap_is_counted() {
    let server = RedisServer::start().expect("redis");
    let keys = keys();
    let r = connect(&server.url()).await;
    let ch = keys.channel_state_update();
    let metrics = Metrics::new();
    let cfg = kitbash_runtime::config::RedisConfig {
        pubsub_capacity: 4,
        ..redis_config(&server.url())
    };
    let mut sub = Subscriber::open(&cfg, &metrics, "slow", std::slice::from_ref(&ch), &[])
        .await
        .expect("open");
    for i in 0..100 {
        publish(&r, &ch, &i.to_string()).await;
    }
    // Not read yet: wait until more than the capacity is queued, i.e. some were overwritten.
    eventually("more messages queued than the capacity", || async {
        sub.queued() > 8
    })
    .await;
    let lost = match next(&mut sub).await {
        Notice::Gap(Gap {
            reason: GapReason::Lagged(n),
        }) => n,
        other => panic!("expected a lag gap, got {other:?}"),
    };
    assert!(lost > 0, "lost {lost}");
    // Then the newest messages arrive (maybe after further lags).
    loop {
        match next(&mut sub).await {
            Notice::Message { payload, .. } if payload.as_ref() == b"99" => break,
            Notice::Message { .. } | Notice::Gap(_) => {}
        }
    }
    let gaps = metrics.get(
        "kitbash_pubsub_gaps_total",
        &[("subscriber", "slow"), ("reason", "lagged")],
    );
    assert!(gaps >= 1.0, "{gaps}");
    let text = metrics.render();
    assert!(
        text.contains("kitbash_pubsub_gaps_total{subscriber=\"slow\",reason=\"lagged\"} "),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_subscriber_closes_its_connection() {
    let server = RedisServer::start().expect("redis");
    let keys = keys();
    let sub = Subscriber::open(
        &redis_config(&server.url()),
        &Metrics::new(),
        "t",
        &[keys.channel_state_update()],
        &[],
    )
    .await
    .expect("open");
    assert_eq!(pubsub_clients(&server), 1);
    drop(sub);
    eventually("no pub/sub connection left", || async {
        pubsub_clients(&server) == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_subscribed_while_redis_is_down_then_a_gap_when_it_is_back() {
    let mut server = RedisServer::start().expect("redis");
    let keys = keys();
    let ch = keys.channel_state_update();
    let mut sub = Subscriber::open(
        &redis_config(&server.url()),
        &Metrics::new(),
        "t",
        std::slice::from_ref(&ch),
        &[],
    )
    .await
    .expect("open");
    server.kill().expect("kill");
    eventually("not subscribed while Redis is down", || async {
        !sub.is_subscribed()
    })
    .await;
    server.restart().expect("restart");
    assert_eq!(
        next(&mut sub).await,
        Notice::Gap(Gap {
            reason: GapReason::Reconnected
        })
    );
    assert!(sub.is_subscribed());
}
