# -*- test-case-name: ross.test.test_memory -*-
"""
Giving the memory the daemon freed back to the system once it is quiet.

glibc's malloc keeps what Python and grpc free in its arenas (one per
thread that allocated: the reactor's thread pool, grpc's): an idle daemon
held some 12 MiB of free pages after start-up and after each burst of
work. C{malloc_trim(0)} returns the free pages of every arena.

And the objects made at start-up (modules, classes, the engine's state) are
moved out of the collector's sight once the daemon is up (L{settle_gc}): a
full collection walked them all, some 100,000 objects, and held the GIL for
45-95 ms each time, a pause every few seconds under load for every call in
flight (11 ms once they were frozen, measured under bench/reliability.py's
load). The settling collection is such a pause itself, so it waits for the
first quiet check (or L{SETTLE_CHECKS} checks under constant load): made as
the daemon started, it held up the first answers of a restarted daemon.
"""

from __future__ import annotations

import ctypes
import gc
import time
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

#: How often the daemon looks whether it went quiet (one times(2) call).
CHECK_INTERVAL = 1.0
#: CPU time per check under which the daemon counts as quiet.
QUIET_CPU = 0.01
#: CPU time per check over which the daemon did something that may have
#: left free memory behind. The firewall's look at other managers' chains
#: (every 5 s, 6-8 ms, in a pool thread) leaves 1.5 MiB free in that
#: thread's arena: under QUIET_CPU, it left the idle daemon 1.5-3 MiB
#: larger for as long as nothing else happened. Above what an idle daemon
#: spends in a check interval (grpc's timers: 0.4-1.2 ms), as a trim costs
#: about 1 ms.
DIRTY_CPU = 0.003
#: Checks after which the start-up is settled even if none was quiet.
SETTLE_CHECKS = 10


def malloc_trim() -> Callable[[], object] | None:
    """
    glibc's C{malloc_trim(0)}, or None where the C library has none (musl).
    """
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


#: malloc arenas the daemon may use (glibc's M_ARENA_MAX; its default is
#: 8 per core). Every thread that allocates gets an arena of its own up to
#: that cap, each keeping free pages between trims: with 2, an idle daemon
#: held some 2-3 MiB less than by default; with 1, 65.8-66.4 MiB against
#: 66.8-70.2 (the second arena's pages, live and free, after a trim: 0.6 to
#: 4.8 MiB from one start to the next). Python's threads allocate under the
#: GIL anyway; logs, cp, commit, pull and load ran as fast (bench/all.py).
ARENAS = 1
_M_ARENA_MAX = -8


def cap_arenas(arenas: int = ARENAS) -> bool:
    """
    Cap malloc's arenas (glibc's C{mallopt(M_ARENA_MAX)}), before the
    daemon starts its threads; False where the C library has no such
    option.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, arenas))


def settle_gc() -> None:
    """
    Collect once, then freeze what is left: every object alive now is left
    out of later collections (it lives as long as the daemon anyway).
    """
    gc.collect()
    gc.freeze()


def cpu_seconds() -> float:
    """
    The daemon's CPU time, every thread's, to the nanosecond (os.times
    counts in clock ticks of 10 ms: a few milliseconds of work could look
    like none, or like 10 ms).
    """
    return time.process_time()


class MemoryTrim(Service):
    """
    Trims malloc's arenas (in a thread) once the daemon, after doing
    something, spends a check interval quiet.

    @param settle: called once (L{settle_gc} in the daemon) at the first
        quiet check after the service started, which is when the daemon's
        other services have started, or at the L{SETTLE_CHECKS}th check.
    """

    _log = Logger()

    def __init__(self, reactor: Any, trim: Callable[[], object] | None = None,
                 cpu: Callable[[], float] = cpu_seconds, interval: float = CHECK_INTERVAL,
                 settle: Callable[[], None] | None = None) -> None:
        self._reactor = reactor
        self._settle = settle
        self._trim = trim if trim is not None else malloc_trim()
        self._cpu = cpu
        self._interval = interval
        self._check = LoopingCall(self._tick)
        self._check.clock = reactor
        self._last = 0.0
        #: The daemon did something since the last trim (start-up counts).
        self._dirty = True
        self._trimming: Deferred[None] | None = None
        self._checks = 0

    def startService(self) -> None:
        super().startService()
        if self._trim is None and self._settle is None:
            return
        self._last = self._cpu()
        self._check.start(self._interval, now=False)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._check.running:
            self._check.stop()
        return self._trimming if self._trimming is not None else succeed(None)

    def _tick(self) -> None:
        now = self._cpu()
        spent = now - self._last
        busy = spent >= QUIET_CPU
        self._last = now
        self._checks += 1
        if self._settle is not None and (not busy or self._checks >= SETTLE_CHECKS):
            settle, self._settle = self._settle, None
            settle()
            # Its own CPU time is not the daemon's work.
            self._last = self._cpu()
            return
        if self._trim is None:
            return
        if spent >= DIRTY_CPU:
            self._dirty = True
        if busy:
            return
        if not self._dirty or self._trimming is not None:
            return
        self._dirty = False
        trim = self._trim
        assert trim is not None
        d: Deferred[Any] = deferToThreadPool(self._reactor, self._reactor.getThreadPool(), trim)
        self._trimming = d
        d.addErrback(lambda f: self._log.failure("malloc_trim failed", f))
        d.addBoth(self._trimmed)

    def _trimmed(self, result: object) -> None:
        self._trimming = None
        # The trim's own CPU time is not the daemon's work.
        self._last = self._cpu()
