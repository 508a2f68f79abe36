"""
The verified fakes of L{ross.testing.fakes} keep the contracts they stand
for: the in-memory snapshotter passes the snapshotter conformance suite.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import TestCase

from ross.test.snapshotter_suite import SnapshotterSuite
from ross.testing.fakes import MemorySnapshotter


class MemorySnapshotterTests(SnapshotterSuite, TestCase):
    """
    The in-memory snapshotter passes the ISnapshotter conformance suite
    (what does not need real mounts).
    """

    def make_snapshotter(self) -> Deferred[Any]:
        snapshotter = MemorySnapshotter()
        self.addCleanup(snapshotter.close)
        return succeed(snapshotter)
