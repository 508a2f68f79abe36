"""
A harness for runtime integration tests: a busybox root filesystem bound as
the container's root, a private state root and cgroup parent, and a check
that each test leaves nothing of its own behind (mounts under its base,
cgroup directories, shims, container processes).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from ross.engine.reactors import engine_reactor
from ross.engine.records import Mount
from ross.errors import FailedPrecondition, NotFound, RossError
from ross.engine.runtime import spec as rs
from ross.engine.runtime.logread import LogEntry, log_files, parse_entry
from ross.engine.runtime.runtime import ExitStatus, Runtime, ShimDetached, ShimHandle
from ross.interfaces import IShim
from ross.testing.busybox import build_rootfs
from ross.testing.leaks import cgroups_under, mounts_under, processes_mentioning, remove_cgroup_parent


class RuntimeHarness:
    """
    Mix into a trial TestCase: C{self.runtime}, C{self.spec(...)},
    C{self.run_container(...)}, C{self.log_entries(...)}.
    """

    def setUpRuntime(self) -> None:
        tc: Any = self
        self.base = Path(tc.mktemp()).resolve()
        self.base.mkdir(parents=True)
        self.rootfs = build_rootfs(self.base / "rootfs")
        self.state_root = self.base / "state"
        self.runtime = Runtime(engine_reactor(reactor), self.state_root)
        self.cgroup_parent = f"ross-test-{os.getpid()}"
        self.handles: list[IShim] = []
        self.ids: list[str] = []
        tc.addCleanup(self._leave_nothing)

    def spec(self, *args: str, id: str | None = None, **fields: Any) -> rs.ContainerSpec:
        process_fields = {k: fields.pop(k) for k in list(fields) if k in attrs.fields_dict(rs.Process)}
        cid = id or f"c{len(self.ids)}{os.urandom(4).hex()}"
        self.ids.append(cid)
        fields.setdefault("log", rs.LogConfig(path=str(self.base / f"{cid}.log")))
        return rs.ContainerSpec(
            id=cid,
            rootfs=(Mount("bind", str(self.rootfs), "", ("rbind",)),),
            process=rs.Process(args=tuple(args), **process_fields),
            cgroup_parent=self.cgroup_parent,
            **fields,
        )

    async def start(self, spec: rs.ContainerSpec) -> IShim:
        handle = await self.runtime.start(spec)
        self.handles.append(handle)
        return handle

    async def run_container(self, spec: rs.ContainerSpec) -> tuple[ExitStatus, bytes, bytes]:
        """
        Run to completion: the exit status and the logged stdout and stderr.
        """
        handle = await self.start(spec)
        status = await handle.wait()
        entries = self.log_entries(spec)
        out = b"".join(e.data for e in entries if e.stream == "stdout")
        err = b"".join(e.data for e in entries if e.stream == "stderr")
        return status, out, err

    def log_entries(self, spec: rs.ContainerSpec) -> list[LogEntry]:
        entries = []
        for path in log_files(spec.log.path, spec.log.max_files):
            with open(path, "rb") as f:
                entries += [parse_entry(line) for line in f]
        return entries

    async def wait_gone(self, pid: int) -> None:
        """
        Until process C{pid} is gone (a shim exits right after its last
        client got the exit event).
        """
        for _ in range(1000):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        return
            except FileNotFoundError:
                return
            await deferLater(reactor, 0.01, lambda: None)
        raise AssertionError(f"process {pid} is still there")

    async def _cleanup(self) -> None:
        await self.runtime.close()
        for handle in self.handles:
            handle.exited.addErrback(lambda f: f.trap(ShimDetached))
            handle.close()
        for cid in self.ids:
            try:
                outcome = await self.runtime.reconnect(cid)
            except NotFound:
                continue
            if isinstance(outcome, ShimHandle):
                if outcome.exit_status is None:
                    try:
                        await outcome.kill(signal.SIGKILL)
                    except RossError:
                        pass
                    await outcome.wait()
                await self.wait_gone(outcome.shim_pid)
            await self.delete(cid)

    async def delete(self, cid: str) -> None:
        """
        Delete a container's runtime state once its shim has finished
        (delete refuses while the shim still holds its lock).
        """
        for _ in range(500):
            try:
                await self.runtime.delete(cid)
                return
            except FailedPrecondition:
                await deferLater(reactor, 0.01, lambda: None)
        await self.runtime.delete(cid)

    def _leave_nothing(self) -> Deferred[None]:
        def check(_: object) -> None:
            tc: Any = self
            leftovers = cgroups_under(self.cgroup_parent)
            remove_cgroup_parent(self.cgroup_parent)
            tc.assertEqual(leftovers, [], "cgroup directories left behind")
            tc.assertEqual(mounts_under(self.base), [], "mounts left behind")
            tc.assertEqual(processes_mentioning(str(self.state_root)), [], "shims left behind")
            for cid in self.ids:
                tc.assertFalse((self.state_root / cid).exists(), f"state of {cid} left behind")
        return Deferred.fromCoroutine(self._cleanup()).addCallback(check)
