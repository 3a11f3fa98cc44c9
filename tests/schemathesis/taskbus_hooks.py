"""Schemathesis hooks for the taskbus API test (tests/integration/test_schemathesis.c).

schemas/openapi.yaml states every rule of a request that a schema can state:
lengths, character sets, patterns, "exactly one of". A few rules depend on
something no schema can know, and the server rightly enforces them:

  * an instant must not be in the past (schedule.once, execution_time,
    expires_at) and end_at must follow start_at;
  * a cron expression must fire some day (not February 30th), a time zone
    must exist in the IANA database, a duration must be within its range
    (expiry up to 7 days, jitter shorter than the period...);
  * an executor must be one whose plugin is loaded (shell always is), and
    home_region a region of this deployment (TB_ST_REGION, the API's
    region; another one is answered 307 or 421);
  * a cursor is valid only if this API issued it;
  * a schedule preview's from and anchor are instants after 1970;
  * JSON integers must fit in 64 bits and object keys hold no NUL (the
    server's JSON parser), also inside the ignored read-only fields the
    schema leaves untyped;
  * a sign-in (createSession) succeeds only with a token the server issued:
    the positive cases sign in with the test's own (TB_ST_TOKEN), so that
    the 201 answer and its body are checked too;
  * a token's `expires` (adminCreateToken) must be a duration ("90d"); and
    the admin routes must leave the test's own user (TB_ST_USER, an admin)
    as it is: a positive case naming it is pointed at another user;
  * argv[0] must not be empty (OpenAPI 3.0 cannot single out one item);
  * a task's after names existing tasks of the caller's groups, without a
    cycle, and only then may after_mode and after_deadline be given, with a
    cron schedule (docs/scheduling.md "Dependencies"): the positive cases
    drop the three (test_dependencies covers them);
  * a range of runs (/v1/runs/counts, /v1/runs/fire-lag) must end after it
    starts, the fire lag's span at most 24 h, and the next fires
    (/v1/runs/upcoming) end between now and 7 days ahead;
  * a task's occurrences (listOccurrences) and a backfill step
    (backfillTask) cover a range that ends after it starts, at most 10,000
    fires long (a minute holds at most 60), a backfill's in the past, and a
    backfill's max_parallel above 1 needs the task's overlap to be allow
    (the case's task may have any: 1 is accepted by every one);
  * a calendar (putCalendar) is stored only from an iCalendar file the
    strict reader accepts, in one of the caller's groups (ops),
    with a zone and weekend that exist: the positive cases send a fixed
    holiday file, the test's group and neither If-Match nor If-None-Match;
  * a task's parameters (TaskParameter) have unique names that are not
    reserved, a pattern that compiles, and a default and allowed values of
    their type that match the pattern: the positive cases get declarations
    built from the generated ones that keep those rules; and a run now
    (runTask) may give values only for the parameters its task declares
    (the case's task declares none): the positive cases send none;
  * a task's calendars (and a preview's) must exist in its group, each
    named once, and not roll both ways: the positive cases name the one
    calendar the test creates (st-hol) with their first rule;
  * label keys and executor option names have a character set the schema
    states with propertyNames, a JSON Schema keyword OpenAPI 3.0 does not
    have, so schemathesis does not generate by it.

Only for the cases schemathesis generates as schema-VALID (positive mode),
this hook replaces those values with ones that satisfy the rule, so the
positive_data_acceptance check tests everything else. Negative cases are
never touched, and schemathesis re-validates an edited case against the
schema, so an edit cannot turn a positive case into a negative one unseen.
"""
import datetime
import os
import re

import schemathesis

_TASK_OPERATIONS = {"createTask", "replaceTask", "replaceTaskPost", "createTaskSeed",
                    "replaceTaskSeed", "replaceTaskPostSeed"}


# the bounds of the run ranges, relative to now, that the server accepts
_RANGE_OPERATIONS = {
    "countRuns": (("since", datetime.timedelta(days=-1)), ("until", datetime.timedelta(hours=1))),
    "runsFireLag": (("since", datetime.timedelta(minutes=-30)), ("until", datetime.timedelta(0))),
    "upcomingFires": (("until", datetime.timedelta(days=1)),),
    "listOccurrences": (("from", datetime.timedelta(minutes=-2)),
                        ("to", datetime.timedelta(minutes=-1))),
}

_CALENDAR = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nDTSTART;VALUE=DATE:20261225\r\n"
             "RRULE:FREQ=YEARLY\r\nSUMMARY:Christmas\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")

_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]")


def _at(delta):
    t = datetime.datetime.now(datetime.timezone.utc) + delta
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _positive(case):
    meta = getattr(case, "meta", None)
    return meta is not None and meta.generation.mode.is_positive


def _fix_task(body):
    day = datetime.timedelta(days=1)
    for field in ("after", "after_mode", "after_deadline"):
        body.pop(field, None)
    if body.get("home_region") is not None:
        body["home_region"] = os.environ.get("TB_ST_REGION", "local")
    if body.get("execution_time") is not None:
        body["execution_time"] = _at(day)
    if body.get("expires_at") is not None:
        body["expires_at"] = _at(60 * day)
    for field, value in (("expiry", "PT30M"), ("jitter", "PT0S"), ("log_retention", "P7D")):
        if body.get(field) is not None:
            body[field] = value
    sched = body.get("schedule")
    if isinstance(body.get("labels"), dict):
        body["labels"] = {(re.sub(r"[^A-Za-z0-9._/-]", "", k)[:63] or "k%d" % i): v
                          for i, (k, v) in enumerate(body["labels"].items())}
    if isinstance(body.get("executor_options"), dict):
        body["executor_options"] = {(_CONTROLS.sub("", k) or "o%d" % i): v
                                    for i, (k, v) in enumerate(body["executor_options"].items())}
    cals = body.get("calendars")
    if isinstance(cals, list) and cals:
        rule = cals[0].get("rule") if isinstance(cals[0], dict) else None
        body["calendars"] = [{"calendar": "st-hol", "rule": rule or "EXCLUDE"}]
    argv = body.get("argv")
    if isinstance(argv, list) and argv and argv[0] == "":
        argv[0] = "true"
    if body.get("executor") is not None:
        body["executor"] = "shell"
    if isinstance(body.get("parameters"), list):
        body["parameters"] = [_fix_parameter(i, p) for i, p in enumerate(body["parameters"])
                              if isinstance(p, dict)]
    if isinstance(sched, dict):
        for key, value in (("once", _at(day)), ("every", "PT5M"), ("cron", "0 3 * * *"),
                           ("timezone", "Europe/Paris"),
                           ("start_at", _at(datetime.timedelta(hours=1))),
                           ("end_at", _at(30 * day))):
            if sched.get(key) is not None:
                sched[key] = value
    # notify: after_ms goes with long_running (a rule the schema cannot say)
    for rule in body.get("notify") or []:
        if isinstance(rule, dict) and isinstance(rule.get("on"), list):
            if "long_running" in rule["on"]:
                rule["after_ms"] = 60000
            else:
                rule.pop("after_ms", None)
    retries = body.get("retries")
    if isinstance(retries, dict):
        if retries.get("backoff") is not None:
            retries["backoff"] = "PT10S"
        if retries.get("backoff_max") is not None:
            retries["backoff_max"] = "PT10M"
    _fit_json(body)


def _fix_parameter(i, p):
    """A declaration the server accepts, of the generated one's type and
    with its optional members present or absent as generated."""
    kind = str(p.get("type") or "STRING").upper()
    value = {"INT": "42", "BOOL": "true"}.get(kind, "v")
    out = {"name": "P%d" % i}
    if p.get("type") is not None:
        out["type"] = kind
    for key, fixed in (("default", value), ("pattern", ".*"), ("allowed", [value]),
                       ("description", "d")):
        if key in p:
            out[key] = None if p[key] is None else fixed
    return out


def _fit_json(value):
    """The server's JSON parser (jansson) holds integers in 64 bits and
    refuses object keys with a NUL byte (400 naming the byte), also inside
    the ignored read-only fields the schema leaves untyped."""
    if isinstance(value, list):
        for i, v in enumerate(value):
            if isinstance(v, int) and not isinstance(v, bool) and not -2**63 <= v < 2**63:
                value[i] = 0
            else:
                _fit_json(v)
    elif isinstance(value, dict):
        for key in list(value):
            v = value.pop(key)
            if isinstance(v, int) and not isinstance(v, bool) and not -2**63 <= v < 2**63:
                v = 0
            else:
                _fit_json(v)
            value[key.replace("\0", "")] = v


@schemathesis.hook
def before_call(ctx, case, kwargs):
    if not _positive(case):
        return
    if isinstance(case.query, dict) and "cursor" in case.query:
        del case.query["cursor"]
    op = case.operation.definition.raw.get("operationId")
    if op == "createSession" and isinstance(case.body, dict) and os.environ.get("TB_ST_TOKEN"):
        case.body["token"] = os.environ["TB_ST_TOKEN"]
    if op in _TASK_OPERATIONS and isinstance(case.body, dict):
        _fix_task(case.body)
    if op == "runTask" and isinstance(case.body, dict) and case.body.get("params") is not None:
        case.body["params"] = {}
    if op == "adminCreateToken" and isinstance(case.body, dict) and \
            case.body.get("expires") is not None:
        case.body["expires"] = "90d"
    me = os.environ.get("TB_ST_USER")
    if me and isinstance(case.path_parameters, dict) and case.path_parameters.get("user") == me:
        case.path_parameters["user"] = me + "-other"
    if op in _RANGE_OPERATIONS and isinstance(case.query, dict):
        for key, delta in _RANGE_OPERATIONS[op]:
            if key in case.query:
                case.query[key] = _at(delta)
    if op == "backfillTask" and isinstance(case.body, dict):
        case.body["from"] = _at(datetime.timedelta(minutes=-2))
        case.body["to"] = _at(datetime.timedelta(minutes=-1))
        if case.body.get("max_parallel") is not None:
            case.body["max_parallel"] = 1
    if op == "putCalendar":
        case.body = _CALENDAR
        if isinstance(case.query, dict):
            case.query["security_group"] = "ops"
            case.query.pop("timezone", None)
            if "weekend" in case.query:
                case.query["weekend"] = "sat,sun"
        for headers in (case.headers, kwargs.get("headers")):
            if headers is not None:
                for key in [k for k in headers if k.lower() in ("if-match", "if-none-match")]:
                    del headers[key]
    if op == "adminNotifyTest":
        case.body = {"channel": "st"}  # the one channel of the test's config
    if op == "previewSchedule" and isinstance(case.body, dict):
        # a schedule as a task's, and instants after 1970 (epoch ms > 0)
        _fix_task(case.body)
        if case.body.get("security_group") is not None:
            case.body["security_group"] = "ops"
        for key in ("from", "anchor"):
            if case.body.get(key) is not None:
                case.body[key] = _at(datetime.timedelta(0))
