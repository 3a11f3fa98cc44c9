"""Schemathesis hooks for the taskbus API test (tests/integration/test_schemathesis.c).

schemas/openapi.yaml states every rule of a request that a schema can state:
lengths, character sets, patterns, "exactly one of". A few rules depend on
something no schema can know, and the server rightly enforces them:

  * an instant must not be in the past (schedule.once, execution_time,
    expires_at) and end_at must follow start_at;
  * a cron expression must fire some day (not February 30th), a time zone
    must exist in the IANA database, a duration must be within its range
    (expiry up to 7 days, jitter shorter than the period...);
  * a cursor is valid only if this API issued it.

Only for the cases schemathesis generates as schema-VALID (positive mode),
this hook replaces those values with ones that satisfy the rule, so the
positive_data_acceptance check tests everything else. Negative cases are
never touched, and schemathesis re-validates an edited case against the
schema, so an edit cannot turn a positive case into a negative one unseen.
"""
import datetime

import schemathesis

_TASK_OPERATIONS = {"createTask", "replaceTask", "replaceTaskPost", "createTaskSeed",
                    "replaceTaskSeed", "replaceTaskPostSeed"}


def _at(delta):
    t = datetime.datetime.now(datetime.timezone.utc) + delta
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _positive(case):
    meta = getattr(case, "meta", None)
    return meta is not None and meta.generation.mode.is_positive


def _fix_task(body):
    day = datetime.timedelta(days=1)
    if "execution_time" in body:
        body["execution_time"] = _at(day)
    if body.get("expires_at") is not None:
        body["expires_at"] = _at(60 * day)
    for field, value in (("expiry", "PT30M"), ("jitter", "PT0S"), ("log_retention", "P7D")):
        if field in body:
            body[field] = value
    sched = body.get("schedule")
    if isinstance(sched, dict):
        if "once" in sched:
            sched["once"] = _at(day)
        if "every" in sched:
            sched["every"] = "PT5M"
        if "cron" in sched:
            sched["cron"] = "0 3 * * *"
        if "timezone" in sched:
            sched["timezone"] = "Europe/Paris"
        if sched.get("start_at") is not None:
            sched["start_at"] = _at(datetime.timedelta(hours=1))
        if sched.get("end_at") is not None:
            sched["end_at"] = _at(30 * day)
    retries = body.get("retries")
    if isinstance(retries, dict):
        if "backoff" in retries:
            retries["backoff"] = "PT10S"
        if "backoff_max" in retries:
            retries["backoff_max"] = "PT10M"


@schemathesis.hook
def before_call(ctx, case, kwargs):
    if not _positive(case):
        return
    if isinstance(case.query, dict) and "cursor" in case.query:
        del case.query["cursor"]
    op = case.operation.definition.raw.get("operationId")
    if op in _TASK_OPERATIONS and isinstance(case.body, dict):
        _fix_task(case.body)
