//! Integration tests of entity against a real redis-server: in-process instances, the real
//! binary, and the migration.

mod binary;
mod documents;
mod migrate;

mod support;
