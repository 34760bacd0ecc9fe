#!/usr/bin/env bash
# bench/verify.sh: the cost of verified routes (issue 16), in one run, on
# loopback. Starts in a fresh temp dir an nginx upstream (`return 204` for
# every PUT under /, the body read and discarded), a redis-server (no
# persistence), a one-member etcd (default flags: fsync on), and fenceproxy
# with a file (LMDB) store (or -s memory) and three routes of the same shape:
#   /vr/  verify = redis://...   /ve/  verify = etcd://...   /uv/  not verified
# (resource = segments:2, the lock name is the resource key; every case's
# resource names have the same length, so no case hashes or copies more).
#
# Part 1, wall clock (interleaved: for each round, each case):
#   advance cases (bench/verify_bench, -C clients): each cycle takes the
#     resource's lock (Redis or etcd), PUTs with its new token (an advance; on
#     /vr/ and /ve/ one backend check by the proxy), releases the lock. The
#     same client work on the verified route and on /uv/, against the same
#     lock backend: the difference is the proxy's check.
#   fixed-token cases (wrk -t2 -c64, bench/put.lua): the steady state of one
#     holder writing many times; under `fencelock run` holding the lock, all
#     requests carry its token (one check at the first on a verified route,
#     none after), on /vr/, /ve/ and /uv/.
#   Each run records fenceproxy's CPU time per request (/proc/PID/stat) and
#   fence_verify_calls_total before and after (one call per advance, none per
#   fixed-token request).
# Part 2, instructions (valgrind --tool=callgrind on fenceproxy, all its
#   threads): the same cases, one client, a fixed count each, counters zeroed
#   before and dumped after each case (callgrind_control): instructions per
#   request, deterministic where wall clock on this shared machine is not.
#
# Usage: bench/verify.sh [-b BUILD] [-r ROUNDS] [-d SECONDS] [-C CLIENTS]
#                        [-n COUNT] [-s file|memory] [-G] [-k]
#   -b  build dir with proxy/fenceproxy, lockclient/verify_bench and
#       lockclient/fencelock (default build)
#   -r  rounds (default 3); -d  seconds per run (default 5)
#   -C  clients of the advance cases (default 8; a 1-client case runs too)
#   -n  advances per callgrind case (default 300; fixed-token: 10x)
#   -s  the proxy's token store (default file; memory takes the fsync, whose
#       time varies most on a shared disk, out of every advance)
#   -G  skip part 2;  -k  keep the temp dir
# Environment: BENCH_TMPDIR (default /var/tmp: on disk, so fsyncs are real),
# BENCH_CPU_PROXY (0), BENCH_CPU_LOAD (1). Run it under `nice -n 10` on a
# shared machine. Everything started here is stopped by PID on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$ROOT/bench"
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

BUILD=$ROOT/build
ROUNDS=3
DURATION=5
CLIENTS=8
COUNT=300
CALLGRIND=1
KEEP=0
STORE=file
CPU_PROXY=${BENCH_CPU_PROXY:-0}
CPU_LOAD=${BENCH_CPU_LOAD:-1}
TMP_PARENT=${BENCH_TMPDIR:-/var/tmp}

source "$BENCH/lib.sh"

while getopts "b:r:d:C:n:s:Gkh" opt; do
    case $opt in
    b) BUILD=$OPTARG ;;
    r) ROUNDS=$OPTARG ;;
    d) DURATION=$OPTARG ;;
    C) CLIENTS=$OPTARG ;;
    n) COUNT=$OPTARG ;;
    s) STORE=$OPTARG ;;
    G) CALLGRIND=0 ;;
    k) KEEP=1 ;;
    h) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' >&2; exit 0 ;;
    *) exit 2 ;;
    esac
done
[[ $ROUNDS =~ ^[1-9][0-9]?$ ]] || die "-r wants 1..99"
[[ $DURATION =~ ^[1-9][0-9]?$ ]] || die "-d wants 1..99 seconds"
[[ $CLIENTS =~ ^[1-9][0-9]?$ ]] || die "-C wants 1..99"
[[ $COUNT =~ ^[1-9][0-9]{0,5}$ ]] || die "-n wants 1..999999"
[[ $STORE == file || $STORE == memory ]] || die "-s wants file or memory"
PROXY_BIN=$BUILD/proxy/fenceproxy
VB=$BUILD/lockclient/verify_bench
FENCELOCK=$BUILD/lockclient/fencelock
for f in "$PROXY_BIN" "$VB" "$FENCELOCK"; do
    [[ -x $f ]] || die "$f not built (cmake --build $BUILD)"
done
for tool in nginx wrk curl taskset redis-server redis-cli etcd; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found"
done
if ((CALLGRIND)); then
    command -v valgrind >/dev/null 2>&1 && command -v callgrind_control >/dev/null 2>&1 ||
        die "valgrind (callgrind_control) not found; -G skips part 2"
fi

WORK=$(mktemp -d "$TMP_PARENT/fence-verify.XXXXXX")
chmod 755 "$WORK"
PIDS=()
FP_PID=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pids "${PIDS[@]}" ${FP_PID:+"$FP_PID"}
    if ((KEEP)); then say "kept $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

UP_PORT=$(free_port)
REDIS_PORT=$(free_port)
ETCD_PORT=$(free_port)
ETCD_PEER=$(free_port)
FP_PORT=$(free_port)
FP_ADMIN=$(free_port)
REDIS_URL=redis://127.0.0.1:$REDIS_PORT
ETCD_URL=etcd://127.0.0.1:$ETCD_PORT

write_nginx_conf "$WORK/up" "
    server {
        listen 127.0.0.1:$UP_PORT;
        location / { return 204; }
    }"
mkdir -p "$WORK/fp" "$WORK/redis"
cat >"$WORK/fp/fenceproxy.conf" <<EOF
[proxy]
listen = 127.0.0.1:$FP_PORT
upstream = http://127.0.0.1:$UP_PORT
admin_listen = 127.0.0.1:$FP_ADMIN
access_log = off
log_level = warn

[store]
backend = $STORE
$([[ $STORE == file ]] && echo "path = $WORK/fp/store")

[audit]
path = $WORK/fp/audit.log

[route vr]
prefix = /vr/
resource = segments:2
verify = $REDIS_URL

[route ve]
prefix = /ve/
resource = segments:2
verify = $ETCD_URL

[route uv]
prefix = /uv/
resource = segments:2
EOF
"$PROXY_BIN" -t -c "$WORK/fp/fenceproxy.conf" >/dev/null || die "fenceproxy rejects the config"

say "temp dir $WORK ($(df -PT "$WORK" | awk 'NR == 2 { print $2 }'))"
say "pinning: fenceproxy on CPU $CPU_PROXY; nginx, redis, etcd and the clients on CPU $CPU_LOAD"
taskset -c "$CPU_LOAD" nginx -p "$WORK/up" -c "$WORK/up/nginx.conf" -e "$WORK/up/error.log" \
    2>"$WORK/up/stderr.log" &
PIDS+=($!)
taskset -c "$CPU_LOAD" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK/redis" \
    --save "" --appendonly no --logfile "$WORK/redis/redis.log" &
PIDS+=($!)
taskset -c "$CPU_LOAD" etcd --name n1 --data-dir "$WORK/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
    --initial-cluster "n1=http://127.0.0.1:$ETCD_PEER" >"$WORK/etcd.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$UP_PORT/" || die "nginx did not start: $(cat "$WORK/up/error.log")"
for _ in $(seq 200); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
redis-cli -p "$REDIS_PORT" ping >/dev/null || die "redis did not start"
for _ in $(seq 200); do
    curl -s --max-time 1 "http://127.0.0.1:$ETCD_PORT/health" | grep -q '"health":"true"' && break
    sleep 0.1
done
curl -s --max-time 1 "http://127.0.0.1:$ETCD_PORT/health" | grep -q '"health":"true"' ||
    die "etcd did not start: $(tail -5 "$WORK/etcd.log")"

# start_proxy [WRAPPER...]: fenceproxy on CPU_PROXY (under WRAPPER, e.g.
# valgrind); waits for its admin port.
start_proxy() {
    taskset -c "$CPU_PROXY" "$@" "$PROXY_BIN" -c "$WORK/fp/fenceproxy.conf" \
        2>>"$WORK/fp/stderr.log" &
    FP_PID=$!
    for _ in $(seq 600); do
        curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$FP_ADMIN/healthz" && return 0
        kill -0 "$FP_PID" 2>/dev/null || break
        sleep 0.1
    done
    die "fenceproxy did not start: $(tail -5 "$WORK/fp/stderr.log")"
}
stop_proxy() {
    stop_pids "$FP_PID"
    wait "$FP_PID" 2>/dev/null || true
    FP_PID=""
}

CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() {
    local f
    read -r -a f <"/proc/$FP_PID/stat" || die "fenceproxy is gone"
    echo $((f[13] + f[14]))
}
# counters: "CHECKS COMMIT_SECONDS COMMITS" from fenceproxy's /metrics.
counters() {
    curl -s --max-time 5 "http://127.0.0.1:$FP_ADMIN/metrics" | awk '
        $1 == "fence_verify_calls_total" { v = $2 }
        $1 == "fence_store_commit_duration_seconds_sum" { s = $2 }
        $1 == "fence_store_commit_duration_seconds_count" { c = $2 }
        END { printf "%d %.9f %d\n", v, s, c }'
}

# tag KASE: a resource tag of the same length for every case (c01, c02, ...).
declare -A TAGS=()
n=0
for k in adv-redis-verified adv-redis-plain adv1-redis-verified adv1-redis-plain \
    adv-etcd-verified adv-etcd-plain fixed-redis-verified fixed-etcd-verified fixed-plain \
    warm-redis warm-etcd warm-plain; do
    n=$((n + 1))
    TAGS[$k]=$(printf 'c%02d' "$n")
done
tag() { echo "${TAGS[$1]}"; }

RESULTS=$WORK/results.tsv
printf 'round\tcase\trps\tp50_us\tp99_us\tlock_p50_us\tnon2xx\terrors\tcalls_per_req\tload1\tcpu_us\tcommit_ms\n' \
    >"$RESULTS"

# record ROUND CASE OUTFILE TICKS0 CALLS0: parses the RESULT line of a run
# and appends a row.
record() {
    local round=$1 kase=$2 out=$3 t0=$4 line load1 t1 c0 s0 n0 c1 s1 n1
    read -r c0 s0 n0 <<<"$5"
    line=$(grep '^RESULT ' "$out") || die "no RESULT line: $(cat "$out")"
    t1=$(cpu_ticks)
    read -r c1 s1 n1 < <(counters)
    read -r load1 _ </proc/loadavg
    local mode clients cycles duration_us rps put_p50_us put_p99_us lock_p50_us non2xx errors
    local requests p50_us p99_us connect read write timeout
    eval "${line#RESULT }"
    if [[ -n ${cycles:-} ]]; then
        requests=$cycles p50_us=$put_p50_us p99_us=$put_p99_us
    else
        lock_p50_us=- errors=$((connect + read + write + timeout))
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$kase" "$rps" "$p50_us" \
        "$p99_us" "$lock_p50_us" "$non2xx" "$errors" \
        "$(awk -v c=$((c1 - c0)) -v n="$requests" 'BEGIN { printf "%.3f", (n > 0 ? c / n : 0) }')" \
        "$load1" \
        "$(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$requests" \
            'BEGIN { printf "%.1f", (n > 0 ? t * 1e6 / hz / n : 0) }')" \
        "$(awk -v s="$(awk -v a="$s0" -v b="$s1" 'BEGIN { print b - a }')" -v n=$((n1 - n0)) \
            'BEGIN { if (n > 0) printf "%.2f", s * 1e3 / n; else printf "-" }')" >>"$RESULTS"
    tail -n 1 "$RESULTS" | awk -F'\t' '{ printf "    round %s %-20s %9s req/s  p50 %6s us  p99 %7s us  cpu %6s us/req  calls/req %s  commit %s ms  non2xx %s  err %s\n", $1, $2, $3, $4, $5, $11, $9, $12, $7, $8 }' >&2
    [[ $non2xx == 0 && $errors == 0 ]] || say "warning: $kase had $non2xx non-2xx and $errors errors"
}

# adv ROUND CASE URL PREFIX CLIENTS
adv() {
    local round=$1 kase=$2 url=$3 prefix=$4 clients=$5 out t0 c0
    out=$WORK/run-$round-$kase.txt
    t0=$(cpu_ticks)
    c0=$(counters)
    taskset -c "$CPU_LOAD" "$VB" --url "$url" --port "$FP_PORT" --prefix "$prefix" \
        --tag "r$round-$(tag "$kase")" --clients "$clients" --duration "${DURATION}s" >"$out" 2>&1 || true
    record "$round" "$kase" "$out" "$t0" "$c0"
}

# fixed ROUND CASE URL PREFIX: wrk with the token of a lock held by
# `fencelock run` for the whole run.
fixed() {
    local round=$1 kase=$2 url=$3 prefix=$4 out t0 c0 name
    out=$WORK/run-$round-$kase.txt
    name="${prefix}r$round-$(tag "$kase")"
    t0=$(cpu_ticks)
    c0=$(counters)
    taskset -c "$CPU_LOAD" "$FENCELOCK" --backend "$url" run "$name" --ttl 60s -- \
        sh -c 'BENCH_TOKEN=$FENCE_TOKEN exec wrk -t2 -c64 -d"$1" --latency -s "$2" "$3"' sh \
        "${DURATION}s" "$BENCH/put.lua" "http://127.0.0.1:$FP_PORT$name/o" >"$out" 2>&1 || true
    record "$round" "$kase" "$out" "$t0" "$c0"
}

start_proxy
# Smoke: a forged token on a verified route is refused, the unverified one
# takes it; so the routes are what the tables say.
code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H 'Fencing-Token: 999' --data x \
    "http://127.0.0.1:$FP_PORT/vr/smoke/o")
[[ $code == 403 ]] || die "verified route /vr/ answered $code to a forged token (want 403)"
code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H 'Fencing-Token: 999' --data x \
    "http://127.0.0.1:$FP_PORT/uv/smoke/o")
[[ $code == 204 ]] || die "unverified route /uv/ answered $code (want 204)"

say "warm-up"
taskset -c "$CPU_LOAD" "$VB" --url "$REDIS_URL" --port "$FP_PORT" --prefix /vr/ --tag warm \
    --clients "$CLIENTS" --duration 1s >/dev/null || die "warm-up failed"

start=$(date +%s)
for round in $(seq "$ROUNDS"); do
    say "round $round/$ROUNDS"
    adv "$round" adv-redis-verified "$REDIS_URL" /vr/ "$CLIENTS"
    adv "$round" adv-redis-plain "$REDIS_URL" /uv/ "$CLIENTS"
    adv "$round" adv1-redis-verified "$REDIS_URL" /vr/ 1
    adv "$round" adv1-redis-plain "$REDIS_URL" /uv/ 1
    adv "$round" adv-etcd-verified "$ETCD_URL" /ve/ "$CLIENTS"
    adv "$round" adv-etcd-plain "$ETCD_URL" /uv/ "$CLIENTS"
    fixed "$round" fixed-redis-verified "$REDIS_URL" /vr/
    fixed "$round" fixed-etcd-verified "$ETCD_URL" /ve/
    fixed "$round" fixed-plain "$REDIS_URL" /uv/
done
elapsed=$(($(date +%s) - start))
stop_proxy

# ---- Part 2: instructions per request under callgrind ----------------------
CG=$WORK/callgrind.tsv
printf 'case\trequests\tinstructions\tper_request\n' >"$CG"
if ((CALLGRIND)); then
    say "part 2: fenceproxy under callgrind ($COUNT advances, $((COUNT * 10)) fixed-token PUTs a case)"
    start_proxy valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" --log-file="$WORK/vg.log"
    # cg COUNT CASE URL PREFIX [--fixed]: one client, counters zeroed before and
    # dumped after.
    cg() {
        local n=$1 kase=$2 url=$3 prefix=$4 out ir
        shift 4
        callgrind_control -z "$FP_PID" >/dev/null
        taskset -c "$CPU_LOAD" "$VB" --url "$url" --port "$FP_PORT" --prefix "$prefix" \
            --tag "cg-$(tag "$kase")" --count "$n" "$@" >"$WORK/cg-$kase.txt" 2>&1 ||
            die "callgrind case $kase failed: $(cat "$WORK/cg-$kase.txt")"
        rm -f "$WORK"/cg.out.*
        callgrind_control -d "$FP_PID" >/dev/null
        for _ in $(seq 100); do ls "$WORK"/cg.out.* >/dev/null 2>&1 && break; sleep 0.1; done
        out=$(ls "$WORK"/cg.out.* | head -n 1)
        ir=$(awk '/^summary:/ { print $2 }' "$out")
        printf '%s\t%s\t%s\t%s\n' "$kase" "$n" "$ir" "$(awk -v i="$ir" -v n="$n" \
            'BEGIN { printf "%.0f", i / n }')" >>"$CG"
        tail -n 1 "$CG" | awk -F'\t' '{ printf "    %-22s %7s requests  %12s instructions  %9s per request\n", $1, $2, $3, $4 }' >&2
    }
    # First requests of a process (lazy initialisation, page faults) are not
    # what is measured: one warm-up per kind.
    cg 20 warm-redis "$REDIS_URL" /vr/
    cg 20 warm-etcd "$ETCD_URL" /ve/
    cg 20 warm-plain "$REDIS_URL" /uv/
    cg "$COUNT" adv-redis-verified "$REDIS_URL" /vr/
    cg "$COUNT" adv-redis-plain "$REDIS_URL" /uv/
    cg "$COUNT" adv-etcd-verified "$ETCD_URL" /ve/
    cg "$COUNT" adv-etcd-plain "$ETCD_URL" /uv/
    cg $((COUNT * 10)) fixed-redis-verified "$REDIS_URL" /vr/ --fixed
    cg $((COUNT * 10)) fixed-etcd-verified "$ETCD_URL" /ve/ --fixed
    cg $((COUNT * 10)) fixed-plain "$REDIS_URL" /uv/ --fixed
    stop_proxy
fi

# ---- Summary ---------------------------------------------------------------
med() {
    awk -F'\t' -v k="$1" -v c="$2" 'NR > 1 && $2 == k && $c != "-" { v[n++] = $c } END {
        if (n == 0) { print "-"; exit }
        for (i = 1; i < n; i++) for (j = i; j > 0 && v[j - 1] + 0 > v[j] + 0; j--) {
            x = v[j]; v[j] = v[j - 1]; v[j - 1] = x }
        print v[int((n - 1) / 2)] }' "$RESULTS"
}
total() {
    awk -F'\t' -v k="$1" -v c="$2" 'NR > 1 && $2 == k { s += $c } END { printf "%d\n", s }' "$RESULTS"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0 || a == "-") print "-"; else printf "%.2f\n", a / b }'; }
int() { awk -v a="$1" 'BEGIN { printf "%.0f\n", a }'; }
cgv() { awk -F'\t' -v k="$1" '$1 == k { print $4 }' "$CG"; }

cat <<EOF

### Run
- fenceproxy: $PROXY_BIN (built $(date -r "$PROXY_BIN" '+%F %T')); repository HEAD at run time: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
- $ROUNDS rounds x ${DURATION} s per run, interleaved; medians over the rounds; part 1 took ${elapsed} s
- machine: $(machine_desc)
- token store: $([[ $STORE == file ]] && echo "file (LMDB) on $(df -PT "$WORK" | awk 'NR == 2 { print $2 }') under $TMP_PARENT" || echo "memory (no fsync)"); $(redis-server --version | awk '{ print "Redis " substr($3, 3) }') (no persistence); etcd $(etcd --version | awk '/^etcd Version/ { print $3 }') one member, default flags; $(nginx -v 2>&1 | sed 's/^nginx version: //'); $(wrk -v 2>&1 | head -n 1 | awk '{ print "wrk " $2 }')
- pinning: fenceproxy on CPU $CPU_PROXY; nginx, Redis, etcd, verify_bench and wrk on CPU $CPU_LOAD
- 1-minute load average after each run: $(awk -F'\t' 'NR > 1 { v = $10 + 0; if (n++ == 0 || v < min) min = v; if (v > max) max = v } END { print "min " min ", max " max }' "$RESULTS")

#### Advances: lock, PUT with the new token, unlock (verify_bench)

| case | clients | cycles/s | PUT p50 (us) | PUT p99 (us) | lock+unlock p50 (us) | store commit avg (ms) | fenceproxy CPU us/req | checks per request | non-2xx + errors |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|
EOF
declare -A LABEL=([adv-redis-verified]="Redis, /vr/ verified" [adv-redis-plain]="Redis, /uv/ not verified"
    [adv1-redis-verified]="Redis, /vr/ verified" [adv1-redis-plain]="Redis, /uv/ not verified"
    [adv-etcd-verified]="etcd, /ve/ verified" [adv-etcd-plain]="etcd, /uv/ not verified"
    [fixed-redis-verified]="/vr/ verified (Redis)" [fixed-etcd-verified]="/ve/ verified (etcd)"
    [fixed-plain]="/uv/ not verified")
for k in adv-redis-verified adv-redis-plain adv1-redis-verified adv1-redis-plain adv-etcd-verified adv-etcd-plain; do
    c=$CLIENTS
    [[ $k == adv1-* ]] && c=1
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "${LABEL[$k]}" "$c" "$(int "$(med "$k" 3)")" \
        "$(med "$k" 4)" "$(med "$k" 5)" "$(med "$k" 6)" "$(med "$k" 12)" "$(med "$k" 11)" "$(med "$k" 9)" \
        $(($(total "$k" 7) + $(total "$k" 8)))
done
cat <<EOF

| pair | verified / not verified cycles/s | PUT p50 | fenceproxy CPU per request |
|---|---:|---:|---:|
EOF
for pair in "adv-redis-verified adv-redis-plain Redis, $CLIENTS clients" "adv1-redis-verified adv1-redis-plain Redis, 1 client" \
    "adv-etcd-verified adv-etcd-plain etcd, $CLIENTS clients"; do
    read -r v p label <<<"$pair"
    printf '| %s | %s | %s | %s |\n' "$label" "$(ratio "$(med "$v" 3)" "$(med "$p" 3)")" \
        "$(ratio "$(med "$v" 4)" "$(med "$p" 4)")" "$(ratio "$(med "$v" 11)" "$(med "$p" 11)")"
done
cat <<EOF

#### Fixed token: one holder, PUT 1 KiB, wrk -t2 -c64

| route | req/s | p50 (us) | p99 (us) | fenceproxy CPU us/req | checks per request | non-2xx + errors | req/s / not verified | CPU / not verified |
|---|---:|---:|---:|---:|---:|---:|---:|---:|
EOF
for k in fixed-redis-verified fixed-etcd-verified fixed-plain; do
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "${LABEL[$k]}" "$(int "$(med "$k" 3)")" \
        "$(med "$k" 4)" "$(med "$k" 5)" "$(med "$k" 11)" "$(med "$k" 9)" \
        $(($(total "$k" 7) + $(total "$k" 8))) "$(ratio "$(med "$k" 3)" "$(med fixed-plain 3)")" \
        "$(ratio "$(med "$k" 11)" "$(med fixed-plain 11)")"
done
if ((CALLGRIND)); then
    cat <<EOF

#### Instructions per request (callgrind, fenceproxy's threads, 1 client)

| case | requests | instructions per request | verified / not verified |
|---|---:|---:|---:|
EOF
    for k in adv-redis-verified adv-redis-plain adv-etcd-verified adv-etcd-plain fixed-redis-verified fixed-etcd-verified fixed-plain; do
        p=adv-redis-plain
        [[ $k == adv-etcd-* ]] && p=adv-etcd-plain
        [[ $k == fixed-* ]] && p=fixed-plain
        printf '| %s | %s | %s | %s |\n' "$k" "$(awk -F'\t' -v k="$k" '$1 == k { print $2 }' "$CG")" \
            "$(cgv "$k")" "$(ratio "$(cgv "$k")" "$(cgv "$p")")"
    done
fi
echo
echo "#### Per-run figures"
echo
echo '```'
column -t -s $'\t' "$RESULTS"
((CALLGRIND)) && column -t -s $'\t' "$CG"
echo '```'
