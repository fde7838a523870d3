//! Integration tests of the runtime against a real redis-server (one per test, from
//! `kitbash-testkit`).

mod admin;
mod bounds;
mod cluster;
mod config;
mod consumer;
mod leader;
mod notify;
mod partition;
mod raw;
mod resp;
mod subscriber;
mod support;
mod tail;
mod task;
mod tls;
mod trim;
mod trim_floor;
