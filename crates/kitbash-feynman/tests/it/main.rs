//! Integration tests of feynman against a real redis-server: in-process instances and the real
//! binary, and Redis refusing writes for a while ([`faults`]).

mod binary;
mod determinism;
mod faults;
mod fleet;
mod support;
