#!/usr/bin/env python3
"""An orgsync adapter, out of process, that writes entries to a SQLite file.

Same mapping as the built-in `sqlite` adapter: one table per `object`, columns `key` (primary
key), `org`, `ts`, then one column per field (added when first seen); insert/upsert/delete as
named; the whole batch and the link's applied position (table `orgsync_offsets`: the offset and
the stream id and epoch it belongs to) in one transaction, entries at or below the stored offset
skipped; the owner epoch of the broker that applied them is stored too, and a batch of an older
owner is fenced. Speaks plugin protocol 3, and 2 or 1 to a broker that offers only those.
Standard library only.

Settings: `path` (required; relative to the broker's data directory; its directory must exist),
`busy_timeout_ms` (default 5000), `primary_key` (`key`, the default, or `org_key` for streams
whose orgs' keys may collide: the pair (org, key) then identifies a record).
"""
import json
import os
import re
import sqlite3

from orgsync_plugin import (ConnectionFailure, Position, RejectedEntry, RetryableFailure, main, plan_apply,
                            position_after)

NAME = "python-sqlite"
VERSION = "1.2.0"

_IDENTIFIER = re.compile(r"[A-Za-z0-9_]{1,63}\Z")
_RESERVED_COLUMNS = {"key", "org", "ts"}
# SQLite primary result codes (extended code & 0xff).
_BUSY, _LOCKED = 5, 6
_ENTRY_ERRORS = {1, 18, 19, 20, 25}  # ERROR, TOOBIG, CONSTRAINT, MISMATCH, RANGE
# Protocol 1 created the table without stream_id and epoch, protocol 2 without owner_epoch;
# `open` adds them to such a table.
_OFFSETS_TABLE = ("CREATE TABLE IF NOT EXISTS orgsync_offsets (link TEXT PRIMARY KEY NOT NULL, "
                  "stream TEXT NOT NULL, applied_offset INTEGER NOT NULL, updated_at TEXT NOT NULL, "
                  "stream_id TEXT, epoch INTEGER, owner_epoch INTEGER)")
_OFFSETS_ADDED_COLUMNS = (("stream_id", "TEXT"), ("epoch", "INTEGER"), ("owner_epoch", "INTEGER"))
_STORE_POSITION = ("INSERT INTO orgsync_offsets (link, stream, applied_offset, updated_at, stream_id, epoch, owner_epoch) "
                   "VALUES (?, ?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), ?, ?, ?) "
                   "ON CONFLICT(link) DO UPDATE SET stream = excluded.stream, applied_offset = excluded.applied_offset, "
                   "updated_at = excluded.updated_at, stream_id = excluded.stream_id, epoch = excluded.epoch, "
                   "owner_epoch = excluded.owner_epoch")


def _valid_table(name):
    lower = name.lower()
    return (isinstance(name, str) and _IDENTIFIER.match(name) is not None and name[0].isascii()
            and name[0].isalpha() and not lower.startswith("sqlite_") and not lower.startswith("orgsync_"))


def _valid_column(name):
    return (isinstance(name, str) and _IDENTIFIER.match(name) is not None and not name[0].isdigit()
            and name.lower() not in _RESERVED_COLUMNS)


def _quote(name):
    return '"' + name.replace('"', '""') + '"'


def _declared_type(value):
    if value is None:
        return ""
    if isinstance(value, bool) or isinstance(value, int):
        return "INTEGER"
    if isinstance(value, float):
        return "REAL"
    return "TEXT"


def _sql_value(value):
    if isinstance(value, bool):
        return 1 if value else 0
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return value


def _classify(error, offset, path):
    code = getattr(error, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    message = f"SQLite error {code}: {error}"
    if primary in (_BUSY, _LOCKED):
        return RetryableFailure(message, code)
    if offset is not None and (primary in _ENTRY_ERRORS or isinstance(error, sqlite3.IntegrityError)):
        return RejectedEntry(offset, message, code)
    return ConnectionFailure(f"{message} (database {path})", code)


class SQLiteAdapter:
    def __init__(self):
        self.db = None
        self.path = None
        self.identity = None
        self.link = None
        self.stream = None
        self.columns = {}  # lowercased table -> set of lowercased columns, as committed

    def open(self, link, stream, settings, data_directory):
        self.close()
        path = settings.get("path")
        if not path:
            raise ConnectionFailure('setting "path" is required')
        self.path = path if os.path.isabs(path) else os.path.join(data_directory, path)
        self.link = link
        self.stream = stream
        self.org_key = settings.get("primary_key", "key") == "org_key"
        if settings.get("primary_key", "key") not in ("key", "org_key"):
            raise ConnectionFailure('setting "primary_key" must be key or org_key')
        timeout_s = int(settings.get("busy_timeout_ms", "5000")) / 1000
        db = None
        try:
            db = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            self._create_offsets_table(db)
            self.identity = self._stat()
        except sqlite3.Error as error:
            if db is not None:
                self._rollback(db)
                db.close()
            raise _classify(error, None, self.path) from None
        if self.identity is None:
            db.close()
            raise ConnectionFailure(f"SQLite database {self.path} vanished while it was being opened")
        self.db = db
        self.columns = {}

    def apply(self, stream, entries, retry=False, identity=None, owner_epoch=0):
        """`identity` None: protocol 1 (skip at or below the stored offset, whoever wrote it, and
        store the offset without identity); else protocols 2 and 3 (`plan_apply`,
        `position_after`; `owner_epoch` is 0 under protocol 2)."""
        db = self._checked()
        offset = None
        try:
            db.execute("BEGIN IMMEDIATE")
            stored = self._stored_position(db)
            if identity is None:
                skip_to = stored.offset if stored is not None else None
            else:
                skip_to = plan_apply(stored, identity, owner_epoch)  # raises Fenced/PositionConflict: rolled back below
            for offset, entry in entries:
                if skip_to is not None and offset <= skip_to and not retry:
                    continue
                self._apply_entry(db, offset, entry)
            offset = None
            last = entries[-1][0]
            if identity is None:
                if stored is None or last > stored.offset:
                    self._store_position(db, stream, Position(None, None, last))
            else:
                self._store_position(db, stream, position_after(stored, identity, last, owner_epoch))
            db.execute("COMMIT")
        except BaseException as error:
            self._rollback(db)
            if isinstance(error, sqlite3.Error):
                raise _classify(error, offset, self.path) from None
            raise

    def probe(self):
        db = self._checked()
        try:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as error:
            raise _classify(error, None, self.path) from None

    def applied_offset(self):
        position = self.applied_position()
        return position.offset if position is not None else None

    def applied_position(self):
        db = self._checked()
        try:
            return self._stored_position(db)
        except sqlite3.Error as error:
            raise _classify(error, None, self.path) from None

    def set_applied_position(self, position):
        """What `orgsync links reset` and adopt write: this link's row, or none for None."""
        db = self._checked()
        try:
            db.execute("BEGIN IMMEDIATE")
            if position is None:
                db.execute("DELETE FROM orgsync_offsets WHERE link = ?", (self.link,))
            else:
                self._store_position(db, self.stream, position)
            db.execute("COMMIT")
        except BaseException as error:
            self._rollback(db)
            if isinstance(error, sqlite3.Error):
                raise _classify(error, None, self.path) from None
            raise

    def close(self):
        if self.db is not None:
            self.db.close()
            self.db = None

    # --- the offsets table -----------------------------------------------------------

    def _create_offsets_table(self, db):
        """Creates the table, or adds the columns of later protocols to one an earlier created. In one
        transaction, looked at inside it, so two processes opening the file at once add each
        column once."""
        db.execute("BEGIN IMMEDIATE")
        db.execute(_OFFSETS_TABLE)
        present = {row[1].lower() for row in db.execute("PRAGMA table_info(orgsync_offsets)").fetchall()}
        for name, declared in _OFFSETS_ADDED_COLUMNS:
            if name not in present:
                db.execute(f"ALTER TABLE orgsync_offsets ADD COLUMN {name} {declared}")
        db.execute("COMMIT")

    def _stored_position(self, db):
        row = db.execute("SELECT stream_id, epoch, applied_offset, owner_epoch FROM orgsync_offsets WHERE link = ?",
                         (self.link,)).fetchone()
        return Position(row[0], row[1], row[2], row[3] or 0) if row else None

    def _store_position(self, db, stream, position):
        db.execute(_STORE_POSITION, (self.link, stream, position.offset, position.stream_id, position.epoch,
                                     position.owner_epoch))

    # --- one entry -------------------------------------------------------------------

    def _apply_entry(self, db, offset, entry):
        table, op, key = entry.get("object"), entry.get("op"), entry.get("key")
        if not isinstance(table, str) or not _valid_table(table):
            raise RejectedEntry(offset, f"object {table!r} cannot be mapped to a SQLite table")
        if op == "delete":
            if self._known_columns(db, table, create=False) is not None:
                if self.org_key:
                    db.execute(f'DELETE FROM {_quote(table)} WHERE "org" = ? AND "key" = ?', (entry.get("org"), key))
                else:
                    db.execute(f'DELETE FROM {_quote(table)} WHERE "key" = ?', (key,))
            return
        if op not in ("insert", "upsert"):
            raise RejectedEntry(offset, f"unknown op {op!r}")
        fields = entry.get("fields") or {}
        names = sorted(fields)
        folded = set()
        for name in names:
            if not _valid_column(name):
                raise RejectedEntry(offset, f"field {name!r} cannot be mapped to a SQLite column")
            if name.lower() in folded:
                raise RejectedEntry(offset, f"fields differ only by case near {name!r}")
            folded.add(name.lower())
        columns = self._known_columns(db, table, create=True)
        if any(name.lower() not in columns for name in names):
            # Look again before adding: another writer may have added the column meanwhile.
            self.columns.pop(table.lower(), None)
            columns = self._known_columns(db, table, create=True)
        for name in names:
            if name.lower() not in columns:
                db.execute(f"ALTER TABLE {_quote(table)} ADD COLUMN {_quote(name)} {_declared_type(fields[name])}")
                columns.add(name.lower())
        all_columns = ["key", "org", "ts"] + names
        sql = (f"INSERT INTO {_quote(table)} ({', '.join(map(_quote, all_columns))}) "
               f"VALUES ({', '.join('?' for _ in all_columns)})")
        if op == "upsert":
            updated = (["ts"] if self.org_key else ["org", "ts"]) + names
            updates = ", ".join(f"{_quote(c)} = excluded.{_quote(c)}" for c in updated)
            conflict = '"org", "key"' if self.org_key else '"key"'
            sql += f" ON CONFLICT({conflict}) DO UPDATE SET {updates}"
        db.execute(sql, [key, entry.get("org"), entry.get("ts")] + [_sql_value(fields[n]) for n in names])

    def _known_columns(self, db, table, create):
        cached = self.columns.get(table.lower())
        if cached is not None:
            return cached
        info = db.execute(f"PRAGMA table_info({_quote(table)})").fetchall()
        columns = {row[1].lower() for row in info}
        if columns:
            # A table made under the other primary_key setting would merge or split records.
            primary_key = [row[1].lower() for row in sorted(info, key=lambda row: row[5]) if row[5] > 0]
            wanted = ["org", "key"] if self.org_key else ["key"]
            if primary_key != wanted:
                raise ConnectionFailure(f"table {table} has primary key ({', '.join(primary_key)}), "
                                        f"but the link's primary_key setting is {'org_key' if self.org_key else 'key'}")
        if not columns:
            if not create:
                return None
            if self.org_key:
                db.execute(f'CREATE TABLE {_quote(table)} ("key" TEXT NOT NULL, "org" TEXT NOT NULL, '
                           f'"ts" TEXT NOT NULL, PRIMARY KEY ("org", "key"))')
            else:
                db.execute(f'CREATE TABLE {_quote(table)} ("key" TEXT PRIMARY KEY NOT NULL, '
                           f'"org" TEXT NOT NULL, "ts" TEXT NOT NULL)')
            columns = {"key", "org", "ts"}
        self.columns[table.lower()] = columns
        return columns

    # --- connection state ------------------------------------------------------------

    def _checked(self):
        if self.db is None:
            raise ConnectionFailure("adapter is not open")
        if self._stat() != self.identity:
            raise ConnectionFailure(f"SQLite database {self.path} was removed or replaced since it was opened")
        return self.db

    def _stat(self):
        try:
            info = os.stat(self.path)
        except OSError:
            return None
        return (info.st_dev, info.st_ino)

    def _rollback(self, db):
        self.columns = {}  # the transaction's DDL rolled back too
        if db.in_transaction:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass


if __name__ == "__main__":
    main(SQLiteAdapter(), NAME, VERSION)
