#!/bin/sh
# Builds the px_http1 fuzz harnesses with clang and runs each for SECONDS
# (default 60), one after the other, on a copy of the seed corpus.
# Usage: tests/fuzz/run.sh [SECONDS] [BUILD_DIR]
set -eu
secs=${1:-60}
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${2:-$src/../build-fuzz}
CC=clang cmake -S "$src" -B "$build" -DFENCE_FUZZ=ON -DFENCE_SANITIZE=ON \
    -DFENCE_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" --target fuzz_request fuzz_response -j2
for h in request response; do
    work="$build/fuzz-corpus-$h"
    mkdir -p "$work" "$build/fuzz-artifacts"
    echo "== fuzz_$h for ${secs}s"
    "$build/tests/fuzz/fuzz_$h" -max_total_time="$secs" -print_final_stats=1 \
        -artifact_prefix="$build/fuzz-artifacts/$h-" "$work" "$src/tests/fuzz/corpus/$h"
done
