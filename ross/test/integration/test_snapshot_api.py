# -*- test-case-name: ross.test.integration.test_snapshot_api -*-
"""
SnapshotterService over real gRPC (the in-process daemon): every RPC, and
bad input answered with the right status code and changing nothing.
"""

from __future__ import annotations

from typing import Any, Callable, Generator

import grpc
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from ross.testing.daemon import InProcessDaemon
from ross.v1 import snapshot_pb2 as pb


class SnapshotAPITests(TestCase):
    """
    The snapshot RPCs as clients see them.
    """

    # trial runs a Deferred-returning setUp; its TestCase keeps unittest's
    # `-> None` (twisted/twisted#12037).
    @inlineCallbacks
    def setUp(self) -> Generator[Any, Any, None]:  # type: ignore[override]
        self.daemon = InProcessDaemon(self)
        yield self.daemon.start()
        self.stub = self.daemon.clients().snapshots

    def call(self, method: str, request: Any) -> Any:
        return self.daemon.call(getattr(self.stub, method), request, timeout=30)

    @inlineCallbacks
    def names(self, *filters: str) -> Generator[Any, Any, list[tuple[str, str, int]]]:
        response = yield self.call("List", pb.ListSnapshotsRequest(filters=list(filters)))
        return [(i.name, i.parent, i.kind) for i in response.info]

    @inlineCallbacks
    def test_lifecycle(self) -> Generator[Any, Any, None]:
        """
        Prepare, Commit, View, Stat, List, Mounts, Usage and Remove work
        end to end with containerd's kinds and mounts.
        """
        prepared = yield self.call("Prepare", pb.PrepareSnapshotRequest(key="base-x", labels={"a": "b"}))
        self.assertEqual([m.type for m in prepared.mounts], ["bind"])
        yield self.call("Commit", pb.CommitSnapshotRequest(name="base", key="base-x"))
        child = yield self.call("Prepare", pb.PrepareSnapshotRequest(key="c", parent="base"))
        self.assertEqual(child.mounts[0].type, "overlay")
        view = yield self.call("View", pb.ViewSnapshotRequest(key="v", parent="base"))
        self.assertEqual(list(view.mounts[0].options), ["rbind", "ro"])
        mounts = yield self.call("Mounts", pb.MountsRequest(key="c"))
        self.assertEqual(mounts.mounts, child.mounts)
        stat = yield self.call("Stat", pb.StatSnapshotRequest(key="c"))
        self.assertEqual((stat.info.name, stat.info.parent, stat.info.kind), ("c", "base", pb.SNAPSHOT_KIND_ACTIVE))
        self.assertTrue(stat.info.created.seconds > 0)
        self.assertEqual((yield self.names("kind==committed")), [("base", "", pb.SNAPSHOT_KIND_COMMITTED)])
        usage = yield self.call("Usage", pb.UsageRequest(key="base"))
        self.assertEqual(usage.inodes, 1)
        yield self.call("Remove", pb.RemoveSnapshotRequest(key="c"))
        yield self.call("Remove", pb.RemoveSnapshotRequest(key="v"))
        yield self.call("Remove", pb.RemoveSnapshotRequest(key="base"))
        self.assertEqual((yield self.names()), [])
        cleaned = yield self.call("Cleanup", pb.CleanupRequest())
        self.assertEqual(cleaned.removed, 0)

    @inlineCallbacks
    def test_bad_input(self) -> Generator[Any, Any, None]:
        """
        Unknown keys are NOT_FOUND, taken keys ALREADY_EXISTS, removing a
        parent FAILED_PRECONDITION, bad filters, missing keys and unknown
        snapshotters INVALID_ARGUMENT; each names the problem and the store
        is the same afterwards.
        """
        yield self.call("Prepare", pb.PrepareSnapshotRequest(key="p-x"))
        yield self.call("Commit", pb.CommitSnapshotRequest(name="p", key="p-x"))
        yield self.call("Prepare", pb.PrepareSnapshotRequest(key="child", parent="p"))
        code = grpc.StatusCode
        cases: list[tuple[str, Any, grpc.StatusCode, str]] = [
            ("Stat", pb.StatSnapshotRequest(key="nope"), code.NOT_FOUND, "No such snapshot: nope"),
            ("Remove", pb.RemoveSnapshotRequest(key="nope"), code.NOT_FOUND, "nope"),
            ("Mounts", pb.MountsRequest(key="nope"), code.NOT_FOUND, "nope"),
            ("Prepare", pb.PrepareSnapshotRequest(key="x", parent="nope"), code.NOT_FOUND, "nope"),
            ("Commit", pb.CommitSnapshotRequest(name="n", key="nope"), code.NOT_FOUND, "nope"),
            ("Prepare", pb.PrepareSnapshotRequest(key="child", parent="p"), code.ALREADY_EXISTS, "child"),
            ("Commit", pb.CommitSnapshotRequest(name="p", key="child"), code.ALREADY_EXISTS, "p"),
            ("Remove", pb.RemoveSnapshotRequest(key="p"), code.FAILED_PRECONDITION, "has children"),
            ("Mounts", pb.MountsRequest(key="p"), code.FAILED_PRECONDITION, "committed"),
            ("List", pb.ListSnapshotsRequest(filters=["colour==red"]), code.INVALID_ARGUMENT, "unknown field"),
            ("List", pb.ListSnapshotsRequest(filters=["name~=["]), code.INVALID_ARGUMENT, "regular expression"),
            ("Prepare", pb.PrepareSnapshotRequest(key=""), code.INVALID_ARGUMENT, "key is required"),
            ("Stat", pb.StatSnapshotRequest(snapshotter="zfs", key="p"), code.INVALID_ARGUMENT, "zfs"),
            ("Diff", pb.DiffSnapshotRequest(key="child", media_type="text/plain"), code.INVALID_ARGUMENT, "text/plain"),
        ]
        before = yield self.names()
        for method, request, expected, message in cases:
            with self.subTest(method=method, request=str(request)):
                error = yield self.assertFailure(self.call(method, request), grpc.RpcError)
                self.assertEqual(error.code(), expected, error.details())
                self.assertIn(message, error.details())
            self.assertEqual((yield self.names()), before)
