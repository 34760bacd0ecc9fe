#!/usr/bin/env bash
# bench/run.sh: the proxy benchmark of issues 3 and 4, in one run, on loopback.
# It starts three servers in a fresh temp dir: an nginx "upstream" (static
# 1 KiB file for GET; `return 204` for every PUT under /w/, so the upstream
# reads and discards the body and no disk write is measured), an nginx reverse
# proxy in front of it (the peer fenceproxy is compared with), and fenceproxy
# in front of the same upstream with a file (LMDB) store in the temp dir.
# Then it runs wrk against each target, interleaved (for each round, for each
# case, for each target), and prints medians over the rounds as Markdown
# tables on stdout; progress and per-run figures go to stderr.
#
# Cases (issue 3, targets upstream / nginx / fenceproxy):
#   GET 1 KiB, and PUT 1 KiB with "Fencing-Token: 1" (fenced on fenceproxy),
#   each at 64 connections (wrk -t2 -c64) and at 1 connection (-t1 -c1).
# Cases (issue 4, fenceproxy only):
#   unfenced PUT (same request, on a path no route covers), at 64 and 1 conn;
#   advancing PUT: every request raises its resource's token (advance.lua,
#   -t64 -c64 and -t1 -c1), with advances, commit batches and stale-token
#   rejections (409) read from the admin /metrics before and after each run.
# Besides wrk's req/s and latency, each run records the CPU time the target's
# processes used per request (from /proc/PID/stat): on a shared machine it is
# far steadier than req/s. The 1-minute load average before each run is kept
# too, to show how busy the machine was.
#
# Pinning (2 cores): the proxy under test (nginx proxy or fenceproxy, with all
# its threads) on CPU $CPU_PROXY; the upstream nginx and wrk on CPU $CPU_LOAD.
# Both proxies get the same CPU, so their comparison is fair; the
# upstream-direct rows share one CPU between wrk and nginx and are a
# reference only.
#
# Usage: bench/run.sh [-b FENCEPROXY] [-r ROUNDS] [-d SECONDS] [-k] [-p PERFDIR]
#   -b  fenceproxy binary (default: build/proxy/fenceproxy, or $FENCE_PROXY_BIN)
#   -r  rounds (default 3); -d  seconds per wrk run (default 5)
#   -k  keep the temp dir (configs, logs, raw results) and print its path
#   -p  record `perf record -g` of fenceproxy during its runs into PERFDIR
#       (perf slows the proxy: do not publish the figures of such a run)
# Environment: BENCH_TMPDIR (parent of the temp dir, default /var/tmp: on
# disk, not tmpfs, so the store's fsync is real), BENCH_CPU_PROXY (0),
# BENCH_CPU_LOAD (1).
# Everything started here is stopped by PID on exit, also on Ctrl-C.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$ROOT/bench"
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

PROXY_BIN=${FENCE_PROXY_BIN:-$ROOT/build/proxy/fenceproxy}
ROUNDS=3
DURATION=5
KEEP=0
PERF_DIR=""
CPU_PROXY=${BENCH_CPU_PROXY:-0}
CPU_LOAD=${BENCH_CPU_LOAD:-1}
TMP_PARENT=${BENCH_TMPDIR:-/var/tmp}

source "$BENCH/lib.sh"

while getopts "b:r:d:kp:h" opt; do
    case $opt in
    b) PROXY_BIN=$OPTARG ;;
    r) ROUNDS=$OPTARG ;;
    d) DURATION=$OPTARG ;;
    k) KEEP=1 ;;
    p) PERF_DIR=$OPTARG ;;
    h) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' >&2; exit 0 ;;
    *) exit 2 ;;
    esac
done
[[ $ROUNDS =~ ^[1-9][0-9]?$ ]] || die "-r wants 1..99"
[[ $DURATION =~ ^[1-9][0-9]?$ ]] || die "-d wants 1..99 seconds"
[[ -x $PROXY_BIN ]] || die "fenceproxy not found: $PROXY_BIN (build it, or use -b)"
for tool in nginx wrk curl taskset; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found"
done
[[ -z $PERF_DIR ]] || command -v perf >/dev/null 2>&1 || die "perf not found"
ncpu=$(nproc)
((CPU_PROXY < ncpu && CPU_LOAD < ncpu)) || die "CPUs $CPU_PROXY/$CPU_LOAD not present"

WORK=$(mktemp -d "$TMP_PARENT/fence-bench.XXXXXX")
# nginx workers started by root run as "nobody" unless told otherwise; they
# must read the temp dir.
chmod 755 "$WORK"
PIDS=()
WRK_PID=""

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $WRK_PID ]]; then kill "$WRK_PID" 2>/dev/null || true; fi
    stop_pids "${PIDS[@]}"
    if ((KEEP)); then
        say "kept $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

UP_PORT=$(free_port)
NGX_PORT=$(free_port)
FP_PORT=$(free_port)
FP_ADMIN=$(free_port)

mkdir -p "$WORK/up/www"
head -c 1024 /dev/zero | tr '\0' 'a' >"$WORK/up/www/1k.bin"
write_nginx_conf "$WORK/up" "
    server {
        listen 127.0.0.1:$UP_PORT;
        root $WORK/up/www;
        # PUT target: nginx reads and discards the body, then answers 204.
        location /w/ { return 204; }
    }"
write_nginx_conf "$WORK/ngx" "
    upstream up {
        server 127.0.0.1:$UP_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGX_PORT;
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }
    }"

mkdir -p "$WORK/fp"
cat >"$WORK/fp/fenceproxy.conf" <<EOF
[proxy]
listen = 127.0.0.1:$FP_PORT
upstream = http://127.0.0.1:$UP_PORT
admin_listen = 127.0.0.1:$FP_ADMIN
access_log = off
log_level = warn

[store]
backend = file
path = $WORK/fp/store

[audit]
path = $WORK/fp/audit.log

; The PUT of issue 3 and the fixed-token case of issue 4: one resource.
[route fenced]
prefix = /w/f/
resource = prefix

; advance.lua: one resource per wrk thread, /w/a/TAG/tN.
[route advance]
prefix = /w/a/
resource = segments:4

; /w/u/ has no route: the unfenced PUT passes through unchecked.
EOF
"$PROXY_BIN" -t -c "$WORK/fp/fenceproxy.conf" >/dev/null || die "fenceproxy rejects the config"

say "temp dir $WORK ($(df -PT "$WORK" | awk 'NR == 2 { print $2 }'))"
say "ports: upstream $UP_PORT, nginx $NGX_PORT, fenceproxy $FP_PORT (admin $FP_ADMIN)"
say "pinning: proxies on CPU $CPU_PROXY; upstream nginx and wrk on CPU $CPU_LOAD"

taskset -c "$CPU_LOAD" nginx -p "$WORK/up" -c "$WORK/up/nginx.conf" -e "$WORK/up/error.log" \
    2>"$WORK/up/stderr.log" &
PIDS+=($!)
taskset -c "$CPU_PROXY" nginx -p "$WORK/ngx" -c "$WORK/ngx/nginx.conf" -e "$WORK/ngx/error.log" \
    2>"$WORK/ngx/stderr.log" &
PIDS+=($!)
taskset -c "$CPU_PROXY" "$PROXY_BIN" -c "$WORK/fp/fenceproxy.conf" 2>"$WORK/fp/stderr.log" &
FP_PID=$!
PIDS+=("$FP_PID")

wait_http "http://127.0.0.1:$UP_PORT/1k.bin" || die "upstream did not start: $(cat "$WORK/up/error.log")"
wait_http "http://127.0.0.1:$NGX_PORT/1k.bin" || die "nginx proxy did not start: $(cat "$WORK/ngx/error.log")"
wait_http "http://127.0.0.1:$FP_ADMIN/metrics" || die "fenceproxy did not start: $(cat "$WORK/fp/stderr.log")"

# The processes whose CPU time is charged to each target: the nginx master
# and its worker, or fenceproxy (all its threads, the store writer included).
CLK_TCK=$(getconf CLK_TCK)
declare -A CPU_PIDS=([up]="${PIDS[0]} $(pgrep -P "${PIDS[0]}" | tr '\n' ' ')"
    [ngx]="${PIDS[1]} $(pgrep -P "${PIDS[1]}" | tr '\n' ' ')" [fp]="$FP_PID")
# cpu_ticks TARGET: user + system clock ticks used so far by its processes.
cpu_ticks() {
    local pid sum=0 f
    for pid in ${CPU_PIDS[$1]}; do
        read -r -a f <"/proc/$pid/stat" || die "process $pid of $1 is gone"
        # Fields 14 and 15 (utime, stime); the comm field has no spaces here.
        sum=$((sum + f[13] + f[14]))
    done
    echo "$sum"
}

declare -A URL=([up]="http://127.0.0.1:$UP_PORT" [ngx]="http://127.0.0.1:$NGX_PORT"
    [fp]="http://127.0.0.1:$FP_PORT")

# Smoke check: every target answers each request kind as expected, so a
# misconfiguration fails here rather than as a table of error responses.
check() {
    local want=$1 got
    shift
    got=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@") || got="curl failed"
    [[ $got == "$want" ]] || die "expected $want, got $got: curl $*"
}
for t in up ngx fp; do
    check 200 "${URL[$t]}/1k.bin"
    check 204 -X PUT -H 'Fencing-Token: 1' --data-binary @"$WORK/up/www/1k.bin" "${URL[$t]}/w/f/o"
done
check 204 -X PUT -H 'Fencing-Token: 1' --data-binary @"$WORK/up/www/1k.bin" "${URL[fp]}/w/u/o"
check 409 -X PUT -H 'Fencing-Token: 0' --data-binary @"$WORK/up/www/1k.bin" "${URL[fp]}/w/f/o"

# metric NAME: the value of one unlabelled series (or one with its labels
# written out) from fenceproxy's /metrics; 0 when absent.
METRICS=""
scrape() { METRICS=$(curl -s --max-time 5 "http://127.0.0.1:$FP_ADMIN/metrics"); }
metric() {
    awk -v n="$1" '$1 == n { v = $2 } END { printf "%s\n", (v == "" ? 0 : v) }' <<<"$METRICS"
}

RESULTS="$WORK/results.tsv"
printf 'round\tcase\ttarget\trps\tp50_us\tp99_us\tnon2xx\tsockerr\tadv_per_s\tbatch\tstale\tload1\tcpu_us\n' >"$RESULTS"

# run_wrk ROUND CASE TARGET: one wrk run; appends one line to $RESULTS.
run_wrk() {
    local round=$1 kase=$2 target=$3 threads conns script path args=() out
    case $kase in
    get64 | get1) script=get.lua path=/1k.bin ;;
    put64 | put1) script=put.lua path=/w/f/o ;;
    open64 | open1) script=put.lua path=/w/u/o ;;
    adv64 | adv1) script=advance.lua path=/w/a/ args=(-- "r$round-$kase") ;;
    warm) script=put.lua path=/w/f/o ;;
    esac
    case $kase in
    *64) threads=2 conns=64 ;;
    *1) threads=1 conns=1 ;;
    warm) threads=2 conns=64 ;;
    esac
    [[ $kase == adv64 ]] && threads=64
    local dur=$DURATION
    [[ $kase == warm ]] && dur=1
    out="$WORK/wrk-$round-$kase-$target.txt"

    local a0=0 b0=0 c0=0 s0=0 perf_pid="" load1
    # The 1-minute load average before the run: this machine may be shared,
    # and the figures mean little when it is well above 2.
    read -r load1 _ </proc/loadavg
    if [[ $target == fp ]]; then
        scrape
        a0=$(metric fence_store_advances_total)
        b0=$(metric fence_store_commit_batch_size_sum)
        c0=$(metric fence_store_commit_batch_size_count)
        s0=$(metric 'fence_rejections_total{reason="stale_token"}')
        if [[ -n $PERF_DIR && $kase != warm ]]; then
            mkdir -p "$PERF_DIR"
            perf record -g -p "$FP_PID" -o "$PERF_DIR/perf-$round-$kase.data" \
                -- sleep "$dur" >/dev/null 2>&1 &
            perf_pid=$!
        fi
    fi
    local ticks0
    ticks0=$(cpu_ticks "$target")
    taskset -c "$CPU_LOAD" wrk -t"$threads" -c"$conns" -d"${dur}s" --latency \
        -s "$BENCH/$script" "${URL[$target]}$path" "${args[@]}" >"$out" 2>&1 &
    WRK_PID=$!
    wait "$WRK_PID" || die "wrk failed: $(cat "$out")"
    WRK_PID=""
    local ticks1
    ticks1=$(cpu_ticks "$target")
    if [[ -n $perf_pid ]]; then wait "$perf_pid" || true; fi

    local line
    line=$(grep '^RESULT ' "$out") || die "no RESULT line from wrk: $(cat "$out")"
    # shellcheck disable=SC2086 # word splitting of key=value pairs wanted
    local requests duration_us rps p50_us p99_us non2xx connect read write timeout
    eval "${line#RESULT }"
    local adv="" batch="" stale=""
    if [[ $target == fp ]]; then
        scrape
        local a1 b1 c1 s1
        a1=$(metric fence_store_advances_total)
        b1=$(metric fence_store_commit_batch_size_sum)
        c1=$(metric fence_store_commit_batch_size_count)
        s1=$(metric 'fence_rejections_total{reason="stale_token"}')
        read -r adv batch stale < <(awk -v a0="$a0" -v a1="$a1" -v b0="$b0" -v b1="$b1" \
            -v c0="$c0" -v c1="$c1" -v s0="$s0" -v s1="$s1" -v us="$duration_us" 'BEGIN {
                dc = c1 - c0
                printf "%.1f %s %d\n", (a1 - a0) / (us / 1e6),
                    (dc > 0 ? sprintf("%.2f", (b1 - b0) / dc) : "-"), s1 - s0 }')
    fi
    [[ $kase == warm ]] && return 0
    # CPU time of the target per request, in microseconds: unlike req/s it
    # hardly depends on what else runs on the machine.
    local cpu_us
    cpu_us=$(awk -v t=$((ticks1 - ticks0)) -v hz="$CLK_TCK" -v n="$requests" \
        'BEGIN { printf "%.1f\n", (n > 0 ? t * 1e6 / hz / n : 0) }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$kase" "$target" "$rps" \
        "$p50_us" "$p99_us" "$non2xx" $((connect + read + write + timeout)) \
        "${adv:--}" "${batch:--}" "${stale:--}" "$load1" "$cpu_us" >>"$RESULTS"
    printf '    round %s %-6s %-3s %10s req/s  p50 %6s us  p99 %7s us  cpu %5s us/req  non2xx %s  sockerr %s  load %s%s\n' \
        "$round" "$kase" "$target" "$rps" "$p50_us" "$p99_us" "$cpu_us" "$non2xx" \
        $((connect + read + write + timeout)) "$load1" \
        "${adv:+  adv/s $adv  batch $batch  stale $stale}" >&2
}

say "warm-up (1 s per target)"
for t in up ngx fp; do run_wrk 0 warm "$t"; done

start=$(date +%s)
for round in $(seq "$ROUNDS"); do
    say "round $round/$ROUNDS"
    for kase in get64 get1 put64 put1; do
        for t in up ngx fp; do run_wrk "$round" "$kase" "$t"; done
        # The unfenced twin of the fenced PUT runs right after it.
        case $kase in
        put64) run_wrk "$round" open64 fp ;;
        put1) run_wrk "$round" open1 fp ;;
        esac
    done
    run_wrk "$round" adv64 fp
    run_wrk "$round" adv1 fp
done
elapsed=$(($(date +%s) - start))
say "measured in ${elapsed}s"

kill -0 "$FP_PID" 2>/dev/null || die "fenceproxy died during the run: $(cat "$WORK/fp/stderr.log")"
if [[ -s $WORK/fp/stderr.log ]]; then
    say "fenceproxy stderr (last lines):"
    tail -n 5 "$WORK/fp/stderr.log" >&2
fi

# ---- Summary: medians over the rounds, as Markdown -------------------------
# med CASE TARGET COLUMN: median over the rounds (lower middle for an even
# count); "-" when there is no value.
med() {
    awk -F'\t' -v k="$1" -v t="$2" -v c="$3" 'NR > 1 && $2 == k && $3 == t && $c != "-" {
        v[n++] = $c } END {
        if (n == 0) { print "-"; exit }
        for (i = 1; i < n; i++) for (j = i; j > 0 && v[j - 1] + 0 > v[j] + 0; j--) {
            x = v[j]; v[j] = v[j - 1]; v[j - 1] = x }
        print v[int((n - 1) / 2)] }' "$RESULTS"
}
# total CASE TARGET COLUMN: sum over the rounds.
total() {
    awk -F'\t' -v k="$1" -v t="$2" -v c="$3" 'NR > 1 && $2 == k && $3 == t && $c != "-" {
        s += $c } END { printf "%d\n", s }' "$RESULTS"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "-"; else printf "%.2f\n", a / b }'; }
int() { awk -v a="$1" 'BEGIN { printf "%.0f\n", a }'; }

declare -A NAME=([up]="upstream direct" [ngx]="nginx proxy_pass" [fp]="fenceproxy")
declare -A LABEL=([get64]="GET 1 KiB, 64 conn" [get1]="GET 1 KiB, 1 conn"
    [put64]="PUT 1 KiB, 64 conn" [put1]="PUT 1 KiB, 1 conn"
    [open64]="PUT 1 KiB, 64 conn" [open1]="PUT 1 KiB, 1 conn"
    [adv64]="advancing PUT, 64 conn (-t64)" [adv1]="advancing PUT, 1 conn")

cat <<EOF

### Run
- fenceproxy: $PROXY_BIN (built $(date -r "$PROXY_BIN" '+%F %T')); repository HEAD at run time: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
- $ROUNDS rounds x ${DURATION} s per run, interleaved; medians over the rounds; measured in ${elapsed} s
- machine: $(machine_desc)
- store: $(df -PT "$WORK" | awk 'NR == 2 { print $2 }') under $TMP_PARENT; $(nginx -v 2>&1 | sed 's/^nginx version: //'); $(wrk -v 2>&1 | head -n 1 | awk '{ print "wrk " $2 }')
- pinning: proxy under test (nginx or fenceproxy) on CPU $CPU_PROXY; upstream nginx and wrk on CPU $CPU_LOAD
- 1-minute load average before each run: $(awk -F'\t' 'NR > 1 { v = $12 + 0; if (n++ == 0 || v < min) min = v; if (v > max) max = v } END { print "min " min ", max " max }' "$RESULTS")

### Proxy throughput (issue 3)

| case | target | req/s | p50 (us) | p99 (us) | CPU us/req | non-2xx (all rounds) |
|---|---|---:|---:|---:|---:|---:|
EOF
for kase in get64 get1 put64 put1; do
    for t in up ngx fp; do
        printf '| %s | %s | %s | %s | %s | %s | %s |\n' "${LABEL[$kase]}" "${NAME[$t]}" \
            "$(int "$(med "$kase" "$t" 4)")" "$(med "$kase" "$t" 5)" "$(med "$kase" "$t" 6)" \
            "$(med "$kase" "$t" 13)" "$(total "$kase" "$t" 7)"
    done
done
cat <<EOF

| case | fenceproxy / nginx req/s | fenceproxy / nginx p99 | fenceproxy / nginx CPU per request |
|---|---:|---:|---:|
EOF
for kase in get64 get1 put64 put1; do
    printf '| %s | %s | %s | %s |\n' "${LABEL[$kase]}" \
        "$(ratio "$(med "$kase" fp 4)" "$(med "$kase" ngx 4)")" \
        "$(ratio "$(med "$kase" fp 6)" "$(med "$kase" ngx 6)")" \
        "$(ratio "$(med "$kase" fp 13)" "$(med "$kase" ngx 13)")"
done

cat <<EOF

### Fencing cost (issue 4)

| case | fenced (token 1) req/s | unfenced req/s | fenced / unfenced | fenced p99 (us) | unfenced p99 (us) | fenced / unfenced CPU per request |
|---|---:|---:|---:|---:|---:|---:|
EOF
for pair in "put64 open64" "put1 open1"; do
    read -r f u <<<"$pair"
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "${LABEL[$f]}" \
        "$(int "$(med "$f" fp 4)")" "$(int "$(med "$u" fp 4)")" \
        "$(ratio "$(med "$f" fp 4)" "$(med "$u" fp 4)")" "$(med "$f" fp 6)" "$(med "$u" fp 6)" \
        "$(ratio "$(med "$f" fp 13)" "$(med "$u" fp 13)")"
done
cat <<EOF

| case | req/s | advances/s | avg commit batch | p50 (us) | p99 (us) | CPU us/req | 409 (all rounds) | non-2xx (all rounds) |
|---|---:|---:|---:|---:|---:|---:|---:|---:|
EOF
for kase in adv64 adv1; do
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "${LABEL[$kase]}" \
        "$(int "$(med "$kase" fp 4)")" "$(int "$(med "$kase" fp 9)")" "$(med "$kase" fp 10)" \
        "$(med "$kase" fp 5)" "$(med "$kase" fp 6)" "$(med "$kase" fp 13)" "$(total "$kase" fp 11)" \
        "$(total "$kase" fp 7)"
done

echo
echo "### Per-run figures"
echo
echo '```'
column -t -s $'\t' "$RESULTS"
echo '```'
