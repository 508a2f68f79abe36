# -*- test-case-name: ross.test.test_container_lifecycle,ross.test.integration.test_disk_full -*-
"""
What a container leaves behind, and its clearing: its runtime state, its
directory (logs, resolv.conf...) under the daemon's root, and which
containers a prune takes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool

from ross.engine.containers.store import ContainerRecord
from ross.engine.reactors import IEngineReactor
from ross.errors import FailedPrecondition
from ross.interfaces import IRuntime
from ross.engine.fsutil import remove_tree

#: Free bytes under which the daemon's disk counts as full: a container being
#: removed then gives up its log first, to make room for the removal.
NEARLY_FULL = 4 * 1024 * 1024


class Leftovers:
    """
    The runtime state and files of the containers under C{root}.

    @param reactor: a reactor with a thread pool (the files are removed in
        it) and a clock.
    """

    def __init__(self, reactor: IEngineReactor, root: Path, runtime: IRuntime) -> None:
        self._reactor = reactor
        self._root = root
        self._runtime = runtime

    def directory(self, cid: str) -> Path:
        """
        The container's own directory (its log files are there).
        """
        return self._root / "containers" / cid

    async def delete_runtime_state(self, cid: str) -> None:
        """
        Remove the container's runtime state. A shim whose container just
        exited lingers until its clients have their last frames: wait for it.
        """
        deadline = self._reactor.seconds() + 10
        # It is usually gone within milliseconds (run --rm waits on this):
        # look again soon, then back off.
        delay = 0.002
        while True:
            try:
                await self._runtime.delete(cid)
                return
            except FailedPrecondition:
                if self._reactor.seconds() > deadline:
                    raise
                await deferLater(self._reactor, delay, lambda: None)
                delay = min(0.05, delay * 2)

    def disk_nearly_full(self) -> Deferred[bool]:
        def check() -> bool:
            st = os.statvfs(self._root)
            return st.f_bavail * st.f_frsize < NEARLY_FULL

        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), check)

    def drop_logs(self, cid: str) -> Deferred[None]:
        """
        Empty a container's log files (it is being removed).
        """
        def drop() -> None:
            directory = self.directory(cid)
            for name in os.listdir(directory):
                if name.startswith(f"{cid}-json.log"):
                    os.truncate(os.path.join(directory, name), 0)

        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), drop)

    def remove_files(self, cid: str) -> Deferred[None]:
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(),
                                 remove_tree, self.directory(cid), True)


def prunable(record: ContainerRecord, until_ns: int | None, labels: Sequence[tuple[str, str]]) -> bool:
    """
    Whether a prune removes the container: not running, created before
    C{until_ns} (when given), with every one of C{labels}. Asked of each
    container as the prune comes to it (an earlier removal takes time).
    """
    return (record.state.status in ("created", "exited", "dead")
            and (until_ns is None or record.created_ns < until_ns)
            and all(record.config.labels.get(k) == v for k, v in labels))
