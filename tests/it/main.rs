//! End-to-end tests: the real daemon binaries and CLI against a real redis-server.

mod fleet;
mod tidy;
mod up;
