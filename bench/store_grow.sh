#!/usr/bin/env bash
# bench/store_grow.sh: the token store grows past 1 GiB (issue 20). Builds
# bench/store_grow.c against the built store library and advances N (default
# 1,500,000) distinct keys of KEYLEN (default 500) bytes in a store that
# starts with a 16 MiB map: with the fixed 1 GiB map of before, such a store
# failed for good at about 1.3 million long keys (a million of them take
# about 0.98 GiB). Needs a built tree
# (cmake --build build). Not part of CI: it writes over 1 GiB.
# Usage: bench/store_grow.sh [-b BUILD] [-n N] [-k KEYLEN]
# Environment: BENCH_TMPDIR (parent of the temp dir, default /var/tmp).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=build N=1500000 KEYLEN=500
while getopts "b:n:k:" o; do
    case $o in
    b) BUILD=$OPTARG ;; n) N=$OPTARG ;; k) KEYLEN=$OPTARG ;;
    *) echo "usage: $0 [-b BUILD] [-n N] [-k KEYLEN]" >&2; exit 2 ;;
    esac
done
for lib in "$BUILD/store/libfencestore.a" "$BUILD/common/libfencecommon.a"; do
    [ -f "$lib" ] || { echo "$lib missing: build first" >&2; exit 1; }
done
dir=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/fence-grow-XXXXXX")
trap 'rm -rf "$dir"' EXIT
cc -O2 -std=c11 -D_GNU_SOURCE -Istore -o "$dir/store_grow" bench/store_grow.c \
    "$BUILD/store/libfencestore.a" "$BUILD/common/libfencecommon.a" -llmdb -lpthread
"$dir/store_grow" "$dir/store" "$N" "$KEYLEN"
echo "data.mdb: $(du -h --apparent-size "$dir/store/data.mdb" | cut -f1)"
