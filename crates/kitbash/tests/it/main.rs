//! Integration tests of the `kitbash` CLI against a real redis-server: the library calls and
//! the real binary.

mod archive;
mod budget;
mod errors;
mod families;
mod live;
mod reflex;
mod status;
mod tail;
