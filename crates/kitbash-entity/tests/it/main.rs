//! Integration tests of entity against a real redis-server: in-process instances, the real
//! binary, faults (Redis restart and outage, shutdown mid-backlog), the migration, batched
//! commits (`batches`), and the changes stream kept near its bound (`bounds`).

mod batches;
mod binary;
mod bounds;
mod cluster;
mod documents;
mod faults;
mod migrate;

mod support;
