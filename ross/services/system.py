# -*- test-case-name: ross.test.test_daemon -*-
"""
SystemService: version, info, ping and the Events stream.
"""

from __future__ import annotations

import platform
from typing import Any

import google.protobuf
import grpc
import twisted
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread

import ross
from ross.engine import hostinfo
from ross.engine.engine import Engine
from ross.engine.events import Event, EventFilter, Follower
from ross.errors import InvalidArgument
from ross.platforms import go_arch
from ross.protocols.bridge import CallInfo, Outbound
from ross.services.convert import time_ns_of, timestamp
from ross.v1 import system_pb2


def event_to_proto(event: Event) -> system_pb2.Event:
    return system_pb2.Event(
        type=event.type,
        action=event.action,
        actor_id=event.actor_id,
        attributes=dict(event.attributes),
        time=timestamp(event.time_ns),
        seq=event.seq,
    )


EVENT_TYPES = frozenset({"container", "image", "volume", "network", "snapshot", "daemon"})


class SystemAPI:
    """
    Reactor-side implementation of ross.v1.SystemService.
    """

    #: Serialized events kept for the followers that send them next.
    RECENT_EVENTS = 256

    def __init__(self, engine: Engine, listen: tuple[str, ...] = ()) -> None:
        self._engine = engine
        self._listen = listen
        self._recent: dict[int, bytes] = {}

    def _event_message(self, event: Event) -> bytes:
        """
        C{event}'s message, serialized once for every follower that sends
        it (each event went to each follower as a conversion of its own).
        """
        found = self._recent.get(event.seq)
        if found is None:
            found = event_to_proto(event).SerializeToString()
            if event.seq:
                self._recent[event.seq] = found
                if len(self._recent) > self.RECENT_EVENTS:
                    del self._recent[next(iter(self._recent))]
        return found

    def Version(self, request: system_pb2.VersionRequest, call: CallInfo) -> system_pb2.VersionResponse:
        return system_pb2.VersionResponse(
            version=ross.__version__,
            api_version=ross.API_VERSION,
            python_version=platform.python_version(),
            grpc_version=grpc.__version__,
            twisted_version=twisted.__version__,
            protobuf_version=google.protobuf.__version__,
            os_arch=f"linux/{go_arch()}",
            kernel_version=platform.release(),
        )

    async def Info(self, request: system_pb2.InfoRequest, call: CallInfo) -> system_pb2.InfoResponse:
        config = self._engine.config
        # Host facts come from files: read them off the reactor thread.
        facts = await deferToThread(hostinfo.host_facts)
        # Proto field names to values, like facts: the message checks them.
        counts: dict[str, Any] = self._engine.counts()
        survey = self._engine.network.firewall
        return system_pb2.InfoResponse(
            root=str(config.root),
            exec_root=str(config.exec_root),
            storage_driver="overlayfs",
            cgroup_driver="cgroupfs",
            server_version=ross.__version__,
            listen=list(self._listen),
            insecure_registries=list(config.insecure_registries),
            firewall_backends=[f"nftables (table {config.network.table})", *survey.backends],
            firewall_chains=[str(c) for c in survey.chains],
            firewall_problems=list(survey.problems),
            **facts,
            **counts,
        )

    def Ping(self, request: system_pb2.PingRequest, call: CallInfo) -> system_pb2.PingResponse:
        return system_pb2.PingResponse(api_version=ross.API_VERSION)

    async def Events(self, request: system_pb2.EventsRequest, out: Outbound, call: CallInfo) -> None:
        unknown = set(request.types) - EVENT_TYPES
        if unknown:
            raise InvalidArgument(f"invalid event type {sorted(unknown)[0][:64]!r}: use one of {', '.join(sorted(EVENT_TYPES))}")
        wanted = EventFilter(
            types=frozenset(request.types),
            actions=frozenset(request.actions),
            attributes=dict(request.attributes),
        )
        if request.since_seq >= 2**63:
            raise InvalidArgument(f"invalid since_seq {request.since_seq}: out of range")
        since = time_ns_of(request.since)
        until = time_ns_of(request.until)
        def lagging(resume_seq: int, lost: int, reason: str) -> Deferred[None]:
            marker = system_pb2.Lagging(resume_seq=resume_seq, lost=lost, reason=reason)
            return out.send(system_pb2.Event(lagging=marker))

        follower = Follower(self._engine.events, self._engine.reactor, wanted,
                            lambda event: out.send(self._event_message(event)), lagging, until)
        await follower.run(request.since_seq, since or 0)


    async def DiskUsage(self, request: system_pb2.DiskUsageRequest, call: CallInfo) -> system_pb2.DiskUsageResponse:
        """
        docker's ``system df``: images (size counted as docker does, each
        image whole), containers' writable layers, volumes.
        """
        engine = self._engine
        images = await engine.images.list(all=True)
        image_size = sum(i.size for i in images)
        image_reclaimable = sum(i.size for i in images if not i.containers)
        records = list(engine.containers.records.values())
        sizes = {record.id: (await engine.containers.view(record, size=True)).size_rw for record in records}
        running = [r for r in records if r.state.running]
        volumes = engine.volumes.list()
        volume_sizes = {v.name: await engine.volumes.size_of(v.name) for v in volumes}
        used = {v.name for v in volumes if engine.volumes.users_of(v.name)}
        Item = system_pb2.DiskUsageResponse.Item
        return system_pb2.DiskUsageResponse(items=[
            Item(type="Images", total=len(images), active=sum(1 for i in images if i.containers),
                 size=image_size, reclaimable=image_reclaimable),
            Item(type="Containers", total=len(records), active=len(running), size=sum(sizes.values()),
                 reclaimable=sum(size for cid, size in sizes.items() if not engine.containers.records[cid].state.running)),
            Item(type="Local Volumes", total=len(volumes), active=len(used), size=sum(volume_sizes.values()),
                 reclaimable=sum(size for name, size in volume_sizes.items() if name not in used)),
            Item(type="Build Cache"),
        ])

    async def Prune(self, request: system_pb2.SystemPruneRequest, call: CallInfo) -> system_pb2.SystemPruneResponse:
        """
        Stopped containers, then the networks no container uses, then
        images (dangling, or all unused), then the build cache, then, when
        asked, unused volumes.
        """
        engine = self._engine
        containers = await engine.containers.prune()
        networks = await engine.network.prune()
        images, freed = await engine.images.prune(all=request.all)
        cache, cache_bytes = await engine.builds.prune()
        freed += cache_bytes
        volumes: list[str] = []
        if request.volumes:
            volumes, volume_bytes = await engine.volumes.prune()
            freed += volume_bytes
        return system_pb2.SystemPruneResponse(
            containers_deleted=containers, images_deleted=images, volumes_deleted=volumes, space_reclaimed=freed,
            build_cache_deleted=cache, networks_deleted=networks)
