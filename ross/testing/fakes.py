# -*- test-case-name: ross.test.test_fakes -*-
"""
Verified fakes of the engine's contracts (L{ross.interfaces}), for tests
of the code that uses them: each declares its interface, is checked with
C{verifyObject} (L{ross.test.test_interfaces}) and, where the contract
has a conformance suite, passes it as the real driver does.

    MemorySnapshotter       ISnapshotter: records in memory, no files
"""

from __future__ import annotations

import builtins
from typing import Any, Callable, Iterable, Mapping, TypeVar

from twisted.internet.defer import Deferred, maybeDeferred
from zope.interface import implementer

from ross.engine.records import Mount
from ross.engine.snapshots.filters import parse_filters
from ross.engine.snapshots.metastore import MemoryMetaStore, Record
from ross.engine.snapshots.overlay import validate_key
from ross.engine.snapshots.records import Kind, SnapshotInfo, Usage
from ross.errors import FailedPrecondition
from ross.interfaces import ISnapshotter

T = TypeVar("T")


def _now(fn: Callable[..., T], *args: Any) -> Deferred[T]:
    return maybeDeferred(fn, *args)


@implementer(ISnapshotter)
class MemorySnapshotter:
    """
    A snapshotter that keeps its records in memory (the overlay
    snapshotter's metadata rules, on an in-memory database) and holds no
    files: every Deferred has fired when a method returns. Its mounts are
    bind mounts of directories under C{root} that do not exist; nothing
    mounts them but a fake runtime. Usage is zero, as it stores nothing.
    """

    name = "memory"

    def __init__(self, root: str = "/nonexistent/ross-memory-snapshotter") -> None:
        self.root = root
        self._meta = MemoryMetaStore()

    def _mounts(self, record: Record) -> builtins.list[Mount]:
        kind = record.info.kind
        if kind is Kind.COMMITTED:
            raise FailedPrecondition(
                f"Snapshot {record.info.name} is committed; only active snapshots and views have mounts")
        return [Mount(type="bind", source=f"{self.root}/{record.id}/fs",
                      options=("rbind", "rw" if kind is Kind.ACTIVE else "ro"))]

    def _create(self, kind: Kind, key: str, parent: str,
                labels: Mapping[str, str] | None) -> builtins.list[Mount]:
        validate_key(key)
        with self._meta.write() as tx:
            return self._mounts(tx.create(key, parent, kind, dict(labels or {})))

    def prepare(self, key: str, parent: str = "",
                labels: Mapping[str, str] | None = None) -> Deferred[builtins.list[Mount]]:
        return _now(self._create, Kind.ACTIVE, key, parent, labels)

    def view(self, key: str, parent: str = "",
             labels: Mapping[str, str] | None = None) -> Deferred[builtins.list[Mount]]:
        return _now(self._create, Kind.VIEW, key, parent, labels)

    def mounts(self, key: str) -> Deferred[builtins.list[Mount]]:
        def mounts() -> builtins.list[Mount]:
            with self._meta.read() as tx:
                return self._mounts(tx.get(key))

        return _now(mounts)

    def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> Deferred[None]:
        def commit() -> None:
            validate_key(name, "name")
            validate_key(key)
            with self._meta.write() as tx:
                tx.commit(name, key, dict(labels or {}))

        return _now(commit)

    def remove(self, key: str) -> Deferred[None]:
        def remove() -> None:
            with self._meta.write() as tx:
                tx.remove(key)

        return _now(remove)

    def stat(self, key: str) -> Deferred[SnapshotInfo]:
        def stat() -> SnapshotInfo:
            with self._meta.read() as tx:
                return tx.get(key).info

        return _now(stat)

    def list(self, filters: Iterable[str] = ()) -> Deferred[builtins.list[SnapshotInfo]]:
        def list_() -> builtins.list[SnapshotInfo]:
            matches = parse_filters(filters)
            with self._meta.read() as tx:
                return [r.info for r in tx.all() if matches(r.info)]

        return _now(list_)

    def update(self, key: str, labels: Mapping[str, str | None]) -> Deferred[SnapshotInfo]:
        def update() -> SnapshotInfo:
            with self._meta.write() as tx:
                return tx.update_labels(key, labels).info

        return _now(update)

    def hold(self, key: str, holder: str) -> Deferred[SnapshotInfo]:
        def hold() -> SnapshotInfo:
            with self._meta.write() as tx:
                return tx.hold(key, holder).info

        return _now(hold)

    def release(self, key: str, holder: str) -> Deferred[SnapshotInfo]:
        def release() -> SnapshotInfo:
            with self._meta.write() as tx:
                return tx.release(key, holder).info

        return _now(release)

    def usage(self, key: str) -> Deferred[Usage]:
        def usage() -> Usage:
            with self._meta.read() as tx:
                tx.get(key)
            return Usage(size=0, inodes=0)

        return _now(usage)

    def cleanup(self) -> Deferred[int]:
        # No directories, so no orphans.
        return _now(lambda: 0)

    def close(self) -> None:
        self._meta.close()

