#!/bin/sh
# worker.sh ID QUEUE_DIR STORE_URL: one worker of the task-processing example.
#
# The queue is QUEUE_DIR/todo/N (one file per task N; the shared queue of the
# example), QUEUE_DIR/done/N marks a finished task. For each task the worker
# takes the task's lock with `fencelock run /objects/task-N --wait 0` (a
# task someone else holds is skipped for now), and under the lock:
#   1. claims it: PUT STORE_URL/objects/task-N/claim with its token, so the
#      store's fence for the task is at this worker's token before any work;
#   2. works (WORK_SECONDS, default 0.3), then announces in
#      QUEUE_DIR/busy/ID ("PID TASK") that it is about to write (with
#      PAUSE_ONCE=ID it stops itself there once: the test's paused worker);
#   3. writes the result: PUT STORE_URL/objects/task-N/result, body the
#      worker's id, with its token, and marks the task done.
# A write refused by fenceproxy (409: a later holder's token has reached the
# task) fails the command, and the task is left to the holder that fenced it.
# Loops over the queue until every task is done (at most ROUNDS, default 50).
# Needs fencelock (FENCELOCK, default from PATH; backend from FENCE_BACKEND)
# and curl.
set -u
id=$1 q=$2 store=$3
fl=${FENCELOCK:-fencelock}
work=${WORK_SECONDS:-0.3}
mkdir -p "$q/done" "$q/busy"
round=0
while [ "$round" -lt "${ROUNDS:-50}" ]; do
    round=$((round + 1))
    left=0
    for t in "$q"/todo/*; do
        n=${t##*/}
        [ -e "$q/done/$n" ] && continue
        left=1
        ID=$id Q=$q N=$n STORE=$store WORK=$work PAUSE_ONCE=${PAUSE_ONCE:-} \
        "$fl" run "/objects/task-$n" --ttl 1s --wait 0 -- sh -c '
            [ -e "$Q/done/$N" ] && exit 0
            put() { curl -s -o /dev/null -w "%{http_code}" -X PUT \
                        -H "Fencing-Token: $FENCE_TOKEN" --data-binary "$2" "$STORE$1"; }
            c=$(put "/objects/task-$N/claim" "$ID") || exit 1
            [ "$c" = 200 ] || [ "$c" = 201 ] || [ "$c" = 204 ] || exit 1
            sleep "$WORK"
            echo "$$ $N" > "$Q/busy/$ID.tmp" && mv "$Q/busy/$ID.tmp" "$Q/busy/$ID"
            # PAUSE_ONCE=ID (tests): this worker stops itself once, here,
            # as a process paused by GC or swap would, until SIGCONT.
            if [ "${PAUSE_ONCE:-}" = "$ID" ] && mkdir "$Q/paused" 2>/dev/null; then
                kill -STOP $$
            fi
            r=$(put "/objects/task-$N/result" "$ID") || exit 1
            rm -f "$Q/busy/$ID"
            echo "$ID task $N result $r token $FENCE_TOKEN" >> "$Q/worker.log"
            [ "$r" = 200 ] || [ "$r" = 201 ] || [ "$r" = 204 ] || exit 1
            touch "$Q/done/$N"' >/dev/null 2>&1
    done
    [ "$left" = 0 ] && exit 0
    sleep 0.05
done
exit 1
