# -*- test-case-name: ross.test.test_container_lifecycle,ross.test.integration.test_containers -*-
"""
What can be read of a container without changing it: its counters
(stats), its processes (top), what it changed in its root filesystem
(diff) and that filesystem as a tar (export).
"""

from __future__ import annotations

import os
import shlex

import attrs
from twisted.internet.threads import deferToThreadPool
from twisted.internet.utils import getProcessOutputAndValue

from ross.engine.containers.changes import changes, changes_size, layers_of
from ross.engine.containers.export import write_tar
from ross.engine.hostinfo import memory_total
from ross.engine.pipes import Outflow, in_thread
from ross.engine.reactors import IEngineReactor
from ross.engine.runtime.runtime import ContainerStats
from ross.errors import InvalidArgument, NotFound
from ross.interfaces import IShim, ISnapshotter


class Inspection:
    """
    Reads of containers, each given the container's shim, PID or snapshot.

    @param reactor: a reactor with a thread pool (the blocking reads run in
        it) that can spawn processes (ps).
    """

    def __init__(self, reactor: IEngineReactor, snapshotter: ISnapshotter) -> None:
        self._reactor = reactor
        self._snapshotter = snapshotter
        self._host_memory: int | None = None

    async def stats(self, shim: IShim) -> ContainerStats | None:
        """
        The cumulative counters of the container C{shim} runs. Its memory
        limit is docker's: the host's memory when it has none below that.
        """
        sample: ContainerStats | None = await shim.stats()
        total = await self._memory_total()
        if sample is not None and not 0 < sample.memory_limit < total:
            sample = attrs.evolve(sample, memory_limit=total)
        return sample

    async def _memory_total(self) -> int:
        """
        The host's memory, read once (in a thread).
        """
        if self._host_memory is None:
            self._host_memory = await deferToThreadPool(self._reactor, self._reactor.getThreadPool(), memory_total)
        return self._host_memory

    async def processes(self, pid: int, args: list[str]) -> tuple[list[str], list[list[str]]]:
        """
        ``ps`` with C{args} on the host, rows limited to the processes in
        the PID namespace of C{pid}, as docker's top does.
        """
        pids = await deferToThreadPool(self._reactor, self._reactor.getThreadPool(), _pids_in_namespace_of, pid)
        out, err, code = await getProcessOutputAndValue("ps", args, env=os.environ, reactor=self._reactor)
        if code != 0:
            raise InvalidArgument(f"ps failed: {err.decode(errors='replace').strip()}")
        lines = out.decode(errors="replace").splitlines()
        if not lines:
            raise InvalidArgument("ps printed nothing")
        titles = lines[0].split()
        if "PID" not in titles:
            raise InvalidArgument("Couldn't find PID field in ps output")
        column = titles.index("PID")
        rows = []
        for line in lines[1:]:
            fields = line.split(None, len(titles) - 1)
            if len(fields) > column and fields[column].isdigit() and int(fields[column]) in pids:
                rows.append(fields)
        return titles, rows

    async def changes(self, snapshot_key: str) -> list[tuple[str, str]]:
        """
        What the container of C{snapshot_key} changed in its root
        filesystem (``ross diff``).
        """
        upper, lowers = layers_of(await self._snapshotter.mounts(snapshot_key))
        result: list[tuple[str, str]] = await deferToThreadPool(
            self._reactor, self._reactor.getThreadPool(), changes, upper, lowers)
        return result

    async def size(self, snapshot_key: str) -> int:
        """
        Bytes the container of C{snapshot_key} wrote (L{changes_size}).
        """
        upper, _ = layers_of(await self._snapshotter.mounts(snapshot_key))
        result: int = await deferToThreadPool(self._reactor, self._reactor.getThreadPool(), changes_size, upper)
        return result

    async def export(self, snapshot_key: str, ref: str) -> Outflow:
        """
        The root filesystem of the container of C{snapshot_key} (C{ref} as
        the user named it) as a tar: an Outflow of blocks written by a
        thread of its own.
        """
        upper, lowers = layers_of(await self._snapshotter.mounts(snapshot_key))
        flow = Outflow(self._reactor)

        def write() -> None:
            try:
                write_tar([upper, *lowers], flow.put)
            except NotFound:
                # (Its layers' paths are the daemon's business.)
                raise NotFound(f"No such container: {ref} (removed during the export)") from None
            flow.finish()

        in_thread(self._reactor, write, name="ross-export").addErrback(flow.fail)
        return flow


def ps_arguments(text: str) -> list[str]:
    """
    docker top's ps arguments: split as a shell would, C{-ef} when none.
    """
    if "\0" in text:
        raise InvalidArgument("invalid ps arguments: they contain a NUL byte")
    try:
        return shlex.split(text) if text else ["-ef"]
    except ValueError as e:
        raise InvalidArgument(f"invalid ps arguments: {e}")


def _pids_in_namespace_of(pid: int) -> set[int]:
    """
    Host PIDs of every process in the PID namespace of C{pid} (blocking:
    reads /proc).
    """
    try:
        namespace = os.stat(f"/proc/{pid}/ns/pid").st_ino
    except OSError:
        return set()
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}/ns/pid").st_ino == namespace:
                    found.add(int(entry))
            except OSError:
                continue
    return found
