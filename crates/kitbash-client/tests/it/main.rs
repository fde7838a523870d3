//! Integration tests of `kitbash-client` against a real redis-server (one per test, from
//! `kitbash-testkit`): rate limiting, sessions, caches, array storage, producers, the reflex
//! lookup's cache.

mod arrays;
mod caches;
mod producer;
mod ratelimit;
mod reflex;
mod support;
