//! End-to-end tests: the real daemon binaries against a real redis-server.
