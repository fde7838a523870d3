//! Integration tests of entity against a real redis-server: in-process instances, the real
//! binary, faults (Redis restart and outage, shutdown mid-backlog), and the migration.

mod binary;
mod cluster;
mod documents;
mod faults;
mod migrate;

mod support;
