//! End-to-end tests: the real daemon binaries and CLI against a real redis-server.

mod acl;
mod cli;
mod fleet;
mod sentinel;
mod systemd;
mod tidy;
mod up;
