#!/usr/bin/env bash
# bench/tls.sh: TLS on the client hop, fenceproxy against nginx, in one run
# on loopback. One plaintext nginx upstream (static 1 KiB file for GET,
# `return 204` for PUT under /w/), and in front of it, with the same ECDSA
# P-256 certificate, TLS 1.3 and TLS_AES_128_GCM_SHA256 (TLS 1.2:
# ECDHE-ECDSA-AES128-GCM-SHA256): an nginx reverse proxy (listen ssl) and
# fenceproxy ([tls], a fenced route /w/f/). wrk speaks https. Cases, each
# ROUNDS times interleaved (nginx, fenceproxy): GET 1 KiB and fenced PUT
# 1 KiB (Fencing-Token: 1) at 64 connections (-t2 -c64) and 1 (-t1 -c1),
# and new connections per second (handshakes: wrk with "Connection: close"
# at 16 connections; wrk does not resume sessions, so each is a full
# handshake). Prints one line per run and the medians.
#
# Usage: bench/tls.sh [BUILD_DIR]   env: DURATION (s, 5), ROUNDS (3),
#   BENCH_CPU_PROXY (0), BENCH_CPU_LOAD (1): the proxies share one CPU,
#   wrk and the upstream the other.
set -eu

BUILD=${1:-build}
BIN=$(cd "$BUILD" && pwd)/proxy/fenceproxy
DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
CPU_PROXY=${BENCH_CPU_PROXY:-0}
CPU_LOAD=${BENCH_CPU_LOAD:-1}
HERE=$(cd "$(dirname "$0")" && pwd)
for c in nginx wrk openssl taskset; do
    command -v "$c" >/dev/null || [ -x /usr/sbin/$c ] || { echo "tls.sh: $c not found" >&2; exit 2; }
done
[ -x "$BIN" ] || { echo "tls.sh: $BIN not found (build first)" >&2; exit 2; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

DIR=$(mktemp -d "${TMPDIR:-/tmp}/fence-tls-bench-XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT
USER_LINE=; [ "$(id -u)" = 0 ] && USER_LINE="user root;"
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_port() {
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done
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
        ssl_session_tickets off;
        location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; }
    }"
cat >fp.conf <<EOF
[proxy]
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
taskset -c "$CPU_LOAD" "$NGINX" -p "$DIR" -c "$DIR/up.conf" 2>>up-error.log & PIDS+=($!)
taskset -c "$CPU_PROXY" "$NGINX" -p "$DIR" -c "$DIR/ngx.conf" 2>>ngx-error.log & PIDS+=($!)
taskset -c "$CPU_PROXY" "$BIN" -c fp.conf 2>fp.log & PIDS+=($!)
wait_port "$UP"; wait_port "$NGX"; wait_port "$FP"
curl -sSf --cacert ca.pem -o /dev/null "https://127.0.0.1:$NGX/1k.bin"
curl -sSf --cacert ca.pem -o /dev/null "https://127.0.0.1:$FP/1k.bin"

declare -A R
run() { # target port case -> req/s
    local port=$1 c=$2 args out
    case $c in
        get64) args=(-t2 -c64 "https://127.0.0.1:$port/1k.bin") ;;
        get1) args=(-t1 -c1 "https://127.0.0.1:$port/1k.bin") ;;
        put64) args=(-t2 -c64 -s "$HERE/put.lua" "https://127.0.0.1:$port/w/f/x") ;;
        put1) args=(-t1 -c1 -s "$HERE/put.lua" "https://127.0.0.1:$port/w/f/x") ;;
        hs16) args=(-t2 -c16 -H "Connection: close" "https://127.0.0.1:$port/1k.bin") ;;
    esac
    out=$(taskset -c "$CPU_LOAD" wrk -d "${DURATION}s" "${args[@]}" 2>&1)
    echo "$out" | grep -q "Non-2xx" && { echo "tls.sh: non-2xx answers on $port $c" >&2; echo "$out" >&2; }
    echo "$out" | awk '/^Requests\/sec:/ { print $2 }'
}
CASES="get64 get1 put64 put1 hs16"
for r in $(seq "$ROUNDS"); do
    for c in $CASES; do
        for t in ngx fp; do
            port=$NGX; [ $t = fp ] && port=$FP
            v=$(run "$port" "$c")
            R[$t.$c]="${R[$t.$c]:-} $v"
            echo "round=$r case=$c target=$t req_s=$v load=$(cut -d' ' -f1 /proc/loadavg)" >&2
        done
    done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END { print a[int((NR+1)/2)] }'; }
echo "| case | nginx (req/s) | fenceproxy (req/s) | fenceproxy / nginx |"
echo "|---|---|---|---|"
for c in $CASES; do
    n=$(echo "${R[ngx.$c]}" | median); f=$(echo "${R[fp.$c]}" | median)
    echo "| $c | $n | $f | $(echo "scale=2; $f / $n" | bc) |"
done
