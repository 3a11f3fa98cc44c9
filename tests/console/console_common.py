"""What the console's browser tests share: checks that print "ok ..." or fail, REST calls,
a headless Chromium, waits, and signing in through the page.

Needs Debian's chromium, chromium-driver and python3-selenium; any of them missing is a
failure, never a skip.
"""
import json
import os
import sys
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

URL = os.environ["TB_URL"]
WAIT = 60  # seconds: an ASan build on a busy machine is slow
FAILURE_SHOT = "/tmp/console-%d-failure.png" % os.getpid()


def ok(msg):
    print("ok   " + msg, flush=True)


def fail(msg):
    print("FAIL " + msg, flush=True)
    sys.exit(1)


def need_browser():
    for f in ("/usr/bin/chromium", "/usr/bin/chromedriver"):
        if not os.access(f, os.X_OK):
            fail(f + " is missing: apt-get install chromium chromium-driver python3-selenium")


def rest(method, path, token=None, body=None, headers=None):
    """One REST call; returns (status, parsed JSON or text)."""
    h = dict(headers or {})
    if token:
        h["Authorization"] = "Bearer " + token
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    req = urllib.request.Request(URL + path, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            raw = r.read().decode()
            status = r.status
    except urllib.error.HTTPError as e:
        raw = e.read().decode()
        status = e.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw


def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1280,900", "--disable-extensions", "--no-first-run"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def wait_for(drv, cond, what, timeout=WAIT):
    try:
        return WebDriverWait(drv, timeout, poll_frequency=0.2,
                             ignored_exceptions=(StaleElementReferenceException,)).until(cond)
    except Exception as e:
        drv.save_screenshot(FAILURE_SHOT)
        why = "within %d s" % timeout if isinstance(e, TimeoutException) else "%s: %s" % (type(e).__name__, e)
        fail("%s (%s; screenshot %s); page: %s"
             % (what, why, FAILURE_SHOT, drv.find_element(By.TAG_NAME, "body").text[:800]))


def text_of(drv, css):
    """The text of the first element matching \\p css ("" if none, or if the page
    re-rendered it between the lookup and the read: the next poll looks again)."""
    try:
        els = drv.find_elements(By.CSS_SELECTOR, css)
        return els[0].text if els else ""
    except StaleElementReferenceException:
        return ""


def sign_in(drv, token, user):
    """Sign in through the form with \\p token; checks the label, the focus and that the
    token is not left in the page."""
    drv.get(URL + "/ui/#/dashboard")
    field = wait_for(drv, EC.visibility_of_element_located((By.ID, "token")), "the sign-in form")
    label = drv.find_element(By.CSS_SELECTOR, "label[for=token]").text
    if "API token" not in label:
        fail("the token field has no label: %r" % label)
    if drv.switch_to.active_element != field:
        fail("the token field does not have the keyboard focus")
    field.send_keys(token)
    drv.find_element(By.ID, "signin-submit").click()
    wait_for(drv, lambda d: user in text_of(d, "#who"), "signed in as " + user)
    if token in drv.page_source:
        fail("the token is still in the page")
    ok("signed in as %s with a token from `taskbus admin user create`" % user)


def sign_out(drv):
    """Sign out through the page; checks that the sign-in form comes back and that the
    session's cookie, sent again, gets 401 (the server ended the session, not only the
    page)."""
    cookie = drv.get_cookie("taskbus_session")
    if not cookie:
        fail("signed in, but the browser holds no taskbus_session cookie")
    drv.find_element(By.ID, "signout").click()
    wait_for(drv, EC.visibility_of_element_located((By.ID, "token")), "the sign-in form after sign-out")
    st, _ = rest("GET", "/v1/me", headers={"Cookie": "taskbus_session=" + cookie["value"]})
    if st != 401:
        fail("the cookie still works after sign-out: %s" % st)
    ok("signed out; the old cookie gets 401")
