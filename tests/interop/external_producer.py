#!/usr/bin/python3
"""A producer outside taskbus: Debian's python3-avro encodes, python3-confluent-kafka
produces, kcat reads the replies, the standard library signs.

  external_producer.py BOOTSTRAP PREFIX TOKEN GROUP USER

1. produces a CREATE TaskCommand (single-object encoding) on <PREFIX>task-commands,
   signed with the token's signing key (headers `tb-principal`, `tb-auth`, see
   docs/kafka-interface.md "Signing commands") and with `correlation_id`, and reads
   the ACCEPTED TaskReply for that correlation id from <PREFIX>task-replies;
2. produces a record that is not Avro, signed, with a correlation_id header, and
   reads its REJECTED reply (reason INVALID_ARGUMENT);
3. produces a command in the old form (`authorization: Bearer <token>`) and reads
   its REJECTED reply (UNAUTHENTICATED, saying bearer tokens are no longer accepted).
Prints one JSON line {"task_id", "version", "malformed_reason", "old_form_*"}; exit 0
when the replies are as expected, 1 otherwise. TB_KAFKA_PROPS, when set, names a file
of librdkafka properties (key=value lines: SASL, TLS) the producer and kcat both use.
Uses the same hand-made single-object framing as avro_interop.py (python-avro 1.11 has none).
"""
import hashlib
import hmac
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import avro.io  # noqa: E402
from confluent_kafka import Producer  # noqa: E402
from avro_interop import crc64_avro, load_schemas, spec_canonical  # noqa: E402


def encode(schemas, value):
    """schemas: (declared, plain) from load_schemas(): the fingerprint is the
    declared schema's, the datum is written with logical types as plain longs."""
    declared, plain = schemas
    out = io.BytesIO()
    out.write(b"\xc3\x01")
    out.write(crc64_avro(spec_canonical(declared).encode()).to_bytes(8, "little"))
    avro.io.DatumWriter(plain).write(value, avro.io.BinaryEncoder(out))
    return out.getvalue()


def decode(schemas, data):
    declared, plain = schemas
    fp = crc64_avro(spec_canonical(declared).encode()).to_bytes(8, "little")
    if data[:2] != b"\xc3\x01" or data[2:10] != fp:
        raise ValueError("not a single-object message of %s" % declared.fullname)
    return avro.io.DatumReader(plain).read(avro.io.BinaryDecoder(io.BytesIO(data[10:])))


def token_id(token):
    """The public id of a token: "tok_" + the first 12 hex digits of its SHA-256."""
    return "tok_" + hashlib.sha256(token.encode()).hexdigest()[:12]


def sign(token, user, key, value, ts_ms=None):
    """The tb-principal and tb-auth headers of a record (docs/kafka-interface.md)."""
    k_sign = hmac.new(token.encode(), b"taskbus/command-signing/v1", hashlib.sha256).digest()
    kid = token_id(token)
    principal = "user=%s;token=%s" % (user, kid)
    ts = int(time.time() * 1000) if ts_ms is None else ts_ms
    canonical = "\n".join(["taskbus-cmd-v1", kid, principal, str(ts),
                           hashlib.sha256(key).hexdigest(), hashlib.sha256(value).hexdigest()])
    sig = hmac.new(k_sign, canonical.encode(), hashlib.sha256).hexdigest()
    return {"tb-principal": principal, "tb-auth": "v1;kid=%s;ts=%d;sig=%s" % (kid, ts, sig)}


def extra_props():
    """The librdkafka properties of the file TB_KAFKA_PROPS names ({} without it)."""
    path = os.environ.get("TB_KAFKA_PROPS")
    if not path:
        return {}
    props = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                k, _, v = line.partition("=")
                props[k.strip()] = v.strip()
    return props


def kcat_props():
    path = os.environ.get("TB_KAFKA_PROPS")
    return ["-F", path] if path else []


def produce(bootstrap, topic, key, value, headers):
    # murmur2: the partitioner taskbus (and the Java client) uses, so a task's
    # commands land on the partition of its events
    conf = extra_props()
    conf.update({"bootstrap.servers": bootstrap, "acks": "all",
                 "partitioner": "murmur2_random"})
    p = Producer(conf)
    errors = []
    p.produce(topic, key=key.encode(), value=value, headers=list(headers.items()),
              on_delivery=lambda err, msg: err and errors.append(err))
    if p.flush(30) != 0 or errors:
        raise RuntimeError("delivery failed: %s" % errors)


def read_reply(bootstrap, topic, correlation_id, schema, timeout_s=60):
    """Scan task-replies (keyed by correlation id) until our reply shows up."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        out = subprocess.run(
            ["kcat"] + kcat_props() + ["-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-q",
             "-X", "isolation.level=read_committed", "-f", "%K %S\n%k%s"],
            check=True, stdout=subprocess.PIPE).stdout
        pos = 0
        while pos < len(out):
            nl = out.index(b"\n", pos)
            klen, vlen = (int(x) for x in out[pos:nl].split())
            key = out[nl + 1:nl + 1 + klen]
            value = out[nl + 1 + klen:nl + 1 + klen + vlen]
            pos = nl + 1 + klen + vlen
            if key.decode() == correlation_id:
                return decode(schema, value)
        time.sleep(0.5)
    raise TimeoutError("no reply for correlation id %s on %s" % (correlation_id, topic))


def main(argv):
    if len(argv) != 6:
        print(__doc__, file=sys.stderr)
        return 2
    bootstrap, prefix, token, group, user = argv[1:]
    schemas = load_schemas()
    cmd_topic, reply_topic = prefix + "task-commands", prefix + "task-replies"

    task_id, corr = str(uuid.uuid4()), str(uuid.uuid4())
    body = {"name": "from-python", "script": "echo made by an external producer",
            "security_group": group, "schedule": {"cron": "0 3 * * *", "timezone": "Europe/Paris"}}
    command = {"command_id": str(uuid.uuid4()), "correlation_id": corr, "type": "CREATE",
               "task_id": task_id, "expected_version": None, "task": json.dumps(body),
               "requested_at": int(time.time() * 1000), "params": {}}
    value = encode(schemas["TaskCommand"], command)
    produce(bootstrap, cmd_topic, task_id, value,
            dict(sign(token, user, task_id.encode(), value), correlation_id=corr))
    reply = read_reply(bootstrap, reply_topic, corr, schemas["TaskReply"])
    ok = reply["status"] == "ACCEPTED" and reply["task_id"] == task_id and reply["version"] == 1

    bad_corr = str(uuid.uuid4())
    junk = b"this is not an Avro record"
    produce(bootstrap, cmd_topic, "not-avro", junk,
            dict(sign(token, user, b"not-avro", junk), correlation_id=bad_corr))
    bad = read_reply(bootstrap, reply_topic, bad_corr, schemas["TaskReply"])
    ok = ok and bad["status"] == "REJECTED" and bad["reason"] == "INVALID_ARGUMENT"

    old_id, old_corr = str(uuid.uuid4()), str(uuid.uuid4())
    old_cmd = dict(command, command_id=str(uuid.uuid4()), correlation_id=old_corr,
                   task_id=old_id)
    produce(bootstrap, cmd_topic, old_id, encode(schemas["TaskCommand"], old_cmd),
            {"authorization": "Bearer " + token, "correlation_id": old_corr})
    old = read_reply(bootstrap, reply_topic, old_corr, schemas["TaskReply"])
    ok = ok and old["status"] == "REJECTED" and old["reason"] == "UNAUTHENTICATED"

    print(json.dumps({"task_id": task_id, "version": reply["version"], "status": reply["status"],
                      "reason": reply["reason"], "message": reply["message"], "field": reply["field"],
                      "malformed_status": bad["status"], "malformed_reason": bad["reason"],
                      "malformed_message": bad["message"], "old_form_status": old["status"],
                      "old_form_reason": old["reason"], "old_form_message": old["message"]}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
