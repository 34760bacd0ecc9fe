#!/usr/bin/env bash
# The README's main command: install what is missing, build build/, start a
# local nginx WebDAV file store on 127.0.0.1:8000 (config from
# conf/nginx-webdav.conf.in, all its files under run/), then run fenceproxy
# with conf/fenceproxy.conf in the foreground in front of it. Ctrl-C (or
# SIGTERM/SIGHUP to this script) stops fenceproxy, then the nginx this script
# started, by PID, and exits 0.
# FENCE_PROXY_BIN=PATH runs that binary instead of build/proxy/fenceproxy and
# skips the build (for trying the script itself).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# nginx lives in /usr/sbin, which a normal user's PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

BUILD="$ROOT/build"
RUN_DIR="$ROOT/run"
CONF="conf/fenceproxy.conf"
NGINX_ADDR=127.0.0.1
NGINX_PORT=8000
PROXY_PORT=8080
ADMIN_PORT=8081

say() { printf '==> %s\n' "$*"; }
die() { printf 'run: error: %s\n' "$*" >&2; exit 1; }

# port_busy PORT: true when something accepts connections on 127.0.0.1:PORT.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

"$ROOT/scripts/deps.sh"

if [[ -n "${FENCE_PROXY_BIN:-}" ]]; then
    PROXY_BIN=$FENCE_PROXY_BIN
    say "using FENCE_PROXY_BIN=$PROXY_BIN (no build)"
else
    PROXY_BIN="$BUILD/proxy/fenceproxy"
    mkdir -p "$BUILD"
    say "configure + build $BUILD (log: $BUILD/build.log)"
    # Only the programs: the tests are scripts/test.sh's business.
    if ! { cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFENCE_SANITIZE=OFF \
            && cmake --build "$BUILD" -j"$(nproc 2>/dev/null || echo 2)" \
                --target fenceproxy fencelock; } >"$BUILD/build.log" 2>&1; then
        tail -n 40 "$BUILD/build.log" >&2
        die "build failed (full log: $BUILD/build.log)"
    fi
fi
[[ -x "$PROXY_BIN" ]] || die "fenceproxy binary not found or not executable: $PROXY_BIN"
[[ -f "$CONF" ]] || die "missing $ROOT/$CONF"
command -v nginx >/dev/null 2>&1 || die "nginx not found (scripts/deps.sh installs it)"

for port in "$NGINX_PORT" "$PROXY_PORT" "$ADMIN_PORT"; do
    if port_busy "$port"; then
        die "port 127.0.0.1:$port is already in use (another run.sh or service?); stop it first" \
            "(e.g. see: ss -ltnp 'sport = :$port')"
    fi
done

mkdir -p "$RUN_DIR/data" "$RUN_DIR/nginx-tmp" "$RUN_DIR/store"
# nginx started as root drops its workers to "nobody", who cannot write
# run/data; keep them as root then. As a normal user nginx ignores `user`.
user_line=""
if [[ $(id -u) -eq 0 ]]; then
    user_line="user root;"
fi
sed -e "s|@RUN_DIR@|$RUN_DIR|g" -e "s|@USER_LINE@|$user_line|" \
    -e "s|@LISTEN@|$NGINX_ADDR:$NGINX_PORT|" \
    conf/nginx-webdav.conf.in >"$RUN_DIR/nginx.conf"

NGINX_PID=""
PROXY_PID=""
STOPPING=0

# Stop nginx by the PID this script started: graceful quit, then TERM, then
# KILL, each bounded in time.
stop_nginx() {
    [[ -n "$NGINX_PID" ]] || return 0
    if kill -0 "$NGINX_PID" 2>/dev/null; then
        say "stopping nginx (pid $NGINX_PID)"
        kill -QUIT "$NGINX_PID" 2>/dev/null || true
        local sig i
        for sig in TERM KILL; do
            for ((i = 0; i < 50; i++)); do
                kill -0 "$NGINX_PID" 2>/dev/null || break 2
                sleep 0.1
            done
            kill -"$sig" "$NGINX_PID" 2>/dev/null || true
        done
    fi
    wait "$NGINX_PID" 2>/dev/null || true
    NGINX_PID=""
}

# Forward the stop to fenceproxy (it shuts down on SIGINT); the main loop
# below waits for it. KILL after 10 s so a stuck proxy cannot hang Ctrl-C.
# shellcheck disable=SC2317  # invoked by the trap
on_signal() {
    STOPPING=1
    [[ -n "$PROXY_PID" ]] || exit 0
    if kill -0 "$PROXY_PID" 2>/dev/null; then
        say "stopping fenceproxy (pid $PROXY_PID)"
        kill -INT "$PROXY_PID" 2>/dev/null || true
        local i
        for ((i = 0; i < 100; i++)); do
            kill -0 "$PROXY_PID" 2>/dev/null || return 0
            sleep 0.1
        done
        say "fenceproxy did not stop within 10 s: killing it"
        kill -KILL "$PROXY_PID" 2>/dev/null || true
    fi
}
trap stop_nginx EXIT
trap on_signal INT TERM HUP

# Job control puts each background child in its own process group, so a
# Ctrl-C reaches only this script, which then stops the children in order
# (proxy first, so no request is cut off by a vanished upstream).
set -m

say "starting nginx WebDAV store on http://$NGINX_ADDR:$NGINX_PORT (root $RUN_DIR/data)"
nginx -p "$RUN_DIR/" -e "$RUN_DIR/nginx-error.log" -c "$RUN_DIR/nginx.conf" </dev/null &
NGINX_PID=$!
ready=0
for ((i = 0; i < 100; i++)); do
    if ! kill -0 "$NGINX_PID" 2>/dev/null; then
        break
    fi
    if curl -s -o /dev/null --max-time 1 "http://$NGINX_ADDR:$NGINX_PORT/"; then
        ready=1
        break
    fi
    sleep 0.1
done
if [[ $ready -ne 1 ]]; then
    tail -n 20 "$RUN_DIR/nginx-error.log" >&2 2>/dev/null || true
    die "nginx did not come up on $NGINX_ADDR:$NGINX_PORT (log: $RUN_DIR/nginx-error.log)"
fi
say "nginx ready (pid $NGINX_PID)"

say "starting $PROXY_BIN -c $CONF (Ctrl-C stops everything)"
"$PROXY_BIN" -c "$CONF" </dev/null &
PROXY_PID=$!

# Tell the user when the proxy answers, without blocking on it.
for ((i = 0; i < 100 && STOPPING == 0; i++)); do
    kill -0 "$PROXY_PID" 2>/dev/null || break
    if port_busy "$PROXY_PORT"; then
        say "fenceproxy ready: http://127.0.0.1:$PROXY_PORT (admin http://127.0.0.1:$ADMIN_PORT)"
        say "try: curl -i -X PUT -H 'Fencing-Token: 5' --data-binary hello" \
            "http://127.0.0.1:$PROXY_PORT/objects/user42/a.txt"
        break
    fi
    sleep 0.1
done

# `wait` returns early when a trapped signal arrives; loop until the proxy
# has really exited, then collect its status.
rc=0
while :; do
    set +e
    wait "$PROXY_PID"
    rc=$?
    set -e
    kill -0 "$PROXY_PID" 2>/dev/null || break
done
PROXY_PID=""
stop_nginx
if [[ $STOPPING -eq 1 ]]; then
    say "stopped"
    exit 0
fi
if [[ $rc -eq 0 ]]; then
    say "fenceproxy exited"
    exit 0
fi
printf 'run: error: fenceproxy exited by itself with status %d\n' "$rc" >&2
exit "$rc"
