# -*- test-case-name: ross.test.test_fakes,ross.test.integration.test_overlay_snapshotter -*-
"""
The conformance suite of L{ross.interfaces.ISnapshotter}, as containerd's
snapshots/testsuite: every snapshotter passes it. Mounts that prepare and
view return are really performed (on the host, under the test's temporary
directory), written through, and undone; every test ends with nothing of
its own left in /proc/mounts.

A test case mixes in L{SnapshotterSuite} and defines C{make_snapshotter()},
returning a Deferred of a started snapshotter (stopped at cleanup). The
suite checks the records (kinds, parents, labels, holds, errors) of any
snapshotter, a fake without files included; a snapshotter whose mounts are
real mixes in L{MountedSnapshotterSuite}, which also checks what is seen
through them.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from typing import TYPE_CHECKING, Any, Generator

from twisted.internet.defer import Deferred, inlineCallbacks
from zope.interface.verify import verifyObject

from ross.engine.records import Mount
from ross.engine.snapshots.records import IN_USE_LABEL, Kind
from ross.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from ross.interfaces import ISnapshotter
from ross.testing.leaks import mounts_under
from ross.testing.mounts import mount_all, unmount

if TYPE_CHECKING:
    # Checked as the trial TestCase it is always mixed into.
    from twisted.trial.unittest import TestCase as _TestCase
else:
    _TestCase = object


class SnapshotterFixture(_TestCase):
    """
    A started snapshotter and helpers that mount what it returns. Mix into
    a trial TestCase and define C{make_snapshotter}.
    """

    snapshotter: Any

    def make_snapshotter(self) -> Deferred[Any]:
        raise NotImplementedError

    # trial runs a Deferred-returning setUp; its TestCase keeps unittest's
    # `-> None` (twisted/twisted#12037).
    @inlineCallbacks
    def setUp(self) -> Generator[Any, Any, None]:  # type: ignore[override]
        self.mount_base = tempfile.mkdtemp(prefix="ross-mnt-")
        self.addCleanup(self._check_no_mounts)
        self.snapshotter = yield self.make_snapshotter()

    def _check_no_mounts(self) -> None:
        left = mounts_under(self.mount_base)
        for point in reversed(left):
            unmount(point)
        shutil.rmtree(self.mount_base)
        self.assertEqual(left, [], "a test left mounts behind")

    def mounted(self, mounts: list[Mount], name: str = "m") -> str:
        """
        Perform C{mounts} on a fresh directory; unmounted at cleanup.
        """
        target = os.path.join(self.mount_base, name)
        os.mkdir(target)
        mount_all(mounts, target)
        self.addCleanup(self._unmount, target)
        return target

    def _unmount(self, target: str) -> None:
        if not os.path.isdir(target):
            return
        if target in mounts_under(target):
            unmount(target)
        os.rmdir(target)

    @inlineCallbacks
    def committed(self, name: str, parent: str = "", files: dict[str, bytes] | None = None) -> Generator[Any, Any, None]:
        """
        Make committed snapshot C{name} on C{parent} holding C{files}, written
        through its mount (mounted only when there are files to write).
        """
        key = f"{name}-active"
        mounts = yield self.snapshotter.prepare(key, parent)
        if files:
            target = self.mounted(mounts, name)
            for path, data in files.items():
                full = os.path.join(target, path)
                os.makedirs(os.path.dirname(full), exist_ok=True)
                with open(full, "wb") as f:
                    f.write(data)
            self._unmount(target)
        yield self.snapshotter.commit(name, key)

    @inlineCallbacks
    def assertUnchanged(self, operation: Any, error: type[BaseException]) -> Generator[Any, Any, None]:
        """
        C{operation()} fails with C{error} and the listing is the same after.
        """
        before = yield self.snapshotter.list()
        yield self.assertFailure(operation(), error)
        after = yield self.snapshotter.list()
        self.assertEqual(before, after)

    def read(self, target: str, path: str) -> bytes:
        with open(os.path.join(target, path), "rb") as f:
            return f.read()


class SnapshotterSuite(SnapshotterFixture):
    """
    Behaviour every snapshotter shares.
    """

    def test_interface(self) -> None:
        """
        The snapshotter provides ISnapshotter.
        """
        self.assertTrue(verifyObject(ISnapshotter, self.snapshotter))

    @inlineCallbacks
    def test_kinds(self) -> Generator[Any, Any, None]:
        """
        Prepare makes an active snapshot and view a view, each with its
        parent (none at the base) and mounts; commit makes a committed one.
        """
        yield self.snapshotter.prepare("base")
        yield self.snapshotter.commit("layer", "base")
        for create, key, parent in ((self.snapshotter.prepare, "a0", ""), (self.snapshotter.prepare, "a1", "layer"),
                                    (self.snapshotter.view, "v0", ""), (self.snapshotter.view, "v1", "layer")):
            mounts = yield create(key, parent)
            self.assertTrue(mounts)
            self.assertEqual((yield self.snapshotter.mounts(key)), mounts)
        infos = yield self.snapshotter.list()
        self.assertEqual(
            [(i.name, i.parent, i.kind) for i in infos],
            [("a0", "", Kind.ACTIVE), ("a1", "layer", Kind.ACTIVE), ("layer", "", Kind.COMMITTED),
             ("v0", "", Kind.VIEW), ("v1", "layer", Kind.VIEW)])

    @inlineCallbacks
    def test_commit_moves_key_to_name(self) -> Generator[Any, Any, None]:
        """
        After commit the active key is gone and the name is committed with
        the same parent and the labels given to commit.
        """
        yield self.committed("base")
        yield self.snapshotter.prepare("work", "base", labels={"a": "1"})
        yield self.snapshotter.commit("top", "work", labels={"b": "2"})
        yield self.assertFailure(self.snapshotter.stat("work"), NotFound)
        info = yield self.snapshotter.stat("top")
        self.assertEqual((info.kind, info.parent, dict(info.labels)), (Kind.COMMITTED, "base", {"b": "2"}))

    @inlineCallbacks
    def test_remove(self) -> Generator[Any, Any, None]:
        """
        Removing a snapshot with children fails and changes nothing; once
        the children are gone it works, down the chain.
        """
        yield self.committed("l1")
        yield self.snapshotter.prepare("c1", "l1")
        yield self.assertUnchanged(lambda: self.snapshotter.remove("l1"), FailedPrecondition)
        yield self.snapshotter.remove("c1")
        yield self.snapshotter.remove("l1")
        self.assertEqual((yield self.snapshotter.list()), [])

    @inlineCallbacks
    def test_bad_requests_change_nothing(self) -> Generator[Any, Any, None]:
        """
        Unknown keys, taken keys, parents that are missing or not committed,
        and wrong kinds fail with their own errors and change nothing.
        """
        yield self.committed("base")
        yield self.snapshotter.prepare("active", "base")
        yield self.snapshotter.view("view", "base")
        s = self.snapshotter
        cases = [
            (lambda: s.prepare("active", "base"), AlreadyExists),
            (lambda: s.prepare("base"), AlreadyExists),
            (lambda: s.view("view"), AlreadyExists),
            (lambda: s.prepare("x", "missing"), NotFound),
            (lambda: s.prepare("x", "active"), FailedPrecondition),
            (lambda: s.prepare(""), InvalidArgument),
            (lambda: s.commit("new", "missing"), NotFound),
            (lambda: s.commit("new", "view"), FailedPrecondition),
            (lambda: s.commit("base", "active"), AlreadyExists),
            (lambda: s.remove("missing"), NotFound),
            (lambda: s.stat("missing"), NotFound),
            (lambda: s.mounts("missing"), NotFound),
            (lambda: s.mounts("base"), FailedPrecondition),
            (lambda: s.usage("missing"), NotFound),
            (lambda: s.list(["bogus==1"]), InvalidArgument),
            (lambda: s.list(["name~=("]), InvalidArgument),
            (lambda: s.list(["kind==sideways"]), InvalidArgument),
        ]
        for operation, error in cases:
            yield self.assertUnchanged(operation, error)

    @inlineCallbacks
    def test_list_filters(self) -> Generator[Any, Any, None]:
        """
        List filters by kind, parent, labels and name pattern; all given
        filters must match.
        """
        yield self.committed("base")
        yield self.snapshotter.prepare("app-1", "base", labels={"team": "red"})
        yield self.snapshotter.prepare("app-2", "base", labels={"team": "blue", "x.y/z": "1"})
        yield self.snapshotter.view("peek", "base")

        @inlineCallbacks
        def names(*filters: str) -> Generator[Any, Any, list[str]]:
            infos = yield self.snapshotter.list(list(filters))
            return [i.name for i in infos]

        self.assertEqual((yield names()), ["app-1", "app-2", "base", "peek"])
        self.assertEqual((yield names("kind==committed")), ["base"])
        self.assertEqual((yield names("parent==base")), ["app-1", "app-2", "peek"])
        self.assertEqual((yield names("labels.team==blue")), ["app-2"])
        self.assertEqual((yield names('labels."x.y/z"')), ["app-2"])
        self.assertEqual((yield names("name~=^app-", "labels.team!=blue")), ["app-1"])
        self.assertEqual((yield names("kind==active,parent==base")), ["app-1", "app-2"])

    @inlineCallbacks
    def test_labels_update(self) -> Generator[Any, Any, None]:
        """
        Labels given at prepare are kept; update sets and deletes them.
        """
        yield self.snapshotter.prepare("k", labels={"a": "1", "b": "2"})
        info = yield self.snapshotter.update("k", {"a": None, "c": "3"})
        self.assertEqual(dict(info.labels), {"b": "2", "c": "3"})
        self.assertEqual(dict((yield self.snapshotter.stat("k")).labels), {"b": "2", "c": "3"})

    @inlineCallbacks
    def test_hold_refuses_remove_and_commit(self) -> Generator[Any, Any, None]:
        """
        A snapshot held by a container cannot be removed, committed or held
        by another; after release it can be removed.
        """
        yield self.snapshotter.prepare("rootfs")
        info = yield self.snapshotter.hold("rootfs", "c0ffee")
        self.assertEqual(info.labels[IN_USE_LABEL], "c0ffee")
        yield self.assertUnchanged(lambda: self.snapshotter.remove("rootfs"), FailedPrecondition)
        yield self.assertUnchanged(lambda: self.snapshotter.commit("img", "rootfs"), FailedPrecondition)
        yield self.assertUnchanged(lambda: self.snapshotter.hold("rootfs", "other"), FailedPrecondition)
        yield self.snapshotter.release("rootfs", "other")
        yield self.assertUnchanged(lambda: self.snapshotter.remove("rootfs"), FailedPrecondition)
        yield self.snapshotter.release("rootfs", "c0ffee")
        yield self.snapshotter.remove("rootfs")
        self.assertEqual((yield self.snapshotter.list()), [])


class MountedSnapshotterSuite(SnapshotterSuite):
    """
    What a snapshotter with real mounts adds: files written through a
    mount stay, parents show through children, views cannot be written,
    deletions hide the parent's files and usage counts a layer's own bytes.
    """

    @inlineCallbacks
    def test_prepare_base_is_writable(self) -> Generator[Any, Any, None]:
        """
        An active snapshot without a parent mounts read-write and keeps what
        is written through the mount.
        """
        mounts = yield self.snapshotter.prepare("base")
        target = self.mounted(mounts)
        with open(os.path.join(target, "hello"), "wb") as f:
            f.write(b"world")
        self._unmount(target)
        again = self.mounted((yield self.snapshotter.mounts("base")), "again")
        self.assertEqual(self.read(again, "hello"), b"world")
        info = yield self.snapshotter.stat("base")
        self.assertEqual((info.name, info.parent, info.kind), ("base", "", Kind.ACTIVE))

    @inlineCallbacks
    def test_commit_then_child_sees_parent(self) -> Generator[Any, Any, None]:
        """
        A child of a committed snapshot sees the parent's files; its own
        writes, and deletions of the parent's files, do not reach the parent.
        """
        yield self.committed("layer1", files={"etc/motd": b"one", "keep": b"k"})
        mounts = yield self.snapshotter.prepare("child", "layer1")
        target = self.mounted(mounts)
        self.assertEqual(self.read(target, "etc/motd"), b"one")
        with open(os.path.join(target, "etc/motd"), "wb") as f:
            f.write(b"changed")
        os.unlink(os.path.join(target, "keep"))
        self.assertFalse(os.path.exists(os.path.join(target, "keep")))
        view = self.mounted((yield self.snapshotter.view("parent-view", "layer1")), "view")
        self.assertEqual(self.read(view, "etc/motd"), b"one")
        self.assertEqual(self.read(view, "keep"), b"k")

    @inlineCallbacks
    def test_view_is_read_only(self) -> Generator[Any, Any, None]:
        """
        Views of one parent, of a chain, and of nothing cannot be written.
        """
        yield self.committed("l1", files={"a": b"1"})
        yield self.committed("l2", "l1", files={"b": b"2"})
        for key, parent in (("v1", "l1"), ("v2", "l2"), ("v0", "")):
            target = self.mounted((yield self.snapshotter.view(key, parent)), key)
            with self.assertRaises(OSError) as caught:
                open(os.path.join(target, "new"), "wb").close()
            self.assertEqual(caught.exception.errno, errno.EROFS)
            info = yield self.snapshotter.stat(key)
            self.assertEqual(info.kind, Kind.VIEW)
        v2 = os.path.join(self.mount_base, "v2")
        self.assertEqual((self.read(v2, "a"), self.read(v2, "b")), (b"1", b"2"))

    @inlineCallbacks
    def test_deleted_lower_file_stays_deleted(self) -> Generator[Any, Any, None]:
        """
        A file of the parent deleted in a child and committed is absent in a
        view of the child.
        """
        yield self.committed("l1", files={"gone": b"x", "stays": b"y"})
        target = self.mounted((yield self.snapshotter.prepare("c", "l1")), "c")
        os.unlink(os.path.join(target, "gone"))
        self._unmount(target)
        yield self.snapshotter.commit("l2", "c")
        view = self.mounted((yield self.snapshotter.view("v", "l2")), "v")
        self.assertEqual(sorted(os.listdir(view)), ["stays"])

    @inlineCallbacks
    def test_usage(self) -> Generator[Any, Any, None]:
        """
        Usage counts the bytes and inodes a snapshot holds by itself, not
        its parent's.
        """
        yield self.committed("big", files={"blob": b"x" * (1 << 20)})
        target = self.mounted((yield self.snapshotter.prepare("small", "big")))
        empty = yield self.snapshotter.usage("small")
        with open(os.path.join(target, "f"), "wb") as f:
            f.write(b"y" * 8192)
        usage = yield self.snapshotter.usage("small")
        big = yield self.snapshotter.usage("big")
        self.assertGreaterEqual(big.size, 1 << 20)
        self.assertEqual(big.inodes, 2)
        self.assertEqual(usage.inodes, empty.inodes + 1)
        self.assertGreaterEqual(usage.size - empty.size, 8192)
        self.assertLess(usage.size, 1 << 20)
