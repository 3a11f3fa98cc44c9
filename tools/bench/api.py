#!/usr/bin/env python3
"""Benchmark task creation through the taskbus REST API (stdlib only).

Open loop: requests are started on a fixed schedule at --rate per second,
spread over --threads worker threads with keep-alive connections. Latency is
measured from each request's SCHEDULED start, so a slow server cannot hide
its queueing (no coordinated omission), and also from the actual send.

    tools/bench/api.py --api http://127.0.0.1:8080 --token tbk_... \
        --group ops --rate 500 --duration 20

Prints one JSON object (machine-readable) and a one-line summary. Exit
status 1 if any request failed or the target p99 was missed (--p99-ms).
"""
import argparse
import http.client
import json
import os
import platform
import queue
import threading
import time
import urllib.parse
import uuid


def percentile(sorted_vals, p):
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


def worker(url, token, group, jobs, results, stop, source=None):
    u = urllib.parse.urlparse(url)
    conn = None
    headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
    while not stop.is_set():
        try:
            job = jobs.get(timeout=0.2)
        except queue.Empty:
            continue
        if job is None:
            break
        idx, sched = job
        now = time.monotonic()
        if sched > now:
            time.sleep(sched - now)
        body = json.dumps({
            "name": "bench-" + uuid.uuid4().hex[:12],
            "script": "/bin/true",
            "security_group": group,
            "schedule": {"every": "1h"},
        })
        sent = time.monotonic()
        status = 0
        try:
            if conn is None:
                conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=60,
                                                  source_address=(source, 0) if source else None)
            conn.request("POST", "/v1/tasks", body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            status = resp.status
        except (OSError, http.client.HTTPException):
            if conn is not None:
                conn.close()
            conn = None
        done = time.monotonic()
        results.append((idx, status, done - sched, done - sent))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--api", default=os.environ.get("TASKBUS_API", "http://127.0.0.1:8080"))
    ap.add_argument("--token", default=os.environ.get("TASKBUS_TOKEN"))
    ap.add_argument("--group", required=True, help="security group of the created tasks")
    ap.add_argument("--rate", type=float, default=500.0, help="creates per second (open loop)")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of measured load")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of load not measured")
    ap.add_argument("--threads", type=int, default=64, help="concurrent connections")
    ap.add_argument("--p99-ms", type=float, default=50.0, help="target p99 (exit 1 if missed)")
    ap.add_argument("--source", help="local address to connect from (e.g. 127.0.0.2)")
    args = ap.parse_args()
    if not args.token:
        ap.error("--token or TASKBUS_TOKEN is required")

    jobs = queue.Queue()
    results = []
    stop = threading.Event()
    threads = [threading.Thread(target=worker, args=(args.api, args.token, args.group, jobs, results, stop, args.source),
                                daemon=True) for _ in range(args.threads)]
    for t in threads:
        t.start()
    start = time.monotonic() + 0.5
    total = int((args.warmup + args.duration) * args.rate)
    warm = int(args.warmup * args.rate)
    for i in range(total):
        jobs.put((i, start + i / args.rate))
    for _ in threads:
        jobs.put(None)
    for t in threads:
        t.join()
    wall = time.monotonic() - start

    measured = [r for r in results if r[0] >= warm]  # warm-up is not measured
    ok = [r for r in measured if r[1] == 201]
    lat = sorted(r[2] * 1000 for r in ok)
    svc = sorted(r[3] * 1000 for r in ok)
    measured_wall = args.duration
    errors = {}
    for r in measured:
        if r[1] != 201:
            errors[str(r[1])] = errors.get(str(r[1]), 0) + 1
    out = {
        "api": args.api,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": "%s, %d CPUs, %s" % (platform.node(), os.cpu_count() or 0, platform.platform()),
        "target_rate": args.rate,
        "threads": args.threads,
        "requests": len(measured),
        "warmup_requests": warm,
        "created": len(ok),
        "errors": errors,
        "achieved_rate": round(len(ok) / max(wall - args.warmup, measured_wall), 1),
        "latency_ms_from_schedule": {
            "p50": percentile(lat, 50), "p90": percentile(lat, 90), "p99": percentile(lat, 99),
            "max": lat[-1] if lat else None,
        },
        "latency_ms_service": {
            "p50": percentile(svc, 50), "p90": percentile(svc, 90), "p99": percentile(svc, 99),
            "max": svc[-1] if svc else None,
        },
    }
    for k in ("latency_ms_from_schedule", "latency_ms_service"):
        out[k] = {a: (round(b, 2) if b is not None else None) for a, b in out[k].items()}
    print(json.dumps(out, indent=2))
    p99 = out["latency_ms_from_schedule"]["p99"]
    good = not errors and p99 is not None and p99 <= args.p99_ms
    print("summary: %d creates at %.0f/s target (%.1f/s achieved), p50 %.1f ms, p99 %.1f ms "
          "(target %.0f ms): %s" % (len(ok), args.rate, out["achieved_rate"] or 0,
                                    out["latency_ms_from_schedule"]["p50"] or 0, p99 or 0,
                                    args.p99_ms, "OK" if good else "MISSED"))
    return 0 if good else 1


if __name__ == "__main__":
    raise SystemExit(main())
