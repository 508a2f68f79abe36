# -*- test-case-name: ross.test.integration.test_overlay_snapshotter -*-
"""
Snapshots: containerd's snapshot model over overlayfs.

    OverlaySnapshotter(reactor, state_dir, events=None)
        .start() / .stop()
        .prepare(key, parent="", labels=None) -> Deferred[list[Mount]]
        .view(key, parent="", labels=None)    -> Deferred[list[Mount]]
        .commit(name, key, labels=None)       -> Deferred[None]
        .remove(key)                          -> Deferred[None]
        .stat(key) / .list(filters) / .mounts(key) / .usage(key) / .cleanup()
        .update(key, {label: value-or-None}) / .hold(key, holder) / .release(key, holder)
        .apply_layer(key, blob_path)          -> Deferred[LayerResult]
        .diff(key, sink, compression, exclude=()) -> Deferred[DiffResult]
"""

from ross.engine.fsutil import disk_usage
from ross.engine.snapshots.overlay import MOUNT_DATA_LIMIT, OverlaySnapshotter
from ross.engine.snapshots.records import IN_USE_LABEL, Kind, SnapshotInfo, Usage

__all__ = [
    "IN_USE_LABEL",
    "Kind",
    "MOUNT_DATA_LIMIT",
    "OverlaySnapshotter",
    "SnapshotInfo",
    "Usage",
    "disk_usage",
]
