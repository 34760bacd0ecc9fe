#!/bin/sh
# lock_bench.sh: acquire+release throughput and latency of libfencelock
# against a private redis-server on a free loopback port (started here in a
# temp dir, stopped by PID on exit).
# Usage: bench/lock_bench.sh BUILD_DIR [lock_bench args...]
#   e.g. bench/lock_bench.sh /work/build-lock --clients 8 --duration 5s
# Extra redis-server arguments come from $LOCK_BENCH_REDIS_ARGS, e.g.
#   LOCK_BENCH_REDIS_ARGS="--appendonly yes --appendfsync always"
set -eu
build=${1:?usage: lock_bench.sh BUILD_DIR [args...]}
shift
bench="$build/lockclient/lock_bench"
[ -x "$bench" ] || { echo "lock_bench.sh: $bench not built (target lock_bench)" >&2; exit 2; }
redis=$(command -v redis-server || true)
[ -n "$redis" ] || { echo "lock_bench.sh: redis-server not found (apt install redis-server)" >&2; exit 2; }

dir=$(mktemp -d "${TMPDIR:-/tmp}/fence-lockbench-XXXXXX")
pid=""
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM

# A free port: bind 0 and read it back (python3 if present, else a random high port).
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null \
       || echo $((20000 + $$ % 20000)))
"$redis" --port "$port" --bind 127.0.0.1 --dir "$dir" --save "" --appendonly no \
    --daemonize no --logfile "$dir/redis.log" ${LOCK_BENCH_REDIS_ARGS:-} &
pid=$!
i=0
until redis-cli -p "$port" ping >/dev/null 2>&1; do
    i=$((i + 1))
    [ $i -lt 200 ] || { echo "lock_bench.sh: redis did not start" >&2; cat "$dir/redis.log" >&2; exit 1; }
    sleep 0.05
done
echo "# redis-server $("$redis" --version | sed 's/.*v=\([^ ]*\).*/\1/') on 127.0.0.1:$port, args: --save \"\" --appendonly no ${LOCK_BENCH_REDIS_ARGS:-}"
echo "# $bench --url redis://127.0.0.1:$port $*"
"$bench" --url "redis://127.0.0.1:$port" "$@"
