# -*- test-case-name: ross.test.test_snapshot_filters -*-
"""
Records of the snapshotter: what a snapshot is, as callers see it.
"""

from __future__ import annotations

import enum
from typing import Mapping

import attrs

#: Label that marks a snapshot as used by a container. The container manager
#: sets it (L{ross.engine.snapshots.OverlaySnapshotter.hold}) on the active
#: snapshot a container runs on and clears it (C{release}) once the container
#: is removed; while it is set, C{remove} and C{commit} of that snapshot fail
#: with FailedPrecondition. Its value names the holder (a container ID).
IN_USE_LABEL = "ross.io/in-use"


class Kind(enum.Enum):
    """
    containerd's snapshot kinds.
    """

    VIEW = "view"
    ACTIVE = "active"
    COMMITTED = "committed"

    @classmethod
    def parse(cls, text: str) -> Kind:
        """
        The kind called C{text} (case-insensitive); ValueError otherwise.
        """
        return cls(text.strip().lower())


@attrs.frozen
class SnapshotInfo:
    """
    One snapshot.

    @ivar name: key of an active snapshot or view, name of a committed one.
    @ivar parent: name of the committed parent, "" at the base of a chain.
    @ivar created_ns: creation time, nanoseconds since the epoch.
    @ivar updated_ns: time of the last change (commit, label update).
    """

    name: str
    parent: str
    kind: Kind
    labels: Mapping[str, str] = attrs.field(factory=dict)
    created_ns: int = 0
    updated_ns: int = 0

    @property
    def holder(self) -> str | None:
        """
        Who holds this snapshot in use (the value of L{IN_USE_LABEL}), if anyone.
        """
        return self.labels.get(IN_USE_LABEL)


@attrs.frozen
class Usage:
    """
    Disk use of a snapshot's own directory (not its parents').

    @ivar size: bytes allocated (st_blocks * 512), hard links counted once.
    @ivar inodes: distinct inodes.
    """

    size: int
    inodes: int
