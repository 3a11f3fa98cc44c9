#!/usr/bin/python3
"""Hostile records from a producer outside taskbus: Debian's python3-avro
encodes (hand-made single-object framing, as in avro_interop.py), kcat talks
to Kafka. Every record of one call goes to ONE partition, in order, in one
kcat run (so the consumer sees them in one batch, between good records).

  hostile_records.py events BOOTSTRAP TOPIC PARTITION
      TaskEvents: good-a, an 8,000-character task_id (index row size),
      truncated Avro, an `at` no timestamp can hold (out of range), a task
      named "forbidden by check" (the test adds a CHECK refusing it), a task
      name with a NUL inside (jsonb refuses \u0000), an actor that is not
      UTF-8 (bytes patched into the encoding), good-b.
  hostile_records.py runresults BOOTSTRAP TOPIC PARTITION
      RunResults: a good one (run q-run-good), truncated Avro, not Avro at all,
      a good one (run q-run-good-2).
  hostile_records.py runs BOOTSTRAP TOPIC PARTITION
      RunRequests: truncated Avro, JSON instead of Avro.
  hostile_records.py runrequests BOOTSTRAP TOPIC PARTITION NOMINAL_MS
      RunRequests of valid Avro with impossible values (empty and 5,000-character
      ids, times before 1970 and past 9999, attempt -3, an executor no one has,
      NUL inside the script and the run id, expiry -1 and 2^62, an unknown
      overlap policy), the same truncated, garbage, then good run h-good.
  hostile_records.py badevents BOOTSTRAP TOPIC PARTITION
      TaskEvents of valid Avro whose schedule cannot be kept (every 0 ms, every
      -1 s, EVERY without a period, cron 99 99 * * *, zone Mars/Olympus, ONCE
      without a time), a 300-character task id, a truncated one, then good task
      h-ev-good (every second, shell `true`).
  hostile_records.py checkpoints BOOTSTRAP TOPIC PARTITION
      A SchedulerCheckpoint that is garbage after the magic bytes.
  hostile_records.py commands BOOTSTRAP TOPIC PARTITION
      TaskCommands: truncated Avro, garbage after a valid single-object marker.
  hostile_records.py logs BOOTSTRAP TOPIC PARTITION RUN_ID
      LogChunks of RUN_ID: seq 0, garbage, truncated Avro, an `at` out of
      range, seq 1.

Prints one JSON line: {"records": [{"name", "offset_in_call", "task_id"...}]}.
"""
import json
import os
import random
import string
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from avro_interop import load_schemas, load_values  # noqa: E402
from external_producer import encode  # noqa: E402  (single-object encoding)

HUGE_MS = 2 ** 62  # no PostgreSQL timestamp is this many ms after 1970


def produce(bootstrap, topic, partition, key, values, headers):
    """One kcat run, one message per file, in order, on one partition."""
    with tempfile.TemporaryDirectory() as d:
        files = []
        for i, v in enumerate(values):
            fn = os.path.join(d, "%03d.bin" % i)
            with open(fn, "wb") as f:
                f.write(v)
            files.append(fn)
        cmd = ["kcat", "-P", "-b", bootstrap, "-t", topic, "-p", str(partition), "-k", key,
               "-X", "acks=all", "-X", "linger.ms=50"]
        for k, v in headers.items():
            cmd += ["-H", "%s=%s" % (k, v)]
        subprocess.run(cmd + files, check=True)


def main(argv):
    mode, bootstrap, topic, partition = argv[1], argv[2], argv[3], int(argv[4])
    schemas = load_schemas()
    values = load_values(schemas)
    recs = []
    if mode == "events":
        base = dict(values["TaskEvent"][0])
        base["task"] = dict(base["task"], home_region="")  # paused: it never fires
        base["epoch"] = 0
        sch = schemas["TaskEvent"]

        def ev(task_id, **kw):
            v = dict(base, task_id=task_id, event_id="ev-" + task_id[:40] + "-%d" % len(task_id))
            for k, val in kw.items():
                if k == "name":
                    v["task"] = dict(v["task"], name=val)
                else:
                    v[k] = val
            return encode(sch, v)

        long_id = "".join(random.choice(string.ascii_letters + string.digits)
                          for _ in range(8000))
        good = ev("q-trunc")
        recs = [("good-a", "q-good-a", ev("q-good-a")),
                ("long-id", long_id, ev(long_id)),
                ("truncated", "q-trunc", good[: len(good) // 2]),
                ("range", "q-range", ev("q-range", at=HUGE_MS)),
                ("check", "q-check", ev("q-check", name="forbidden by check")),
                ("nul", "q-nul", ev("q-nul", name="nul\x00inside")),
                ("utf8", "q-utf8", ev("q-utf8", actor="ZZZZ").replace(b"ZZZZ", b"\xff\xfe\xc3\x28")),
                ("good-b", "q-good-b", ev("q-good-b"))]
    elif mode == "runresults":
        sch = schemas["RunResult"]
        base = values["RunResult"][0]
        good = encode(sch, dict(base, run_id="q-run-good"))
        recs = [("good", "q-run-good", good),
                ("truncated", "q-run-trunc", good[:-7]),
                ("garbage", "", b"\x00\xffnot avro at all\x01"),
                ("good-2", "q-run-good-2", encode(sch, dict(base, run_id="q-run-good-2")))]
    elif mode == "logs":
        run_id = argv[5]
        sch = schemas["LogChunk"]
        base = dict(values["LogChunk"][0], run_id=run_id)
        c0 = encode(sch, dict(base, seq=0))
        recs = [("seq0", run_id, c0),
                ("garbage", run_id, b"\xc3\x01garbage"),
                ("truncated", run_id, c0[:12]),
                ("range", run_id, encode(sch, dict(base, seq=7, at=HUGE_MS))),
                ("seq1", run_id, encode(sch, dict(base, seq=1)))]
    elif mode == "runs":
        good = encode(schemas["RunRequest"], values["RunRequest"][0])
        recs = [("truncated", "q-runreq-trunc", good[: len(good) - 5]),
                ("garbage", "q-runreq-garbage", b"{\"run_id\": \"json, not avro\"}")]
    elif mode == "runrequests":
        # valid Avro, impossible values; then the same truncated and as garbage;
        # the last one is a good run (it must still run)
        sch = schemas["RunRequest"]
        base = dict(values["RunRequest"][0], attempt=1)
        snap = dict(base["snapshot"], script="true", expiry_ms=60000, security_group="g")

        def rr(run_id, task_id, top=None, **kw):
            v = dict(base, run_id=run_id, task_id=task_id, nominal_time=int(argv[5]),
                     snapshot=dict(snap, **kw))
            v.update(top or {})
            return encode(sch, v)

        good = rr("h-good", "h-good-task")
        recs = [("empty-run-id", "h-empty", rr("", "h-empty")),
                ("long-run-id", "h-long", rr("h" * 5000, "h-long")),
                ("empty-task-id", "", rr("h-no-task", "")),
                ("negative-time", "h-neg", rr("h-neg", "h-neg", {"nominal_time": -5})),
                ("huge-time", "h-huge", rr("h-huge", "h-huge", {"nominal_time": HUGE_MS})),
                ("zero-attempt", "h-att", rr("h-att", "h-att", {"attempt": -3})),
                ("unknown-executor", "h-exec", rr("h-exec", "h-exec", executor="teleporter")),
                ("nul-script", "h-nul", rr("h-nul", "h-nul", script="echo a\x00rm -rf /")),
                ("nul-run-id", "h-nulid", rr("h-nul\x00id", "h-nulid")),
                ("negative-expiry", "h-exp", rr("h-exp", "h-exp", expiry_ms=-1)),
                ("huge-expiry", "h-hexp", rr("h-hexp", "h-hexp", expiry_ms=HUGE_MS)),
                ("bad-overlap", "h-ovl", rr("h-ovl", "h-ovl", overlap="SOMETIMES")),
                ("truncated", "h-trunc", good[: len(good) - 9]),
                ("garbage", "h-garbage", b"\xc3\x01" + b"\x00" * 8 + b"garbage"),
                ("good", "h-good-task", good)]
    elif mode == "badevents":
        # TaskEvents (valid Avro) whose schedule no scheduler can keep, each a
        # task that would fire every second if it were accepted; then a good one
        sch = schemas["TaskEvent"]
        now = int(time.time() * 1000)  # created now: nothing missed to catch up on
        base = dict(values["TaskEvent"][0], epoch=0, version=1, type="CREATED", at=now,
                    created_at=now)
        spec = dict(base["task"], home_region="", paused=False, executor="shell",
                    executor_options={}, script="true", argv=[], expires_at=None,
                    security_group="g", misfire="SKIP", overlap="ALLOW",
                    # a plain task: values.json's names calendars and parents
                    # this stack does not have (its fires would be skipped or
                    # wait for the parents)
                    calendars=[], after=[], after_deadline_ms=None, parameters=[],
                    notify=[])
        every = dict(spec["schedule"], kind="EVERY", cron=None, every_ms=1000,
                     start_at=None, jitter_ms=0, timezone="UTC")

        def ev(task_id, **sched):
            t = dict(spec, schedule=dict(every, **sched))
            return encode(sch, dict(base, task_id=task_id, event_id="ev-" + task_id, task=t))

        recs = [("every-zero", "h-ev-zero", ev("h-ev-zero", every_ms=0)),
                ("every-negative", "h-ev-neg", ev("h-ev-neg", every_ms=-1000)),
                ("every-null", "h-ev-null", ev("h-ev-null", every_ms=None)),
                ("cron-impossible", "h-ev-cron", ev("h-ev-cron", kind="CRON", every_ms=None,
                                                    cron="99 99 * * *")),
                ("cron-zone", "h-ev-zone", ev("h-ev-zone", kind="CRON", every_ms=None,
                                              cron="* * * * *", timezone="Mars/Olympus")),
                ("once-null", "h-ev-once", ev("h-ev-once", kind="ONCE", every_ms=None,
                                              once_at=None)),
                ("long-id", "h" * 300, ev("h" * 300)),
                ("truncated", "h-ev-trunc", ev("h-ev-trunc")[:40]),
                ("good", "h-ev-good", ev("h-ev-good"))]
    elif mode == "checkpoints":
        recs = [("garbage", "q-ck", b"\xc3\x01\x00\x00 not a checkpoint")]
    elif mode == "commands":
        good = encode(schemas["TaskCommand"], values["TaskCommand"][0])
        recs = [("truncated", "q-cmd-trunc", good[:20]),
                ("garbage", "q-cmd-garbage", b"\xc3\x01" + b"\xff" * 40)]
    else:
        print("unknown mode " + mode, file=sys.stderr)
        return 2
    produce(bootstrap, topic, partition, "hostile", [r[2] for r in recs],
            {"x-origin": "hostile_records.py", "x-\xe9": "h\xe9ader"})
    print(json.dumps({"records": [{"name": n, "id": i if len(i) < 100 else i[:12] + "...",
                                   "bytes": len(b)} for n, i, b in recs],
                      "long_id": recs[1][1] if mode == "events" else ""}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
