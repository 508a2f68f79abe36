# -*- test-case-name: ross.test.test_daemon -*-
"""
SystemService: version, info, ping and the Events stream.
"""

from __future__ import annotations

import os
import platform
import socket
from collections import deque
from typing import Any

import google.protobuf
import grpc
import twisted
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread

import ross
from ross.engine import hostinfo
from ross.engine.engine import Engine
from ross.engine.events import Event, EventBus, EventFilter
from ross.engine.runtime import seccomp
from ross.errors import InvalidArgument, NotFound
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


def _host_facts() -> dict[str, Any]:
    """
    What Info reports about the host (blocking: reads /proc and /etc).
    """
    controllers = hostinfo.cgroup_controllers(hostinfo.read_mountinfo())
    return {
        "cgroup_version": hostinfo.cgroup_mode(controllers),
        "cgroup_controllers": controllers,
        "kernel_version": platform.release(),
        "operating_system": hostinfo.operating_system(),
        "architecture": platform.machine(),
        "ncpu": os.cpu_count() or 1,
        "mem_total": hostinfo.memory_total(),
        "name": socket.gethostname(),
        "security_options": security_options(),
    }


def security_options() -> list[str]:
    """
    docker's SecurityOptions: a seccomp profile (the builtin one) when the
    host can filter system calls, and no_new_privs, which containers get
    unless they opt out.
    """
    options = ["name=seccomp,profile=builtin"] if seccomp.available() else []
    return options + ["name=no-new-privileges"]


class SystemAPI:
    """
    Reactor-side implementation of ross.v1.SystemService.
    """

    def __init__(self, engine: Engine, listen: tuple[str, ...] = ()) -> None:
        self._engine = engine
        self._listen = listen

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
        facts = await deferToThread(_host_facts)
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
        follower = Follower(self._engine.events, self._engine.reactor, wanted, out, until)
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
        sizes = {}
        for record in records:
            try:
                sizes[record.id] = (await engine.snapshotter.usage(record.snapshot_key)).size
            except NotFound:
                sizes[record.id] = 0
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
        Stopped containers, then images (dangling, or all unused), then the
        build cache, then, when asked, unused volumes.
        """
        engine = self._engine
        containers = await engine.containers.prune()
        images, freed = await engine.images.prune(all=request.all)
        cache, cache_bytes = await engine.builds.prune()
        freed += cache_bytes
        volumes: list[str] = []
        if request.volumes:
            volumes, volume_bytes = await engine.volumes.prune()
            freed += volume_bytes
        return system_pb2.SystemPruneResponse(
            containers_deleted=containers, images_deleted=images, volumes_deleted=volumes, space_reclaimed=freed,
            build_cache_deleted=cache)


#: Events waiting for a slow client before it is told it lags and is
#: served from the journal instead (well below the stream's hard limit).
LAG_LIMIT = 1024


class Follower:
    """
    One Events stream: the replay asked for, then live events; a client
    that falls L{LAG_LIMIT} events behind is unsubscribed, told (a
    C{lagging} marker) and served from the journal until it has caught up.
    Every send waits while the client is slow, so the memory held per
    client stays bounded.
    """

    def __init__(self, bus: EventBus, reactor: Any, wanted: EventFilter, out: Outbound, until: int | None) -> None:
        self._bus = bus
        self._reactor = reactor
        self._wanted = wanted
        self._out = out
        self._until = until
        self._queue: deque[Event] = deque()
        self._lagged = False
        self._ended = False
        self._wake: Deferred[None] | None = None

    def _arrived(self, event: Event) -> None:
        if self._lagged:
            return
        self._queue.append(event)
        if len(self._queue) > LAG_LIMIT:
            # The journal has them all: drop them here and fetch them again.
            self._lagged = True
            self._queue.clear()
        self._wakeup()

    def _wakeup(self) -> None:
        wake, self._wake = self._wake, None
        if wake is not None:
            wake.callback(None)

    def _end(self) -> None:
        self._ended = True
        self._wakeup()

    async def _send(self, event: Event) -> bool:
        """
        Send C{event}; False once past C{until} (the stream is over).
        """
        if self._until is not None and event.time_ns > self._until:
            return False
        await self._out.send(event_to_proto(event))
        return True

    async def run(self, since_seq: int, since_ns: int) -> None:
        timer = None
        if self._until is not None:
            timer = self._reactor.callLater(max(0.0, self._until / 1e9 - self._reactor.seconds()), self._end)
        replay, reason = bool(since_seq or since_ns), "truncated"
        # The sequence number the client has everything before, and the
        # one the last marker told it (a client still behind when its
        # replay starts is not told twice).
        resume = since_seq
        told = -1
        try:
            while True:
                unsubscribe = self._bus.subscribe(self._arrived, self._wanted)
                try:
                    if replay:
                        found = await self._bus.replay(self._wanted, resume, since_ns)
                        lost = found.oldest - resume if resume and found.oldest > resume else 0
                        if lost or (reason == "slow" and resume != told):
                            told = max(resume, found.oldest)
                            marker = system_pb2.Lagging(resume_seq=told, lost=lost, reason=reason)
                            await self._out.send(system_pb2.Event(lagging=marker))
                        for event in found.events:
                            if self._lagged:
                                break
                            if not await self._send(event):
                                return
                            resume = event.seq + 1
                    while not self._lagged:
                        if self._queue:
                            event = self._queue.popleft()
                            if not await self._send(event):
                                return
                            resume = event.seq + 1
                        elif self._ended:
                            return
                        else:
                            self._wake = Deferred()
                            await self._wake
                finally:
                    unsubscribe()
                # Behind: start again from the first event not sent.
                resume = max(resume, 1)
                self._lagged = False
                self._queue.clear()
                replay, reason = True, "slow"
        finally:
            if timer is not None and timer.active():
                timer.cancel()
