//! Integration tests of entity against a real redis-server: in-process instances, the real
//! binary, faults (Redis restart and outage, shutdown mid-backlog), the migration, and the
//! changes stream kept near its bound (`bounds`).

mod binary;
mod bounds;
mod cluster;
mod documents;
mod faults;
mod migrate;

mod support;
