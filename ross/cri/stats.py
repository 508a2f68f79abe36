# -*- test-case-name: ross.test.integration.test_cri_containers -*-
"""
Stats for kubelet: ContainerStats and ListContainerStats from the
runtime's cumulative counters (cgroup CPU and memory), PodSandboxStats and
ListPodSandboxStats from those of the pod's containers and its sandbox
(which holds the pod's network); ListMetricDescriptors and
ListPodSandboxMetrics give cAdvisor's metrics (L{ross.cri.metrics}).
"""

from __future__ import annotations

import os
import time
from typing import Any

from twisted.internet.threads import deferToThreadPool

from ross.cri import metrics
from ross.cri.meta import CONTAINER, SANDBOX, Meta
from ross.cri.sandboxes import cri_records, find, labels_match
from ross.cri.v1 import api_pb2
from ross.engine.containers.store import ContainerRecord
from ross.engine.engine import Engine
from ross.engine.runtime import cgroups
from ross.errors import NotFound
from ross.protocols.bridge import CallInfo

#: The interface a pod's network namespace has on Ross's bridge.
POD_INTERFACE = "eth0"


class StatsAPI:
    """
    The stats RPCs of runtime.v1.RuntimeService.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def _stats(self, record: ContainerRecord, meta: Meta, sample: Any = None) -> api_pb2.ContainerStats:
        attributes = api_pb2.ContainerAttributes(
            id=record.id, metadata=api_pb2.ContainerMetadata(name=meta.name, attempt=meta.attempt),
            labels=meta.labels, annotations=meta.annotations)
        writable = await self._writable_layer(record)
        if sample is None:
            sample = await self._engine.containers.stats(record.id)
        if sample is None:
            # Not running: only its writable layer to measure.
            return api_pb2.ContainerStats(attributes=attributes, writable_layer=writable)
        return api_pb2.ContainerStats(attributes=attributes, cpu=_cpu(sample.read_ns, sample.cpu_usage_ns),
                                      memory=_memory(sample.read_ns, sample.memory_usage), writable_layer=writable)

    async def _writable_layer(self, record: ContainerRecord) -> api_pb2.FilesystemUsage | None:
        """
        The bytes and inodes the container wrote (its snapshot's own
        directory, walked in a thread), which kubelet weighs against the
        pod's ephemeral storage; None when it has no snapshot.
        """
        try:
            usage = await self._engine.snapshotter.usage(record.snapshot_key)
        except NotFound:
            return None
        return api_pb2.FilesystemUsage(
            timestamp=time.time_ns(),
            fs_id=api_pb2.FilesystemIdentifier(mountpoint=os.fspath(self._engine.config.root / "snapshots")),
            used_bytes=api_pb2.UInt64Value(value=usage.size), inodes_used=api_pb2.UInt64Value(value=usage.inodes))

    async def ContainerStats(self, request: api_pb2.ContainerStatsRequest,
                             call: CallInfo) -> api_pb2.ContainerStatsResponse:
        record, meta = find(self._engine, CONTAINER, request.container_id)
        return api_pb2.ContainerStatsResponse(stats=await self._stats(record, meta))

    async def ListContainerStats(self, request: api_pb2.ListContainerStatsRequest,
                                 call: CallInfo) -> api_pb2.ListContainerStatsResponse:
        f = request.filter
        stats = []
        for record, meta in cri_records(self._engine, CONTAINER):
            if f.id and not record.id.startswith(f.id):
                continue
            if f.pod_sandbox_id and not meta.sandbox_id.startswith(f.pod_sandbox_id):
                continue
            if not labels_match(meta.labels, f.label_selector):
                continue
            stats.append(await self._stats(record, meta))
        return api_pb2.ListContainerStatsResponse(stats=stats)

    async def _pod_stats(self, record: ContainerRecord, meta: Meta) -> api_pb2.PodSandboxStats:
        """
        A pod's usage: its containers' and its sandbox's CPU, memory and
        processes summed, the network of its namespace, and each running
        container's own.
        """
        attributes = api_pb2.PodSandboxAttributes(
            id=record.id, metadata=api_pb2.PodSandboxMetadata(name=meta.name, uid=meta.uid,
                                                              namespace=meta.namespace, attempt=meta.attempt),
            labels=meta.labels, annotations=meta.annotations)
        own = await self._engine.containers.stats(record.id)
        if own is None:
            # Not ready: nothing runs to measure.
            return api_pb2.PodSandboxStats(attributes=attributes)
        samples = [own]
        containers = []
        for member, member_meta in cri_records(self._engine, CONTAINER):
            if member_meta.sandbox_id != record.id:
                continue
            sample = await self._engine.containers.stats(member.id)
            if sample is not None:
                samples.append(sample)
                containers.append(await self._stats(member, member_meta, sample))
        now = max(s.read_ns for s in samples)
        network = None
        if not meta.host_network:
            network = api_pb2.NetworkUsage(timestamp=own.read_ns, default_interface=api_pb2.NetworkInterfaceUsage(
                name=POD_INTERFACE, rx_bytes=api_pb2.UInt64Value(value=own.net_rx_bytes),
                tx_bytes=api_pb2.UInt64Value(value=own.net_tx_bytes)))
        linux = api_pb2.LinuxPodSandboxStats(
            cpu=_cpu(now, sum(s.cpu_usage_ns for s in samples)),
            memory=_memory(now, sum(s.memory_usage for s in samples)),
            network=network,
            process=api_pb2.ProcessUsage(timestamp=now, process_count=api_pb2.UInt64Value(
                value=sum(s.pids for s in samples))),
            containers=containers)
        return api_pb2.PodSandboxStats(attributes=attributes, linux=linux)

    async def PodSandboxStats(self, request: api_pb2.PodSandboxStatsRequest,
                              call: CallInfo) -> api_pb2.PodSandboxStatsResponse:
        record, meta = find(self._engine, SANDBOX, request.pod_sandbox_id)
        return api_pb2.PodSandboxStatsResponse(stats=await self._pod_stats(record, meta))

    async def ListPodSandboxStats(self, request: api_pb2.ListPodSandboxStatsRequest,
                                  call: CallInfo) -> api_pb2.ListPodSandboxStatsResponse:
        f = request.filter
        stats = []
        for record, meta in cri_records(self._engine, SANDBOX):
            if f.id and not record.id.startswith(f.id):
                continue
            if not labels_match(meta.labels, f.label_selector):
                continue
            stats.append(await self._pod_stats(record, meta))
        return api_pb2.ListPodSandboxStatsResponse(stats=stats)


    async def ListMetricDescriptors(self, request: api_pb2.ListMetricDescriptorsRequest,
                                    call: CallInfo) -> api_pb2.ListMetricDescriptorsResponse:
        return api_pb2.ListMetricDescriptorsResponse(descriptors=metrics.descriptors())

    async def ListPodSandboxMetrics(self, request: api_pb2.ListPodSandboxMetricsRequest,
                                    call: CallInfo) -> api_pb2.ListPodSandboxMetricsResponse:
        """
        Every ready pod's metrics: its network's, and each running
        container's.
        """
        pods = []
        members: dict[str, list[tuple[ContainerRecord, Meta]]] = {}
        for record, meta in cri_records(self._engine, CONTAINER):
            if record.state.running:
                members.setdefault(meta.sandbox_id, []).append((record, meta))
        for record, meta in cri_records(self._engine, SANDBOX):
            if not record.state.running:
                continue
            pod = api_pb2.PodSandboxMetrics(pod_sandbox_id=record.id)
            if not meta.host_network:
                interfaces = await self._in_thread(metrics.read_network, record.state.pid)
                pod.metrics.extend(metrics.network_metrics(interfaces, record.id, meta.name))
            for member, member_meta in members.get(record.id, []):
                pod.container_metrics.append(api_pb2.ContainerMetrics(
                    container_id=member.id, metrics=await self._container_metrics(member, member_meta)))
            pods.append(pod)
        return api_pb2.ListPodSandboxMetricsResponse(pod_metrics=pods)

    async def _container_metrics(self, record: ContainerRecord, meta: Meta) -> list[api_pb2.Metric]:
        groups = cgroups.plan(self._engine.containers.cgroup_parent, record.id)
        reading = await self._in_thread(lambda: metrics.read_container(groups, cgroups.procs(groups)))
        fs = None
        writable = await self._writable_layer(record)
        if writable is not None:
            disk = await self._in_thread(os.statvfs, writable.fs_id.mountpoint)
            fs = (writable.used_bytes.value, disk.f_blocks * disk.f_frsize, disk.f_files, disk.f_ffree)
        return metrics.container_metrics(reading, (record.id, meta.name, meta.image), record.state.started_ns, fs)

    def _in_thread(self, fn: Any, *args: Any) -> Any:
        reactor = self._engine.reactor
        return deferToThreadPool(reactor, reactor.getThreadPool(), fn, *args)


def _cpu(read_ns: int, usage_ns: int) -> api_pb2.CpuUsage:
    return api_pb2.CpuUsage(timestamp=read_ns or time.time_ns(),
                            usage_core_nano_seconds=api_pb2.UInt64Value(value=usage_ns))


def _memory(read_ns: int, usage: int) -> api_pb2.MemoryUsage:
    return api_pb2.MemoryUsage(timestamp=read_ns or time.time_ns(),
                               working_set_bytes=api_pb2.UInt64Value(value=usage),
                               usage_bytes=api_pb2.UInt64Value(value=usage))
