# -*- test-case-name: ross.test.test_spdy -*-
"""
What SPDY and WebSocket sessions of the CRI's streaming server share: a
hijacked connection carrying several channels, whose output producers
pause together when the client reads slowly, whose input stops while a
channel's sink is full, and whose end is told to whoever asked.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer


#: What a channel holds for its reader before the reader starts.
MAX_PENDING = 1024 * 1024


class Inbox:
    """
    A channel's input: held (up to L{MAX_PENDING}) until its reader
    L{open}s it, then passed on as it comes.
    """

    def __init__(self) -> None:
        self._held: list[bytes] = []
        self._size = 0
        self._reader: Callable[[bytes], None] | None = None

    def put(self, data: bytes) -> bool:
        """
        Deliver or hold C{data}; False when that would hold too much.
        """
        if self._reader is not None:
            self._reader(data)
            return True
        self._size += len(data)
        if self._size > MAX_PENDING:
            return False
        self._held.append(data)
        return True

    def open(self, reader: Callable[[bytes], None]) -> None:
        held, self._held, self._size = self._held, [], 0
        for data in held:
            reader(data)
        self._reader = reader

    def clear(self) -> None:
        self._held, self._size = [], 0


@implementer(IPushProducer)
class MuxConnection:
    """
    A multiplexed connection on C{transport}; subclasses parse its input
    (C{dataReceived}) and end their channels in L{_ended}.
    """

    _log = Logger()

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.closed = False
        self._on_lost: list[Callable[[], None]] = []
        self._paused = False
        self._producers: set[Any] = set()
        self._blockers: set[object] = set()

    # Output and its flow.

    def send(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)

    def add_producer(self, producer: Any) -> None:
        """
        Pause C{producer} (an IPushProducer) while the client reads slower
        than we write.
        """
        self._producers.add(producer)
        if self._paused:
            producer.pauseProducing()

    def remove_producer(self, producer: Any) -> None:
        self._producers.discard(producer)

    def pauseProducing(self) -> None:
        self._paused = True
        for producer in list(self._producers):
            producer.pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        for producer in list(self._producers):
            producer.resumeProducing()

    def stopProducing(self) -> None:
        self.close()

    def block_input(self, key: object) -> None:
        """
        Stop reading the client until L{unblock_input}(C{key}): a channel's
        sink is full.
        """
        if not self._blockers and not self.closed:
            self.transport.pauseProducing()
        self._blockers.add(key)

    def unblock_input(self, key: object) -> None:
        if key not in self._blockers:
            return
        self._blockers.discard(key)
        if not self._blockers and not self.closed:
            self.transport.resumeProducing()

    # The end.

    def when_lost(self, fn: Callable[[], None]) -> None:
        """
        Call C{fn} once the connection is gone (at once if it is).
        """
        if self.closed:
            fn()
        else:
            self._on_lost.append(fn)

    def readConnectionLost(self) -> None:
        self.close()

    def close(self) -> None:
        """
        Close the connection (what was written still goes out first).
        """
        if self.closed:
            return
        self._closing()
        self.transport.loseConnection()
        self._lost()

    def _closing(self) -> None:
        """
        Last words before the connection closes (a close frame).
        """

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._lost()

    def _lost(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._blockers.clear()
        self._ended()
        self._producers.clear()
        callbacks, self._on_lost = self._on_lost, []
        for fn in callbacks:
            try:
                fn()
            except Exception:
                self._log.failure("a streaming session's clean-up failed")

    def _ended(self) -> None:
        """
        The connection is gone: end the channels.
        """
