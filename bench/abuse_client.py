#!/usr/bin/env python3
"""bench/abuse_client.py: the clients of bench/abuse.sh, one mode per run.

flood      K connections pipeline GETs as fast as the proxy takes them and
           never read; samples the proxy's RSS meanwhile; then reads for a
           moment and counts the responses that come back.
idle       opens N connections that send nothing; the proxy's RSS before,
           with them open, after one GET on each (keep-alive idle), and after
           they are closed; per connection = RSS delta / connections the
           proxy holds (its descriptors, counted in /proc/PID/fd).
legit      GETs at a fixed rate, a new connection each, open loop: latency is
           measured from the time a request was due, so a stalled proxy is not
           hidden by the client waiting (no coordinated omission).
slowloris  N connections that send a request head one byte every INTERVAL
           seconds and never finish it; reconnects what the proxy closes.
slowbody   N connections that send a PUT head with Content-Length 1 MiB and
           then trickle CHUNK bytes of body every INTERVAL seconds.

Results go to stdout as one line of key=value pairs. Every loop is bounded in
time; only 127.0.0.1 is used. The attackers run until --seconds pass or
SIGTERM, whichever comes first.
"""
import argparse
import heapq
import os
import resource
import select
import signal
import socket
import struct
import sys
import time

HOST = "127.0.0.1"


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def nfds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_settled(pid, n=5, step=0.1):
    """The median of n samples step seconds apart."""
    v = []
    for _ in range(n):
        v.append(rss_kib(pid))
        time.sleep(step)
    return sorted(v)[n // 2]


def out(**kv):
    print(" ".join(f"{k}={v}" for k, v in kv.items()), flush=True)


def hard_close(s):
    """Close with a reset: no TIME_WAIT left on the client's ports."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    s.close()


def get_request(path):
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: abuse\r\n\r\n".encode()


def flood(a):
    req = get_request(a.path)
    per = 256
    big = req * (per + 1)
    chunk = len(req) * per
    rss0 = rss_kib(a.pid)
    socks = {}
    for _ in range(a.conns):
        s = socket.create_connection((HOST, a.port), timeout=5)
        s.setblocking(False)
        socks[s.fileno()] = s
    sent = dict.fromkeys(socks, 0)
    ep = select.epoll()
    for fd in socks:
        ep.register(fd, select.EPOLLOUT)
    alive = set(socks)
    samples = []
    t0 = time.monotonic()
    end = t0 + a.seconds
    next_sample = t0
    while True:
        now = time.monotonic()
        if now >= next_sample:
            samples.append((rss_kib(a.pid), now - t0))
            next_sample += a.sample
        if now >= end:
            break
        for fd, ev in ep.poll(max(0.0, min(next_sample, end) - now)):
            if ev & (select.EPOLLERR | select.EPOLLHUP):
                ep.unregister(fd)
                alive.discard(fd)
                continue
            off = sent[fd] % len(req)  # keep the stream a whole sequence of requests
            try:
                sent[fd] += socks[fd].send(memoryview(big)[off:off + chunk])
            except BlockingIOError:
                pass
            except OSError:
                ep.unregister(fd)
                alive.discard(fd)
    rss_end = rss_kib(a.pid)
    # Now read: are the queued responses still served, and well-formed?
    ok = other = 0
    tail = dict.fromkeys(alive, b"")
    for fd in alive:
        ep.modify(fd, select.EPOLLIN)
    drain_end = time.monotonic() + a.drain
    while alive and time.monotonic() < drain_end:
        for fd, _ in ep.poll(max(0.0, drain_end - time.monotonic())):
            try:
                data = socks[fd].recv(1 << 20)
            except OSError:
                data = b""
            if not data:
                ep.unregister(fd)
                alive.discard(fd)
                continue
            # Status lines split across reads: the tail (the last 12 bytes
            # of what came before) was counted already, so subtract it.
            buf = tail[fd] + data
            t = tail[fd]
            good = buf.count(b"HTTP/1.1 200 ") - t.count(b"HTTP/1.1 200 ")
            ok += good
            other += buf.count(b"HTTP/1.1 ") - t.count(b"HTTP/1.1 ") - good
            tail[fd] = buf[-12:]
    for s in socks.values():
        hard_close(s)
    peak = max(v for v, _ in samples)
    out(rss_start_kib=rss0, rss_max_kib=peak, rss_end_kib=rss_end,
        max_at_s=round(min(t for v, t in samples if v == peak), 2),
        rss_1s_kib=next(v for v, t in samples if t >= min(1.0, a.seconds) - 1e-6),
        samples=len(samples), requests_sent=sum(sent.values()) // len(req),
        open_at_end=len(alive), read_200=ok, read_other=other)


def idle(a):
    base = rss_settled(a.pid)
    fd0 = nfds(a.pid)
    socks = []
    failed = 0
    deadline = time.monotonic() + 60
    for i in range(a.conns):
        if time.monotonic() > deadline:
            failed += a.conns - i
            break
        try:
            s = socket.create_connection((HOST, a.port), timeout=3)
            s.setblocking(False)
            socks.append(s)
        except OSError:
            failed += 1
        if i % 100 == 99:
            time.sleep(0.01)  # paced: keep the accept queue short
    time.sleep(a.settle)
    opened = []
    refused = closed = 0
    for s in socks:
        try:
            d = s.recv(256, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            opened.append(s)
            continue
        except OSError:
            d = b""
        if d.startswith(b"HTTP/1.1 503"):
            refused += 1
        else:
            closed += 1
        hard_close(s)
    rss_open = rss_settled(a.pid)
    # What the proxy holds: its descriptors (a connection in the listen
    # backlog looks open to the client but costs the proxy nothing yet).
    held = nfds(a.pid) - fd0
    # One GET on each, at most 32 in flight (so that the proxies need few
    # upstream connections): afterwards the connections are keep-alive idle.
    req = get_request(a.path)
    ep = select.epoll()
    bufs = {}
    todo = list(reversed(opened))
    ok = 0
    end = time.monotonic() + 30
    while (todo or bufs) and time.monotonic() < end:
        while todo and len(bufs) < 32:
            s = todo.pop()
            try:
                s.send(req)
            except OSError:
                continue
            bufs[s.fileno()] = [s, b""]
            ep.register(s.fileno(), select.EPOLLIN)
        for fd, _ in ep.poll(0.5):
            s, b = bufs[fd]
            try:
                d = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                d = b""
            b += d
            bufs[fd][1] = b
            h = b.find(b"\r\n\r\n")
            if not d or (h >= 0 and len(b) >= h + 4 + 1024):
                ep.unregister(fd)
                del bufs[fd]
                if b.startswith(b"HTTP/1.1 200") and h >= 0 and len(b) == h + 4 + 1024:
                    ok += 1
    time.sleep(a.settle / 2)
    rss_req = rss_settled(a.pid)
    for s in opened:
        hard_close(s)
    time.sleep(a.settle)
    rss_closed = rss_settled(a.pid)
    n = held
    out(rss_base_kib=base, attempted=a.conns, open=len(opened), held=held,
        refused_503=refused, closed=closed, failed=failed, rss_open_kib=rss_open, rss_after_get_kib=rss_req, get_ok=ok,
        rss_closed_kib=rss_closed,
        per_conn_b=(rss_open - base) * 1024 // n if n > 0 else "-",
        per_conn_after_get_b=(rss_req - base) * 1024 // n if n > 0 else "-")


def pct(v, p):
    if not v:
        return "-"
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p / 100.0))]


def legit(a):
    req = get_request(a.path)
    step = 1.0 / a.rate
    total = int(a.seconds * a.rate)
    ep = select.epoll()
    conns = {}  # fd -> [sock, due, buf, connected]
    lat = []
    errors = timeouts = non200 = 0
    t0 = time.monotonic() + 0.05
    i = 0
    hard_end = t0 + a.seconds + a.timeout + 5
    next_scan = t0
    while (i < total or conns) and time.monotonic() < hard_end:
        now = time.monotonic()
        while i < total and t0 + i * step <= now:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex((HOST, a.port))
            conns[s.fileno()] = [s, t0 + i * step, b"", False]
            ep.register(s.fileno(), select.EPOLLOUT)
            i += 1
        if now >= next_scan:
            next_scan = now + 0.1
            for fd in [fd for fd, c in conns.items() if now - c[1] > a.timeout]:
                timeouts += 1
                ep.unregister(fd)
                hard_close(conns.pop(fd)[0])
        wait = (t0 + i * step - now) if i < total else 0.1
        for fd, ev in ep.poll(max(0.0, min(wait, 0.1))):
            c = conns.get(fd)
            if c is None:
                continue
            s = c[0]
            done = False
            if not c[3]:
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err == 0:
                    try:
                        s.send(req)
                        c[3] = True
                        ep.modify(fd, select.EPOLLIN)
                        continue
                    except OSError:
                        pass
                errors += 1
                done = True
            else:
                try:
                    d = s.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    d = b""
                c[2] += d
                b = c[2]
                h = b.find(b"\r\n\r\n")
                if h >= 0 and not b.startswith(b"HTTP/1.1 200"):
                    non200 += 1
                    done = True
                elif h >= 0 and len(b) >= h + 4 + 1024:
                    lat.append(time.monotonic() - c[1])
                    done = True
                elif not d:
                    errors += 1
                    done = True
            if done:
                ep.unregister(fd)
                conns.pop(fd)
                s.close()
    for c in conns.values():
        hard_close(c[0])
    us = [int(x * 1e6) for x in lat]
    out(requests=i, ok=len(us), p50_us=pct(us, 50), p90_us=pct(us, 90), p99_us=pct(us, 99),
        max_us=max(us) if us else "-", errors=errors, timeouts=timeouts, non200=non200)


STOP = False


def on_term(_sig, _frm):
    global STOP
    STOP = True


def attack(a):
    """slowloris and slowbody: keep a.conns connections busy being slow."""
    signal.signal(signal.SIGTERM, on_term)
    if a.mode == "slowloris":
        # A head that never ends: one more header line after another.
        stream = b"GET /1k.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"".join(
            b"X-Pad-%d: a\r\n" % k for k in range(1000))
        first = 1
        chunk = 1
    else:
        stream = None
        first = 0
        chunk = a.chunk
    ep = select.epoll()
    slots = [None] * a.conns  # [sock, sent, gen]
    by_fd = {}
    heap = []  # (time, slot, gen): next send, or a reconnect when sock is None
    stats = dict(connects=0, closed_by_proxy=0, statuses={}, connect_errors=0)
    gen = [0]

    def head_for(k):
        if stream is not None:
            return stream
        return (b"PUT /w/u/slow-%d HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Length: 1048576\r\n\r\n" % k)

    def open_slot(k, now):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex((HOST, a.port))
        gen[0] += 1
        slots[k] = [s, 0, gen[0], False]
        by_fd[s.fileno()] = k
        ep.register(s.fileno(), select.EPOLLOUT | select.EPOLLIN)
        stats["connects"] += 1

    def drop_slot(k, now, by_proxy):
        s = slots[k][0]
        del by_fd[s.fileno()]
        ep.unregister(s.fileno())
        hard_close(s)
        slots[k] = None
        if by_proxy:
            stats["closed_by_proxy"] += 1
        heapq.heappush(heap, (now + 0.1, k, -1))  # reconnect, at most 10/s per slot

    def send_more(k, now):
        c = slots[k]
        if c[1] == 0:
            data = head_for(k)[:first] if stream is not None else head_for(k)
        elif stream is not None:
            data = stream[c[1]:c[1] + chunk]
        else:
            data = b"x" * chunk
        try:
            c[1] += c[0].send(data)
        except BlockingIOError:
            pass
        except OSError:
            drop_slot(k, now, True)
            return
        heapq.heappush(heap, (now + a.interval, k, c[2]))

    t0 = time.monotonic()
    end = t0 + a.seconds
    for k in range(a.conns):
        open_slot(k, t0)
        if k % 100 == 99:
            time.sleep(0.01)
    ready_written = False
    while not STOP and time.monotonic() < end:
        now = time.monotonic()
        while heap and heap[0][0] <= now:
            _, k, g = heapq.heappop(heap)
            if g == -1:
                if slots[k] is None:
                    open_slot(k, now)
            elif slots[k] is not None and slots[k][2] == g:
                send_more(k, now)
        if not ready_written and all(c is not None and c[3] for c in slots):
            with open(a.ready, "w") as f:
                f.write("ready\n")
            ready_written = True
        wait = min(heap[0][0] - now, 0.05) if heap else 0.05
        for fd, ev in ep.poll(max(0.0, wait)):
            k = by_fd.get(fd)
            if k is None:
                continue
            c = slots[k]
            if not c[3]:
                if c[0].getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                    stats["connect_errors"] += 1
                    drop_slot(k, now, False)
                    continue
                c[3] = True
                ep.modify(fd, select.EPOLLIN)
                send_more(k, now)
                continue
            try:
                d = c[0].recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                d = b""
            if d.startswith(b"HTTP/1."):
                code = d[9:12].decode("ascii", "replace")
                stats["statuses"][code] = stats["statuses"].get(code, 0) + 1
            drop_slot(k, now, True)
    held = sum(1 for c in slots if c is not None and c[3])
    for c in slots:
        if c is not None:
            hard_close(c[0])
    codes = ",".join(f"{k}:{v}" for k, v in sorted(stats["statuses"].items())) or "-"
    out(mode=a.mode, conns=a.conns, connects=stats["connects"],
        closed_by_proxy=stats["closed_by_proxy"], responses=codes,
        connect_errors=stats["connect_errors"], held_at_end=held,
        seconds=round(time.monotonic() - t0, 1))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=["flood", "idle", "legit", "slowloris", "slowbody"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pid", type=int, help="process whose RSS is sampled (flood, idle)")
    p.add_argument("--conns", type=int, default=1)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--path", default="/1k.bin")
    p.add_argument("--sample", type=float, default=0.25, help="flood: RSS sample period")
    p.add_argument("--drain", type=float, default=1.0, help="flood: seconds of reading after")
    p.add_argument("--settle", type=float, default=2.0, help="idle: seconds before measuring")
    p.add_argument("--rate", type=float, default=200, help="legit: requests per second")
    p.add_argument("--timeout", type=float, default=5, help="legit: per-request deadline")
    p.add_argument("--interval", type=float, default=2, help="attackers: seconds between sends")
    p.add_argument("--chunk", type=int, default=64, help="slowbody: bytes per send")
    p.add_argument("--ready", default=os.devnull, help="attackers: file written once all connected")
    a = p.parse_args()
    if not 0 < a.seconds <= 120 or not 0 < a.conns <= 20000:
        sys.exit("abuse_client: --seconds wants 0..120, --conns 1..20000")
    if a.mode in ("flood", "idle") and a.pid is None:
        sys.exit("abuse_client: --pid is required for flood and idle")
    raise_nofile()
    {"flood": flood, "idle": idle, "legit": legit}.get(a.mode, attack)(a)


if __name__ == "__main__":
    main()
