#!/usr/bin/env python3
"""The peers scenario of tools/bench/run: the same start-lag workload, one system after the
other, on taskbus, on Quartz 2.5 with its clustered JDBC job store, and on pg_cron.

    tools/bench/run peers [--workload 750,5000,steady] [--systems taskbus,quartz,pgcron]
                          [--repeat N] [--quartz-threads T] [--pgcron-max-jobs M]
                          [--timeout SECONDS]

Workloads: "750" and "5000" one-shot jobs due at one instant; "steady": 100 due at each of 60
whole seconds (100 fires/s for 60 s). Every shell job (taskbus, Quartz) is
`sh -c 'echo I NOMINAL_MS $(date +%s%N) >> FILE'`: its start lag is the time `date` read in
the started shell minus its nominal instant. pg_cron runs only SQL: each job is an INSERT of
clock_timestamp(), its lag that time minus the minute it was due at.

A system that does not start all N jobs within --timeout seconds of the last due instant (or
whose setup outlasts the due instant) is reported FAILED with how many started, and the
scenario exits non-zero: no partial numbers are quoted as complete. Results are merged by
workload into docs/bench-results/peers.json; plots are docs/img/peers-WORKLOAD.svg.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile

import scenarios as sc

WORKLOADS = {
    "750": [(0, 750)],
    "5000": [(0, 5000)],
    "steady": [(s, 100) for s in range(60)],
}
SYSTEMS = ("taskbus", "quartz", "pgcron")
QUARTZ_DIR = os.environ.get("TB_PEERS_QUARTZ", "")
PGCRON_PORT = int(os.environ.get("TB_BENCH_PGCRON_PORT", str(sc.PG_PORT + 2)))


class Failed(Exception):
    """A system did not start every job of a workload: the message says how many did."""


def loadavg():
    return open("/proc/loadavg").read().split()[:3]


def shell_cmd(i, nominal_ms, out):
    return "echo %d %d $(date +%%s%%N) >> '%s'" % (i, nominal_ms, out)


def jobs_of(workload, t0_ms):
    """[(index, nominal ms)] of a workload whose first instant is t0_ms."""
    out, i = [], 0
    for off, n in WORKLOADS[workload]:
        for _ in range(n):
            out.append((i, t0_ms + off * 1000))
            i += 1
    return out


def lead_s(n):
    """Seconds between now and the first due instant: room to schedule n jobs (Quartz: a JVM
    start and one transaction, 20 s for 750 on a loaded machine; pg_cron: one statement)."""
    return 30 + n // 40


def create_rate(d):
    """Creates/s the REST API manages now: 48 tasks due tomorrow (they never fire during the
    bench), created as the workload's are. taskbus creates one task per REST call, a few
    hundred per second quiet, far fewer on a loaded machine: the lead is sized from this."""
    day = (sc.now_ms() // 1000 + 86400) * 1000
    bodies = [{"name": "peers-probe-%d-%d" % (day // 1000, i), "script": "true", "security_group": "ops",
               "schedule": {"once": sc.rfc3339(day)}} for i in range(48)]
    t = time.time()
    res = sc.post_many(d.token, bodies, threads=16)
    ok = sum(1 for r in res if r and r[0] == 201)
    if not ok:
        raise Failed("taskbus: the REST API created none of 48 probe tasks (first reply %s)" % (res[0],))
    return ok / max(0.001, time.time() - t)


def starts_file(work):
    path = os.path.join(work, "starts")
    open(path, "w").close()
    os.chmod(work, 0o777)
    os.chmod(path, 0o666)  # taskbus's executor runs the shell as the group's user
    return path


def read_starts(path, jobs):
    """Start lags (ms) of the jobs from the lines of `path`; raises Failed on a missing job."""
    nominal = dict(jobs)
    lag, dup = {}, 0
    for line in open(path):
        p = line.split()
        if len(p) != 3 or int(p[0]) not in nominal:
            continue
        i = int(p[0])
        if i in lag:
            dup += 1
            continue
        lag[i] = int(p[2]) // 1000000 - nominal[i]
    return lag, dup


def wait_lines(path, n, deadline_ms):
    while sc.now_ms() < deadline_ms:
        with open(path) as fp:
            if sum(1 for _ in fp) >= n:
                return
        time.sleep(0.5)


def summary(lags, extra):
    v = sorted(lags)
    return dict(extra, started=len(v), p50_ms=sc.pct(v, 50), p99_ms=sc.pct(v, 99), max_ms=v[-1], min_ms=v[0],
                lags_ms=v)


# ---- taskbus ------------------------------------------------------------------------

def run_taskbus(d, workload, args):
    work = tempfile.mkdtemp(prefix="tb-peers-taskbus-")
    out = starts_file(work)
    n = sum(c for _, c in WORKLOADS[workload])
    rate = create_rate(d)
    t0 = (sc.now_ms() // 1000 + 15 + int(2 * n / rate)) * 1000
    jobs = jobs_of(workload, t0)
    tag = "%s-%d" % (workload, t0 // 1000)
    bodies = [{"name": "peers-%s-%d" % (tag, i), "script": shell_cmd(i, nom, out), "security_group": "ops",
               "schedule": {"once": sc.rfc3339(nom)}} for i, nom in jobs]
    sc.log("taskbus: creating %d one-shot tasks through REST (%.0f creates/s just now), first due at %s" %
           (n, rate, sc.rfc3339(t0)))
    create_start = sc.now_ms()
    res = sc.post_many(d.token, bodies, threads=16)
    bad = [r for r in res if not r or r[0] != 201]
    created = sc.now_ms()
    if bad:
        raise Failed("taskbus: %d of %d creates failed (first: status %s, %s)" %
                     (len(bad), n, bad[0][0] if bad[0] else None, json.dumps(bad[0][2]) if bad[0] else None))
    if created > t0 - 1000:
        raise Failed("taskbus: creating %d tasks ended %d ms before their due instant (less than 1 s): "
                     "the lag would include it" % (n, t0 - created))
    wait_lines(out, n, jobs[-1][1] + args.timeout * 1000)
    lag, dup = read_starts(out, jobs)
    if len(lag) < n:
        raise Failed("taskbus: only %d of %d tasks started within %d s of the last due instant" %
                     (len(lag), n, args.timeout))
    shutil.rmtree(work, ignore_errors=True)
    return summary(lag.values(), {"jobs": n, "duplicates": dup, "lead_ms": t0 - created,
                                  "create_s": round((created - create_start) / 1000.0, 1)})


# ---- Quartz -------------------------------------------------------------------------

def quartz_tables():
    libs = os.path.join(QUARTZ_DIR, "libs")
    jar = [f for f in os.listdir(libs) if f.startswith("quartz-") and f.endswith(".jar")][0]
    with zipfile.ZipFile(os.path.join(libs, jar)) as z:
        return jar, z.read("org/quartz/impl/jdbcjobstore/tables_postgres.sql").decode()


def run_quartz(workload, args):
    if not QUARTZ_DIR or not os.path.isdir(os.path.join(QUARTZ_DIR, "libs")):
        raise SystemExit("TB_PEERS_QUARTZ does not name the built Quartz peer: run this through tools/bench/run peers")
    jar, ddl = quartz_tables()
    sc.psql("postgres", "DROP DATABASE IF EXISTS quartz WITH (FORCE)")
    sc.psql("postgres", "CREATE DATABASE quartz")
    r = subprocess.run(["psql", "postgresql://taskbus@127.0.0.1:%d/quartz" % sc.PG_PORT, "-qX", "-v",
                        "ON_ERROR_STOP=1"], input=ddl, text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if r.returncode:
        raise SystemExit("quartz: tables_postgres.sql of %s failed: %s" % (jar, r.stderr))
    work = tempfile.mkdtemp(prefix="tb-peers-quartz-")
    out = starts_file(work)
    n = sum(c for _, c in WORKLOADS[workload])
    t0 = (sc.now_ms() // 1000 + lead_s(n)) * 1000
    jobs = jobs_of(workload, t0)
    cmd = ["java", "-Xmx1g", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
           "-cp", "%s/libs/*:%s/taskbus-peer-quartz-1.jar" % (QUARTZ_DIR, QUARTZ_DIR), "io.taskbus.peers.QuartzPeer",
           "--url", "jdbc:postgresql://127.0.0.1:%d/quartz" % sc.PG_PORT, "--out", out, "--at", str(t0),
           "--threads", str(args.quartz_threads), "--timeout", str(args.timeout)]
    if len(WORKLOADS[workload]) == 1:
        cmd += ["--jobs", str(n)]
    else:
        cmd += ["--rate", str(WORKLOADS[workload][0][1]), "--seconds", str(len(WORKLOADS[workload]))]
    sc.log("quartz: %d one-shot jobs on JobStoreTX (clustered), %d threads, first due at %s" %
           (n, args.quartz_threads, sc.rfc3339(t0)))
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sys.stderr.write(r.stdout)
    lag, dup = read_starts(out, jobs)
    if r.returncode or len(lag) < n:
        raise Failed("quartz: exit status %d, %d of %d jobs started (see its output above)" % (r.returncode, len(lag), n))
    shutil.rmtree(work, ignore_errors=True)
    return summary(lag.values(), {"jobs": n, "duplicates": dup, "threads": args.quartz_threads,
                                  "batch_trigger_acquisition": args.quartz_threads, "quartz_jar": jar})


# ---- pg_cron ------------------------------------------------------------------------

class PgCron:
    """A PostgreSQL 15 cluster of its own (pg_cron must be preloaded) on PGCRON_PORT."""

    def __init__(self, max_jobs):
        self.max_jobs = max_jobs
        self.dir = os.path.join(os.environ["TASKBUS_STACK_DIR"], "pgcron")
        if os.path.exists(self.dir):
            self.ctl("stop", "-m", "fast", check=False)
            shutil.rmtree(self.dir)
        os.makedirs(self.dir)
        if os.getuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        if not os.path.exists("/usr/share/postgresql/15/extension/pg_cron.control"):
            raise SystemExit("pg_cron is not installed: apt-get install postgresql-15-cron")
        self.as_pg(["/usr/lib/postgresql/15/bin/initdb", "-D", self.dir + "/data", "-U", "taskbus", "--auth=trust",
                    "-E", "UTF8", "--locale=C.UTF-8"])
        conf = """
listen_addresses = '127.0.0.1'
port = %d
unix_socket_directories = '%s'
max_connections = %d
shared_buffers = 256MB
synchronous_commit = on
timezone = 'UTC'
shared_preload_libraries = 'pg_cron'
cron.database_name = 'peers'
cron.host = '127.0.0.1'
cron.max_running_jobs = %d
""" % (PGCRON_PORT, self.dir, max_jobs + 50, max_jobs)
        self.as_pg(["sh", "-c", "cat >> '%s/data/postgresql.conf'" % self.dir], input=conf)
        sc.log("pg_cron: own PostgreSQL 15 cluster on :%d, cron.max_running_jobs = %d" % (PGCRON_PORT, max_jobs))
        self.ctl("start", "-w", "-t", "60", "-l", self.dir + "/postgres.log")
        self.sql("postgres", "CREATE DATABASE peers")
        self.sql("peers", "CREATE EXTENSION pg_cron")
        self.version = self.sql("peers", "SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'").strip()

    def as_pg(self, cmd, input=None, check=True):
        if os.getuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        r = subprocess.run(cmd, input=input, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if check and r.returncode:
            raise SystemExit("pg_cron cluster: %s failed: %s" % (" ".join(cmd), r.stdout))
        return r

    def ctl(self, *a, check=True):
        return self.as_pg(["/usr/lib/postgresql/15/bin/pg_ctl", "-D", self.dir + "/data"] + list(a), check=check)

    def sql(self, db, q):
        return subprocess.run(["psql", "postgresql://taskbus@127.0.0.1:%d/%s" % (PGCRON_PORT, db), "-tAXqc", q],
                              stdout=subprocess.PIPE, check=True, text=True).stdout

    def stop(self):
        self.ctl("stop", "-m", "fast", check=False)

    def run(self, workload, args):
        if len(WORKLOADS[workload]) != 1:
            return {"na": "pg_cron's schedules have a resolution of one minute: 100 fires/s for 60 s would be 6,000 "
                          "jobs due at the same minute, a burst rather than a steady rate"}
        n = WORKLOADS[workload][0][1]
        self.sql("peers", "DROP TABLE IF EXISTS starts; CREATE TABLE starts (i int PRIMARY KEY, t timestamptz NOT NULL)")
        # The first whole minute at least lead_s(n) s away (UTC: pg_cron 1.4 schedules in GMT).
        minute = ((sc.now_ms() + lead_s(n) * 1000) // 60000 + 1) * 60000
        tm = time.gmtime(minute // 1000)
        spec = "%d %d * * *" % (tm.tm_min, tm.tm_hour)
        sc.log("pg_cron: %d jobs '%s' (due at %s), each an INSERT of clock_timestamp()" % (n, spec, sc.rfc3339(minute)))
        self.sql("peers", "SELECT count(cron.schedule('peers-' || i, '%s', "
                          "format('INSERT INTO starts VALUES (%%s, clock_timestamp())', i))) "
                          "FROM generate_series(0, %d) i" % (spec, n - 1))
        scheduled = sc.now_ms()
        if scheduled > minute - 1000:
            raise Failed("pg_cron: scheduling %d jobs ended less than 1 s before their minute" % n)
        deadline = minute + args.timeout * 1000
        got = 0
        while sc.now_ms() < deadline:
            got = int(self.sql("peers", "SELECT count(*) FROM starts"))
            if got >= n:
                break
            time.sleep(1)
        rows = self.sql("peers", "SELECT (extract(epoch FROM t) * 1000)::bigint FROM starts")
        failed = self.sql("peers", "SELECT count(*) FROM cron.job_run_details WHERE status = 'failed'").strip()
        self.sql("peers", "SELECT count(cron.unschedule(jobid)) FROM cron.job")
        self.sql("peers", "TRUNCATE cron.job_run_details")
        lags = [int(x) - minute for x in rows.split()]
        if len(lags) < n:
            raise Failed("pg_cron: only %d of %d jobs inserted within %d s of their minute (%s failed runs in "
                         "cron.job_run_details)" % (len(lags), n, args.timeout, failed))
        return summary(lags, {"jobs": n, "duplicates": 0, "max_running_jobs": self.max_jobs,
                              "pg_cron_version": self.version, "lead_ms": minute - scheduled})


# ---- the scenario -------------------------------------------------------------------

def median(vals):
    v = sorted(x for x in vals if x is not None)
    return v[len(v) // 2] if v else None


def plot(workload, per_system):
    """A cumulative plot of started jobs (share of N) over the lag, one line per system."""
    tmp = tempfile.mkdtemp(prefix="tb-peers-plot-")
    lines = []
    for system, r in per_system.items():
        if not r.get("lags_ms"):
            continue
        path = os.path.join(tmp, system)
        v, n = r["lags_ms"], len(r["lags_ms"])
        with open(path, "w") as fp:
            for k, x in enumerate(v):
                fp.write("%.3f %.5f\n" % (x / 1000.0, (k + 1) / n))
        lines.append("'%s' using 1:2 with lines lw 2 title '%s (p99 %.2f s)'" % (path, system, r["p99_ms"] / 1000.0))
    if not lines:
        return None
    img = os.path.join(sc.IMG, "peers-%s.svg" % workload)
    title = {"steady": "100 fires/s for 60 s"}.get(workload, "%s jobs due at one instant" % workload)
    sc.gnuplot("""set terminal svg size 800,450 dynamic background rgb 'white'
set output '%s'
set title 'Start lag, %s (the run with the median p99 of each system)'
set xlabel 'seconds after the nominal instant'
set ylabel 'share of jobs started'
set key right bottom
set grid
set yrange [0:1.02]
plot %s
""" % (img, title, ", ".join(lines)))
    shutil.rmtree(tmp, ignore_errors=True)
    return img


def scenario_peers(argv):
    ap = argparse.ArgumentParser(prog="tools/bench/run peers")
    ap.add_argument("--workload", default="750,5000,steady", help="comma list of 750, 5000, steady")
    ap.add_argument("--systems", default=",".join(SYSTEMS), help="comma list of taskbus, quartz, pgcron")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each workload (the medians are quoted)")
    ap.add_argument("--quartz-threads", type=int, default=50, help="Quartz thread pool (and trigger batch) size")
    ap.add_argument("--pgcron-max-jobs", type=int, default=200, help="pg_cron's cron.max_running_jobs")
    ap.add_argument("--timeout", type=int, default=180, help="seconds after the last due instant for all to start")
    args = ap.parse_args(argv)
    workloads = args.workload.split(",")
    systems = args.systems.split(",")
    for w in workloads:
        if w not in WORKLOADS:
            ap.error("--workload %s: choose among %s" % (w, ", ".join(WORKLOADS)))
    for s in systems:
        if s not in SYSTEMS:
            ap.error("--systems %s: choose among %s" % (s, ", ".join(SYSTEMS)))
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")

    # A stopped bench (timeout, ^C) still stops taskbusd and the pg_cron cluster.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("peers: stopped by SIGTERM"))
    load_start = loadavg()
    sc.log("load average at the start: %s" % " ".join(load_start))
    d = sc.Daemon("peers", "projector,commands,scheduler,executor,archiver,api") if "taskbus" in systems else None
    if d:
        create_rate(d)  # the first creates after a start are slow: not a measure of the rate
    cron = None
    results, failures = {}, []
    try:
        if "pgcron" in systems:
            cron = PgCron(args.pgcron_max_jobs)
        for w in workloads:
            runs = {s: [] for s in systems}
            for rep in range(args.repeat):
                for s in systems:
                    sc.log("%s, run %d of %d: %s (load %s)" % (w, rep + 1, args.repeat, s, " ".join(loadavg())))
                    load = loadavg()
                    try:
                        if s == "taskbus":
                            r = run_taskbus(d, w, args)
                        elif s == "quartz":
                            r = run_quartz(w, args)
                        else:
                            r = cron.run(w, args)
                    except Failed as e:
                        sc.log("FAILED: %s" % e)
                        failures.append("%s/%s: %s" % (w, s, e))
                        r = {"failed": str(e)}
                    r["loadavg"] = load
                    runs[s].append(r)
                    if "p99_ms" in r:
                        sc.log("%s %s: p50 %d ms, p99 %d ms, max %d ms" % (w, s, r["p50_ms"], r["p99_ms"], r["max_ms"]))
            results[w] = summarize(w, runs)
    finally:
        if d:
            d.stop()
        if cron:
            cron.stop()

    path = os.path.join(sc.RESULTS, "peers.json")
    old = {}
    if os.path.exists(path):
        with open(path) as fp:
            old = json.load(fp).get("results", {})
    for w, r in results.items():
        r["date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        r["loadavg_at_start"] = load_start
        r["commit"] = sc.git_commit()
        old[w] = r
    plots = [os.path.join(sc.IMG, "peers-%s.svg" % w) for w in old
             if os.path.exists(os.path.join(sc.IMG, "peers-%s.svg" % w))]
    sc.save("peers", {k: old[k] for k in WORKLOADS if k in old}, plots)
    print_table(results, load_start)
    if failures:
        for f in failures:
            print("FAILED: %s" % f)
        raise SystemExit("peers: %d system run(s) did not start all their jobs: their numbers are not quoted" %
                         len(failures))


def summarize(w, runs):
    """Per system: every run's numbers (without the raw lags) and the medians of the runs."""
    out = {"systems": {}}
    chosen = {}
    for s, rs in runs.items():
        if any("na" in r for r in rs):
            out["systems"][s] = {"na": rs[0]["na"]}
            continue
        ok = [r for r in rs if "p99_ms" in r]
        entry = {"runs": [{k: v for k, v in r.items() if k != "lags_ms"} for r in rs]}
        if len(ok) == len(rs):
            entry["median"] = {k: median(r[k] for r in ok) for k in ("p50_ms", "p99_ms", "max_ms")}
            chosen[s] = sorted(ok, key=lambda r: r["p99_ms"])[len(ok) // 2]
        else:
            entry["failed"] = "%d of %d runs did not start all jobs" % (len(rs) - len(ok), len(rs))
        out["systems"][s] = entry
    tb = out["systems"].get("taskbus", {}).get("median")
    if tb:
        for s, e in out["systems"].items():
            if s != "taskbus" and e.get("median"):
                e["ratio_to_taskbus"] = {k: round(e["median"][k] / max(1, tb[k]), 2) for k in ("p50_ms", "p99_ms", "max_ms")}
                # The same ratio within each run (the same minutes, so the same load), and its median.
                per = [round(a["p99_ms"] / max(1, b["p99_ms"]), 2)
                       for a, b in zip(e["runs"], out["systems"]["taskbus"]["runs"])]
                e["p99_ratio_per_run"] = per
                e["p99_ratio_per_run_median"] = median(per)
    img = plot(w, chosen)
    if img:
        out["plot"] = os.path.relpath(img, os.path.join(sc.ROOT, "docs"))
    return out


def print_table(results, load):
    print("peers (load average at the start %s): start lag, median of the runs" % " ".join(load))
    print("%-8s %-8s %5s %9s %9s %9s  %s" % ("workload", "system", "runs", "p50 ms", "p99 ms", "max ms",
                                           "p99 / taskbus p99"))
    for w, r in results.items():
        for s, e in r["systems"].items():
            if "na" in e:
                print("%-8s %-8s %5s %9s %9s %9s  %s" % (w, s, "-", "n/a", "n/a", "n/a", e["na"][:60]))
                continue
            if "median" not in e:
                print("%-8s %-8s %5d %9s %9s %9s  %s" % (w, s, len(e["runs"]), "FAILED", "", "", e["failed"]))
                continue
            m = e["median"]
            ratio = "%.1fx" % e["ratio_to_taskbus"]["p99_ms"] if "ratio_to_taskbus" in e else ""
            print("%-8s %-8s %5d %9d %9d %9d  %s" % (w, s, len(e["runs"]), m["p50_ms"], m["p99_ms"], m["max_ms"], ratio))
