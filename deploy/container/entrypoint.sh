#!/bin/sh
# Container entrypoint: runs one kitbash binary in place of this shell (exec, so the binary is
# the process that receives SIGTERM). The first argument picks the binary when it names one
# (`kitbash-decay`, `kitbash`); otherwise $KITBASH_BIN runs with all the arguments.
set -eu
case "${1:-}" in
    kitbash | kitbash-feynman | kitbash-entity | kitbash-decay | kitbash-ghost | kitbash-bridge | kitbash-archive)
        exec "$@"
        ;;
esac
exec "${KITBASH_BIN:?name a kitbash binary or set KITBASH_BIN}" "$@"
