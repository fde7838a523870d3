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
test: (deps "all")
    #!/usr/bin/env bash
    set -euo pipefail
    # Python packages from tests/deps/requirements.txt live in .kitbash/python (never the system).
    export PYTHONPATH="$PWD/.kitbash/python${PYTHONPATH:+:$PYTHONPATH}"
    # The end-to-end tests start the real daemon binaries: build them first.
    cargo build --workspace --bins
    if cargo nextest --version >/dev/null 2>&1; then
        cargo nextest run --workspace --no-fail-fast {{test-args}}
    else
        echo "cargo-nextest not found; using cargo test (install: cargo install cargo-nextest)"
        cargo test --workspace --no-fail-fast {{test-args}}
    fi
    cargo test --workspace --doc

# Formatting, clippy and rustdoc with warnings as errors.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet

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

# Install what tests/deps/ declares and is missing (apt: Redis; python: redis-py, numpy).
deps what="all":
    tests/deps/install {{what}}

_ensure-redis:
    tests/deps/install apt
