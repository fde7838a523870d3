//! Integration tests of `kitbash-client` against a real redis-server (one per test, from
//! `kitbash-testkit`): rate limiting, sessions, caches, array storage, producers.

mod arrays;
mod caches;
mod producer;
mod ratelimit;
mod support;
