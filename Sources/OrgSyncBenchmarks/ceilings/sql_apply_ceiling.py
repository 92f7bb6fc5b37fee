#!/usr/bin/env python3
"""Apply ceilings for SQL targets: what a good client of the database does with the workload on
this machine, to hold orgsync's adapters against (`OrgSyncBenchmarks apply` runs this in the same
run, on the same entries, and prints the ratio).

Input: JSON Lines {"org","object","op","key","ts","fields"} (`OrgSyncBenchmarks workload --out`).
Each object becomes a table with the adapters' own columns (key, org, ts; primary key (org, key))
and one column per field, typed as the adapters type it (the first value's JSON type: text,
bigint, double precision, boolean, jsonb; a field that carries both integers and fractions is
double precision). An upsert sets only the fields it carries; an insert is written as an upsert
(a ceiling never rejects); a delete removes the row. Batches of --batch entries, one transaction
each with an offset row, in order.

  sqlite   Python's sqlite3 (a C loop), WAL, synchronous=FULL, executemany per run of entries
           with the same (table, op, field set).
  pg-rows  psycopg 3, one INSERT .. ON CONFLICT (or DELETE) per entry, pipeline mode (no wait
           for each answer before sending the next).
  pg-json  psycopg 3, set-based: a batch is cut into runs where no record repeats; per run and
           table one DELETE over jsonb_to_recordset and one statement that UPDATEs the rows
           that exist (only the fields each entry carries) and INSERTs the rest; pipeline mode.

PostgreSQL: the server of the libpq environment (PGHOST, PGPORT, PGUSER, PGPASSWORD,
PGDATABASE), which keeps the password off the command line. Needs psycopg 3 for the pg modes:
    python3 -m pip install 'psycopg[binary]'
Prints one line per mode: RESULT {"mode", "entries", "batch", "entries_per_s", "rows"}.
"""
import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time

SCHEMA = "orgsync_ceiling"


def load(path, count):
    out = []
    with open(path, "rb") as f:
        for line in f:
            if count and len(out) >= count:
                break
            if line.strip():
                out.append(json.loads(line))
    return out


def kind_of(value):
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "bigint"
    if isinstance(value, float):
        return "double precision"
    if isinstance(value, str):
        return "text"
    return "jsonb"


def columns_by_object(entries):
    """{object: {field: type}}, in first-seen order, typed as the adapters type columns."""
    tables = {}
    for e in entries:
        columns = tables.setdefault(e["object"], {})
        for name, value in e.get("fields", {}).items():
            kind = kind_of(value)
            if kind is None:
                continue
            known = columns.get(name)
            if known is None or known == kind:
                columns[name] = kind
            elif {known, kind} == {"bigint", "double precision"}:
                columns[name] = "double precision"
            else:
                columns[name] = "text"
    return tables


def q(name):
    return '"' + name.replace('"', '""') + '"'


def text(value, kind):
    """A value as the text its column's input function reads (None stays NULL)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)) or kind == "jsonb":
        return json.dumps(value)
    return str(value)


def batches(entries, size):
    for start in range(0, len(entries), size):
        yield start, entries[start:start + size]


def runs_by_shape(batch):
    """Consecutive entries of one (object, op, field set)."""
    group, shape = [], None
    for e in batch:
        s = (e["object"], e["op"], tuple(sorted(e.get("fields", {}))) if e["op"] != "delete" else ())
        if s != shape and group:
            yield shape, group
            group = []
        shape = s
        group.append(e)
    if group:
        yield shape, group


def runs_without_repeats(batch):
    """Consecutive entries in which no (object, org, key) comes twice."""
    run, seen = [], set()
    for e in batch:
        record = (e["object"], e["org"], e["key"])
        if record in seen:
            yield run
            run, seen = [], set()
        seen.add(record)
        run.append(e)
    if run:
        yield run


# MARK: SQLite


def sqlite_run(entries, batch_size, tables):
    directory = tempfile.mkdtemp(prefix="orgsync-ceiling-")
    path = os.path.join(directory, "target.sqlite")
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    for obj, columns in tables.items():
        defs = "".join(f", {q(c)}" for c in columns)
        db.execute(f"CREATE TABLE {q(obj)} (key TEXT NOT NULL, org TEXT NOT NULL, ts TEXT NOT NULL{defs}, PRIMARY KEY (org, key))")
    db.execute("CREATE TABLE offsets (link TEXT PRIMARY KEY, applied INTEGER)")
    started = time.perf_counter()
    for start, batch in batches(entries, batch_size):
        db.execute("BEGIN")
        for (obj, op, fields), group in runs_by_shape(batch):
            if op == "delete":
                db.executemany(f"DELETE FROM {q(obj)} WHERE org = ? AND key = ?", [(e["org"], e["key"]) for e in group])
                continue
            names = ["key", "org", "ts", *fields]
            sets = ", ".join(f"{q(n)} = excluded.{q(n)}" for n in ["ts", *fields])
            sql = (f"INSERT INTO {q(obj)} ({', '.join(q(n) for n in names)}) VALUES ({', '.join('?' * len(names))})"
                   f" ON CONFLICT (org, key) DO UPDATE SET {sets}")
            db.executemany(sql, [(e["key"], e["org"], e["ts"], *(sqlite_value(e["fields"][f]) for f in fields)) for e in group])
        db.execute("INSERT INTO offsets VALUES ('l', ?) ON CONFLICT (link) DO UPDATE SET applied = excluded.applied",
                   (start + len(batch) - 1,))
        db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    rows = sum(db.execute(f"SELECT count(*) FROM {q(obj)}").fetchone()[0] for obj in tables)
    db.close()
    for name in os.listdir(directory):
        os.remove(os.path.join(directory, name))
    os.rmdir(directory)
    return elapsed, rows


def sqlite_value(value):
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return value


# MARK: PostgreSQL


def pg_setup(conn, tables):
    conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    conn.execute(f"CREATE SCHEMA {SCHEMA}")
    for obj, columns in tables.items():
        defs = "".join(f", {q(c)} {kind}" for c, kind in columns.items())
        conn.execute(f"CREATE TABLE {SCHEMA}.{q(obj)} (key text NOT NULL, org text NOT NULL, ts text NOT NULL{defs}, PRIMARY KEY (org, key))")
    conn.execute(f"CREATE TABLE {SCHEMA}.offsets (link text PRIMARY KEY, applied bigint)")
    conn.commit()


def pg_rows_count(conn, tables):
    return sum(conn.execute(f"SELECT count(*) FROM {SCHEMA}.{q(obj)}").fetchone()[0] for obj in tables)


def pg_offset(cur, value):
    cur.execute(f"INSERT INTO {SCHEMA}.offsets VALUES ('l', %s) ON CONFLICT (link) DO UPDATE SET applied = excluded.applied", (value,))


def pg_rows(conn, entries, batch_size, tables):
    started = time.perf_counter()
    for start, batch in batches(entries, batch_size):
        with conn.transaction():
            with conn.pipeline():
                cur = conn.cursor()
                for (obj, op, fields), group in runs_by_shape(batch):
                    table = f"{SCHEMA}.{q(obj)}"
                    if op == "delete":
                        cur.executemany(f"DELETE FROM {table} WHERE org = %s AND key = %s", [(e["org"], e["key"]) for e in group])
                        continue
                    kinds = tables[obj]
                    names = ["key", "org", "ts", *fields]
                    placeholders = ["%s", "%s", "%s", *(f"%s::{kinds.get(f, 'text')}" for f in fields)]
                    sets = ", ".join(f"{q(n)} = excluded.{q(n)}" for n in ["ts", *fields])
                    cur.executemany(
                        f"INSERT INTO {table} ({', '.join(q(n) for n in names)}) VALUES ({', '.join(placeholders)})"
                        f" ON CONFLICT (org, key) DO UPDATE SET {sets}",
                        [(e["key"], e["org"], e["ts"], *(text(e["fields"][f], kinds.get(f)) for f in fields)) for e in group])
                pg_offset(cur, start + len(batch) - 1)
    return time.perf_counter() - started


def lit(name):
    return "'" + name.replace("'", "''") + "'"


def pg_json(conn, entries, batch_size, tables):
    started = time.perf_counter()
    for start, batch in batches(entries, batch_size):
        with conn.transaction():
            with conn.pipeline():
                cur = conn.cursor()
                for run in runs_without_repeats(batch):
                    by_object = {}
                    for e in run:
                        by_object.setdefault(e["object"], []).append(e)
                    for obj, group in by_object.items():
                        table = f"{SCHEMA}.{q(obj)}"
                        kinds = tables[obj]
                        deletes = [{"k": e["key"], "o": e["org"]} for e in group if e["op"] == "delete"]
                        writes = [{"k": e["key"], "o": e["org"], "t": e["ts"],
                                   "f": {c: (v if kinds.get(c) == "jsonb" else text(v, kinds.get(c))) for c, v in e.get("fields", {}).items()}}
                                  for e in group if e["op"] != "delete"]
                        if deletes:
                            cur.execute(f"DELETE FROM {table} AS t USING jsonb_to_recordset(%s::jsonb) AS x(k text, o text)"
                                        f" WHERE t.org = x.o AND t.key = x.k", (json.dumps(deletes),))
                        if not writes:
                            continue
                        carried = []
                        for w in writes:
                            for c in w["f"]:
                                if c in kinds and c not in carried:
                                    carried.append(c)

                        def value(c):
                            if kinds[c] == "jsonb":
                                return f"NULLIF(x.f->{lit(c)}, 'null'::jsonb)"
                            if kinds[c] == "text":
                                return f"x.f->>{lit(c)}"
                            return f"CAST(x.f->>{lit(c)} AS {kinds[c]})"

                        sets = "".join(f", {q(c)} = CASE WHEN x.f ? {lit(c)} THEN {value(c)} ELSE t.{q(c)} END" for c in carried)
                        columns = ", ".join(q(c) for c in ["key", "org", "ts", *carried])
                        values = ", ".join(["x.k", "x.o", "x.t", *(value(c) for c in carried)])
                        cur.execute(
                            f"WITH x AS (SELECT * FROM jsonb_to_recordset(%s::jsonb) AS r(k text, o text, t text, f jsonb)),"
                            f" u AS (UPDATE {table} AS t SET ts = x.t{sets} FROM x WHERE t.org = x.o AND t.key = x.k RETURNING t.org, t.key)"
                            f" INSERT INTO {table} ({columns}) SELECT {values} FROM x"
                            f" WHERE NOT EXISTS (SELECT 1 FROM u WHERE u.org = x.o AND u.key = x.k)",
                            (json.dumps(writes),))
                pg_offset(cur, start + len(batch) - 1)
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="JSON Lines workload")
    parser.add_argument("--count", type=int, default=0, help="first N entries only (0: all)")
    parser.add_argument("--batch", type=int, default=500, help="entries per transaction")
    parser.add_argument("--modes", default="sqlite,pg-rows,pg-json", help="comma-separated: sqlite, pg-rows, pg-json")
    args = parser.parse_args()
    if args.batch < 1:
        parser.error("--batch must be positive")
    entries = load(args.input, args.count)
    tables = columns_by_object(entries)
    modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in modes if m not in ("sqlite", "pg-rows", "pg-json")]
    if unknown:
        parser.error(f"unknown mode(s): {', '.join(unknown)}")

    def report(mode, elapsed, rows):
        print("RESULT " + json.dumps({"mode": mode, "entries": len(entries), "batch": args.batch,
                                      "entries_per_s": round(len(entries) / elapsed) if elapsed > 0 else 0, "rows": rows}), flush=True)

    if "sqlite" in modes:
        elapsed, rows = sqlite_run(entries, args.batch, tables)
        report("sqlite", elapsed, rows)
    pg_modes = [m for m in modes if m.startswith("pg-")]
    if not pg_modes:
        return
    try:
        import psycopg
    except ImportError:
        print("pg modes need psycopg 3: python3 -m pip install 'psycopg[binary]'", file=sys.stderr)
        sys.exit(2)
    with psycopg.connect("", application_name="orgsync-ceiling") as conn:
        for mode in pg_modes:
            pg_setup(conn, tables)
            elapsed = {"pg-rows": pg_rows, "pg-json": pg_json}[mode](conn, entries, args.batch, tables)
            report(mode, elapsed, pg_rows_count(conn, tables))
            conn.execute(f"DROP SCHEMA {SCHEMA} CASCADE")
            conn.commit()


if __name__ == "__main__":
    main()
