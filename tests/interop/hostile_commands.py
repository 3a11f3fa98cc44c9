#!/usr/bin/python3
"""Hostile records on task-commands, from a producer that is not taskbus's code.

  hostile_commands.py BOOTSTRAP PREFIX TOKEN GROUP API_URL USER

Uses Debian's python3-confluent-kafka to produce and consume, python3-avro for
the schemas' fingerprints and to decode replies, and builds every TaskCommand
by hand (Avro binary, single-object framing), so that it can write what no
Avro library would: invalid UTF-8, NUL bytes, huge length prefixes, truncated
records, unknown fingerprints, enum indexes out of range.

First a valid CREATE (ACCEPTED) proves the path works. Then each hostile
record is produced, signed as docs/kafka-interface.md says (USER is the
token's user), with a correlation_id header and:
  - its reply must be REJECTED / INVALID_ARGUMENT with the expected `field`
    (and a message containing the expected text);
  - a REST create right after must answer 201 (projected), not 202.
At the end task-events is read from the beginning: its task ids must be
exactly the valid CREATE's and the REST creates' (no event for a hostile
record). Prints one JSON line per case and a summary line; exit 0 when every
check held, 1 otherwise.
"""
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import avro.io  # noqa: E402
import io  # noqa: E402
from avro_interop import crc64_avro, load_schemas, spec_canonical  # noqa: E402
from external_producer import sign  # noqa: E402
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition  # noqa: E402

COMMAND_TYPES = ["CREATE", "UPDATE", "DELETE", "PAUSE", "RESUME", "RUN_NOW"]


# ---- Avro binary, by hand ------------------------------------------------------

def zigzag(n):
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def avro_bytes(b):
    return zigzag(len(b)) + b


def avro_str(s):
    return avro_bytes(s if isinstance(s, bytes) else s.encode("utf-8"))


def fingerprint(schemas, name):
    declared, _ = schemas[name]
    return crc64_avro(spec_canonical(declared).encode()).to_bytes(8, "little")


def command_bytes(fp, command_id, correlation_id, type_index, task_id, expected_version, task,
                  requested_at, params=None):
    """TaskCommand: command_id, correlation_id, type, task_id, expected_version
    (null|long), task (null|string), requested_at (long), params (map of
    strings: one block, then the end)."""
    body = avro_str(command_id) + avro_str(correlation_id) + zigzag(type_index) + avro_str(task_id)
    body += b"\x00" if expected_version is None else b"\x02" + zigzag(expected_version)
    body += b"\x00" if task is None else b"\x02" + avro_str(task)
    body += zigzag(requested_at)
    if params:
        body += zigzag(len(params))
        for k, v in params.items():
            body += avro_str(k) + avro_str(v)
    body += b"\x00"
    return b"\xc3\x01" + fp + body


def decode_reply(schemas, data):
    declared, plain = schemas["TaskReply"]
    if data[:2] != b"\xc3\x01" or data[2:10] != fingerprint(schemas, "TaskReply"):
        raise ValueError("not a TaskReply")
    return avro.io.DatumReader(plain).read(avro.io.BinaryDecoder(io.BytesIO(data[10:])))


# ---- the test -------------------------------------------------------------------

class Bus:
    def __init__(self, bootstrap, prefix, schemas):
        self.schemas = schemas
        self.cmd_topic = prefix + "task-commands"
        self.reply_topic = prefix + "task-replies"
        self.events_topic = prefix + "task-events"
        self.bootstrap = bootstrap
        self.producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                                  # the Java client's partitioner: a task's commands land on
                                  # the partition of its events
                                  "partitioner": "murmur2_random",
                                  "message.max.bytes": 16 * 1024 * 1024})
        self.replies = {}
        self.consumer = Consumer({"bootstrap.servers": bootstrap,
                                  "group.id": "hostile-" + uuid.uuid4().hex,
                                  "auto.offset.reset": "earliest",
                                  "isolation.level": "read_committed",
                                  "enable.auto.commit": False})
        self.consumer.subscribe([self.reply_topic])

    def produce(self, key, value, headers):
        """@returns None when delivered, else the producer's error text."""
        result = {}

        def done(err, _msg):
            result["err"] = err
        try:
            self.producer.produce(self.cmd_topic, key=key, value=value,
                                  headers=list(headers.items()), on_delivery=done)
        except (KafkaException, BufferError) as e:
            return str(e)
        self.producer.flush(60)
        err = result.get("err")
        return None if err is None else err.str()

    def reply(self, correlation_id, timeout_s=90):
        deadline = time.time() + timeout_s
        key = correlation_id.encode() if isinstance(correlation_id, str) else correlation_id
        while key not in self.replies and time.time() < deadline:
            m = self.consumer.poll(0.5)
            if m is None or m.error():
                continue
            self.replies[m.key()] = decode_reply(self.schemas, m.value())
        return self.replies.get(key)

    def event_task_ids(self):
        """Every task id on task-events, from the beginning to the end."""
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "hostile-ev-" + uuid.uuid4().hex,
                      "isolation.level": "read_committed", "enable.auto.commit": False})
        md = c.list_topics(self.events_topic, timeout=30)
        parts = list(md.topics[self.events_topic].partitions)
        ids, ends = [], {}
        for p in parts:
            lo, hi = c.get_watermark_offsets(TopicPartition(self.events_topic, p), timeout=30)
            if hi > lo:
                ends[p] = hi
        c.assign([TopicPartition(self.events_topic, p, 0) for p in ends])
        # the high watermark counts transaction markers too: read until quiet
        deadline, quiet = time.time() + 120, 0
        while ends and time.time() < deadline and quiet < 10:
            m = c.poll(0.5)
            if m is None or m.error():
                quiet += 1
                continue
            quiet = 0
            ids.append(m.key().decode("utf-8", "replace"))
        c.close()
        return ids


def rest_create(api, token, group, name):
    body = json.dumps({"name": name, "script": "/bin/true", "security_group": group,
                       "schedule": {"every": "1h"}}).encode()
    req = urllib.request.Request(api + "/v1/tasks", data=body, method="POST",
                                 headers={"Authorization": "Bearer " + token,
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=90) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def task_json(group, **over):
    t = {"name": "hostile", "script": "echo hi", "security_group": group,
         "schedule": {"every": "1h"}}
    t.update(over)
    return json.dumps(t)


def main(argv):
    if len(argv) != 7:
        print(__doc__, file=sys.stderr)
        return 2
    bootstrap, prefix, token, group, api, user = argv[1:]
    schemas = load_schemas()
    fp = fingerprint(schemas, "TaskCommand")
    bus = Bus(bootstrap, prefix, schemas)
    now = int(time.time() * 1000)

    def hdrs(key, data, corr):
        """A signed record's headers: the hostile part is in the record only."""
        return {**sign(token, user, key, data), "correlation_id": corr.encode()}
    good_ids, failures = [], []

    def cmd(task_id="", task=None, type_index=0, command_id=None, correlation_id=None,
            expected_version=None, requested_at=None, params=None):
        return command_bytes(fp, command_id if command_id is not None else str(uuid.uuid4()),
                             correlation_id if correlation_id is not None else "",
                             type_index, task_id, expected_version, task,
                             now if requested_at is None else requested_at, params)

    # a valid CREATE first: the path works
    ok_id, corr = str(uuid.uuid4()), str(uuid.uuid4())
    data = cmd(ok_id, task_json(group), correlation_id=corr)
    bus.produce(ok_id.encode(), data, hdrs(ok_id.encode(), data, corr))
    r = bus.reply(corr)
    if not r or r["status"] != "ACCEPTED":
        print(json.dumps({"case": "valid CREATE", "reply": r}))
        return 1
    good_ids.append(ok_id)

    valid = cmd("t-valid", task_json(group), correlation_id="x")
    big_id = "a" * 8000
    nested = "[" * 10000 + "]" * 10000
    cases = [
        # (name, key, value (or a function of the correlation id), field, message needle)
        ("task_id of 8,000 characters", big_id, lambda c: cmd(big_id, task_json(group), correlation_id=c),
         "task_id", "task_id: 8000 characters, at most 128 allowed ([A-Za-z0-9._:-])"),
        ("task_id with '/'", "a/b", lambda c: cmd("a/b", task_json(group), correlation_id=c),
         "task_id", "'/' at position 2"),
        ("task_id with a space", "a b", lambda c: cmd("a b", task_json(group), correlation_id=c),
         "task_id", "a space at position 2"),
        ("task_id with a NUL byte", "ab", lambda c: cmd("a\x00b", task_json(group), correlation_id=c),
         "task_id", "a NUL byte at position 2"),
        ("task_id not UTF-8", "x", lambda c: cmd(b"\xff\xfe", task_json(group), correlation_id=c),
         "task_id", "not valid UTF-8"),
        ("name with \\u0000", "t-nul-name", lambda c: cmd("t-nul-name", task_json(group, name="a\x00b"),
                                                           correlation_id=c),
         "name", "NUL"),
        ("name not UTF-8", "t-utf8-name",
         lambda c: cmd("t-utf8-name", task_json(group).encode().replace(b'"hostile"', b'"ho\xc3\x28"'),
                       correlation_id=c),
         "task", "not valid UTF-8"),
        ("script not UTF-8", "t-utf8-script",
         lambda c: cmd("t-utf8-script", task_json(group).encode().replace(b"echo hi", b"echo \xff\xfe"),
                       correlation_id=c),
         "task", "not valid UTF-8"),
        ("label value a lone surrogate", "t-surrogate",
         lambda c: cmd("t-surrogate", task_json(group, labels={"k": "X"}).replace('"X"', '"\\udc80"'),
                       correlation_id=c),
         "task", "not valid JSON"),
        ("label value with a control character", "t-ctl-label",
         lambda c: cmd("t-ctl-label", task_json(group, labels={"k": "a\x01b"}), correlation_id=c),
         "labels.k", "control character"),
        ("a raw NUL byte in the task text", "t-raw-nul",
         lambda c: cmd("t-raw-nul", task_json(group) + "\x00{}", correlation_id=c),
         "task", "a NUL byte at byte"),
        ("JSON nested 10,000 deep", "t-deep",
         lambda c: cmd("t-deep", nested, correlation_id=c),
         "task", "nested more than 32 levels"),
        ("negative interval", "t-neg-every",
         lambda c: cmd("t-neg-every", task_json(group, schedule={"every": -5}), correlation_id=c),
         "schedule.every", "negative"),
        ("negative ISO interval", "t-neg-iso",
         lambda c: cmd("t-neg-iso", task_json(group, schedule={"every": "-PT5S"}), correlation_id=c),
         "schedule.every", "schedule.every"),
        ("a one-shot in year 99999", "t-y99999",
         lambda c: cmd("t-y99999", task_json(group, schedule={"once": "99999-01-01T00:00:00Z"}),
                       correlation_id=c),
         "schedule.once", "schedule.once"),
        ("requested_at in year 99999", "t-req",
         lambda c: cmd("t-req", task_json(group), correlation_id=c, requested_at=3093527980800000),
         "requested_at", "is not a time"),
        ("parameter values on a CREATE", "t-params",
         lambda c: cmd("t-params", task_json(group), correlation_id=c, params={"ENV": "prod"}),
         "params", "only a RUN_NOW takes parameter values"),
        ("negative expected_version", "t-ver",
         lambda c: cmd("t-ver", task_json(group), correlation_id=c, type_index=1, expected_version=-7),
         "expected_version", "negative"),
        ("command_id of 8,000 characters", "t-cmdid",
         lambda c: cmd("t-cmdid", task_json(group), correlation_id=c, command_id="c" * 8000),
         "command_id", "command_id: 8000 characters, at most 128"),
        ("enum index out of range", "t-enum",
         lambda c: cmd("t-enum", task_json(group), correlation_id=c, type_index=41),
         "type", "enum index"),
        ("a string length prefix of 2^62", "t-len",
         lambda c: b"\xc3\x01" + fp + zigzag(1 << 62) + b"abc",
         "command_id", "exceeds"),
        ("truncated Avro", "t-valid", lambda c: valid[:len(valid) // 2],
         "task", "TaskCommand"),
        ("a wrong schema fingerprint", "t-fp", lambda c: b"\xc3\x01" + b"\x01" * 8 + valid[10:],
         "fingerprint", "unknown schema fingerprint"),
        ("garbage", "t-garbage", lambda c: b"\x00" + os.urandom(299),
         None, "not a TaskCommand"),
    ]
    huge_task = task_json(group, script="x" * (10 * 1024 * 1024))

    def try_huge(c):
        return cmd("t-huge", huge_task, correlation_id=c)
    cases.insert(12, ("10 MiB of JSON", "t-huge", try_huge, "task", "bytes of JSON"))

    for name, key, value, field, needle in cases:
        corr = str(uuid.uuid4())
        data = value(corr)
        kb = key.encode("utf-8", "surrogateescape")
        err = bus.produce(kb, data, hdrs(kb, data, corr))
        out = {"case": name, "bytes": len(data)}
        if err and name == "10 MiB of JSON":
            # the broker's message.max.bytes stops it before taskbus sees it:
            # send the largest record it takes instead (still over 256 KiB)
            out["broker"] = err
            data = cmd("t-huge", task_json(group, script="x" * (900 * 1024)), correlation_id=corr)
            out["bytes"] = len(data)
            err = bus.produce(key.encode(), data, hdrs(key.encode(), data, corr))
        if err:
            out["produce_error"] = err
            failures.append(name)
            print(json.dumps(out))
            continue
        r = bus.reply(corr)
        out["reply"] = None if r is None else {k: r[k] for k in ("status", "reason", "field", "message")}
        ok = (r is not None and r["status"] == "REJECTED" and r["reason"] == "INVALID_ARGUMENT"
              and r["field"] == field and needle in r["message"] and r["version"] is None)
        status, body = rest_create(api, token, group, "after " + name)
        out["rest_status"] = status
        if status == 201:
            good_ids.append(body["id"])
        ok = ok and status == 201
        out["ok"] = ok
        if not ok:
            failures.append(name)
        print(json.dumps(out))

    events = bus.event_task_ids()
    foreign = sorted(set(events) - set(good_ids))
    if foreign or sorted(events) != sorted(good_ids):
        failures.append("task-events")
    print(json.dumps({"cases": len(cases), "failures": failures, "events": len(events),
                      "expected_events": len(good_ids),
                      "foreign_event_ids": [i[:40] for i in foreign]}))
    bus.consumer.close()
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
