# -*- test-case-name: ross.test.integration.test_snapshot_cli -*-
"""
``ross snapshot ...`` as a user runs it, against the in-process daemon.
The mount command ``ross snapshot mounts`` prints is run for real.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from typing import Any, Generator

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from ross.testing.daemon import InProcessDaemon, run_cli
from ross.testing.leaks import mounts_under
from ross.testing.mounts import unmount


class SnapshotCliTests(TestCase):
    # trial runs a Deferred-returning setUp; its TestCase keeps unittest's
    # `-> None` (twisted/twisted#12037).
    @inlineCallbacks
    def setUp(self) -> Generator[Any, Any, None]:  # type: ignore[override]
        self.daemon = InProcessDaemon(self)
        yield self.daemon.start()

    @inlineCallbacks
    def ross(self, *args: str, code: int = 0) -> Generator[Any, Any, str]:
        result = yield deferToThread(run_cli, self.daemon.address, "snapshot", *args)
        self.assertEqual(result.returncode, code, result.stderr)
        return result.stdout.decode() + result.stderr.decode()

    @inlineCallbacks
    def test_commands(self) -> Generator[Any, Any, None]:
        """
        prepare, commit, view, ls (table, -q, json, filters), stat (JSON),
        usage and rm behave like ctr's; errors are one line with status 1
        for rm and 125 otherwise.
        """
        yield self.ross("prepare", "base-x", "--label", "team=red")
        yield self.ross("commit", "base", "base-x", "--label", "layer=1")
        yield self.ross("prepare", "work", "base")
        yield self.ross("view", "peek", "base")
        table = yield self.ross("ls")
        self.assertEqual(
            [line.split() for line in table.splitlines()],
            [["KEY", "PARENT", "KIND"], ["base", "Committed"], ["peek", "base", "View"], ["work", "base", "Active"]],
        )
        self.assertEqual((yield self.ross("ls", "-q", "--filter", "kind==active")).split(), ["work"])
        listing = json.loads((yield self.ross("ls", "--format", "json")))
        self.assertEqual([(d["Name"], d["Kind"]) for d in listing], [("base", "Committed"), ("peek", "View"), ("work", "Active")])
        info = json.loads((yield self.ross("stat", "base")))
        self.assertEqual((info["Kind"], info["Labels"]), ("Committed", {"layer": "1"}))
        usage = yield self.ross("usage", "-b", "base")
        self.assertEqual(usage.splitlines()[1].split()[0::2], ["base", "1"])
        error = yield self.ross("rm", "base", code=1)
        self.assertEqual(error.strip(), "Error: Snapshot base has children (peek, work); remove them first")
        error = yield self.ross("stat", "nope", code=125)
        self.assertEqual(error.strip(), "Error: No such snapshot: nope")
        error = yield self.ross("ls", "--filter", "colour==red", code=125)
        self.assertIn("unknown field 'colour'", error)
        yield self.ross("rm", "work", "peek")
        yield self.ross("rm", "base")
        self.assertEqual((yield self.ross("ls", "-q")), "")

    @inlineCallbacks
    def test_mounts_command_mounts(self) -> Generator[Any, Any, None]:
        """
        The command ``ross snapshot mounts`` prints mounts the snapshot:
        the parent's file is visible at the target.
        """
        yield self.ross("prepare", "base-x")
        mounts = yield self.daemon.engine.snapshotter.mounts("base-x")
        with open(os.path.join(mounts[0].source, "hello"), "w") as f:
            f.write("hi")
        yield self.ross("commit", "base", "base-x")
        yield self.ross("prepare", "work", "base")
        target = tempfile.mkdtemp(prefix="ross-mnt-")
        self.addCleanup(os.rmdir, target)
        command = (yield self.ross("mounts", target, "work")).strip()
        self.assertTrue(command.startswith(f"mount -t overlay overlay {target} -o "), command)
        subprocess.run(command.split(), check=True, timeout=60)
        self.addCleanup(unmount, target)
        self.assertEqual(mounts_under(target), [target])
        with open(os.path.join(target, "hello")) as f:
            self.assertEqual(f.read(), "hi")
