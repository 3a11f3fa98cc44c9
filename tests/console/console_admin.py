#!/usr/bin/python3
"""The console's admin screens in headless Chromium (run by
tests/integration/test_console_admin.c).

Environment: TB_URL (the API), TB_ADMIN (the token of root, a member of
api.admin_group), TB_OTHER (the token of bob, who is not), TB_SHOTS (a folder for
the screenshots of each step: test artefacts, not committed). Needs Debian's
chromium, chromium-driver and python3-selenium; any of them missing is a failure.
Prints one "ok ..." line per check and "PASS console_admin" at the end; exits 1 on
the first failed check.
"""
import os
import re

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC

import console_common
from console_common import URL, browser, fail, ok, rest, sign_in, text_of, wait_for

ADMIN = os.environ["TB_ADMIN"]
OTHER = os.environ["TB_OTHER"]
SHOTS = os.environ["TB_SHOTS"]


def shot(drv, name):
    drv.save_screenshot(os.path.join(SHOTS, name + ".png"))


def new_token(drv, user):
    """The token the page shows once after a create: (token, its id)."""
    wait_for(drv, EC.visibility_of_element_located((By.ID, "new-token")), "the new token")
    token = drv.find_element(By.ID, "new-token").get_attribute("value")
    if not re.fullmatch(r"tbk_[0-9a-f]{64}", token or ""):
        fail("the page shows no token: %r" % token)
    if drv.switch_to.active_element.get_attribute("id") != "new-token":
        fail("the new token does not have the keyboard focus")
    if "only this once" not in text_of(drv, "#new-token-warning"):
        fail("no warning that the token is shown once: %r" % text_of(drv, "#new-token-warning"))
    if "for " + user not in text_of(drv, "#new-token-title"):
        fail("the token's heading does not name %s: %r" % (user, text_of(drv, "#new-token-title")))
    m = re.search(r"\((tok_[0-9a-f]{12})\)", text_of(drv, "#new-token-title"))
    if not m:
        fail("the token's heading has no token id: %r" % text_of(drv, "#new-token-title"))
    drv.find_element(By.ID, "new-token-copy").click()
    wait_for(drv, lambda d: "Copied" in text_of(d, "#new-token-copied"), "the copy button")
    return token, m.group(1)


def expect_me(token, status, user=None):
    st, me = rest("GET", "/v1/me", token)
    if st != status or (user and me.get("user") != user):
        fail("GET /v1/me with the token: %s %s (expected %s %s)" % (st, me, status, user or ""))
    return me


def main():
    console_common.need_browser()
    os.makedirs(SHOTS, exist_ok=True)
    console_common.FAILURE_SHOT = os.path.join(SHOTS, "failure.png")
    drv = browser()
    try:
        sign_in(drv, ADMIN, "root")
        wait_for(drv, EC.visibility_of_element_located((By.ID, "nav-admin")), "the Admin link for an admin")
        drv.find_element(By.ID, "nav-admin").click()
        wait_for(drv, EC.presence_of_element_located((By.CSS_SELECTOR, "#users tr[data-user=root]")),
                 "the users table")
        if text_of(drv, "h1") != "Users" or drv.switch_to.active_element.get_attribute("id") != "main":
            fail("the users page has no h1 'Users' or the main content has not the focus")
        ok("an admin sees the Admin link; it opens the users page")

        # a bad name first: the API's error is shown on the field it names
        drv.find_element(By.ID, "u-id").send_keys("bad name")
        drv.find_element(By.ID, "u-groups").send_keys("ge" + Keys.ENTER)
        wait_for(drv, lambda d: d.find_element(By.ID, "u-id").get_attribute("aria-invalid") == "true",
                 "the id field marked invalid")
        if "invalid" not in text_of(drv, "#u-id-error") or \
                "u-id-error" not in drv.find_element(By.ID, "u-id").get_attribute("aria-describedby"):
            fail("the id's error is not shown on it: %r" % text_of(drv, "#u-id-error"))
        ok("a bad user id shows the API's message on the field")

        # create erin with the keyboard; her first token is shown once
        field = drv.find_element(By.ID, "u-id")
        field.clear()
        field.send_keys("erin")
        groups = drv.find_element(By.ID, "u-groups")
        groups.clear()
        groups.send_keys("ge, gf" + Keys.ENTER)
        token, _ = new_token(drv, "erin")
        wait_for(drv, EC.presence_of_element_located((By.CSS_SELECTOR, "#users tr[data-user=erin]")),
                 "erin in the users table")
        shot(drv, "01-user-created")
        me = expect_me(token, 200, "erin")
        if me.get("groups") != ["ge", "gf"]:
            fail("erin's groups: %s" % me)
        ok("the user created in the screen has a token that works against the API")

        # the token is gone once the page changes; the tokens page lists ids only
        drv.get(URL + "/ui/#/admin/tokens?user=erin")
        wait_for(drv, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#tokens tr[data-token-id]")) == 1,
                 "erin's token in the list")
        if token in drv.page_source or "tbk_" in drv.page_source:
            fail("a token is shown again")
        ok("the token is not shown again: the list has its id only")

        drv.find_element(By.ID, "t-expires").send_keys("2h" + Keys.ENTER)
        token2, token2_id = new_token(drv, "erin")
        wait_for(drv, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#tokens tr[data-token-id]")) == 2,
                 "two tokens in the list")
        expect_me(token2, 200, "erin")
        shot(drv, "02-token-created")
        ok("a second token, expiring in 2 h, is created in the screen and works")

        # revoke it: cancelling the confirmation does nothing, accepting revokes
        row = "#tokens tr[data-token-id=%s]" % token2_id
        drv.find_element(By.CSS_SELECTOR, row + " button").click()
        dlg = wait_for(drv, EC.visibility_of_element_located((By.ID, "confirm")),
                       "the revoke confirmation")
        if token2_id not in dlg.text:
            fail("the confirmation does not name the token: %r" % dlg.text)
        drv.find_element(By.ID, "confirm-cancel").click()
        wait_for(drv, EC.invisibility_of_element_located((By.ID, "confirm")),
                 "the confirmation closed")
        expect_me(token2, 200, "erin")
        drv.find_element(By.CSS_SELECTOR, row + " button").click()
        wait_for(drv, EC.visibility_of_element_located((By.ID, "confirm-ok")),
                 "the revoke confirmation again").click()
        wait_for(drv, lambda d: "revoked" in text_of(d, row), "the token shown revoked")
        expect_me(token2, 401)
        expect_me(token, 200, "erin")
        shot(drv, "03-token-revoked")
        ok("revoke asks first; then the token gets 401 and the other one still works")

        # the admin log shows what root did, filterable
        drv.get(URL + "/ui/#/admin/audit")
        wait_for(drv, lambda d: "token.revoke" in text_of(d, "#audit"), "the admin log")
        first = drv.find_element(By.CSS_SELECTOR, "#audit tbody tr").text
        if "root" not in first or "token.revoke" not in first or token2_id not in first:
            fail("the newest entry is not root's revoke of %s: %r" % (token2_id, first))
        drv.find_element(By.ID, "a-action").send_keys("user.create" + Keys.ENTER)
        wait_for(drv, lambda d: "token.revoke" not in text_of(d, "#audit") and
                 "erin" in text_of(d, "#audit"), "the action filter")
        shot(drv, "04-admin-log")
        ok("the admin log lists root's actions, newest first, and filters by action")

        console_common.sign_out(drv)

        # bob is not an admin: no link, and the page shows the API's 403
        sign_in(drv, OTHER, "bob")
        if drv.find_element(By.ID, "nav-admin").is_displayed():
            fail("a non-admin sees the Admin link")
        drv.get(URL + "/ui/#/admin/users")
        wait_for(drv, lambda d: "not an admin" in text_of(d, "#admin-denied"), "the 403 message")
        if "erin" in text_of(drv, "main"):
            fail("a non-admin sees the users")
        st, _ = rest("GET", "/v1/admin/users", OTHER)
        if st != 403:
            fail("GET /v1/admin/users as bob: %s" % st)
        shot(drv, "05-not-an-admin")
        ok("a non-admin sees no Admin link, and the admin pages show the API's 403")
    finally:
        drv.quit()
    print("PASS console_admin", flush=True)


if __name__ == "__main__":
    main()
