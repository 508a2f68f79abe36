# -*- test-case-name: ross.test.integration.test_containers -*-
"""
VolumeService: the adapter between ross.v1 and the volume store.
"""

from __future__ import annotations

from typing import Any

from ross.engine.volumes import Volume, VolumeStore
from ross.errors import InvalidArgument
from ross.protocols.bridge import CallInfo
from ross.services.convert import timestamp
from ross.v1 import volume_pb2


def volume_to_proto(v: Volume, refs: int) -> volume_pb2.Volume:
    return volume_pb2.Volume(
        name=v.name, driver=v.driver, mountpoint=v.mountpoint, created=timestamp(v.created_ns),
        labels=dict(v.labels), ref_count=refs, anonymous=v.anonymous, options=dict(v.options),
    )


class VolumeAPI:
    """
    Reactor-side implementation of ross.v1.VolumeService.
    """

    def __init__(self, volumes: VolumeStore) -> None:
        self._volumes = volumes

    def _proto(self, v: Volume) -> volume_pb2.Volume:
        return volume_to_proto(v, len(self._volumes.users_of(v.name)))

    async def CreateVolume(self, request: Any, call: CallInfo) -> Any:
        volume = await self._volumes.create(request.name, dict(request.labels), request.driver,
                                            options=dict(request.options))
        return volume_pb2.CreateVolumeResponse(volume=self._proto(volume))

    def ListVolumes(self, request: Any, call: CallInfo) -> Any:
        volumes = self._volumes.list([(f.key, f.value) for f in request.filters])
        return volume_pb2.ListVolumesResponse(volumes=[self._proto(v) for v in volumes])

    def InspectVolume(self, request: Any, call: CallInfo) -> Any:
        return volume_pb2.InspectVolumeResponse(volume=self._proto(self._volumes.get(request.name)))

    async def RemoveVolume(self, request: Any, call: CallInfo) -> Any:
        await self._volumes.remove(request.name, request.force)
        return volume_pb2.RemoveVolumeResponse()

    async def PruneVolumes(self, request: Any, call: CallInfo) -> Any:
        labels = []
        for f in request.filters:
            if f.key != "label":
                raise InvalidArgument(f"invalid filter '{f.key}'")
            k, _, v = f.value.partition("=")
            labels.append((k, v))
        removed, freed = await self._volumes.prune(request.all, labels)
        return volume_pb2.PruneVolumesResponse(volumes_deleted=removed, space_reclaimed=freed)
