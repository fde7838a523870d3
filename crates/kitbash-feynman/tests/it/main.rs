//! Integration tests of feynman against a real redis-server: in-process instances and the real
//! binary.

mod binary;
mod determinism;
mod fleet;
mod support;
