#!/usr/bin/env bash
# bench/abuse.sh: fenceproxy, nginx and HAProxy under abusive clients, in one
# run, on loopback (the table of issue 19). It starts, in a fresh temp dir, an
# nginx upstream (static 1 KiB file for GET; WebDAV PUT under /w/, which
# answers only once the whole body is in) and three proxies in front of it: nginx (proxy_pass to a keepalive
# upstream), HAProxy (mode http) and fenceproxy (memory store). The clients
# are bench/abuse_client.py. Cases, interleaved (for each case, each proxy):
#   idle     N connections (default 10,000) that send nothing: RSS of the
#            proxy before, with them open, after one GET on each (keep-alive
#            idle); memory per connection = RSS delta / connections open;
#   flood    a client that pipelines GETs of the 1 KiB object and never
#            reads, on 1 and on 4 connections, FLOOD seconds each (default
#            20): the proxy's RSS at the start, its maximum, at the end;
#            then the client reads for 1 s and counts the responses;
#   latency  legitimate GETs at 200/s, a new connection each (open loop,
#            latency from the time each was due), for LEGIT seconds (default
#            10): alone, then with A (default 1,000) slowloris clients (a
#            request head one byte every 2 s, never finished, reconnected
#            when closed), then with A slow bodies (a PUT with
#            Content-Length 1 MiB, 64 bytes of body every 2 s); the attackers
#            start 3 s before the legitimate client.
# The proxies are restarted before each case group (idle, flood 1, flood 4,
# latency), so memory freed by one case is not reused by the next.
# Timeouts as close to fenceproxy's defaults as each proxy can say them:
# request head 10 s (fenceproxy header_timeout, nginx client_header_timeout,
# HAProxy timeout http-request), keep-alive idle 60 s, upstream connect 5 s,
# upstream response 60 s (nginx proxy_read_timeout, HAProxy timeout server),
# client inactivity 60 s (nginx send_timeout/client_body_timeout, HAProxy
# timeout client); listen backlog 1024 everywhere.
# RSS is the VmRSS of the process that serves connections: the nginx worker,
# the (single) HAProxy process, fenceproxy. Progress goes to stderr; Markdown
# tables and the machine description to stdout.
#
# Pinning (2 cores): the proxy under test on CPU $CPU_PROXY; upstream nginx
# and every client on CPU $CPU_LOAD.
#
# Usage: bench/abuse.sh [-b FENCEPROXY] [-d FLOOD] [-l LEGIT] [-n IDLE] [-a ATTACKERS] [-k]
#   -b  fenceproxy binary (default: build/proxy/fenceproxy, or $FENCE_PROXY_BIN)
#   -d  seconds per flood run (default 20); -l  seconds per latency run (10)
#   -n  idle connections (default 10000); -a  attackers (default 1000)
#   -k  keep the temp dir (configs, logs, raw results) and print its path
# Environment: BENCH_TMPDIR (parent of the temp dir, default /var/tmp),
# BENCH_CPU_PROXY (0), BENCH_CPU_LOAD (1).
# About 5 minutes with the defaults. Everything started here is stopped by
# PID on exit, also on Ctrl-C.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$ROOT/bench"
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
source "$BENCH/lib.sh"

PROXY_BIN=${FENCE_PROXY_BIN:-$ROOT/build/proxy/fenceproxy}
FLOOD=20
LEGIT=10
IDLE=10000
ATTACKERS=1000
KEEP=0
CPU_PROXY=${BENCH_CPU_PROXY:-0}
CPU_LOAD=${BENCH_CPU_LOAD:-1}
TMP_PARENT=${BENCH_TMPDIR:-/var/tmp}

while getopts "b:d:l:n:a:kh" opt; do
    case $opt in
    b) PROXY_BIN=$OPTARG ;;
    d) FLOOD=$OPTARG ;;
    l) LEGIT=$OPTARG ;;
    n) IDLE=$OPTARG ;;
    a) ATTACKERS=$OPTARG ;;
    k) KEEP=1 ;;
    h) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' >&2; exit 0 ;;
    *) exit 2 ;;
    esac
done
[[ $FLOOD =~ ^[1-9][0-9]?$ ]] || die "-d wants 1..99 seconds"
[[ $LEGIT =~ ^[1-9][0-9]?$ ]] || die "-l wants 1..99 seconds"
[[ $IDLE =~ ^[1-9][0-9]{0,4}$ ]] && ((IDLE <= 15000)) || die "-n wants 1..15000"
[[ $ATTACKERS =~ ^[1-9][0-9]{0,3}$ ]] && ((ATTACKERS <= 4000)) || die "-a wants 1..4000"
[[ -x $PROXY_BIN ]] || die "fenceproxy not found: $PROXY_BIN (build it, or use -b)"
for tool in nginx haproxy python3 curl taskset pgrep; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found"
done
ncpu=$(nproc)
((CPU_PROXY < ncpu && CPU_LOAD < ncpu)) || die "CPUs $CPU_PROXY/$CPU_LOAD not present"

# Descriptors: the clients and the proxies inherit the hard limit.
ulimit -n "$(ulimit -Hn)" || die "cannot raise RLIMIT_NOFILE to its hard limit"
NOFILE=$(ulimit -n)

WORK=$(mktemp -d "$TMP_PARENT/fence-abuse.XXXXXX")
chmod 755 "$WORK" # nginx workers must read it
UP_PID=""
CLIENT_PID=""
declare -A PID=() SERVE=()

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $CLIENT_PID ]]; then stop_pids "$CLIENT_PID"; fi
    stop_pids ${PID[@]+"${PID[@]}"} ${UP_PID:+"$UP_PID"}
    if ((KEEP)); then say "kept $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

UP_PORT=$(free_port)
declare -A PORT=([ngx]=$(free_port) [hap]=$(free_port) [fp]=$(free_port))
FP_ADMIN=$(free_port)
TARGETS="ngx hap fp"
declare -A NAME=([ngx]="nginx" [hap]="HAProxy" [fp]="fenceproxy")

# ---- Configurations ---------------------------------------------------------
# nginx counts client and upstream connections in worker_connections.
export NGINX_WORKER_CONNECTIONS=16384
export NGINX_MAIN_EXTRA="worker_rlimit_nofile $NOFILE;"
mkdir -p "$WORK/up/www"
head -c 1024 /dev/zero | tr '\0' 'a' >"$WORK/up/www/1k.bin"
write_nginx_conf "$WORK/up" "
    server {
        listen 127.0.0.1:$UP_PORT backlog=1024;
        root $WORK/up/www;
        client_max_body_size 2m;
        # PUT: WebDAV, which answers once the whole body is in, like a
        # storage server. (With 'return 204' nginx answers at the head,
        # and a proxy then closes a slow body at once: no slow body.)
        location /w/ {
            dav_methods PUT;
            create_full_put_path on;
        }
    }"
write_nginx_conf "$WORK/ngx" "
    upstream up {
        server 127.0.0.1:$UP_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:${PORT[ngx]} backlog=1024;
        keepalive_timeout 60s;
        client_header_timeout 10s;
        client_body_timeout 60s;
        send_timeout 60s;
        client_max_body_size 2m;
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_connect_timeout 5s;
            proxy_read_timeout 60s;
            proxy_send_timeout 60s;
        }
    }"

mkdir -p "$WORK/hap"
# nbthread 1: one event loop, like the nginx worker and fenceproxy. No
# maxconn: HAProxy derives it from RLIMIT_NOFILE (it reserves 2 descriptors
# per connection and refuses to start when maxconn does not fit, as
# fenceproxy would lower it).
cat >"$WORK/hap/haproxy.cfg" <<EOF
global
    nbthread 1
defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 60s
frontend fe
    bind 127.0.0.1:${PORT[hap]} backlog 1024
    default_backend be
backend be
    server up 127.0.0.1:$UP_PORT
EOF
haproxy -c -q -f "$WORK/hap/haproxy.cfg" || die "haproxy rejects its config"

mkdir -p "$WORK/fp"
# max_connections is the default (10000); header_timeout 10s, idle_timeout
# 60s, upstream_connect_timeout 5s, upstream_timeout 60s are the defaults.
cat >"$WORK/fp/fenceproxy.conf" <<EOF
[proxy]
listen = 127.0.0.1:${PORT[fp]}
upstream = http://127.0.0.1:$UP_PORT
admin_listen = 127.0.0.1:$FP_ADMIN
access_log = off
log_level = warn

[store]
backend = memory

; Not exercised here: the proxy fences like in production, the cases use
; unrouted paths (GET /1k.bin, PUT /w/u/...).
[route fenced]
prefix = /w/f/
EOF
"$PROXY_BIN" -t -c "$WORK/fp/fenceproxy.conf" >"$WORK/fp/check.log" 2>&1 ||
    die "fenceproxy rejects the config: $(cat "$WORK/fp/check.log")"

# ---- Servers ----------------------------------------------------------------
taskset -c "$CPU_LOAD" nginx -p "$WORK/up" -c "$WORK/up/nginx.conf" -e "$WORK/up/error.log" \
    2>"$WORK/up/stderr.log" &
UP_PID=$!
wait_http "http://127.0.0.1:$UP_PORT/1k.bin" || die "upstream did not start: $(cat "$WORK/up/error.log")"

# start_proxies: (re)starts the three proxies on CPU_PROXY and finds the
# process of each that serves connections (SERVE).
start_proxies() {
    local t
    if ((${#PID[@]})); then stop_pids "${PID[@]}"; fi
    taskset -c "$CPU_PROXY" nginx -p "$WORK/ngx" -c "$WORK/ngx/nginx.conf" -e "$WORK/ngx/error.log" \
        2>>"$WORK/ngx/stderr.log" &
    PID[ngx]=$!
    taskset -c "$CPU_PROXY" haproxy -f "$WORK/hap/haproxy.cfg" 2>>"$WORK/hap/stderr.log" &
    PID[hap]=$!
    taskset -c "$CPU_PROXY" "$PROXY_BIN" -c "$WORK/fp/fenceproxy.conf" 2>>"$WORK/fp/stderr.log" &
    PID[fp]=$!
    for t in $TARGETS; do
        wait_http "http://127.0.0.1:${PORT[$t]}/1k.bin" ||
            die "${NAME[$t]} did not start: $(tail -n 5 "$WORK/$t/stderr.log")"
    done
    SERVE[ngx]=$(pgrep -P "${PID[ngx]}" | head -n 1)
    [[ -n ${SERVE[ngx]} ]] || die "no nginx worker under ${PID[ngx]}"
    SERVE[hap]=${PID[hap]}
    SERVE[fp]=${PID[fp]}
}

RAW="$WORK/results.txt"
: >"$RAW"
CLIENT="$BENCH/abuse_client.py"

# client CASE TARGET ARGS...: one run of the client against TARGET on
# CPU_LOAD; its result line goes to $RAW as "CASE TARGET load1=L key=value...".
client() {
    local kase=$1 t=$2 load1 line
    shift 2
    read -r load1 _ </proc/loadavg
    line=$(taskset -c "$CPU_LOAD" python3 "$CLIENT" "$@" --port "${PORT[$t]}") ||
        die "client $* failed against ${NAME[$t]}"
    kill -0 "${PID[$t]}" 2>/dev/null || die "${NAME[$t]} died during $kase"
    printf '%s %s load1=%s %s\n' "$kase" "$t" "$load1" "$line" >>"$RAW"
    say "$(printf '%-10s %-10s' "$kase" "${NAME[$t]}") load $load1  $line"
}

# attacked KIND TARGET: legitimate GETs while KIND (slowloris or slowbody)
# attackers hold connections to TARGET.
attacked() {
    local kind=$1 t=$2 ready="$WORK/ready" aline
    rm -f "$ready"
    taskset -c "$CPU_LOAD" python3 "$CLIENT" "$kind" --port "${PORT[$t]}" --conns "$ATTACKERS" \
        --seconds $((LEGIT + 30)) --ready "$ready" >"$WORK/attack.out" &
    CLIENT_PID=$!
    for _ in $(seq 100); do
        [[ -e $ready ]] && break
        sleep 0.1
    done
    [[ -e $ready ]] || say "warning: not all $ATTACKERS $kind connections opened within 10 s"
    sleep 3
    client "$kind" "$t" legit --seconds "$LEGIT"
    stop_pids "$CLIENT_PID"
    wait "$CLIENT_PID" 2>/dev/null || true
    CLIENT_PID=""
    aline=$(cat "$WORK/attack.out")
    [[ -n $aline ]] || die "the $kind attacker printed nothing"
    printf '%s-attacker %s %s\n' "$kind" "$t" "$aline" >>"$RAW"
    say "$(printf '%-10s %-10s' "attacker" "${NAME[$t]}") $aline"
    sleep 1 # let the proxy close what the attackers left
}

say "temp dir $WORK; RLIMIT_NOFILE $NOFILE"
say "ports: upstream $UP_PORT, nginx ${PORT[ngx]}, HAProxy ${PORT[hap]}, fenceproxy ${PORT[fp]}"
start=$(date +%s)

say "idle connections: $IDLE"
start_proxies
for t in $TARGETS; do client idle "$t" idle --pid "${SERVE[$t]}" --conns "$IDLE"; done

for k in 1 4; do
    say "pipelining flood, $k connection(s), ${FLOOD} s"
    start_proxies
    for t in $TARGETS; do
        client "flood$k" "$t" flood --pid "${SERVE[$t]}" --conns "$k" --seconds "$FLOOD"
    done
done

say "legitimate GETs at 200/s for ${LEGIT} s: alone, with $ATTACKERS slowloris, with $ATTACKERS slow bodies"
start_proxies
for t in $TARGETS; do client base "$t" legit --seconds "$LEGIT"; done
for t in $TARGETS; do attacked slowloris "$t"; done
for t in $TARGETS; do attacked slowbody "$t"; done
elapsed=$(($(date +%s) - start))
say "measured in ${elapsed}s"

curl -s --max-time 5 "http://127.0.0.1:$FP_ADMIN/metrics" >"$WORK/fp/metrics.txt" || true
for t in $TARGETS; do
    if [[ -s $WORK/$t/stderr.log ]]; then
        say "${NAME[$t]} stderr (last lines):"
        tail -n 3 "$WORK/$t/stderr.log" >&2
    fi
done

# ---- Tables -------------------------------------------------------------------
# get CASE TARGET KEY: a value from $RAW; "-" when absent.
get() {
    awk -v c="$1" -v t="$2" -v k="$3" '$1 == c && $2 == t {
        for (i = 3; i <= NF; i++) { n = index($i, "="); if (substr($i, 1, n - 1) == k) v = substr($i, n + 1) } }
        END { print (v == "" ? "-" : v) }' "$RAW"
}
mib() { awk -v k="$1" 'BEGIN { if (k == "-") print "-"; else printf "%.1f\n", k / 1024 }'; }
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f\n", a / b }'
}
loads=$(awk '{ for (i = 3; i <= NF; i++) if ($i ~ /^load1=/) { v = substr($i, 7) + 0
    if (n++ == 0 || v < min) min = v; if (v > max) max = v } } END { print "min " min ", max " max }' "$RAW")

cat <<EOF

### Run
- fenceproxy: $PROXY_BIN (built $(date -r "$PROXY_BIN" '+%F %T')); repository HEAD at run time: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
- $(nginx -v 2>&1 | sed 's/^nginx version: //'); $(haproxy -v | head -n 1 | awk '{ print "HAProxy " $3 }'); $(python3 --version)
- machine: $(machine_desc); RLIMIT_NOFILE $NOFILE (hard limit)
- pinning: proxy under test on CPU $CPU_PROXY; upstream nginx and the clients on CPU $CPU_LOAD
- 1-minute load average before each run: $loads; measured in ${elapsed} s
- fenceproxy at start: $(grep -m 1 'max_connections' "$WORK/fp/stderr.log" | sed 's/^[^ ]* *//' || echo 'no warning')

### 1. Pipelining flood: GET 1 KiB pipelined, never read (${FLOOD} s)

| connections | proxy | RSS start (MiB) | RSS at 1 s (MiB) | RSS max (MiB) | max first reached at (s) | RSS end (MiB) | requests sent by the client | connections still open | responses read in the next 1 s (non-200) |
|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|
EOF
for k in 1 4; do
    for t in $TARGETS; do
        c=flood$k
        printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s (%s) |\n' "$k" "${NAME[$t]}" \
            "$(mib "$(get $c "$t" rss_start_kib)")" "$(mib "$(get $c "$t" rss_1s_kib)")" \
            "$(mib "$(get $c "$t" rss_max_kib)")" "$(get $c "$t" max_at_s)" \
            "$(mib "$(get $c "$t" rss_end_kib)")" "$(get $c "$t" requests_sent)" \
            "$(get $c "$t" open_at_end)/$k" "$(get $c "$t" read_200)" "$(get $c "$t" read_other)"
    done
done

cat <<EOF

### 2. Idle connections: $IDLE opened, nothing sent

| proxy | held by the proxy | open at the client | refused (503) | RSS before (MiB) | RSS open (MiB) | per connection (bytes) | after one GET each: per connection (bytes) | RSS after close (MiB) |
|---|---:|---:|---:|---:|---:|---:|---:|---:|
EOF
for t in $TARGETS; do
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "${NAME[$t]}" "$(get idle "$t" held)" \
        "$(get idle "$t" open)" \
        "$(get idle "$t" refused_503)" "$(mib "$(get idle "$t" rss_base_kib)")" \
        "$(mib "$(get idle "$t" rss_open_kib)")" "$(get idle "$t" per_conn_b)" \
        "$(get idle "$t" per_conn_after_get_b)" "$(mib "$(get idle "$t" rss_closed_kib)")"
done

cat <<EOF

### 3. Legitimate GETs (200/s, new connection each, ${LEGIT} s) under slow attackers ($ATTACKERS)

| proxy | attackers | ok / sent | p50 (us) | p90 (us) | p99 (us) | max (us) | errors + timeouts + non-200 | attackers: connects, closed by the proxy, responses they got |
|---|---|---:|---:|---:|---:|---:|---:|---|
EOF
declare -A KIND=([base]="none" [slowloris]="slowloris heads" [slowbody]="slow PUT bodies")
for t in $TARGETS; do
    for c in base slowloris slowbody; do
        att="-"
        if [[ $c != base ]]; then
            att="$(get "$c-attacker" "$t" connects), $(get "$c-attacker" "$t" closed_by_proxy), $(get "$c-attacker" "$t" responses)"
        fi
        printf '| %s | %s | %s / %s | %s | %s | %s | %s | %s | %s |\n' "${NAME[$t]}" "${KIND[$c]}" \
            "$(get $c "$t" ok)" "$(get $c "$t" requests)" "$(get $c "$t" p50_us)" "$(get $c "$t" p90_us)" \
            "$(get $c "$t" p99_us)" "$(get $c "$t" max_us)" \
            "$(($(get $c "$t" errors) + $(get $c "$t" timeouts) + $(get $c "$t" non200)))" "$att"
    done
done

cat <<EOF

### Ratios (fenceproxy / nginx, fenceproxy / HAProxy)

| figure | / nginx | / HAProxy |
|---|---:|---:|
EOF
# row LABEL CASE KEY: one line of the ratio table.
row() {
    printf '| %s | %s | %s |\n' "$1" "$(ratio "$(get "$2" fp "$3")" "$(get "$2" ngx "$3")")" \
        "$(ratio "$(get "$2" fp "$3")" "$(get "$2" hap "$3")")"
}
for k in 1 4; do
    row "flood, $k conn: RSS max" "flood$k" rss_max_kib
done
row "idle: memory per connection" idle per_conn_b
row "idle after one GET: memory per connection" idle per_conn_after_get_b
row "legit p99, no attackers" base p99_us
row "legit p99, slowloris" slowloris p99_us
row "legit p99, slow bodies" slowbody p99_us

echo
echo "### Raw results"
echo
echo '```'
cat "$RAW"
echo '```'
