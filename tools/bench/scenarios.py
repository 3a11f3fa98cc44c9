#!/usr/bin/env python3
"""The scenarios of tools/bench/run (which starts the private stack first and
exports its TASKBUS_* variables). Each writes docs/bench-results/SCENARIO.json
(results + machine, date, commit), prints a summary and draws its plots into
docs/img/ with gnuplot."""
import http.client
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import datetime

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)
ROOT = os.path.dirname(os.path.dirname(BENCH))
BIN = os.environ["TASKBUS_BIN"]
KAFKA = os.environ["TASKBUS_KAFKA"]
PG_PORT = int(os.environ["TASKBUS_PG_PORT"])
API_PORT = int(os.environ["TASKBUS_API_PORT"])
RESULTS = os.path.join(ROOT, "docs", "bench-results")
IMG = os.path.join(ROOT, "docs", "img")


def log(msg):
    sys.stderr.write("==> %s\n" % msg)
    sys.stderr.flush()


def now_ms():
    return int(time.time() * 1000)


def rfc3339(ms):
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def pct(vals, p):
    if not vals:
        return None
    s = sorted(vals)
    return s[min(len(s) - 1, int(p / 100.0 * (len(s) - 1) + 0.5))]


def machine():
    mem = 0
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) // 1024
    model = ""
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    load = open("/proc/loadavg").read().split()[:3]
    return {"nproc": os.cpu_count(), "memory_mib": mem, "cpu": model, "kernel": platform.release(),
            "host": platform.node(), "loadavg_at_start": load}


def git_commit():
    r = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, text=True)
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout.strip()
    return (r.stdout.strip() or "unknown") + ("+dirty" if dirty else "")


def save(scenario, results, plots):
    doc = {"scenario": scenario, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "commit": git_commit(), "machine": machine(), "results": results,
           "plots": [os.path.relpath(p, os.path.join(ROOT, "docs")) for p in plots]}
    path = os.path.join(RESULTS, scenario + ".json")
    with open(path, "w") as fp:
        json.dump(doc, fp, indent=1)
        fp.write("\n")
    log("results: %s" % os.path.relpath(path, ROOT))
    return doc


def gnuplot(script):
    r = subprocess.run(["gnuplot"], input=script, text=True, stderr=subprocess.PIPE)
    if r.returncode:
        log("gnuplot failed: %s" % r.stderr)


def run(cmd, env=None):
    log("$ " + " ".join(cmd))
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    sys.stderr.write(r.stdout)
    if r.returncode not in (0, 1):
        raise SystemExit("%s failed with status %d" % (cmd[0], r.returncode))
    return r.stdout


def psql(db, sql):
    return subprocess.run(["psql", "postgresql://taskbus@127.0.0.1:%d/%s" % (PG_PORT, db), "-tAXqc", sql],
                          stdout=subprocess.PIPE, check=True, text=True).stdout


# ---- a taskbusd on the stack ----------------------------------------------------

class Daemon:
    def __init__(self, name, roles, extra="", peer=None, api_port=None):
        """A taskbusd with \p roles on a fresh database and topic prefix; with \p peer, a
        second process of the same deployment (its database, topics and user) listening
        on \p api_port."""
        self.dir = tempfile.mkdtemp(prefix="tb-bench-%s-" % name)
        self.db = "bench_%s" % name
        self.api_port = api_port or API_PORT
        if not peer:
            psql("postgres", "DROP DATABASE IF EXISTS %s WITH (FORCE)" % self.db)
            psql("postgres", "CREATE DATABASE %s" % self.db)
        self.conf = os.path.join(self.dir, "taskbus.conf")
        with open(self.conf, "w") as fp:
            fp.write("""region = "local";
log_level = "%s";
topics = { prefix = "bench%s."; partitions = 6; replication = 1; };
postgres = { url = "postgresql://taskbus@127.0.0.1:%d/%s"; pool_size = 8; };
api = { listen = "127.0.0.1:%d"; rate = 5000.0; burst = 1000000; reply_timeout = "10s";
        max_connections_per_client = 1000; };
scheduler = { max_batch = 2000; };
executor = { max_concurrent = 1000; };
kafka = { bootstrap_servers = "%s"; };
%s
%s
""" % (os.environ.get("TB_BENCH_LOG_LEVEL", "warn"), name, PG_PORT, self.db, self.api_port, KAFKA, extra,
       os.environ.get("TB_BENCH_CONF", "")))
        if peer:
            self.token = peer.token
        else:
            self.cli("admin", "migrate")
            self.cli("admin", "topics", "ensure")
            out = self.cli("admin", "user", "create", "bench", "--groups", "ops")
            self.token = re.search(r"^token: (\S+)", out, re.M).group(1)
        self.log = os.path.join(self.dir, "taskbusd.log")
        self.roles = roles
        self.start()

    def start(self):
        """Start taskbusd with self.roles and wait until its API listens."""
        self.spawn(self.roles)
        self.wait_listen()

    def wait_listen(self):
        """Wait until the API of the taskbusd just spawned listens."""
        end = time.time() + 60
        while time.time() < end:
            try:
                socket.create_connection(("127.0.0.1", self.api_port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        else:
            raise SystemExit("taskbusd did not listen (log %s)" % self.log)

    def restart(self, roles):
        """Stop, then start taskbusd again on the same database and topics with these roles."""
        self.stop()
        self.spawn(roles)

    def spawn(self, roles):
        """Start taskbusd with these roles, without waiting for anything."""
        self.roles = roles
        env = dict(os.environ)
        for k in ("TASKBUS_PG", "TASKBUS_KAFKA", "TASKBUS_API_LISTEN"):
            env.pop(k, None)
        with open(self.log, "a") as out:
            self.proc = subprocess.Popen([os.path.join(BIN, "taskbusd"), "--config", self.conf, "--roles", roles],
                                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)

    def cli(self, *args):
        env = dict(os.environ)
        for k in ("TASKBUS_PG", "TASKBUS_KAFKA", "TASKBUS_API_LISTEN"):
            env.pop(k, None)
        r = subprocess.run([os.path.join(BIN, "taskbus")] + list(args) + ["--config", self.conf],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        if r.returncode:
            raise SystemExit("taskbus %s: %s%s" % (" ".join(args), r.stdout, r.stderr))
        return r.stdout

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def post_many(token, bodies, threads=16):
    """POST every body; returns [(status, latency_ms, reply, sent_ms)] in order."""
    out = [None] * len(bodies)
    idx = iter(range(len(bodies)))
    lock = threading.Lock()

    def worker():
        conn = None
        while True:
            with lock:
                i = next(idx, None)
            if i is None:
                break
            sent = time.time()
            st, reply = 0, None
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", API_PORT, timeout=30)
                conn.request("POST", "/v1/tasks", body=json.dumps(bodies[i]),
                             headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
                r = conn.getresponse()
                data = r.read()
                st = r.status
                reply = json.loads(data) if data else None
            except (OSError, http.client.HTTPException, ValueError):
                conn = None
            out[i] = (st, (time.time() - sent) * 1000, reply, int(sent * 1000))
    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


# ---- scenarios --------------------------------------------------------------------

def scenario_api(args):
    d = Daemon("api", "api,commands,projector")
    res = []
    try:
        # TB_BENCH_API_RATES="200:15,500:20,1000:20": RATE:SECONDS pairs (a saturation search)
        rates = [tuple(int(x) for x in rd.split(":"))
                 for rd in os.environ.get("TB_BENCH_API_RATES", "200:15,500:20").split(",")]
        for rate, dur in rates:
            out = run([sys.executable, os.path.join(BENCH, "api.py"), "--api", "http://127.0.0.1:%d" % API_PORT,
                       "--token", d.token, "--group", "ops", "--rate", str(rate), "--duration", str(dur),
                       "--warmup", "3", "--threads", "64"])
            j = json.loads(out[:out.rindex("}") + 1])
            res.append(j)
    finally:
        d.stop()
    img = os.path.join(IMG, "api-latency.png")
    data = "\n".join("%d %s %s %s %s" % (r["target_rate"], r["latency_ms_from_schedule"]["p50"],
                                         r["latency_ms_from_schedule"]["p90"], r["latency_ms_from_schedule"]["p99"],
                                         r["latency_ms_from_schedule"]["max"]) for r in res)
    gnuplot("""set terminal png size 800,450
set output '%s'
set title 'REST create latency (open loop, from scheduled start)'
set style data histograms
set style fill solid 0.8
set logscale y
set ylabel 'ms'
set xlabel 'target creates/s'
$d << EOD
%s
EOD
plot $d using 2:xtic(1) title 'p50', '' using 3 title 'p90', '' using 4 title 'p99', '' using 5 title 'max', 50 with lines lw 2 title 'aim p99 50 ms'
""" % (img, data))
    doc = save("api", {"runs": res}, [img])
    for r in res:
        l = r["latency_ms_from_schedule"]
        print("api: %d/s target, %.1f/s achieved: p50 %s ms, p99 %s ms, max %s ms, errors %s" %
              (r["target_rate"], r["achieved_rate"], l["p50"], l["p99"], l["max"], r["errors"] or 0))
    return doc


def scenario_scheduler(args):
    loads = []
    for n in (1000, 100000, 1000000):
        out = run([os.path.join(BIN, "sched_bench"), "--tasks", str(n)])
        m = re.search(r"load: (\d+) tasks in ([\d.]+) s \((\d+) tasks/s\); RSS (\d+) -> (\d+) MiB \(\+(\d+) bytes/task\)", out)
        loads.append({"tasks": n, "load_s": float(m.group(2)), "tasks_per_s": int(m.group(3)),
                      "rss_before_mib": int(m.group(4)), "rss_mib": int(m.group(5)),
                      "bytes_per_task": int(m.group(6))})
    nf = re.findall(r"next-fire: (.*): ([\d.]+) M/s \((\d+) ns each\)", out)
    samples = os.path.join(tempfile.mkdtemp(prefix="tb-bench-sched-"), "lags.txt")
    out = run([os.path.join(BIN, "sched_bench"), "--tasks", "0", "--kafka", KAFKA, "--rate", "10000",
               "--seconds", "30", "--burst", "100000", "--samples", samples])
    m = re.search(r"sustained: (\d+) tasks every 10 s, (\d+) fires in ([\d.]+) s = (\d+) fires/s; fire lag p50 (-?\d+) ms, "
                  r"p99 (-?\d+) ms, p99.9 (-?\d+) ms, max (-?\d+) ms", out)
    b = re.search(r"burst: (\d+) runs due at one instant, all committed ([\d.]+) s after it", out)
    sustained = {"tasks": int(m.group(1)), "fires": int(m.group(2)), "seconds": float(m.group(3)),
                 "fires_per_s": int(m.group(4)), "lag_p50_ms": int(m.group(5)), "lag_p99_ms": int(m.group(6)),
                 "lag_p999_ms": int(m.group(7)), "lag_max_ms": int(m.group(8))}
    burst = {"runs": int(b.group(1)), "committed_s": float(b.group(2))}
    img = os.path.join(IMG, "scheduler-fire-lag.png")
    gnuplot("""set terminal png size 800,450
set output '%s'
set title 'Scheduler fire lag at %d fires/s (commit - due), %d fires'
set xlabel 'fire lag (ms)'
set ylabel 'fires'
set style fill solid 0.7
binwidth = 2
bin(x) = binwidth * floor(x / binwidth)
set arrow from 100, graph 0 to 100, graph 1 nohead lw 2 lc rgb 'red'
set label 'aim p99 100 ms' at 101, graph 0.9
plot '%s' using (bin($1)):(1.0) smooth frequency with boxes title 'fires'
""" % (img, sustained["fires_per_s"], sustained["fires"], samples))
    doc = save("scheduler", {"load": loads, "next_fire": [{"schedule": a, "ns": int(c)} for a, _, c in nf],
                             "sustained": sustained, "burst": burst}, [img])
    for l in loads:
        print("scheduler: %d tasks: RSS %d MiB, loaded in %.2f s" % (l["tasks"], l["rss_mib"], l["load_s"]))
    print("scheduler: %d fires/s sustained: fire lag p50 %d ms, p99 %d ms, p99.9 %d ms; burst of %d committed in %.2f s" %
          (sustained["fires_per_s"], sustained["lag_p50_ms"], sustained["lag_p99_ms"], sustained["lag_p999_ms"],
           burst["runs"], burst["committed_s"]))
    return doc


def scenario_burst(args):
    out = run([os.path.join(BIN, "sched_bench"), "--tasks", "0", "--kafka", KAFKA, "--rate", "100",
               "--seconds", "2", "--burst", "100000"])
    b = re.search(r"burst: (\d+) runs due at one instant, all committed ([\d.]+) s after it \((\d+) fires/s\)", out)
    sched = {"runs": int(b.group(1)), "committed_s": float(b.group(2)), "fires_per_s": int(b.group(3))}
    samples = os.path.join(tempfile.mkdtemp(prefix="tb-bench-burst-"), "starts.txt")
    env = dict(os.environ)
    env["TASKBUS_PG"] = "postgresql://taskbus@127.0.0.1:%d/taskbus" % PG_PORT
    out = run([os.path.join(BIN, "exec_burst"), "--runs", "750", "--samples", samples], env=env)
    lags = [int(l) for l in open(samples) if l.strip()]
    m = re.search(r"results: (\d+) final \((\d+) SUCCEEDED\) of (\d+), all done (-?\d+) ms", out)
    ex = {"runs": 750, "started": len(lags), "p50_ms": pct(lags, 50), "p99_ms": pct(lags, 99),
          "max_ms": max(lags) if lags else None, "within_5s": sum(1 for x in lags if x <= 5000),
          "succeeded": int(m.group(2)) if m else None, "all_done_ms": int(m.group(4)) if m else None}
    img = os.path.join(IMG, "burst-timeline.png")
    gnuplot("""set terminal png size 800,450
set output '%s'
set title '750 shell tasks due at one instant on one executor: processes started'
set xlabel 'ms after the nominal time'
set ylabel 'processes started'
set key left top
stats '%s' using 1 nooutput
set xrange [0:(STATS_max > 5200 ? STATS_max * 1.05 : 5200)]
set arrow from 5000, graph 0 to 5000, graph 1 nohead lw 2 lc rgb 'red'
set label 'aim: all within 5 s' at 5050, graph 0.5
plot '%s' using 1:(1.0) smooth cumulative with lines lw 2 title 'started'
""" % (img, samples, samples))
    doc = save("burst", {"scheduler_burst": sched, "executor_burst": ex}, [img])
    print("burst: 100,000 fires due at one instant committed in %.2f s; 750 shell tasks: p50 %s ms, p99 %s ms, "
          "max %s ms, %d/750 started within 5 s" % (sched["committed_s"], ex["p50_ms"], ex["p99_ms"], ex["max_ms"],
                                                    ex["within_5s"]))
    return doc


def scenario_e2e(args):
    """The day compressed: 250 tasks spread over the 'day' and a Monday 00:00 peak of 750."""
    d = Daemon("e2e", "projector,commands,scheduler,executor,archiver,api")
    work = tempfile.mkdtemp(prefix="tb-bench-e2e-")
    os.chmod(work, 0o777)
    starts = os.path.join(work, "starts")
    open(starts, "a").close()
    os.chmod(starts, 0o666)
    script = 'echo "$TASKBUS_RUN_ID $(date +%%s%%N)" >> %s' % starts
    try:
        t0 = (now_ms() // 1000 + 20) * 1000
        peak = t0 + 60000        # "Monday 00:00"
        spread = []
        for i in range(250):     # the rest of the day, compressed into 120 s around the peak
            spread.append(t0 + (i * 120000) // 250)
        bodies = [{"name": "day-%d" % i, "script": script, "security_group": "ops",
                   "schedule": {"once": rfc3339((t // 1000) * 1000)}} for i, t in enumerate(spread)]
        bodies += [{"name": "monday-%d" % i, "script": script, "security_group": "ops",
                    "schedule": {"once": rfc3339(peak)}} for i in range(750)]
        log("creating %d tasks through the REST API (peak of 750 at %s)" % (len(bodies), rfc3339(peak)))
        res = post_many(d.token, bodies)
        created = {r[2]["id"]: bodies[i] for i, r in enumerate(res) if r and r[0] == 201}
        peak_due = sum(1 for b in created.values() if b["schedule"]["once"] == rfc3339(peak))
        create_lat = [r[1] for r in res if r and r[0] == 201]
        errors = len(res) - len(created)
        end = t0 + 120000 + 60000
        while now_ms() < end:
            n = sum(1 for _ in open(starts))
            if n >= len(created) and now_ms() > t0 + 120000:
                break
            time.sleep(2)
        rows = psql(d.db, "SELECT run_id || ' ' || task_id || ' ' || (extract(epoch from nominal_time)*1000)::bigint FROM runs")
        nom = {}
        for l in rows.split("\n"):
            p = l.split()
            if len(p) == 3:
                nom[p[0]] = (p[1], int(p[2]))
        lat_all, lat_peak = [], []
        for l in open(starts):
            p = l.split()
            if len(p) == 2 and p[0] in nom:
                lag = int(p[1]) // 1000000 - nom[p[0]][1]
                lat_all.append(lag)
                if nom[p[0]][1] == peak:
                    lat_peak.append(lag)
    finally:
        d.stop()
    r = {"tasks_created": len(created), "create_errors": errors, "runs_started": len(lat_all),
         "create_latency_ms": {"p50": round(pct(create_lat, 50), 1), "p99": round(pct(create_lat, 99), 1),
                               "max": round(max(create_lat), 1)},
         "start_latency_ms": {"p50": pct(lat_all, 50), "p99": pct(lat_all, 99), "max": max(lat_all) if lat_all else None},
         "peak": {"due": peak_due, "started": len(lat_peak), "p50_ms": pct(lat_peak, 50), "p99_ms": pct(lat_peak, 99),
                  "max_ms": max(lat_peak) if lat_peak else None}}
    doc = save("e2e", r, [])
    print("e2e: %d runs started of %d tasks; nominal-to-start p50 %s ms, p99 %s ms, max %s ms; Monday peak (750): "
          "p99 %s ms, max %s ms; create latency p50 %s ms, p99 %s ms, max %s ms" %
          (len(lat_all), len(created), r["start_latency_ms"]["p50"], r["start_latency_ms"]["p99"],
           r["start_latency_ms"]["max"], r["peak"]["p99_ms"], r["peak"]["max_ms"], r["create_latency_ms"]["p50"],
           r["create_latency_ms"]["p99"], r["create_latency_ms"]["max"]))
    return doc


def create_tasks(d, n, prefix):
    """Create n hourly tasks (one event each) through the REST API; returns how many were."""
    bodies = [{"name": "%s-%d" % (prefix, i), "script": "true", "security_group": "ops",
               "schedule": {"every": "1h"}, "labels": {"k": str(i % 17)}} for i in range(n)]
    log("creating %d tasks (one event each) through the REST API" % n)
    res = post_many(d.token, bodies, threads=32)
    return sum(1 for r in res if r and r[0] == 201)


def scenario_replay(args):
    """`taskbus replay --into` a fresh empty database, 3 times over the same task-events:
    events/s by the replay's own clock (from its first fetch to its last commit) and of
    the whole command (Kafka metadata, consumer start and migrations included); the
    median of the 3 runs is quoted."""
    n = int(args[0]) if args else 20000
    repeat = int(os.environ.get("TB_BENCH_REPLAY_REPEAT", "3"))
    d = Daemon("replay", "api,commands,projector")
    try:
        ok = create_tasks(d, n, "replay")
    finally:
        d.stop()
    url = "postgresql://taskbus@127.0.0.1:%d/bench_replay_into" % PG_PORT
    runs = []
    for i in range(repeat):
        psql("postgres", "DROP DATABASE IF EXISTS bench_replay_into WITH (FORCE)")
        psql("postgres", "CREATE DATABASE bench_replay_into")
        load = open("/proc/loadavg").read().split()[:3]
        t = time.time()
        out = run([os.path.join(BIN, "taskbus"), "replay", "--into", url, "--from-kafka", KAFKA, "--config", d.conf])
        el = time.time() - t
        events = int(psql("bench_replay_into", "SELECT count(*) FROM task_history").strip())
        rows = int(psql("bench_replay_into", "SELECT count(*) FROM tasks").strip())
        m = re.search(r"in ([0-9.]+) s \(([0-9]+) events/s\)", out)
        runs.append({"events": events, "tasks": rows, "command_seconds": round(el, 2),
                     "command_events_per_s": round(events / el) if el else None,
                     "replay_seconds": float(m.group(1)) if m else None,
                     "events_per_s": int(m.group(2)) if m else None, "loadavg_at_start": load,
                     "output": out.strip()[-300:]})
        log("replay %d: %d events, %s events/s (whole command %.2f s)" % (i + 1, events, runs[-1]["events_per_s"], el))
    med = sorted(runs, key=lambda r: r["events_per_s"] or 0)[len(runs) // 2]
    r = {"events": med["events"], "tasks": med["tasks"], "created_ok": ok, "seconds": med["replay_seconds"],
         "events_per_s": med["events_per_s"], "command_events_per_s": med["command_events_per_s"],
         "repeat": repeat, "runs": runs}
    doc = save("replay", r, [])
    print("replay: %d events into an empty database, median of %d: %s events/s (whole command %s events/s)" % (
        med["events"], repeat, med["events_per_s"], med["command_events_per_s"]))
    return doc


# ---- reads: pages of 50 on 1M tasks and 10M runs ---------------------------------------

READS_GROUPS = 10
READS_HOT = 20          # tasks with a long run history (2 per group)


def psql_pipe(db, out_sql, in_sql):
    """COPY (out_sql) TO STDOUT piped into COPY in_sql FROM STDIN: rows made by the
    database, loaded with COPY (the bench fills tables; the write path is not measured)."""
    url = "postgresql://taskbus@127.0.0.1:%d/%s" % (PG_PORT, db)
    src = subprocess.Popen(["psql", url, "-XqAtc", "COPY (%s) TO STDOUT" % out_sql], stdout=subprocess.PIPE)
    dst = subprocess.run(["psql", url, "-Xqc", "COPY %s FROM STDIN" % in_sql], stdin=src.stdout,
                         stdout=subprocess.PIPE, check=True, text=True)
    src.stdout.close()
    if src.wait():
        raise SystemExit("COPY out of %s failed" % db)
    return dst.stdout


def reads_fill(db, spec, ntasks, nruns):
    """Fill tasks and runs (COPY, indexes dropped and built again after the load);
    returns how long each step took, the migrations' index builds included."""
    t = {}
    psql(db, "TRUNCATE tasks, task_history, runs")
    groups = READS_GROUPS
    # task i: group g(i % 10); every 20th (by i / 10) paused; labels env (3 values) and
    # team (50 values); created one second apart, the newest last
    tasks_sql = (
        "SELECT 't' || lpad(i::text, 8, '0'), 1, 'task-' || i, 'g' || (i %% %d), 'bench', "
        "jsonb_set(jsonb_set(jsonb_set(jsonb_set(%s::jsonb, '{name}', to_jsonb('task-' || i)), "
        "'{security_group}', to_jsonb('g' || (i %% %d))), '{paused}', to_jsonb((i / 10) %% 20 = 7)), "
        "'{labels}', jsonb_build_object('env', (ARRAY['prod', 'dev', 'test'])[(i / 10) %% 3 + 1], "
        "'team', 't' || ((i / 10) %% 50))), (i / 10) %% 20 = 7, "
        "jsonb_build_object('env', (ARRAY['prod', 'dev', 'test'])[(i / 10) %% 3 + 1], 'team', 't' || ((i / 10) %% 50)), "
        "'', 0, now() - (%d - i) * interval '1 second', 'bench', now() - (%d - i) * interval '1 second', "
        "i %% 6, i / 6 FROM generate_series(0, %d) AS i"
        % (groups, "'" + spec.replace("'", "''") + "'", groups, ntasks, ntasks, ntasks - 1))
    hot_runs = nruns // 2
    other = max(1, ntasks - READS_HOT)
    # runs: half on the READS_HOT hot tasks, the rest spread over every other task; one an
    # hour back from now per task; 1% failed, 0.1% timed_out, the rest succeeded
    runs_sql = (
        "SELECT md5(n::text), 't' || lpad(x.task::text, 8, '0'), 'g' || (x.task %% %d), "
        "now() - x.k * interval '1 hour', 1, 'schedule', "
        "CASE WHEN x.k %% 100 = 37 THEN 'failed' WHEN x.k %% 1000 = 501 THEN 'timed_out' ELSE 'succeeded' END, "
        "now() - x.k * interval '1 hour', now() - x.k * interval '1 hour' + interval '1 second', "
        "now() - x.k * interval '1 hour' + interval '2 seconds', "
        "CASE WHEN x.k %% 100 = 37 THEN 1 ELSE 0 END, 'shell', 'bench', 12, now() "
        "FROM generate_series(0, %d) AS n, LATERAL (SELECT CASE WHEN n < %d THEN n %% %d ELSE %d + (n - %d) %% %d END AS task, "
        "CASE WHEN n < %d THEN n / %d ELSE (n - %d) / %d END AS k) AS x"
        % (groups, nruns - 1, hot_runs, READS_HOT, READS_HOT, hot_runs, other, hot_runs, READS_HOT, hot_runs, other))
    # the indexes, dropped for the load and built again after it (sorting beats
    # inserting 10M keys one by one); the primary keys too
    idx = {}
    for tbl in ("tasks", "runs"):
        idx[tbl] = [l for l in psql(db, "SELECT indexname || '|' || indexdef FROM pg_indexes "
                                         "WHERE tablename = '%s' ORDER BY indexname" % tbl).splitlines() if l]
        psql(db, "ALTER TABLE %s DROP CONSTRAINT %s_pkey" % (tbl, tbl))
        for l in idx[tbl]:
            name = l.split("|", 1)[0]
            if not name.endswith("_pkey"):
                psql(db, "DROP INDEX %s" % name)
    t0 = time.time()
    log("COPY %d tasks" % ntasks)
    psql_pipe(db, tasks_sql, "tasks (id, version, name, security_group, user_id, spec, paused, labels, "
              "home_region, epoch, created_at, created_by, updated_at, event_partition, event_offset)")
    t["copy_tasks_s"] = round(time.time() - t0, 1)
    t0 = time.time()
    log("COPY %d runs" % nruns)
    psql_pipe(db, runs_sql, "runs (run_id, task_id, security_group, nominal_time, attempt, trigger, status, "
              "scheduled_at, started_at, finished_at, exit_code, executor, host, output_bytes, updated_at)")
    t["copy_runs_s"] = round(time.time() - t0, 1)
    t["index_build_s"] = {}
    for tbl in ("tasks", "runs"):
        for l in idx[tbl]:
            name, definition = l.split("|", 1)
            t0 = time.time()
            log("building %s" % name)
            psql(db, "SET maintenance_work_mem = '1GB'; " + definition)
            if name.endswith("_pkey"):
                psql(db, "ALTER TABLE %s ADD PRIMARY KEY USING INDEX %s" % (tbl, name))
            t["index_build_s"][name] = round(time.time() - t0, 1)
    t0 = time.time()
    log("VACUUM ANALYZE")
    psql(db, "VACUUM ANALYZE tasks")
    psql(db, "VACUUM ANALYZE runs")
    t["vacuum_analyze_s"] = round(time.time() - t0, 1)
    t["sizes"] = dict(l.split("|") for l in psql(
        db, "SELECT relname || '|' || pg_size_pretty(pg_relation_size(oid)) FROM pg_class "
            "WHERE relname IN ('tasks', 'runs') OR relname IN (SELECT indexname FROM pg_indexes "
            "WHERE tablename IN ('tasks', 'runs')) ORDER BY relname").splitlines() if l)
    return t


def cursor_token(lst, key, ident):
    """A page cursor as the API writes one (core/roles/api/cursor.h): the bench starts deep
    pages from a row it picked in the database instead of walking 10,000 pages to it."""
    import base64
    raw = ("1|%s|%s|%s" % (lst, key, ident)).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def reads_get(conn, token, path):
    t = time.time()
    conn.request("GET", path, headers={"Authorization": "Bearer " + token})
    r = conn.getresponse()
    body = r.read()
    ms = (time.time() - t) * 1000
    if r.status != 200:
        raise SystemExit("GET %s: %d %s" % (path, r.status, body[:300]))
    return ms, json.loads(body)


def reads_cases(db, ntasks, nruns):
    """(name, path, list key, start cursor or None) of every measured page kind."""
    def deep_task(where, depth):
        row = psql(db, "SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') || '|' || id "
                       "FROM tasks %s ORDER BY created_at DESC, id DESC OFFSET %d LIMIT 1" % (where, depth)).strip()
        k, i = row.split("|")
        return cursor_token("t", k, i)

    def deep_run(task, depth):
        row = psql(db, "SELECT (extract(epoch FROM nominal_time) * 1000)::bigint || '|' || run_id FROM runs "
                       "WHERE task_id = '%s' ORDER BY nominal_time DESC, run_id DESC OFFSET %d LIMIT 1" % (task, depth)).strip()
        k, i = row.split("|")
        return cursor_token("r", k, i)

    hot, cold = "t00000003", "t%08d" % (ntasks // 2 + 1)
    per_hot = nruns // 2 // READS_HOT
    now = now_ms()
    week = "since=%s&until=%s" % (rfc3339(now - 40 * 86400000), rfc3339(now - 33 * 86400000))
    n = lambda v: format(v, ",")
    return [
        ("tasks, all 10 groups, first page", "/v1/tasks?limit=50", "tasks", None),
        ("tasks, all 10 groups, %s deep" % n(ntasks // 2), "/v1/tasks?limit=50", "tasks", deep_task("", ntasks // 2)),
        ("tasks, one group, first page", "/v1/tasks?limit=50&security_group=g3", "tasks", None),
        ("tasks, one group, %s deep" % n(ntasks // 20), "/v1/tasks?limit=50&security_group=g3", "tasks",
         deep_task("WHERE security_group = 'g3'", ntasks // 20)),
        ("tasks, paused=true (5%)", "/v1/tasks?limit=50&paused=true", "tasks", None),
        ("tasks, label env=prod (1/3)", "/v1/tasks?limit=50&label=env%3Dprod", "tasks", None),
        ("tasks, label team=t7 (2%)", "/v1/tasks?limit=50&label=team%3Dt7", "tasks", None),
        ("tasks, name_prefix=task-12 (1.1%)", "/v1/tasks?limit=50&name_prefix=task-12", "tasks", None),
        ("tasks, paused=true, %s deep" % n(ntasks // 5), "/v1/tasks?limit=50&paused=true", "tasks",
         deep_task("", ntasks // 5)),
        ("runs of a task with %s runs, first page" % n(per_hot), "/v1/tasks/%s/runs?limit=50" % hot, "runs", None),
        ("runs of a task with %s runs, %s deep" % (n(per_hot), n(per_hot * 4 // 5)), "/v1/tasks/%s/runs?limit=50" % hot,
         "runs", deep_run(hot, per_hot * 4 // 5)),
        ("runs, status=failed (1%)", "/v1/tasks/%s/runs?limit=50&status=failed" % hot, "runs", None),
        ("runs, status=failed,timed_out, %s deep" % n(per_hot * 2 // 5),
         "/v1/tasks/%s/runs?limit=50&status=failed,timed_out" % hot, "runs", deep_run(hot, per_hot * 2 // 5)),
        ("runs, since/until one week", "/v1/tasks/%s/runs?limit=50&%s" % (hot, week), "runs", None),
        ("runs of a task with %d runs" % (nruns // 2 // max(1, ntasks - READS_HOT)),
         "/v1/tasks/%s/runs?limit=50" % cold, "runs", None),
    ]


def reads_plans(db, d, cases, token):
    """The plan of every case's statement as PostgreSQL ran it (auto_explain with ANALYZE
    and BUFFERS, for the api's own connections), from the server's log."""
    datadir = psql(db, "SHOW data_directory").strip()
    pglog = os.path.join(os.path.dirname(datadir), "postgres.log")
    psql(db, "ALTER DATABASE %s SET session_preload_libraries = 'auto_explain'" % db)
    for k, v in (("log_min_duration", "0"), ("log_analyze", "on"), ("log_buffers", "on"),
                 ("log_timing", "on"), ("log_nested_statements", "off")):
        psql(db, "ALTER DATABASE %s SET auto_explain.%s = '%s'" % (db, k, v))
    d.restart("api")
    d.wait_listen()
    out = []
    conn = http.client.HTTPConnection("127.0.0.1", API_PORT, timeout=60)
    for name, path, key, cur in cases:
        for _ in range(3):  # warm, then the plan kept is the third's
            start = os.path.getsize(pglog)
            reads_get(conn, token, path + ("&cursor=" + cur if cur else ""))
            time.sleep(0.3)
            with open(pglog, errors="replace") as fp:
                fp.seek(start)
                chunk = fp.read()
        plans = [e for e in re.split(r"(?m)^.*LOG:  duration: ", chunk)
                 if "Query Text:" in e and ("FROM runs" in e or "FROM tasks" in e) and "LIMIT" in e]
        out.append("==== %s\n     GET %s%s\n\n%s" % (name, path, " (from a cursor)" if cur else "",
                                                   "\n".join("duration: " + p.strip() for p in plans[-1:])))
    conn.close()
    psql(db, "ALTER DATABASE %s RESET ALL" % db)
    d.restart("api")
    d.wait_listen()
    return out


def scenario_reads(args):
    """GET /v1/tasks and GET /v1/tasks/{id}/runs, pages of 50, on 1M tasks in 10 groups
    and 10M runs: p50/p99 per kind of page, with the plans PostgreSQL ran."""
    ntasks = int(os.environ.get("TB_BENCH_READS_TASKS", "1000000"))
    nruns = int(os.environ.get("TB_BENCH_READS_RUNS", "10000000"))
    reps = int(os.environ.get("TB_BENCH_READS_REQUESTS", "200"))
    d = Daemon("reads", "api,commands,projector")
    try:
        # one real task, projected by taskbus itself: the template of the bench's rows
        res = post_many(d.token, [{"name": "template", "script": "echo hello", "security_group": "ops",
                                   "schedule": {"every": "1h"}, "labels": {"env": "prod"}}], threads=1)
        if not res[0] or res[0][0] != 201:
            raise SystemExit("creating the template task failed: %r" % (res[0],))
        spec = psql(d.db, "SELECT spec::text FROM tasks LIMIT 1").strip()
        d.restart("api")
        d.wait_listen()
        out = d.cli("admin", "user", "create", "reader", "--groups",
                    ",".join("g%d" % i for i in range(READS_GROUPS)))
        token = re.search(r"^token: (\S+)", out, re.M).group(1)
        fill = reads_fill(d.db, spec, ntasks, nruns)
        log("filled: %s" % json.dumps(fill))
        cases = reads_cases(d.db, ntasks, nruns)
        plans = reads_plans(d.db, d, cases, token)
        results = []
        conn = http.client.HTTPConnection("127.0.0.1", API_PORT, timeout=60)
        for name, path, key, cur in cases:
            lat, counts = [], []
            c = cur
            for i in range(reps):
                ms, page = reads_get(conn, token, path + ("&cursor=" + c if c else ""))
                lat.append(ms)
                counts.append(len(page[key]))
                # walk on from the cursor (deep cases) or ask for the same first page again
                c = page.get("next_cursor") if cur and page.get("next_cursor") else cur
            r = {"case": name, "path": path, "from_cursor": bool(cur), "requests": reps,
                 "items_per_page_min": min(counts), "p50_ms": round(pct(lat, 50), 2),
                 "p99_ms": round(pct(lat, 99), 2), "max_ms": round(max(lat), 2)}
            log("%-50s p50 %6.2f ms  p99 %6.2f ms  max %6.2f ms  (%d items per page at least)" % (
                name, r["p50_ms"], r["p99_ms"], r["max_ms"], r["items_per_page_min"]))
            results.append(r)
        conn.close()
    finally:
        d.stop()
    with open(os.path.join(RESULTS, "reads-plans.txt"), "w") as fp:
        fp.write("EXPLAIN (ANALYZE, BUFFERS) of each page's statement as the api role ran it "
                 "(auto_explain),\n%d tasks in %d groups, %d runs; tools/bench/run reads, %s.\n\n"
                 % (ntasks, READS_GROUPS, nruns, time.strftime("%Y-%m-%d", time.gmtime())))
        fp.write("\n\n".join(plans) + "\n")
    doc = save("reads", {"tasks": ntasks, "groups": READS_GROUPS, "runs": nruns, "fill": fill,
                         "pages": results, "worst_p99_ms": max(r["p99_ms"] for r in results)}, [])
    print("reads: worst p99 %.2f ms over %d kinds of page" % (doc["results"]["worst_p99_ms"], len(results)))
    return doc


def scenario_abuse(args):
    """A legitimate client creating at 50/s, quiet and then while hostile clients run."""
    import abuse
    d = Daemon("abuse", "api,commands,projector,scheduler,executor,archiver")
    api = "http://127.0.0.1:%d" % API_PORT

    def legit(phase):
        out = run([sys.executable, os.path.join(BENCH, "api.py"), "--api", api, "--token", d.token,
                   "--group", "ops", "--rate", "50", "--duration", "20", "--warmup", "3",
                   "--threads", "16", "--source", "127.0.0.2", "--p99-ms", "1e9"])
        j = json.loads(out[:out.rindex("}") + 1])
        j["phase"] = phase
        return j

    def series():
        c = http.client.HTTPConnection("127.0.0.1", API_PORT, timeout=10)
        c.request("GET", "/metrics")
        body = c.getresponse().read().decode()
        return sum(1 for l in body.split("\n") if l and not l.startswith("#"))

    def api_json(method, path, body=None, token=None):
        c = http.client.HTTPConnection("127.0.0.1", API_PORT, timeout=30)
        c.request(method, path, body=json.dumps(body) if body is not None else None,
                  headers={"Authorization": "Bearer " + (token or d.token), "Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read()
        return r.status, (json.loads(data) if data else None)

    loads, res = [], {}
    try:
        followers = []
        for i in range(10):
            out = d.cli("admin", "user", "create", "follower%d" % i, "--groups", "ops")
            followers.append(re.search(r"^token: (\S+)", out, re.M).group(1))
        st, t = api_json("POST", "/v1/tasks", {
            "name": "chatty", "security_group": "ops", "schedule": {"every": "24h"},
            "script": 'i=0; while [ $i -lt 6000 ]; do echo "line $i"; i=$((i+1)); sleep 0.1; done'})
        if st != 201:
            raise SystemExit("cannot create the followed task: %s %s" % (st, t))
        api_json("POST", "/v1/tasks/%s/run" % t["id"], {})
        run_id = None
        for _ in range(300):
            rows = psql(d.db, "SELECT run_id FROM runs WHERE task_id = '%s' AND status = 'running'" % t["id"]).split()
            if rows:
                run_id = rows[0]
                break
            time.sleep(0.2)
        if not run_id:
            raise SystemExit("the followed task never started running")
        pid = d.proc.pid
        res["before"] = dict(abuse.proc_usage(pid), metric_series=series())
        res["quiet"] = legit("quiet")
        res["after_quiet"] = dict(abuse.proc_usage(pid), metric_series=series())
        log("hostile clients: 1,000 slowloris connections, 1,000 bogus-token requests/s, "
            "50 log follows, unknown methods")
        loads = [abuse.slowloris(API_PORT, 1000, 100), abuse.bogus_tokens(API_PORT, 1000.0, 8),
                 abuse.log_follows(API_PORT, run_id, followers, 5), abuse.unknown_methods(API_PORT, 100.0)]
        time.sleep(5)
        res["during_abuse"] = abuse.proc_usage(pid)
        res["abuse"] = legit("abuse")
        res["during_abuse_end"] = abuse.proc_usage(pid)
        res["hostile"] = [ld.stop() for ld in loads]
        loads = []
        time.sleep(15)  # slow connections reaped, follows ended
        res["after"] = dict(abuse.proc_usage(pid), metric_series=series())
    finally:
        for ld in loads:
            ld.stop()
        d.stop()
    q, a = res["quiet"]["latency_ms_from_schedule"], res["abuse"]["latency_ms_from_schedule"]
    res["p99_ratio"] = round(a["p99"] / q["p99"], 2) if q["p99"] and a["p99"] else None
    doc = save("abuse", res, [])
    print("abuse: creates at 50/s: quiet p50 %s ms p99 %s ms; under abuse p50 %s ms p99 %s ms (ratio %s, aim <= 2); "
          "errors quiet %s, abuse %s; RSS %d -> %d KiB, fds %d -> %d, metric series %d -> %d" %
          (q["p50"], q["p99"], a["p50"], a["p99"], res["p99_ratio"], res["quiet"]["errors"] or 0,
           res["abuse"]["errors"] or 0, res["before"]["rss_kib"], res["after"]["rss_kib"],
           res["before"]["fds"], res["after"]["fds"], res["before"]["metric_series"],
           res["after"]["metric_series"]))
    for h in res["hostile"]:
        print("  hostile %s" % json.dumps(h))
    return doc


def scenario_restart(args):
    """Fires every second from 50 tasks through a clean restart and a SIGKILL restart of
    one taskbusd, then a rolling restart of two."""
    d = Daemon("restart", "api,commands,projector,scheduler,executor,archiver")
    res = {}
    try:
        bodies = [{"name": "tick-%d" % i, "script": "true", "security_group": "ops",
                   "schedule": {"every": "1s"}, "misfire": "run_all"} for i in range(50)]
        created = [r for r in post_many(d.token, bodies) if r and r[0] == 201]
        log("%d tasks firing every second; warming up until fires are on time (20-120 s)" % len(created))
        time.sleep(20)
        end = time.time() + 100
        while time.time() < end:
            # every fire of the last 5 s (due 5-10 s ago) started within 1 s of its time
            late = psql(d.db, "SELECT count(*) FILTER (WHERE started_at - nominal_time > interval '1 s'), "
                              "count(started_at) FROM runs WHERE nominal_time BETWEEN now() - "
                              "interval '10 s' AND now() - interval '5 s'").strip().split("|")
            if int(late[1]) >= len(created) * 4 and int(late[0]) == 0:
                break
            time.sleep(2)
        for kind, sig in (("clean", signal.SIGTERM), ("sigkill", signal.SIGKILL)):
            t_stop = now_ms()
            d.proc.send_signal(sig)
            d.proc.wait(60)
            t_down = now_ms()
            d.start()
            t_up = now_ms()
            time.sleep(25)
            # the runs table is the projection: wait until it holds the window's runs
            want = len(created) * ((t_up + 20000 - t_stop) // 1000)
            for _ in range(240):
                n = int(psql(d.db, "SELECT count(*) FROM runs WHERE started_at IS NOT NULL AND nominal_time "
                                   "BETWEEN to_timestamp(%d / 1000.0) AND to_timestamp(%d / 1000.0)"
                             % (t_stop, t_up + 20000)).strip())
                if n >= want:
                    break
                time.sleep(0.5)
            # the first fire started after the restart, and how late fires were
            # (started - nominal) in the 20 s after it
            row = psql(d.db, "SELECT (extract(epoch FROM min(started_at)) * 1000)::bigint FROM runs "
                             "WHERE started_at > to_timestamp(%d / 1000.0)" % t_up).strip()
            first = int(row) if row else None
            lags = [int(x) for x in psql(d.db, "SELECT (extract(epoch FROM started_at - nominal_time) * 1000)::bigint "
                                               "FROM runs WHERE nominal_time BETWEEN to_timestamp(%d / 1000.0) AND "
                                               "to_timestamp(%d / 1000.0)" % (t_stop, t_up + 20000)).split()]
            res[kind] = {"stop_ms": t_down - t_stop, "start_ms": t_up - t_down,
                         "fires_flow_after_stop_ms": first - t_stop if first else None,
                         "fires_flow_after_start_ms": first - t_up if first else None,
                         "lag_ms": {"p50": pct(lags, 50), "p99": pct(lags, 99), "max": max(lags) if lags else None},
                         "runs_in_window": len(lags)}
            log("%s restart: %s" % (kind, json.dumps(res[kind])))
        # a rolling restart of two processes with all roles: a second one joins, then each
        # is stopped and started again in turn (the next once the previous listens)
        peer = Daemon("restart", d.roles, peer=d, api_port=API_PORT + 1)
        try:
            log("a second taskbusd joined; settling 20 s")
            time.sleep(20)
            t0 = now_ms()
            steps = []
            for p in (d, peer):
                ts = now_ms()
                p.stop()
                td = now_ms()
                p.start()
                steps.append({"at_ms": ts - t0, "stop_ms": td - ts, "start_ms": now_ms() - td})
            t1 = now_ms()
            time.sleep(25)
            want = len(created) * ((t1 + 20000 - t0) // 1000)
            for _ in range(240):
                n = int(psql(d.db, "SELECT count(*) FROM runs WHERE started_at IS NOT NULL AND nominal_time "
                                   "BETWEEN to_timestamp(%d / 1000.0) AND to_timestamp(%d / 1000.0)"
                             % (t0, t1 + 20000)).strip())
                if n >= want:
                    break
                time.sleep(0.5)
            lags = [int(x) for x in psql(d.db, "SELECT (extract(epoch FROM started_at - nominal_time) * 1000)::bigint "
                                               "FROM runs WHERE nominal_time BETWEEN to_timestamp(%d / 1000.0) AND "
                                               "to_timestamp(%d / 1000.0)" % (t0, t1 + 20000)).split()]
            # per second of nominal time: runs, started, largest start lag (where fires stalled)
            timeline = [l.split("|") for l in psql(d.db, "SELECT (extract(epoch FROM date_trunc('second', nominal_time)) "
                                                          "* 1000)::bigint - %d, count(*), count(started_at), "
                                                          "COALESCE((extract(epoch FROM max(started_at - nominal_time)) "
                                                          "* 1000)::bigint, -1) FROM runs WHERE nominal_time BETWEEN "
                                                          "to_timestamp(%d / 1000.0) AND to_timestamp(%d / 1000.0) "
                                                          "GROUP BY 1 ORDER BY 1" % (t0, t0, t1 + 20000)).split()]
            res["rolling"] = {"restarts_ms": t1 - t0, "steps": steps,
                              "timeline": [[int(x) for x in row] for row in timeline],
                              "lag_ms": {"p50": pct(lags, 50), "p99": pct(lags, 99), "max": max(lags) if lags else None},
                              "runs_in_window": len(lags)}
            log("rolling restart: %s" % json.dumps(res["rolling"]))
        finally:
            peer.stop()
        # exactly once over the whole run: per task, each nominal time once and none missing
        rows = psql(d.db, "SELECT task_id, count(*), count(DISTINCT nominal_time), "
                          "(extract(epoch FROM max(nominal_time) - min(nominal_time)))::bigint FROM runs "
                          "GROUP BY task_id").split()
        dup = lost = tasks = 0
        for line in rows:
            tid, n, nd, span = line.split("|")
            tasks += 1
            dup += int(n) - int(nd)
            lost += max(0, int(span) + 1 - int(nd))
        res["exactly_once"] = {"tasks": tasks, "duplicated": dup, "missing": lost}
    finally:
        d.stop()
    doc = save("restart", res, [])
    for kind in ("clean", "sigkill"):
        r = res[kind]
        print("restart (%s): stop %d ms, start %d ms, fires flowing %s ms after the start; lag of fires due around "
              "it p50 %s ms, p99 %s ms, max %s ms" % (kind, r["stop_ms"], r["start_ms"], r["fires_flow_after_start_ms"],
                                                     r["lag_ms"]["p50"], r["lag_ms"]["p99"], r["lag_ms"]["max"]))
    r = res["rolling"]
    print("restart (rolling, two processes): both restarted in %d ms; lag of fires due around it p50 %s ms, "
          "p99 %s ms, max %s ms" % (r["restarts_ms"], r["lag_ms"]["p50"], r["lag_ms"]["p99"], r["lag_ms"]["max"]))
    print("restart: %(tasks)d tasks, %(duplicated)d duplicated, %(missing)d missing" % res["exactly_once"])


def metric(name):
    """A value of the api's /metrics (None until it answers and has it)."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", API_PORT, timeout=5)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    except (OSError, http.client.HTTPException):
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def scenario_cmdrebuild(args):
    """The commands role's rebuild on assignment with N live tasks: from the projection's
    snapshot (then task-events after the projector's offset), and from offset 0 (the
    projection emptied: what every rebuild read before), with the RSS after each."""
    n = int(args[0]) if args else 100000
    d = Daemon("cmdrebuild", "api,commands,projector")
    try:
        ok = create_tasks(d, n, "rb")
        end = time.time() + 900
        while int(psql(d.db, "SELECT count(*) FROM tasks").strip()) < ok and time.time() < end:
            time.sleep(1)
        out = {"tasks": ok}
        for mode in ("snapshot", "offset_0"):
            if mode == "offset_0":
                d.stop()
                psql(d.db, "DELETE FROM consumer_offsets WHERE consumer = 'projector'; TRUNCATE tasks")
            d.restart("api,commands")
            end = time.time() + 900
            while (metric("taskbus_commands_rebuild_seconds_count") or 0) < 1 and time.time() < end:
                time.sleep(0.5)
            secs = metric("taskbus_commands_rebuild_seconds_sum")
            rss = int(re.search(r"VmRSS:\s+(\d+)", open("/proc/%d/status" % d.proc.pid).read()).group(1))
            out[mode] = {"rebuild_seconds": secs, "tasks_held": metric("taskbus_commands_tasks_held"),
                         "rss_kib": rss}
            log("%s: rebuilt %s tasks in %s s, RSS %d KiB" % (mode, out[mode]["tasks_held"], secs, rss))
    finally:
        d.stop()
    doc = save("cmdrebuild", out, [])
    print("cmdrebuild: %d tasks: snapshot %.2f s, offset 0 %.2f s" %
          (ok, out["snapshot"]["rebuild_seconds"] or -1, out["offset_0"]["rebuild_seconds"] or -1))
    return doc


def main():
    name = sys.argv[1]
    {"api": scenario_api, "scheduler": scenario_scheduler, "burst": scenario_burst, "e2e": scenario_e2e,
     "replay": scenario_replay, "abuse": scenario_abuse, "reads": scenario_reads,
     "restart": scenario_restart, "cmdrebuild": scenario_cmdrebuild,
     "peers": lambda argv: __import__("peers").scenario_peers(argv),
     "console": lambda argv: __import__("console").scenario_console(argv)}[name](sys.argv[2:])


if __name__ == "__main__":
    main()
