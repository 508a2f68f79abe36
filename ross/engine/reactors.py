# -*- test-case-name: ross.test.test_reactors -*-
"""
The one reactor type of the engine.
"""

from __future__ import annotations

from typing import cast

from twisted.internet.interfaces import (
    IReactorFDSet,
    IReactorProcess,
    IReactorSocket,
    IReactorTCP,
    IReactorThreads,
    IReactorTime,
    IReactorUDP,
)


class IEngineReactor(IReactorTime, IReactorThreads, IReactorProcess, IReactorSocket, IReactorFDSet,
                     IReactorTCP, IReactorUDP):
    """
    The reactor every engine piece is given: the daemon's one reactor, seen
    through the interfaces the engine uses of it. A piece that needs one of
    them is typed by that one; a piece that needs two or more (most: they
    schedule and hand work to threads) is typed by this, because what it is
    given is always the same reactor, never a set of separate providers.

      - L{IReactorTime}: timers, timeouts, back-off and event times;
      - L{IReactorThreads}: disk and kernel work in the thread pool, results
        handed back with C{callFromThread};
      - L{IReactorProcess}: shims, helpers and C{ps} (the runtime, the
        copier, inspection);
      - L{IReactorSocket}: adopting the shims' control sockets;
      - L{IReactorFDSet}: inotify, which follows container logs;
      - L{IReactorTCP}, L{IReactorUDP}: the networks' embedded DNS, port
        proxies and the registry client's connections.

    It extends Twisted's interfaces and declares nothing of its own, so any
    reactor that provides them all (Twisted's epoll reactor does) is one;
    but none declares this interface, hence L{engine_reactor}.
    """


def engine_reactor(reactor: object) -> IEngineReactor:
    """
    C{reactor} as an engine reactor, unchecked and unchanged.

    Twisted's global reactor is a module attribute that mypy sees as the
    module C{twisted.internet.reactor}, and the test reactors (C{Clock},
    C{MemoryReactorClock}, L{ross.testing.fakes.SynchronousReactor})
    provide only the parts a test drives; none declares L{IEngineReactor}.
    This is the one place where a reactor is taken to be one: the daemon's
    wiring, for the real reactor, and tests, for the fakes.
    """
    return cast(IEngineReactor, reactor)
