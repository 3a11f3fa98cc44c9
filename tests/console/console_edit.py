#!/usr/bin/python3
"""The console's editor and task detail in headless Chromium (run by
tests/integration/test_console_edit.c).

Environment: TB_URL (the API), TB_ALICE and TB_CAROL (tokens of two users of group ga,
made with `taskbus admin user create`), TB_IMG_DIR (where the screenshots go: test
artefacts, not committed). Prints one "ok ..." line per check and "PASS console_edit" at
the end; exits 1 on the first failed check.
"""
import datetime
import os
import re
import time

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC

from console_common import URL, WAIT, browser, fail, need_browser, ok, rest, sign_in, text_of, wait_for

ALICE = os.environ["TB_ALICE"]
CAROL = os.environ["TB_CAROL"]
IMG = os.environ["TB_IMG_DIR"]
NAME = "edit-march-sundays"
CRON = "30 2 * 3 0"  # Sundays of March at 02:30: the last one is the spring-forward day in Paris


def shot(drv, name):
    drv.save_screenshot(os.path.join(IMG, name))
    ok("screenshot %s" % name)


def css(drv, sel):
    return drv.find_elements(By.CSS_SELECTOR, sel)


def attr(drv, sel, name):
    els = css(drv, sel)
    return els[0].get_attribute(name) if els else None


def typed(drv, el_id, text):
    el = drv.find_element(By.ID, el_id)
    el.send_keys(Keys.CONTROL, "a")
    el.send_keys(Keys.DELETE)
    el.send_keys(text)
    return el


def task_id_of(drv):
    m = re.match(r"^#/tasks/([A-Za-z0-9._:-]+)$", drv.execute_script("return location.hash"))
    return m.group(1) if m else None


def editor_loaded(drv, task_id):
    drv.get(URL + "/ui/#/tasks/%s/edit" % task_id)
    wait_for(drv, lambda d: (attr(d, "#e-name", "value") or "") != "", "the editor with the task")


def editor_bad_then_good(drv):
    drv.get(URL + "/ui/#/tasks/new")
    wait_for(drv, EC.presence_of_element_located((By.ID, "e-name")), "the editor")
    if drv.switch_to.active_element.get_attribute("id") != "e-name":
        fail("the editor does not focus its first field")
    current = [a.get_attribute("id") for a in css(drv, "#nav a[aria-current=page]")]
    if current != ["nav-new-task"]:
        fail("the header marks %s as the current page, not only New task" % current)
    for f in ("e-name", "e-script", "e-cron", "e-timezone", "e-every", "e-expiry", "e-labels", "e-attempts"):
        if not css(drv, "label[for=%s]" % f):
            fail("the field %s has no label" % f)
    typed(drv, "e-name", NAME)
    typed(drv, "e-script", "echo from the editor")
    typed(drv, "e-cron", "0 25 * * *")
    typed(drv, "e-timezone", "Europe/Paris")
    # what the API itself says about this cron
    st, body = rest("POST", "/v1/tasks", ALICE, {"name": NAME, "script": "true", "security_group": "ga",
                                                 "schedule": {"cron": "0 25 * * *", "timezone": "Europe/Paris"}})
    if st != 400 or body["error"].get("field") != "schedule.cron":
        fail("the API's answer to the bad cron: %s %s" % (st, body))
    want = body["error"]["message"]
    drv.find_element(By.ID, "e-save").click()
    wait_for(drv, lambda d: text_of(d, "#e-cron-error") == want and attr(d, "#e-cron", "aria-invalid") == "true",
             "the API's error on the cron field")
    if "e-cron-error" not in (attr(drv, "#e-cron", "aria-describedby") or "").split():
        fail("the cron field is not described by its error")
    if drv.switch_to.active_element.get_attribute("id") != "e-cron":
        fail("the field in error does not get the focus")
    st, page = rest("GET", "/v1/tasks?name_prefix=" + NAME, ALICE)
    if st != 200 or page["tasks"]:
        fail("a task was created with the bad cron: %s %s" % (st, page))
    ok("a bad cron: the field shows the API's message (%r), aria-invalid and described by it" % want)
    shot(drv, "editor-bad-cron.png")

    # a good one: the preview follows the typing, DST shown
    typed(drv, "e-cron", CRON)
    wait_for(drv, lambda d: len(css(d, "#preview-body li[data-at]")) == 5 and
             attr(d, "#e-cron", "aria-invalid") is None, "the live preview of 5 fires")
    shifted = css(drv, "#preview-body li[data-dst=shifted]")
    if not shifted or "03:00:00 UTC+02:00" not in shifted[0].text:
        fail("the preview does not show the spring-forward fire: %s" % text_of(drv, "#preview-body"))
    ok("the preview shows the next 5 fires while typing, the DST one marked: %r" % shifted[0].text)
    drv.find_element(By.ID, "e-save").click()
    wait_for(drv, lambda d: task_id_of(d) and text_of(d, "#page-title") == NAME, "the new task's page")
    task_id = task_id_of(drv)
    st, t = rest("GET", "/v1/tasks/" + task_id, ALICE)
    if st != 200 or t["schedule"]["cron"] != CRON or t["schedule"]["timezone"] != "Europe/Paris":
        fail("the task saved: %s %s" % (st, t))
    ok("the good cron is saved: task %s" % task_id)
    return task_id


def detail_fires(drv, task_id):
    wait_for(drv, lambda d: len(css(d, "#fires li[data-at]")) == 10, "the next 10 fires")
    shifted = [li.text for li in css(drv, "#fires li[data-dst=shifted]")]
    if len(shifted) != 2 or not any("2027-03-28 03:00:00 UTC+02:00" in s for s in shifted):
        fail("the DST fires on the detail page: %s" % shifted)
    if "Europe/Paris" not in text_of(drv, "#task-props"):
        fail("the properties do not show the time zone")
    ok("the detail page shows the next 10 fires with the two spring-forward ones: %s" % shifted)
    shot(drv, "task-detail.png")


def conflict(drv, drv2, task_id):
    editor_loaded(drv, task_id)
    editor_loaded(drv2, task_id)
    typed(drv2, "e-name", NAME + "-renamed")
    drv2.find_element(By.ID, "e-save").click()
    wait_for(drv2, lambda d: text_of(d, "#page-title") == NAME + "-renamed", "carol's save")
    ok("carol renamed the task in her session")

    typed(drv, "e-script", "echo edited by alice")
    drv.find_element(By.ID, "e-save").click()
    wait_for(drv, lambda d: css(d, "#conflict") and d.find_element(By.ID, "conflict").is_displayed(),
             "the conflict in alice's session")
    box = text_of(drv, "#conflict")
    if "carol" not in box or "version 1" not in box or "version 2" not in box:
        fail("the conflict does not say who changed what version: %s" % box)
    row = css(drv, "#conflict-theirs tr[data-field=name]")
    if not row or NAME + "-renamed" not in row[0].text:
        fail("the conflict does not show the other version's name: %s" % text_of(drv, "#conflict-theirs"))
    if "script" not in text_of(drv, "#conflict-mine"):
        fail("the conflict does not list alice's change: %s" % text_of(drv, "#conflict-mine"))
    st, t = rest("GET", "/v1/tasks/" + task_id, ALICE)
    if t["name"] != NAME + "-renamed" or t["script"] != "echo from the editor" or t["version"] != 2:
        fail("something was overwritten: %s" % t)
    ok("the second save meets the other version (carol's name shown, nothing overwritten)")
    shot(drv, "editor-conflict.png")

    drv.find_element(By.ID, "conflict-reapply").click()
    wait_for(drv, lambda d: attr(d, "#e-name", "value") == NAME + "-renamed" and
             attr(d, "#e-script", "value") == "echo edited by alice", "alice's change on top of carol's")
    drv.find_element(By.ID, "e-save").click()
    wait_for(drv, lambda d: text_of(d, "#page-title") == NAME + "-renamed" and task_id_of(d), "the re-applied save")
    st, t = rest("GET", "/v1/tasks/" + task_id, ALICE)
    if t["name"] != NAME + "-renamed" or t["script"] != "echo edited by alice" or t["version"] != 3:
        fail("after re-applying: %s" % t)
    ok("re-applied on top: both changes kept (version 3)")


def history(drv, task_id):
    wait_for(drv, lambda d: css(d, "#history li[data-version='3'] tr[data-field=script]") and
             css(d, "#history li[data-version='2'] tr[data-field=name]"), "the change history with its diffs")
    v2 = text_of(drv, "#history li[data-version='2']")
    if "carol" not in v2 or NAME + "-renamed" not in v2 or NAME not in v2:
        fail("version 2's entry: %s" % v2)
    if "alice" not in text_of(drv, "#history li[data-version='3']"):
        fail("version 3's actor: %s" % text_of(drv, "#history li[data-version='3']"))
    ok("the change history says who changed what, field by field")
    # the state at a chosen time: now (version 3), and before the task existed
    now = datetime.datetime.now() + datetime.timedelta(seconds=1)
    for when, want in ((now, "version 3"), (datetime.datetime(2020, 1, 1), "did not exist")):
        drv.execute_script("const i = document.getElementById('state-at'); i.value = arguments[0];"
                           "i.dispatchEvent(new Event('input'));", when.strftime("%Y-%m-%dT%H:%M:%S"))
        drv.find_element(By.ID, "state-at-submit").click()
        wait_for(drv, lambda d: want in text_of(d, "#state-at-result"), "the state at %s" % when)
    ok("the state at a chosen time: version 3 now, none in 2020")


def actions(drv, task_id):
    drv.find_element(By.ID, "act-pause").click()
    wait_for(drv, lambda d: text_of(d, "#task-state") == "paused" and css(d, "#act-resume"), "paused")
    drv.find_element(By.ID, "act-resume").click()
    wait_for(drv, lambda d: text_of(d, "#task-state") == "active" and css(d, "#act-pause"), "resumed")
    ok("pause and resume from the detail page")
    drv.find_element(By.ID, "act-run").click()
    wait_for(drv, lambda d: "Run requested" in text_of(d, "#task-message"), "run now")
    deadline = time.time() + WAIT
    while True:
        drv.refresh()
        wait_for(drv, EC.presence_of_element_located((By.ID, "runs-table")), "the detail page again")
        time.sleep(1)
        if "succeeded" in text_of(drv, "#runs-table tbody") and "1 of 1" in text_of(drv, "#runs-summary"):
            break
        if time.time() > deadline:
            fail("the run of run now: %s / %s" % (text_of(drv, "#runs-table"), text_of(drv, "#runs-summary")))
    if len(css(drv, "#runs-chart svg rect.st-succeeded")) != 1:
        fail("the chart has no bar for the run")
    ok("run now: the run is in the history and the chart (%s)" % text_of(drv, "#runs-summary"))
    # the status filter: no failed run
    drv.execute_script("document.getElementById('r-status').value = 'failed,timed_out,lost'")
    drv.find_element(By.CSS_SELECTOR, "form[aria-label='Filter runs'] button[type=submit]").click()
    wait_for(drv, lambda d: "No run matches" in text_of(d, "#runs-table"), "the failed-runs filter")
    if "status=failed" not in drv.execute_script("return location.hash"):
        fail("the status filter is not in the URL")
    # the time range: due before the run (a day ago) keeps nothing, due from a day ago keeps it
    day_ago = (datetime.datetime.now() - datetime.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    for field, want in (("r-until", "No run matches"), ("r-since", "succeeded")):
        drv.execute_script("document.getElementById('r-status').value = '';"
                           "for (const i of ['r-since', 'r-until']) document.getElementById(i).value = '';"
                           "document.getElementById(arguments[0]).value = arguments[1];", field, day_ago)
        drv.find_element(By.CSS_SELECTOR, "form[aria-label='Filter runs'] button[type=submit]").click()
        wait_for(drv, lambda d: want in text_of(d, "#runs-table tbody") and
                 ("until=" if field == "r-until" else "since=") in d.execute_script("return location.hash"),
                 "the runs due %s a day ago" % ("before" if field == "r-until" else "from"))
    ok("the run history's status and time-range filters, kept in the URL")


def phone(drv, task_id):
    drv.set_window_size(390, 844)
    for page, sel in (("#/tasks/%s" % task_id, "#fires li[data-at]"), ("#/tasks/%s/edit" % task_id, "#preview-body li")):
        drv.get(URL + "/ui/" + page)
        wait_for(drv, EC.presence_of_element_located((By.CSS_SELECTOR, sel)), page + " on a phone")
        over = drv.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        if over > 0:
            fail("%s is %d px wider than a 390 px screen" % (page, over))
    drv.set_window_size(1280, 900)
    ok("the detail page and the editor fit a 390 px wide screen")


def delete(drv, task_id):
    drv.get(URL + "/ui/#/tasks/" + task_id)
    wait_for(drv, EC.element_to_be_clickable((By.ID, "act-delete")), "the delete button")
    drv.find_element(By.ID, "act-delete").click()
    wait_for(drv, EC.visibility_of_element_located((By.ID, "confirm")), "the confirmation")
    if drv.switch_to.active_element.get_attribute("id") != "confirm-cancel":
        fail("the confirmation does not focus Cancel")
    drv.find_element(By.ID, "confirm-cancel").click()
    wait_for(drv, lambda d: not css(d, "#confirm"), "the confirmation closed")
    # A wrongful delete cannot be awaited, but a later write from the same page is
    # decided after it: pause, and once the pause is seen, no DELETED may precede it.
    drv.find_element(By.ID, "act-pause").click()
    wait_for(drv, lambda d: text_of(d, "#task-state") == "paused", "paused after the Cancel")
    st, hist = rest("GET", "/v1/tasks/%s/history" % task_id, ALICE)
    types = [e.get("type") for e in hist.get("history", [])] if st == 200 else []
    if st != 200 or "PAUSED" not in types or "DELETED" in types:
        fail("cancelled, but the history says otherwise: %s %s" % (st, types))
    ok("Cancel in the confirmation keeps the task (a later pause applies; no DELETED event)")
    drv.find_element(By.ID, "act-delete").click()
    wait_for(drv, EC.visibility_of_element_located((By.ID, "confirm")), "the confirmation again")
    shot(drv, "task-delete-confirm.png")
    drv.find_element(By.ID, "confirm-ok").click()
    wait_for(drv, lambda d: d.execute_script("return location.hash").startswith("#/tasks") and
             not task_id_of(d), "the tasks list after the delete")
    st, _ = rest("GET", "/v1/tasks/" + task_id, ALICE)
    if st != 404:
        fail("deleted, but GET answers %s" % st)
    ok("deleted after its confirmation (GET answers 404)")


def main():
    need_browser()
    os.makedirs(IMG, exist_ok=True)
    drv = browser()
    drv2 = None
    try:
        sign_in(drv, ALICE, "alice")
        task_id = editor_bad_then_good(drv)
        detail_fires(drv, task_id)
        drv2 = browser()
        sign_in(drv2, CAROL, "carol")
        conflict(drv, drv2, task_id)
        history(drv, task_id)
        actions(drv, task_id)
        phone(drv, task_id)
        delete(drv, task_id)
    finally:
        drv.quit()
        if drv2:
            drv2.quit()
    print("PASS console_edit", flush=True)


if __name__ == "__main__":
    main()
