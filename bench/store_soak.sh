#!/usr/bin/env bash
# bench/store_soak.sh: the kill -9 soak of issue 20. Runs the store's crash
# test (tests/store/test_store_crash.c) for ROUNDS rounds (default 1000; CI
# runs 100) on one store directory: each round starts store_crasher (which
# opens the store with its marker, so every restart after a kill goes through
# the whole identity and checksum check), kills it with SIGKILL 50..300 ms
# after it is ready, reopens the store and checks that every acknowledged
# advance is there. A false refusal, a lost advance or a crash fails it.
# Usage: bench/store_soak.sh [-b BUILD] [-r ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=build ROUNDS=1000
while getopts "b:r:" o; do
    case $o in
    b) BUILD=$OPTARG ;; r) ROUNDS=$OPTARG ;;
    *) echo "usage: $0 [-b BUILD] [-r ROUNDS]" >&2; exit 2 ;;
    esac
done
bin="$BUILD/tests/test_store_crash"
[ -x "$bin" ] || { echo "$bin missing: build first" >&2; exit 1; }
FENCE_CRASH_ROUNDS=$ROUNDS FENCE_BUILD_DIR="$PWD/$BUILD" FENCE_SOURCE_DIR="$PWD" \
    "$bin" --jobs 1 2>&1 | grep -E "store_crash:|Synthesis|FAIL|Assert"
