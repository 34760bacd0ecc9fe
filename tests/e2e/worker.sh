#!/bin/sh
# worker.sh FENCELOCK BACKEND URL WDIR ITERATIONS STOPFILE CURL: one worker of
# the contention test. Loops `fencelock run /objects/counter` around rmw.sh at
# most ITERATIONS times, until STOPFILE exists. Appends fencelock's exit
# status of each round to WDIR/runs.
fencelock=$1 backend=$2 url=$3 wdir=$4 iterations=$5 stop=$6 curl=$7
here=$(dirname "$0")
i=0
while [ "$i" -lt "$iterations" ] && [ ! -e "$stop" ]; do
    "$fencelock" --backend "$backend" run /objects/counter --ttl 1s --wait 20s -- \
        /bin/sh "$here/rmw.sh" "$url" "$wdir" "$curl"
    echo "exit $?" >>"$wdir/runs"
    i=$((i + 1))
done
