//! kitbash-archive against real files and a real redis-server: the format's byte-identical
//! round trip, the store's durability and verification, and the daemon (in-process and as the
//! binary) under SIGTERM, kill -9 and restarts; memory-token indexing; all of it on a Redis Cluster.

mod cluster;
mod daemon;
mod feynman;
mod format;
mod memory;
mod replay;
mod store;
mod support;
mod trim;
