#!/bin/sh
# rmw.sh URL WDIR CURL: one read-modify-write of the counter object at URL,
# run by `fencelock run` with FENCE_TOKEN set. The read carries the token too,
# so through fenceproxy it claims the resource before the write. Appends one
# line per attempt to WDIR/log:
#   accepted TOKEN REQUEST_ID VALUE | rejected TOKEN REQUEST_ID
#   read_rejected TOKEN REQUEST_ID  | error WHAT ...
# (REQUEST_ID is the proxy's X-Request-Id, "-" straight against nginx).
# WDIR/rmw.pid holds this shell's pid, which is its process group (fencelock
# runs it in a group of its own); WDIR/window exists between the read and the
# write, so the test can freeze the worker right inside that window.
url=$1 wdir=$2 curl=$3
# When a frozen worker wakes up, fencelock finds the lease gone and sends
# SIGTERM; a write already under way when a process froze does not stop for
# that, which ignoring SIGTERM stands for. The proxy must refuse the write.
trap '' TERM
tok=$FENCE_TOKEN
echo $$ >"$wdir/rmw.pid"

# shellcheck disable=SC2046  # split curl's "CODE REQUEST_ID" into $1 $2
set -- $("$curl" -s --max-time 10 -o "$wdir/read.body" \
    -w '%{http_code} %header{x-request-id}' -H "Fencing-Token: $tok" "$url")
code=$1 rid=${2:--}
case $code in
200) n=$(cat "$wdir/read.body") ;;
404) n=0 ;;
409) echo "read_rejected $tok $rid" >>"$wdir/log"; exit 0 ;;
*) echo "error read $code $tok $rid" >>"$wdir/log"; exit 1 ;;
esac
case $n in
'' | *[!0-9]*) echo "error value '$n' $tok" >>"$wdir/log"; exit 1 ;;
esac

: >"$wdir/window"
sleep 0.1
rm -f "$wdir/window"

# shellcheck disable=SC2046  # as above
set -- $("$curl" -s --max-time 10 -o /dev/null -w '%{http_code} %header{x-request-id}' \
    -X PUT -H "Fencing-Token: $tok" --data-binary "$((n + 1))" "$url")
code=$1 rid=${2:--}
case $code in
201 | 204) echo "accepted $tok $rid $((n + 1))" >>"$wdir/log" ;;
409) echo "rejected $tok $rid" >>"$wdir/log" ;;
*) echo "error write $code $tok $rid" >>"$wdir/log"; exit 1 ;;
esac
