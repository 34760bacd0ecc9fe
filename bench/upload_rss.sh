#!/bin/bash
# upload_rss.sh: the 1 GiB upload check of issue 3. Streams a 1 GiB PUT
# (from /dev/zero, never held in memory by curl) through fenceproxy into
# nginx as a WebDAV store, then reads the proxy's peak resident set size
# (VmHWM in /proc/PID/status) and checks the upload arrived whole.
# Builds nothing: pass the build directory that holds proxy/fenceproxy.
#
# Usage: bench/upload_rss.sh [BUILD_DIR] [SIZE]
#   BUILD_DIR  default build/
#   SIZE       bytes to upload, default 1073741824 (1 GiB)
# Uploads twice, with Content-Length and then chunked, resetting the peak
# between them (/proc/PID/clear_refs), and prints one line per framing:
# "framing=F peak_rss_kib=N size=BYTES seconds=S status=HTTP stored=BYTES".
# Exits 1 when an upload failed or a peak RSS is 64 MiB or more.
# TLS=1 runs both hops over TLS (certificates made here by openssl): curl
# to a [tls] listener, the proxy to nginx with ssl as an https upstream.
set -eu

BUILD=${1:-build}
SIZE=${2:-1073741824}
BIN=$BUILD/proxy/fenceproxy
NGINX=$(command -v nginx 2>/dev/null || echo /usr/sbin/nginx)

[ -x "$BIN" ] || { echo "upload_rss: $BIN not found (build first)" >&2; exit 2; }
[ -x "$NGINX" ] || { echo "upload_rss: nginx not found (apt-get install nginx)" >&2; exit 2; }
command -v curl >/dev/null || { echo "upload_rss: curl not found" >&2; exit 2; }

DIR=$(mktemp -d "${TMPDIR:-/tmp}/fence-upload-rss-XXXXXX")
NGINX_PID=
PROXY_PID=
cleanup() {
    [ -n "$PROXY_PID" ] && kill "$PROXY_PID" 2>/dev/null && wait "$PROXY_PID" 2>/dev/null || true
    [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

# A free loopback port: bind port 0 and read what the kernel chose.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() {
    i=0
    while ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
        i=$((i + 1))
        [ $i -lt 100 ] || { echo "upload_rss: nothing listens on $1" >&2; return 1; }
        sleep 0.05
    done
}

NPORT=$(free_port)
PPORT=$(free_port)
mkdir -p "$DIR/data" "$DIR/tmp" "$DIR/store"
TLS=${TLS:-0}
SCHEME=http
NGINX_SSL=
PROXY_TLS=
CURL_TLS=()
if [ "$TLS" = 1 ]; then
    command -v openssl >/dev/null || { echo "upload_rss: openssl not found" >&2; exit 2; }
    (cd "$DIR" &&
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout ca.key -out ca.pem -days 2 -subj '/CN=upload CA' &&
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout srv.key -out srv.csr -subj '/CN=localhost' &&
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > srv.ext &&
        openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -set_serial 1 -days 2 \
            -extfile srv.ext -out srv.pem) >/dev/null 2>&1 ||
        { echo "upload_rss: openssl could not make certificates" >&2; exit 2; }
    SCHEME=https
    NGINX_SSL="ssl; ssl_certificate $DIR/srv.pem; ssl_certificate_key $DIR/srv.key"
    PROXY_TLS="upstream_ca = $DIR/ca.pem
[tls]
cert = $DIR/srv.pem
key = $DIR/srv.key"
    CURL_TLS=(--cacert "$DIR/ca.pem")
fi
USER_LINE=
[ "$(id -u)" = 0 ] && USER_LINE="user root;"
cat > "$DIR/nginx.conf" <<EOF
$USER_LINE
worker_processes 1;
master_process off;
daemon off;
pid $DIR/nginx.pid;
error_log $DIR/nginx-error.log notice;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $DIR/tmp/client_body;
    proxy_temp_path $DIR/tmp/proxy;
    fastcgi_temp_path $DIR/tmp/fastcgi;
    uwsgi_temp_path $DIR/tmp/uwsgi;
    scgi_temp_path $DIR/tmp/scgi;
    server {
        listen 127.0.0.1:$NPORT ${NGINX_SSL:-};
        root $DIR/data;
        location / {
            dav_methods PUT DELETE;
            create_full_put_path on;
            client_max_body_size 0;
        }
    }
}
EOF
cat > "$DIR/fenceproxy.conf" <<EOF
[proxy]
listen = 127.0.0.1:$PPORT
upstream = $SCHEME://127.0.0.1:$NPORT
admin_listen = off
access_log = off
upstream_timeout = 5m
$PROXY_TLS
[store]
backend = memory
EOF

"$NGINX" -p "$DIR" -c "$DIR/nginx.conf" 2>>"$DIR/nginx-error.log" &
NGINX_PID=$!
"$BIN" -c "$DIR/fenceproxy.conf" 2>"$DIR/fenceproxy.log" &
PROXY_PID=$!
wait_port "$NPORT"
wait_port "$PPORT"

# upload FRAMING: PUTs SIZE zero bytes; prints the result line.
upload() {
    local framing=$1 start end code hwm got secs
    rm -f "$DIR/data/upload.bin"
    echo 5 > "/proc/$PROXY_PID/clear_refs" # resets VmHWM to the current RSS
    start=$(date +%s.%N)
    if [ "$framing" = length ]; then
        code=$(head -c "$SIZE" /dev/zero |
            curl -sS ${CURL_TLS[@]+"${CURL_TLS[@]}"} -o /dev/null -w '%{http_code}' -T - -H 'Transfer-Encoding:' \
                -H "Content-Length: $SIZE" "$SCHEME://127.0.0.1:$PPORT/upload.bin")
    else
        code=$(head -c "$SIZE" /dev/zero |
            curl -sS ${CURL_TLS[@]+"${CURL_TLS[@]}"} -o /dev/null -w '%{http_code}' -T - "$SCHEME://127.0.0.1:$PPORT/upload.bin")
    fi
    end=$(date +%s.%N)
    hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$PROXY_PID/status")
    got=$(stat -c %s "$DIR/data/upload.bin" 2>/dev/null || echo 0)
    secs=$(echo "$end - $start" | bc)
    echo "framing=$framing peak_rss_kib=$hwm size=$SIZE seconds=$secs status=$code stored=$got"
    if [ "$code" != 201 ] && [ "$code" != 204 ]; then
        echo "upload_rss: $framing upload failed with HTTP $code" >&2
        cat "$DIR/fenceproxy.log" >&2
        return 1
    fi
    [ "$got" = "$SIZE" ] || { echo "upload_rss: stored $got bytes, sent $SIZE" >&2; return 1; }
    [ "$hwm" -lt 65536 ] || { echo "upload_rss: peak RSS $hwm KiB is not under 64 MiB" >&2; return 1; }
}

echo "tls=$TLS fenceproxy $BIN, nginx $("$NGINX" -v 2>&1 | sed 's/.*\///'), $(nproc) CPUs"
echo "idle: $(awk '/^VmRSS:/ { print "rss_kib=" $2 }' "/proc/$PROXY_PID/status")"
upload length
upload chunked
