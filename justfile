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

# Container images and their end-to-end test with podman (deploy/README.md, "Containers"):
# installs podman & co (tests/deps/apt.txt, scope `containers`), builds the release binaries, a
# debootstrap base and a Redis image (once), the kitbash image from the binaries; runs
# deploy/container/e2e.sh (podman-compose fleet, feed, physics:state, feynman scaled to 3, clean
# stop), then the testkit's suite on its `containers` backend over podman's API socket.
# Everything it starts is removed, also on failure. Needs root (rootful podman).
containers: (deps "containers")
    #!/usr/bin/env bash
    set -euo pipefail
    t0=$SECONDS
    cargo build --release --workspace --bins
    t1=$SECONDS
    deploy/container/build-base.sh
    t2=$SECONDS
    deploy/container/build-image.sh
    t3=$SECONDS
    deploy/container/e2e.sh
    t4=$SECONDS
    # The Docker-compatible API socket testcontainers talks to: ours unless one already runs.
    sock=/run/podman/podman.sock
    svc=""
    if ! curl -fsS --unix-socket "$sock" http://d/_ping >/dev/null 2>&1; then
        mkdir -p /run/podman
        podman system service --time=0 "unix://$sock" & svc=$!
        trap 'kill "$svc" 2>/dev/null || true' EXIT
        for _ in $(seq 50); do curl -fsS --unix-socket "$sock" http://d/_ping >/dev/null 2>&1 && break; sleep 0.1; done
    fi
    DOCKER_HOST="unix://$sock" KITBASH_TEST_BACKEND=containers KITBASH_TEST_REDIS_IMAGE=localhost/kitbash-redis:7 \
        cargo nextest run -p kitbash-testkit --features containers --no-fail-fast
    t5=$SECONDS
    echo "containers: release build $((t1-t0))s, base images $((t2-t1))s, kitbash image $((t3-t2))s, e2e $((t4-t3))s, testkit on containers $((t5-t4))s"
