#!/usr/bin/env bash
# The README's test command: install what is missing, build the normal tree
# (build/, RelWithDebInfo) and the ASan+UBSan tree (build-asan/, Debug), run
# every ctest entry in both, then the Spin model check (model/check.sh, once:
# it needs no build tree; each of its runs counts as one test), and finish
# with each Criterion binary's "Synthesis:" line and one closing line
# `tests: N passed, N failed`.
# Exits non-zero when a build fails, a ctest entry fails, Criterion reports
# a failing or crashing test, or the model check fails. Verbose output goes
# to logs inside each build tree; the terminal gets progress, failures and
# the summary.
# FENCE_BUILD_DIR_NORMAL / FENCE_BUILD_DIR_ASAN override the two build trees.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# nginx lives in /usr/sbin, which a normal user's PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

JOBS=$(nproc 2>/dev/null || echo 2)
BUILD_NORMAL=${FENCE_BUILD_DIR_NORMAL:-$ROOT/build}
BUILD_ASAN=${FENCE_BUILD_DIR_ASAN:-$ROOT/build-asan}

say() { printf '==> %s\n' "$*"; }

# ctest starts each test in a process group of its own and, on Ctrl-C, dies
# without stopping them. On an interrupt, stop what is left of the test
# binaries of our two trees (and whatever they started in their group).
# shellcheck disable=SC2317  # invoked by the trap
on_interrupt() {
    local self dir pid pg
    self=$(ps -o pgid= -p $$ | tr -d ' ')
    for dir in "$BUILD_NORMAL" "$BUILD_ASAN"; do
        for pid in $(pgrep -f "^$dir/tests/" || true); do
            pg=$(ps -o pgid= -p "$pid" | tr -d ' ')
            if [[ -n "$pg" && "$pg" != "$self" ]]; then
                kill -TERM -- "-$pg" 2>/dev/null || true
            else
                kill -TERM "$pid" 2>/dev/null || true
            fi
        done
    done
    echo "test.sh: interrupted" >&2
    exit 130
}
trap on_interrupt INT TERM

"$ROOT/scripts/deps.sh"

# build DIR CMAKE_ARGS...: configure and build DIR, output to DIR/build.log;
# on failure print the log's tail and exit.
build() {
    local dir=$1
    shift
    mkdir -p "$dir"
    local log="$dir/build.log"
    say "configure + build $dir ($*)"
    if ! { cmake -S "$ROOT" -B "$dir" "$@" && cmake --build "$dir" -j"$JOBS"; } >"$log" 2>&1; then
        echo "--- last 60 lines of $log ---" >&2
        tail -n 60 "$log" >&2
        # Parallel make can bury the cause: list the first errors again.
        echo "--- first errors ---" >&2
        grep -E ': error:|CMake Error|undefined reference' "$log" | head -n 20 >&2 || true
        echo "build failed: $dir (full log: $log)" >&2
        exit 1
    fi
}

# run_ctest DIR: run ctest verbosely into DIR/ctest.log, showing only the
# per-test result lines live; then the output of any failed test. Sets
# CTEST_RC.
run_ctest() {
    local dir=$1
    local log="$dir/ctest.log"
    say "ctest in $dir (log: $log)"
    # Foreground pipeline, so that Ctrl-C reaches ctest and the tests.
    set +e
    (cd "$dir" && ctest -j2 -V --output-on-failure) 2>&1 | tee "$log" \
        | grep --line-buffered -E '^ *[0-9]+/[0-9]+ Test +#|tests passed|No tests were found'
    CTEST_RC=${PIPESTATUS[0]}
    set -e
    if [[ $CTEST_RC -ne 0 ]]; then
        # ctest -V prefixes each test's output with "N: "; show the failed ones.
        local n
        while read -r n; do
            echo "--- output of failed test #$n (last 80 lines) ---"
            grep -E "^$n: " "$log" | tail -n 80
        done < <(sed -nE 's/^ *[0-9]+\/[0-9]+ Test +#([0-9]+):.*(\*\*\*|Not Run).*/\1/p' "$log")
    fi
}

# summarize LABEL DIR: print each binary's Synthesis line and add its numbers
# to the totals. Criterion's "Failing" already includes the crashed tests
# ("Crashing" is a subset), so failed = Failing. A binary that failed under
# ctest, or printed a sanitizer report, without Criterion counting a failure
# (crash before the summary, timeout, a leak found as a test process exits,
# which Criterion only warns about) counts as one failed test, so the closing
# line never hides a failure.
TOTAL_PASSED=0
TOTAL_FAILED=0
TOTAL_TESTED=0
summarize() {
    local label=$1 dir=$2
    local log="$dir/ctest.log"
    echo "[$label]"
    local line n name status syn tested passing failing sanitizer
    while IFS= read -r line; do
        n=$(sed -nE 's/^ *[0-9]+\/[0-9]+ Test +#([0-9]+): ([^ ]+).*/\1/p' <<<"$line")
        name=$(sed -nE 's/^ *[0-9]+\/[0-9]+ Test +#([0-9]+): ([^ ]+).*/\2/p' <<<"$line")
        status=ok
        [[ "$line" == *Passed* ]] || status=failed
        # Strip colour codes in case Criterion decided to use them.
        sanitizer=$(grep -cE "^$n: .*(ERROR: [A-Za-z]+Sanitizer|runtime error:|crashed during its setup or teardown)" "$log" || true)
        syn=$(grep -E "^$n: .*Synthesis:" "$log" | sed -E 's/\x1b\[[0-9;]*m//g' | tail -n 1 || true)
        if [[ -z "$syn" ]]; then
            echo "  $name: no Criterion summary ($status)"
            if [[ $status == failed ]]; then
                TOTAL_FAILED=$((TOTAL_FAILED + 1))
            fi
            continue
        fi
        syn=${syn#*Synthesis: }
        tested=$(sed -nE 's/.*Tested: ([0-9]+).*/\1/p' <<<"$syn")
        passing=$(sed -nE 's/.*Passing: ([0-9]+).*/\1/p' <<<"$syn")
        failing=$(sed -nE 's/.*Failing: ([0-9]+).*/\1/p' <<<"$syn")
        echo "  $name: Synthesis: ${syn%% }"
        TOTAL_TESTED=$((TOTAL_TESTED + ${tested:-0}))
        TOTAL_PASSED=$((TOTAL_PASSED + ${passing:-0}))
        TOTAL_FAILED=$((TOTAL_FAILED + ${failing:-0}))
        if [[ ${failing:-0} -eq 0 ]]; then
            if [[ $sanitizer -gt 0 ]]; then
                echo "  $name: $sanitizer sanitizer report(s) although every test passed (see $log)"
                TOTAL_FAILED=$((TOTAL_FAILED + 1))
            elif [[ $status == failed ]]; then
                echo "  $name: ctest failed after Criterion's summary (see $log)"
                TOTAL_FAILED=$((TOTAL_FAILED + 1))
            fi
        fi
    done < <(grep -E '^ *[0-9]+/[0-9]+ Test +#' "$log" | sort -t'#' -k2 -n || true)
}

# run_model: model/check.sh, after the ctest runs so that its two minutes of
# CPU do not slow the timed tests, output to BUILD_NORMAL/model.log with its
# summary lines live. Sets MODEL_RC, MODEL_RUNS and MODEL_FAILED (from its
# last line; if that line is missing, one failed run).
run_model() {
    local log="$BUILD_NORMAL/model.log"
    say "model check: model/check.sh (log: $log)"
    set +e
    "$ROOT/model/check.sh" 2>&1 | tee "$log" | grep --line-buffered -E '^model |FAILED'
    MODEL_RC=${PIPESTATUS[0]}
    set -e
    local last
    # A log that is gone (its directory removed under us) counts as a
    # failed run, not as an abort before the summary.
    last=$({ sed -nE 's/^model\/check\.sh: ([0-9]+) runs, [0-9]+ as expected, ([0-9]+) not$/\1 \2/p' \
        "$log" 2>/dev/null || true; } | tail -n 1)
    MODEL_RUNS=${last% *}
    MODEL_FAILED=${last#* }
    if [[ -z "$last" ]]; then
        MODEL_RUNS=1
        MODEL_FAILED=1
    elif [[ $MODEL_RC -ne 0 && $MODEL_FAILED -eq 0 ]]; then
        MODEL_FAILED=1
    fi
}

build "$BUILD_NORMAL" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFENCE_SANITIZE=OFF -DFENCE_TESTS=ON
build "$BUILD_ASAN" -DCMAKE_BUILD_TYPE=Debug -DFENCE_SANITIZE=ON -DFENCE_TESTS=ON

run_ctest "$BUILD_NORMAL"
RC_NORMAL=$CTEST_RC

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
run_ctest "$BUILD_ASAN"
RC_ASAN=$CTEST_RC
unset ASAN_OPTIONS UBSAN_OPTIONS

run_model

echo
summarize "normal build: $BUILD_NORMAL" "$BUILD_NORMAL"
summarize "asan+ubsan build: $BUILD_ASAN" "$BUILD_ASAN"
CRITERION_TESTED=$TOTAL_TESTED
echo "[model: $ROOT/model/check.sh]"
echo "  $MODEL_RUNS runs, $((MODEL_RUNS - MODEL_FAILED)) as expected, $MODEL_FAILED not (exit $MODEL_RC)"
TOTAL_TESTED=$((TOTAL_TESTED + MODEL_RUNS))
TOTAL_PASSED=$((TOTAL_PASSED + MODEL_RUNS - MODEL_FAILED))
TOTAL_FAILED=$((TOTAL_FAILED + MODEL_FAILED))

rc=0
if [[ $RC_NORMAL -ne 0 || $RC_ASAN -ne 0 || $MODEL_RC -ne 0 || $TOTAL_FAILED -ne 0 ]]; then
    rc=1
fi
if [[ $CRITERION_TESTED -eq 0 ]]; then
    echo "no Criterion test ran: is the test suite built?" >&2
    rc=1
fi
echo "tests: $TOTAL_PASSED passed, $TOTAL_FAILED failed"
exit $rc
