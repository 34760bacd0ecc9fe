#!/usr/bin/env bash
# bench/etcd_owners.sh: several proxies over etcd (issue 14), one run on
# loopback. Starts a 3-member etcd cluster, an nginx upstream that answers
# 204 to every PUT under /w/ (body read and discarded), fenceproxy with the
# file store (the local reference) and two fenceproxy processes with the etcd
# store, then measures, interleaved over the rounds:
#   - etcd alone (bench/etcd_alone.c): raw advance-shaped txns/s at 64
#     connections, and the etcd token store alone (no proxy) with group commit;
#   - fixed-token PUT 1 KiB (put.lua, wrk -t2 -c64) through the owner proxy,
#     next to the file-store proxy: the cost of ownership on the fast path;
#   - advancing PUT (advance.lua, wrk -t64 -c64: every request raises its own
#     resource's token), file store vs etcd store: advances/s through etcd
#     with group commit;
#   - hand-over latency: a PUT through proxy 2 for a resource proxy 1 owns
#     (idle), alternating, N times, p50/p99 of curl's total time.
# Prints Markdown tables on stdout, progress on stderr.
# Usage: bench/etcd_owners.sh [-b BUILD_DIR] [-r ROUNDS] [-d SECONDS] [-n HANDOVERS] [-k]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$ROOT/bench"
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
BUILD=$ROOT/build
ROUNDS=3
DURATION=5
HANDOVERS=50
KEEP=0
source "$BENCH/lib.sh"
while getopts "b:r:d:n:kh" opt; do
    case $opt in
    b) BUILD=$OPTARG ;; r) ROUNDS=$OPTARG ;; d) DURATION=$OPTARG ;; n) HANDOVERS=$OPTARG ;;
    k) KEEP=1 ;;
    h) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' >&2; exit 0 ;;
    *) exit 2 ;;
    esac
done
PROXY_BIN=$BUILD/proxy/fenceproxy
[[ -x $PROXY_BIN ]] || die "fenceproxy not found: $PROXY_BIN (build first, or -b)"
for tool in etcd nginx wrk curl cc; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found (scripts/deps.sh)"
done
for lib in store/libfencestore.a etcd/libfenceetcd.a common/libfencecommon.a; do
    [[ -f $BUILD/$lib ]] || die "$BUILD/$lib missing: build first"
done

WORK=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/fence-owners.XXXXXX")
chmod 755 "$WORK"
PIDS=()
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pids "${PIDS[@]}"
    if ((KEEP)); then say "kept $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cc -O2 -std=c11 -D_GNU_SOURCE -I"$ROOT/store" -I"$ROOT/etcd" -o "$WORK/etcd_alone" \
    "$BENCH/etcd_alone.c" "$BUILD/store/libfencestore.a" "$BUILD/etcd/libfenceetcd.a" \
    "$BUILD/common/libfencecommon.a" -llmdb -lcurl -ljson-c -lpthread

# A 3-member cluster, each member in its own data dir.
CP=() PP=()
for i in 0 1 2; do CP+=("$(free_port)"); PP+=("$(free_port)"); done
CLUSTER="m0=http://127.0.0.1:${PP[0]},m1=http://127.0.0.1:${PP[1]},m2=http://127.0.0.1:${PP[2]}"
for i in 0 1 2; do
    etcd --name "m$i" --data-dir "$WORK/etcd$i" \
        --listen-client-urls "http://127.0.0.1:${CP[$i]}" \
        --advertise-client-urls "http://127.0.0.1:${CP[$i]}" \
        --listen-peer-urls "http://127.0.0.1:${PP[$i]}" \
        --initial-advertise-peer-urls "http://127.0.0.1:${PP[$i]}" \
        --initial-cluster "$CLUSTER" --initial-cluster-state new \
        --initial-cluster-token fence-bench >"$WORK/etcd$i.log" 2>&1 &
    PIDS+=($!)
done
EPS="127.0.0.1:${CP[0]},127.0.0.1:${CP[1]},127.0.0.1:${CP[2]}"
for i in 0 1 2; do
    for _ in $(seq 200); do
        curl -s --max-time 1 "http://127.0.0.1:${CP[$i]}/health" | grep -q '"true"' && break
        sleep 0.05
    done
done

UP_PORT=$(free_port)
mkdir -p "$WORK/up"
write_nginx_conf "$WORK/up" "
    server {
        listen 127.0.0.1:$UP_PORT;
        location /w/ { return 204; }
    }"
nginx -c "$WORK/up/nginx.conf" -p "$WORK/up" >"$WORK/up/out.log" 2>&1 &
PIDS+=($!)

# start_proxy NAME STORE_SECTION: a fenceproxy in $WORK/NAME; sets PORT_NAME.
start_proxy() {
    local name=$1 store=$2 port admin
    port=$(free_port)
    admin=$(free_port)
    mkdir -p "$WORK/$name"
    cat >"$WORK/$name/fenceproxy.conf" <<CONF
[proxy]
listen = 127.0.0.1:$port
upstream = http://127.0.0.1:$UP_PORT
admin_listen = 127.0.0.1:$admin
access_log = off
log_level = warn
upstream_timeout = 5s

$store

[route w]
prefix = /w/
resource = segments:4
CONF
    "$PROXY_BIN" -c "$WORK/$name/fenceproxy.conf" >"$WORK/$name/log" 2>&1 &
    PIDS+=($!)
    wait_http "http://127.0.0.1:$port/" || die "fenceproxy $name did not start ($WORK/$name/log)"
    printf -v "PORT_$name" '%s' "$port"
}
start_proxy file "[store]
backend = file
path = $WORK/file/store"
ETCD_STORE="[store]
backend = etcd
endpoints = $EPS
prefix = /bench/
handover_wait = 5s"
start_proxy etcd1 "$ETCD_STORE"
start_proxy etcd2 "$ETCD_STORE"

say "machine: $(machine_desc)"
say "etcd alone"
# etcd_cpu: CPU seconds the three members used so far.
etcd_cpu() {
    local t=0 pid
    for pid in "${PIDS[@]:0:3}"; do t=$((t + $(awk '{ print $14 + $15 }' "/proc/$pid/stat"))); done
    awk -v t="$t" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz }'
}
# alone ARGS...: one etcd_alone run, with the etcd CPU it cost.
alone() {
    local c0 c1 out
    c0=$(etcd_cpu)
    out=$("$WORK/etcd_alone" "$EPS" "$DURATION" "$@")
    c1=$(etcd_cpu)
    echo "$out (etcd members: $(awk -v a="$c0" -v b="$c1" -v d="$DURATION" 'BEGIN { printf "%.2f", (b - a) / d }') CPU cores busy)"
}
ALONE=$(alone 64 64 txn; alone 0 64 store; alone 0 1024 store)
echo "$ALONE" >&2

# wrk_rps PORT SCRIPT THREADS CONNS PATH [ARGS]: prints req/s; non-2xx fail it.
wrk_rps() {
    local port=$1 script=$2 t=$3 c=$4 path=$5 out
    shift 5
    out=$(wrk -t"$t" -c"$c" -d"${DURATION}s" -s "$BENCH/$script" \
        "http://127.0.0.1:$port$path" -- "$@" 2>&1)
    if grep -q "Non-2xx" <<<"$out"; then
        echo "bench: non-2xx answers: $out" >&2
    fi
    awk '/^Requests\/sec/ { print $2 }' <<<"$out"
}
declare -A R
for r in $(seq "$ROUNDS"); do
    for target in file etcd1; do
        port_var=PORT_$target
        port=${!port_var}
        v=$(wrk_rps "$port" put.lua 2 64 "/w/fixed/$target/r/o")
        R[fixed,$target]+="$v "
        say "round $r $target fixed-token PUT: $v req/s"
        v=$(wrk_rps "$port" advance.lua 64 64 "/w/a" "r$r$target")
        R[adv,$target]+="$v "
        say "round $r $target advancing PUT: $v req/s"
    done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

say "hand-over latency ($HANDOVERS alternations)"
: >"$WORK/handover.txt"
tok=1
for i in $(seq "$HANDOVERS"); do
    for target in etcd1 etcd2; do
        port_var=PORT_$target
        t=$(curl -s -o /dev/null -w '%{http_code} %{time_total}\n' -X PUT --data-binary x \
            -H "Fencing-Token: $tok" "http://127.0.0.1:${!port_var}/w/h/res/x/o")
        [[ $target == etcd2 ]] && echo "$t" >>"$WORK/handover.txt"
        [[ $target == etcd1 ]] && [[ $i -gt 1 ]] && echo "$t" >>"$WORK/handover.txt"
    done
done
bad=$(awk '$1 != 204 && $1 != 200' "$WORK/handover.txt" | wc -l)
read -r p50 p99 <<<"$(awk '{ print $2 * 1000 }' "$WORK/handover.txt" | sort -n |
    awk '{ a[NR] = $1 } END { printf "%.0f %.0f\n", a[int(NR * 0.5 + 0.5)], a[int(NR * 0.99 + 0.5)] }')"

f_file=$(median <<<"${R[fixed,file]}")
f_etcd=$(median <<<"${R[fixed,etcd1]}")
a_file=$(median <<<"${R[adv,file]}")
a_etcd=$(median <<<"${R[adv,etcd1]}")
echo "Machine: $(machine_desc); etcd $(etcd --version | awk 'NR == 1 { print $3 }'), 3 members on loopback; $ROUNDS rounds of ${DURATION}s, medians."
echo
echo "| case | file store | etcd store (owner) | etcd / file |"
echo "|---|---|---|---|"
awk -v a="$f_file" -v b="$f_etcd" 'BEGIN { printf "| fixed-token PUT 1 KiB, 64 conn | %.0f req/s | %.0f req/s | %.2f |\n", a, b, b / a }'
awk -v a="$a_file" -v b="$a_etcd" 'BEGIN { printf "| advancing PUT, 64 resources, 64 conn | %.0f advances/s | %.0f advances/s | %.2f |\n", a, b, b / a }'
echo
echo "$ALONE" | sed 's/^/    /'
echo
echo "Hand-over (PUT through the other proxy, resource owned and idle): p50 $p50 ms, p99 $p99 ms over $(wc -l <"$WORK/handover.txt") hand-overs, $bad not 2xx."
