# -*- test-case-name: ross.test.integration.test_snapshot_api -*-
"""
SnapshotterService: the overlay snapshotter over gRPC. Thin: validation
and conversion here, behaviour in L{ross.engine.snapshots}.
"""

from __future__ import annotations

from typing import Any, Iterable

from ross.engine.layers import MEDIA_TYPE_GZIP, MEDIA_TYPE_TAR
from ross.engine.records import Mount
from ross.engine.snapshots import Kind, OverlaySnapshotter, SnapshotInfo
from ross.errors import InvalidArgument
from ross.protocols.bridge import CallInfo
from ross.services.convert import timestamp
from ross.v1 import common_pb2, snapshot_pb2

_KINDS = {
    Kind.VIEW: snapshot_pb2.SNAPSHOT_KIND_VIEW,
    Kind.ACTIVE: snapshot_pb2.SNAPSHOT_KIND_ACTIVE,
    Kind.COMMITTED: snapshot_pb2.SNAPSHOT_KIND_COMMITTED,
}
# How long a blob made by Diff is kept from content GC while nothing refers
# to it (containerd's default lease expiry).
DIFF_LEASE_SECONDS = 24 * 3600

_COMPRESSION = {"": "gzip", MEDIA_TYPE_GZIP: "gzip", MEDIA_TYPE_TAR: "none"}


def mount_to_proto(mount: Mount) -> common_pb2.Mount:
    return common_pb2.Mount(type=mount.type, source=mount.source, target=mount.target, options=list(mount.options))


def mounts_to_proto(mounts: Iterable[Mount]) -> list[common_pb2.Mount]:
    return [mount_to_proto(m) for m in mounts]


def info_to_proto(info: SnapshotInfo) -> snapshot_pb2.SnapshotInfo:
    return snapshot_pb2.SnapshotInfo(
        name=info.name,
        parent=info.parent,
        kind=_KINDS[info.kind],
        labels=dict(info.labels),
        created=timestamp(info.created_ns),
        updated=timestamp(info.updated_ns),
    )


def _require(value: str, what: str) -> str:
    if not value:
        raise InvalidArgument(f"{what} is required")
    return value


class SnapshotterAPI:
    """
    Reactor-side implementation of ross.v1.SnapshotterService.

    @param engine: the engine; C{engine.snapshotter} serves every call,
        ExtractLayer and Diff also use C{engine.content} (the content store).
    """

    def __init__(self, engine: Any) -> None:
        self._engine = engine

    def _snapshotter(self, name: str) -> OverlaySnapshotter:
        snapshotter: OverlaySnapshotter = self._engine.snapshotter
        if name not in ("", snapshotter.name):
            raise InvalidArgument(f"No such snapshotter: {name} (this daemon has {snapshotter.name})")
        return snapshotter

    async def Prepare(self, request: snapshot_pb2.PrepareSnapshotRequest, call: CallInfo) -> snapshot_pb2.PrepareSnapshotResponse:
        s = self._snapshotter(request.snapshotter)
        mounts = await s.prepare(_require(request.key, "key"), request.parent, dict(request.labels))
        return snapshot_pb2.PrepareSnapshotResponse(mounts=mounts_to_proto(mounts))

    async def View(self, request: snapshot_pb2.ViewSnapshotRequest, call: CallInfo) -> snapshot_pb2.ViewSnapshotResponse:
        s = self._snapshotter(request.snapshotter)
        mounts = await s.view(_require(request.key, "key"), request.parent, dict(request.labels))
        return snapshot_pb2.ViewSnapshotResponse(mounts=mounts_to_proto(mounts))

    async def Commit(self, request: snapshot_pb2.CommitSnapshotRequest, call: CallInfo) -> snapshot_pb2.CommitSnapshotResponse:
        s = self._snapshotter(request.snapshotter)
        await s.commit(_require(request.name, "name"), _require(request.key, "key"), dict(request.labels))
        return snapshot_pb2.CommitSnapshotResponse()

    async def Remove(self, request: snapshot_pb2.RemoveSnapshotRequest, call: CallInfo) -> snapshot_pb2.RemoveSnapshotResponse:
        s = self._snapshotter(request.snapshotter)
        await s.remove(_require(request.key, "key"))
        return snapshot_pb2.RemoveSnapshotResponse()

    async def Stat(self, request: snapshot_pb2.StatSnapshotRequest, call: CallInfo) -> snapshot_pb2.StatSnapshotResponse:
        s = self._snapshotter(request.snapshotter)
        info = await s.stat(_require(request.key, "key"))
        return snapshot_pb2.StatSnapshotResponse(info=info_to_proto(info))

    async def List(self, request: snapshot_pb2.ListSnapshotsRequest, call: CallInfo) -> snapshot_pb2.ListSnapshotsResponse:
        s = self._snapshotter(request.snapshotter)
        infos = await s.list(list(request.filters))
        return snapshot_pb2.ListSnapshotsResponse(info=[info_to_proto(i) for i in infos])

    async def Mounts(self, request: snapshot_pb2.MountsRequest, call: CallInfo) -> snapshot_pb2.MountsResponse:
        s = self._snapshotter(request.snapshotter)
        mounts = await s.mounts(_require(request.key, "key"))
        return snapshot_pb2.MountsResponse(mounts=mounts_to_proto(mounts))

    async def Usage(self, request: snapshot_pb2.UsageRequest, call: CallInfo) -> snapshot_pb2.UsageResponse:
        s = self._snapshotter(request.snapshotter)
        usage = await s.usage(_require(request.key, "key"))
        return snapshot_pb2.UsageResponse(size=usage.size, inodes=usage.inodes)

    async def Cleanup(self, request: snapshot_pb2.CleanupRequest, call: CallInfo) -> snapshot_pb2.CleanupResponse:
        s = self._snapshotter(request.snapshotter)
        return snapshot_pb2.CleanupResponse(removed=await s.cleanup())

    async def ExtractLayer(self, request: snapshot_pb2.ExtractLayerRequest, call: CallInfo) -> snapshot_pb2.ExtractLayerResponse:
        s = self._snapshotter(request.snapshotter)
        key = _require(request.key, "key")
        digest = _require(request.layer.digest, "layer digest")
        content = self._engine.content
        # The blob's path is looked up (a stat) off the reactor thread too.
        path = await s.run(content.path, digest)
        result = await s.apply_layer(key, path)
        return snapshot_pb2.ExtractLayerResponse(diff_id=result.diff_id, size=result.size)

    async def Diff(self, request: snapshot_pb2.DiffSnapshotRequest, call: CallInfo) -> snapshot_pb2.DiffSnapshotResponse:
        s = self._snapshotter(request.snapshotter)
        key = _require(request.key, "key")
        compression = _COMPRESSION.get(request.media_type)
        if compression is None:
            raise InvalidArgument(
                f"Unsupported layer media type {request.media_type!r}: use {MEDIA_TYPE_GZIP} or {MEDIA_TYPE_TAR}"
            )
        await s.stat(key)
        content = self._engine.content
        writer = await s.run(content.writer)
        try:
            result = await s.diff(key, writer, compression)
            # Nothing refers to the blob yet: the client will, from an
            # image it writes. Until then a lease keeps content GC off it
            # (taken in the thread: the lease lock is held during GC).
            blob = await s.run(lambda: writer.commit(content.blobs.lease(expires_in=DIFF_LEASE_SECONDS)))
        except BaseException:
            await s.run(writer.abort)
            raise
        layer = common_pb2.Descriptor(media_type=result.media_type, digest=blob.digest, size=blob.size)
        return snapshot_pb2.DiffSnapshotResponse(layer=layer, diff_id=result.diff_id)
