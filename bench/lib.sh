# bench/lib.sh: small shell helpers shared by bench/run.sh and bench/abuse.sh
# (sourced, not run): messages, free loopback ports, readiness polls, stopping
# started processes by PID, a one-worker nginx config in a temp dir, and the
# machine description printed with the results.
# shellcheck shell=bash

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }

# port_busy PORT: true when something accepts connections on 127.0.0.1:PORT.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port: prints a loopback port nothing listens on and that no earlier
# call returned (kept in USED_PORTS); 200 tries at most. Below the kernel's
# ephemeral range (32768 and up by default), so that client connections
# cannot take it between this check and the server's bind.
USED_PORTS=" "
free_port() {
    local p
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 12000))
        if [[ $USED_PORTS != *" $p "* ]] && ! port_busy "$p"; then
            USED_PORTS+="$p "
            echo "$p"
            return 0
        fi
    done
    die "no free port found"
}

# wait_http URL: polls until URL answers at all (any status), 5 s at most.
wait_http() {
    for _ in $(seq 100); do
        if curl -s -o /dev/null --max-time 1 "$1"; then return 0; fi
        sleep 0.05
    done
    return 1
}

# stop_pids PID...: SIGTERM, a bounded wait (5 s), then SIGKILL what is left.
stop_pids() {
    local pid alive
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 50); do
        alive=0
        for pid in "$@"; do
            if kill -0 "$pid" 2>/dev/null; then alive=1; fi
        done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "$@"; do kill -KILL "$pid" 2>/dev/null || true; done
}

# write_nginx_conf DIR BLOCK...: a one-worker nginx whose files all live in
# DIR; BLOCK goes into the http context. keepalive_requests is raised on
# every side: nginx's default (1000) would make nginx, and only nginx, close
# client connections every 1000 requests. NGINX_WORKER_CONNECTIONS (default
# 4096) and NGINX_MAIN_EXTRA (main-context lines, default none) adjust it.
write_nginx_conf() {
    local dir=$1 user_line=""
    shift
    if [[ $(id -u) -eq 0 ]]; then user_line="user root;"; fi
    mkdir -p "$dir/tmp"
    cat >"$dir/nginx.conf" <<EOF
$user_line
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
${NGINX_MAIN_EXTRA:-}
events { worker_connections ${NGINX_WORKER_CONNECTIONS:-4096}; }
http {
    access_log off;
    default_type application/octet-stream;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
$*
}
EOF
}

# machine_desc: one line: CPUs, CPU model, memory, kernel.
machine_desc() {
    printf '%s CPUs, %s, %s, kernel %s\n' "$(nproc)" \
        "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)" \
        "$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)" "$(uname -r)"
}
