#!/usr/bin/python3
"""Interop check between taskbus's C serde and Debian's python3-avro.

Run with /usr/bin/python3 (python3-avro 1.11), never a pyenv python.

  avro_interop.py read DIR     decode DIR/<Schema>.<i>.bin written by C and
                               compare with tests/interop/values.json
  avro_interop.py write DIR    write DIR/<Schema>.<i>.bin (spec fingerprint)
                               and DIR/<Schema>.<i>.legacy.bin (fingerprint of
                               python-avro's own canonical_form) for C to read
  avro_interop.py canonical DIR  write DIR/<Schema>.txt (python-avro's
                               canonical_form, verbatim) and <Schema>.spec.txt

Single-object encoding is done here by hand (python-avro 1.11 has none):
C3 01, the little-endian CRC-64-AVRO of the canonical form, the datum.

python-avro 1.11 keeps {"type":"long"} for a primitive that had extra
attributes (logicalType) where the spec's [PRIMITIVES] rule asks for
"long"; spec_canonical() re-applies that rule to python's own canonical
JSON. Exit status: 0 when every check passed, 1 otherwise (with reasons).
"""
import io
import json
import os
import sys

import avro.io
import avro.schema

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(os.path.dirname(HERE))
SCHEMAS = os.path.join(SOURCE, "schemas")
PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
EMPTY = 0xC15D213AA4D7A795


def _crc_table():
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (EMPTY & -(fp & 1))
        table.append(fp)
    return table


TABLE = _crc_table()


def crc64_avro(data: bytes) -> int:
    fp = EMPTY
    for b in data:
        fp = (fp >> 8) ^ TABLE[(fp ^ b) & 0xFF]
    return fp


def _spec_fix(node):
    if isinstance(node, dict):
        if set(node) == {"type"} and node["type"] in PRIMITIVES:
            return node["type"]
        return {k: _spec_fix(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_spec_fix(v) for v in node]
    return node


def spec_canonical(schema) -> str:
    return json.dumps(_spec_fix(schema.to_canonical_json()), separators=(",", ":"))


def _strip_logical(node):
    """Same binary encoding, but python-avro then reads and writes plain
    ints instead of datetime objects for timestamp-millis."""
    if isinstance(node, dict):
        return {k: _strip_logical(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_strip_logical(v) for v in node]
    return node


def load_schemas():
    out = {}
    for fn in sorted(os.listdir(SCHEMAS)):
        if not fn.endswith(".avsc"):
            continue
        text = open(os.path.join(SCHEMAS, fn), encoding="utf-8").read()
        name = fn[:-5]
        declared = avro.schema.parse(text)
        plain = avro.schema.parse(json.dumps(_strip_logical(json.loads(text))))
        out[name] = (declared, plain)
    return out


def _bytes_fields(schema, value):
    """Turn the fixture's code-point strings into bytes where the schema says bytes."""
    t = schema.type
    if t == "bytes":
        return value.encode("latin-1")
    if t == "record":
        return {f.name: _bytes_fields(f.type, value[f.name]) for f in schema.fields}
    if t == "union":
        if value is None:
            return None
        branches = [s for s in schema.schemas if s.type != "null"]
        return _bytes_fields(branches[0], value) if len(branches) == 1 else value
    if t == "array":
        return [_bytes_fields(schema.items, v) for v in value]
    if t == "map":
        return {k: _bytes_fields(schema.values, v) for k, v in value.items()}
    return value


def load_values(schemas):
    doc = json.load(open(os.path.join(HERE, "values.json"), encoding="utf-8"))
    return {name: [_bytes_fields(schemas[name][1], v) for v in doc[name]] for name in schemas}


def cmd_read(d, schemas, values):
    failures = 0
    for name, (declared, plain) in schemas.items():
        fp = crc64_avro(spec_canonical(declared).encode("utf-8"))
        for i, want in enumerate(values[name]):
            path = os.path.join(d, f"{name}.{i}.bin")
            data = open(path, "rb").read()
            if data[:2] != b"\xc3\x01":
                print(f"FAIL {path}: bad magic {data[:2].hex()}")
                failures += 1
                continue
            got_fp = int.from_bytes(data[2:10], "little")
            if got_fp != fp:
                print(f"FAIL {path}: fingerprint {got_fp:016x}, python computes {fp:016x}")
                failures += 1
                continue
            bio = io.BytesIO(data[10:])
            try:
                got = avro.io.DatumReader(plain).read(avro.io.BinaryDecoder(bio))
            except Exception as e:  # report every file, not only the first
                print(f"FAIL {path}: python-avro cannot decode it: {e}")
                failures += 1
                continue
            if bio.tell() != len(data) - 10:
                print(f"FAIL {path}: {len(data) - 10 - bio.tell()} trailing bytes")
                failures += 1
            elif got != want:
                print(f"FAIL {path}: decoded value differs\n  got:  {got!r}\n  want: {want!r}")
                failures += 1
            else:
                print(f"ok   {path}")
    return failures


def cmd_write(d, schemas, values):
    for name, (declared, plain) in schemas.items():
        fps = {
            "": crc64_avro(spec_canonical(declared).encode("utf-8")),
            ".legacy": crc64_avro(declared.canonical_form.encode("utf-8")),
        }
        for i, value in enumerate(values[name]):
            buf = io.BytesIO()
            avro.io.DatumWriter(plain).write(value, avro.io.BinaryEncoder(buf))
            for suffix, fp in fps.items():
                path = os.path.join(d, f"{name}.{i}{suffix}.bin")
                with open(path, "wb") as f:
                    f.write(b"\xc3\x01" + fp.to_bytes(8, "little") + buf.getvalue())
                print(f"wrote {path}")
    return 0


def cmd_canonical(d, schemas, _values):
    for name, (declared, _plain) in schemas.items():
        for suffix, text in ((".txt", declared.canonical_form), (".spec.txt", spec_canonical(declared))):
            with open(os.path.join(d, name + suffix), "w", encoding="utf-8") as f:
                f.write(text + "\n")
    return 0


def main(argv):
    if len(argv) != 3 or argv[1] not in ("read", "write", "canonical"):
        print(__doc__)
        return 2
    schemas = load_schemas()
    values = load_values(schemas)
    rc = {"read": cmd_read, "write": cmd_write, "canonical": cmd_canonical}[argv[1]](argv[2], schemas, values)
    return 1 if rc else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
