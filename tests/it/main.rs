//! End-to-end tests: the real daemon binaries and CLI against a real redis-server.

mod cli;
mod fleet;
mod tidy;
mod up;
