# -*- test-case-name: ross.test.integration.test_cri_containers -*-
"""
Container stats for kubelet: ContainerStats and ListContainerStats from
the runtime's cumulative counters (cgroup CPU and memory).
"""

from __future__ import annotations

from ross.cri.meta import CONTAINER, Meta
from ross.cri.sandboxes import cri_records, find, labels_match
from ross.cri.v1 import api_pb2
from ross.engine.containers.store import ContainerRecord
from ross.engine.engine import Engine
from ross.protocols.bridge import CallInfo


class StatsAPI:
    """
    The stats RPCs of runtime.v1.RuntimeService.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def _stats(self, record: ContainerRecord, meta: Meta) -> api_pb2.ContainerStats:
        attributes = api_pb2.ContainerAttributes(
            id=record.id, metadata=api_pb2.ContainerMetadata(name=meta.name, attempt=meta.attempt),
            labels=meta.labels, annotations=meta.annotations)
        sample = await self._engine.containers.stats(record.id)
        if sample is None:
            # Not running: nothing to measure.
            return api_pb2.ContainerStats(attributes=attributes)
        return api_pb2.ContainerStats(
            attributes=attributes,
            cpu=api_pb2.CpuUsage(timestamp=sample.read_ns,
                                 usage_core_nano_seconds=api_pb2.UInt64Value(value=sample.cpu_usage_ns)),
            memory=api_pb2.MemoryUsage(timestamp=sample.read_ns,
                                       working_set_bytes=api_pb2.UInt64Value(value=sample.memory_usage),
                                       usage_bytes=api_pb2.UInt64Value(value=sample.memory_usage)),
        )

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
