#!/usr/bin/env bash
# model/check.sh: model-checks model/fence.pml with Spin (issue 14): the
# protocol must pass (no assertion violation, no invalid end state) and each
# broken variant (NO_WAIT, NO_EPOCH, NO_FENCE) must fail. spin -a, gcc, pan
# with bounded depth and memory; any unexpected result exits non-zero.
# STATUS: work in progress. With the parameters in fence.pml the exhaustive
# search does not finish within 1 GiB and the broken variants' counter-
# examples are not reached yet (docs/safety.md, "Model"); not run by
# scripts/test.sh until it does.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MEM=${FENCE_MODEL_MEM_MB:-1024}
DEPTH=${FENCE_MODEL_DEPTH:-100000}
WORK=$(mktemp -d /tmp/fence-model-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
command -v spin >/dev/null || { echo "model/check.sh: spin is not installed (scripts/deps.sh)" >&2; exit 1; }

# run NAME [SPIN_DEFINES...]: prints pan's summary; sets ERRORS and COMPLETE.
run() {
    local name=$1
    shift
    (cd "$WORK" && cp "$HERE/fence.pml" . && spin "$@" -a fence.pml >spin.log 2>&1) ||
        { cat "$WORK/spin.log" >&2; echo "model/check.sh: spin -a failed ($name)" >&2; exit 1; }
    gcc -O2 -w -DSAFETY -DNOCLAIM -DCOLLAPSE -DMEMLIM="$MEM" -o "$WORK/pan" "$WORK/pan.c"
    (cd "$WORK" && ./pan -m"$DEPTH" >pan.log 2>&1) || true
    ERRORS=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' "$WORK/pan.log" | tail -n 1)
    COMPLETE=1
    grep -q -e "Search not completed" -e "reached -DMEMLIM" "$WORK/pan.log" && COMPLETE=0
    echo "model $name: errors ${ERRORS:-?}, complete $COMPLETE, $(grep -E 'states, stored' "$WORK/pan.log" | tr -s ' ')"
}

fail=0
run protocol
if [[ "${ERRORS:-1}" != 0 || $COMPLETE != 1 ]]; then
    echo "model/check.sh: FAILED: the protocol model has errors or its search did not complete" >&2
    fail=1
fi
for v in NO_WAIT NO_EPOCH NO_FENCE; do
    run "$v" -D"$v"
    if [[ "${ERRORS:-0}" == 0 ]]; then
        echo "model/check.sh: FAILED: broken variant $v was not caught" >&2
        fail=1
    fi
done
exit $fail
