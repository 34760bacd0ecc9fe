#!/usr/bin/env bash
# model/check.sh: model-checks model/fence.pml with Spin (issue 14). The
# protocol must pass: an exhaustive safety search with no assertion violation
# (STALE, S3N, APPLY) and no invalid end state, the same with the
# availability assertions (FIND_STALE_WANT; FIND_ORPHAN_OWN with lost acquire
# answers), and an exhaustive LTL search (-DLIVE, waits_end) with no
# acceptance cycle. Each broken variant, and each gap the C code still has
# (FENCED_WANT, IDLE_ORPHAN), must fail with an assertion violation (the LTL
# one with an acceptance cycle); its counterexample is printed on one line
# (the first one the depth-first search finds within a depth bound, not the
# shortest). One summary line per run: states stored, errors, seconds and
# memory of pan (compiling not included). Exits non-zero if a run that must
# pass fails, a search does not complete, or a variant passes.
# Usage: model/check.sh [RUN...]   (default: every run below)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MEM=${FENCE_MODEL_MEM_MB:-3072}
for tool in spin gcc; do
    command -v "$tool" >/dev/null ||
        { echo "model/check.sh: $tool is not installed (scripts/deps.sh)" >&2; exit 1; }
done
WORK=$(mktemp -d /tmp/fence-model-XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# The runs: NAME EXPECT MODE DEFINES. EXPECT is pass, assert (an assertion
# violation) or cycle (an acceptance cycle); MODE is safety or live.
RUNS=(
    "protocol       pass   safety"
    "liveness       pass   live   -DCRASHES=0 -DNO_IDLE -DHWAIT=2"
    "STALE_WANT     pass   safety -DFIND_STALE_WANT"
    "ORPHAN_OWN     pass   safety -DFIND_ORPHAN_OWN -DACQ_LOSS"
    "NO_WAIT        assert safety -DNO_WAIT"
    "NO_EPOCH       assert safety -DNO_EPOCH"
    "NO_FENCE       assert safety -DNO_FENCE"
    "CLEAN_IN_DELAY assert safety -DCLEAN_IN_DELAY"
    "SPLIT_SEND     assert safety -DSPLIT_SEND"
    "KEEP_WANT      assert safety -DFIND_STALE_WANT -DKEEP_WANT"
    "FENCED_WANT    assert safety -DFIND_STALE_WANT -DFENCED_KEEPS_WANT"
    "NO_ADOPT       assert safety -DFIND_ORPHAN_OWN -DACQ_LOSS -DNO_ADOPT"
    "ADOPT_NO_DELAY assert safety -DACQ_LOSS -DADOPT_NO_DELAY"
    "IDLE_ORPHAN    assert safety -DFIND_IDLE_ORPHAN -DACQ_LOSS"
    "NO_BOUND       cycle  live   -DCRASHES=0 -DNO_IDLE -DHWAIT=2 -DNO_BOUND"
)

# trail NAME DEFINES...: the counterexample's events on one line (plain
# keepalives left out).
trail() {
    local name=$1
    shift
    (cd "$WORK/$name" && spin "$@" -t fence.pml 2>&1) |
        sed -n -e '/keepalive$/d' -e 's/^ *MSC: //p' -e 's/^spin: .*Error: \(.*\)/\1/p' \
            -e 's/.*START OF CYCLE.*/[cycle:]/p' |
        paste -sd ';' | sed 's/;/; /g'
}

# defines MODE DEFINES...: sets DEFS (spin), CFLAGS (gcc) and PANFLAGS.
defines() {
    local mode=$1
    shift
    DEFS=("$@")
    CFLAGS=(-O2 -w -DMEMLIM="$MEM")
    PANFLAGS=(-w25)
    if [[ $mode == live ]]; then
        DEFS+=(-DLIVE)
        PANFLAGS+=(-a)
    else
        CFLAGS+=(-DSAFETY)
    fi
}

# build NAME EXPECT MODE DEFINES...: spin -a and gcc in WORK/NAME; leaves
# WORK/NAME/pan, or the tail of the logs in WORK/NAME/build.err.
build() {
    local name=$1 mode=$3
    shift 3
    local dir="$WORK/$name"
    mkdir -p "$dir"
    cp "$HERE/fence.pml" "$dir/"
    defines "$mode" "$@"
    (cd "$dir" && spin "${DEFS[@]}" -a fence.pml >spin.log 2>&1 &&
        gcc "${CFLAGS[@]}" -o pan pan.c >gcc.log 2>&1) ||
        cat "$dir/spin.log" "$dir/gcc.log" 2>/dev/null | tail -n 20 >"$dir/build.err"
}

# run NAME EXPECT MODE DEFINES...: runs WORK/NAME/pan; returns 1 if the
# result is not EXPECT.
run() {
    local name=$1 expect=$2 mode=$3
    shift 3
    local dir="$WORK/$name"
    defines "$mode" "$@"
    local -a defs=("${DEFS[@]}") panflags=("${PANFLAGS[@]}")
    if [[ ! -x "$dir/pan" ]]; then
        cat "$dir/build.err" >&2 2>/dev/null || true
        echo "model/check.sh: $name: spin -a or gcc failed" >&2
        return 1
    fi
    # A variant's search is first bounded in depth, for a shorter
    # counterexample; the last bound is the whole search.
    local depths="300000" depth t0 t1
    [[ $expect == pass ]] || depths="150 400 300000"
    local log="$dir/pan.log" errors states complete kind
    for depth in $depths; do
        t0=$(date +%s.%N)
        (cd "$dir" && ./pan -m"$depth" "${panflags[@]}" >pan.log 2>&1) || true
        t1=$(date +%s.%N)
        errors=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' "$log" | tail -n 1)
        states=$(sed -n 's/^ *\([0-9.e+]*\) states, stored.*/\1/p' "$log" | tail -n 1)
        complete=yes
        grep -q -e 'Search not completed' -e 'reached -DMEMLIM' -e 'max search depth too small' "$log" &&
            complete=no
        kind=none
        grep -q '^pan:[0-9]*: invalid end state' "$log" && kind=endstate
        grep -q '^pan:[0-9]*: acceptance cycle' "$log" && kind=cycle
        grep -q '^pan:[0-9]*: assertion violated' "$log" && kind=assert
        [[ $kind == none ]] || break
    done
    local mb
    mb=$(sed -n 's/^ *\([0-9.]*\).*total actual memory usage.*/\1/p' "$log" | tail -n 1)
    printf 'model %-14s %s states, %s errors, %.1f s, %.0f MB%s\n' "$name" "${states:-?}" \
        "${errors:-?}" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" "${mb:-0}" \
        "$([[ $complete == yes ]] || echo ', search stopped')"
    if [[ $expect == pass ]]; then
        if [[ "${errors:-1}" != 0 || $complete != yes ]]; then
            grep -E '^pan:[0-9]*:|MEMLIM|depth too small' "$log" | head -n 3 >&2 || true
            [[ "${errors:-0}" == 0 ]] || echo "  counterexample: $(trail "$name" "${defs[@]}")" >&2
            echo "model/check.sh: FAILED: $name has errors or its search did not complete" >&2
            return 1
        fi
    else
        if [[ $kind != "$expect" ]]; then
            echo "model/check.sh: FAILED: $name was not caught (expected: $expect, got: $kind)" >&2
            return 1
        fi
        echo "  counterexample: $(trail "$name" "${defs[@]}")"
    fi
}

fail=0 runs=0 failed=0
for a in "$@"; do
    printf '%s\n' "${RUNS[@]}" | grep -q "^$a " ||
        { echo "model/check.sh: no run named $a" >&2; exit 2; }
done
SELECTED=()
for entry in "${RUNS[@]}"; do
    read -r -a f <<<"$entry"
    if [[ $# -gt 0 ]]; then
        wanted=no
        for a in "$@"; do [[ $a == "${f[0]}" ]] && wanted=yes; done
        [[ $wanted == yes ]] || continue
    fi
    SELECTED+=("$entry")
done
# Compile two at a time (the compiler takes longer than most searches),
# then search one at a time.
for entry in "${SELECTED[@]}"; do
    read -r -a f <<<"$entry"
    [[ $(jobs -rp | wc -l) -lt 2 ]] || wait -n || true
    build "${f[@]}" &
done
wait
for entry in "${SELECTED[@]}"; do
    read -r -a f <<<"$entry"
    runs=$((runs + 1))
    run "${f[@]}" || { fail=1; failed=$((failed + 1)); }
done
# The last line, read by scripts/test.sh.
echo "model/check.sh: $runs runs, $((runs - failed)) as expected, $failed not"
exit $fail
