#!/usr/bin/python3
"""The web console in headless Chromium (run by tests/integration/test_console_browser.c).

Environment: TB_URL (the API), TB_ALICE and TB_BOB (tokens of users in groups ga
and gb, made with `taskbus admin user create`), TB_IMG_DIR (where the dashboard
and run screenshots go), TB_SHOT_DIR (where the screenshot of every step goes). Needs Debian's chromium, chromium-driver and
python3-selenium; any of them missing is a failure, never a skip. Prints one
"ok ..." line per check and "PASS console_browser" at the end; exits 1 on the
first failed check.
"""
import datetime
import os
import tempfile
import time

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select

from console_common import (URL, WAIT, browser, fail, need_browser, ok, rest, sign_in, sign_out,
                            text_of, wait_for)

ALICE = os.environ["TB_ALICE"]
BOB = os.environ["TB_BOB"]
IMG = os.environ["TB_IMG_DIR"]
SHOTS = os.environ["TB_SHOT_DIR"]  # screenshots of each step: artefacts, not committed


def shot(drv, name):
    drv.save_screenshot(os.path.join(SHOTS, name + ".png"))


def create(body, what):
    status, task = rest("POST", "/v1/tasks", ALICE, body)
    if status != 201:
        fail("create %s: %s %s" % (what, status, task))
    return task["id"]


def cancel_from_dashboard(drv):
    """A long run (sleep 300) cancelled from the dashboard's Cancel button."""
    due = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=2)
    long_id = create({"name": "console-long-run", "security_group": "ga", "script": "sleep 300",
                      "schedule": {"once": due.strftime("%Y-%m-%dT%H:%M:%SZ")}}, "the long task")
    drv.get(URL + "/ui/#/dashboard")
    # the dashboard reloads itself every 5 s: the run shows up once it started
    button = wait_for(drv, lambda d: next(iter(d.find_elements(
        By.XPATH, "//ul[@id='running']/li[a[text()='console-long-run']]//button")), False),
        "the long run under Running now, with a Cancel button")
    run_id = button.get_attribute("data-run-id")
    if "console-long-run" not in (button.get_attribute("aria-label") or ""):
        fail("the Cancel button does not say which run it cancels")
    ok("the long run is listed as running, with a Cancel button")
    shot(drv, "ops-1-running")
    button.click()
    dlg = wait_for(drv, EC.visibility_of_element_located((By.ID, "confirm")), "the confirmation")
    if "console-long-run" not in dlg.text:
        fail("the confirmation does not name the run's task: %r" % dlg.text)
    shot(drv, "ops-2-cancel-confirm")
    drv.find_element(By.ID, "confirm-ok").click()
    deadline = time.time() + WAIT
    while True:
        st, run = rest("GET", "/v1/runs/" + run_id, ALICE)
        if st == 200 and run["status"] == "cancelled":
            break
        if time.time() > deadline:
            fail("the run did not end cancelled: %s %s" % (st, run))
        time.sleep(0.5)
    wait_for(drv, lambda d: not d.find_elements(By.CSS_SELECTOR, "#running li[data-run-id='%s']" % run_id),
             "the cancelled run gone from Running now")
    ok("cancelled from the dashboard: the run ended cancelled (%s)" % run["error"])
    shot(drv, "ops-3-cancelled")
    return long_id


def dashboard_sections(drv):
    """The next fires and the fire-lag chart, from the group-wide endpoints."""
    drv.get(URL + "/ui/#/dashboard")
    wait_for(drv, lambda d: "console-hourly-sync" in text_of(d, "#upcoming"),
             "the hourly task under Next 24 hours")
    ok("the next 24 h of fires list the hourly task")
    wait_for(drv, lambda d: d.find_elements(By.CSS_SELECTOR, "svg#fire-lag rect.p50") and
             "scheduled fires in the last hour" in text_of(d, "#lag-caption"),
             "the fire-lag chart with this hour's fires")
    ok("the fire-lag chart shows this hour's fires: " + text_of(drv, "#lag-caption"))


def bulk_pause(drv, ids):
    """Two tasks checked and paused at once, after a confirmation naming how many."""
    drv.get(URL + "/ui/#/tasks")
    for tid in ids:
        box = wait_for(drv, EC.element_to_be_clickable(
            (By.CSS_SELECTOR, "tr[data-task-id='%s'] input.pick" % tid)), "the task's checkbox")
        box.click()
    wait_for(drv, lambda d: "2 tasks selected" in text_of(d, "#selected-count"), "2 tasks selected")
    drv.find_element(By.ID, "bulk-pause").click()
    dlg = wait_for(drv, EC.visibility_of_element_located((By.ID, "confirm")), "the bulk confirmation")
    if "2 tasks" not in dlg.text:
        fail("the confirmation does not say how many tasks: %r" % dlg.text)
    shot(drv, "ops-4-bulk-confirm")
    drv.find_element(By.ID, "confirm-ok").click()
    wait_for(drv, lambda d: "2 of 2 done" in text_of(d, "#bulk-report"), "the bulk report")
    for tid in ids:
        st, t = rest("GET", "/v1/tasks/" + tid, ALICE)
        if st != 200 or t.get("paused") is not True:
            fail("task %s is not paused after the bulk pause: %s %s" % (tid, st, t))
    wait_for(drv, lambda d: all(d.find_elements(By.CSS_SELECTOR, "tr[data-task-id='%s'] .badge.paused" % t)
                                for t in ids), "both rows marked paused")
    ok("bulk pause of 2 tasks, confirmed by count: both paused through the API")
    shot(drv, "ops-5-bulk-paused")


def bulk_resume_one_gone(drv, ids):
    """A bulk resume of two tasks, one deleted meanwhile (through REST, behind the
    page's back): the other is resumed, the deleted one's error is shown by name."""
    drv.get(URL + "/ui/#/tasks")
    for tid in ids:
        wait_for(drv, EC.element_to_be_clickable(
            (By.CSS_SELECTOR, "tr[data-task-id='%s'] input.pick" % tid)), "the task's checkbox").click()
    st, _ = rest("DELETE", "/v1/tasks/" + ids[1], ALICE)
    if st != 204:
        fail("delete the second task through REST: %s" % st)
    drv.find_element(By.ID, "bulk-resume").click()
    wait_for(drv, EC.visibility_of_element_located((By.ID, "confirm-ok")), "the resume confirmation").click()
    wait_for(drv, lambda d: "1 of 2 done" in text_of(d, "#bulk-report"), "the report of a bulk resume with one failure")
    err = text_of(drv, "#bulk-errors li[data-task-id='%s']" % ids[1])
    if "console-weekly-backup" not in err or "no task" not in err:
        fail("the deleted task's error is not shown by name: %r" % text_of(drv, "#bulk-report"))
    st, t = rest("GET", "/v1/tasks/" + ids[0], ALICE)
    if st != 200 or t.get("paused") is not False:
        fail("the other task was not resumed: %s %s" % (st, t))
    ok("a bulk resume shows the error of the task deleted meanwhile (%s) and resumes the other" % err)
    shot(drv, "ops-6-bulk-error")


def last_outcome_filter(drv, failing_id):
    drv.get(URL + "/ui/#/tasks")
    Select(wait_for(drv, EC.presence_of_element_located((By.ID, "f-outcome")), "the last-run filter")
           ).select_by_value("failed,timed_out,lost")
    drv.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
    wait_for(drv, lambda d: "last_outcome=" in d.current_url and "1 tasks" in text_of(d, "#task-count"),
             "the last-outcome filter")
    rows = [r.get_attribute("data-task-id") for r in drv.find_elements(By.CSS_SELECTOR, "tbody tr[data-task-id]")]
    if rows != [failing_id]:
        fail("the last-outcome filter shows %s, want only the failing task %s" % (rows, failing_id))
    ok("the last-outcome filter (in the URL) shows the failing task only")
    shot(drv, "ops-7-last-outcome")


def fetch_in_page(drv, method, path, headers=None):
    """fetch() from the page itself (its cookie, same origin): [status, body]."""
    return drv.execute_async_script(
        "const [m, p, h, done] = arguments;"
        "fetch(p, {method: m, headers: h, credentials: 'same-origin'})"
        ".then(async r => done([r.status, await r.text()])).catch(e => done([0, String(e)]));",
        method, path, headers or {})


def main():
    need_browser()
    os.makedirs(IMG, exist_ok=True)
    os.makedirs(SHOTS, exist_ok=True)

    # A task of alice's through REST, due in 3 s: it prints on stdout, waits, prints on
    # stderr, waits again, so that its log can be watched while it runs.
    due = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=3))
    status, task = rest("POST", "/v1/tasks", ALICE, {
        "name": "console-nightly-report", "security_group": "ga",
        "script": "echo hello-from-console; sleep 8; echo warn-line >&2; sleep 12; echo bye-now",
        "schedule": {"once": due.strftime("%Y-%m-%dT%H:%M:%SZ")}})
    if status != 201:
        fail("create the task: %s %s" % (status, task))
    hourly_id = create({
        "name": "console-hourly-sync", "security_group": "ga", "script": "true",
        "schedule": {"cron": "15 * * * *", "timezone": "Europe/Paris"}}, "the hourly task")
    weekly_id = create({
        "name": "console-weekly-backup", "security_group": "ga", "script": "true",
        "schedule": {"cron": "0 2 * * 0", "timezone": "UTC"}}, "the weekly task")
    failing_id = create({
        "name": "console-disk-check", "security_group": "ga",
        "script": "echo disk almost full >&2; exit 3",
        "schedule": {"once": due.strftime("%Y-%m-%dT%H:%M:%SZ")}}, "the failing task")
    task_id = task["id"]
    ok("task %s created through REST" % task_id)

    drv = browser()
    try:
        sign_in(drv, ALICE, "alice")
        cookies = {c["name"]: c for c in drv.get_cookies()}
        c = cookies.get("taskbus_session")
        if not c or not c.get("httpOnly") or c.get("sameSite") != "Strict":
            fail("the session cookie is not HttpOnly + SameSite=Strict: %s" % c)
        if "taskbus_session" in drv.execute_script("return document.cookie"):
            fail("the page's script can read the session cookie")
        stored = drv.execute_script(
            "return JSON.stringify(localStorage) + JSON.stringify(sessionStorage)")
        if ALICE in stored or "tbk_" in stored:
            fail("the page stored the token")
        ok("the cookie is HttpOnly and SameSite=Strict; the page keeps no token")

        # the tasks list shows it, its schedule in words, and its run in the strip
        drv.get(URL + "/ui/#/tasks")
        row_css = "tr[data-task-id='%s']" % task_id
        wait_for(drv, EC.presence_of_element_located((By.CSS_SELECTOR, row_css)), "the task in the list")
        ok("the task created through REST is in the list")
        wait_for(drv, lambda d: "every hour at minute 15" in d.find_element(By.TAG_NAME, "main").text,
                 "a cron schedule in words")
        ok("a cron schedule is shown in words")
        cell_css = row_css + " .strip a"
        deadline = time.time() + WAIT
        while not drv.find_elements(By.CSS_SELECTOR, cell_css):
            if time.time() > deadline:
                fail("no run appeared in the task's strip")
            time.sleep(1)
            drv.refresh()
            wait_for(drv, EC.presence_of_element_located((By.CSS_SELECTOR, row_css)), "the list again")
            time.sleep(0.5)
        ok("the run appears in the task's strip")

        # search by name prefix
        drv.find_element(By.ID, "f-prefix").send_keys("console-hourly")
        drv.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
        wait_for(drv, lambda d: not d.find_elements(By.CSS_SELECTOR, row_css) and
                 "console-hourly-sync" in d.find_element(By.TAG_NAME, "main").text,
                 "the name prefix filter")
        ok("the name prefix filter keeps only matching tasks")
        drv.get(URL + "/ui/#/tasks")
        wait_for(drv, EC.presence_of_element_located((By.CSS_SELECTOR, cell_css)), "the strip again")

        # open the run: its output arrives live
        drv.find_element(By.CSS_SELECTOR, cell_css).click()
        wait_for(drv, lambda d: "hello-from-console" in text_of(d, "#log-stdout"),
                 "the run's first stdout line")
        if "bye-now" in text_of(drv, "#log-stdout"):
            fail("the run was already over: the live log was not tested")
        ok("the run's stdout line is shown while it runs")
        wait_for(drv, lambda d: "warn-line" in text_of(d, "#log-stderr"), "the stderr line, live")
        if "warn-line" in text_of(drv, "#log-stdout"):
            fail("stderr is not told apart from stdout")
        ok("a stderr line arrives live, in its own pane")
        drv.save_screenshot(os.path.join(IMG, "console-run.png"))
        ok("saved docs/img/console-run.png")
        wait_for(drv, lambda d: "bye-now" in text_of(d, "#log-stdout") and
                 "succeeded" in text_of(d, "#run-props"), "the end of the run, live")
        ok("the run ends succeeded on the same page")

        # find in the output (both panes, any case) and download a stream
        find = drv.find_element(By.ID, "log-find")
        find.send_keys("WARN")
        wait_for(drv, lambda d: text_of(d, "#log-find-count").startswith("1 matching line"),
                 "one line found for 'WARN'")
        hit = drv.find_element(By.CSS_SELECTOR, "#log-find-results li")
        if "stderr" not in hit.get_attribute("class") or "warn-line" not in hit.text:
            fail("the match is not the stderr line: %r" % hit.text)
        find.clear()
        find.send_keys("no-such-text")
        wait_for(drv, lambda d: text_of(d, "#log-find-count") == "No line matches.", "no match")
        ok("find in the output lists the matching line with its stream and line number")
        dl = tempfile.mkdtemp(prefix="tb-console-dl-")
        drv.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": dl})
        drv.find_element(By.ID, "log-stdout-download").click()
        def downloaded(_):
            names = [f for f in os.listdir(dl) if f.startswith("run-") and f.endswith("-stdout.log")]
            return names and "bye-now" in open(os.path.join(dl, names[0])).read() and names[0]
        name = os.path.join(dl, wait_for(drv, downloaded, "the downloaded stdout in " + dl))
        if "warn-line" in open(name).read():
            fail("the stdout download holds stderr")
        ok("the stdout download holds the run's stdout only")

        # a write with the cookie and without the CSRF header is refused
        st, body = fetch_in_page(drv, "POST", "/v1/tasks/%s/pause" % task_id)
        if st != 403 or "csrf_required" not in body:
            fail("a cookie write without X-Taskbus-CSRF: %s %s" % (st, body))
        ok("a cookie write without the CSRF header is refused (403 csrf_required)")

        # the dashboard
        drv.get(URL + "/ui/#/dashboard")
        last = [time.time()]

        def dashboard_done(d):
            if (text_of(d, "#today-succeeded").startswith("1") and
                    text_of(d, "#today-failed").startswith("1") and
                    "console-disk-check" in text_of(d, "#failing")):
                return True
            if time.time() - last[0] > 3:  # the failing run may still be on its way
                last[0] = time.time()
                d.refresh()
            return False
        wait_for(drv, dashboard_done, "1 succeeded and 1 failed today, and the failing task listed")
        ok("the dashboard counts 1 succeeded and 1 failed today and lists the failing task")
        drv.save_screenshot(os.path.join(IMG, "console-dashboard.png"))
        ok("saved docs/img/console-dashboard.png")

        # the operator's actions: cancel a run, bulk pause, the last-outcome filter
        dashboard_sections(drv)
        cancel_from_dashboard(drv)
        bulk_pause(drv, [hourly_id, weekly_id])
        bulk_resume_one_gone(drv, [hourly_id, weekly_id])
        last_outcome_filter(drv, failing_id)

        # a phone-sized screen: the pages fit its width (no sideways scrolling)
        drv.set_window_size(390, 844)
        for page, css in (("#/tasks", row_css), ("#/dashboard", "#today-succeeded")):
            drv.get(URL + "/ui/" + page)
            wait_for(drv, EC.presence_of_element_located((By.CSS_SELECTOR, css)), page + " on a phone")
            over = drv.execute_script(
                "return document.documentElement.scrollWidth - window.innerWidth")
            if over > 0:
                fail("%s is %d px wider than a 390 px screen" % (page, over))
        drv.set_window_size(1280, 900)
        ok("the tasks list and the dashboard fit a 390 px wide screen")

        # sign out: the old cookie is useless
        sign_out(drv)

        # bob, of group gb, sees none of it
        sign_in(drv, BOB, "bob")
        drv.get(URL + "/ui/#/tasks")
        wait_for(drv, lambda d: "0 tasks" in text_of(d, "#task-count"), "bob's empty task list")
        if drv.find_elements(By.CSS_SELECTOR, row_css):
            fail("bob sees alice's task")
        st, _ = fetch_in_page(drv, "GET", "/v1/tasks/" + task_id)
        if st != 404:
            fail("bob's GET of alice's task: %s" % st)
        ok("a user of another group sees no task, and gets 404 for its id")
    finally:
        drv.quit()
    print("PASS console_browser", flush=True)


if __name__ == "__main__":
    main()
