# -*- test-case-name: ross.test.test_supervisor,ross.test.test_container_lifecycle -*-
"""
Supervision of running containers, in the manner of Twisted's
C{ProcessMonitor}: the shim of each running container, the exits the
daemon causes itself, and restarts by policy after a back-off delay. Every
timer is cancelled in one place (L{Supervisor.stop}).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Coroutine, Iterator

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ross.engine.containers.store import ContainerRecord
from ross.engine.runtime.runtime import ExitStatus, ShimDetached
from ross.errors import RossError
from ross.interfaces import IShim

# Docker's restart back-off: doubles from 100 ms up to a minute, and starts
# over once a container ran for 10 s.
BACKOFF_START = 0.1
BACKOFF_MAX = 60.0
BACKOFF_RESET = 10.0


class Supervisor:
    """
    The shims of a container manager's running containers and their
    restarts.

    @param exited: C{exited(cid, status)}, the manager's handling of an
        exit, called when a watched shim says its container exited.
    @param restart: C{restart(cid)}, the manager's start of a container
        whose restart delay passed.
    """

    _log = Logger()

    def __init__(self, reactor: IReactorTime, exited: Callable[[str, ExitStatus], Coroutine[Any, Any, None]],
                 restart: Callable[[str], Deferred[None]]) -> None:
        self._reactor = reactor
        self._exited = exited
        self._restart = restart
        #: Container ID -> the shim of its current run.
        self.shims: dict[str, IShim] = {}
        self._timers: dict[str, IDelayedCall] = {}
        self._backoff: dict[str, float] = {}
        self._stopping: set[str] = set()

    def watch(self, cid: str, shim: IShim) -> None:
        """
        Hold C{shim} as the container's and hand its exit to C{exited}.
        """
        self.shims[cid] = shim

        def exited(status: ExitStatus) -> None:
            if self.shims.get(cid) is shim:
                del self.shims[cid]
            Deferred.fromCoroutine(self._exited(cid, status)).addErrback(
                lambda f: self._log.failure("handling the exit of {id} failed", f, id=cid))

        def lost(failure: Failure) -> None:
            if self.shims.get(cid) is shim:
                del self.shims[cid]
            if not failure.check(ShimDetached):
                self._log.failure("lost the shim of container {id}", failure, id=cid)

        shim.exited.addCallbacks(exited, lost)

    @contextmanager
    def stopping(self, cid: str) -> Iterator[None]:
        """
        Within it, the container is being stopped by the daemon: the exit
        that follows is no reason to restart or auto-remove it.
        """
        self._stopping.add(cid)
        try:
            yield
        finally:
            self._stopping.discard(cid)

    def is_stopping(self, cid: str) -> bool:
        return cid in self._stopping

    def restart_later(self, record: ContainerRecord, status: ExitStatus) -> bool:
        """
        Schedule the restart of a container that exited with C{status} if
        its restart policy asks for one, a back-off delay from now; whether
        it did.
        """
        policy = record.host.restart_policy
        if record.state.manually_stopped or policy.name in ("", "no"):
            return False
        if policy.name == "on-failure":
            if status.exit_code == 0:
                return False
            if policy.maximum_retry_count and record.state.restart_count >= policy.maximum_retry_count:
                return False
        ran = (record.state.finished_ns - record.state.started_ns) / 1e9
        delay = self._backoff.get(record.id, 0.0)
        delay = BACKOFF_START if ran >= BACKOFF_RESET or not delay else min(BACKOFF_MAX, delay * 2)
        self._backoff[record.id] = delay
        self._timers[record.id] = self._reactor.callLater(delay, self._restart_now, record.id)
        return True

    def _restart_now(self, cid: str) -> None:
        self._timers.pop(cid, None)
        self._restart(cid).addErrback(self._restart_failed, cid)

    def _restart_failed(self, failure: Failure, cid: str) -> None:
        # What a start may refuse (its network removed meanwhile, a port
        # taken) is told as the start tells it; anything else is a bug.
        if failure.check(RossError):
            self._log.warn("restart of {id} failed: {error}", id=cid, error=failure.getErrorMessage())
        else:
            self._log.failure("restart of {id} failed", failure, id=cid)

    def cancel(self, cid: str) -> None:
        """
        Cancel the container's pending restart, if any.
        """
        timer = self._timers.pop(cid, None)
        if timer is not None and timer.active():
            timer.cancel()

    def forget(self, cid: str) -> None:
        """
        The container is gone: no restart, and its back-off is forgotten.
        """
        self.cancel(cid)
        self._backoff.pop(cid, None)

    def stop(self) -> None:
        """
        Cancel every pending restart and let go of every shim (the
        containers run on).
        """
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()
        self._timers.clear()
        for shim in list(self.shims.values()):
            shim.close()
