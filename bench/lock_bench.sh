#!/bin/sh
# lock_bench.sh: acquire+release throughput and latency of libfencelock
# against a private lock server on a free loopback port (started here in a
# temp dir, stopped by PID on exit).
# Usage: bench/lock_bench.sh BUILD_DIR [--backend redis|etcd|zk] [lock_bench args...]
#   e.g. bench/lock_bench.sh /work/build-lock --clients 8 --duration 5s
#        bench/lock_bench.sh build --backend zk --clients 8 --read
#        bench/lock_bench.sh build --patterns [--duration 5s]
# --backend picks the server (default redis): redis-server without
# persistence (extra arguments from $LOCK_BENCH_REDIS_ARGS, e.g.
# LOCK_BENCH_REDIS_ARGS="--appendonly yes --appendfsync always"), a
# one-member etcd with default flags (fsync on), or a standalone ZooKeeper
# (tickTime=2000, forceSync on).
# --patterns starts all three and runs, with 8 clients each, the plain mutex
# on distinct names (the peer figure), read holds of one read-write lock
# (--read) and permits of one semaphore of 8 and of 2 (--permits), then
# redis-benchmark's SET on the same Redis for scale.
set -eu
build=${1:?usage: lock_bench.sh BUILD_DIR [--backend redis|etcd|zk | --patterns] [args...]}
shift
bench="$build/lockclient/lock_bench"
[ -x "$bench" ] || { echo "lock_bench.sh: $bench not built (target lock_bench)" >&2; exit 2; }
backend=redis
patterns=0
duration=5s
case "${1:-}" in
--backend) backend=${2:?--backend needs redis, etcd or zk}; shift 2 ;;
--patterns) patterns=1; shift
    if [ "${1:-}" = "--duration" ]; then duration=${2:?}; shift 2; fi ;;
esac

dir=$(mktemp -d "${TMPDIR:-/tmp}/fence-lockbench-XXXXXX")
pids=""
cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    for p in $pids; do wait "$p" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM

# A free port: bind 0 and read it back (python3 if present, else a random high port).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null \
        || echo $((20000 + $$ % 20000 + $1))
}

wait_for() { # NAME LOG CMD...: polls CMD for up to 30 s
    name=$1 log=$2
    shift 2
    i=0
    until "$@" >/dev/null 2>&1; do
        i=$((i + 1))
        [ $i -lt 600 ] || { echo "lock_bench.sh: $name did not start" >&2; cat "$log" >&2; exit 1; }
        sleep 0.05
    done
}

start_redis() {
    redis=$(command -v redis-server || true)
    [ -n "$redis" ] || { echo "lock_bench.sh: redis-server not found (apt install redis-server)" >&2; exit 2; }
    rport=$(free_port 1)
    "$redis" --port "$rport" --bind 127.0.0.1 --dir "$dir" --save "" --appendonly no \
        --daemonize no --logfile "$dir/redis.log" ${LOCK_BENCH_REDIS_ARGS:-} &
    pids="$pids $!"
    wait_for redis "$dir/redis.log" redis-cli -p "$rport" ping
    redis_url="redis://127.0.0.1:$rport"
    echo "# redis-server $("$redis" --version | sed 's/.*v=\([^ ]*\).*/\1/') on 127.0.0.1:$rport, args: --save \"\" --appendonly no ${LOCK_BENCH_REDIS_ARGS:-}"
}

start_etcd() {
    etcd=$(command -v etcd || true)
    [ -n "$etcd" ] || { echo "lock_bench.sh: etcd not found (apt install etcd-server)" >&2; exit 2; }
    eport=$(free_port 2)
    pport=$(free_port 3)
    "$etcd" --name n1 --data-dir "$dir/etcd" --listen-client-urls "http://127.0.0.1:$eport" \
        --advertise-client-urls "http://127.0.0.1:$eport" --listen-peer-urls "http://127.0.0.1:$pport" \
        --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
        --initial-cluster "n1=http://127.0.0.1:$pport" >"$dir/etcd.log" 2>&1 &
    pids="$pids $!"
    wait_for etcd "$dir/etcd.log" curl -sf "http://127.0.0.1:$eport/health"
    etcd_url="etcd://127.0.0.1:$eport"
    echo "# $("$etcd" --version | head -1), one member on 127.0.0.1:$eport, default flags"
}

start_zk() {
    java=$(command -v java || true)
    jar=/usr/share/java/zookeeper.jar
    [ -n "$java" ] && [ -r "$jar" ] || { echo "lock_bench.sh: java or $jar missing (apt install zookeeper)" >&2; exit 2; }
    command -v python3 >/dev/null || { echo "lock_bench.sh: python3 needed to see ZooKeeper serve" >&2; exit 2; }
    zport=$(free_port 4)
    mkdir -p "$dir/zk"
    printf 'tickTime=2000\ndataDir=%s/zk\nclientPort=%s\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\n4lw.commands.whitelist=*\n' \
        "$dir" "$zport" >"$dir/zoo.cfg"
    cp="$jar"
    [ -r /usr/share/java/slf4j-simple.jar ] && cp="$cp:/usr/share/java/slf4j-simple.jar"
    "$java" -Xmx256m -cp "$cp" org.apache.zookeeper.server.ZooKeeperServerMain "$dir/zoo.cfg" \
        >"$dir/zk.log" 2>&1 &
    pids="$pids $!"
    # Serving once the four-letter "srvr" names a mode.
    wait_for zookeeper "$dir/zk.log" python3 -c "import socket; s=socket.create_connection(('127.0.0.1', $zport)); s.sendall(b'srvr'); assert b'Mode' in s.recv(4096)"
    zk_url="zk://127.0.0.1:$zport"
    echo "# ZooKeeper $(dpkg-query -W -f='${Version}' zookeeper 2>/dev/null || echo '?') (Debian), $("$java" -version 2>&1 | head -1), standalone on 127.0.0.1:$zport, tickTime=2000, forceSync on"
}

if [ "$patterns" = 0 ]; then
    case "$backend" in
    redis) start_redis; url=$redis_url ;;
    etcd) start_etcd; url=$etcd_url ;;
    zk) start_zk; url=$zk_url ;;
    *) echo "lock_bench.sh: --backend takes redis, etcd or zk" >&2; exit 2 ;;
    esac
    echo "# $bench --url $url $*"
    "$bench" --url "$url" "$@"
    exit 0
fi

start_redis
start_etcd
start_zk
echo "# machine: $(nproc) CPUs, $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1), load $(cut -d' ' -f1-3 /proc/loadavg)"
for url in "$redis_url" "$etcd_url" "$zk_url"; do
    # Not reported: warms the JVM's JIT and the servers' caches.
    "$bench" --url "$url" --clients 8 --duration 2s >/dev/null
    for mode in "" "--read" "--permits 8" "--permits 2"; do
        echo "# $bench --url $url --clients 8 --duration $duration $mode"
        # shellcheck disable=SC2086
        "$bench" --url "$url" --clients 8 --duration "$duration" $mode
    done
done
echo "# redis-benchmark -p $rport -c 8 -n 200000 -t set -q"
redis-benchmark -p "$rport" -c 8 -n 200000 -t set -q 2>/dev/null | tr '\r' '\n' | grep 'requests per second'
echo "# load at the end $(cut -d' ' -f1-3 /proc/loadavg)"
