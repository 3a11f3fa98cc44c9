#!/usr/bin/python3
"""A producer outside taskbus: Debian's python3-avro encodes, kcat talks to Kafka.

  external_producer.py BOOTSTRAP PREFIX TOKEN GROUP

1. produces a CREATE TaskCommand (single-object encoding) on <PREFIX>task-commands
   with the headers `authorization` and `correlation_id`, and reads the ACCEPTED
   TaskReply for that correlation id from <PREFIX>task-replies;
2. produces a record that is not Avro, with a correlation_id header, and reads
   its REJECTED reply (reason INVALID_ARGUMENT).
Prints one JSON line {"task_id", "version", "malformed_reason"}; exit 0 when both
replies are as expected, 1 otherwise. Uses the same hand-made single-object
framing as avro_interop.py (python-avro 1.11 has none).
"""
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


def produce(bootstrap, topic, key, value, headers):
    with tempfile.NamedTemporaryFile() as f:
        f.write(value)
        f.flush()
        # murmur2: the partitioner taskbus (and the Java client) uses, so a
        # task's commands land on the partition of its events
        cmd = ["kcat", "-P", "-b", bootstrap, "-t", topic, "-k", key, "-X", "acks=all",
               "-X", "partitioner=murmur2_random"]
        for k, v in headers.items():
            cmd += ["-H", "%s=%s" % (k, v)]
        subprocess.run(cmd + [f.name], check=True)


def read_reply(bootstrap, topic, correlation_id, schema, timeout_s=60):
    """Scan task-replies (keyed by correlation id) until our reply shows up."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        out = subprocess.run(
            ["kcat", "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-q",
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
    if len(argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    bootstrap, prefix, token, group = argv[1:]
    schemas = load_schemas()
    cmd_topic, reply_topic = prefix + "task-commands", prefix + "task-replies"

    task_id, corr = str(uuid.uuid4()), str(uuid.uuid4())
    body = {"name": "from-python", "script": "echo made by an external producer",
            "security_group": group, "schedule": {"cron": "0 3 * * *", "timezone": "Europe/Paris"}}
    command = {"command_id": str(uuid.uuid4()), "correlation_id": corr, "type": "CREATE",
               "task_id": task_id, "expected_version": None, "task": json.dumps(body),
               "requested_at": int(time.time() * 1000)}
    produce(bootstrap, cmd_topic, task_id, encode(schemas["TaskCommand"], command),
            {"authorization": "Bearer " + token, "correlation_id": corr})
    reply = read_reply(bootstrap, reply_topic, corr, schemas["TaskReply"])
    ok = reply["status"] == "ACCEPTED" and reply["task_id"] == task_id and reply["version"] == 1

    bad_corr = str(uuid.uuid4())
    produce(bootstrap, cmd_topic, "not-avro", b"this is not an Avro record",
            {"authorization": "Bearer " + token, "correlation_id": bad_corr})
    bad = read_reply(bootstrap, reply_topic, bad_corr, schemas["TaskReply"])
    ok = ok and bad["status"] == "REJECTED" and bad["reason"] == "INVALID_ARGUMENT"

    print(json.dumps({"task_id": task_id, "version": reply["version"], "status": reply["status"],
                      "reason": reply["reason"], "message": reply["message"], "field": reply["field"],
                      "malformed_status": bad["status"], "malformed_reason": bad["reason"],
                      "malformed_message": bad["message"]}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
