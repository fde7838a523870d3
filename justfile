# kitbash task runner. `just --list` shows every recipe; `just ci` runs exactly what CI runs.

set shell := ["bash", "-euo", "pipefail", "-c"]

# ---- configuration ------------------------------------------------------------------------
# Profile used by `just up` (config/{profile}.toml).
profile := env_var_or_default("KITBASH_PROFILE", "local")
# Extra arguments for the test runner (e.g. `just test-args="-E test(nogroup)" test`).
test-args := ""

# List the recipes.
default:
    @just --list

# Start the whole system locally: a Redis it starts itself, the daemons, demo feeds, live view.
# Ctrl-C (also through `| tee`), SIGTERM or a closed terminal stops everything it started.
up *args: _ensure-redis
    cargo build --release --workspace --bins
    KITBASH_PROFILE={{profile}} target/release/kitbash up {{args}}

# Run every test (unit, integration against real redis-server, end-to-end with the binaries).
test: _ensure-redis
    #!/usr/bin/env bash
    set -euo pipefail
    # The end-to-end tests start the real daemon binaries: build them first.
    cargo build --workspace --bins
    if cargo nextest --version >/dev/null 2>&1; then
        cargo nextest run --workspace --no-fail-fast {{test-args}}
    else
        echo "cargo-nextest not found; using cargo test (install: cargo install cargo-nextest)"
        cargo test --workspace --no-fail-fast {{test-args}}
    fi
    cargo test --workspace --doc

# Formatting and clippy with warnings as errors.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# What CI runs: lint, then every test.
ci: lint test

# Run a benchmark suite (redis, ternary, feynman): `just bench ternary --json`.
bench suite="redis" *args="":
    cargo build --release -p kitbash
    target/release/kitbash bench {{suite}} {{args}}

# Criterion micro-benchmarks of the ternary kernels.
bench-ternary:
    cargo bench -p kitbash-ternary

# Fleet status: the Redis of a running `just up` (from .kitbash/up.json), else the configured one.
status *args:
    cargo run --quiet -p kitbash -- status {{args}}

# Install redis-server when missing (apt-get, with sudo when not root), or say what to install.
_ensure-redis:
    #!/usr/bin/env bash
    set -euo pipefail
    if command -v "${KITBASH_REDIS_SERVER:-redis-server}" >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 && command -v redis-benchmark >/dev/null 2>&1; then
        exit 0
    fi
    echo "redis-server/redis-cli not found: installing redis-server and redis-tools with apt-get" >&2
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "no apt-get here: install Redis 7 (redis-server, redis-cli, redis-benchmark) yourself, or set KITBASH_REDIS_SERVER=/path/to/redis-server" >&2
        exit 1
    fi
    if [ "$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
        echo "not root and no sudo: run 'apt-get install -y redis-server redis-tools' as root" >&2
        exit 1
    fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends redis-server redis-tools >/dev/null
    # Debian starts a system redis on 6379 when it can; kitbash never uses it, tests start their own.
    redis-server --version
