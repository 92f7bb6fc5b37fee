#!/usr/bin/env python3
"""Self-test of powerfs (the harness's power-loss filesystem): mounts it in a temporary
directory and checks, through the kernel, each rule its docstring states. Needs root (or a
usable /dev/fuse), fuse3 and mfusepy (ORGSYNC_POWERFS_PYTHON: an interpreter that has it; see
.ci/harness.sh). Exit status 0 when every check passed, 1 otherwise (also when it cannot run).

    python3 -B Tests/harness/test_powerfs.py
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import sys
import tempfile
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import powerfs  # noqa: E402


def write(path, data, sync=False, flags=os.O_CREAT | os.O_WRONLY | os.O_TRUNC, datasync=False):
    fd = os.open(path, flags, 0o644)
    try:
        os.write(fd, data)
        if sync:
            (os.fdatasync if datasync else os.fsync)(fd)
    finally:
        os.close(fd)


def sync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read(path):
    with open(path, "rb") as f:
        return f.read()


class Tests:
    def __init__(self, mount: powerfs.Mount):
        self.m = mount
        self.root = mount.mountpoint
        self.n = 0

    def p(self, *parts):
        return os.path.join(self.root, *parts)

    def fresh_dir(self):
        """A new directory made durable, for one test."""
        self.n += 1
        d = self.p(f"t{self.n}")
        os.mkdir(d)
        sync_dir(self.root)
        return d

    def cut(self, mode="clean", seed=0):
        return self.m.cut(mode, seed)

    # Each test asserts; a failure raises AssertionError with what was seen.
    def test_unsynced_write_of_new_file_is_gone(self):
        d = self.fresh_dir()
        write(os.path.join(d, "f"), b"never synced")
        assert read(os.path.join(d, "f")) == b"never synced"  # visible before the cut
        assert os.listdir(d) == ["f"], os.listdir(d)
        self.cut()
        assert not os.path.exists(os.path.join(d, "f")), os.listdir(d)
        assert os.listdir(d) == [], os.listdir(d)

    def test_synced_file_and_directory_are_kept(self):
        d = self.fresh_dir()
        write(os.path.join(d, "f"), b"durable", sync=True)
        sync_dir(d)
        self.cut()
        assert read(os.path.join(d, "f")) == b"durable"

    def test_fdatasync_counts_as_fsync(self):
        d = self.fresh_dir()
        write(os.path.join(d, "f"), b"datasynced", sync=True, datasync=True)
        sync_dir(d)
        self.cut()
        assert read(os.path.join(d, "f")) == b"datasynced"

    def test_file_fsync_does_not_make_its_name_durable(self):
        d = self.fresh_dir()
        write(os.path.join(d, "f"), b"data synced, name not", sync=True)
        self.cut()
        assert not os.path.exists(os.path.join(d, "f")), "a name not fsync'ed in its directory survived"

    def test_name_durable_data_not(self):
        d = self.fresh_dir()
        write(os.path.join(d, "f"), b"data not synced")
        sync_dir(d)
        self.cut()
        assert read(os.path.join(d, "f")) == b"", "the name is durable, its unsynced data must be gone"

    def test_append_after_sync_is_dropped(self):
        d = self.fresh_dir()
        f = os.path.join(d, "f")
        write(f, b"kept", sync=True)
        sync_dir(d)
        write(f, b"+lost", flags=os.O_WRONLY | os.O_APPEND)
        assert read(f) == b"kept+lost"
        self.cut()
        assert read(f) == b"kept"

    def test_truncate_not_synced_is_undone(self):
        d = self.fresh_dir()
        f = os.path.join(d, "f")
        write(f, b"0123456789", sync=True)
        sync_dir(d)
        os.truncate(f, 3)
        assert read(f) == b"012"
        self.cut()
        assert read(f) == b"0123456789"

    def test_rename_with_directory_fsync_is_kept(self):
        d = self.fresh_dir()
        write(os.path.join(d, "a.tmp"), b"new", sync=True)
        os.rename(os.path.join(d, "a.tmp"), os.path.join(d, "a"))
        sync_dir(d)
        self.cut()
        assert read(os.path.join(d, "a")) == b"new" and not os.path.exists(os.path.join(d, "a.tmp"))

    def test_rename_over_without_directory_fsync_is_undone(self):
        d = self.fresh_dir()
        write(os.path.join(d, "a"), b"old", sync=True)
        sync_dir(d)
        write(os.path.join(d, "a.tmp"), b"new", sync=True)
        os.rename(os.path.join(d, "a.tmp"), os.path.join(d, "a"))
        assert read(os.path.join(d, "a")) == b"new"
        self.cut()
        assert read(os.path.join(d, "a")) == b"old", read(os.path.join(d, "a"))
        assert not os.path.exists(os.path.join(d, "a.tmp"))

    def test_unlink_without_directory_fsync_comes_back(self):
        d = self.fresh_dir()
        write(os.path.join(d, "f"), b"still here", sync=True)
        sync_dir(d)
        os.unlink(os.path.join(d, "f"))
        self.cut()
        assert read(os.path.join(d, "f")) == b"still here"

    def test_new_directory_needs_its_parent_fsynced(self):
        d = self.fresh_dir()
        sub = os.path.join(d, "sub")
        os.mkdir(sub)
        write(os.path.join(sub, "f"), b"x", sync=True)
        sync_dir(sub)
        self.cut()
        assert not os.path.exists(sub), "mkdir survived without an fsync of its parent"
        os.mkdir(sub)
        write(os.path.join(sub, "f"), b"y", sync=True)
        sync_dir(sub)
        sync_dir(d)
        self.cut()
        assert read(os.path.join(sub, "f")) == b"y"

    def test_torn_mode_keeps_a_sector_prefix(self):
        d = self.fresh_dir()
        f = os.path.join(d, "f")
        write(f, b"", sync=True)
        sync_dir(d)
        data = bytes(range(256)) * 32  # 8 KiB in one write
        lengths = set()
        for seed in range(12):
            write(f, data, flags=os.O_WRONLY)
            self.cut("torn", seed)
            got = read(f)
            assert data.startswith(got), f"seed {seed}: not a prefix of the write ({len(got)} bytes)"
            assert len(got) % powerfs.SECTOR == 0, f"seed {seed}: {len(got)} bytes is not whole sectors"
            lengths.add(len(got))
            write(f, b"", sync=True)
        assert any(0 < n < len(data) for n in lengths), f"torn lengths seen: {sorted(lengths)}"

    def test_torn_mode_keeps_a_prefix_of_writes(self):
        d = self.fresh_dir()
        f = os.path.join(d, "f")
        write(f, b"", sync=True)
        sync_dir(d)
        seen = set()
        for seed in range(12):
            fd = os.open(f, os.O_WRONLY | os.O_APPEND)
            for i in range(6):
                os.write(fd, bytes([65 + i]) * 100)
            os.close(fd)
            self.cut("torn", seed)
            got = read(f)
            want = b"".join(bytes([65 + i]) * 100 for i in range(6))
            assert want.startswith(got), f"seed {seed}: {got[:40]!r}... is not a prefix"
            seen.add(len(got))
            write(f, b"", sync=True)
        assert len(seen) > 2, f"prefix lengths seen: {sorted(seen)}"

    def test_reorder_mode_can_keep_a_later_write_without_an_earlier_one(self):
        d = self.fresh_dir()
        f = os.path.join(d, "f")
        write(f, b"." * 4096, sync=True)
        sync_dir(d)
        later_without_earlier = False
        for seed in range(16):
            fd = os.open(f, os.O_WRONLY)
            for i in range(8):
                os.pwrite(fd, bytes([65 + i]) * 512, i * 512)
            os.close(fd)
            self.cut("reorder", seed)
            got = read(f)
            assert len(got) == 4096
            kept = []
            for i in range(8):
                sector = got[i * 512:(i + 1) * 512]
                assert sector in (b"." * 512, bytes([65 + i]) * 512), f"seed {seed}: sector {i} mixed"
                kept.append(sector != b"." * 512)
            if any(kept[j] and not kept[i] for i in range(8) for j in range(i + 1, 8)):
                later_without_earlier = True
            write(f, b"." * 4096, sync=True)
        assert later_without_earlier, "reorder never kept a later write without an earlier one"

    def test_entries_in_torn_mode_are_a_prefix(self):
        d = self.fresh_dir()
        for seed in range(8):
            names = [f"n{seed}_{i}" for i in range(5)]
            for name in names:
                write(os.path.join(d, name), b"", sync=True)
            self.cut("torn", seed)
            present = [os.path.exists(os.path.join(d, name)) for name in names]
            assert present == sorted(present, reverse=True), f"seed {seed}: not a prefix of the creations: {present}"

    def test_sync_command_makes_everything_durable(self):
        d = self.fresh_dir()
        write(os.path.join(d, "f"), b"synced by the whole-disk sync")
        self.m.command("sync")
        self.cut()
        assert read(os.path.join(d, "f")) == b"synced by the whole-disk sync"

    def _sqlite_after_cut(self, journal_mode, synchronous, commits=20):
        """Commits `commits` one-row transactions, cuts the power (clean); returns the rows left."""
        d = self.fresh_dir()
        db = os.path.join(d, "t.sqlite")
        con = sqlite3.connect(db, isolation_level=None)
        try:
            con.execute(f"PRAGMA journal_mode={journal_mode}")
            con.execute(f"PRAGMA synchronous={synchronous}")
            con.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
            for i in range(commits):
                con.execute("BEGIN")
                con.execute("INSERT INTO t VALUES (?, ?)", (i, "x" * 300))
                con.execute("COMMIT")
        finally:
            con.close()
        self.cut()
        con = sqlite3.connect(db)
        try:
            (n,) = con.execute("SELECT count(*) FROM t").fetchone()
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            con.close()
        return n

    def test_sqlite_wal_full_keeps_every_commit(self):
        """The SQLite adapter's default (WAL; SQLite's default synchronous=FULL): every commit
        survives (the WAL is fsync'ed at each commit, its directory when it is created)."""
        n = self._sqlite_after_cut("wal", "FULL")
        assert n == 20, f"{n} of 20 committed rows after the cut"

    def test_sqlite_delete_journal_needs_synchronous_extra(self):
        """Rollback journal: a commit is the journal's unlink, which synchronous=FULL does not make
        durable (no fsync of the directory): the model must bring the journal back and SQLite
        then rolls the last commit back. synchronous=EXTRA fsyncs the directory: nothing lost."""
        n = self._sqlite_after_cut("delete", "FULL")
        assert n == 19, f"delete+FULL: {n} rows; the strict model should have lost exactly the last commit"
        n = self._sqlite_after_cut("delete", "EXTRA")
        assert n == 20, f"delete+EXTRA: {n} of 20 committed rows after the cut"


def main():
    missing = powerfs.missing_requirements()
    if missing:  # not a skip: a self-test that did not run proved nothing
        print(f"test_powerfs: cannot run: missing {', '.join(missing)}", file=sys.stderr)
        return 1
    work = tempfile.mkdtemp(prefix="powerfs-test-")
    mount = powerfs.Mount(work, os.path.join(work, "mnt"))
    failed = 0
    try:
        mount.start()
        tests = Tests(mount)
        names = [n for n in dir(tests) if n.startswith("test_")]
        for name in names:
            try:
                getattr(tests, name)()
                print(f"ok    {name}")
            except Exception:
                failed += 1
                print(f"FAIL  {name}")
                traceback.print_exc()
        print(f"{len(names) - failed} passed, {failed} failed")
    finally:
        mount.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
