# -*- test-case-name: ross.test.test_daemon -*-
"""
The daemon's service tree: the engine first, the API after it; stopped in
reverse, each waiting for the one before.
"""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.logger import Logger

from ross.engine.engine import Engine
from ross.engine.fsutil import PRIVATE_FILE_MODE, private_dir
from ross.errors import FailedPrecondition, InvalidArgument


class OrderedMultiService(MultiService):
    """
    Starts children one after another, each once the previous one's start
    Deferred fired, and stops them in reverse order the same way (plain
    MultiService stops them all at once). Children may return a Deferred
    from C{startService} through L{AsyncStart.whenStarted}.
    """

    _log = Logger()

    def startService(self) -> None:
        Service.startService(self)
        d: Deferred[Any] = succeed(None)
        for child in self:
            d.addCallback(lambda _, c: _start(c), child)
        d.addErrback(self._startFailed)
        self.started = d

    def _startFailed(self, failure: Any) -> None:
        if failure.check(FailedPrecondition, InvalidArgument):
            # The host or the options, not a bug: the reason is the message.
            self._log.critical("daemon failed to start: {reason}", reason=failure.getErrorMessage())
        else:
            self._log.failure("daemon failed to start", failure)
        from twisted.internet import reactor

        reactor.stop()

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        d: Deferred[Any] = succeed(None)
        for child in reversed(list(self)):
            d.addCallback(lambda _, c: maybeDeferred(c.stopService), child)
            d.addErrback(lambda f: self._log.failure("service failed to stop", f))
        return d


def _start(service: Any) -> Deferred[Any]:
    result = service.startService()
    starting = getattr(service, "starting", None)
    if isinstance(starting, Deferred):
        return starting
    return succeed(result)


class EngineService(Service):
    """
    Runs the engine's start and stop under the service tree.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.starting: Deferred[None] | None = None

    def startService(self) -> None:
        super().startService()
        self.starting = self.engine.start()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.engine.stop()


class ClaimError(Exception):
    pass


def claim_directory(path: Path, what: str) -> int:
    """
    Make C{path} the daemon's own: private (L{private_dir}), and locked
    exclusively through C{path}/ross.lock for the daemon's lifetime. The
    lock goes with the process, so a killed daemon leaves none behind.
    A directory other users share (sticky, as /tmp) is refused: making it
    private would lock them out of it.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        pass
    else:
        if mode & stat.S_ISVTX:
            raise ClaimError(f"{what} {path} is a directory other users share (sticky, as /tmp); "
                             "give a directory of Ross's own")
    private_dir(path)
    lockfile = path / "ross.lock"
    fd = os.open(lockfile, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    os.fchmod(fd, PRIVATE_FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip()
        os.close(fd)
        who = f" (pid {holder})" if holder else ""
        raise ClaimError(f"another Ross daemon{who} is using {what} {path}")
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd
