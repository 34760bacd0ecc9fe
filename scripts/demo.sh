#!/usr/bin/env bash
# The paused lock holder, told in the terminal with real parts: redis-server
# as the lock backend, nginx as a WebDAV file store, fenceproxy in front of it,
# and two clients that are `fencelock run` around curl. Client A takes the
# lock and freezes past its lease; B takes over and writes; A wakes up and
# writes with its old token. Through the proxy that write is refused (409) and
# recorded in the audit log; straight against nginx it overwrites B's data.
# Everything runs on free loopback ports in a temp dir and is stopped on exit.
# Builds fenceproxy and fencelock into build/ if needed (FENCE_BUILD_DIR=DIR
# uses another build tree). FENCE_DEMO_KEEP=1 keeps the temp dir.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# nginx and redis-server live in /usr/sbin or /usr/bin; a user's PATH may lack sbin.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
BUILD=${FENCE_BUILD_DIR:-$ROOT/build}
PROXY_BIN="$BUILD/proxy/fenceproxy"
LOCK_BIN="$BUILD/lockclient/fencelock"
TTL=1s
PAUSE=2 # seconds A stays frozen: longer than its 1 s lease

if [[ -t 1 ]]; then
    B=$'\e[1m' DIM=$'\e[2m' RED=$'\e[31m' GRN=$'\e[32m' YEL=$'\e[33m' CYA=$'\e[36m' OFF=$'\e[0m'
else
    B='' DIM='' RED='' GRN='' YEL='' CYA='' OFF=''
fi

step() { printf '\n%s== %s%s\n' "$B" "$*" "$OFF"; }
say() { printf '   %s\n' "$*"; }
clientA() { printf '   %s[A]%s %s\n' "$YEL" "$OFF" "$*"; }
clientB() { printf '   %s[B]%s %s\n' "$CYA" "$OFF" "$*"; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

for cmd in redis-server nginx curl; do
    command -v "$cmd" >/dev/null 2>&1 || die "$cmd not found (./scripts/deps.sh installs it)"
done

if [[ ! -x "$PROXY_BIN" || ! -x "$LOCK_BIN" || -z "${FENCE_BUILD_DIR:-}" ]]; then
    mkdir -p "$BUILD"
    printf '%s(building fenceproxy and fencelock in %s, log: %s/demo-build.log)%s\n' \
        "$DIM" "$BUILD" "$BUILD" "$OFF"
    if ! { { [[ -f "$BUILD/CMakeCache.txt" ]] \
        || cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFENCE_SANITIZE=OFF; } \
        && cmake --build "$BUILD" -j"$(nproc 2>/dev/null || echo 2)" \
            --target fenceproxy fencelock; } >"$BUILD/demo-build.log" 2>&1; then
        tail -n 30 "$BUILD/demo-build.log" >&2
        die "build failed (log: $BUILD/demo-build.log)"
    fi
fi

DIR=$(mktemp -d "${TMPDIR:-/tmp}/fence-demo-XXXXXX")
PIDS=()   # servers, stopped on exit
GROUPS_=() # process groups of clients that may still be frozen

# shellcheck disable=SC2317  # invoked by the trap
cleanup() {
    local g p
    # Quiet: bash would report each killed job.
    exec 2>/dev/null
    for g in "${GROUPS_[@]}"; do
        kill -CONT -- "-$g" 2>/dev/null || true
        kill -KILL -- "-$g" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    if [[ -n "${FENCE_DEMO_KEEP:-}" ]]; then
        printf '\n%s(kept %s)%s\n' "$DIM" "$DIR" "$OFF"
    else
        rm -rf "$DIR"
    fi
}
trap cleanup EXIT
trap 'printf "\ndemo: interrupted; stopping everything it started\n"; exit 130' INT TERM HUP

# Each background job gets its own process group, so a client can be frozen
# as a whole with kill -STOP -PGID.
set -m

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# A port below the kernel's ephemeral range (32768 and up by default), so no
# outgoing connection holds it; and nothing listens on it right now.
free_port() {
    local p
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 12000))
        port_busy "$p" || { echo "$p"; return 0; }
    done
    die "no free loopback port found"
}
wait_port() {
    for _ in $(seq 100); do port_busy "$1" && return 0; sleep 0.05; done
    return 1
}
wait_file() {
    for _ in $(seq 200); do [[ -s "$1" ]] && return 0; sleep 0.05; done
    die "timed out waiting for $1"
}

REDIS_PORT=$(free_port)
NGINX_PORT=$(free_port)
PROXY_PORT=$(free_port)
ADMIN_PORT=$(free_port)
mkdir -p "$DIR/data" "$DIR/tmp" "$DIR/store"

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$DIR" \
    >"$DIR/redis.log" 2>&1 </dev/null &
PIDS+=($!)

cat >"$DIR/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $DIR/nginx.pid;
error_log $DIR/nginx-error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $DIR/tmp/body;
  proxy_temp_path $DIR/tmp/proxy;
  fastcgi_temp_path $DIR/tmp/fastcgi;
  uwsgi_temp_path $DIR/tmp/uwsgi;
  scgi_temp_path $DIR/tmp/scgi;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    root $DIR/data;
    location / {
      dav_methods PUT DELETE;
      create_full_put_path on;
    }
  }
}
EOF
nginx -p "$DIR" -e "$DIR/nginx-error.log" -c "$DIR/nginx.conf" >/dev/null 2>&1 </dev/null &
PIDS+=($!)

cat >"$DIR/fenceproxy.conf" <<EOF
[proxy]
listen = 127.0.0.1:$PROXY_PORT
admin_listen = 127.0.0.1:$ADMIN_PORT
upstream = http://127.0.0.1:$NGINX_PORT
log_level = warn
[store]
backend = file
path = $DIR/store
[audit]
path = $DIR/audit.log
[route objects]
prefix = /objects/
resource = segments:2
EOF
"$PROXY_BIN" -c "$DIR/fenceproxy.conf" >"$DIR/fenceproxy.log" 2>&1 </dev/null &
PIDS+=($!)

for p in "$REDIS_PORT" "$NGINX_PORT" "$PROXY_PORT"; do
    wait_port "$p" || {
        cat "$DIR"/*.log >&2 2>/dev/null || true
        die "a server did not come up on 127.0.0.1:$p"
    }
done

FL=("$LOCK_BIN" --backend "redis://127.0.0.1:$REDIS_PORT")
LOCK=/objects/user42
OBJ=/objects/user42/data.txt

printf '%sThe paused lock holder%s\n' "$B" "$OFF"
say "redis-server (locks)        127.0.0.1:$REDIS_PORT"
say "nginx WebDAV (the storage)  127.0.0.1:$NGINX_PORT   files in $DIR/data"
say "fenceproxy (in front of it) 127.0.0.1:$PROXY_PORT   route /objects/, resource = segments:2"
say "Both clients guard $OBJ with the lock $LOCK, the proxy's resource key."

# story PORT TAG: one run of the scenario against 127.0.0.1:PORT. Leaves A's
# HTTP status in $DIR/TAG/a.code, its body in a.body and its token in a.token.
story() {
    local port=$1 tag=$2 url a_pid a_child tok_a tok_b code
    local d="$DIR/$tag"
    url="http://127.0.0.1:$port$OBJ"
    mkdir -p "$d"

    step "1. Client A takes the lock and gets a fencing token"
    say "${DIM}\$ fencelock run $LOCK --ttl $TTL -- sh -c '<prepare, then PUT with \$FENCE_TOKEN>'${OFF}"
    # A's command ignores SIGTERM: when A wakes, fencelock sees the lost lock
    # and signals the command, but a write already on its way is not recalled
    # by that. The proxy is what has to stop it.
    # shellcheck disable=SC2016  # expanded by A's shell, not here
    "${FL[@]}" run "$LOCK" --ttl "$TTL" -- sh -c '
        trap "" TERM
        echo $$ >"$0/a.pid"
        echo "$FENCE_TOKEN" >"$0/a.token"
        while [ ! -e "$0/a.go" ]; do sleep 0.02; done
        curl -s -o "$0/a.body" -w "%{http_code}" -X PUT -H "Fencing-Token: $FENCE_TOKEN" \
            --data-binary "written by A (token $FENCE_TOKEN)" "$1" >"$0/a.code"' "$d" "$url" \
        >"$d/a.out" 2>&1 </dev/null &
    a_pid=$!
    GROUPS_+=("$a_pid")
    wait_file "$d/a.token"
    wait_file "$d/a.pid"
    a_child=$(cat "$d/a.pid")
    GROUPS_+=("$a_child")
    tok_a=$(cat "$d/a.token")
    clientA "holds $LOCK with token ${B}$tok_a${OFF} (lease $TTL), and is about to write"

    step "2. Client A freezes (SIGSTOP) for ${PAUSE}s: a GC pause, swap, a suspended VM..."
    kill -STOP -- "-$a_pid" "-$a_child"
    clientA "${DIM}(frozen; it still believes it holds the lock)${OFF}"
    say "Its lease expires in Redis after $TTL; nobody can tell A."
    sleep "$PAUSE"

    step "3. Client B takes the lock (the lease ran out) and writes"
    say "${DIM}\$ fencelock run $LOCK --ttl $TTL -- sh -c 'curl -X PUT -H \"Fencing-Token: \$FENCE_TOKEN\" ...'${OFF}"
    # shellcheck disable=SC2016  # expanded by B's shell, not here
    "${FL[@]}" run "$LOCK" --ttl "$TTL" --wait 10s -- sh -c '
        echo "$FENCE_TOKEN" >"$0/b.token"
        curl -s -o /dev/null -w "%{http_code}" -X PUT -H "Fencing-Token: $FENCE_TOKEN" \
            --data-binary "written by B (token $FENCE_TOKEN)" "$1" >"$0/b.code"' "$d" "$url" \
        >"$d/b.out" 2>&1 </dev/null || die "client B failed: $(cat "$d/b.out")"
    tok_b=$(cat "$d/b.token")
    clientB "got token ${B}$tok_b${OFF}; PUT $OBJ -> HTTP $(cat "$d/b.code")"

    step "4. Client A wakes up (SIGCONT) and sends its write with its old token $tok_a"
    kill -CONT -- "-$a_child" "-$a_pid"
    : >"$d/a.go"
    set +e
    wait "$a_pid"
    local rc=$?
    set -e
    wait_file "$d/a.code"
    code=$(cat "$d/a.code")
    clientA "PUT $OBJ with Fencing-Token: $tok_a -> ${B}HTTP $code${OFF}"
    if [[ $rc -eq 75 ]]; then
        say "${DIM}(fencelock saw on waking that its lease had run out, signalled A's command and"
        say " exited 75. A signal does not recall a write that is already under way, which A's"
        say " command stands for by ignoring it: only the storage side can refuse that write.)${OFF}"
    fi
}

story "$PROXY_PORT" proxy
code=$(cat "$DIR/proxy/a.code")
UNEXPECTED=0
if [[ $code == 409 ]]; then
    say "${GRN}The proxy refused the stale write:${OFF}"
else
    say "${RED}Unexpected: the proxy answered $code${OFF}"
    UNEXPECTED=1
fi
say "  $(cat "$DIR/proxy/a.body")"

step "5. The audit log records the refused write ($DIR/audit.log)"
for _ in $(seq 40); do [[ -s "$DIR/audit.log" ]] && break; sleep 0.05; done
rec=$(grep '"event":"stale_token"' "$DIR/audit.log" | tail -n 1 || true)
say "raw line (each line is chained to the one before by \"prev\", a SHA-256):"
printf '   %s%s%s\n' "$DIM" "$rec" "$OFF"
if command -v python3 >/dev/null 2>&1 && [[ -n "$rec" ]]; then
    printf '%s\n' "$rec" | python3 -m json.tool | sed 's/^/   /'
fi

step "6. What the storage holds"
content=$(cat "$DIR/data$OBJ")
if [[ $content == "written by B"* ]]; then
    say "$OBJ: ${GRN}$content${OFF}  (B's write survived)"
else
    say "$OBJ: ${RED}$content${OFF}  (unexpected: B's write is gone)"
    UNEXPECTED=1
fi

printf '\n%sThe same story without the proxy: both clients talk to nginx directly%s\n' "$B" "$OFF"
curl -s -o /dev/null -X DELETE "http://127.0.0.1:$NGINX_PORT$OBJ" || true
story "$NGINX_PORT" direct
step "5. What the storage holds"
say "$OBJ: ${RED}$(cat "$DIR/data$OBJ")${OFF}"
say "${RED}A's late write with an expired lock overwrote B's newer data: the lock alone did not"
say "protect the storage.${OFF}"

printf '\n%sIn short:%s with the proxy, the stale write got 409 and an audit record, and B'"'"'s\n' \
    "$B" "$OFF"
printf 'data stayed; without it, the stale write silently won.\n'
if [[ $UNEXPECTED -ne 0 ]]; then
    die "the proxy did not behave as this story says (logs: FENCE_DEMO_KEEP=1 keeps $DIR)"
fi
