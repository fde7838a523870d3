#!/usr/bin/env bash
# Builds the kitbash image from host-built release binaries (the Containerfile's `prebuilt`
# target) on the local debootstrap base: what `just containers` uses where no registry is
# reachable. Run `cargo build --release --workspace --bins` and build-base.sh first.
#   KITBASH_IMAGE       image to tag (default localhost/kitbash:latest)
#   KITBASH_BASE_IMAGE  the runtime's base (default localhost/debian:bookworm)
set -euo pipefail
cd "$(dirname "$0")/../.."
image="${KITBASH_IMAGE:-localhost/kitbash:latest}"
base_image="${KITBASH_BASE_IMAGE:-localhost/debian:bookworm}"
bins=(kitbash kitbash-feynman kitbash-entity kitbash-decay kitbash-ghost kitbash-bridge kitbash-archive)

stage=".kitbash/image/bin"
rm -rf "$stage"
mkdir -p "$stage"
for bin in "${bins[@]}"; do
    [ -x "target/release/$bin" ] || { echo "build-image: target/release/$bin is missing: cargo build --release --workspace --bins" >&2; exit 1; }
    # Without the line tables the release profile keeps (the image is ~7x smaller).
    if command -v strip >/dev/null 2>&1; then
        strip --strip-debug -o "$stage/$bin" "target/release/$bin"
    else
        cp "target/release/$bin" "$stage/$bin"
    fi
done
podman build --quiet --pull=never \
    -f deploy/container/Containerfile --ignorefile deploy/container/Containerfile.dockerignore \
    --target prebuilt --build-arg BASE_IMAGE="$base_image" -t "$image" . >/dev/null
podman image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$image" >&2
