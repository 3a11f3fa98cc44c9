"""tools/bench/run console: the web console's tasks page and dashboard with 10,000 tasks
and 100,000 runs in one group (issue 17), timed in headless Chromium until rendered.

The projection tables are written with COPY, not through the REST API and the
projector: creating 10,000 tasks and 100,000 runs through the real path takes far
longer than the measurement, and what is measured here is the read side (the api
role's statements and the console's rendering), which reads exactly these tables.
The rows have the shapes the projector writes (tasks.spec is the REST shape; runs
as projected from RunRequests and RunResults). Only taskbusd's api role runs.

Each page is loaded 3 times from a blank page (the scripts come from the api's
cache: ETag and 304), and its time is performance.now() when the page is rendered:
for the tasks page, its 100 rows and each row's strip of runs; for the dashboard,
every section. The median is reported. The REST calls each page makes are timed on
their own (median of 5), and EXPLAIN ANALYZE of the statements behind them
(written out here with the bench's values, as store/runs.c and store/tasks.c build
them) goes into the JSON.
"""
import datetime
import io
import json
import os
import statistics
import subprocess
import time
import urllib.parse
import urllib.request

if __name__ != "__main__":
    import scenarios as S

TASKS = 10000
RUNS_PER_TASK = 10
HEAVY = "bench-task-heavy"   # one more task, with HEAVY_RUNS runs: a task's detail page
HEAVY_RUNS = 10000
GROUP = "ops"


def copy(db, table, cols, rows):
    """COPY rows (tuples; None is NULL) into table."""
    buf = io.StringIO()
    for r in rows:
        buf.write("\t".join("\\N" if v is None else str(v).replace("\\", "\\\\").replace("\t", "\\t")
                            for v in r) + "\n")
    subprocess.run(["psql", "postgresql://taskbus@127.0.0.1:%d/%s" % (S.PG_PORT, db), "-qX", "-v", "ON_ERROR_STOP=1",
                    "-c", "COPY %s (%s) FROM STDIN" % (table, ", ".join(cols))],
                   input=buf.getvalue(), text=True, check=True)


def ts(ms):
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).isoformat()


def fill(db):
    """10,000 tasks, cron once a day each, and 10 runs of each over the last 10 days:
    5 % failed, and for 2 % of the tasks the latest run failed; 20 runs going on."""
    now = S.now_ms()
    day = 86400000
    tasks, runs = [], []
    for i in range(TASKS):
        tid = "bench-task-%05d" % i
        h, m = i % 24, (i * 7) % 60
        spec = {"name": "task-%05d" % i, "security_group": GROUP, "script": "true", "executor": "shell",
                "schedule": {"cron": "%d %d * * *" % (m, h), "timezone": "UTC"},
                "labels": {"team": "t%d" % (i % 10)}}
        created = now - 30 * day + i * 1000
        tasks.append((tid, 1, spec["name"], GROUP, "bench", json.dumps(spec), "false",
                      json.dumps(spec["labels"]), "", 0, ts(created), "bench", ts(created), i % 6, i))
        # the latest fire of its schedule, then one a day before it
        last = (now // day) * day + (h * 60 + m) * 60000
        if last > now - 60000:
            last -= day
        for k in range(RUNS_PER_TASK):
            nom = last - k * day
            st = "failed" if (k == 0 and i % 50 == 7) or (k > 0 and (i + k) % 20 == 0) else "succeeded"
            rid = "bench-run-%05d-%02d" % (i, k)
            runs.append((rid, tid, GROUP, ts(nom), 1, "schedule", st, ts(nom + 20 + i % 40),
                         ts(nom + 100), ts(nom + 1100), 0 if st == "succeeded" else 3, "shell", "bench",
                         12, ts(nom + 1100)))
    # one task with a long history: a run every 10 minutes for ~70 days (its detail page)
    hspec = {"name": "heavy", "security_group": GROUP, "script": "true", "executor": "shell",
             "schedule": {"every": "10m"}, "labels": {"team": "heavy"}}
    hcreated = now - 80 * day
    tasks.append((HEAVY, 1, "heavy", GROUP, "bench", json.dumps(hspec), "false",
                  json.dumps(hspec["labels"]), "", 0, ts(hcreated), "bench", ts(hcreated), 0, TASKS))
    history = [(HEAVY, 1, "bench-heavy-created", "CREATED", ts(hcreated), "bench", json.dumps(hspec), GROUP)]
    for k in range(HEAVY_RUNS):
        nom = (now // 600000) * 600000 - k * 600000
        st = "failed" if k % 13 == 5 else "succeeded"
        runs.append(("bench-heavy-%05d" % k, HEAVY, GROUP, ts(nom), 1, "schedule", st, ts(nom + 25),
                     ts(nom + 90), ts(nom + 90 + 200 + k % 900), 0 if st == "succeeded" else 1, "shell",
                     "bench", 40, ts(nom + 1300)))
    for j in range(20):  # going on now: started within the last hour
        nom = now - (j + 1) * 120000
        runs.append(("bench-live-%02d" % j, "bench-task-%05d" % j, GROUP, ts(nom), 2, "retry", "running",
                     ts(nom + 30), ts(nom + 100), None, None, "shell", "bench", 0, ts(nom + 100)))
    t = time.time()
    copy(db, "tasks", ["id", "version", "name", "security_group", "user_id", "spec", "paused", "labels",
                       "home_region", "epoch", "created_at", "created_by", "updated_at", "event_partition",
                       "event_offset"], tasks)
    copy(db, "runs", ["run_id", "task_id", "security_group", "nominal_time", "attempt", "trigger", "status",
                      "scheduled_at", "started_at", "finished_at", "exit_code", "executor", "host",
                      "output_bytes", "updated_at"], runs)
    copy(db, "task_history", ["task_id", "version", "event_id", "type", "at", "actor", "spec",
                              "security_group"], history)
    S.psql(db, "ANALYZE tasks; ANALYZE runs")
    S.log("COPY of %d tasks and %d runs: %.1f s" % (len(tasks), len(runs), time.time() - t))
    return len(tasks), len(runs), sum(1 for i in range(TASKS) if i % 50 == 7)


def plans(db):
    """EXPLAIN ANALYZE of the statements behind the pages, with the bench's values."""
    g = "'[\"%s\"]'::jsonb" % GROUP
    midnight = "date_trunc('day', now())"
    qs = {
        "GET /v1/runs?status=running (runs of a group, newest first)":
            "SELECT x.run_id FROM (SELECT DISTINCT g FROM jsonb_array_elements_text(%s) g) gs, "
            "LATERAL (SELECT * FROM runs WHERE security_group = gs.g AND status = ANY('{running}'::text[]) "
            "ORDER BY nominal_time DESC, run_id DESC LIMIT 101) x ORDER BY nominal_time DESC, run_id DESC "
            "LIMIT 101" % g,
        "GET /v1/runs (first page of 50, no filter)":
            "SELECT x.run_id FROM (SELECT DISTINCT g FROM jsonb_array_elements_text(%s) g) gs, "
            "LATERAL (SELECT * FROM runs WHERE security_group = gs.g "
            "ORDER BY nominal_time DESC, run_id DESC LIMIT 51) x ORDER BY nominal_time DESC, run_id DESC "
            "LIMIT 51" % g,
        "GET /v1/runs/counts (today)":
            "SELECT status, count(*), sum(occurrences) FROM runs WHERE security_group = "
            "ANY(ARRAY(SELECT jsonb_array_elements_text(%s))) AND nominal_time >= %s AND nominal_time < %s "
            "+ interval '1 day' GROUP BY status" % (g, midnight, midnight),
        "GET /v1/runs/fire-lag (last hour)":
            "SELECT date_trunc('minute', nominal_time) m, count(*), percentile_disc(0.5) WITHIN GROUP "
            "(ORDER BY scheduled_at - nominal_time) FROM runs WHERE security_group = "
            "ANY(ARRAY(SELECT jsonb_array_elements_text(%s))) AND nominal_time >= now() - interval '1 hour' "
            "AND nominal_time < now() AND trigger = 'schedule' AND attempt = 1 AND scheduled_at IS NOT NULL "
            "GROUP BY m" % g,
        "GET /v1/tasks?last_outcome=failed,timed_out,lost&limit=50":
            "SELECT id FROM tasks WHERE security_group = ANY('{%s}'::text[]) AND (SELECT lo.status FROM runs "
            "lo WHERE lo.task_id = tasks.id AND lo.status IN ('succeeded', 'failed', 'timed_out', 'cancelled', "
            "'lost') ORDER BY lo.nominal_time DESC, lo.run_id DESC LIMIT 1) = ANY('{failed,timed_out,lost}'"
            "::text[]) ORDER BY created_at DESC, id DESC LIMIT 51" % GROUP,
        "GET /v1/runs/upcoming (every schedule of the group)":
            "SELECT id, name, jsonb_build_object('schedule', spec->'schedule')::text FROM tasks WHERE "
            "security_group = ANY(ARRAY(SELECT jsonb_array_elements_text(%s))) AND NOT paused ORDER BY id" % g,
    }
    return {k: S.psql(db, "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + q).strip() for k, q in qs.items()}


def rest_times(token, n=5):
    """Median ms of each REST call the two pages make."""
    midnight = datetime.datetime.now().astimezone().replace(hour=0, minute=0, second=0, microsecond=0)
    q = urllib.parse.urlencode({"since": midnight.isoformat(),
                                "until": (midnight + datetime.timedelta(days=1)).isoformat()})
    paths = ["/v1/tasks?limit=100", "/v1/tasks/bench-task-09999/runs?limit=20", "/v1/runs/counts?" + q,
             "/v1/runs?status=running&limit=100", "/v1/runs/upcoming?limit=20",
             "/v1/tasks?limit=50&last_outcome=failed,timed_out,lost", "/v1/runs?limit=200&status=failed,timed_out,lost",
             "/v1/runs/fire-lag"]
    out = {}
    for p in paths:
        ms = []
        for _ in range(n):
            req = urllib.request.Request("http://127.0.0.1:%d%s" % (S.API_PORT, p),
                                         headers={"Authorization": "Bearer " + token})
            t = time.time()
            with urllib.request.urlopen(req, timeout=30) as r:
                r.read()
                if r.status != 200:
                    raise SystemExit("%s: %d" % (p, r.status))
            ms.append((time.time() - t) * 1000)
        out[p] = round(statistics.median(ms), 1)
    return out


# Rendered: the tasks page with its 100 rows and every strip of runs in; the dashboard
# with every section loaded (main[data-loaded]). Returns performance.now() then.
RENDERED = """
const [page, done] = arguments;
const ready = () => page === 'tasks'
  ? document.querySelectorAll('tbody tr[data-task-id]').length === 100 &&
    !Array.from(document.querySelectorAll('tbody td')).some((td) => td.textContent === '…')
  : page.startsWith('tasks/')   // a task's detail: runs page, chart, next fires, history
  ? document.querySelectorAll('#runs-table tr[data-run-id]').length === 20 &&
    document.querySelector('#runs-chart') !== null && document.querySelector('#fires li') !== null &&
    document.querySelector('#history li') !== null
  : document.querySelector('#main[data-loaded]') !== null;
(function poll() { if (ready()) done(performance.now()); else setTimeout(poll, 5); })();
"""


def browser_times(token, repeat=3):
    """Run browser_pages() under Debian's python3, which has python3-selenium (the
    python3 on PATH may be another one)."""
    r = subprocess.run(["/usr/bin/python3", os.path.abspath(__file__), str(S.API_PORT), str(repeat)],
                       input=token, stdout=subprocess.PIPE, text=True, check=True)
    out = json.loads(r.stdout)
    for page, v in out.items():
        S.log("%s page: %s ms (median %d)" % (page, v["runs_ms"], v["median_ms"]))
    return out


def browser_pages(port, token, repeat):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1280,900", "--disable-extensions", "--no-first-run"):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    drv.set_script_timeout(60)
    url = "http://127.0.0.1:%d/ui/" % port
    out = {}
    try:
        drv.get(url)
        WebDriverWait(drv, 30).until(EC.visibility_of_element_located((By.ID, "token"))).send_keys(token)
        drv.find_element(By.ID, "signin-submit").click()
        WebDriverWait(drv, 30).until(lambda d: "bench" in d.find_element(By.ID, "who").text)
        for page in ("tasks", "dashboard", "tasks/" + HEAVY):
            ms = []
            for _ in range(repeat + 1):  # the first load warms the api's caches and the browser's
                drv.get("about:blank")
                drv.get(url + "#/" + page)
                ms.append(drv.execute_async_script(RENDERED, page))
            drv.save_screenshot("/tmp/bench-console-%s.png" % page.replace("/", "-"))
            out["task detail" if page.startswith("tasks/") else page] = {"runs_ms": [round(x) for x in ms[1:]], "median_ms": round(statistics.median(ms[1:]))}
    finally:
        drv.quit()
    return out


def scenario_console(args):
    for f in ("/usr/bin/chromium", "/usr/bin/chromedriver"):
        if not os.access(f, os.X_OK):
            raise SystemExit(f + " is missing: apt-get install chromium chromium-driver python3-selenium")
    d = S.Daemon("console", "api")
    try:
        ntasks, nruns, failing = fill(d.db)
        rest = rest_times(d.token)
        pages = browser_times(d.token)
        explain = plans(d.db)
    finally:
        d.stop()
    res = {"tasks": ntasks, "runs": nruns, "tasks_last_run_failed": failing, "group": GROUP,
           "inserted_with": "COPY into the projection tables (tasks, runs): not the write path",
           "pages_ms": pages, "rest_median_ms": rest, "aim_ms": 1000, "plans": explain}
    doc = S.save("console", res, [])
    print("console (%d tasks, %d runs in one group): tasks page median %d ms, dashboard median %d ms, "
          "detail of a task with %d runs median %d ms (aim < 1000 ms)"
          % (ntasks, nruns, pages["tasks"]["median_ms"], pages["dashboard"]["median_ms"], HEAVY_RUNS,
             pages["task detail"]["median_ms"]))
    for p, ms in rest.items():
        print("  %-60s %7.1f ms" % (p, ms))
    return doc


if __name__ == "__main__":
    # browser_times() runs this under /usr/bin/python3: port and repeat as arguments,
    # the token on stdin, the times as JSON on stdout
    import sys
    print(json.dumps(browser_pages(int(sys.argv[1]), sys.stdin.read().strip(), int(sys.argv[2]))))
