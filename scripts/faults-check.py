#!/usr/bin/env python3
"""Checks for scripts/faults: what a store holds after a kill -9 and after the rerun.

  faults-check.py sqlite-tables DB                   one line per table: name, row count, content hash
  faults-check.py sqlite-integrity DB                exit 1 unless PRAGMA integrity_check says ok
  faults-check.py prefix COUNT MAXID DISTINCT        exit 1 unless the COUNT rows are the input's first COUNT
  faults-check.py jsonl FILE                         exit 1 unless every line of FILE is a JSON object
"""
import hashlib
import json
import sqlite3
import sys


def sqlite_tables(path):
    db = sqlite3.connect(path)
    names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    for name in names:
        rows = sorted(repr(r) for r in db.execute('SELECT * FROM "%s"' % name.replace('"', '""')))
        h = hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]
        print(name, len(rows), h)


def sqlite_integrity(path):
    result = sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0]
    if result != "ok":
        print("integrity_check: " + result)
        sys.exit(1)


def prefix(count, maxid, distinct):
    count, maxid, distinct = map(int, (count, maxid, distinct))
    problems = []
    if distinct != count:
        problems.append("%d rows but %d distinct ids" % (count, distinct))
    if maxid != count:
        problems.append("ids are not the input's first %d (max id %d)" % (count, maxid))
    if problems:
        print("; ".join(problems))
        sys.exit(1)


def jsonl(path):
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return
    with f:
        data = f.read()
    if data and not data.endswith(b"\n"):
        print("%s: the last line is not whole" % path)
        sys.exit(1)
    for n, line in enumerate(data.splitlines(), 1):
        try:
            if not isinstance(json.loads(line), dict):
                raise ValueError("not an object")
        except ValueError as e:
            print("%s:%d: not a JSON object (%s)" % (path, n, e))
            sys.exit(1)


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {"sqlite-tables": sqlite_tables, "sqlite-integrity": sqlite_integrity, "prefix": prefix,
     "jsonl": jsonl}[command](*args)
