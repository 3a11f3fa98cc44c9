"""Hostile clients for `tools/bench/run abuse` (stdlib only).

Each load runs in its own threads until stop() and counts what it did. They
connect from their own loopback addresses (127.0.x.y: Linux routes the whole
127/8 to lo), so the API sees them as other clients than the legitimate one,
as it would on a network: the per-client connection limit does not simply
turn them all away.
"""
import os
import random
import socket
import threading
import time


def _connect(port, source, timeout=5.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def _read_response(s, buf):
    """Read one HTTP/1.1 response with a Content-Length from s; returns (status, rest)."""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise OSError("closed")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            raise OSError("closed")
        rest += chunk
    return status, rest[length:]


class Load:
    """A named set of threads with counters; run(fn) per thread until stop()."""

    def __init__(self, name):
        self.name = name
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.counts = {}
        self.threads = []
        self.started = None

    def count(self, key, n=1):
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + n

    def exchange(self, port, src, s, buf, req):
        """One request on keep-alive socket s (None: connect from src); counts the
        status or the error. Returns the socket to use next (None after an error)."""
        try:
            if s is None:
                s, buf = _connect(port, src), b""
            s.sendall(req)
            st, buf = _read_response(s, buf)
            self.count(str(st))
            return s, buf
        except (OSError, ValueError, IndexError):
            self.count("error")
            if s is not None:
                s.close()
            return None, b""

    def start(self, n, fn):
        self.started = time.monotonic()
        for i in range(n):
            t = threading.Thread(target=fn, args=(i,), daemon=True)
            t.start()
            self.threads.append(t)

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(15)
        el = time.monotonic() - self.started if self.started else 0
        with self.lock:
            return {"load": self.name, "seconds": round(el, 1), **self.counts}


def slowloris(port, connections=1000, addresses=100):
    """Connections that send one header byte every few seconds and never finish."""
    ld = Load("slowloris")
    per = max(1, connections // addresses)

    def one(i):
        src = "127.0.%d.%d" % (10 + (i // per) // 250, 1 + (i // per) % 250)
        s = None
        while not ld.stop_ev.is_set():
            try:
                if s is None:
                    s = _connect(port, src)
                    s.sendall(b"GET /v1/tasks HTTP/1.1\r\nHost: x\r\n")
                    ld.count("opened")
                s.sendall(b"X")
                ld.stop_ev.wait(3 + random.random())
            except OSError:
                ld.count("dropped_or_refused")
                if s is not None:
                    s.close()
                s = None
                ld.stop_ev.wait(0.5)
        if s is not None:
            s.close()

    ld.start(connections, one)
    return ld


def bogus_tokens(port, rate=1000.0, threads=8):
    """Well-formed unknown tokens at `rate` requests/s on keep-alive connections."""
    ld = Load("bogus_tokens")
    interval = threads / rate

    def one(i):
        src = "127.0.20.%d" % (1 + i)
        s, buf = None, b""
        nxt = time.monotonic()
        while not ld.stop_ev.is_set():
            now = time.monotonic()
            if now < nxt:
                time.sleep(nxt - now)
            nxt += interval
            tok = "tbk_%016x_%032x" % (random.getrandbits(64), random.getrandbits(128))
            req = ("GET /v1/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n" % tok).encode()
            s, buf = ld.exchange(port, src, s, buf, req)

    ld.start(threads, one)
    return ld


def unknown_methods(port, rate=100.0):
    """Requests with a new made-up method each time."""
    ld = Load("unknown_methods")

    def one(i):
        src = "127.0.21.1"
        s, buf = None, b""
        n = 0
        while not ld.stop_ev.is_set():
            n += 1
            req = ("M%d%04d /v1/tasks HTTP/1.1\r\nHost: x\r\n\r\n" % (i, n)).encode()
            s, buf = ld.exchange(port, src, s, buf, req)
            ld.stop_ev.wait(1.0 / rate)

    ld.start(1, one)
    return ld


def log_follows(port, run_id, tokens, per_token):
    """len(tokens) * per_token concurrent follows of one run's log, reconnecting when ended."""
    ld = Load("log_follows")
    path = "/v1/runs/%s/log?follow=true" % run_id

    def one(i):
        tok = tokens[i // per_token]
        src = "127.0.22.%d" % (1 + i % 250)
        while not ld.stop_ev.is_set():
            try:
                s = _connect(port, src, timeout=2.0)
                s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n" %
                           (path, tok)).encode())
                first = True
                while not ld.stop_ev.is_set():
                    try:
                        chunk = s.recv(65536)
                    except socket.timeout:
                        continue
                    if not chunk:
                        break
                    if first:
                        ld.count("status_" + chunk.split(b" ", 2)[1].decode(errors="replace"))
                        first = False
                    ld.count("bytes", len(chunk))
                s.close()
                ld.count("ended")
            except OSError:
                ld.count("error")
            ld.stop_ev.wait(1.0)

    ld.start(len(tokens) * per_token, one)
    return ld


def proc_usage(pid):
    """RSS (KiB), open descriptors and threads of a process."""
    rss = threads = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    fds = len(os.listdir("/proc/%d/fd" % pid))
    return {"rss_kib": rss, "fds": fds, "threads": threads}
