"""Tests of the example plugin, driven as the broker drives it: `adapter.py` over stdin/stdout,
one JSON line each way, against a SQLite file in a temporary directory.

Run from this directory: python3 -m unittest -v
"""
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import unittest

from orgsync_plugin import Fenced, Position, PositionConflict, StreamIdentity, plan_apply, position_after

HERE = os.path.dirname(os.path.abspath(__file__))
ANSWER_TIMEOUT_S = 20
STREAM_ID = "s-4f1c9a"
OTHER_STREAM_ID = "s-77b0e2"


def entry(key, op="insert", **fields):
    return {"org": "acme", "object": "Account", "op": op, "key": key, "ts": f"t-{key}", "fields": fields}


class Plugin:
    """One plugin process, as the broker runs it: requests on stdin, answers on stdout."""

    def __init__(self, data_directory, versions=(1, 2, 3), link="l1", stream="events"):
        self.process = subprocess.Popen([sys.executable, "-u", "adapter.py"], cwd=HERE, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.next_id = 1
        self.handshake = self.call("handshake", {"protocolVersions": list(versions), "broker": "orgsync"})
        self.opened = None
        if "result" in self.handshake:
            self.opened = self.call("open", {"link": link, "stream": stream, "settings": {"path": "t.sqlite"},
                                             "dataDirectory": data_directory})

    def call(self, method, params=None):
        request = {"id": self.next_id, "method": method}
        if params is not None:
            request["params"] = params
        self.process.stdin.write(json.dumps(request).encode() + b"\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise AssertionError(f"plugin exited during {method}: {self.process.stderr.read().decode()[-2000:]}")
        answer = json.loads(line)
        assert answer["id"] == self.next_id, answer
        self.next_id += 1
        return answer

    def result(self, method, params=None):
        answer = self.call(method, params)
        if "error" in answer:
            raise AssertionError(f"{method} failed: {answer['error']}")
        return answer["result"]

    def apply(self, offsets_entries, stream_id=STREAM_ID, epoch=1, retry=False, owner_epoch=0):
        params = {"stream": "events", "streamId": stream_id, "epoch": epoch, "ownerEpoch": owner_epoch,
                  "entries": [{"offset": o, "entry": e} for o, e in offsets_entries]}
        if retry:
            params["dead_letter_retry"] = True
        return self.call("apply", params)

    def close(self):
        if self.process.poll() is None:
            self.call("close")
            self.process.stdin.close()
            self.process.wait(timeout=ANSWER_TIMEOUT_S)
        self.process.stdout.close()
        self.process.stderr.close()


class PluginTestCase(unittest.TestCase):
    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix="orgsync-python-sqlite-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.plugins = []

    def start(self, **options):
        plugin = Plugin(self.directory, **options)
        self.plugins.append(plugin)
        self.addCleanup(plugin.close)
        return plugin

    def query(self, sql, args=()):
        db = sqlite3.connect(os.path.join(self.directory, "t.sqlite"))
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()

    def keys(self):
        return [row[0] for row in self.query('SELECT "key" FROM "Account" ORDER BY "key"')]

    def stored(self, link="l1"):
        return self.query("SELECT stream_id, epoch, applied_offset FROM orgsync_offsets WHERE link = ?", (link,))

    def position(self, plugin):
        return plugin.result("appliedPosition")["position"]


class HandshakeTests(PluginTestCase):
    def test_answers_3_when_the_broker_offers_1_2_and_3(self):
        plugin = self.start(versions=(1, 2, 3))
        self.assertEqual(plugin.handshake["result"]["protocolVersion"], 3)
        self.assertEqual(plugin.opened, {"id": 2, "result": {}})

    def test_answers_2_when_the_broker_offers_1_and_2(self):
        plugin = self.start(versions=(1, 2))
        self.assertEqual(plugin.handshake["result"]["protocolVersion"], 2)

    def test_answers_1_to_a_broker_that_speaks_only_1(self):
        plugin = self.start(versions=(1,))
        self.assertEqual(plugin.handshake["result"]["protocolVersion"], 1)

    def test_refuses_a_broker_that_speaks_neither(self):
        plugin = self.start(versions=(4,))
        self.assertEqual(plugin.handshake["error"]["class"], "connection")

    def test_manifest_names_protocol_3(self):
        with open(os.path.join(HERE, "plugin.json")) as f:
            self.assertEqual(json.load(f)["protocolVersion"], 3)


class ApplyTests(PluginTestCase):
    def test_same_identity_skips_entries_at_or_below_the_stored_offset(self):
        plugin = self.start()
        self.assertIn("result", plugin.apply([(0, entry("a")), (1, entry("b"))]))
        # A replay of the batch plus one more: inserts of a and b again would be rejected.
        self.assertIn("result", plugin.apply([(0, entry("a")), (1, entry("b")), (2, entry("c"))]))
        self.assertEqual(self.keys(), ["a", "b", "c"])
        self.assertEqual(self.position(plugin), {"streamId": STREAM_ID, "epoch": 1, "offset": 2, "ownerEpoch": 0})
        self.assertEqual(plugin.result("appliedOffset"), {"appliedOffset": 2})

    def test_a_batch_wholly_below_the_stored_offset_changes_nothing(self):
        plugin = self.start()
        plugin.apply([(5, entry("a"))])
        self.assertIn("result", plugin.apply([(3, entry("x"))]))
        self.assertEqual(self.keys(), ["a"])
        self.assertEqual(self.stored(), [(STREAM_ID, 1, 5)])

    def test_dead_letter_retry_applies_below_the_stored_offset_and_keeps_it(self):
        plugin = self.start()
        plugin.apply([(9, entry("a"))])
        self.assertIn("result", plugin.apply([(4, entry("late"))], retry=True))
        self.assertEqual(self.keys(), ["a", "late"])
        self.assertEqual(self.stored(), [(STREAM_ID, 1, 9)])

    def test_row_from_before_protocol_2_applies_every_entry(self):
        plugin = self.start()
        plugin.result("setAppliedPosition", {"position": {"streamId": None, "epoch": None, "offset": 7}})
        self.assertIn("result", plugin.apply([(3, entry("a")), (4, entry("b"))]))
        self.assertEqual(self.keys(), ["a", "b"])
        self.assertEqual(self.position(plugin), {"streamId": STREAM_ID, "epoch": 1, "offset": 4, "ownerEpoch": 0})

    def test_older_epoch_of_the_same_stream_applies_every_entry(self):
        plugin = self.start()
        plugin.apply([(10, entry("old"))], epoch=1)
        # Log repair cut offsets 4..10; epoch 2 writes them again with other entries.
        self.assertIn("result", plugin.apply([(4, entry("new4")), (5, entry("new5"))], epoch=2))
        self.assertEqual(self.keys(), ["new4", "new5", "old"])
        self.assertEqual(self.stored(), [(STREAM_ID, 2, 5)])
        # From now on epoch 2 is the stored identity: a replay is skipped.
        self.assertIn("result", plugin.apply([(5, entry("new5"))], epoch=2))

    def test_other_stream_id_is_a_position_conflict_and_commits_nothing(self):
        plugin = self.start()
        plugin.apply([(0, entry("a")), (399, entry("b"))], epoch=2)
        answer = plugin.apply([(400, entry("c")), (401, entry("d"))], stream_id=OTHER_STREAM_ID, epoch=1)
        self.assertEqual(answer["error"]["class"], "position_conflict")
        self.assertIn(f"target position belongs to stream {STREAM_ID} epoch 2 offset 399", answer["error"]["message"])
        self.assertNotIn("offset", answer["error"])
        self.assertEqual(self.keys(), ["a", "b"])
        self.assertEqual(self.stored(), [(STREAM_ID, 2, 399)])

    def test_newer_stored_epoch_is_a_position_conflict_and_commits_nothing(self):
        plugin = self.start()
        plugin.apply([(3, entry("a"))], epoch=3)
        for retry in (False, True):
            answer = plugin.apply([(4, entry("b"))], epoch=2, retry=retry)
            self.assertEqual(answer["error"]["class"], "position_conflict", answer)
            self.assertIn(f"stream {STREAM_ID} epoch 3 offset 3", answer["error"]["message"])
        self.assertEqual(self.keys(), ["a"])
        self.assertEqual(self.stored(), [(STREAM_ID, 3, 3)])

    def test_rejected_entry_still_reports_its_offset(self):
        plugin = self.start()
        plugin.apply([(0, entry("a"))])
        answer = plugin.apply([(1, entry("b")), (2, entry("a"))])
        self.assertEqual(answer["error"]["class"], "rejected")
        self.assertEqual(answer["error"]["offset"], 2)
        self.assertEqual(self.keys(), ["a"])
        self.assertEqual(self.stored(), [(STREAM_ID, 1, 0)])

    def test_apply_without_identity_under_protocol_2_commits_nothing(self):
        plugin = self.start()
        for bad in ({}, {"streamId": "", "epoch": 1}, {"streamId": "x" * 65, "epoch": 1},
                    {"streamId": STREAM_ID, "epoch": 0}, {"streamId": STREAM_ID, "epoch": True}):
            params = dict({"stream": "events", "entries": [{"offset": 0, "entry": entry("a")}]}, **bad)
            answer = plugin.call("apply", params)
            self.assertEqual(answer["error"]["class"], "connection", bad)
        self.assertIsNone(self.position(plugin))
        self.assertEqual(self.query("SELECT name FROM sqlite_master WHERE name = 'Account'"), [])

    def test_protocol_1_ignores_the_identity_and_stores_none(self):
        plugin = self.start(versions=(1,))
        plugin.apply([(0, entry("a"))], stream_id=STREAM_ID, epoch=1)
        # Under protocol 1 another id changes nothing: skip at or below the stored offset.
        self.assertIn("result", plugin.apply([(0, entry("a")), (1, entry("b"))], stream_id=OTHER_STREAM_ID, epoch=5))
        self.assertEqual(self.keys(), ["a", "b"])
        self.assertEqual(self.stored(), [(None, None, 1)])
        self.assertEqual(plugin.result("appliedOffset"), {"appliedOffset": 1})
        self.assertEqual(plugin.call("appliedPosition")["error"]["class"], "connection")


class FencingTests(PluginTestCase):
    def test_an_older_owner_epoch_is_fenced_and_commits_nothing(self):
        old_owner = self.start()
        self.assertIn("result", old_owner.apply([(0, entry("a"))], owner_epoch=5))
        new_owner = self.start()
        self.assertIn("result", new_owner.apply([(1, entry("b"))], owner_epoch=7))
        for retry in (False, True):
            answer = old_owner.apply([(2, entry("c"))], owner_epoch=5, retry=retry)
            self.assertEqual(answer["error"]["class"], "fenced", answer)
            self.assertIn("owner epoch 7", answer["error"]["message"])
        self.assertEqual(self.keys(), ["a", "b"])
        self.assertEqual(self.position(new_owner), {"streamId": STREAM_ID, "epoch": 1, "offset": 1, "ownerEpoch": 7})

    def test_protocol_2_stores_owner_epoch_0_and_is_fenced_by_a_later_owner(self):
        plugin = self.start(versions=(1, 2))
        plugin.apply([(0, entry("a"))], owner_epoch=9)  # ignored under protocol 2
        self.assertEqual(self.query("SELECT owner_epoch FROM orgsync_offsets"), [(0,)])
        self.start().apply([(1, entry("b"))], owner_epoch=1)
        self.assertEqual(plugin.apply([(2, entry("c"))])["error"]["class"], "fenced")

    def test_a_malformed_owner_epoch_commits_nothing(self):
        plugin = self.start()
        for bad in (-1, "7", True, 1.5):
            self.assertEqual(plugin.apply([(0, entry("a"))], owner_epoch=bad)["error"]["class"], "connection", bad)
        self.assertIsNone(self.position(plugin))


class PositionTests(PluginTestCase):
    def test_applied_position_is_null_without_a_row(self):
        plugin = self.start()
        self.assertEqual(plugin.result("appliedPosition"), {"position": None})
        self.assertEqual(plugin.result("appliedOffset"), {"appliedOffset": None})

    def test_set_applied_position_writes_and_deletes_this_links_row(self):
        plugin = self.start()
        other = self.start(link="l2")
        other.apply([(0, entry("a"))])
        position = {"streamId": STREAM_ID, "epoch": 4, "offset": 120, "ownerEpoch": 0}
        self.assertEqual(plugin.result("setAppliedPosition", {"position": position}), {})
        self.assertEqual(self.position(plugin), position)
        # Reset backwards (`links reset --from 50`): the next batch applies from 50.
        plugin.result("setAppliedPosition", {"position": dict(position, offset=49)})
        plugin.apply([(49, entry("skipped")), (50, entry("b"))], epoch=4)
        self.assertEqual(self.keys(), ["a", "b"])
        self.assertEqual(plugin.result("setAppliedPosition", {"position": None}), {})
        self.assertEqual(self.position(plugin), None)
        self.assertEqual(self.stored("l2"), [(STREAM_ID, 1, 0)])

    def test_set_applied_position_refuses_malformed_positions(self):
        plugin = self.start()
        plugin.apply([(3, entry("a"))])
        for bad in ({}, {"position": 5}, {"position": {"streamId": STREAM_ID, "epoch": 1}},
                    {"position": {"streamId": STREAM_ID, "epoch": None, "offset": 1}},
                    {"position": {"streamId": None, "epoch": 2, "offset": 1}},
                    {"position": {"streamId": STREAM_ID, "epoch": 1, "offset": -1}}):
            self.assertEqual(plugin.call("setAppliedPosition", bad)["error"]["class"], "connection", bad)
        self.assertEqual(self.stored(), [(STREAM_ID, 1, 3)])


class UpgradeTests(PluginTestCase):
    def test_a_protocol_1_table_gains_the_identity_columns_and_keeps_its_rows(self):
        db = sqlite3.connect(os.path.join(self.directory, "t.sqlite"))
        db.execute("CREATE TABLE orgsync_offsets (link TEXT PRIMARY KEY NOT NULL, stream TEXT NOT NULL, "
                   "applied_offset INTEGER NOT NULL, updated_at TEXT NOT NULL)")
        db.execute("INSERT INTO orgsync_offsets VALUES ('l1', 'events', 41, '2026-11-01T00:00:00.000Z')")
        db.commit()
        db.close()
        plugin = self.start()
        columns = [row[1] for row in self.query("PRAGMA table_info(orgsync_offsets)")]
        self.assertEqual(columns, ["link", "stream", "applied_offset", "updated_at", "stream_id", "epoch", "owner_epoch"])
        self.assertEqual(self.position(plugin), {"streamId": None, "epoch": None, "offset": 41, "ownerEpoch": 0})
        # A second process opening the upgraded file changes nothing more.
        self.start(link="l2")
        self.assertEqual(len(self.query("PRAGMA table_info(orgsync_offsets)")), 7)
        # The legacy row: the broker has checked it, so everything in the batch applies.
        plugin.apply([(42, entry("a")), (43, entry("b"))])
        self.assertEqual(self.keys(), ["a", "b"])
        self.assertEqual(self.stored(), [(STREAM_ID, 1, 43)])


class RuleTests(unittest.TestCase):
    """The protocol-2 rules alone, as `orgsync_plugin` offers them to other adapters."""
    same = StreamIdentity("s", 2)

    def test_plan(self):
        self.assertIsNone(plan_apply(None, self.same))
        self.assertIsNone(plan_apply(Position(None, None, 9), self.same))
        self.assertEqual(plan_apply(Position("s", 2, 9), self.same), 9)
        self.assertIsNone(plan_apply(Position("s", 1, 9), self.same))
        for conflicting in (Position("t", 2, 9), Position("s", 3, 9), Position("s", None, 9), Position(None, 2, 9)):
            with self.assertRaises(PositionConflict):
                plan_apply(conflicting, self.same)

    def test_plan_fences_a_later_owner_before_anything_else(self):
        self.assertEqual(plan_apply(Position("s", 2, 9, 4), self.same, owner_epoch=4), 9)
        self.assertEqual(plan_apply(Position("s", 2, 9, 4), self.same, owner_epoch=5), 9)
        for stored in (Position("s", 2, 9, 5), Position("t", 2, 9, 5), Position(None, None, 9, 5)):
            with self.assertRaises(Fenced):
                plan_apply(stored, self.same, owner_epoch=4)

    def test_position_after(self):
        self.assertEqual(position_after(Position("s", 2, 9, 3), self.same, 5, owner_epoch=4), Position("s", 2, 9, 4))
        self.assertEqual(position_after(None, self.same, 5), Position("s", 2, 5))
        self.assertEqual(position_after(Position("s", 2, 9), self.same, 5), Position("s", 2, 9))
        self.assertEqual(position_after(Position("s", 2, 3), self.same, 5), Position("s", 2, 5))
        self.assertEqual(position_after(Position("s", 1, 9), self.same, 5), Position("s", 2, 5))
        self.assertEqual(position_after(Position(None, None, 9), self.same, 5), Position("s", 2, 5))


if __name__ == "__main__":
    unittest.main()
