#!/usr/bin/env bash
# bench/tls.sh: TLS on the client hop, fenceproxy against nginx, in one run
# on loopback. One plaintext nginx upstream (static 1 KiB file for GET,
# `return 204` for PUT under /w/), and in front of it, with the same ECDSA
# P-256 certificate, TLS 1.3 and TLS_AES_128_GCM_SHA256 (TLS 1.2:
# ECDHE-ECDSA-AES128-GCM-SHA256), a session cache and session tickets: an nginx
# reverse proxy (listen ssl) and fenceproxy ([tls], a fenced route /w/f/).
# wrk speaks https. Cases, each ROUNDS times interleaved (nginx,
# fenceproxy): GET 1 KiB and fenced PUT 1 KiB (Fencing-Token: 1) at 64
# connections (-t2 -c64) and 1 (-t1 -c1), and new connections per second
# (handshakes: wrk with "Connection: close" at 16 connections; wrk does not
# resume sessions, so each is a full handshake). Prints one line per run and
# the medians of req/s and of the CPU time (user + system, from
# /proc/PID/stat) each proxy used per request: on a shared machine the
# latter hardly depends on what else runs, the former does.
#
# CALLGRIND=1: both proxies run under valgrind --tool=callgrind instead, and
# each case (one wrk run per target) reports the instructions the proxy
# executed per request (per connection for hs16) in a window of CG_DURATION
# seconds that opens once wrk's connections are up (the first 2 s slice
# without a handshake; handshakes under valgrind are slow: wrk waits 60 s):
# counters zeroed, dumped at the end of the window, and divided by the
# requests in it (the proxy's writev calls to the upstream, one per request
# on both, counted by callgrind). Instruction counts do not depend on what
# else runs on the machine, which req/s on a shared machine do. KEEP=1 keeps
# the temp dir with the callgrind dumps (callgrind_annotate DIR/cg.fp.CASE)
# and the logs.
#
# STRACE=1: both proxies run natively, each case once per target with
# strace -c attached to all the proxy's threads; reports system calls per
# request and the top calls (strace slows the proxy: no req/s from it).
#
# Usage: bench/tls.sh [BUILD_DIR]   env: DURATION (s, 5), ROUNDS (3),
#   CASES ("get64 get1 put64 put1 hs16"), CALLGRIND, CG_DURATION (s, 10),
#   KEEP, BENCH_CPU_PROXY (0), BENCH_CPU_LOAD (1): the proxies share one
#   CPU, wrk and the upstream the other.
set -eu

BUILD=${1:-build}
BIN=$(cd "$BUILD" && pwd)/proxy/fenceproxy
DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
CASES=${CASES:-get64 get1 put64 put1 hs16}
CALLGRIND=${CALLGRIND:-0}
CG_DURATION=${CG_DURATION:-10}
STRACE=${STRACE:-0}
KEEP=${KEEP:-0}
CPU_PROXY=${BENCH_CPU_PROXY:-0}
CPU_LOAD=${BENCH_CPU_LOAD:-1}
HERE=$(cd "$(dirname "$0")" && pwd)
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
source "$HERE/lib.sh"
tools="nginx wrk openssl taskset curl bc"
[ "$CALLGRIND" = 1 ] && tools="$tools valgrind callgrind_control"
[ "$STRACE" = 1 ] && tools="$tools strace"
for c in $tools; do
    command -v "$c" >/dev/null || die "tls.sh: $c not found"
done
[ -x "$BIN" ] || die "tls.sh: $BIN not found (build first)"

DIR=$(mktemp -d "${TMPDIR:-/tmp}/fence-tls-bench-XXXXXX")
PIDS=()
cleanup() {
    ((${#PIDS[@]})) && stop_pids "${PIDS[@]}"
    if [ "$KEEP" = 1 ]; then say "kept $DIR"; else rm -rf "$DIR"; fi
}
trap cleanup EXIT
USER_LINE=; [ "$(id -u)" = 0 ] && USER_LINE="user root;"
wait_port() { # port: 5 s, 60 s under valgrind
    for _ in $(seq 1200); do port_busy "$1" && return 0; sleep 0.05; done
    echo "tls.sh: nothing listens on $1" >&2; for l in "$DIR"/*.log; do echo "== $l"; tail -n 5 "$l"; done >&2; return 1
}

cd "$DIR"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key \
    -out ca.pem -days 2 -subj '/CN=bench CA' 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout srv.key \
    -out srv.csr -subj '/CN=localhost' 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >srv.ext
openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -set_serial 1 -days 2 -extfile srv.ext \
    -out srv.pem 2>/dev/null
CIPHERS=ECDHE-ECDSA-AES128-GCM-SHA256
SUITES=TLS_AES_128_GCM_SHA256

UP=$(free_port); NGX=$(free_port); FP=$(free_port); FPA=$(free_port)
mkdir -p www/w tmp store
head -c 1024 /dev/zero | tr '\0' a >www/1k.bin
# Under valgrind 64 handshakes take long: the head deadline (it runs from
# the accept on both) must not cut them.
HEAD_TIMEOUT=10s; [ "$CALLGRIND" = 1 ] && HEAD_TIMEOUT=300s
nginx_conf() { # name, server block
    cat >"$1.conf" <<EOF
$USER_LINE
worker_processes 1;
master_process off;
daemon off;
pid $DIR/$1.pid;
error_log $DIR/$1-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $DIR/tmp/$1-body;
    proxy_temp_path $DIR/tmp/$1-proxy;
    fastcgi_temp_path $DIR/tmp/$1-fcgi;
    uwsgi_temp_path $DIR/tmp/$1-uwsgi;
    scgi_temp_path $DIR/tmp/$1-scgi;
    keepalive_requests 1000000;
    client_header_timeout $HEAD_TIMEOUT;
    $2
}
EOF
}
nginx_conf up "server { listen 127.0.0.1:$UP; root $DIR/www; location /w/ { return 204; } }"
nginx_conf ngx "upstream up { server 127.0.0.1:$UP; keepalive 64; keepalive_requests 1000000; }
    server {
        listen 127.0.0.1:$NGX ssl;
        ssl_certificate $DIR/srv.pem;
        ssl_certificate_key $DIR/srv.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers $CIPHERS;
        ssl_conf_command Ciphersuites $SUITES;
        ssl_session_cache shared:SSL:10m;
        ssl_session_tickets on;
        location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; }
    }"
cat >fp.conf <<EOF
[proxy]
header_timeout = $HEAD_TIMEOUT
listen = 127.0.0.1:$FP
upstream = http://127.0.0.1:$UP
admin_listen = 127.0.0.1:$FPA
access_log = off
log_level = warn
[store]
backend = file
path = $DIR/store
[tls]
cert = $DIR/srv.pem
key = $DIR/srv.key
ciphers = $CIPHERS
ciphersuites = $SUITES
[route fenced]
prefix = /w/f/
EOF
VG=()
[ "$CALLGRIND" = 1 ] && VG=(valgrind --tool=callgrind --callgrind-out-file="$DIR/cg.%q{CG_NAME}.start")
taskset -c "$CPU_LOAD" nginx -p "$DIR" -c "$DIR/up.conf" 2>>up-error.log & PIDS+=($!)
CG_NAME=ngx taskset -c "$CPU_PROXY" "${VG[@]}" nginx -p "$DIR" -c "$DIR/ngx.conf" \
    2>>ngx-error.log & PIDS+=($!); NGX_PID=$!
CG_NAME=fp taskset -c "$CPU_PROXY" "${VG[@]}" "$BIN" -c fp.conf 2>fp.log & PIDS+=($!); FP_PID=$!
wait_port "$UP"; wait_port "$NGX"; wait_port "$FP"
curl -sSf --cacert ca.pem -o /dev/null "https://127.0.0.1:$NGX/1k.bin"
curl -sSf --cacert ca.pem -o /dev/null "https://127.0.0.1:$FP/1k.bin"
curl -sSf --cacert ca.pem -o /dev/null -X PUT -H 'Fencing-Token: 1' --data-binary @www/1k.bin \
    "https://127.0.0.1:$FP/w/f/x"

wrk_args() { # port case: the case's wrk arguments into WRK_ARGS
    case $2 in
        get64) WRK_ARGS=(-t2 -c64 "https://127.0.0.1:$1/1k.bin") ;;
        get1) WRK_ARGS=(-t1 -c1 "https://127.0.0.1:$1/1k.bin") ;;
        put64) WRK_ARGS=(-t2 -c64 -s "$HERE/put.lua" "https://127.0.0.1:$1/w/f/x") ;;
        put1) WRK_ARGS=(-t1 -c1 -s "$HERE/put.lua" "https://127.0.0.1:$1/w/f/x") ;;
        hs16) WRK_ARGS=(-t2 -c16 -H "Connection: close" "https://127.0.0.1:$1/1k.bin") ;;
        *) die "tls.sh: unknown case $2" ;;
    esac
}
wrk_run() { # port case seconds -> wrk's output
    local out
    wrk_args "$1" "$2"
    out=$(taskset -c "$CPU_LOAD" wrk -d "${3}s" "${WRK_ARGS[@]}" 2>&1)
    echo "$out" | grep -q "Non-2xx" && { echo "tls.sh: non-2xx answers on $1 $2" >&2; echo "$out" >&2; }
    echo "$out"
}
alive() { # case: every server still runs (a broad kill elsewhere would skew the figures)
    for p in "${PIDS[@]}"; do
        kill -0 "$p" 2>/dev/null || { KEEP=1; die "tls.sh: server pid $p died during $1"; }
    done
}

say "machine: $(machine_desc); nginx $(nginx -v 2>&1 | sed 's/.*\///'); $(openssl version)"
declare -A R U
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END { print a[int((NR+1)/2)] }'; }

if [ "$CALLGRIND" = 1 ]; then
    # Calls of fn (summed over its callers) in callgrind dump file f.
    calls_of() { # callgrind names a function once, "(id) name", then "(id)"
        awk -v fn="$1" '
            /^c?fn=/ { k = $0; sub(/^c?fn=/, "", k); id = k; sub(/ .*/, "", id)
                       nm = k; if (sub(/^\([0-9]+\) /, "", nm)) name[id] = nm }
            /^cfn=/ { cur = name[id]; next }
            /^calls=/ { if (cur == fn) { split(substr($0, 7), a, " "); n += a[1] } next }
            END { print n + 0 }' "$2"
    }
    dump_to() { # pid target name: the counters so far into DIR/cg.TARGET.NAME
        local f
        callgrind_control --dump="$3" "$1" >/dev/null 2>&1
        f=$(ls -t "$DIR"/cg."$2".start* | head -n 1) # callgrind's newest dump
        mv "$f" "$DIR/cg.$2.$3"
    }
    echo "| case | nginx (instr/req) | fenceproxy (instr/req) | fenceproxy / nginx |"
    echo "|---|---|---|---|"
    for c in $CASES; do
        for t in ngx fp; do
            pid=$NGX_PID port=$NGX; [ $t = fp ] && pid=$FP_PID port=$FP
            wrk_args "$port" "$c"
            taskset -c "$CPU_LOAD" wrk -d 900s --timeout 60s "${WRK_ARGS[@]}" >"$DIR/wrk.$t.$c" 2>&1 &
            wpid=$!
            # The window opens once wrk's connections are up: 2 s slices
            # until one has no handshake in it (but for hs16, which measures
            # them); valgrind makes handshakes slow, the load more so.
            sleep 3
            for i in $(seq 90); do
                [ "$c" = hs16 ] && break
                callgrind_control -z "$pid" >/dev/null 2>&1
                sleep 2
                dump_to "$pid" "$t" "settle"
                [ "$(calls_of SSL_do_handshake "$DIR/cg.$t.settle")" = 0 ] && break
                [ "$i" = 90 ] && die "tls.sh: handshakes still going on after 3 min ($t $c)"
            done
            callgrind_control -z "$pid" >/dev/null 2>&1
            sleep "$CG_DURATION"
            dump_to "$pid" "$t" "$c"
            kill "$wpid"; wait "$wpid" 2>/dev/null || true
            alive "$c"
            ir=$(awk '/^(summary|totals):/ { print $2; exit }' "$DIR/cg.$t.$c")
            # Requests: the proxy's writev(2) calls to the upstream, one per
            # request on both; handshakes: SSL_do_handshake calls.
            n=$(calls_of writev "$DIR/cg.$t.$c")
            hs=$(calls_of SSL_do_handshake "$DIR/cg.$t.$c")
            [ "${n:-0}" -gt 0 ] || die "tls.sh: no request in the window ($t $c): $(cat "$DIR/wrk.$t.$c")"
            R[$t.$c]=$((ir / n))
            echo "case=$c target=$t requests=$n handshake_calls=$hs instructions=$ir per_request=${R[$t.$c]}" >&2
        done
        echo "| $c | ${R[ngx.$c]} | ${R[fp.$c]} | $(echo "scale=2; ${R[fp.$c]} / ${R[ngx.$c]}" | bc) |"
    done
    exit 0
fi

if [ "$STRACE" = 1 ]; then
    echo "| case | nginx (syscalls/req) | fenceproxy (syscalls/req) | top calls (nginx; fenceproxy) |"
    echo "|---|---|---|---|"
    for c in $CASES; do
        for t in ngx fp; do
            pid=$NGX_PID port=$NGX; [ $t = fp ] && pid=$FP_PID port=$FP
            tids=(); for d in /proc/"$pid"/task/*; do tids+=(-p "${d##*/}"); done
            strace -c -o "$DIR/st.$t.$c" "${tids[@]}" 2>/dev/null & spid=$!
            sleep 0.5
            out=$(wrk_run "$port" "$c" "$DURATION")
            kill -INT "$spid"; wait "$spid" || true
            alive "$c"
            n=$(echo "$out" | awk '/requests in/ { print $1; exit }')
            calls=$(awk '$NF == "total" { print $(NF-2) }' "$DIR/st.$t.$c")
            R[$t.$c]=$(echo "scale=2; $calls / $n" | bc)
            top=$(awk -v n="$n" '$NF != "total" && $NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ { printf "%s %.2f\n", $NF, $4 / n }' \
                "$DIR/st.$t.$c" | sort -k2 -rn | head -n 5 | awk '{ printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2 }')
            R[$t.$c.top]=$top
            echo "case=$c target=$t requests=$n syscalls=$calls per_request=${R[$t.$c]} ($top)" >&2
        done
        echo "| $c | ${R[ngx.$c]} | ${R[fp.$c]} | ${R[ngx.$c.top]}; ${R[fp.$c.top]} |"
    done
    exit 0
fi

CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { # pid: user + system clock ticks so far (all threads)
    local f
    read -r -a f <"/proc/$1/stat" || die "tls.sh: process $1 is gone"
    echo $((f[13] + f[14]))
}
for r in $(seq "$ROUNDS"); do
    for c in $CASES; do
        for t in ngx fp; do
            pid=$NGX_PID port=$NGX; [ $t = fp ] && pid=$FP_PID port=$FP
            t0=$(cpu_ticks "$pid")
            out=$(wrk_run "$port" "$c" "$DURATION")
            t1=$(cpu_ticks "$pid")
            alive "$c"
            v=$(echo "$out" | awk '/^Requests\/sec:/ { print $2 }')
            n=$(echo "$out" | awk '/requests in/ { print $1; exit }')
            u=$(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$n" 'BEGIN { printf "%.1f", (n > 0 ? t * 1e6 / hz / n : 0) }')
            R[$t.$c]="${R[$t.$c]:-} $v"
            U[$t.$c]="${U[$t.$c]:-} $u"
            echo "round=$r case=$c target=$t req_s=$v cpu_us_per_req=$u load=$(cut -d' ' -f1 /proc/loadavg)" >&2
        done
    done
done
echo "| case | nginx (req/s) | fenceproxy (req/s) | fenceproxy / nginx | nginx CPU us/req | fenceproxy CPU us/req | nginx / fenceproxy CPU |"
echo "|---|---|---|---|---|---|---|"
for c in $CASES; do
    n=$(echo "${R[ngx.$c]}" | median); f=$(echo "${R[fp.$c]}" | median)
    nu=$(echo "${U[ngx.$c]}" | median); fu=$(echo "${U[fp.$c]}" | median)
    echo "| $c | $n | $f | $(echo "scale=2; $f / $n" | bc) | $nu | $fu | $(echo "scale=2; $nu / $fu" | bc) |"
done
