# -*- test-case-name: ross.test.integration.test_overlay_snapshotter -*-
"""
The overlay snapshotter against the conformance suite with real overlay
mounts, plus what is its own: directory layout, the mount data limit,
cleanup of orphans and crash safety under SIGKILL.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Generator

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import TestCase

from ross.engine.reactors import engine_reactor
from ross.engine.snapshots import MOUNT_DATA_LIMIT, OverlaySnapshotter
from ross.errors import FailedPrecondition
from ross.test.snapshotter_suite import MountedSnapshotterSuite, SnapshotterFixture
from ross.testing.daemon import REPO


def _snapshotter(testcase: TestCase, state_dir: Path | None = None) -> Deferred[OverlaySnapshotter]:
    state = state_dir or Path(testcase.mktemp()).absolute() / "snapshots" / "overlayfs"
    snapshotter = OverlaySnapshotter(engine_reactor(reactor), state)
    testcase.addCleanup(snapshotter.stop)
    return snapshotter.start().addCallback(lambda _: snapshotter)


class OverlayConformanceTests(MountedSnapshotterSuite, TestCase):
    """
    The overlay snapshotter passes the ISnapshotter conformance suite,
    with what its real mounts show.
    """

    def make_snapshotter(self) -> Deferred[Any]:
        return _snapshotter(self)


class OverlayTests(SnapshotterFixture, TestCase):
    """
    Behaviour particular to the overlay snapshotter.
    """

    def make_snapshotter(self) -> Deferred[Any]:
        return _snapshotter(self)

    @inlineCallbacks
    def test_mount_shapes(self) -> Generator[Any, Any, None]:
        """
        Active without parent: rw bind of its own fs; active on a parent:
        one overlay mount with absolute work, upper and lower dirs (nearest
        parent first); view of one parent: ro bind of the parent.
        """
        s = self.snapshotter
        base = yield s.prepare("a")
        self.assertEqual((base[0].type, base[0].options), ("bind", ("rbind", "rw")))
        yield self.committed("l1")
        yield self.committed("l2", "l1")
        (mount,) = yield s.prepare("b", "l2")
        options = dict(o.split("=", 1) for o in mount.options)
        lowers = options["lowerdir"].split(":")
        self.assertEqual(mount.type, "overlay")
        self.assertTrue(all(os.path.isabs(p) and os.path.isdir(p) for p in lowers + [options["upperdir"]]))
        # l1 was made before l2: its directory ID is the smaller one.
        self.assertEqual(len(lowers), 2)
        self.assertGreater(int(Path(lowers[0]).parent.name), int(Path(lowers[1]).parent.name))
        (view,) = yield s.view("v", "l1")
        self.assertEqual((view.type, view.options[-1]), ("bind", "ro"))
        self.assertEqual(view.source, lowers[1])

    @inlineCallbacks
    def test_layout(self) -> Generator[Any, Any, None]:
        """
        Metadata lives in metadata.db (WAL) beside short numeric snapshot
        directories.
        """
        yield self.snapshotter.prepare("a")
        state = self.snapshotter.state_dir
        db = sqlite3.connect(state / "metadata.db")
        self.addCleanup(db.close)
        self.assertEqual(db.execute("PRAGMA journal_mode").fetchone()[0], "wal")
        self.assertEqual(sorted(os.listdir(state / "snapshots")), ["1"])
        self.assertEqual(sorted(os.listdir(state / "snapshots" / "1")), ["fs", "work"])

    @inlineCallbacks
    def test_mount_data_limit(self) -> Generator[Any, Any, None]:
        """
        A chain whose overlay options would not fit in one page is refused
        at prepare time, changing nothing; the deepest chain that fits
        really mounts.
        """
        parent = ""
        depth = 0
        while True:
            name = f"l{depth}"
            try:
                yield self.snapshotter.prepare(f"{name}-a", parent)
            except FailedPrecondition:
                break
            yield self.snapshotter.commit(name, f"{name}-a")
            parent, depth = name, depth + 1
        self.assertGreater(depth, 20)
        before = yield self.snapshotter.list()
        error = yield self.assertFailure(self.snapshotter.prepare("too-deep", parent), FailedPrecondition)
        self.assertIn("too deep", str(error))
        self.assertEqual((yield self.snapshotter.list()), before)
        (mount,) = yield self.snapshotter.view("deepest", f"l{depth - 2}")
        self.assertLessEqual(len(",".join(mount.options)), MOUNT_DATA_LIMIT)
        target = self.mounted([mount])
        self.assertEqual(os.listdir(target), [])

    @inlineCallbacks
    def test_cleanup_removes_orphans_only(self) -> Generator[Any, Any, None]:
        """
        Cleanup removes directories no record owns (a half-made prepare, a
        half-removed snapshot) and nothing else.
        """
        yield self.snapshotter.prepare("keep")
        snapshots = self.snapshotter.snapshots_dir
        (snapshots / "new-x1y2").mkdir()
        (snapshots / "77" / "fs").mkdir(parents=True)
        (snapshots / "rm-5").mkdir()
        removed = yield self.snapshotter.cleanup()
        self.assertEqual(removed, 3)
        self.assertEqual(os.listdir(snapshots), ["1"])
        self.assertEqual((yield self.snapshotter.cleanup()), 0)

    @inlineCallbacks
    def test_start_cleans_up(self) -> Generator[Any, Any, None]:
        """
        A snapshotter starting on a state directory a crash left behind
        removes the orphans and keeps every snapshot.
        """
        yield self.snapshotter.prepare("keep")
        yield self.snapshotter.stop()
        snapshots = self.snapshotter.snapshots_dir
        (snapshots / "new-abc").mkdir()
        (snapshots / "9").mkdir()
        again = yield _snapshotter(self, self.snapshotter.state_dir)
        self.assertEqual(os.listdir(snapshots), ["1"])
        self.assertEqual([i.name for i in (yield again.list())], ["keep"])


# A child that runs snapshot operations and dies by SIGKILL at a chosen
# point: the Nth call of a chosen function (a directory rename, sqlite's
# COMMIT statement, rmtree...), so every step boundary gets crashed at.
_CHILD = textwrap.dedent(
    """
    import os, signal, sqlite3, sys
    sys.path.insert(0, {repo!r})
    from pathlib import Path
    from twisted.internet import reactor
    from twisted.internet.defer import inlineCallbacks
    from ross.engine.snapshots import overlay
    from ross.engine.snapshots.overlay import OverlaySnapshotter

    point, nth = sys.argv[1], int(sys.argv[2])
    calls = [0]

    def die_on(original):
        def wrapper(*args, **kwargs):
            calls[0] += 1
            if calls[0] == nth:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(*args, **kwargs)
        return wrapper

    if point == "rename":
        overlay.os.rename = die_on(os.rename)
    elif point == "rmtree":
        overlay.remove_tree = die_on(overlay.remove_tree)
    elif point == "mkdir":
        overlay.os.mkdir = die_on(os.mkdir)
    elif point == "commit":
        from ross.engine.snapshots import metastore
        real = metastore.Transaction.__init__
        class Dying:
            def __init__(self, db):
                self._db = db
            def execute(self, sql, *a):
                if sql == "COMMIT":
                    calls[0] += 1
                    if calls[0] == nth:
                        os.kill(os.getpid(), signal.SIGKILL)
                return self._db.execute(sql, *a)
            def __getattr__(self, name):
                return getattr(self._db, name)
        store_connection = metastore.MetaStore._connection
        metastore.MetaStore._connection = lambda self: Dying(store_connection(self))

    @inlineCallbacks
    def run():
        s = OverlaySnapshotter(reactor, Path({state!r}))
        yield s.start()
        yield s.prepare("a1")
        yield s.commit("L1", "a1")
        yield s.prepare("a2", "L1")
        yield s.commit("L2", "a2")
        yield s.view("v", "L2")
        yield s.remove("v")
        yield s.prepare("a3", "L2")
        yield s.remove("a3")
        yield s.remove("L2")
        yield s.stop()
        print("done", flush=True)
        reactor.stop()

    reactor.callWhenRunning(run)
    reactor.run()
    """
)

# The states a crash may leave, in order: (committed/active/view names).
_STATES = [
    set(),
    {"a1"},
    {"L1"},
    {"L1", "a2"},
    {"L1", "L2"},
    {"L1", "L2", "v"},
    {"L1", "L2"},
    {"L1", "L2", "a3"},
    {"L1", "L2"},
    {"L1"},
]


class CrashTests(TestCase):
    """
    SIGKILL at any point of prepare, view, commit and remove leaves the old
    or the new state, never a half snapshot; cleanup then leaves exactly
    the directories the records own.
    """

    def crash(self, point: str, nth: int) -> tuple[int, Path]:
        state = Path(self.mktemp()).absolute() / "overlayfs"
        script = _CHILD.format(repo=str(REPO), state=str(state))
        result = subprocess.run([sys.executable, "-c", script, point, str(nth)], capture_output=True, timeout=60)
        return result.returncode, state

    @inlineCallbacks
    def check(self, state: Path) -> Generator[Any, Any, None]:
        s = yield _snapshotter(self, state)
        infos = yield s.list()
        names = {i.name for i in infos}
        self.assertIn(names, _STATES)
        yield s.cleanup()
        db = sqlite3.connect(state / "metadata.db")
        ids = {str(r[0]) for r in db.execute("SELECT id FROM snapshots")}
        db.close()
        self.assertEqual(set(os.listdir(s.snapshots_dir)), ids)
        for info in infos:
            mounts = None
            if info.kind.value != "committed":
                mounts = yield s.mounts(info.name)
                for m in mounts:
                    for option in m.options:
                        if "dir=" in option:
                            for path in option.split("=", 1)[1].split(":"):
                                self.assertTrue(os.path.isdir(path), path)

    @inlineCallbacks
    def test_crash_points(self) -> Generator[Any, Any, None]:
        """
        Killing the child at every rename, mkdir, rmtree and COMMIT of the
        sequence leaves a consistent store each time.
        """
        killed = 0
        for point, calls in (("rename", 8), ("mkdir", 12), ("rmtree", 8), ("commit", 12)):
            for nth in range(1, calls + 1):
                code, state = self.crash(point, nth)
                if code == -signal.SIGKILL:
                    killed += 1
                else:
                    self.assertEqual(code, 0)
                if (state / "metadata.db").exists():
                    yield self.check(state)
        self.assertGreater(killed, 25)
