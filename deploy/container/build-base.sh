#!/usr/bin/env bash
# Makes the local base images the container build and test use where no registry is reachable,
# once: skips each image that `podman image exists` already finds.
#   localhost/debian:bookworm     Debian bookworm minbase from debootstrap (the runtime's BASE_IMAGE)
#   localhost/kitbash-redis:7     that base + Debian's redis-server and redis-tools (REDIS_IMAGE)
# Packages come from Debian's mirror (KITBASH_DEBIAN_MIRROR) into a rootfs under .kitbash/container
# (chroot apt-get, so no container needs network access), then `podman import`.
# Needs root, debootstrap and podman (tests/deps/install containers).
set -euo pipefail
cd "$(dirname "$0")/../.."
mirror="${KITBASH_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
base_image="${KITBASH_BASE_IMAGE:-localhost/debian:bookworm}"
redis_image="${KITBASH_REDIS_IMAGE:-localhost/kitbash-redis:7}"
work=".kitbash/container"
mkdir -p "$work"

stamp() { echo "build-base: $(date +%T) $*" >&2; }

if podman image exists "$base_image" && podman image exists "$redis_image"; then
    stamp "$base_image and $redis_image exist; nothing to do"
    exit 0
fi

rootfs="$work/rootfs"
if [ ! -f "$rootfs/.kitbash-complete" ]; then
    rm -rf "$rootfs"
    stamp "debootstrap --variant=minbase bookworm ($mirror)"
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
        || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
    # No daemon starts inside a chroot or an image build (invoke-rc.d asks policy-rc.d).
    printf '#!/bin/sh\nexit 101\n' > "$rootfs/usr/sbin/policy-rc.d"
    chmod 0755 "$rootfs/usr/sbin/policy-rc.d"
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
    touch "$rootfs/.kitbash-complete"
fi

import() { # DIR IMAGE [--change ...]
    local dir="$1" image="$2"
    shift 2
    tar --exclude=./.kitbash-complete -C "$dir" -c . | podman import --quiet "$@" - "$image" >/dev/null
}

if ! podman image exists "$base_image"; then
    stamp "podman import $base_image"
    import "$rootfs" "$base_image" --change 'CMD ["/bin/bash"]'
fi

if ! podman image exists "$redis_image"; then
    redisfs="$work/rootfs-redis"
    rm -rf "$redisfs"
    cp -a "$rootfs" "$redisfs"
    stamp "chroot apt-get install redis-server redis-tools"
    cp /etc/resolv.conf "$redisfs/etc/resolv.conf"
    chroot "$redisfs" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive chroot "$redisfs" apt-get install -y -qq --no-install-recommends redis-server redis-tools >/dev/null
    rm -rf "$redisfs"/var/lib/apt/lists/* "$redisfs"/var/cache/apt/archives/*.deb
    # /data as the official image has it (compose mounts its volume there), owned by redis.
    install -d -m 0750 "$redisfs/data"
    chroot "$redisfs" chown redis:redis /data
    stamp "podman import $redis_image"
    # Like the official image: redis-server in the foreground, logging to stdout, as user redis.
    import "$redisfs" "$redis_image" \
        --change 'USER redis' --change 'WORKDIR /data' --change 'EXPOSE 6379' \
        --change 'CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no"]'
    rm -rf "$redisfs"
fi
podman image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "^(${base_image}|${redis_image})" >&2 || true
